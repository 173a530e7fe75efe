"""Simulated maps (ChimeraX ``molmap`` semantics) on the splatting kernel.

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
from .io import DensityMap, Structure

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
    step = float(spacing) if spacing else float(resolution) / 3.0
    margin = 3.0 * sigma_for(resolution)
    lo = coords.min(0) - margin
    n_xyz = np.ceil((coords.max(0) + margin - lo) / step).astype(int) + 1
    shape = (int(n_xyz[2]), int(n_xyz[1]), int(n_xyz[0]))
    grid = splat_atoms(coords, atomic_numbers, resolution, lo, (step, step, step), shape)
    keep = grid > contour_fraction * grid.max()
    z, y, x = np.nonzero(keep)
    pts = lo + np.stack([x, y, z], axis=1) * step
    return pts.astype(np.float64), grid[keep].astype(np.float64)
