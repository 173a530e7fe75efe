"""Electron form factors (gemmi's DensityCalculatorE, Peng's 5-Gaussian electron
scattering factors) blurred to the resolution with molmap's Gaussian: a physics-style
simulator for comparison."""
from __future__ import annotations

import math
from typing import Sequence

import gemmi
import numpy as np

from ..simulate import sigma_for
from .base import Simulator


class GemmiSimulator(Simulator):
    """Each atom's electron form factor (B = 0) convolved with the Gaussian of sigma =
    0.225 x resolution (gemmi's ``blur`` = 8 pi^2 sigma^2), summed on the grid."""

    name = "gemmi"

    def grid_values(self, coords: np.ndarray, atomic_numbers: np.ndarray, resolution: float,
                    origin: Sequence[float], voxel_size: Sequence[float],
                    shape_zyx: Sequence[int]) -> np.ndarray:
        sigma = sigma_for(resolution)
        voxel = np.asarray(voxel_size, dtype=np.float64)
        shape_xyz = np.asarray(shape_zyx[::-1], dtype=np.int64)
        # gemmi's grids are periodic: pad the box by more than an atom's reach so that no
        # density wraps around, then cut the box back out.
        reach = 5.0 * math.sqrt(sigma ** 2 + 0.5) + 1.0
        pad = np.ceil(reach / voxel).astype(np.int64)
        full = shape_xyz + 2 * pad
        dc = gemmi.DensityCalculatorE()
        dc.d_min = float(resolution)
        dc.blur = 8.0 * math.pi ** 2 * sigma ** 2
        cell = full * voxel
        dc.grid.set_unit_cell(gemmi.UnitCell(*cell.tolist(), 90.0, 90.0, 90.0))
        dc.grid.spacegroup = gemmi.find_spacegroup_by_name("P1")
        dc.grid.set_size(*full.tolist())
        local = np.asarray(coords, dtype=np.float64) - np.asarray(origin, dtype=np.float64) \
            + pad * voxel
        # Atoms beyond the padded box are more than ``reach`` from the box: they add nothing
        # there, and would wrap around if kept.
        inside = np.all((local >= 0) & (local < cell), axis=1)
        atom = gemmi.Atom()
        atom.occ = 1.0
        atom.b_iso = 0.0
        elements = {}
        for p, zn in zip(local[inside], np.asarray(atomic_numbers)[inside]):
            zn = int(zn)
            if zn not in elements:
                elements[zn] = gemmi.Element(zn if 0 < zn < 119 else 6)
            atom.element = elements[zn]
            atom.pos = gemmi.Position(*p.tolist())
            dc.add_atom_density_to_grid(atom)
        arr = np.array(dc.grid, copy=True)                      # [nx, ny, nz] (u, v, w)
        px, py, pz = pad.tolist()
        nx, ny, nz = shape_xyz.tolist()
        return np.ascontiguousarray(arr[px:px + nx, py:py + ny, pz:pz + nz].transpose(2, 1, 0),
                                    dtype=np.float32)
