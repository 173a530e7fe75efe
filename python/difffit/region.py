"""Local and regional fits: where the search may start, and which part of the map it sees.

ChimeraX ``fitmap`` offers the same choices: a fit without search (refine the model from
where it is), a search whose starts lie in a sphere (``placement r``, its ``radius``),
and a fit to a zone of the map. Here (fields of :class:`difffit.FitParams`):

* ``local``: one start per structure, at its current pose (the coordinates of its file);
  the search only refines it (:func:`local_starts`).
* ``center`` + ``radius``: the starts' positions are drawn from the density above the
  contour within ``radius`` of ``center`` (:func:`restrict_starts`), and the map the search
  sees is cut to that sphere's box widened by the structures' own extent, so no start can
  wander far off.
* ``mask``: a map on the same grid as the target; the target is multiplied by it (a
  binary segment, or a soft mask with values in [0, 1]) and cut to its box.
* ``zone`` + ``zone_radius``: the target keeps only the voxels within ``zone_radius`` of
  the atoms of the structure file ``zone`` (ChimeraX ``volume zone``), and is cut to that
  box.

Zeroing is what ChimeraX's ``volume mask`` and ``volume zone ... newMap true`` do: the
density outside the region becomes 0, i.e. solvent.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import DifffitInputError, opt
from .maps import DensityMap, read_map
from .preprocess import Pyramid

__all__ = ["restrict_map", "mask_weights", "zone_weights", "crop", "restrict_starts",
           "local_starts", "describe"]

# Voxels of margin kept around a cut-out region, beyond the structures' reach.
_PAD_VOXELS = 3
# Angstrom of map kept around the structures for a local fit.
_LOCAL_MARGIN = 10.0


def describe(params) -> str | None:
    """One line on the region a fit was restricted to (None for a whole-map search)."""
    parts = []
    if params.local:
        parts.append("local: refined from the structures' current poses only")
    if params.center is not None:
        c = ", ".join(f"{v:g}" for v in params.center)
        parts.append(f"starts within {params.radius:g} A of ({c})")
    if params.mask is not None:
        parts.append(f"map masked by {params.mask}")
    if params.zone is not None:
        parts.append(f"map zoned within {params.zone_radius:g} A of {params.zone}")
    return "; ".join(parts) or None


def mask_weights(mask, dmap: DensityMap) -> np.ndarray:
    """The weights [nz, ny, nx] (0 to 1) of a mask map on the target's grid.

    A mask whose values all lie in [0, 1] is used as it is (a soft mask's edge tapers the
    density); any other mask (a segmentation's region numbers, a map) keeps its non-zero
    voxels.

    Args:
        mask: DensityMap or path of an MRC/CCP4 file.
        dmap: the target map.

    Raises:
        DifffitInputError: the file cannot be read, its grid is not the target's (naming
            what differs), or it keeps no voxel.
    """
    m = mask if isinstance(mask, DensityMap) else read_map(mask)
    where = f"mask {m.path or '(in memory)'}"
    target = dmap.path or "the map"
    fix = ("resample it onto the map's grid first (ChimeraX: volume resample #2 onGrid #1, "
           "then save it)")
    if m.data.shape != dmap.data.shape:
        raise DifffitInputError(f"{where}: grid {'x'.join(map(str, m.shape_xyz))} is not the "
                                f"grid of {target} ({'x'.join(map(str, dmap.shape_xyz))}); {fix}")
    if not np.allclose(m.voxel_size, dmap.voxel_size, rtol=1e-3, atol=0):
        raise DifffitInputError(f"{where}: voxel size {_xyz(m.voxel_size)} A is not that of "
                                f"{target} ({_xyz(dmap.voxel_size)} A); {fix}")
    if np.abs(m.origin - dmap.origin).max() > 0.01 * float(dmap.voxel_size.min()):
        raise DifffitInputError(f"{where}: origin {_xyz(m.origin)} A is not that of {target} "
                                f"({_xyz(dmap.origin)} A): the two grids are shifted; {fix}")
    data = np.nan_to_num(m.data.astype(np.float64))
    w = data if data.min() >= 0 and data.max() <= 1 else (data != 0).astype(np.float64)
    if not (w > 0).any():
        raise DifffitInputError(f"{where}: no voxel of the mask is non-zero: nothing to fit into")
    return w


def zone_weights(zone, dmap: DensityMap, radius: float) -> np.ndarray:
    """[nz, ny, nx] 0/1 weights: the voxels whose centres lie within ``radius`` of an atom of
    ``zone`` (a Structure or a structure file; every atom but waters).

    Raises:
        DifffitInputError: the file cannot be read, or no voxel lies within the zone.
    """
    from scipy.spatial import cKDTree

    from .structures import Structure, read_structure, simulation_mask

    s = zone if isinstance(zone, Structure) else read_structure(zone)
    keep = simulation_mask(s)  # every atom but waters
    xyz = s.coords[keep] if keep.any() else s.coords
    lo = np.floor(dmap.world_to_index(xyz.min(0) - radius)).astype(int)
    hi = np.ceil(dmap.world_to_index(xyz.max(0) + radius)).astype(int)
    n = np.array(dmap.shape_xyz)
    lo, hi = np.clip(lo, 0, n - 1), np.clip(hi, 0, n - 1)
    w = np.zeros(dmap.data.shape, np.float64)
    if (hi >= lo).all():
        axes = [np.arange(lo[k], hi[k] + 1) for k in range(3)]
        iz, iy, ix = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        pts = dmap.index_to_world(np.stack([ix, iy, iz], -1).reshape(-1, 3))
        d, _ = cKDTree(xyz).query(pts, distance_upper_bound=radius)
        w[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = \
            np.isfinite(d).reshape(iz.shape).astype(np.float64)
    if not (w > 0).any():
        raise DifffitInputError(f"zone {s.path or s.name}: no voxel of the map lies within "
                                f"{radius:g} A of its atoms (is it placed in the map's frame?)")
    return w


def crop(dmap: DensityMap, lo_xyz, hi_xyz) -> DensityMap:
    """The part of ``dmap`` between world points ``lo_xyz`` and ``hi_xyz`` (Angstrom), on
    the same voxels (clipped to the box). The cut-out keeps no file path: it is not the
    file's content."""
    lo = np.floor(dmap.world_to_index(np.asarray(lo_xyz, np.float64))).astype(int)
    hi = np.ceil(dmap.world_to_index(np.asarray(hi_xyz, np.float64))).astype(int)
    n = np.array(dmap.shape_xyz)
    lo, hi = np.clip(lo, 0, n - 1), np.clip(hi, 0, n - 1)
    if (hi < lo).any():
        raise DifffitInputError(f"the region ({_xyz(lo_xyz)} to {_xyz(hi_xyz)} A) lies outside "
                                f"the map's box ({_xyz(dmap.world_min)} to {_xyz(dmap.world_max)} A)")
    data = dmap.data[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1]
    return DensityMap(data.copy(), dmap.index_to_world(lo), dmap.voxel_size.copy(), None)


def restrict_map(dmap: DensityMap, params, structures=(), threshold: float | None = None
                 ) -> DensityMap:
    """The map a regional fit searches: ``dmap`` itself when the fit is not regional,
    else multiplied by the mask / zone and cut to the region's box (widened by the
    structures' reach, so a structure placed anywhere in the region stays inside); for a
    local fit, cut to the structures' box widened by 10 A.

    Args:
        dmap: the target map.
        params: FitParams (its ``center``, ``radius``, ``mask``, ``zone``, ``zone_radius``).
        structures: the structures fitted (their extent widens the box).
        threshold: the contour level; with ``center``, some voxel of the sphere must lie
            above it (checked here, before the map is cut).

    Raises:
        DifffitInputError: a mask or zone that is not usable (:func:`mask_weights`,
            :func:`zone_weights`), or a sphere that holds no density above the contour.
    """
    if not (params.local or params.center is not None or params.mask is not None
            or params.zone is not None):
        return dmap
    weights = np.ones(dmap.data.shape, np.float64)
    if params.mask is not None:
        weights *= mask_weights(params.mask, dmap)
    if params.zone is not None:
        weights *= zone_weights(params.zone, dmap, params.zone_radius)
        if not (weights > 0).any():
            raise DifffitInputError(f"the mask {params.mask} and the zone of {params.zone} "
                                    f"share no voxel")
    reach = max((float(np.linalg.norm(s.coords - s.centroid, axis=1).max())
                 for s in structures), default=0.0)
    pad = _PAD_VOXELS * float(dmap.voxel_size.max())
    if params.center is not None:
        c = np.asarray(params.center, np.float64)
        lo, hi = c - params.radius - reach - pad, c + params.radius + reach + pad
        if threshold is not None:
            _check_sphere(dmap, weights, c, params.radius, threshold)
    elif params.local and structures:
        # A local fit sees the structures' surroundings only: its steps (a fraction of the
        # box) stay small, and no far density can pull it away.
        xyz = np.vstack([s.coords for s in structures])
        lo, hi = xyz.min(0) - _LOCAL_MARGIN - pad, xyz.max(0) + _LOCAL_MARGIN + pad
    else:
        lo, hi = dmap.world_min, dmap.world_max
    if params.mask is not None or params.zone is not None:
        iz, iy, ix = np.nonzero(weights > 0)
        idx = np.stack([[ix.min(), iy.min(), iz.min()], [ix.max(), iy.max(), iz.max()]])
        w_lo, w_hi = dmap.index_to_world(idx[0]) - pad, dmap.index_to_world(idx[1]) + pad
        lo, hi = np.maximum(lo, w_lo), np.minimum(hi, w_hi)
    masked = dmap.copy_with(dmap.data * weights) if (weights != 1).any() else dmap
    out = crop(masked, lo, hi)
    return out


def _check_sphere(dmap: DensityMap, weights: np.ndarray, c: np.ndarray, radius: float,
                  threshold: float) -> None:
    """Refuse a sphere holding no voxel above the contour (of the masked map)."""
    lo = np.clip(np.floor(dmap.world_to_index(c - radius)).astype(int), 0, None)
    hi = np.ceil(dmap.world_to_index(c + radius)).astype(int)
    sub = (slice(lo[2], hi[2] + 1), slice(lo[1], hi[1] + 1), slice(lo[0], hi[0] + 1))
    data, w = dmap.data[sub], weights[sub]
    found = False
    if data.size:
        iz, iy, ix = np.nonzero((data * w) > threshold)
        xyz = dmap.index_to_world(np.stack([ix + lo[0], iy + lo[1], iz + lo[2]], -1))
        found = bool((np.linalg.norm(xyz - c, axis=-1) <= radius).any())
    if not found:
        cs = ", ".join(f"{v:g}" for v in c)
        raise DifffitInputError(
            f"no density above the contour (threshold {threshold:.4g}) lies within "
            f"{radius:g} A of ({cs}): move {opt('center')}, widen {opt('radius')} or "
            f"lower the threshold")


def restrict_starts(pyr: Pyramid, params) -> Pyramid:
    """The pyramid with its start mask (density above the contour) limited to the sphere
    of ``center`` / ``radius``; the pyramid itself when the fit has no centre.

    Raises:
        DifffitInputError: no voxel above the contour lies in the sphere.
    """
    if params.center is None:
        return pyr
    D, H, W = pyr.mask.shape
    iz, iy, ix = np.meshgrid(np.arange(D), np.arange(H), np.arange(W), indexing="ij")
    xyz = np.stack([ix, iy, iz], -1) * pyr.voxel_size + pyr.origin        # [D, H, W, 3]
    inside = np.linalg.norm(xyz - np.asarray(params.center), axis=-1) <= params.radius
    mask = pyr.mask & inside
    if not mask.any():
        c = ", ".join(f"{v:g}" for v in params.center)
        raise DifffitInputError(
            f"no density above the contour (threshold {pyr.threshold:.4g}) lies within "
            f"{params.radius:g} A of ({c}): move {opt('center')}, widen {opt('radius')} or "
            f"lower the threshold")
    return dataclasses.replace(pyr, mask=mask)


def local_starts(centroids: np.ndarray, device) -> tuple[Tensor, Tensor]:
    """One start per structure at its current pose: the identity rotation, and the
    translation that puts its fitted atoms' centroid where it is (a placement moves atom
    x to R (x - c) + t, so t = c).

    Args:
        centroids: [M, 3] fitted-atom centroids.

    Returns:
        quat [M, 4] (w, x, y, z) and trans [M, 3], float32 on ``device``.
    """
    M = len(centroids)
    quat = torch.zeros(M, 4, dtype=torch.float32)
    quat[:, 0] = 1
    trans = torch.as_tensor(np.asarray(centroids, np.float64), dtype=torch.float32)
    return quat.to(device), trans.reshape(M, 3).to(device)


def check_paths(params) -> None:
    """Refuse, before any work, a mask or zone file that does not exist."""
    for name in ("mask", "zone"):
        value = getattr(params, name)
        if value is not None and not Path(value).is_file():
            raise DifffitInputError(f"{opt(name, value)}: no such file")


def _xyz(v) -> str:
    return "(" + ", ".join(f"{float(x):.4g}" for x in np.asarray(v).ravel()) + ")"
