"""The coarse stage of a fit's descent (``FitParams.coarse_iters``, docs/method.md section 5).

The first ``coarse_iters`` Adam steps of the first-round starts (by default all but the
last 50 of descents of 200 or more: :func:`coarse_steps`) run with a few coarse points
per structure instead of its fitted atoms, on the pyramid levels shifted by m
(:mod:`difffit.gmm_search` explains why: a group of atoms with variance s^2 per axis
scores about as its centre does on levels m .. m+L-1, m = s^2 / (smooth_sigma voxel)^2);
the remaining steps then continue with the atoms on levels 0 .. L-1 from where the coarse
stage stopped, with a fresh Adam (the coarse score has another scale, so its moment
estimates would size the first atom steps wrongly).

Nothing of the coarse stage is recorded: its scores are on another scale and must never
be compared with atom scores. Levels 0 .. L-1 of a pyramid built with L + m levels are
exactly the pyramid of L levels (level k is level k-1 smoothed once), so the fit builds
its pyramid once with the extra levels (:func:`prepare`, :meth:`CoarseStage.split`).

Each structure has its own points (a k-means seeded by the fit's seed alone) and its own
m, and every start descends on its own: a structure's result does not depend on its
batch mates.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .gmm_search import chain_pieces, level_shift, search_points_many
from .metrics import ragged
from .params import FitParams
from .preprocess import Pyramid
from .search import Batch, chunks, optimise
from .structures import Structure

__all__ = ["ATOM_STEPS", "CoarseStage", "coarse_steps", "extra_levels_bound", "prepare",
           "coarse_descent"]

# The default leaves the atoms the last ATOM_STEPS steps of descents of at least
# _AUTO_FROM steps: measured at 200 (benchmarks/bench_coarse.py: 150 coarse + 50 atom steps
# give the same answers as 200 atom steps on every shared data set, in 0.79 x the time);
# shorter descents (reduced settings) were not measured and stay atoms only.
ATOM_STEPS = 50
_AUTO_FROM = 200


def coarse_steps(params: FitParams) -> int:
    """Coarse steps of a fit's first-round descent: ``coarse_iters``, or by default (None)
    ``n_iters - 50`` when ``n_iters`` >= 200 (150 of the default 200), else 0; always 0 for
    a local fit (it refines from where the model is)."""
    if params.local:
        return 0
    if params.coarse_iters is not None:
        return params.coarse_iters
    return params.n_iters - ATOM_STEPS if params.n_iters >= _AUTO_FROM else 0


def extra_levels_bound(structs: list[Structure], params: FitParams, voxel) -> int:
    """An upper bound on the pyramid levels the coarse stage adds, without its k-means:
    the spread of the chain cut into pieces of ``coarse_atoms`` atoms (the k-means only
    tightens it). 0 when the stage is off. For memory estimates."""
    if not coarse_steps(params):
        return 0
    worst = 0.0
    for s in structs:
        xyz = s.fit_coords
        mean, size = chain_pieces(xyz, max(1, min(len(xyz), round(len(xyz) / params.coarse_atoms))))
        var = float(((xyz - np.repeat(mean, size, axis=0)) ** 2).sum() / (3 * len(xyz)))
        worst = max(worst, var)
    return level_shift(worst, voxel, params)


@dataclass
class CoarseStage:
    """The coarse points of a fit's structures and the volumes they sample."""

    batch: Batch                 # ragged [P, 3] coarse points, centred as the fitted atoms
    shift: Tensor                # [M] int64 level shift m of each structure
    volumes: dict[int, Tensor] = field(default_factory=dict)  # m -> [D, H, W, 1]

    @property
    def extra_levels(self) -> int:
        """Levels the pyramid needs beyond ``n_levels``: the largest shift."""
        return int(self.shift.max()) if self.shift.numel() else 0

    def split(self, pyr: Pyramid, params: FitParams, device) -> Pyramid:
        """Keep the summed volume of levels m .. m+L-1 for every shift m, and return the
        pyramid of the first L levels (the atom search's own: equal to one built with L
        levels)."""
        L = params.n_levels
        for m in sorted(set(self.shift.tolist())):
            self.volumes[m] = pyr.levels[..., m:m + L].sum(-1, keepdim=True).to(device).contiguous()
        if pyr.levels.shape[-1] == L:
            return pyr
        return Pyramid(pyr.levels[..., :L].contiguous(), pyr.origin, pyr.voxel_size,
                       pyr.threshold, pyr.scale, pyr.mask, pyr.negative)


def prepare(structs: list[Structure], params: FitParams, voxel, device) -> CoarseStage:
    """Each structure's coarse points (``coarse_atoms`` fitted atoms per point, centred on
    its fitted atoms' centroid as the fit's atoms are) and its level shift; the volumes
    come later from the pyramid (:meth:`CoarseStage.split`)."""
    found = search_points_many(structs, params.coarse_atoms)
    pts = [p for p, _ in found]
    shift = [level_shift(var, voxel, params) for _, var in found]
    points, offsets = ragged(pts, device)
    return CoarseStage(Batch(points, offsets), torch.tensor(shift, dtype=torch.int64))


def coarse_descent(stage: CoarseStage, origin, voxel, quat0: Tensor, trans0: Tensor,
                   mol_idx: Tensor, params: FitParams, lr_trans: float, bar
                   ) -> tuple[Tensor, Tensor]:
    """:func:`coarse_steps` Adam steps of every start with its structure's coarse points
    on its shifted volume; the poses reached.

    Args:
        stage: from :func:`prepare`, split over the fit's pyramid.
        quat0: [S, 4], trans0: [S, 3] the starts; mol_idx: [S] their structures.
        bar: a tqdm bar or None (one step per chunk and iteration).

    Returns:
        quat [S, 4], trans [S, 3] after the coarse steps (nothing is recorded).
    """
    steps = coarse_steps(params)
    q, t = quat0.clone(), trans0.clone()
    off = stage.batch.offsets.cpu()
    n_pts = (off[1:] - off[:-1])[mol_idx.cpu()]                      # [S]
    shift = stage.shift[mol_idx.cpu()]                               # [S]
    runs = []
    for m in sorted(set(shift.tolist())):
        idx = torch.nonzero(shift == m).flatten()
        runs += [(m, idx[a:b]) for a, b in chunks(n_pts[idx], params.max_points_per_batch)]
    if bar is not None:
        bar.total = (bar.total or 0) + steps * len(runs)
        bar.refresh()
    for m, sel in runs:
        sel = sel.to(q.device)
        rec = optimise(stage.volumes[m], origin, voxel, stage.batch, quat0[sel], trans0[sel],
                       mol_idx[sel], params, lr_trans, bar, steps)
        q[sel], t[sel] = rec["quat"][-1], rec["trans"][-1]
    return q, t
