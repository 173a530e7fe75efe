"""The files of an identify run: the ranking (CSV, JSON), best-pose models of the top
candidates, and the log (rewritten after every batch, so an interrupted run leaves an
accurate one). The checkpoint beside them is :mod:`difffit.runs`'s."""
from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..files import atomic_write, jsonable, safe_name
from ..params import SIZE_FAIR
from ..results import Candidate, IdentifyResult
from ..structures import write_structure
from ..tables import csv_text
from .common import check_model_format, describe_rows, map_record, version

__all__ = ["RunLog", "write_identify_outputs"]


class RunLog:
    """identify_log.txt: settings, every batch (where, how long), skipped files, ranking.
    Rewritten atomically after every batch, so an interrupted run leaves an accurate log."""

    def __init__(self, outdir, command, dmap, resolution, threshold, params, score,
                 batch_atoms, n_candidates, n_batches, skipped):
        import torch

        self.path = None if outdir is None else Path(outdir) / "identify_log.txt"
        self.head = [
            f"difffit {version()} identify log, started {time.strftime('%Y-%m-%d %H:%M:%S %z')}",
            f"command: {command if command is not None else ' '.join(sys.argv)}",
            f"python {platform.python_version()}, torch {torch.__version__}, "
            f"numpy {np.__version__}, {platform.platform()}",
            "",
            f"map: {dmap.path or '(in memory)'}",
            f"  grid (x, y, z) {dmap.shape_xyz}, voxel size {dmap.voxel_size.tolist()} A, "
            f"origin {dmap.origin.tolist()} A",
            f"resolution: {resolution:g} A",
            f"threshold (contour level): {threshold:.6g}",
            f"score: {score}",
            f"library: {n_candidates} structures in "
            + (f"{n_batches} batches" if n_batches is not None else
               "batches chosen by the first pass (below)")
            + f" of at most {batch_atoms} fitted atoms",
        ]
        if skipped:
            self.head.append(f"skipped {len(skipped)} unreadable file(s):")
            self.head += [f"  {f}: {why}" for f, why in skipped]
        self.head += ["", "parameters:"] + [f"  {k}: {v}" for k, v in asdict(params).items()]
        self.lines: list[str] = []   # the batches, then (identify) the first pass's line
        self.n_batches = 0
        self.tail: list[str] = []

    def batch(self, out: dict, from_checkpoint: bool) -> None:
        names = ", ".join(c["name"] for c in out["candidates"][:4])
        if len(out["candidates"]) > 4:
            names += f", ... ({len(out['candidates'])})"
        how = "loaded from checkpoint" if from_checkpoint else \
            f"{out['seconds']:.1f} s on {out['device']} ({out['worker']})"
        self.lines.append(f"  batch {out['batch']}: {names}: {how}")
        self.n_batches += 1

    def write(self, tail: list[str] | None = None) -> None:
        if tail is not None:
            self.tail = tail
        if self.path is None or not self.path.parent.is_dir():
            return
        text = self.head + ["", f"batches ({self.n_batches} finished):"] + self.lines + self.tail
        atomic_write(self.path, "\n".join(text) + "\n")


def _model_name(c: Candidate, fmt: str) -> str:
    return f"rank{c.rank:03d}_{safe_name(c.name)}.{fmt}"


def write_identify_outputs(result: IdentifyResult, outdir, *, top: int = 10,
                           model_format: str = "cif", command: str | None = None,
                           log: RunLog | None = None) -> dict[str, Path]:
    """Write the ranking of an identify run into ``outdir`` (next to its checkpoint).

    Files: ranking.csv (one row per candidate, best first: rank, name, score, zscore,
    hits, clusters, atoms, every metric, centre, rotation r11..r33, translation, batch,
    file), ranking.json (the same plus settings, batches, skipped files, the first pass's
    bound when there was one, and each candidate's next-best placements), models/rankNNN_<name>.cif (the best ``top``
    candidates in their best placement, all atoms; none for a candidate the first pass
    screened out) and identify_log.txt. Files of these
    names are replaced (they belong to this run); nothing else is touched.

    Returns:
        Paths written: "outdir", "csv", "json", "log", "models" and "model:<name>".
    """
    fmt = check_model_format(model_format, top)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"outdir": outdir, "models": outdir / "models"}
    paths["models"].mkdir(exist_ok=True)
    models = []
    for c in result.candidates[: int(top)]:
        # A candidate the first pass screened out has a coarse pose but no fit: no model.
        if c.screened or not np.all(np.isfinite(c.rotation)):
            continue
        p = paths["models"] / _model_name(c, fmt)
        write_structure(p, result.structure(c, moved=False), c.rotation, c.translation,
                        overwrite=True)
        paths[f"model:{p.name}"] = p
        models.append({"name": c.name, "rank": c.rank, "path": str(p.resolve())})

    rows = result.rows()
    paths["csv"] = outdir / "ranking.csv"
    atomic_write(paths["csv"], csv_text(rows))
    doc = {
        "difffit_version": version(),
        "command": command if command is not None else " ".join(sys.argv),
        "kind": "identify",
        "map": map_record(result.map, result.map.path),
        "resolution": result.resolution, "threshold": result.threshold,
        "score": result.score, "size_fair": result.score in SIZE_FAIR,
        **describe_rows(rows, result.score),
        "params": asdict(result.params), "batch_atoms": result.batch_atoms,
        "timings": result.timings, "batches": result.batches,
        "skipped": [{"file": f, "reason": why} for f, why in result.skipped],
        # The bound of a first-pass run (rounds, gains, checked candidates); None without.
        "first_pass": getattr(result, "first_pass", None),
        "models": models,
        "candidates": [{**row, "placements": c.placements, "cluster_scores": c.cluster_scores}
                       for row, c in zip(rows, result.candidates)],
    }
    paths["json"] = outdir / "ranking.json"
    atomic_write(paths["json"], json.dumps(jsonable(doc), indent=1, allow_nan=False) + "\n")

    if log is None:
        log = RunLog(outdir, command, result.map, result.resolution, result.threshold,
                      result.params, result.score, result.batch_atoms, len(result.candidates),
                      len(result.batches), result.skipped)
        for b in result.batches:
            log.lines.append(f"  batch {b['batch']}: {len(b['indices'])} structures, "
                             f"{b['seconds']:.1f} s on {b['device']} ({b['worker']})")
    log.path = outdir / "identify_log.txt"
    log.write(["", "timings (s):"] + [f"  {k}: {v:.3f}" for k, v in result.timings.items()]
              + ["", "outputs:"] + [f"  {k}: {v}" for k, v in paths.items() if ":" not in k]
              + ["", result.summary_table(top=max(int(top), 20)), ""])
    paths["log"] = log.path
    return paths
