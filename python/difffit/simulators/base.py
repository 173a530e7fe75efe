"""The simulator interface and its registry.

A simulator turns atoms (coordinates and atomic numbers) into density on a grid given by
origin, voxel size and shape; the rest (a structure's map, the envelope fitmap-style
metrics score with) is built on that one method, so that every consumer sees the same
numbers for the same simulator.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import DifffitInputError
from ..maps import DensityMap
from ..simulate import check_grid_size, molmap_envelope, molmap_grid
from ..structures import Structure, simulation_mask



class Simulator:
    """A simulated-map maker. Subclasses set ``name`` and implement :meth:`grid_values`."""

    name = "base"

    def grid_values(self, coords: np.ndarray, atomic_numbers: np.ndarray, resolution: float,
                    origin: Sequence[float], voxel_size: Sequence[float],
                    shape_zyx: Sequence[int]) -> np.ndarray:
        """[nz, ny, nx] float32 simulated density of atoms coords [N, 3] (world, Angstrom)
        with atomic numbers [N] on the grid (origin, voxel_size in x, y, z)."""
        raise NotImplementedError

    def spacing(self, resolution: float, voxel_size: float | None = None) -> float:
        """Grid spacing (Angstrom) of the simulator's own boxes: the target's voxel size
        when given (a learned simulator knows only voxels), else resolution / 3."""
        return float(voxel_size) if voxel_size else float(resolution) / 3.0

    def describe(self) -> dict:
        """What to record in outputs: at least ``{"simulator": name}``."""
        return {"simulator": self.name}

    def simulate(self, structure: Structure, resolution: float, like: DensityMap | None = None,
                 spacing: float | None = None) -> DensityMap:
        """Simulated map of a structure (every atom but waters), on ``like``'s grid or on a
        box around the atoms (padded by 3 x resolution, spacing ``spacing``)."""
        if not isinstance(structure, Structure):
            raise DifffitInputError(f"simulate: structure must be a difffit Structure (from "
                                    f"read_structure), got {type(structure).__name__}")
        sel = simulation_mask(structure)
        xyz, z = structure.coords[sel], structure.atomic_numbers[sel]
        if like is not None:
            if not isinstance(like, DensityMap):
                raise DifffitInputError(f"simulate: like must be a DensityMap (from read_map), "
                                        f"got {type(like).__name__}")
            data = self.grid_values(xyz, z, resolution, like.origin, like.voxel_size,
                                    like.data.shape)
            return like.copy_with(np.asarray(data, dtype=np.float32))
        if len(xyz) == 0:
            raise DifffitInputError(f"{structure.name}: no atoms to simulate")
        lo, step, shape = molmap_grid(xyz, resolution, spacing or self.spacing(resolution))
        check_grid_size(shape, f"simulated map of {structure.name}")
        data = self.grid_values(xyz, z, resolution, lo, (step,) * 3, shape)
        return DensityMap(data=np.asarray(data, dtype=np.float32), origin=lo.astype(np.float64),
                          voxel_size=np.full(3, step, dtype=np.float64), path=None)

    def envelope(self, coords: np.ndarray, atomic_numbers: np.ndarray, resolution: float,
                 frame: tuple[np.ndarray, np.ndarray] | None = None,
                 spacing: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(points [K, 3] world, values [K]) float64: the grid points of the simulated map
        inside the contour enclosing 95 % of its density (what fitmap-style metrics score),
        on a grid laid out in ``frame`` (origin [3], axes [3, 3] as columns) or the world
        axes, spacing ``spacing`` (default :meth:`spacing`)."""
        return molmap_envelope(coords, atomic_numbers, resolution, frame,
                               spacing or self.spacing(resolution), values=self.grid_values)
