"""The files of a composite run: one folder per round (written as the round completes,
the run's checkpoint) and the final model, ChimeraX script and summaries.

Layout (``outdir``; every file is written atomically)::

    state.json               inputs (with fingerprints), parameters, the completed rounds
    round_NN/round.json      the round's accepted placements and every candidate's decision
    round_NN/accepted.csv    accepted placements (rotation, translation, metrics, chains)
    round_NN/candidates.csv  every candidate of the round: scores, clash, decision, reason
    round_NN/accepted.cif    the round's placed chains
    round_NN/working_map.mrc the map after this round's zeroing (absent when nothing was
                             accepted: the map did not change)
    composite.cif            all placed chains, renamed <chain>_<input>_<copy>
    composite.cxc            ChimeraX script: the map, the composite model, the residual map
    composite.positions      every placed copy as a ChimeraX positions line, for its input
                             file (output.chimerax)
    summary.csv, summary.txt one row per placed copy
    summary.json             the same rows, with the score's metric, every column's units,
                             the transform convention and the inputs (read_results reads it)

A round folder is written under a temporary name and renamed when complete, then
``state.json`` is updated: the state file is the commit point.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from ..errors import DifffitInputError
from ..files import atomic_write, umask_mode, write_json
from ..maps import DensityMap, write_map
from ..results import CompositePlacement, CompositeResult, RoundRecord, score_column
from ..structures import Structure, combine, write_structure
from ..tables import csv_text
from .chimerax import chain_spec, model_name, positions_text
from .common import (COLOURS, cxc_quote, describe_rows, map_file, map_record,
                     structure_records, version)

__all__ = ["write_round", "read_round", "round_dir", "write_composite_outputs"]


def round_dir(outdir: Path, k: int) -> Path:
    return Path(outdir) / f"round_{k:02d}"


def write_round(outdir: Path, rec: RoundRecord, structures: Sequence[Structure],
                 working: DensityMap | None, score_name: str) -> None:
    """Write a round folder under a temporary name, then rename it into place.

    ``score_name``: the metric of the placements' scores (the fit's ``rank_by``), named in
    the CSV score columns (round.json keeps its plain ``score`` keys: the resume state).
    """
    final = round_dir(outdir, rec.index)
    tmp = Path(tempfile.mkdtemp(dir=outdir, prefix=f".{final.name}."))
    try:
        mode = umask_mode()  # mkdtemp makes 0700 folders; outputs are for sharing
        os.chmod(tmp, mode | (mode & 0o444) >> 2)
        if working is not None:
            write_map(tmp / "working_map.mrc", working)
            rec.working_map = str(final / "working_map.mrc")
        accepted_rows = [{**asdict(p)} for p in rec.accepted]
        write_json(tmp / "round.json", {
            "round": rec.index, "fitted": [structures[i].name for i in rec.fitted],
            "fitted_indices": rec.fitted, "timings": rec.timings, "remaining": rec.remaining,
            "working_map": None if working is None else "working_map.mrc",
            "accepted": accepted_rows, "candidates": rec.candidates})
        atomic_write(tmp / "accepted.csv", csv_text([p.row(score_name) for p in rec.accepted]))
        atomic_write(tmp / "candidates.csv", csv_text(
            [{(score_column(score_name) if k == "score" else k): v for k, v in row.items()}
             for row in rec.candidates]))
        if rec.accepted:
            write_structure(tmp / "accepted.cif", combine(
                [(p.moved(structures[p.structure_index]), p.chains) for p in rec.accepted],
                name="composite"))
        if final.exists():  # a stale folder of a round the state never recorded
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_round(outdir: Path, k: int) -> RoundRecord:
    path = round_dir(outdir, k) / "round.json"
    try:
        doc = json.loads(path.read_text())
        wm = doc.get("working_map")
        return RoundRecord(index=int(doc["round"]), fitted=list(doc["fitted_indices"]),
                           accepted=[CompositePlacement.from_dict(r) for r in doc["accepted"]],
                           candidates=list(doc["candidates"]), timings=dict(doc["timings"]),
                           remaining=float(doc["remaining"]),
                           working_map=None if wm is None else str(path.parent / wm))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DifffitInputError(f"{path}: cannot resume from this round record: {exc}") from exc


def _cxc_text(result: CompositeResult, map_path: str, model_path: Path,
              residual: str | None) -> str:
    lines = [
        "# difffit composite: open in UCSF ChimeraX (`open composite.cxc`).",
        "# Model numbers assume a fresh session: #1 the map, #2 the composite model"
        + (", #3 the density left unexplained (hidden)." if residual else "."),
        "# composite.positions: each placed copy's placement of its input file, one line per "
        "copy (ChimeraX: open the input files, then open composite.positions models #N-M).",
        f"open {cxc_quote(map_path)}",
        f"volume #1 level {result.threshold:.6g} style surface transparency 0.6",
    ]
    if result.placements:
        lines.append(f"open {cxc_quote(str(model_path))}")
    for i, s in enumerate(result.structures):
        copies = result.for_structure(i)
        if not copies:
            lines.append(f"# {s.name} (input {i + 1}): no copy placed")
            continue
        chains = [c for p in copies for c in p.chains]
        colour = COLOURS[i % len(COLOURS)]
        lines.append(f"# {s.name} (input {i + 1}): {len(copies)} cop{'y' if len(copies) == 1 else 'ies'}, "
                     f"scores {', '.join(f'{p.score:.3f}' for p in copies)}")
        spec, bad = chain_spec(2, chains)
        if spec:
            lines.append(f"color {spec} {colour} target ac")
        if bad:  # a chain id an atom spec would misread (a comma, a dash, a space...)
            lines.append(f"# chains {' '.join(repr(c) for c in bad)}: not colourable by atom spec")
    if residual:
        lines += [f"open {cxc_quote(residual)}",
                  f"volume #3 level {result.threshold:.6g} style mesh", "hide #3 models"]
    if result.placements:
        lines += ["hide #2 atoms", "show #2 cartoons"]
    lines.append("view")
    return "\n".join(lines) + "\n"


def write_composite_outputs(result: CompositeResult, outdir) -> dict[str, Path]:
    """Write composite.cif, composite.cxc, summary.csv, summary.json and summary.txt into
    ``outdir``.

    These files belong to the run in ``outdir`` and are replaced when it is resumed.

    Returns:
        Paths written: "outdir", "model", "cxc", "positions", "csv", "json", "txt" (and "map" when the
        input map had no file and was written here).
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"outdir": outdir}
    map_path = map_file(result.map, outdir, paths)
    paths["model"] = outdir / "composite.cif"
    if result.placements:
        write_structure(paths["model"], result.model(), overwrite=True)
    else:
        paths["model"].unlink(missing_ok=True)
    residual = next((r.working_map for r in reversed(result.rounds) if r.working_map), None)
    paths["cxc"] = outdir / "composite.cxc"
    atomic_write(paths["cxc"], _cxc_text(
        result, map_path, paths["model"].resolve(),
        None if residual is None else str(Path(residual).resolve())))
    paths["positions"] = outdir / "composite.positions"
    atomic_write(paths["positions"], positions_text(
        (model_name(result.structures[p.structure_index]), p.rotation, p.translation)
        for p in result.placements))
    rows = result.rows()
    paths["csv"] = outdir / "summary.csv"
    atomic_write(paths["csv"], csv_text(rows))
    paths["json"] = outdir / "summary.json"
    write_json(paths["json"], {
        "difffit_version": version(), "kind": "composite", "map": map_record(result.map, map_path),
        "structures": structure_records(result.structures), "resolution": result.resolution,
        "threshold": result.threshold, "copies": result.copies, "rounds": len(result.rounds),
        "stop_reason": result.stop_reason,
        "symmetry": None if result.symmetry is None else result.symmetry.as_dict(),
        **describe_rows(rows, result.params.rank_by),
        "model": paths["model"].name if result.placements else None, "placements": rows})
    paths["txt"] = outdir / "summary.txt"
    atomic_write(paths["txt"], result.summary_table() + "\n")
    return paths
