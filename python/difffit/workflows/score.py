"""Scoring models as they are placed: ChimeraX ``fitmap`` without moving them
(``fitmap ... shift false rotate false``, ``measure correlation``)."""
from __future__ import annotations

import numpy as np

from ..metrics import chimerax_metrics
from ..preprocess import default_threshold
from ..simulators import get_simulator
from ..structures import simulation_mask
from .fit import as_map, as_structures, check_resolution

__all__ = ["score"]

# The columns of a score row, after the structure's name and file.
SCORE_COLUMNS = ("correlation", "cam", "overlap", "envelope_points", "mean_density",
                 "inside_fraction", "n_atoms")


def score(target, structures, resolution: float, threshold: float | None = None,
          simulator: str = "molmap", checkpoint=None) -> list[dict]:
    """The fit metrics of structures where they are, one dict per structure.

    Args:
        target: DensityMap or path of an MRC/CCP4 map.
        structures: Structure objects or paths (PDB/mmCIF), each scored on its own.
        resolution: Angstrom: the simulated maps' resolution (ChimeraX ``fitmap
            resolution``).
        threshold: the map's contour level, for the fraction of atoms inside it; None:
            mean + 1 standard deviation.
        simulator, checkpoint: the simulated map (:mod:`difffit.simulators`): molmap
            (default, ChimeraX's numbers), gemmi, or learned with its checkpoint file.

    Returns:
        Per structure: "structure", "file", and ChimeraX's "correlation", "cam"
        (correlation about the mean), "overlap", "envelope_points" (simulated grid points
        used), "mean_density" (map value at the atoms, averaged), "inside_fraction"
        (atoms at or above the contour), "n_atoms" (atoms simulated), plus "threshold".
    """
    dmap = as_map(target)
    structs = as_structures(structures)
    resolution = check_resolution(resolution)
    thr = float(default_threshold(dmap.data) if threshold is None else threshold)
    P = len(structs)
    sim = None if simulator == "molmap" else get_simulator(simulator, checkpoint)
    m = chimerax_metrics(dmap, structs, np.repeat(np.eye(3)[None], P, 0), np.zeros((P, 3)),
                         list(range(P)), resolution, thr, simulator=sim)
    rows = []
    for k, s in enumerate(structs):
        row = {"structure": s.name, "file": s.path}
        for c in SCORE_COLUMNS[:-1]:
            row[c] = m[c][k].item()
        row["n_atoms"] = int(simulation_mask(s).sum())
        row["threshold"] = thr
        rows.append(row)
    return rows
