"""Writing the results of a fit: tables, fitted models, a ChimeraX script, trajectories, a log.

Layout of an output folder (all written by :func:`write_fit_outputs`)::

    results.csv           one row per placement (all clusters of all structures), best first;
                          the score column names its metric: "score (cam)"
    results.json          the same rows plus what they mean (score metric, units of every
                          column, the transform convention), the parameters, inputs
                          (with their centroids), timings, version and the files written
    models/<s>_rank<k>.cif  the top placements of each structure, all atoms, original names
    difffit_fits.cxc      ChimeraX script: opens the map and the models (a map source:
                          the map and the fitted source maps, as surfaces)
    fitted_map_<k>.mrc    only for a map source (map-in-map fit): the source map in its
                          rank-k placement, on the target's grid
    difffit_fits.positions  the same placements as a ChimeraX positions file, one line per
                          model of the script, for the input files (output.chimerax)
    trajectories.npz      recorded poses and scores of every start, with the structures'
                          names and centroids (:func:`difffit.readback.read_trajectories`)
    report.html           only with report=True: tables and plots (difffit.report)
    log.txt               command line, parameters, inputs, timings, build information
    map.mrc               only when the fitted map has no file of its own (e.g. simulated)

Every file is written to a temporary name in its folder and renamed into place, so an
interrupted run never leaves a half-written file behind. results.json is written last and
lists every file of the run: ``force`` removes exactly the earlier run's files that the new
one did not replace.
"""
from __future__ import annotations

import io
import json
import platform
import sys
import time
import warnings
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DifffitInputError
from ..files import atomic_write, jsonable, safe_name
from ..results import FitResult
from ..runs import check_outdir
from ..structures import write_structure
from ..tables import csv_text
from .chimerax import model_name, positions_text
from .common import (COLOURS, TRAJECTORY_POSE, build_info, check_model_format, cxc_quote,
                     describe_rows, map_file, map_record, structure_records, version)

__all__ = ["write_fit_outputs", "model_filenames"]


def model_filenames(result: FitResult, top: int = 3, model_format: str = "cif"
                    ) -> list[tuple[Any, str]]:
    """(placement, file name) for the top ``top`` placements of every structure.

    File names are ``<structure>_rank<k>.<fmt>``; a structure name that would clash with
    another's (two inputs with the same stem) gets its 1-based input index appended.
    """
    names = [safe_name(s.name) for s in result.structures]
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    names = [f"{n}_{i + 1}" if seen[n] > 1 else n for i, n in enumerate(names)]
    out = []
    for i in range(len(result.structures)):
        for p in result.for_structure(i)[: max(int(top), 0)]:
            out.append((p, f"{names[i]}_rank{p.rank}.{model_format}"))
    return out


def _cxc_text(result: FitResult, map_path: str, models: list[tuple[Any, Path]]) -> str:
    lines = _cxc_header("fits", "the map is #1, the models #2 on", map_path,
                        f"level {result.threshold:.6g} style surface transparency 0.6")
    for k, (p, path) in enumerate(models):
        model_id = k + 2
        colour = COLOURS[p.structure_index % len(COLOURS)]
        lines += [_model_comment(model_id, p), f"open {cxc_quote(str(path))}",
                  f"color #{model_id} {colour} target ac"]
    lines += _positions_hint(len(models), "the input files", ", in the order above")
    lines += ["hide atoms", "show cartoons", "view"]
    return "\n".join(lines) + "\n"


def _cxc_header(what: str, numbering: str, map_path: str, style: str) -> list[str]:
    return [f"# difffit {what}: open in UCSF ChimeraX (File > Open, or `open difffit_fits.cxc`).",
            f"# Model numbers below assume a fresh session: {numbering}.",
            f"# map #1: {map_path}", f"open {cxc_quote(map_path)}", f"volume #1 {style}"]


def _model_comment(model_id: int, p) -> str:
    m = p.metrics
    return (f"# #{model_id}: {p.structure_name} rank {p.rank}, hits {p.hits}, correlation "
            f"{m.get('correlation', float('nan')):.4f}, cam {m.get('cam', float('nan')):.4f}")


def _positions_hint(n: int, what: str, order: str = "") -> list[str]:
    """How to apply difffit_fits.positions to the unmoved inputs, models #2 on."""
    if not n:
        return []
    last = f"-{n + 1}" if n > 1 else ""
    return [f"# The same placements for {what}: open them (unmoved) as models #2{last}{order},",
            f"# then: open difffit_fits.positions models #2{last}"]


def _map_source_cxc_text(result: FitResult, map_path: str, maps: list[tuple[Any, Path]],
                         level: float) -> str:
    """The script of a map-in-map fit: the target, then each fitted source map as a surface
    at the source's contour (the placed mixture's pseudo-atoms are no model to show)."""
    lines = _cxc_header("fits of a map", "the target map is #1, the fitted source maps #2 on",
                        map_path, f"level {result.threshold:.6g} style mesh")
    for k, (p, path) in enumerate(maps):
        model_id = k + 2
        lines += [
            _model_comment(model_id, p),
            f"open {cxc_quote(str(path))}",
            f"volume #{model_id} level {level:.6g} style surface "
            f"color {COLOURS[k % len(COLOURS)]} transparency 0.3",
        ]
        if k:  # the best placement shown; the others one `show #N models` away
            lines.append(f"hide #{model_id} models")
    lines += _positions_hint(len(maps), "the source map", ", once per placement")
    lines.append("view")
    return "\n".join(lines) + "\n"


def _write_fitted_maps(result: FitResult, outdir: Path, top: int, paths: dict[str, Path]
                       ) -> list[tuple[Any, Path]]:
    """fitted_map_<rank>.mrc for the best ``max(top, 1)`` placements of a map source: the
    source map moved by each placement and sampled on the target's grid."""
    from ..maps import write_map
    from ..workflows.mapfit import resample

    out = []
    for p in result.for_structure(0)[: max(int(top), 1)]:
        path = outdir / f"fitted_map_{p.rank}.mrc"
        write_map(path, resample(result.source_map, result.map, p.rotation, p.translation),
                  overwrite=True)  # the folder was checked: empty, or force
        paths[f"fitted_map:{path.name}"] = path
        out.append((p, path))
    return out


def _source_level(result: FitResult) -> float:
    """The contour of a map source: the one its mixture was built at (its mean + 1
    standard deviation when the mixture does not record it)."""
    mixture = getattr(result, "mixture", None)
    thr = (mixture.info.get("threshold") if mixture is not None else None)
    if thr is None:
        data = np.asarray(result.source_map.data)
        thr = float(data.mean() + data.std())
    return float(thr)


def _log_text(result: FitResult, command: str | None, map_path: str | None,
              files: dict[str, Path]) -> str:
    import torch

    dmap = result.map
    out = [
        f"difffit {version()} fit log, written {time.strftime('%Y-%m-%d %H:%M:%S %z')}",
        f"command: {command if command is not None else ' '.join(sys.argv)}",
        f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"{platform.platform()}",
        "",
        "build_info:",
    ]
    out += [f"  {k}: {v}" for k, v in build_info().items()]
    out += [
        "",
        f"map: {map_path}",
        f"  grid (x, y, z) {dmap.shape_xyz}, voxel size {dmap.voxel_size.tolist()} A, "
        f"origin {dmap.origin.tolist()} A",
        f"resolution: {result.resolution:g} A",
        f"threshold (contour level): {result.threshold:.6g}",
        "structures:",
    ]
    for i, s in enumerate(result.structures):
        out.append(f"  [{i}] {s.name}: {s.path or '(in memory)'}, {s.n_atoms} atoms, "
                   f"{s.n_fit_atoms} fitted, chains {','.join(s.chains)}")
    out += ["", "parameters:"]
    params = asdict(result.params) if is_dataclass(result.params) else dict(result.params)
    out += [f"  {k}: {v}" for k, v in params.items()]
    out += ["", "timings (s):"]
    out += [f"  {k}: {v:.3f}" for k, v in result.timings.items()]
    out += ["", f"placements: {len(result.placements)} clusters", "", "outputs:"]
    out += [f"  {k}: {v}" for k, v in files.items()]
    out += ["", result.summary_table(top=3), ""]
    return "\n".join(out)


def write_fit_outputs(result: FitResult, outdir, *, top: int = 3, model_format: str = "cif",
                      force: bool = False, command: str | None = None,
                      report: bool = False) -> dict[str, Path]:
    """Write the results of a fit into a folder.

    Args:
        result: the FitResult of :func:`difffit.fit`.
        outdir: output folder; created (with parents) when missing.
        top: fitted models written per structure (its best ``top`` placements).
        model_format: "cif" (mmCIF, any chain name) or "pdb".
        force: write into an existing non-empty folder. An earlier fit's outputs there
            are replaced completely: the files its results.json lists that this fit does
            not write again (e.g. models of ranks no longer written, its report) are
            removed once the new files are in place; other files are left alone.
        command: the command line to record in the log (default: ``sys.argv``).
        report: also write ``report.html``, a self-contained HTML report (tables, plots).

    Returns:
        Paths written: keys "outdir", "csv", "json", "cxc", "trajectories", "log",
        "models" (the models folder), "map" (only when the map was written here),
        "report" (only with ``report``),
        "model:<file name>" for each model, and for a map source (``difffit.fit(target,
        source_map)``) "fitted_map:fitted_map_<k>.mrc" for each of its best ``max(top, 1)``
        placements.

    Raises:
        FileExistsError: ``outdir`` exists, is not empty and ``force`` is False.
        DifffitInputError: bad ``model_format`` or ``top``, or ``outdir`` is a file.
    """
    fmt = check_model_format(model_format, top)
    outdir = Path(outdir)
    check_outdir(outdir, force)
    earlier = _files_of_fit(outdir) if force else []  # before results.json is replaced
    outdir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"outdir": outdir}

    # The map: referenced where it is; written here when it has no file (simulated maps).
    map_path = map_file(result.map, outdir, paths)

    # Fitted models.
    models_dir = outdir / "models"
    models_dir.mkdir(exist_ok=True)
    paths["models"] = models_dir
    written_models: list[tuple[Any, Path]] = []
    for p, name in model_filenames(result, top, fmt):
        path = models_dir / name
        s = result.structures[p.structure_index]
        try:
            write_structure(path, s, p.rotation, p.translation, overwrite=True)
        except DifffitInputError as exc:
            if fmt != "pdb":
                raise
            # Chain names too long for PDB (e.g. large assemblies): mmCIF has no limit.
            path = path.with_suffix(".cif")
            warnings.warn(f"{exc}; wrote {path.name} as mmCIF instead", stacklevel=2)
            write_structure(path, s, p.rotation, p.translation, overwrite=True)
        written_models.append((p, path))
        paths[f"model:{path.name}"] = path

    # A map source (map-in-map fit): the source map placed on the target's grid.
    source_map = getattr(result, "source_map", None)
    fitted_maps = [] if source_map is None else _write_fitted_maps(result, outdir, top, paths)

    # Tables.
    rows = result.rows()
    paths["csv"] = outdir / "results.csv"
    atomic_write(paths["csv"], csv_text(rows))

    # ChimeraX script: absolute paths, so it runs from anywhere.
    paths["cxc"] = outdir / "difffit_fits.cxc"
    if source_map is None:
        atomic_write(paths["cxc"], _cxc_text(
            result, map_path, [(p, path.resolve()) for p, path in written_models]))
        placed = [(model_name(result.structures[p.structure_index]), p)
                  for p, _ in written_models]
    else:
        atomic_write(paths["cxc"], _map_source_cxc_text(
            result, map_path, [(p, path.resolve()) for p, path in fitted_maps],
            _source_level(result)))
        name = Path(source_map.path).name if source_map.path else result.structures[0].name
        placed = [(name.replace(",", "_"), p) for p, _ in fitted_maps]

    paths["positions"] = outdir / "difffit_fits.positions"
    atomic_write(paths["positions"], positions_text(
        (name, p.rotation, p.translation) for name, p in placed))

    paths["trajectories"] = outdir / "trajectories.npz"
    atomic_write(paths["trajectories"], _trajectories_npz(result))

    command = command if command is not None else " ".join(sys.argv)
    if report:  # before the log, which lists the files written
        from ..report.fit import fit_report

        # The folder was checked above (empty, or force): replacing is what was asked.
        paths["report"] = fit_report(result, outdir / "report.html", overwrite=True,
                                     command=command)
        from ..report.molstar import ASSET_DIR  # the report's 3D viewer, beside it

        for f in sorted((outdir / ASSET_DIR).glob("*")):
            paths[f"asset:{f.name}"] = f

    paths["json"] = outdir / "results.json"  # written last: it lists every file
    paths["log"] = outdir / "log.txt"
    atomic_write(paths["log"], _log_text(result, command, map_path,
                                          {k: v for k, v in paths.items() if ":" not in k}))

    files = sorted(str(v.relative_to(outdir)) for k, v in paths.items()
                   if k not in ("outdir", "models"))
    params = asdict(result.params) if is_dataclass(result.params) else dict(result.params)
    doc = {
        "difffit_version": version(),
        "kind": "fit",
        "command": command,
        "map": map_record(result.map, map_path),
        "structures": structure_records(result.structures),
        "resolution": result.resolution,
        "threshold": result.threshold,
        "params": params,
        "timings": result.timings,
        "build_info": build_info(),
        "models": [{"structure": p.structure_name, "rank": p.rank, "path": str(path.resolve())}
                   for p, path in written_models],
        **({"fitted_maps": [{"rank": p.rank, "path": str(path.resolve())}
                            for p, path in fitted_maps]} if source_map is not None else {}),
        **describe_rows(rows, result.params.rank_by),
        "files": files,
        "placements": rows,
    }
    atomic_write(paths["json"], json.dumps(jsonable(doc), indent=1, allow_nan=False) + "\n")
    _remove_earlier(outdir, earlier, files)
    return paths


def _files_of_fit(outdir: Path) -> list[str]:
    """The files a fit recorded as its own in ``outdir/results.json``: its ``files`` (paths
    relative to the folder), or for a results.json without them its models. Empty when
    the folder holds no difffit fit's results.json (a file of that name that is not one
    names nothing to remove)."""
    try:
        doc = json.loads((Path(outdir) / "results.json").read_text())
    except (OSError, ValueError):
        return []
    if not (isinstance(doc, dict) and "difffit_version" in doc and "placements" in doc):
        return []
    files = doc.get("files")
    if files is None:
        files = [m.get("path") for m in doc.get("models", []) if isinstance(m, dict)]
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else []


def _remove_earlier(outdir: Path, earlier: list[str], now: list[str]) -> None:
    """Remove the files an earlier fit wrote in ``outdir`` that this one did not write
    again: only plain files inside the folder, only those it listed (a user's files are
    never touched)."""
    root = Path(outdir).resolve()
    keep = {(root / f).resolve() for f in now}
    for f in earlier:
        p = (root / f).resolve()  # an absolute path stays as it is
        if p not in keep and p.is_relative_to(root) and p.is_file():
            p.unlink()


def _trajectories_npz(result: FitResult) -> bytes:
    """trajectories.npz, self-describing: the recorded poses and scores of every start
    (quat [K, S, 4], trans [K, S, 3], score [K, S], iteration [K], mol_idx [S]) plus what
    turns them into poses of the input files: the structures' names [M] and fitted-atom
    centroids [M, 3] (Angstrom), and the convention (:data:`TRAJECTORY_POSE`)."""
    arrays = {k: np.asarray(v) for k, v in result.trajectory.items()}
    arrays.update(structure_names=np.array([s.name for s in result.structures], dtype=str),
                  centroids=np.stack([s.centroid for s in result.structures]).reshape(-1, 3),
                  convention=np.array(TRAJECTORY_POSE))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()
