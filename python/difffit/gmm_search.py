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

import numpy as np
import torch

from .cluster import cluster_poses
from .gmm import kmeans
from .maps import DensityMap
from .metrics import Metrics, ragged
from .params import FitParams
from .preprocess import build_pyramid, envelope_positions
from .rotations import quat_to_matrix, uniform_rotations
from .search import Batch, chunks, optimise
from .structures import Structure

__all__ = ["CoarseHit", "search_points", "coarse_search"]

_CLUSTERED = 64   # best starts of each structure clustered into distinct poses


@dataclass
class CoarseHit:
    """One structure's outcome of the coarse search."""

    quat: np.ndarray       # [K, 4] best distinct poses (centred frame), best first
    trans: np.ndarray      # [K, 3]
    metrics: dict          # name -> [K] float64 metrics of the real structure there
    n_points: int          # Gaussians (before weighting by replication)
    score: float           # the best pose's rank_by metric


def search_points(structure: Structure, atoms_per_point: float, min_points: int = 8,
                  seed: int = 0) -> tuple[np.ndarray, float]:
    """The coarse points of a structure, centred on its fitted atoms' centroid.

    A k-means of the fitted atoms into max(min_points, n / atoms_per_point) groups; each
    group's centre repeated round(n_j / mean n) times (at least once) so the unweighted
    mean the kernel takes weighs it by its atoms.

    Returns:
        (points [P, 3] centred, mean within-group variance per axis in A^2).
    """
    xyz = structure.fit_coords
    c0 = xyz.mean(0)
    n = int(min(len(xyz), max(min_points, math.ceil(len(xyz) / atoms_per_point))))
    centres, labels = kmeans(xyz, n, None, iters=15, seed=seed)
    count = np.bincount(labels, minlength=n).astype(np.float64)
    var = float(((xyz - centres[labels]) ** 2).sum() / (3 * len(xyz)))
    reps = np.maximum(np.rint(count / count.mean()), 1).astype(int)
    return np.repeat(centres, reps, axis=0) - c0, var


def coarse_search(dmap: DensityMap, structures: list[Structure], resolution: float,
                  threshold: float, params: FitParams, atoms_per_point: float = 20.0,
                  n_iters: int | None = None, keep: int = 4) -> list[CoarseHit]:
    """The DiffFit search with coarse points; the best ``keep`` distinct poses of each
    structure and its real metrics there.

    Args:
        dmap, resolution, threshold: the target (as :func:`difffit.fit`).
        structures: the candidates (their fitted atoms are grouped).
        params: the search's settings (rotations, positions, seed, pyramid, device);
            ``n_iters`` overrides its step count.
        atoms_per_point: fitted atoms per Gaussian (20: backbone atoms of about five
            residues, a Gaussian every ~6-8 A).
        keep: distinct poses kept per structure (clustered at the fit's tolerances).
    """
    device = params.torch_device()
    pts_c, var = [], []
    for s in structures:
        p, v = search_points(s, atoms_per_point, seed=params.seed)
        pts_c.append(p)
        var.append(v)
    vox = float(np.mean(dmap.voxel_size))
    m = int(round(float(np.mean(var)) / (params.smooth_sigma * vox) ** 2))
    L = params.n_levels
    pyr = build_pyramid(dmap.data, dmap.origin, dmap.voxel_size, threshold, n_levels=L + m,
                        sigma=params.smooth_sigma, negative=params.negative,
                        dust_min_size=params.dust_min_size)
    volume = pyr.levels[..., m:m + L].sum(-1, keepdim=True).to(device).contiguous()
    origin, voxel = pyr.origin.tolist(), pyr.voxel_size.tolist()
    pts, off = ragged(pts_c, device)
    M = len(structures)
    rots = uniform_rotations(params.n_rotations, seed=params.seed)
    pos = envelope_positions(pyr, params.n_positions, seed=params.seed)
    quat0 = rots.repeat(params.n_positions, 1).repeat(M, 1).to(device, torch.float32)
    trans0 = pos.repeat_interleave(params.n_rotations, 0).repeat(M, 1).to(device, torch.float32)
    per = params.n_rotations * params.n_positions
    mol_idx = torch.arange(M).repeat_interleave(per).to(device)
    box = np.array(pyr.shape[::-1]) * pyr.voxel_size
    lr_trans = params.lr_trans if params.lr_trans else 0.01 * float(box.mean())
    run = params if n_iters is None else FitParams(**{**params.__dict__, "n_iters": int(n_iters)})
    n_pts = (off[1:] - off[:-1]).cpu()[mol_idx.cpu()]
    recs = [optimise(volume, origin, voxel, Batch(pts, off), quat0[a:b], trans0[a:b],
                     mol_idx[a:b], run, lr_trans, None)
            for a, b in chunks(n_pts, params.max_points_per_batch)]
    score = torch.cat([r["score"] for r in recs], 1)                   # [K, S]
    q_all = torch.cat([r["quat"] for r in recs], 1)
    t_all = torch.cat([r["trans"] for r in recs], 1)
    best_k = score.argmax(0)
    ar = torch.arange(score.shape[1])
    q_best, t_best, s_best = q_all[best_k, ar], t_all[best_k, ar], score[best_k, ar]

    # The best distinct poses of each structure by the coarse score, then the real
    # structure's metrics there.
    R = quat_to_matrix(q_best.double().cpu())
    sel_q, sel_t, sel_m = [], [], []
    for i in range(M):
        # Only the best starts can be among the best distinct poses: cluster those
        # (clustering all of them costs more than the coarse search itself).
        idx = i * per + torch.argsort(-s_best[i * per:(i + 1) * per].cpu(), stable=True)[:_CLUSTERED]
        cl = cluster_poses(t_best[idx].double().cpu(), R[idx], s_best[idx].double().cpu(),
                           params.shift_tol, params.angle_tol)
        reps = idx[torch.as_tensor(cl.representative[:keep], dtype=torch.int64)]
        sel_q.append(q_best[reps])
        sel_t.append(t_best[reps])
        sel_m += [i] * len(reps)
    q_sel, t_sel = torch.cat(sel_q), torch.cat(sel_t)
    m_sel = torch.tensor(sel_m, dtype=torch.int64, device=device)
    centroids = np.stack([s.centroid for s in structures])
    metrics = Metrics(structures, centroids, dmap, pyr.levels[..., 0], origin, voxel,
                      threshold, resolution, device)
    mets = {k: v.double().cpu().numpy() for k, v in metrics(q_sel, t_sel, m_sel).items()}
    out = []
    m_np = m_sel.cpu().numpy()
    for i in range(M):
        rows = np.nonzero(m_np == i)[0]
        mi = {k: v[rows] for k, v in mets.items()}
        order = np.argsort(-np.nan_to_num(mi[params.rank_by], nan=-np.inf), kind="stable")
        rows = rows[order]
        mi = {k: v[rows] for k, v in mets.items()}
        out.append(CoarseHit(q_sel[rows].cpu().numpy(), t_sel[rows].cpu().numpy(), mi,
                             len(np.unique(pts_c[i], axis=0)),
                             float(mi[params.rank_by][0]) if len(rows) else float("nan")))
    return out
