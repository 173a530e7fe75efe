"""Writing the results of a fit: tables, fitted models, a ChimeraX script, trajectories, a log.

Layout of an output folder (all written by :func:`write_fit_outputs`)::

    results.csv           one row per placement (all clusters of all structures), best first
    results.json          the same rows plus the parameters, inputs, timings and version
    models/<s>_rank<k>.cif  the top placements of each structure, all atoms, original names
    difffit_fits.cxc      ChimeraX script: opens the map and the models
    trajectories.npz      recorded poses and scores of every start
    report.html           only with report=True: tables and plots (difffit.report)
    log.txt               command line, parameters, inputs, timings, build information
    map.mrc               only when the fitted map has no file of its own (e.g. simulated)

Every file is written to a temporary name in its folder and renamed into place, so an
interrupted run never leaves a half-written file behind.
"""
from __future__ import annotations

import csv
import io as _io
import json
import math
import platform
import re
import sys
import time
import warnings
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DifffitInputError
from .io import _atomic_write_bytes as _atomic_write
from .io import write_map, write_structure

if TYPE_CHECKING:  # pragma: no cover
    from .fit import FitResult

__all__ = ["write_fit_outputs", "summary_table", "model_filenames"]

# Colours given to the models in the ChimeraX script, one per structure (cycled).
_COLOURS = ("cornflowerblue", "orange", "mediumseagreen", "orchid", "gold", "tomato",
            "turquoise", "sienna", "hotpink", "slategray")


# ----------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------


def _safe_name(name: str) -> str:
    """A file-name-safe version of a structure name (letters, digits, ``._-``)."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return out or "structure"


def _jsonable(x: Any) -> Any:
    """numpy / Path / dataclass values -> plain JSON values; NaN and inf -> None."""
    if is_dataclass(x) and not isinstance(x, type):
        return _jsonable(asdict(x))
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, Path):
        return str(x)
    if x is None or isinstance(x, (str, int)):
        return x
    return str(x)


def _abs(path: str | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def _cxc_quote(path: str) -> str:
    """Quote a path for a ChimeraX command when it holds spaces or quotes."""
    if re.search(r"[\s\"';#]", path):
        return '"' + path.replace('"', '\\"') + '"'
    return path


def _centre(result: "FitResult", p) -> np.ndarray:
    """[3] where the placement puts the structure's fitted-atom centroid."""
    s = result.structures[p.structure_index]
    return np.asarray(p.rotation) @ s.centroid + np.asarray(p.translation)


def _version() -> str:
    from . import __version__

    return __version__


def _build_info() -> dict:
    try:
        from ._ext import build_info

        return build_info()
    except Exception as exc:  # the outputs must not fail for lack of the extension
        return {"error": f"{type(exc).__name__}: {exc}"}


def model_filenames(result: "FitResult", top: int = 3, model_format: str = "cif"
                    ) -> list[tuple[Any, str]]:
    """(placement, file name) for the top ``top`` placements of every structure.

    File names are ``<structure>_rank<k>.<fmt>``; a structure name that would clash with
    another's (two inputs with the same stem) gets its 1-based input index appended.
    """
    names = [_safe_name(s.name) for s in result.structures]
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    names = [f"{n}_{i + 1}" if seen[n] > 1 else n for i, n in enumerate(names)]
    out = []
    for i in range(len(result.structures)):
        for p in result.for_structure(i)[: max(int(top), 0)]:
            out.append((p, f"{names[i]}_rank{p.rank}.{model_format}"))
    return out


# ----------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------


def _rows(result: "FitResult") -> list[dict]:
    """result.rows(), with the centroid position added when the row lacks it."""
    rows = result.rows()
    for row, p in zip(rows, result.placements):
        if "cx" not in row:
            c = _centre(result, p)
            row.update({"cx": float(c[0]), "cy": float(c[1]), "cz": float(c[2])})
    return rows


def _csv_text(rows: list[dict]) -> str:
    columns: list[str] = []
    for row in rows:
        for k in row:
            if k not in columns:
                columns.append(k)
    if not columns:  # no placement at all: still a valid CSV with the usual header
        columns = ["structure", "rank", "hits", "score"]
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def summary_table(result: "FitResult", top: int = 3) -> str:
    """A short ranked text table of the top placements of every structure.

    Columns: structure, rank, hits, correlation, cam, fraction of atoms inside the
    contour, and where the structure's centroid lands (x, y, z Angstrom). Structures
    appear in order of their best score.

    Args:
        result: a FitResult.
        top: placements shown per structure.

    Returns:
        The table as text (no trailing newline).
    """
    order: list[int] = []
    for p in result.placements:  # placements are sorted by score, best first
        if p.structure_index not in order:
            order.append(p.structure_index)
    header = ("structure", "rank", "hits", "corr", "cam", "inside", "centroid (x, y, z) A")
    lines: list[tuple[str, ...]] = []
    for i in order:
        for p in result.for_structure(i)[: max(int(top), 0)]:
            m = p.metrics
            c = _centre(result, p)
            lines.append((
                p.structure_name, str(p.rank), str(p.hits),
                f"{m.get('correlation', float('nan')):.3f}", f"{m.get('cam', float('nan')):.3f}",
                f"{m.get('inside_fraction', float('nan')):.2f}",
                f"{c[0]:8.2f} {c[1]:8.2f} {c[2]:8.2f}",
            ))
    missing = [s.name for k, s in enumerate(result.structures) if k not in order]
    widths = [max(len(h), *(len(r[k]) for r in lines)) if lines else len(h)
              for k, h in enumerate(header)]
    fmt = lambda r: "  ".join(  # noqa: E731
        (v.ljust(w) if k == 0 else v.rjust(w)) for k, (v, w) in enumerate(zip(r, widths)))
    text = [fmt(header), "  ".join("-" * w for w in widths)]
    text += [fmt(r) for r in lines]
    if missing:
        text.append(f"no placement for: {', '.join(missing)}")
    return "\n".join(text)


# ----------------------------------------------------------------------------------------
# The ChimeraX script and the log
# ----------------------------------------------------------------------------------------


def _cxc_text(result: "FitResult", map_path: str, models: list[tuple[Any, Path]]) -> str:
    lines = [
        "# difffit fits: open in UCSF ChimeraX (File > Open, or `open difffit_fits.cxc`).",
        "# Model numbers below assume a fresh session: the map is #1, the models #2 on.",
        f"# map #1: {map_path}",
        f"open {_cxc_quote(map_path)}",
        f"volume #1 level {result.threshold:.6g} style surface transparency 0.6",
    ]
    for k, (p, path) in enumerate(models):
        model_id = k + 2
        colour = _COLOURS[p.structure_index % len(_COLOURS)]
        m = p.metrics
        lines.append(
            f"# #{model_id}: {p.structure_name} rank {p.rank}, hits {p.hits}, "
            f"correlation {m.get('correlation', float('nan')):.4f}, cam {m.get('cam', float('nan')):.4f}"
        )
        lines.append(f"open {_cxc_quote(str(path))}")
        lines.append(f"color #{model_id} {colour} target ac")
    lines += ["hide atoms", "show cartoons", "view"]
    return "\n".join(lines) + "\n"


def _log_text(result: "FitResult", command: str | None, map_path: str | None,
              files: dict[str, Path]) -> str:
    import torch

    dmap = result.map
    out = [
        f"difffit {_version()} fit log, written {time.strftime('%Y-%m-%d %H:%M:%S %z')}",
        f"command: {command if command is not None else ' '.join(sys.argv)}",
        f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"{platform.platform()}",
        "",
        "build_info:",
    ]
    out += [f"  {k}: {v}" for k, v in _build_info().items()]
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
    out += ["", summary_table(result, top=3), ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------
# Everything at once
# ----------------------------------------------------------------------------------------


def _model_args(model_format: str, top: int) -> str:
    """The model file suffix ("cif" or "pdb") after checking ``model_format`` and ``top``."""
    fmt = str(model_format).lower().lstrip(".")
    if fmt not in ("cif", "pdb"):
        raise DifffitInputError(f"model_format must be 'cif' or 'pdb', got {model_format!r}")
    if int(top) < 0:
        raise DifffitInputError(f"top must be >= 0, got {top}")
    return fmt


def _check_outdir(outdir: Path, force: bool) -> None:
    if outdir.exists() and not outdir.is_dir():
        raise DifffitInputError(f"{outdir}: output path exists and is not a folder")
    if outdir.is_dir() and any(outdir.iterdir()) and not force:
        raise FileExistsError(
            f"output folder {outdir} already exists and is not empty; choose another with "
            f"-o/--outdir or pass --force (force=True) to overwrite the files in it"
        )


def write_fit_outputs(result: "FitResult", outdir, *, top: int = 3, model_format: str = "cif",
                      force: bool = False, command: str | None = None,
                      report: bool = False) -> dict[str, Path]:
    """Write the results of a fit into a folder.

    Args:
        result: the FitResult of :func:`difffit.fit.fit`.
        outdir: output folder; created (with parents) when missing.
        top: fitted models written per structure (its best ``top`` placements).
        model_format: "cif" (mmCIF, any chain name) or "pdb".
        force: write into an existing non-empty folder, replacing files of the same names
            (other files there are left alone).
        command: the command line to record in the log (default: ``sys.argv``).
        report: also write ``report.html``, a self-contained HTML report (tables, plots).

    Returns:
        Paths written: keys "outdir", "csv", "json", "cxc", "trajectories", "log",
        "models" (the models folder), "map" (only when the map was written here),
        "report" (only with ``report``), and
        "model:<file name>" for each model.

    Raises:
        FileExistsError: ``outdir`` exists, is not empty and ``force`` is False.
        DifffitInputError: bad ``model_format`` or ``top``, or ``outdir`` is a file.
    """
    fmt = _model_args(model_format, top)
    outdir = Path(outdir)
    _check_outdir(outdir, force)
    outdir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"outdir": outdir}

    # The map: referenced where it is; written here when it has no file (simulated maps).
    if result.map.path is not None and Path(result.map.path).is_file():
        map_path = _abs(result.map.path)
    else:
        paths["map"] = outdir / "map.mrc"
        write_map(paths["map"], result.map, overwrite=True)
        map_path = _abs(str(paths["map"]))

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

    # Tables.
    rows = _rows(result)
    paths["csv"] = outdir / "results.csv"
    _atomic_write(paths["csv"], _csv_text(rows))

    params = asdict(result.params) if is_dataclass(result.params) else dict(result.params)
    doc = {
        "difffit_version": _version(),
        "command": command if command is not None else " ".join(sys.argv),
        "map": {"path": map_path, "grid_xyz": list(result.map.shape_xyz),
                "voxel_size": result.map.voxel_size, "origin": result.map.origin},
        "structures": [{"index": i, "name": s.name, "path": _abs(s.path), "n_atoms": s.n_atoms,
                        "n_fit_atoms": s.n_fit_atoms, "chains": s.chains}
                       for i, s in enumerate(result.structures)],
        "resolution": result.resolution,
        "threshold": result.threshold,
        "params": params,
        "timings": result.timings,
        "build_info": _build_info(),
        "models": [{"structure": p.structure_name, "rank": p.rank, "path": str(path.resolve())}
                   for p, path in written_models],
        "placements": rows,
    }
    paths["json"] = outdir / "results.json"
    _atomic_write(paths["json"], json.dumps(_jsonable(doc), indent=1, allow_nan=False) + "\n")

    # ChimeraX script: absolute paths, so it runs from anywhere.
    paths["cxc"] = outdir / "difffit_fits.cxc"
    _atomic_write(paths["cxc"], _cxc_text(result, map_path,
                                          [(p, path.resolve()) for p, path in written_models]))

    # Trajectories.
    paths["trajectories"] = outdir / "trajectories.npz"
    buf = _io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in result.trajectory.items()})
    _atomic_write(paths["trajectories"], buf.getvalue())

    if report:  # before the log, which lists the files written
        from .report import fit_report

        # The folder was checked above (empty, or force): replacing is what was asked.
        paths["report"] = fit_report(result, outdir / "report.html", overwrite=True,
                                     command=doc["command"])

    paths["log"] = outdir / "log.txt"
    _atomic_write(paths["log"], _log_text(result, command, map_path,
                                          {k: v for k, v in paths.items() if ":" not in k}))
    return paths
