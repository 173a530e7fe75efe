"""The default simulator: ChimeraX ``molmap`` (one normalised Gaussian per atom), exactly
:func:`difffit.simulate.splat_atoms` and :func:`difffit.simulate.molmap_envelope`."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..simulate import molmap_envelope, splat_atoms
from .base import Simulator


class MolmapSimulator(Simulator):
    """Molmap's Gaussians, sigma = resolution / (pi sqrt 2); grid spacing resolution / 3."""

    name = "molmap"

    def __init__(self, device: str = "cpu"):
        self.device = device

    def grid_values(self, coords: np.ndarray, atomic_numbers: np.ndarray, resolution: float,
                    origin: Sequence[float], voxel_size: Sequence[float],
                    shape_zyx: Sequence[int]) -> np.ndarray:
        return splat_atoms(coords, atomic_numbers, resolution, origin, voxel_size, shape_zyx,
                           self.device)

    def spacing(self, resolution: float, voxel_size: float | None = None) -> float:
        return float(resolution) / 3.0   # molmap's own, whatever the target's voxels

    def envelope(self, coords, atomic_numbers, resolution, frame=None, spacing=None):
        return molmap_envelope(coords, atomic_numbers, resolution, frame=frame, spacing=spacing)
