"""Fit metrics of placements: ChimeraX ``fitmap``-style and atom-style (docs/method.md
section 6).

ChimeraX-style: the structure is simulated as ``molmap`` does (normalised Gaussians on a
grid of spacing resolution / 3) and the grid points inside the contour that encloses 95 %
of the simulated density are scored against the target, sampled at those points (0
outside the target's box): overlap = sum(s t), correlation = s.t / (|s| |t|), cam the
correlation about the means. Atom-style: the target at the atoms (mean density, fraction
at or above the contour) and the paper's atom correlations on the search pyramid's level 0.

Two ways to get the ChimeraX-style numbers:

* :func:`chimerax_metrics`, exact: the structure is simulated where the placement puts it,
  on a grid along the world axes, as ChimeraX does. It depends only on where the atoms
  end up, so on nothing of the frame the model came in. It costs a simulation per
  placement, so the fit uses it for the placements it refines and reports.
* :class:`Metrics`, for thousands of placements at once: each structure is simulated once,
  on a grid laid out in its principal frame (so again independent of the input frame), and
  the envelope's points are moved rigidly with each placement. It differs from the exact
  numbers by the grid's orientation, up to about 0.008 in correlation and cam (2 % in
  overlap) at the 18 reference poses.

Every number reduces to one weighted-point sampling kernel,
:func:`difffit.ops.point_stats`, whose per-placement sums :func:`correlations` turns into
overlap, correlation and correlation about the mean.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from . import ops
from .maps import DensityMap
from .simulate import molmap_envelope, molmap_envelopes, principal_frame, sample_simulated
from .structures import Structure, simulation_mask

__all__ = ["Metrics", "chimerax_metrics", "correlations", "ragged"]

_EXACT_CHUNK = 32   # placements simulated per compiled call by chimerax_metrics


def ragged(arrays: Sequence[np.ndarray], device, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """Concatenated points [A, 3] and offsets [M + 1] of a ragged list of [n_i, 3] arrays."""
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])])
    pts = torch.from_numpy(np.concatenate(arrays, 0)).to(device=device, dtype=dtype).contiguous()
    return pts, torch.from_numpy(offsets.astype(np.int64)).to(device)


def _at_or_above(threshold: float) -> float:
    """The level the kernels' ``d > level`` count needs to count ``d >= threshold``."""
    return float(np.nextafter(np.float64(threshold), -np.inf))


def _simulated_atoms(s: Structure) -> tuple[np.ndarray, np.ndarray]:
    sel = simulation_mask(s)
    return s.coords[sel], s.atomic_numbers[sel]


class Metrics:
    """Fit metrics of many placements (centred-frame quat, trans) of the structures."""

    def __init__(self, structures: Sequence[Structure], centroids: np.ndarray, target: DensityMap,
                 level0: Tensor, pyr_origin, pyr_voxel, threshold: float, resolution: float,
                 device, simulator=None, atom_metrics: bool = True):
        """``atom_metrics=False`` measures only the envelope's overlap, correlation and
        cam (no per-atom simulation: a third of the set-up cost)."""
        self.device = device
        self.atom_metrics = atom_metrics
        dt = torch.float64
        # One voxel of zeros around the target: a point beyond the box then samples 0, as
        # in ChimeraX (up to the last half voxel, which interpolates toward it).
        raw = np.pad(np.asarray(target.data, dtype=np.float64), 1)
        self.raw = torch.from_numpy(raw).to(device).unsqueeze(-1).contiguous()
        self.raw32 = self.raw.float()
        self.raw_frame = ((target.origin - target.voxel_size).tolist(), target.voxel_size.tolist())
        self.level0 = level0.to(device=device, dtype=dt).unsqueeze(-1).contiguous()
        self.level0_frame = (list(pyr_origin), list(pyr_voxel))
        self.level = _at_or_above(threshold)

        atoms = [_simulated_atoms(s) for s in structures]
        frames = [principal_frame(xyz, c) for (xyz, _), c in zip(atoms, centroids)]
        if simulator is None:  # molmap's: every structure in one compiled call
            pts, val, counts = molmap_envelopes(atoms, resolution, frames)
            cuts = np.cumsum(counts)[:-1]
            sim_pts = np.split(pts - np.repeat(np.asarray(centroids).reshape(-1, 3), counts, 0), cuts)
            sim_val = np.split(val, cuts)
        else:
            env = [_envelope(simulator, xyz, z, resolution, target, f)
                   for (xyz, z), f in zip(atoms, frames)]
            sim_pts = [p - c for (p, _), c in zip(env, centroids)]
            sim_val = [v for _, v in env]
        if atom_metrics:
            atom_pts = [xyz - c for (xyz, _), c in zip(atoms, centroids)]
            atom_val = [sample_simulated(xyz, z, resolution) for xyz, z in atoms]
        self.sim_pts, self.sim_off = ragged(sim_pts, device, torch.float32)
        self.sim_val = torch.from_numpy(np.concatenate(sim_val)).to(device, torch.float32)
        if atom_metrics:
            self.atom_pts, self.atom_off = ragged(atom_pts, device, dt)
            self.atom_val = torch.from_numpy(np.concatenate(atom_val)).to(device)

    def __call__(self, quat: Tensor, trans: Tensor, mol_idx: Tensor) -> dict[str, Tensor]:
        """Every metric of placements quat [P, 4], trans [P, 3] of structures mol_idx [P]."""
        q, t, m = quat.to(self.device, torch.float64), trans.to(self.device, torch.float64), mol_idx.to(self.device)
        out = {}
        # float32 samples (twice as quick; the kernel sums in double): these numbers rank
        # the search's starts, and the placements reported first get exact ones.
        st = ops.point_stats(self.raw32, *self.raw_frame, self.sim_pts, self.sim_val, self.sim_off,
                             q.float(), t.float(), m, validate=False).double()
        n_sim = (self.sim_off[1:] - self.sim_off[:-1])[m].to(st.dtype)
        out["overlap"], out["correlation"], out["cam"] = correlations(st, n_sim)
        if not self.atom_metrics:
            return out
        st = ops.point_stats(self.level0, *self.level0_frame, self.atom_pts, self.atom_val,
                             self.atom_off, q, t, m, threshold=0.0, validate=False)
        n = (self.atom_off[1:] - self.atom_off[:-1])[m].to(st.dtype)
        ov, out["atom_correlation"], out["atom_cam"] = correlations(st, n)
        out["atom_overlap"] = ov / n
        st = ops.point_stats(self.raw, *self.raw_frame, self.atom_pts, self.atom_val,
                             self.atom_off, q, t, m, threshold=self.level, validate=False)
        out["mean_density"] = st[:, 2] / n
        out["inside_fraction"] = st[:, 5] / n
        return out


def _envelope(simulator, xyz: np.ndarray, z: np.ndarray, resolution: float,
              target: DensityMap, frame=None) -> tuple[np.ndarray, np.ndarray]:
    """The simulated map's scoring points and values: molmap's (None: the exact ChimeraX
    numbers), or another simulator's on a grid at the target's voxel size (a learned
    simulator knows only voxels of the size it was trained on)."""
    if simulator is None:
        return molmap_envelope(xyz, z, resolution, frame=frame)
    spacing = simulator.spacing(resolution, float(np.mean(target.voxel_size)))
    return simulator.envelope(xyz, z, resolution, frame=frame, spacing=spacing)


def _inside(target: DensityMap, pts: np.ndarray) -> np.ndarray:
    """[N] bool: points within the target's grid (index 0 .. n - 1 on every axis)."""
    idx = (pts - target.origin) / target.voxel_size
    return np.all((idx >= 0) & (idx <= np.array(target.shape_xyz) - 1), axis=1)


def _sums_at(volume: Tensor, target: DensityMap, pts: list[np.ndarray], w: list[np.ndarray],
             level: float) -> np.ndarray:
    """[P, 6] point_stats sums of each point set, the target read as 0 outside its box."""
    st = np.zeros((len(pts), len(ops.STAT_NAMES)))
    keep = [_inside(target, p) for p in pts]
    live = [k for k in range(len(pts)) if keep[k].any()]
    if live:
        p_in, off = ragged([pts[k][keep[k]] for k in live], "cpu", torch.float64)
        w_in = torch.from_numpy(np.concatenate([w[k][keep[k]] for k in live]))
        P = len(live)
        quat = torch.zeros(P, 4, dtype=torch.float64)
        quat[:, 0] = 1.0
        st[live] = ops.point_stats(volume, target.origin.tolist(), target.voxel_size.tolist(),
                                   p_in, w_in, off, quat, torch.zeros(P, 3, dtype=torch.float64),
                                   torch.arange(P), threshold=level).numpy()
    for k in range(len(pts)):  # outside points: their weights count, their density is 0
        w_out = w[k][~keep[k]]
        st[k, 0] += w_out.sum()
        st[k, 1] += (w_out * w_out).sum()
        if level < 0:
            st[k, 5] += w_out.size
    return st


def chimerax_metrics(target: DensityMap, structures: Sequence[Structure],
                     rotations: np.ndarray, translations: np.ndarray, index: Sequence[int],
                     resolution: float, threshold: float, simulator=None
                     ) -> dict[str, np.ndarray]:
    """ChimeraX ``fitmap`` statistics of placements, each structure simulated where its
    placement puts it (``fitmap ... shift false rotate false``).

    Args:
        target: the map.
        structures: the structures (input coordinates).
        rotations: [P, 3, 3], translations: [P, 3]: placements x -> R x + t.
        index: [P] structure of each placement.
        resolution: Angstrom (the simulation's).
        threshold: the target's contour level (for the fraction of atoms inside).
        simulator: a :class:`difffit.simulators.Simulator`; None is molmap (ChimeraX's).

    Returns:
        [P] arrays: "correlation", "cam", "overlap", "envelope_points", "mean_density"
        (target at the atoms), "inside_fraction" (atoms at or above ``threshold``).
    """
    volume = torch.from_numpy(np.asarray(target.data, dtype=np.float64)).unsqueeze(-1).contiguous()
    sim = {i: _simulated_atoms(structures[i]) for i in set(int(i) for i in index)}
    P = len(index)
    st, sa = np.zeros((P, len(ops.STAT_NAMES))), np.zeros((P, len(ops.STAT_NAMES)))
    n_env, n_atoms = np.zeros(P), np.zeros(P)
    # In chunks of placements: every envelope of a chunk in one compiled call, and only one
    # chunk's envelopes in memory (a few MB each for a large complex).
    for a in range(0, P, _EXACT_CHUNK):
        part = range(a, min(a + _EXACT_CHUNK, P))
        atoms = [sim[int(index[k])][0] @ np.asarray(rotations[k], dtype=np.float64).T
                 + np.asarray(translations[k], dtype=np.float64) for k in part]
        zs = [sim[int(index[k])][1] for k in part]
        if simulator is None:  # molmap's
            pts, val, counts = molmap_envelopes(list(zip(atoms, zs)), resolution)
            cuts = np.cumsum(counts)[:-1]
            env_pts, env_w = np.split(pts, cuts), np.split(val, cuts)
        else:
            env = [_envelope(simulator, xyz, z, resolution, target) for xyz, z in zip(atoms, zs)]
            env_pts, env_w = [p for p, _ in env], [v for _, v in env]
        st[part.start:part.stop] = _sums_at(volume, target, env_pts, env_w, 0.0)
        sa[part.start:part.stop] = _sums_at(volume, target, atoms, [np.ones(len(x)) for x in atoms],
                                            _at_or_above(threshold))
        n_env[part.start:part.stop] = [len(p) for p in env_pts]
        n_atoms[part.start:part.stop] = [len(x) for x in atoms]
    overlap, corr, cam = correlations(torch.from_numpy(st), torch.from_numpy(n_env))
    return {"correlation": corr.numpy(), "cam": cam.numpy(), "overlap": overlap.numpy(),
            "envelope_points": n_env.astype(np.int64),
            "mean_density": sa[:, 2] / n_atoms, "inside_fraction": sa[:, 5] / n_atoms}


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
