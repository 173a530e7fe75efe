"""Map-in-map fitting: place a map (a segment, a subtomogram average, a homologue's map)
into a target map through its Gaussian mixture.

The source map becomes a mixture (:func:`difffit.gmm_fit.from_map`: k-means of its voxels
above its contour, then Adam on every Gaussian against it), the mixture a pseudo-atomic
structure (:func:`map_as_structure`: a point per Gaussian, weighted by its amplitude),
and :func:`difffit.fit` (given a map instead of structures) places that structure like any other: the same
search, clustering, refinement, metrics and result. A placement (R, T) maps the source
map's world coordinates onto the target's; :func:`resample` puts the source map on the
target's grid in that pose (what a fit of a model writes as a moved model).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..gmm_fit import as_structure, from_map
from ..files import is_map_path
from ..maps import DensityMap, read_map

__all__ = ["MAP_SOURCE_OPTIONS", "is_map_source", "map_as_structure", "resample"]

# Keywords of difffit.fit that set a map source's mixture.
MAP_SOURCE_OPTIONS = ("source_threshold", "n_gaussians", "gmm_iters")



def is_map_source(obj) -> bool:
    """True for a DensityMap or a path named like an MRC/CCP4 map (optionally .gz)."""
    if isinstance(obj, DensityMap):
        return True
    if isinstance(obj, (str, os.PathLike)):
        return is_map_path(obj)
    return False


def map_as_structure(source, resolution: float, source_threshold: float | None = None,
                     n_gaussians: int | None = None, gmm_iters: int = 100):
    """A map to place as a pseudo-atomic structure, through its Gaussian mixture.

    Args:
        source: DensityMap or path of the map to place.
        resolution: Angstrom (the mixture's N and widths).
        source_threshold: its contour (None: its mean + 1 standard deviation).
        n_gaussians: Gaussians (None: the nearest-neighbour rule).
        gmm_iters: Adam steps fitting the mixture to the map.

    Returns:
        (Structure of pseudo-atoms named after the map, the source DensityMap, the Mixture).
    """
    src = source if isinstance(source, DensityMap) else read_map(source)
    mix = from_map(src, resolution, source_threshold, n_gaussians, iters=gmm_iters)
    name = Path(src.path).name.split(".")[0] if getattr(src, "path", None) else "source_map"
    return as_structure(mix, name=name), src, mix


def resample(source: DensityMap | str, like: DensityMap | str, rotation: np.ndarray,
             translation: np.ndarray) -> DensityMap:
    """The source map moved by x -> R x + T and sampled (trilinear, 0 outside the source)
    on the grid of ``like``.

    Args:
        source: the map that was placed; like: the target whose grid is wanted.
        rotation: [3, 3] R; translation: [3] T (a placement's ``rotation``, ``translation``).

    Returns:
        DensityMap with ``like``'s grid, float32.
    """
    src = source if isinstance(source, DensityMap) else read_map(source)
    tgt = like if isinstance(like, DensityMap) else read_map(like)
    R = np.asarray(rotation, dtype=np.float64)
    T = np.asarray(translation, dtype=np.float64)
    D, H, W = tgt.data.shape
    zz, yy, xx = np.meshgrid(np.arange(D), np.arange(H), np.arange(W), indexing="ij")
    p = tgt.origin + np.stack([xx, yy, zz], -1).reshape(-1, 3) * tgt.voxel_size  # [V, 3]
    q = (p - T) @ R                                   # R^T (p - T): back into the source
    ijk = (q - src.origin) / src.voxel_size           # fractional x, y, z indices
    vals = ndimage.map_coordinates(np.asarray(src.data, dtype=np.float64),
                                   [ijk[:, 2], ijk[:, 1], ijk[:, 0]], order=1, mode="constant",
                                   cval=0.0)
    return tgt.copy_with(vals.reshape(D, H, W).astype(np.float32))
