"""Pure-PyTorch references of the compiled ops, for tests and benchmarks.

Each function has the signature of its fast counterpart in :mod:`difffit.ops` and computes
the same quantity the obvious way: it materialises every (placement, atom) pair, samples
with ``torch.nn.functional.grid_sample`` and lets autograd differentiate. It is slow and
memory-hungry by design; its job is to be easy to check by eye.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .rotations import quat_to_matrix


def _expand_ragged(points: Tensor, offsets: Tensor, quat: Tensor, trans: Tensor,
                   mol_idx: Tensor):
    """Every (placement, atom) pair, moved.

    Returns:
        (moved [T, 3] world points, place [T] placement of each, local [T] atom index into points).
    """
    counts = (offsets[1:] - offsets[:-1])[mol_idx]  # [P] atoms per placement
    P = quat.shape[0]
    place = torch.repeat_interleave(torch.arange(P, device=quat.device), counts)  # [T]
    first = torch.cumsum(counts, 0) - counts  # [P] first pair of each placement
    within = torch.arange(place.numel(), device=quat.device) - first[place]
    atom = offsets[mol_idx][place] + within  # [T]
    R = quat_to_matrix(quat)  # [P, 3, 3], normalises q
    moved = torch.einsum("tij,tj->ti", R[place], points[atom]) + trans[place]
    return moved, place, atom


def _sample(volume: Tensor, origin: Sequence[float], voxel_size: Sequence[float],
            xyz: Tensor) -> Tensor:
    """Trilinear samples of every channel, border-clamped. volume [D,H,W,C], xyz [T,3] -> [T,C]."""
    D, H, W, C = volume.shape
    o = xyz.new_tensor(list(origin))
    v = xyz.new_tensor(list(voxel_size))
    size = xyz.new_tensor([W, H, D])
    # align_corners=True: index 0 -> -1 and index n-1 -> +1.
    norm = 2 * (xyz - o) / v / (size - 1).clamp(min=1) - 1
    grid = norm.view(1, -1, 1, 1, 3)
    vol = volume.permute(3, 0, 1, 2).unsqueeze(0)  # [1, C, D, H, W]
    out = F.grid_sample(vol, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0, :, :, 0, 0].transpose(0, 1)  # [T, C]


def score_reference(volume: Tensor, weights: Tensor, origin: Sequence[float],
                    voxel_size: Sequence[float], points: Tensor, offsets: Tensor, quat: Tensor,
                    trans: Tensor, mol_idx: Tensor) -> Tensor:
    """Reference of :func:`difffit.ops.score`: score [P], differentiable by autograd."""
    moved, place, _ = _expand_ragged(points, offsets, quat, trans, mol_idx)
    values = _sample(volume, origin, voxel_size, moved) @ weights  # [T]
    counts = (offsets[1:] - offsets[:-1])[mol_idx].to(values.dtype)
    total = torch.zeros(quat.shape[0], dtype=values.dtype, device=values.device)
    return total.index_add(0, place, values) / counts


def score_with_grad_reference(volume: Tensor, weights: Tensor, origin: Sequence[float],
                              voxel_size: Sequence[float], points: Tensor, offsets: Tensor,
                              quat: Tensor, trans: Tensor, mol_idx: Tensor):
    """(score [P], d score / d quat [P, 4], d score / d trans [P, 3]) by autograd through
    :func:`score_reference` (the reference of ``ops.score_with_grad``)."""
    with torch.enable_grad():
        q = quat.detach().clone().requires_grad_(True)
        t = trans.detach().clone().requires_grad_(True)
        s = score_reference(volume, weights, origin, voxel_size, points, offsets, q, t, mol_idx)
        gq, gt = torch.autograd.grad(s.sum(), (q, t))
    return s.detach(), gq, gt


def point_stats_reference(volume: Tensor, origin: Sequence[float], voxel_size: Sequence[float],
                          points: Tensor, point_weights: Tensor, offsets: Tensor, quat: Tensor,
                          trans: Tensor, mol_idx: Tensor, channel: int = 0,
                          threshold: float = 0.0) -> Tensor:
    """Reference of :func:`difffit.ops.point_stats`: [P, 6] sums."""
    moved, place, atom = _expand_ragged(points, offsets, quat, trans, mol_idx)
    d = _sample(volume[..., channel:channel + 1], origin, voxel_size, moved)[:, 0]
    w = point_weights[atom]
    cols = torch.stack([w, w * w, d, d * d, w * d, (d > threshold).to(d.dtype)], dim=1)
    out = torch.zeros(quat.shape[0], 6, dtype=d.dtype, device=d.device)
    return out.index_add(0, place, cols)


def splat_reference(points: Tensor, amplitudes: Tensor, sigma: float, cutoff: float,
                    shape: Sequence[int], origin: Sequence[float],
                    voxel_size: Sequence[float]) -> Tensor:
    """Reference of :func:`difffit.ops.splat`: every atom against every voxel."""
    nz, ny, nx = shape
    axes = [torch.arange(n, dtype=points.dtype, device=points.device) * float(v) + float(o)
            for n, o, v in zip((nx, ny, nz), origin, voxel_size)]
    z, y, x = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    centres = torch.stack([x, y, z], dim=-1).reshape(-1, 3)  # [V, 3]
    grid = torch.zeros(centres.shape[0], dtype=points.dtype, device=points.device)
    radius2 = (cutoff * sigma) ** 2
    for chunk in range(0, points.shape[0], 256):  # bounded memory: [256, V] at a time
        p = points[chunk:chunk + 256]
        r2 = ((centres[None, :, :] - p[:, None, :]) ** 2).sum(-1)
        g = amplitudes[chunk:chunk + 256, None] * torch.exp(-r2 / (2 * sigma * sigma))
        grid += torch.where(r2 <= radius2, g, torch.zeros_like(g)).sum(0)
    return grid.reshape(nz, ny, nx)
