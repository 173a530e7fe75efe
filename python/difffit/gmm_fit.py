"""Gaussian mixtures against maps: fitting a mixture's parameters to a map, and a mixture
as a pseudo-atomic structure the fitting pipeline can place.

* :func:`from_map`: a mixture of a map (k-means of its voxels above the contour, then
  :func:`refine_to_map`).
* :func:`refine_to_map`: Adam on every centre, width and amplitude of a mixture to match a
  map (least squares over the voxels near the contour), plain PyTorch on the sparse
  :func:`density_pairs`.
* :func:`mixture_correlation`: the mixture's correlation with a map over those voxels.
* :func:`neighbour_pairs` / :func:`density_pairs`: the sparse evaluation both use: only the
  (voxel, Gaussian) pairs within a few widths (a k-d tree's neighbour list), gather ->
  exp -> ``index_add`` in plain PyTorch; :func:`difffit.gmm.density` (dense) is its
  reference.
* :func:`as_structure`: a mixture as a Structure of pseudo-atoms (one per Gaussian, its
  amplitude as the atomic number molmap weights it by), so :func:`difffit.fit` searches,
  clusters, refines and scores a map source exactly as it does atoms.
"""
from __future__ import annotations

import math
from pathlib import Path

import gemmi
import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from .errors import DifffitInputError
from .gmm import Mixture, choose_n, density, kmeans, map_points
from .preprocess import default_threshold
from .simulate import sigma_for
from .maps import DensityMap
from .search import Adam
from .structures import Structure

__all__ = ["from_map", "fit_voxels", "refine_to_map", "mixture_correlation", "as_structure",
           "neighbour_pairs", "density_pairs"]

# Pairs farther than CUTOFF widths from a Gaussian's centre are left out of the
# refinement's density: each contributes under exp(-CUTOFF^2 / 2) = 1.5e-8 of its peak.
# (5 widths, 3.7e-6, is 1.4x faster, but the mixture then moves by ~1e-5 A and the pose
# a map-in-map fit finds by 0.03 degrees; at 6 it is the dense fit's to 1e-8 A and 1e-5 A.)
CUTOFF = 6.0
# The mixture's correlation (reported) is summed to 8 widths: exp(-32) = 1.3e-14 of a peak,
# the dense sum's own rounding.
CUTOFF_EXACT = 8.0
# The refinement's neighbour list holds the pairs within CUTOFF x GROWTH x width + MOVE
# voxels of the centres it was built at; it stays a superset of the pairs within CUTOFF
# widths while every centre has moved at most MOVE voxels and every width has grown at most
# GROWTH-fold since (checked every step; broken: rebuilt). Adam moves a centre about a
# tenth of a voxel and a width about 2 % a step, so a list lasts five steps or more (15
# builds in 100 steps on the DAQ map); a looser list lasts longer but costs more per step
# than its builds save (GROWTH 1.25, MOVE 1.5: 5 builds, the loop about 2x slower).
GROWTH, MOVE = 1.1, 0.5
# Pairs held at once (about 60 bytes each while they are gathered): more, and the refinement
# falls back to the dense gmm.density (as costly then) and the correlation goes by blocks.
MAX_PAIRS = 20_000_000


def fit_voxels(dmap: DensityMap, threshold: float, margin: float, max_voxels: int | None,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """World xyz [P, 3] and values [P] (0 at or below the contour) of the voxels within
    ``margin`` Angstrom of the contour's inside (where a mixture of the density must be right, its tails included);
    every k-th of them when there are more than ``max_voxels``."""
    data = np.asarray(dmap.data, dtype=np.float64)
    inside = data > threshold
    r = np.maximum(np.ceil(margin / np.asarray(dmap.voxel_size)), 1).astype(int)  # x, y, z
    # A box dilation (separable, so quick) of the inside by ``margin``.
    region = ndimage.maximum_filter(inside, size=(2 * r[2] + 1, 2 * r[1] + 1, 2 * r[0] + 1),
                                    mode="constant", cval=False)
    idx = np.argwhere(region)                                  # [P, 3] (z, y, x)
    if max_voxels is not None and len(idx) > max_voxels:
        # Every k-th voxel of the region, not a random subset: narrow Gaussians fitted to
        # scattered voxels would fit those voxels and miss the ones between them.
        idx = idx[:: int(math.ceil(len(idx) / max_voxels))]
    xyz = dmap.origin + idx[:, ::-1] * dmap.voxel_size
    val = data[tuple(idx.T)]
    # The density is what stands above the contour (as the pyramid's level 0): a mixture
    # of the molecule should not model the solvent's level or noise below it.
    return xyz, np.where(val > threshold, val, 0.0)


def neighbour_pairs(tree: cKDTree, centres: np.ndarray, radii: np.ndarray
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The (point, Gaussian) pairs within ``radii`` [N] of ``centres`` [N, 3], points from
    ``tree`` (a cKDTree of [P, 3]): (point index [M], Gaussian index [M]) int64, grouped by
    Gaussian."""
    lists = tree.query_ball_point(np.asarray(centres, dtype=np.float64),
                                  np.asarray(radii, dtype=np.float64), return_sorted=False)
    counts = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    i = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists]) if counts.sum() \
        else np.zeros(0, dtype=np.int64)
    j = np.repeat(np.arange(len(lists), dtype=np.int64), counts)
    return torch.from_numpy(i), torch.from_numpy(j)


def density_pairs(centres: torch.Tensor, sigmas: torch.Tensor, amplitudes: torch.Tensor,
                  points: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """The mixture's density at points summed over the pairs (points[i], Gaussian j) only,
    plain PyTorch (differentiable in centres, sigmas and amplitudes): gather -> exp ->
    ``index_add``. With every pair it is :func:`difffit.gmm.density`; with the pairs of
    :func:`neighbour_pairs` within K widths it differs by under exp(-K^2/2) of a peak per
    Gaussian left out.

    Args:
        centres: [N, 3]; sigmas: [N]; amplitudes: [N]; points: [P, 3] (one dtype);
        i, j: [M] int64 point and Gaussian indices.

    Returns:
        [P] density.
    """
    norm = amplitudes * (2 * math.pi * sigmas ** 2) ** -1.5           # [N]
    inv = 0.5 / sigmas ** 2                                            # [N]
    # One coordinate at a time: 1-D gathers and sums run about twice as fast as gathering
    # [M, 3] rows and summing over the short last axis.
    pT, cT = points.T.contiguous(), centres.T.contiguous()             # [3, P], [3, N]
    d2 = sum((pT[a].index_select(0, i) - cT[a].index_select(0, j)) ** 2 for a in range(3))
    e = torch.exp(-d2 * inv.index_select(0, j)) * norm.index_select(0, j)   # [M]
    return points.new_zeros(points.shape[0]).index_add(0, i, e)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else float("nan")


def mixture_correlation(mixture: Mixture, dmap: DensityMap, threshold: float,
                        margin: float | None = None, max_voxels: int | None = 200_000) -> float:
    """Correlation about the mean between the mixture's density and the map (0 at or below
    the contour) over the voxels within ``margin`` (default: the resolution, or 2.5 A) of
    the contour."""
    m = margin if margin is not None else (mixture.resolution or 2.5)
    xyz, val = fit_voxels(dmap, threshold, m, max_voxels)
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    # Sparse to CUTOFF_EXACT widths: the dense sum (difffit.gmm.density) to rounding;
    # by blocks of Gaussians of at most MAX_PAIRS pairs.
    tree, r = cKDTree(xyz), CUTOFF_EXACT * mixture.sigmas
    counts = tree.query_ball_point(mixture.centres, r, return_length=True)
    block = (np.cumsum(counts) - counts) // max(MAX_PAIRS, 1)   # by where its pairs start
    edges = [0, *(np.flatnonzero(np.diff(block)) + 1), len(mixture)]
    pts, rho = t(xyz), torch.zeros(len(xyz), dtype=torch.float64)
    with torch.no_grad():
        for a, b in zip(edges[:-1], edges[1:]):
            i, j = neighbour_pairs(tree, mixture.centres[a:b], r[a:b])
            rho += density_pairs(t(mixture.centres[a:b]), t(mixture.sigmas[a:b]),
                                 t(mixture.amplitudes[a:b]), pts, i, j)
    return _corr(rho, t(val))


class _Pairs:
    """The refinement's neighbour list (see GROWTH, MOVE): rebuilt only when a centre has
    moved more than MOVE voxels or a width grown more than GROWTH-fold since it was built,
    so it always holds every pair within CUTOFF widths. None when it would hold more than
    MAX_PAIRS (or a quarter of all) pairs: the dense sum then, no slower."""

    def __init__(self, xyz: np.ndarray, voxel: float):
        self.tree, self.move, self.builds = cKDTree(xyz), MOVE * voxel, 0
        self.c = self.s = None

    def update(self, c: np.ndarray, s: np.ndarray
               ) -> tuple[torch.Tensor, torch.Tensor] | None:
        if (self.c is None or (s > GROWTH * self.s).any()
                or (((c - self.c) ** 2).sum(1) > self.move ** 2).any()):
            self.c, self.s = c.copy(), s.copy()
            r = CUTOFF * GROWTH * s + self.move
            m = int(self.tree.query_ball_point(c, r, return_length=True).sum())
            self.pairs = (None if m > min(MAX_PAIRS, 0.25 * self.tree.n * len(c))
                          else neighbour_pairs(self.tree, c, r))
            self.builds += self.pairs is not None
        return self.pairs


def refine_to_map(mixture: Mixture, dmap: DensityMap, threshold: float, iters: int = 200,
                  lr: float | None = None, max_voxels: int = 100_000, seed: int = 0) -> Mixture:
    """Adam on every centre, width and amplitude so the mixture matches the map.

    Loss: the mean squared difference between the mixture and the map (0 at or below the
    contour) over the voxels within one resolution of the contour (at most
    ``max_voxels``, a regular subset beyond that)
    (where the mixture's tails must fall to zero, so Gaussians cannot leak). Widths are
    optimised as logarithms (they stay positive); the learning rates are in Angstrom for
    centres (a tenth of a voxel by default) and relative for width and amplitude. The
    density is summed over the (voxel, Gaussian) pairs within CUTOFF widths only
    (:func:`density_pairs`, a neighbour list rebuilt when the centres or widths have
    moved too far for it): the dense sum less under 1.5e-8 of a peak per Gaussian.

    Returns:
        A new Mixture; ``info`` gains ``correlation`` (over every voxel of the region, not
        only the subset) and ``correlation_start`` (the seed's).
    """
    res = mixture.resolution or 2.5 * float(np.mean(dmap.voxel_size))
    margin = res  # 4.4 molmap widths: the tails beyond are negligible
    xyz, val = fit_voxels(dmap, threshold, margin, max_voxels, seed)
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    pts, target = t(xyz), t(val)
    scale = float(target.abs().max()) or 1.0
    target = target / scale
    c = t(mixture.centres).clone().requires_grad_(True)
    log_s = t(np.log(mixture.sigmas)).clone().requires_grad_(True)
    # Amplitudes relative to their start, in the map's units divided by ``scale``.
    a0 = t(mixture.amplitudes) / scale
    log_a = torch.zeros_like(a0).requires_grad_(True)
    step = float(lr) if lr else 0.1 * float(np.mean(dmap.voxel_size))
    # difffit's own in-place Adam (torch.optim imports torch._dynamo: seconds at start).
    opts = [(c, Adam(c.data, step)), (log_s, Adam(log_s.data, 0.02)),
            (log_a, Adam(log_a.data, 0.02))]
    start = mixture_correlation(mixture, dmap, threshold, margin)
    pairs = _Pairs(xyz, float(np.mean(dmap.voxel_size)))
    for _ in range(int(iters)):
        s = log_s.exp()
        ij = pairs.update(c.detach().numpy(), s.detach().numpy())
        rho = (density(c, s, a0 * log_a.exp(), pts) if ij is None
               else density_pairs(c, s, a0 * log_a.exp(), pts, *ij))
        loss = (rho - target).pow(2).mean()
        grads = torch.autograd.grad(loss, [c, log_s, log_a])
        with torch.no_grad():
            for (_, opt), g in zip(opts, grads):
                opt.step(g)
    with torch.no_grad():
        out = Mixture(c.detach().numpy(), log_s.exp().numpy(),
                      (a0 * log_a.exp()).numpy() * scale, mixture.name, mixture.source,
                      mixture.resolution, dict(mixture.info))
    out.info.update(iters=int(iters), correlation_start=start, neighbour_lists=pairs.builds,
                    correlation=mixture_correlation(out, dmap, threshold, margin))
    return out


def as_structure(mixture: Mixture, name: str | None = None) -> Structure:
    """The mixture as a Structure of pseudo-atoms: one carbon-named atom ``G`` per
    Gaussian (residue ``GMM``, chain ``G``), every one fitted. Its atomic number (the
    weight molmap and the metrics give it) is the amplitude scaled so the mean is 6
    (a carbon), rounded and kept within 2..100 (1 would read as a hydrogen)."""
    amp = np.abs(mixture.amplitudes)
    z = np.clip(np.rint(6.0 * amp / max(float(amp.mean()), 1e-300)), 2, 100).astype(np.int32)
    st = gemmi.Structure()
    st.name = name or mixture.name
    model = gemmi.Model("1")
    chain = gemmi.Chain("G")
    for j, c in enumerate(mixture.centres):
        res = gemmi.Residue()
        res.name = "GMM"
        res.seqid = gemmi.SeqId(j + 1, " ")
        res.het_flag = "H"
        at = gemmi.Atom()
        at.name = "G"
        at.element = gemmi.Element("C")
        at.pos = gemmi.Position(*map(float, c))
        at.occ = 1.0
        at.b_iso = 0.0   # not a B-factor: a pLDDT-like column would read as AlphaFold
        res.add_atom(at)
        chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    st.setup_entities()
    n = len(mixture)
    return Structure(name=name or mixture.name, path=None,
                     coords=mixture.centres.astype(np.float64).copy(), atomic_numbers=z,
                     fit_mask=np.ones(n, dtype=bool), chain_ids=np.full(n, "G"),
                     gemmi_structure=st)


def from_map(dmap: DensityMap, resolution: float, threshold: float | None = None,
             n: int | None = None, iters: int = 200, seed: int = 0,
             max_points: int = 200_000) -> Mixture:
    """A mixture fitted to a map.

    Centres are seeded by k-means of the voxels above the contour weighted by
    (value - contour); amplitudes start equal (the mass above the contour / N) and widths
    at the resolution's molmap width; then ``iters`` Adam steps on every centre, width and
    amplitude minimise the squared difference to the map over the voxels within 3 widths
    of the contour (:func:`refine_to_map`). ``info["correlation"]`` is
    the fitted mixture's correlation with the map over those voxels.

    Args:
        dmap: the map; resolution: Angstrom (N by :func:`choose_n` when ``n`` is None).
        threshold: contour (None: mean + 1 standard deviation).
        iters: Adam steps (0: the k-means seed only).
        max_points: voxels used at most for k-means (a strided subset beyond that).
    """
    if not isinstance(dmap, DensityMap):
        raise DifffitInputError(f"a map mixture is built from a DensityMap, got "
                                f"{type(dmap).__name__}")
    thr = float(default_threshold(dmap.data) if threshold is None else threshold)
    xyz, val = map_points(dmap, thr)
    w = val - thr
    if len(xyz) > max_points:  # k-means seeds need no more than a few hundred thousand
        step = int(math.ceil(len(xyz) / max_points))
        xyz, w, val = xyz[::step], w[::step], val[::step]
    if n is None:
        n = choose_n(xyz, resolution, w, seed)
    n = int(min(max(int(n), 1), len(xyz)))
    C, _ = kmeans(xyz, n, w, seed=seed)
    vox = float(np.prod(dmap.voxel_size))
    mass = float((np.asarray(dmap.data)[np.asarray(dmap.data) > thr]).sum() * vox)
    mix = Mixture(C, np.full(n, sigma_for(resolution)), np.full(n, mass / n),
                  Path(dmap.path).stem if getattr(dmap, "path", None) else "map", "map",
                  float(resolution), {"threshold": thr, "seed": int(seed), "iters": int(iters)})
    return refine_to_map(mix, dmap, thr, iters)
