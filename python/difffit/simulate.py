"""Simulated maps with ChimeraX ``molmap`` semantics, on the splatting kernel, and the map
processing built on them: the density placed structures explain, and zeroing it out.

A simulated map is a sum of one normalised Gaussian per atom: amplitude = atomic number /
((2 pi)^(3/2) sigma^3), sigma = resolution / (pi sqrt 2) (molmap's sigmaFactor, about
0.225 x resolution), truncated at 5 sigma. Molmap lays a grid of spacing resolution / 3
over the atoms' bounding box padded by 3 x resolution, aligned with the world axes, and
shows it at the contour that encloses 95 % of the total density: :func:`molmap_envelope`
gives those points, which ChimeraX ``fitmap`` uses to score a model against a map
(docs/method.md section 6).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from . import ops
from .errors import DifffitInputError
from .maps import DensityMap
from .params import AcceptRules
from .structures import Structure, simulation_mask

SIGMA_FACTOR = 1.0 / (math.pi * math.sqrt(2.0))
CUTOFF_SIGMAS = 5.0
ENCLOSED_FRACTION = 0.95   # of the total density, inside molmap's display contour
PAD_RESOLUTIONS = 3.0      # molmap's box: the atoms' bounding box padded by 3 x resolution


def sigma_for(resolution: float) -> float:
    """Gaussian sigma (Angstrom) for a map resolution (Angstrom), as ChimeraX molmap."""
    if not resolution > 0:
        raise DifffitInputError(f"resolution must be positive (Angstrom), got {resolution}")
    return SIGMA_FACTOR * float(resolution)


def splat_atoms(coords: np.ndarray, atomic_numbers: np.ndarray, resolution: float,
                origin: Sequence[float], voxel_size: Sequence[float], shape_zyx: Sequence[int],
                device: str = "cpu", dtype=np.float32) -> np.ndarray:
    """Simulated density of atoms on a given grid (normalised Gaussians, as molmap).

    Args:
        coords: [N, 3] world coordinates (Angstrom).
        atomic_numbers: [N] amplitudes before normalisation.
        resolution: map resolution (Angstrom).
        origin, voxel_size: grid frame (x, y, z); shape_zyx: (nz, ny, nx).
        dtype: of the returned array.

    Returns:
        [nz, ny, nx] array.
    """
    sigma, amp64 = _amplitudes(atomic_numbers, resolution)
    tdt = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
    pts = torch.as_tensor(np.ascontiguousarray(coords, dtype=np.float64), device=device).to(tdt)
    amp = torch.as_tensor(amp64, device=device).to(tdt)
    grid = ops.splat(pts, amp, sigma, CUTOFF_SIGMAS, list(shape_zyx),
                     list(map(float, origin)), list(map(float, voxel_size)))
    return grid.cpu().numpy().astype(dtype, copy=False)


def _amplitudes(atomic_numbers: np.ndarray, resolution: float) -> tuple[float, np.ndarray]:
    """(sigma, [N] float64 peak heights): each atom a normalised Gaussian of its electrons."""
    sigma = sigma_for(resolution)
    norm = (2.0 * math.pi) ** -1.5 * sigma ** -3
    return sigma, np.asarray(atomic_numbers, dtype=np.float64) * norm


def molmap_grid(coords: np.ndarray, resolution: float, spacing: float | None = None
                ) -> tuple[np.ndarray, float, tuple[int, int, int]]:
    """Molmap's grid around atoms: (origin [3], spacing, shape (nz, ny, nx)).

    Spacing resolution / 3 by default; the atoms' bounding box padded by 3 x resolution.
    """
    step = float(spacing) if spacing else float(resolution) / 3.0
    pad = PAD_RESOLUTIONS * float(resolution)
    lo = coords.min(0) - pad
    n = np.ceil((coords.max(0) - coords.min(0) + 2.0 * pad) / step).astype(np.int64)
    return lo, step, (int(n[2]), int(n[1]), int(n[0]))


def check_grid_size(shape_zyx: Sequence[int], what: str, limit: float = 2e9) -> None:
    """Refuse a grid too large to allocate (float64 bytes), naming its size."""
    n = float(np.prod([float(k) for k in shape_zyx]))
    if n * 8 > limit:
        raise DifffitInputError(
            f"{what}: a grid of {' x '.join(map(str, shape_zyx[::-1]))} voxels "
            f"({n * 8 / 1e9:.1f} GB) is too large; use a coarser spacing or a lower resolution")


def molmap(structure: Structure, resolution: float, like: DensityMap | None = None,
           spacing: float | None = None, device: str = "cpu") -> DensityMap:
    """Simulated map of a structure (every atom but waters), as ChimeraX ``molmap``.

    Args:
        structure: the atoms to simulate.
        resolution: Angstrom.
        like: put the simulated map on this map's grid (same origin, voxel size, shape);
            otherwise molmap's own box (:func:`molmap_grid`), spacing ``spacing``
            (default resolution / 3).

    Returns:
        DensityMap of the simulated density.
    """
    if not isinstance(structure, Structure):
        raise DifffitInputError(f"molmap: structure must be a difffit Structure (from "
                                f"read_structure), got {type(structure).__name__}")
    if like is not None and not isinstance(like, DensityMap):
        raise DifffitInputError(f"molmap: like must be a DensityMap (from read_map), got "
                                f"{type(like).__name__}")
    sel = simulation_mask(structure)
    xyz, z = structure.coords[sel], structure.atomic_numbers[sel]
    if like is not None:
        data = splat_atoms(xyz, z, resolution, like.origin, like.voxel_size, like.data.shape,
                           device)
        return like.copy_with(data)
    if len(xyz) == 0:
        raise DifffitInputError(f"{structure.name}: no atoms to simulate")
    lo, step, shape = molmap_grid(xyz, resolution, spacing)
    check_grid_size(shape, f"simulated map of {structure.name}")
    data = splat_atoms(xyz, z, resolution, lo, (step, step, step), shape, device)
    return DensityMap(data=data, origin=lo.astype(np.float64),
                      voxel_size=np.full(3, step, dtype=np.float64), path=None)


def enclosing_level(values: np.ndarray, fraction: float = ENCLOSED_FRACTION) -> float:
    """The highest level such that values at or above it hold ``fraction`` of the sum of
    all (non-negative) values: molmap's display contour."""
    v = np.asarray(values).ravel()
    total = float(v.sum(dtype=np.float64))
    if not total > 0:
        return 0.0
    # Sorting only the upper values is exact when they already hold the fraction; they
    # are sorted in their own precision and summed in double.
    top = v[v > 1e-3 * v.max()]
    if top.sum(dtype=np.float64) < fraction * total:
        top = v
    top = np.sort(top)[::-1]
    k = int(np.searchsorted(np.cumsum(top, dtype=np.float64), fraction * total))
    return float(top[min(k, top.size - 1)])


def molmap_envelope(coords: np.ndarray, atomic_numbers: np.ndarray, resolution: float,
                    frame: tuple[np.ndarray, np.ndarray] | None = None,
                    spacing: float | None = None, values=None) -> tuple[np.ndarray, np.ndarray]:
    """The grid points of a molmap inside its display contour, with their values: the
    points ChimeraX ``fitmap`` scores a model with.

    Args:
        coords: [N, 3] atoms (world coordinates); atomic_numbers: [N].
        resolution: Angstrom.
        frame: (origin [3], axes [3, 3] orthonormal columns) to lay the grid out in; None
            lays it along the world axes, as molmap does for atoms where they are.
        spacing: grid spacing (default resolution / 3, molmap's).
        values: the simulator, ``values(coords, atomic_numbers, resolution, origin,
            voxel_size, shape_zyx) -> [nz, ny, nx]`` (default :func:`splat_atoms`, molmap);
            negative values are clipped to 0 before the contour.

    Returns:
        (points [K, 3] world coordinates, values [K]) as float64 arrays.
    """
    local = coords if frame is None else (coords - frame[0]) @ frame[1]
    lo, step, shape = molmap_grid(local, resolution, spacing)
    if values is None:
        lo, shape = _trim_to_cutoff(lo, step, shape, resolution)
    check_grid_size(shape, "simulated map")
    # float32 is ample for a contour and the weights, and twice as quick to splat.
    grid = np.clip((values or splat_atoms)(local, atomic_numbers, resolution, lo, (step,) * 3,
                                           shape), 0.0, None)
    flat = grid.ravel()
    idx = np.flatnonzero(flat >= enclosing_level(flat))   # quicker than a 3-D nonzero
    ny, nx = grid.shape[1], grid.shape[2]
    pts = lo + np.stack([idx % nx, idx // nx % ny, idx // (nx * ny)], axis=1) * step
    if frame is not None:
        pts = pts @ frame[1].T + frame[0]
    return pts, flat[idx].astype(np.float64)


def molmap_envelopes(structures: Sequence[tuple[np.ndarray, np.ndarray]], resolution: float,
                     frames: Sequence[tuple[np.ndarray, np.ndarray]] | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`molmap_envelope` (molmap's simulator and spacing) of many structures in one
    compiled call (:func:`difffit.ops.envelopes`, parallel over structures): the same
    points and values, up to the order of double sums.

    Args:
        structures: (coords [N, 3], atomic_numbers [N]) of each structure.
        frames: one (origin [3], axes [3, 3]) per structure to lay its grid out in (None:
            the world axes).

    Returns:
        (points [K, 3] world coordinates, values [K] float64, counts [M]): the structures'
        envelopes one after another.
    """
    M = len(structures)
    local, grids, fr = [], np.zeros((M, 7)), np.zeros((M, 12))
    for k, (xyz, _) in enumerate(structures):
        origin, axes = (np.zeros(3), np.eye(3)) if frames is None else frames[k]
        loc = (xyz - origin) @ axes
        lo, step, shape = molmap_grid(loc, resolution)
        lo, shape = _trim_to_cutoff(lo, step, shape, resolution)
        check_grid_size(shape, "simulated map")
        local.append(loc)
        grids[k] = [*lo, step, shape[2], shape[1], shape[0]]
        fr[k, :9], fr[k, 9:] = np.asarray(axes).ravel(), origin
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in local], dtype=np.int64)])
    pts = np.concatenate(local).astype(np.float32) if M else np.zeros((0, 3), np.float32)
    sigma, amp = _amplitudes(np.concatenate([np.asarray(z) for _, z in structures])
                             if M else np.zeros(0), resolution)
    amp = amp.astype(np.float32)
    xyz, val, counts = ops.envelopes(pts, amp, offsets, grids, fr, sigma, CUTOFF_SIGMAS,
                                     ENCLOSED_FRACTION)
    return xyz, val.astype(np.float64), counts


def _trim_to_cutoff(lo: np.ndarray, step: float, shape_zyx: tuple[int, int, int],
                    resolution: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Molmap's lattice without the layers that lie beyond every Gaussian's cutoff: there
    the simulated density is exactly 0, below any contour, so the envelope is the same
    points (values equal up to float32 rounding of the shifted origin), from about half
    the voxels.

    A layer t steps in from the box's face is at least pad - t step from every atom; the
    trim keeps one step of slack beyond the cutoff radius.
    """
    slack = PAD_RESOLUTIONS * float(resolution) - CUTOFF_SIGMAS * sigma_for(resolution)
    t = int(math.floor(slack / step)) - 1
    if t <= 0:
        return lo, shape_zyx
    shape = tuple(max(int(n) - 2 * t, 1) for n in shape_zyx)
    return lo + t * step, shape


def principal_frame(coords: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A frame that moves with the atoms: ``centre`` and the principal axes of the atoms
    about it (signs fixed by the third moments), so a grid laid out in it does not depend
    on the coordinate frame the model came in.

    Returns:
        (origin [3], axes [3, 3] with the axes as columns, a proper rotation).
    """
    x = coords - centre
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    axes = vt.T.copy()
    for k in range(3):  # a sign that moves with the atoms: the skew along the axis
        if np.sum((x @ axes[:, k]) ** 3) < 0:
            axes[:, k] = -axes[:, k]
    if np.linalg.det(axes) < 0:
        axes[:, 2] = -axes[:, 2]
    return np.asarray(centre, dtype=np.float64), axes


def sample_simulated(coords: np.ndarray, atomic_numbers: np.ndarray, resolution: float
                     ) -> np.ndarray:
    """[N] the structure's own simulated density at each of its atoms (W_i of the atom
    metrics), trilinear on its molmap grid with the kernels' sampling.

    Args:
        coords: [N, 3]; atomic_numbers: [N].
    """
    lo, step, shape = molmap_grid(coords, resolution)
    grid = splat_atoms(coords, atomic_numbers, resolution, lo, (step,) * 3, shape,
                       dtype=np.float64)
    return sample_points(torch.from_numpy(grid).unsqueeze(-1), lo, [step] * 3,
                         torch.from_numpy(np.ascontiguousarray(coords, dtype=np.float64)))


def sample_points(volume: torch.Tensor, origin: Sequence[float], voxel_size: Sequence[float],
                  points: torch.Tensor) -> np.ndarray:
    """[N] trilinear samples of a one-channel volume [D, H, W, 1] at points [N, 3] (world),
    with the kernels' sampling (border clamping)."""
    n = points.shape[0]
    # Each point is a one-point "molecule" at the identity pose, so the kernel's per-
    # placement sum of sampled densities is the sample at that point.
    quat = torch.zeros(n, 4, dtype=volume.dtype)
    quat[:, 0] = 1.0
    st = ops.point_stats(volume.contiguous(), list(map(float, origin)),
                         list(map(float, voxel_size)), points.to(volume.dtype).contiguous(),
                         torch.ones(n, dtype=volume.dtype), torch.arange(n + 1), quat,
                         torch.zeros(n, 3, dtype=volume.dtype), torch.arange(n))
    return st[:, 2].numpy()


def explained_mask(dmap: DensityMap, placed: Sequence[Structure], resolution: float,
                   fraction: float = AcceptRules.zero_fraction, device: str = "cpu",
                   simulator=None) -> np.ndarray:
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
        simulator: a :class:`difffit.simulators.Simulator` to simulate with; None is
            molmap (this function's own, identical numbers).

    Returns:
        [nz, ny, nx] bool.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise DifffitInputError(f"zero fraction must be between 0 and 1 (exclusive), got {fraction}")
    mask = np.zeros(dmap.data.shape, dtype=bool)
    for s in placed:
        sim = (molmap(s, resolution, like=dmap, device=device) if simulator is None
               else simulator.simulate(s, resolution, like=dmap)).data
        peak = float(sim.max())
        if peak > 0:  # a structure entirely outside the box explains nothing
            mask |= sim > fraction * peak
    return mask


def zero_out(dmap: DensityMap, placed: Sequence[Structure], resolution: float,
             fraction: float = AcceptRules.zero_fraction, device: str = "cpu",
             simulator=None) -> DensityMap:
    """The map with the density explained by placed structures set to zero.

    Zeroing (not subtracting a scaled simulation) is docs/method.md section 9: it needs no
    amplitude match between simulated and experimental density, and a zeroed voxel is
    below any positive contour, so a later fit treats it as solvent.

    Args:
        dmap: the map.
        placed: structures in their placed coordinates.
        resolution: Angstrom.
        fraction, simulator: see :func:`explained_mask`.

    Returns:
        A new DensityMap on the same grid ([nz, ny, nx]).
    """
    mask = explained_mask(dmap, placed, resolution, fraction, device, simulator)
    data = dmap.data.copy()
    data[mask] = 0.0
    return dmap.copy_with(data)
