"""Simulated maps (ChimeraX ``molmap`` semantics) on the splatting kernel, and the map
processing built on them: the density placed structures explain, and zeroing it out.

A simulated map is a sum of one Gaussian per atom: amplitude = atomic number,
sigma = 0.225 x resolution (molmap's sigmaFactor 1 / (pi sqrt 2)), truncated at 5 sigma.
Molmap's default grid spacing is resolution / 3. The Gaussians are not normalised: a
constant factor changes no correlation and no contour expressed relative to the maximum.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from . import ops
from .errors import DifffitInputError
from .maps import DensityMap
from .params import AcceptRules
from .structures import Structure

SIGMA_FACTOR = 0.225
CUTOFF_SIGMAS = 5.0


def sigma_for(resolution: float) -> float:
    """Gaussian sigma (Angstrom) for a map resolution (Angstrom), as ChimeraX molmap."""
    if not resolution > 0:
        raise DifffitInputError(f"resolution must be positive (Angstrom), got {resolution}")
    return SIGMA_FACTOR * float(resolution)


def splat_atoms(coords: np.ndarray, atomic_numbers: np.ndarray, resolution: float,
                origin: Sequence[float], voxel_size: Sequence[float], shape_zyx: Sequence[int],
                device: str = "cpu") -> np.ndarray:
    """Simulated density of atoms on a given grid.

    Args:
        coords: [N, 3] world coordinates (Angstrom).
        atomic_numbers: [N] amplitudes.
        resolution: map resolution (Angstrom).
        origin, voxel_size: grid frame (x, y, z); shape_zyx: (nz, ny, nx).

    Returns:
        [nz, ny, nx] float32 array.
    """
    pts = torch.as_tensor(np.ascontiguousarray(coords, dtype=np.float64), device=device)
    amp = torch.as_tensor(np.asarray(atomic_numbers, dtype=np.float64), device=device)
    grid = ops.splat(pts, amp, sigma_for(resolution), CUTOFF_SIGMAS, list(shape_zyx),
                     list(map(float, origin)), list(map(float, voxel_size)))
    return grid.float().cpu().numpy()


def molmap(structure: Structure, resolution: float, like: DensityMap | None = None,
           spacing: float | None = None, device: str = "cpu") -> DensityMap:
    """Simulated map of a structure (all its kept atoms).

    Args:
        structure: the atoms to simulate.
        resolution: Angstrom.
        like: put the simulated map on this map's grid (same origin, voxel size, shape);
            otherwise a box around the atoms with a 5 sigma margin and spacing
            ``spacing`` (default resolution / 3, as molmap).

    Returns:
        DensityMap of the simulated density.
    """
    if like is not None:
        data = splat_atoms(structure.coords, structure.atomic_numbers, resolution, like.origin,
                           like.voxel_size, like.data.shape, device)
        return like.copy_with(data)
    step = float(spacing) if spacing else float(resolution) / 3.0
    margin = CUTOFF_SIGMAS * sigma_for(resolution)
    lo = structure.coords.min(0) - margin
    hi = structure.coords.max(0) + margin
    n_xyz = np.ceil((hi - lo) / step).astype(int) + 1
    shape = (int(n_xyz[2]), int(n_xyz[1]), int(n_xyz[0]))
    data = splat_atoms(structure.coords, structure.atomic_numbers, resolution, lo,
                       (step, step, step), shape, device)
    return DensityMap(data=data, origin=lo.astype(np.float64),
                      voxel_size=np.full(3, step, dtype=np.float64), path=None)


def _simulated_box(coords: np.ndarray, atomic_numbers: np.ndarray, resolution: float,
                   spacing: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Simulated density on a box around the atoms with a 3 sigma margin.

    Returns:
        (grid [nz, ny, nx] float32, world position of voxel (0, 0, 0) [3], spacing).
    """
    step = float(spacing) if spacing else float(resolution) / 3.0
    margin = 3.0 * sigma_for(resolution)
    lo = coords.min(0) - margin
    n_xyz = np.ceil((coords.max(0) + margin - lo) / step).astype(int) + 1
    shape = (int(n_xyz[2]), int(n_xyz[1]), int(n_xyz[0]))
    grid = splat_atoms(coords, atomic_numbers, resolution, lo, (step, step, step), shape)
    return grid, lo, step


def molmap_points(coords: np.ndarray, atomic_numbers: np.ndarray, resolution: float,
                  contour_fraction: float = 0.1, spacing: float | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Grid points of a simulated map above a contour, with their simulated values.

    These weighted points carry the ChimeraX-style fit metrics (overlap, correlation, cam
    between the simulated map and the target sampled at the moved points), as ``fitmap``
    computes them for a map fitted into a map.

    Args:
        coords, atomic_numbers: the atoms ([N, 3], [N]).
        contour_fraction: keep points above this fraction of the simulated maximum.

    Returns:
        (points [K, 3] world coordinates, values [K]) as float64 arrays.
    """
    grid, lo, step = _simulated_box(coords, atomic_numbers, resolution, spacing)
    keep = grid > contour_fraction * grid.max()
    z, y, x = np.nonzero(keep)
    pts = lo + np.stack([x, y, z], axis=1) * step
    return pts.astype(np.float64), grid[keep].astype(np.float64)


def sample_simulated(coords: np.ndarray, atomic_numbers: np.ndarray, resolution: float
                     ) -> np.ndarray:
    """[N] the structure's own simulated density at each of its atoms (W_i of the atom
    metrics), trilinear on the simulated grid with the kernels' sampling.

    Args:
        coords: [N, 3]; atomic_numbers: [N].
    """
    grid, lo, step = _simulated_box(coords, atomic_numbers, resolution)
    n = coords.shape[0]
    # Each atom is a one-point "molecule" at the identity pose, so the kernel's per-
    # placement sum of sampled densities is the sample at that atom.
    volume = torch.from_numpy(grid.astype(np.float64)).unsqueeze(-1).contiguous()
    pts = torch.from_numpy(np.ascontiguousarray(coords, dtype=np.float64))
    quat = torch.zeros(n, 4, dtype=torch.float64)
    quat[:, 0] = 1.0
    st = ops.point_stats(volume, lo.tolist(), [step] * 3, pts, torch.ones(n, dtype=torch.float64),
                         torch.arange(n + 1), quat, torch.zeros(n, 3, dtype=torch.float64),
                         torch.arange(n))
    return st[:, 2].numpy()


def explained_mask(dmap: DensityMap, placed: Sequence[Structure], resolution: float,
                   fraction: float = AcceptRules.zero_fraction, device: str = "cpu") -> np.ndarray:
    """Voxels of a map explained by placed structures.

    Each structure's map is simulated on ``dmap``'s grid at ``resolution`` (ChimeraX
    molmap: one Gaussian per atom, all kept atoms, sigma = 0.225 x resolution); a voxel
    is explained when some structure's simulated density there exceeds ``fraction`` of
    that structure's simulated maximum. Per-structure maxima keep a small subunit's
    envelope as wide as a large one's.

    Args:
        dmap: the map whose grid is used.
        placed: structures already in their placed (world) coordinates.
        resolution: Angstrom.
        fraction: level relative to each simulated maximum, in (0, 1)
            (composite's ``AcceptRules.zero_fraction``).

    Returns:
        [nz, ny, nx] bool.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise DifffitInputError(f"zero fraction must be between 0 and 1 (exclusive), got {fraction}")
    mask = np.zeros(dmap.data.shape, dtype=bool)
    for s in placed:
        sim = molmap(s, resolution, like=dmap, device=device).data
        peak = float(sim.max())
        if peak > 0:  # a structure entirely outside the box explains nothing
            mask |= sim > fraction * peak
    return mask


def zero_out(dmap: DensityMap, placed: Sequence[Structure], resolution: float,
             fraction: float = AcceptRules.zero_fraction, device: str = "cpu") -> DensityMap:
    """The map with the density explained by placed structures set to zero.

    Zeroing (not subtracting a scaled simulation) is docs/method.md section 9: it needs no
    amplitude match between simulated and experimental density, and a zeroed voxel is
    below any positive contour, so a later fit treats it as solvent.

    Args:
        dmap: the map.
        placed: structures in their placed coordinates.
        resolution: Angstrom.
        fraction: see :func:`explained_mask`.

    Returns:
        A new DensityMap on the same grid ([nz, ny, nx]).
    """
    mask = explained_mask(dmap, placed, resolution, fraction, device)
    data = dmap.data.copy()
    data[mask] = 0.0
    return dmap.copy_with(data)
