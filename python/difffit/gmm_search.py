"""The coarse search: every start of the DiffFit search run with a few dozen Gaussians per
structure instead of its atoms, on the pyramid levels whose smoothing matches their width.

Why it approximates the atom search (docs/method.md section 3): the atom score is the
mean over atoms of S = sum_k P_k, the summed pyramid, where level k is the map smoothed
by sqrt(k) voxels. A group of n atoms spread about its centre c with variance s^2 per
axis contributes about n (S * G_s)(c), and S * G_s = sum_k P_(k+m) with m = s^2 / voxel^2:
the same pyramid shifted by m levels. So a k-means of the fitted atoms into N groups,
each a point of weight n_j sampled in levels m .. m+L-1, scores a pose almost as the
atoms do on levels 0 .. L-1, with 10-50 x fewer points.

:func:`coarse_search` returns, per structure, the best distinct poses of that search and
the real structure's metrics there (:class:`difffit.metrics.Metrics`: the molmap
envelope moved rigidly), so the estimates are scores of real placements.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from . import ops
from .cluster import first_representatives
from .maps import DensityMap
from .metrics import Metrics, ragged
from .params import FitParams
from .preprocess import Pyramid, build_pyramid
from .region import restrict_starts
from .rotations import quat_to_matrix
from .search import Batch, chunks, optimise, refine_against_map
from .starts import scanned_starts, spread_positions
from .structures import Structure

__all__ = ["CoarseHit", "search_points_many", "chain_pieces", "level_shift", "coarse_volume",
           "coarse_search"]

_CLUSTERED = 64   # best starts of each structure clustered into distinct poses


@dataclass
class CoarseHit:
    """One structure's outcome of the coarse search."""

    quat: np.ndarray       # [K, 4] best distinct poses (centred frame), best first
    trans: np.ndarray      # [K, 3]
    metrics: dict          # name -> [K] float64 metrics of the real structure there
    n_points: int          # Gaussians (before weighting by replication)
    score: float           # the best pose's rank_by metric


def search_points_many(structures: Sequence[Structure], atoms_per_point: float,
                       min_points: int = 8) -> list[tuple[np.ndarray, float]]:
    """The coarse points of each structure, centred on its fitted atoms' centroid.

    A k-means of the fitted atoms into max(min_points, n / atoms_per_point) groups, seeded
    by the chain cut into that many consecutive pieces (compact already, so three Lloyd
    steps suffice; every structure's in one compiled call, :func:`difffit.ops.kmeans_steps`);
    each group's centre repeated round(n_j / mean n) times (at least once) so the
    unweighted mean the kernel takes weighs it by its atoms.

    Returns:
        per structure: (points [P, 3] centred, mean within-group variance per axis in A^2).
    """
    xyz = [s.fit_coords for s in structures]
    ns = [int(min(len(x), max(min_points, math.ceil(len(x) / atoms_per_point)))) for x in xyz]
    init = [chain_pieces(x, n)[0] for x, n in zip(xyz, ns)]
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in xyz])])
    c_offsets = np.concatenate([[0], np.cumsum(ns)])
    centres, labels = ops.kmeans_steps(np.concatenate(xyz), offsets, np.concatenate(init),
                                       c_offsets, 3)
    out = []
    for i, x in enumerate(xyz):
        c = centres[c_offsets[i]:c_offsets[i + 1]]
        lab = labels[offsets[i]:offsets[i + 1]]
        count = np.bincount(lab, minlength=ns[i]).astype(np.float64)
        var = float(((x - c[lab]) ** 2).sum() / (3 * len(x)))
        reps = np.maximum(np.rint(count / count.mean()), 1).astype(int)
        out.append((np.repeat(c, reps, axis=0) - x.mean(0), var))
    return out


def chain_pieces(xyz: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The atoms [P, 3] cut in file order into n pieces of near-equal size (as
    np.array_split): their means [n, 3] and sizes [n]."""
    size = np.full(n, len(xyz) // n)
    size[:len(xyz) % n] += 1
    return np.add.reduceat(xyz, np.cumsum(size) - size, axis=0) / size[:, None], size


def level_shift(var: float, voxel, params: FitParams) -> int:
    """m: the pyramid levels that add a Gaussian of variance ``var`` (A^2 per axis) to a
    level, each level smoothing by ``smooth_sigma`` voxels of mean edge ``voxel``."""
    vox = float(np.mean(voxel))
    return int(round(var / (params.smooth_sigma * vox) ** 2))


def coarse_volume(dmap: DensityMap, threshold: float, params: FitParams, var: float
                  ) -> tuple[Pyramid, torch.Tensor]:
    """The pyramid (with extra levels) and the summed volume [D, H, W, 1] that points
    standing for groups of atoms with variance ``var`` (A^2 per axis) sample: levels
    m .. m + L - 1, m = var / (smooth_sigma * voxel)^2 (module docstring). Levels 0 .. L-1
    of the pyramid are the atom search's own."""
    m = level_shift(var, dmap.voxel_size, params)
    L = params.n_levels
    pyr = build_pyramid(dmap.data, dmap.origin, dmap.voxel_size, threshold, n_levels=L + m,
                        sigma=params.smooth_sigma, negative=params.negative,
                        dust_min_size=params.dust_min_size)
    volume = pyr.levels[..., m:m + L].sum(-1, keepdim=True).to(params.torch_device()).contiguous()
    return pyr, volume


def coarse_search(dmap: DensityMap, structures: list[Structure], resolution: float,
                  threshold: float, params: FitParams, atoms_per_point: float = 20.0,
                  n_iters: int | None = None, keep: int = 4, polish_iters: int = 30
                  ) -> list[CoarseHit]:
    """The DiffFit search with coarse points; the best ``keep`` distinct poses of each
    structure, polished with its atoms, and its real metrics there.

    The starts are the fit's (difffit.starts: positions spread over the density, the best
    ``n_rotations`` of ``scan_rotations`` at each, scored here with the coarse points on
    the coarse volume); the descent runs with the coarse points; the best distinct poses
    then get ``polish_iters`` steps with the fitted atoms on the fine levels, so an
    estimate is the score of a real placement close to the one a full fit would end at.

    Args:
        dmap, resolution, threshold: the target (as :func:`difffit.fit`).
        structures: the candidates (their fitted atoms are grouped).
        params: the search's settings (positions, rotations, seed, pyramid, device);
            ``n_iters`` overrides its step count.
        atoms_per_point: fitted atoms per Gaussian (20: backbone atoms of about five
            residues, a Gaussian every ~6-8 A).
        keep: distinct poses kept per structure (clustered at the fit's tolerances).
        polish_iters: atom steps of each kept pose (0: none).
    """
    device = params.torch_device()
    pts_c, var = map(list, zip(*search_points_many(structures, atoms_per_point)))
    pyr, volume = coarse_volume(dmap, threshold, params, float(np.mean(var)))
    origin, voxel = pyr.origin.tolist(), pyr.voxel_size.tolist()
    pts, off = ragged(pts_c, device)
    M = len(structures)
    positions = spread_positions(restrict_starts(pyr, params), params.n_positions, seed=params.seed)
    quat0, trans0, mol_idx = scanned_starts(volume, origin, voxel, pts, off, positions, params)
    per = quat0.shape[0] // M
    box = np.array(pyr.shape[::-1]) * pyr.voxel_size
    lr_trans = params.lr_trans if params.lr_trans else 0.01 * float(box.mean())
    n_iters = params.n_iters if n_iters is None else int(n_iters)
    n_pts = (off[1:] - off[:-1]).cpu()[mol_idx.cpu()]
    recs = [optimise(volume, origin, voxel, Batch(pts, off), quat0[a:b], trans0[a:b],
                     mol_idx[a:b], params, lr_trans, None, n_iters)
            for a, b in chunks(n_pts, params.max_points_per_batch)]
    q_best, t_best, s_best = _best_records(recs)

    # The best distinct poses of each structure by the coarse score. Only the best starts
    # can be among them: those are clustered (clustering all costs more than the search).
    R = quat_to_matrix(q_best.double().cpu()).reshape(M, per, 3, 3)
    s_all = s_best.double().cpu().reshape(M, per)
    top = torch.argsort(-s_all, dim=1, stable=True)[:, :_CLUSTERED]                # [M, T]
    t_all = t_best.double().cpu().reshape(M, per, 3)
    reps = first_representatives(t_all.gather(1, top[..., None].expand(-1, -1, 3)),
                                 R.gather(1, top[..., None, None].expand(-1, -1, 3, 3)),
                                 s_all.gather(1, top), keep, params.shift_tol, params.angle_tol)
    sel, sel_m = [], []
    for i in range(M):
        r = reps[i][reps[i] >= 0]
        sel.append(i * per + top[i, r])
        sel_m += [i] * len(r)
    sel_idx = torch.cat(sel).to(q_best.device)
    q_sel, t_sel = q_best[sel_idx], t_best[sel_idx]
    m_sel = torch.tensor(sel_m, dtype=torch.int64, device=device)
    centroids = np.stack([s.centroid for s in structures])
    if polish_iters > 0:
        fine = pyr.levels[..., :params.n_levels].sum(-1, keepdim=True).to(device).contiguous()
        atoms, a_off = ragged([s.fit_coords - c for s, c in zip(structures, centroids)], device)
        n_at = (a_off[1:] - a_off[:-1]).cpu()[m_sel.cpu()]
        recs = [optimise(fine, origin, voxel, Batch(atoms, a_off), q_sel[a:b], t_sel[a:b],
                         m_sel[a:b], params, lr_trans, None, polish_iters)
                for a, b in chunks(n_at, params.max_points_per_batch)]
        q_sel, t_sel, _ = _best_records(recs)
    metrics = Metrics(structures, centroids, dmap, pyr.levels[..., 0], origin, voxel,
                      threshold, resolution, device,
                      atom_metrics=params.rank_by not in ("overlap", "correlation", "cam"))
    mets = {k: v.double().cpu().numpy() for k, v in metrics(q_sel, t_sel, m_sel).items()}
    if params.refine_iters > 0:
        # Each structure's best pose refined as the fit refines its placements, so its
        # estimate is comparable with a full fit's score (docs/method.md section 11); in
        # float32, as the pose only feeds the estimate (the bound's gains absorb the
        # difference, 1e-4 at most on the candidates near the top).
        m_np = m_sel.cpu().numpy()
        rank = np.nan_to_num(mets[params.rank_by], nan=-np.inf)
        best = np.array([rows[np.argmax(rank[rows])] for i in range(M)
                         if len(rows := np.nonzero(m_np == i)[0])], dtype=np.int64)
        bt = torch.as_tensor(best, device=device)
        q_ref, t_ref = refine_against_map(dmap, structures, centroids, q_sel[bt], t_sel[bt],
                                          m_sel[bt], params.refine_iters, torch.float32)
        q_sel, t_sel = q_sel.double(), t_sel.double()
        q_sel[bt], t_sel[bt] = q_ref, t_ref
        for k, v in metrics(q_ref, t_ref, m_sel[bt]).items():
            mets[k][best] = v.double().cpu().numpy()
    out = []
    m_np = m_sel.cpu().numpy()
    for i in range(M):
        rows = np.nonzero(m_np == i)[0]
        order = np.argsort(-np.nan_to_num(mets[params.rank_by][rows], nan=-np.inf), kind="stable")
        rows = rows[order]
        mi = {k: v[rows] for k, v in mets.items()}
        out.append(CoarseHit(q_sel[rows].cpu().numpy(), t_sel[rows].cpu().numpy(), mi,
                             len(np.unique(pts_c[i], axis=0)),
                             float(mi[params.rank_by][0]) if len(rows) else float("nan")))
    return out


def _best_records(recs: list[dict[str, torch.Tensor]]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each start's best recorded pose over the chunks' records: quat [S, 4], trans [S, 3],
    score [S]."""
    score = torch.cat([r["score"] for r in recs], 1)                   # [K, S]
    q_all = torch.cat([r["quat"] for r in recs], 1)
    t_all = torch.cat([r["trans"] for r in recs], 1)
    best_k = score.argmax(0)
    ar = torch.arange(score.shape[1], device=score.device)
    return q_all[best_k, ar], t_all[best_k, ar], score[best_k, ar]
