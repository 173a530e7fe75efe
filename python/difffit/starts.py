"""Where the gradient search starts: scanned starts spread over the map, then focused
restarts around the best poses they reach (docs/method.md section 5).

Why not random starts alone: a small subunit at high resolution has a narrow basin of
attraction (about 15 degrees and 5 A for a haemoglobin chain at 3.2 A), so of 1000
random (position, rotation) starts only a few begin inside it, and whether a copy is found
at all depends on the seed. Two steps fix both:

1. **Scan** (:func:`scanned_starts`): ``n_positions`` positions spread evenly over the
   contoured density (:func:`spread_positions`, so no region is left without a start), and at
   each position ``scan_rotations`` uniform rotations scored *without* optimisation on the
   search volume smoothed by ``scan_smooth`` voxels (:func:`scan_volume`), with the trace
   atoms only (CA / P: a quarter of the backbone). The best ``n_rotations`` of them start
   there. Scoring costs about a sixth of the descent.
2. **Focus** (:func:`focused_starts`): after the descent, the ``focus_top`` best distinct
   poses of each structure (3 A / 6 degrees apart, by search score) each get
   ``focus_starts`` restarts, perturbed by up to ``focus_angle`` degrees and
   ``focus_shift`` A, and descend again for ``focus_iters`` steps (default half the search's;
   their later records repeat the last pose). A pose in a wide basin gathers most of its
   restarts back (its hits), one on a narrow spike gathers few: hits measure how robustly
   a pose is reached, not just whether one random start happened to fall near it.

All starts of one structure are contiguous in the returned order (scanned, then focused).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree
from torch import Tensor

from . import ops
from .params import FitParams
from .preprocess import Pyramid, envelope_positions
from .rotations import quat_to_matrix, uniform_rotations

__all__ = ["starts_per_structure", "first_round", "focus_per_pose", "focus_iters",
           "spread_positions", "scan_volume", "scanned_starts", "distinct_best", "perturb",
           "focused_starts"]

# Positions are spread over at most this many mask voxels (a seeded sample; they only
# need to cover the density evenly), with a few k-means steps.
_KMEANS_SAMPLE = 2000
_LLOYD_STEPS = 4
# Scanned placements per op call (bounds the [P, 4] and [P, 3] start tensors).
_SCAN_CHUNK = 200_000


def focus_per_pose(params: FitParams) -> int:
    """Restarts per focused pose: ``focus_starts``, or by default half the scanned starts
    shared out over the ``focus_top`` poses (at least 1)."""
    if params.focus_starts is not None:
        return params.focus_starts
    scanned = params.n_positions * params.n_rotations
    return max(1, round(scanned / 2 / max(1, params.focus_top)))


def focus_iters(params: FitParams) -> int:
    """Steps of the focused restarts: ``focus_iters``, or half the search's steps (they start
    within 20 degrees / a few Angstroms of a converged pose: on haemoglobin chain A at
    3.2 A, those that return reach their best within 30-70 steps, median 50)."""
    if params.focus_iters is not None:
        return min(params.focus_iters, params.n_iters)
    return max(1, params.n_iters // 2)


def starts_per_structure(params: FitParams) -> int:
    """Number of descents per structure: scanned starts plus focused restarts."""
    if getattr(params, "local", False):
        return 1
    return params.n_positions * params.n_rotations + params.focus_top * focus_per_pose(params)


def first_round(mol_idx: Tensor, params: FitParams) -> Tensor:
    """[S] bool: the scanned (first-round) starts among a fit's starts, each structure's
    starts being contiguous (scanned, then focused)."""
    if getattr(params, "local", False):
        return torch.ones_like(mol_idx, dtype=torch.bool)
    per = starts_per_structure(params)
    within = torch.arange(mol_idx.numel(), device=mol_idx.device) % per
    return within < params.n_positions * params.n_rotations


def spread_positions(pyr: Pyramid, n: int, seed: int) -> Tensor:
    """``[n, 3]`` world positions spread evenly over the contour mask.

    Farthest-point sampling of (a seeded sample of) the mask voxels, then a few k-means
    (Lloyd) steps so the positions sit at the centres of their regions rather than on the
    rim, each finally moved to its nearest mask voxel so that it lies in density. Falls
    back to :func:`envelope_positions` when the mask has no more voxels than ``n``.
    """
    flat = np.flatnonzero(pyr.mask)
    if flat.size <= n or n < 2:
        return envelope_positions(pyr, n, seed)
    rng = np.random.default_rng(seed)
    take = rng.choice(flat.size, min(flat.size, _KMEANS_SAMPLE), replace=False)
    zyx = np.stack(np.unravel_index(flat[np.sort(take)], pyr.mask.shape), -1)
    xyz = zyx[:, ::-1].astype(np.float64) * pyr.voxel_size + pyr.origin          # [V, 3]
    picked = [int(rng.integers(len(xyz)))]
    d2 = ((xyz - xyz[picked[0]]) ** 2).sum(1)
    for _ in range(n - 1):
        picked.append(int(d2.argmax()))
        d2 = np.minimum(d2, ((xyz - xyz[picked[-1]]) ** 2).sum(1))
    centres = xyz[picked]
    for _ in range(_LLOYD_STEPS):
        near = cKDTree(centres).query(xyz)[1]                                    # [V]
        counts = np.bincount(near, minlength=n)
        sums = np.stack([np.bincount(near, xyz[:, k], minlength=n) for k in range(3)], 1)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    nearest = cKDTree(xyz).query(centres)[1]                                     # [n]
    return torch.from_numpy(np.ascontiguousarray(xyz[nearest]))


def scan_volume(pyr: Pyramid, smooth: float, device) -> Tensor:
    """[D, H, W, 1] the volume the scan scores: the summed search levels, smoothed by a
    Gaussian of ``smooth`` voxels. An unoptimised pose a few degrees and Angstroms off
    scores closer to the right one on a smoother map, so more right (position, rotation)
    pairs survive the scan: on haemoglobin chains at 3.2 A, 2 voxels raised the first
    round's starts reaching each copy from 4.0 to 5.9 on average (none missed)."""
    vol = pyr.levels.sum(-1)
    if smooth > 0:
        vol = torch.from_numpy(ndimage.gaussian_filter(vol.numpy(), smooth, mode="nearest"))
    return vol.unsqueeze(-1).to(device).contiguous()


def scanned_starts(volume: Tensor, origin, voxel, scan_points: Tensor, scan_offsets: Tensor,
                   positions: Tensor, params: FitParams) -> tuple[Tensor, Tensor, Tensor]:
    """The best ``params.n_rotations`` of ``params.scan_rotations`` rotations at each
    position, for each structure, scored on ``volume`` with ``scan_points``.

    Args:
        volume: [D, H, W, 1] search volume; origin, voxel: its frame.
        scan_points: [A, 3] centred scan atoms of the M structures; scan_offsets: [M + 1].
        positions: [N, 3] start positions (world xyz).

    Returns:
        quat0 [M*N*R, 4], trans0 [M*N*R, 3] (float32, volume's device) and mol_idx
        [M*N*R]; structure-major, then position, then rotation.
    """
    device = volume.device
    M, N, R = scan_offsets.numel() - 1, positions.shape[0], params.n_rotations
    if params.scan_rotations <= R:  # nothing to choose from: the uniform set as it is
        rots = uniform_rotations(R, seed=params.seed)
        quat0 = rots.repeat(M * N, 1)
        trans0 = positions.repeat_interleave(R, 0).repeat(M, 1)
    else:
        Q = params.scan_rotations
        rots = uniform_rotations(Q, seed=params.seed).to(device, torch.float32)   # [Q, 4]
        pos = positions.to(device, torch.float32)
        ones = torch.ones(1, dtype=volume.dtype, device=device)
        quats, trans = [], []
        step = max(1, _SCAN_CHUNK // Q)  # positions per call
        for m in range(M):
            for a in range(0, N, step):
                p = pos[a:a + step]
                n = p.shape[0]
                q = rots.repeat(n, 1)
                t = p.repeat_interleave(Q, 0)
                idx = torch.full((n * Q,), m, dtype=torch.int64, device=device)
                s = ops.score(volume, ones, origin, voxel, scan_points, scan_offsets, q, t,
                              idx, validate=False).view(n, Q)
                best = s.topk(R, dim=1).indices                                  # [n, R]
                quats.append(rots[best.flatten()])
                trans.append(p.repeat_interleave(R, 0))
        quat0, trans0 = torch.cat(quats), torch.cat(trans)
    mol_idx = torch.arange(M, device=device).repeat_interleave(N * R)
    return (quat0.to(device, torch.float32), trans0.to(device, torch.float32), mol_idx)


def distinct_best(t: Tensor, R: Tensor, score: Tensor, k: int, shift: float, angle: float
                  ) -> list[int]:
    """Indices of up to ``k`` best-scoring poses, each at least ``shift`` A or ``angle``
    degrees from every better one kept (the clustering rule, greedily).

    Args:
        t: [S, 3] translations; R: [S, 3, 3] rotations; score: [S].
    """
    order = torch.argsort(score, descending=True).tolist()
    cos_tol = math.cos(math.radians(angle))
    kept: list[int] = []
    for i in order:
        if not math.isfinite(float(score[i])):
            continue
        if kept:
            j = torch.tensor(kept)
            near = (t[j] - t[i]).norm(dim=1) <= shift
            cos = ((R[j] * R[i]).sum((1, 2)) - 1) / 2
            if bool((near & (cos >= cos_tol)).any()):
                continue
        kept.append(i)
        if len(kept) == k:
            break
    return kept


def perturb(quat: Tensor, trans: Tensor, angle: float, shift: float, gen: torch.Generator
            ) -> tuple[Tensor, Tensor]:
    """Random nearby poses: each rotation turned about a random axis by an angle drawn
    uniformly over the ball of radius ``angle`` degrees, each translation moved by a
    Gaussian of sd ``shift`` A per axis.

    Args:
        quat: [n, 4] unit quaternions (w, x, y, z); trans: [n, 3]. float64 on the CPU.
    """
    n = quat.shape[0]
    axis = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    axis = axis / axis.norm(dim=1, keepdim=True).clamp_min(1e-12)
    half = 0.5 * math.radians(angle) * torch.rand(n, generator=gen, dtype=torch.float64) ** (1 / 3)
    w1, v1 = torch.cos(half), torch.sin(half)[:, None] * axis                   # rotation d
    w2, v2 = quat[:, 0], quat[:, 1:]
    # d * q (Hamilton product): the perturbation is applied after the pose's rotation.
    w = w1 * w2 - (v1 * v2).sum(1)
    v = w1[:, None] * v2 + w2[:, None] * v1 + torch.cross(v1, v2, dim=1)
    q = torch.cat([w[:, None], v], 1)
    t = trans + shift * torch.randn(n, 3, generator=gen, dtype=torch.float64)
    return q, t


def focused_starts(q_best: Tensor, t_best: Tensor, score: Tensor, mol_idx: Tensor, M: int,
                   params: FitParams) -> tuple[Tensor, Tensor, Tensor]:
    """Restarts around each structure's ``focus_top`` best distinct poses.

    Args:
        q_best: [S, 4], t_best: [S, 3], score: [S]: each scanned start's best pose and its
            search score; mol_idx: [S] structure of each start; M: number of structures.

    Returns:
        quat0 [M*K*F, 4], trans0 [M*K*F, 3] (float32, on q_best's device) and mol_idx,
        structure-major. A structure with fewer than K distinct poses fills its quota by
        cycling through the ones it has, so every structure gets K*F restarts.
    """
    device = q_best.device
    K, F = params.focus_top, focus_per_pose(params)
    q64, t64 = q_best.double().cpu(), t_best.double().cpu()
    q64 = q64 / q64.norm(dim=1, keepdim=True)
    R = quat_to_matrix(q64)
    s, mol = score.double().cpu(), mol_idx.cpu()
    quats, trans = [], []
    for m in range(M):
        # The same perturbations for every structure (a generator per structure, seeded
        # by the fit's seed alone), so a structure's restarts do not depend on its batch
        # mates: identify's batches, checkpoints and Dask workers rank alike.
        gen = torch.Generator().manual_seed(int(params.seed) + 7919)
        sel = torch.nonzero(mol == m).flatten()
        kept = distinct_best(t64[sel], R[sel], s[sel], K, params.shift_tol, params.angle_tol)
        if not kept:  # no finite score at all: restart from the scanned starts' poses
            kept = [0]
        centre = sel[torch.tensor(kept)]
        idx = centre[torch.arange(K * F) // F % len(kept)]    # each pose F times, cycled
        q, t = perturb(q64[idx], t64[idx], params.focus_angle, params.focus_shift, gen)
        quats.append(q)
        trans.append(t)
    quat0 = torch.cat(quats).to(device, torch.float32)
    trans0 = torch.cat(trans).to(device, torch.float32)
    return quat0, trans0, torch.arange(M, device=device).repeat_interleave(K * F)
