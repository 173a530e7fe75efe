"""Fit metrics of placements: ChimeraX-style (simulated-map points) and atom-style.

docs/method.md section 6. Both families reduce to one weighted-point sampling kernel,
:func:`difffit.ops.point_stats`, which returns per-placement sums; :func:`correlations`
turns the sums into overlap, correlation and correlation about the mean.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from . import ops
from .maps import DensityMap
from .simulate import molmap_points, sample_simulated
from .structures import Structure

__all__ = ["Metrics", "correlations", "ragged"]


def ragged(arrays: Sequence[np.ndarray], device, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """Concatenated points [A, 3] and offsets [M + 1] of a ragged list of [n_i, 3] arrays."""
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])])
    pts = torch.from_numpy(np.concatenate(arrays, 0)).to(device=device, dtype=dtype).contiguous()
    return pts, torch.from_numpy(offsets.astype(np.int64)).to(device)


class Metrics:
    """Fit metrics of placements (centred-frame quat, trans) of the structures."""

    def __init__(self, structures: Sequence[Structure], centroids: np.ndarray, target: DensityMap,
                 level0: Tensor, pyr_origin, pyr_voxel, threshold: float, resolution: float,
                 device):
        self.device = device
        dt = torch.float64
        raw = torch.from_numpy(np.ascontiguousarray(target.data, dtype=np.float64)).to(device)
        self.raw = raw.unsqueeze(-1).contiguous()
        self.raw_frame = (target.origin.tolist(), target.voxel_size.tolist())
        self.level0 = level0.to(device=device, dtype=dt).unsqueeze(-1).contiguous()
        self.level0_frame = (list(pyr_origin), list(pyr_voxel))
        self.threshold = threshold
        # ChimeraX-style: simulated-map grid points above a low contour, centred.
        sim_pts, sim_val, atom_pts, atom_val = [], [], [], []
        for s, c in zip(structures, centroids):
            heavy = s.atomic_numbers > 1
            xyz, z = s.coords[heavy], s.atomic_numbers[heavy]
            p, v = molmap_points(xyz, z, resolution)
            sim_pts.append(p - c)
            sim_val.append(v)
            # Atom-style: the structure's own simulated density at each of its atoms.
            atom_pts.append(xyz - c)
            atom_val.append(sample_simulated(xyz, z, resolution))
        self.sim_pts, self.sim_off = ragged(sim_pts, device, dt)
        self.sim_val = torch.from_numpy(np.concatenate(sim_val)).to(device)
        self.atom_pts, self.atom_off = ragged(atom_pts, device, dt)
        self.atom_val = torch.from_numpy(np.concatenate(atom_val)).to(device)

    def __call__(self, quat: Tensor, trans: Tensor, mol_idx: Tensor) -> dict[str, Tensor]:
        q, t, m = quat.to(self.device, torch.float64), trans.to(self.device, torch.float64), mol_idx.to(self.device)
        out = {}
        st = ops.point_stats(self.raw, *self.raw_frame, self.sim_pts, self.sim_val, self.sim_off,
                             q, t, m, threshold=self.threshold, validate=False)
        n_sim = (self.sim_off[1:] - self.sim_off[:-1])[m].to(st.dtype)
        out["overlap"], out["correlation"], out["cam"] = correlations(st, n_sim)
        st = ops.point_stats(self.level0, *self.level0_frame, self.atom_pts, self.atom_val,
                             self.atom_off, q, t, m, threshold=0.0, validate=False)
        n = (self.atom_off[1:] - self.atom_off[:-1])[m].to(st.dtype)
        ov, out["atom_correlation"], out["atom_cam"] = correlations(st, n)
        out["atom_overlap"] = ov / n
        out["mean_density"] = st[:, 2] / n
        st = ops.point_stats(self.raw, *self.raw_frame, self.atom_pts, self.atom_val,
                             self.atom_off, q, t, m, threshold=self.threshold, validate=False)
        out["inside_fraction"] = st[:, 5] / n
        return out


def correlations(st: Tensor, n: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(overlap, correlation, correlation about the mean) from point_stats sums.

    Args:
        st: [P, 6] sums (w, w^2, d, d^2, w d, inside) over each placement's n points.
        n: [P] number of points.
    """
    sw, sww, sd, sdd, swd, _ = st.unbind(1)
    corr = swd / torch.sqrt(sww * sdd).clamp_min(1e-30)
    cov = n * swd - sw * sd
    var = (n * sww - sw * sw).clamp_min(0) * (n * sdd - sd * sd).clamp_min(0)
    cam = cov / torch.sqrt(var).clamp_min(1e-30)
    return swd, corr, cam
