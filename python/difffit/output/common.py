"""What every writer of results shares: the map a script opens, ChimeraX quoting and
colours, the model format, the version and build recorded in each output."""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import DifffitInputError
from ..maps import DensityMap, write_map
from ..results import score_column

__all__ = ["COLOURS", "cxc_quote", "map_file", "abs_path", "check_model_format", "version",
           "build_info", "map_record", "structure_records", "TRANSFORM", "TRAJECTORY_POSE",
           "METRIC_DOCS", "describe_rows"]

# Colours given to the models in the ChimeraX scripts, one per structure (cycled).
COLOURS = ("cornflowerblue", "orange", "mediumseagreen", "orchid", "gold", "tomato",
           "turquoise", "sienna", "hotpink", "slategray")


def abs_path(path: str | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def cxc_quote(path: str) -> str:
    """Quote a path for a ChimeraX command when it holds spaces, quotes, ';' or '#' (or is
    empty): in double quotes, or in single quotes when it holds a double quote (ChimeraX
    ends a quoted word at the closing quote followed by a space or the line's end)."""
    if path and not re.search(r"[\s\"';#]", path):
        return path
    if '"' in path and "'" not in path:
        return "'" + path + "'"
    return '"' + path.replace('"', '\\"') + '"'


def map_file(dmap: DensityMap, outdir: Path, paths: dict[str, Path]) -> str:
    """Absolute path of the map for a ChimeraX script: its own file, or ``outdir/map.mrc``
    written here (recorded in ``paths["map"]``) when it has none (e.g. simulated)."""
    if dmap.path is not None and Path(dmap.path).is_file():
        return str(Path(dmap.path).resolve())
    paths["map"] = Path(outdir) / "map.mrc"
    write_map(paths["map"], dmap, overwrite=True)
    return str(paths["map"].resolve())


def map_record(dmap: DensityMap, path: str | None) -> dict:
    """The map as the JSON outputs record it: its file, grid (x, y, z), voxel size and
    origin (Angstrom)."""
    return {"path": path, "grid_xyz": list(dmap.shape_xyz), "voxel_size": dmap.voxel_size,
            "origin": dmap.origin}


def structure_records(structures) -> list[dict]:
    """The input structures as the JSON outputs record them: 0-based index, name, file,
    atom counts, chains and the fitted atoms' centroid (Angstrom, input coordinates)."""
    return [{"index": i, "name": s.name, "path": abs_path(s.path), "n_atoms": s.n_atoms,
             "n_fit_atoms": s.n_fit_atoms, "chains": s.chains, "centroid": s.centroid}
            for i, s in enumerate(structures)]


def check_model_format(fmt: str, top: int) -> str:
    """The model file suffix ("cif" or "pdb") after checking ``fmt`` and ``top``."""
    out = str(fmt).lower().lstrip(".")
    if out not in ("cif", "pdb"):
        raise DifffitInputError(f"model_format must be 'cif' or 'pdb', got {fmt!r}")
    if int(top) < 0:
        raise DifffitInputError(f"top must be >= 0, got {top}")
    return out


def version() -> str:
    from .. import __version__

    return __version__


def build_info() -> dict:
    """The compiled kernels' build information, or the error that prevents loading them
    (an output must not fail for lack of the extension)."""
    try:
        from .._ext import build_info as info

        return info()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


# ----------------------------------------------------------------------------------------
# What the numbers of the tables mean: recorded in every JSON beside the rows, so that a
# results file read alone says its metric, its units and how a placement moves atoms.
# ----------------------------------------------------------------------------------------

TRANSFORM = ("x -> R x + t on the coordinates of the input structure file, R = [[r11, r12, "
             "r13], [r21, r22, r23], [r31, r32, r33]] (unitless), t = (tx, ty, tz) in Angstrom "
             "(as ChimeraX 'view matrix models'); (cx, cy, cz) = R c + t, in Angstrom, is where "
             "the centroid c of the structure's fitted atoms lands")

TRAJECTORY_POSE = ("start s of structure mol_idx[s] at recorded step k: quat[k, s] = (w, x, y, "
                   "z) (need not be unit) and trans[k, s] (Angstrom) move atom x of the input "
                   "file to R(q) (x - centroids[mol_idx[s]]) + t, i.e. x -> R x + (t - R c)")

METRIC_DOCS = {
    "correlation": "ChimeraX fitmap correlation of the structure's simulated map (molmap at "
                   "the resolution) with the map, over the simulated map's points above 10 % "
                   "of its maximum; unitless, -1 to 1",
    "cam": "ChimeraX fitmap correlation about the mean of the same two maps, over the same "
           "points as correlation; unitless, -1 to 1",
    "overlap": "ChimeraX fitmap overlap, sum over those points of simulated value x map "
               "value; map units x simulated density, grows with the structure's size",
    "atom_correlation": "correlation at the heavy atoms of the normalised map (search level "
                        "0) with the structure's own simulated map; unitless, -1 to 1",
    "atom_cam": "atom_correlation about the means; unitless, -1 to 1",
    "atom_overlap": "mean over the heavy atoms of normalised map x simulated map; "
                    "normalised map units",
    "inside_fraction": "fraction of the heavy atoms at or above the contour level; 0 to 1",
    "mean_density": "mean map value at the heavy atoms; map units",
    "pyramid_score": "the search objective, mean over the fitted atoms of the weighted "
                     "multi-resolution pyramid (docs/method.md section 4); normalised map units",
    "zscore": "how far the placement stands out: (score - mean) / std of the scores of the "
              "structure's distinct placements (clusters); unitless",
}

_COLUMN_DOCS = {
    "structure": "the structure's name (file stem)",
    "name": "the candidate's name (file stem)",
    "input": "1-based position of the structure among the inputs (the library, for identify)",
    "rank": "1-based rank (within its structure for fit, in the library for identify)",
    "hits": "number of starts that reached the placement (its cluster's size)",
    **{f"r{i}{j}": "rotation matrix element, row i, column j; unitless"
       for i in (1, 2, 3) for j in (1, 2, 3)},
    **{f"t{a}": "translation, Angstrom" for a in "xyz"},
    **{f"c{a}": "where the fitted atoms' centroid lands, Angstrom" for a in "xyz"},
    "iteration": "recorded iteration of the representative start's best pose",
    "start": "index of the representative start within its structure's starts",
    "refined": "whether the placement was refined against the unsmoothed map",
    "copy": "copy number of the structure, 1, 2, ... (composite: in order of acceptance; "
            "fit: 0 for a placement that is not one of the distinct copies ranked first)",
    "chains": "the copy's chain names in composite.cif (<chain>_<input>_<copy>)",
    "round": "1-based composite round in which the copy was accepted",
    "n_clusters": "number of distinct placements found",
    "n_atoms": "atoms kept from the file",
    "n_fit_atoms": "atoms fitted (the selection)",
    "batch": "the batch the candidate was fitted in (-1: screened out by the first pass)",
    "fit": "full: fitted fully; first pass only: screened out by identify's first pass "
           "(no score; its metrics and pose are the coarse estimate)",
    "file": "the candidate's structure file",
}


def describe_rows(rows: list[dict], score_name: str) -> dict:
    """What a results JSON says about its rows: the score's column and metric, the transform
    convention, and a description with units of every column present.

    Args:
        rows: the rows written (their keys are the columns).
        score_name: the ranking metric (a key of :data:`METRIC_DOCS`).

    Returns:
        {"score_metric", "score_column", "transform", "units", "columns"}: the columns
        described in the order of the rows' keys.
    """
    column = score_column(score_name)
    docs = {**_COLUMN_DOCS, **METRIC_DOCS,
            column: f"the ranking score, {score_name}: {METRIC_DOCS.get(score_name, '')}"}
    names = list(dict.fromkeys(k for row in rows for k in row))
    return {"score_metric": score_name, "score_column": column,
            "transform": TRANSFORM,
            "units": {"length": "Angstrom", "rotation": "unitless matrix",
                      "map values": "as in the map file"},
            "columns": {k: docs.get(k, "") for k in names}}
