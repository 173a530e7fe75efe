"""Fitting structures into a map: the DiffFit search, clustering, refinement and ranking.

Three stages (docs/method.md sections 3-8), each a function of its own:

1. :func:`_search`: preprocess the target into a multi-resolution, negative-space pyramid
   (its levels summed once: fixed weights, so every iteration samples a single channel);
   starts from :mod:`difffit.starts` (positions spread over the density, the best scanned
   rotations at each, then focused restarts around the best poses) for each
   structure, all structures through the ragged kernel in one batch (chunked when the
   batch would exceed ``max_points_per_batch`` atom samples); Adam on (quaternion,
   translation) of every start, the pose and score recorded together every
   ``record_every`` iterations.
2. :func:`_cluster`: each start's best recorded pose; metrics for all of them; greedy
   clustering per structure (3 A / 6 degrees).
3. :func:`_refine_and_rank`: the representatives of the best ``refine_top`` clusters of
   each structure are refined locally against the unsmoothed map (maximising the mean
   map value at all heavy atoms, like ChimeraX ``fitmap`` on atoms), measured again,
   merged when refinement brings two to one pose, and ranked by ``rank_by``.
"""
from __future__ import annotations

import math
import numbers
import os
import time
from dataclasses import dataclass, replace

import gemmi
import numpy as np
import torch
from torch import Tensor

from .. import ops
from ..coarse import (CoarseStage, coarse_descent, coarse_steps, extra_levels_bound,
                      prepare as coarse_prepare)
from ..checks import after_search, before_search, report
from ..cluster import cluster_poses
from ..copies import select_copies, significance
from ..errors import DifffitInputError, opt
from ..maps import DensityMap, read_map
from ..metrics import Metrics, chimerax_metrics, ragged
from ..simulators import simulator_for
from ..params import FitParams, resolve
from ..preprocess import Pyramid, build_pyramid, default_threshold
from ..region import check_paths, describe, local_starts, restrict_map, restrict_starts
from ..results import FitResult, Placement
from ..rotations import quat_to_matrix
from ..search import Batch, chunks, optimise, refine_against_map
from .mapfit import MAP_SOURCE_OPTIONS, is_map_source, map_as_structure
from ..starts import (first_round, focus_iters, focus_per_pose, focused_starts, scan_volume, scanned_starts,
                      spread_positions, starts_per_structure)
from ..progress import progress_bar
from ..structures import (Structure, alphafold_evidence, read_structure,
                          trace_mask, with_min_plddt)

__all__ = ["fit", "as_structures", "as_map"]


_ONE_STRUCTURE = (Structure, gemmi.Structure, str, os.PathLike)


def as_structures(structures) -> list[Structure]:
    """Structure objects from Structures, gemmi.Structures or paths (one, or a list)."""
    if isinstance(structures, _ONE_STRUCTURE):
        structures = [structures]
    if not isinstance(structures, (list, tuple)) or not all(
            isinstance(s, _ONE_STRUCTURE) for s in structures):
        bad = structures if not isinstance(structures, (list, tuple)) else next(
            s for s in structures if not isinstance(s, _ONE_STRUCTURE))
        raise DifffitInputError(
            f"structures must be a path of a PDB/mmCIF file, a difffit Structure or a "
            f"gemmi.Structure, or a list of them; got {type(bad).__name__}")
    out = [s if isinstance(s, Structure) else read_structure(s) for s in structures]
    if not out:
        raise DifffitInputError("no structure to fit")
    return out


def as_map(target) -> DensityMap:
    """A DensityMap from a DensityMap or a path."""
    if isinstance(target, DensityMap):
        return target
    if isinstance(target, (str, os.PathLike)):
        return read_map(target)
    raise DifffitInputError(
        f"the map must be a path of an MRC/CCP4 file or a DensityMap; got "
        f"{type(target).__name__}" + (" (an array needs its voxel size and origin: "
                                      "DensityMap(data, origin=(x, y, z), voxel_size=v))"
                                      if hasattr(target, "shape") else ""))


def check_resolution(resolution) -> float:
    if (isinstance(resolution, bool) or not isinstance(resolution, numbers.Real)
            or not math.isfinite(resolution) or not resolution > 0):
        raise DifffitInputError(f"resolution must be a positive number of Angstrom, got "
                                f"{resolution!r}")
    return float(resolution)


def check_threshold(threshold, dmap: DensityMap) -> float:
    """The contour level: a finite number, or None for the default (mean + 1 sd)."""
    if threshold is None:
        return float(default_threshold(dmap.data))
    if (isinstance(threshold, bool) or not isinstance(threshold, numbers.Real)
            or not math.isfinite(threshold)):
        raise DifffitInputError(f"threshold must be a number (a contour level in the map's "
                                f"units) or None, got {threshold!r}")
    return float(threshold)


@dataclass
class _Setup:
    """What every stage shares: the target, its pyramid, the structures on the device."""

    dmap: DensityMap
    structs: list[Structure]
    params: FitParams
    device: torch.device
    resolution: float
    threshold: float
    pyr: Pyramid
    volume: Tensor          # [D, H, W, 1] the pyramid's levels summed
    origin: list[float]
    voxel: list[float]
    centroids: np.ndarray   # [M, 3]
    batch: Batch            # centred fitted atoms
    mol_idx: Tensor         # [S] structure of each start
    per: int                # starts per structure
    coarse: CoarseStage | None = None  # coarse points and volumes (coarse_iters > 0)


@dataclass
class _Searched:
    rec: dict[str, Tensor]  # recorded quat [K, S, 4], trans [K, S, 3], score [K, S], iteration [K]
    best_k: Tensor          # [S] recorded step of each start's best score
    q_best: Tensor          # [S, 4]
    t_best: Tensor          # [S, 3]


@dataclass
class _Clustered:
    metrics: Metrics
    m_all: dict[str, Tensor]          # [S] every metric of each start's best pose
    rank_score: Tensor                # [S]
    groups: list[tuple[int, int, int]]  # (structure, representative start, hits)


def _setup(dmap, structs, params, resolution, threshold) -> _Setup:
    device = params.torch_device()
    thr = float(default_threshold(dmap.data) if threshold is None else threshold)
    coarse = (coarse_prepare(structs, params, dmap.voxel_size, device)
              if coarse_steps(params) else None)
    # One pyramid: its first n_levels are the atoms', the extra ones the coarse points'.
    pyr = build_pyramid(dmap.data, dmap.origin, dmap.voxel_size, thr,
                        n_levels=params.n_levels + (coarse.extra_levels if coarse else 0),
                        sigma=params.smooth_sigma, negative=params.negative,
                        dust_min_size=params.dust_min_size)
    if coarse is not None:
        pyr = coarse.split(pyr, params, device)
    volume = pyr.levels.sum(-1, keepdim=True).to(device).contiguous()  # fixed weights: sum once
    centroids = np.stack([s.centroid for s in structs])
    pts, off = ragged([s.fit_coords - c for s, c in zip(structs, centroids)], device)
    ops.validate_ragged(pts, off, torch.zeros(0, dtype=torch.int64))
    per = starts_per_structure(params)
    mol_idx = torch.arange(len(structs)).repeat_interleave(per).to(device)
    return _Setup(dmap, structs, params, device, resolution, thr, pyr, volume,
                  pyr.origin.tolist(), pyr.voxel_size.tolist(), centroids, Batch(pts, off),
                  mol_idx, per, coarse)


def _scan_points(su: _Setup) -> tuple[Tensor, Tensor]:
    """Ragged [A, 3] trace atoms (CA / P) of the fitted atoms, centred as the fit atoms:
    the points the start scan scores (a quarter of the backbone, the same shape)."""
    pts = []
    for s, c in zip(su.structs, su.centroids):
        mask = trace_mask(s) & s.fit_mask
        pts.append((s.coords[mask] if mask.any() else s.fit_coords) - c)
    return ragged(pts, su.device)


def _descend(su: _Setup, quat0: Tensor, trans0: Tensor, mol_idx: Tensor, lr_trans: float,
             bar, n_iters: int) -> dict[str, Tensor]:
    """Adam on the given starts for ``n_iters`` steps, in chunks that keep each batch under
    max_points_per_batch atom samples; the recorded quat [K,S,4], trans [K,S,3], score [K,S]."""
    off = su.batch.offsets
    n_atoms = (off[1:] - off[:-1]).cpu()[mol_idx.cpu()]
    parts = chunks(n_atoms, su.params.max_points_per_batch)
    if bar is not None:  # one step per chunk and iteration; the focus descent adds its own
        bar.total = (bar.total or 0) + n_iters * len(parts)
        bar.refresh()
    recs = [optimise(su.volume, su.origin, su.voxel, su.batch, quat0[a:b], trans0[a:b],
                     mol_idx[a:b], su.params, lr_trans, bar, n_iters) for a, b in parts]
    rec = {k: torch.cat([r[k] for r in recs], 1) for k in ("quat", "trans", "score")}
    rec["iteration"] = recs[0]["iteration"]
    return rec


def _held(rec: dict[str, Tensor], n_records: int) -> dict[str, Tensor]:
    """A shorter descent's records extended to ``n_records`` by repeating its last one (the
    start stopped there; argmax takes the first of equal scores, so a start's best record
    keeps its true iteration)."""
    k = rec["score"].shape[0]
    idx = torch.arange(n_records, device=rec["score"].device).clamp_max(k - 1)
    return {key: rec[key].index_select(0, idx) for key in ("quat", "trans", "score")}


def _search(su: _Setup, progress: bool) -> _Searched:
    """Scanned starts, descent, focused restarts around the best poses, descent
    (difffit.starts); every structure's starts contiguous, scanned then focused."""
    params, M = su.params, len(su.structs)
    box = np.array(su.pyr.shape[::-1]) * su.pyr.voxel_size
    lr_trans = params.lr_trans if params.lr_trans else 0.01 * float(box.mean())
    focus = not params.local and params.focus_top > 0 and focus_per_pose(params) > 0
    if params.local:  # one start per structure, where it is (difffit.region)
        quat0, trans0 = local_starts(su.centroids, "cpu")                    # [M, 4], [M, 3]
        quat0, trans0 = quat0.to(su.device, torch.float32), trans0.to(su.device, torch.float32)
        mol0 = su.mol_idx
    else:
        pos = spread_positions(restrict_starts(su.pyr, params), params.n_positions,
                               seed=params.seed)                              # [N, 3]
        vol = scan_volume(su.pyr, params.scan_smooth, su.device)
        quat0, trans0, mol0 = scanned_starts(vol, su.origin, su.voxel, *_scan_points(su), pos,
                                             params)                          # [M*N*R, .]
    bar = None
    if progress:
        bar = progress_bar(total=0, desc="fitting", unit="step")
    n_iters = params.n_iters
    if su.coarse is not None:  # recorded: the atom steps only (coarse scores are another scale)
        quat0, trans0 = coarse_descent(su.coarse, su.origin, su.voxel, quat0, trans0, mol0,
                                       params, lr_trans, bar)
        n_iters -= coarse_steps(params)
    rec = _descend(su, quat0, trans0, mol0, lr_trans, bar, n_iters)
    rec["iteration"] = rec["iteration"] + (params.n_iters - n_iters)
    if focus:
        ar = torch.arange(mol0.numel(), device=mol0.device)
        best = rec["score"].argmax(0)
        q2, t2, mol2 = focused_starts(rec["quat"][best, ar], rec["trans"][best, ar],
                                      rec["score"][best, ar], mol0, M, params)
        rec2 = _descend(su, q2, t2, mol2, lr_trans, bar, focus_iters(params))
        # Equal lengths: the shorter descent (the restarts, or with coarse_iters the first
        # round's atom steps) holds its last record.
        n_rec = max(rec["score"].shape[0], rec2["score"].shape[0])
        iteration = rec["iteration"][torch.arange(n_rec).clamp_max(rec["score"].shape[0] - 1)]
        rec, rec2 = _held(rec, n_rec) | {"iteration": iteration}, _held(rec2, n_rec)
        order = torch.argsort(torch.cat([mol0, mol2]).cpu(), stable=True).to(mol0.device)
        rec = {k: torch.cat([rec[k], rec2[k]], 1).index_select(1, order)
               for k in ("quat", "trans", "score")} | {"iteration": rec["iteration"]}
    if bar is not None:
        bar.close()
    best_k = rec["score"].argmax(0)                                           # [S]
    ar = torch.arange(su.mol_idx.numel(), device=best_k.device)
    return _Searched(rec, best_k, rec["quat"][best_k, ar], rec["trans"][best_k, ar])


def _cluster(su: _Setup, se: _Searched) -> _Clustered:
    """Metrics of every start's best pose; greedy clustering per structure."""
    params = su.params
    metrics = Metrics(su.structs, su.centroids, su.dmap, su.pyr.levels[..., 0], su.origin,
                      su.voxel, su.threshold, su.resolution, su.device,
                      simulator=simulator_for(params))
    m_all = metrics(se.q_best, se.t_best, su.mol_idx)
    ar = torch.arange(su.mol_idx.numel(), device=se.best_k.device)
    m_all["pyramid_score"] = se.rec["score"][se.best_k, ar].double()
    rank_score = m_all[params.rank_by].cpu()
    valid = (m_all["inside_fraction"] >= params.min_inside_fraction).cpu()
    R_best = quat_to_matrix(se.q_best.double().cpu())
    groups = []
    mol_cpu = su.mol_idx.cpu()
    for i in range(len(su.structs)):
        sel = torch.nonzero(mol_cpu == i).flatten()
        cl = cluster_poses(se.t_best[sel].double().cpu(), R_best[sel], rank_score[sel],
                           params.shift_tol, params.angle_tol, valid[sel])
        for k in range(len(cl)):
            groups.append((i, int(sel[cl.representative[k]]), int(cl.size[k])))
    return _Clustered(metrics, m_all, rank_score, groups)


def _refine_and_rank(su: _Setup, se: _Searched, cl: _Clustered) -> list[Placement]:
    """Refine the best clusters of each structure against the unsmoothed map, measure them
    again, merge clusters whose refined poses coincide, then rank."""
    params, device, groups = su.params, su.device, cl.groups
    reps = torch.tensor([g[1] for g in groups], dtype=torch.int64)
    g_mol = torch.tensor([g[0] for g in groups], dtype=torch.int64)
    hits = torch.tensor([g[2] for g in groups], dtype=torch.int64)
    q_rep, t_rep = se.q_best[reps.to(device)].double(), se.t_best[reps.to(device)].double()
    m_rep_idx = su.mol_idx[reps.to(device)]
    refined = _refine_selection(g_mol, cl.rank_score[reps], params)             # [G] bool
    sel = torch.nonzero(refined).flatten()
    if len(sel):
        sd = sel.to(device)
        q_rep[sd], t_rep[sd] = refine_against_map(su.dmap, su.structs, su.centroids, q_rep[sd],
                                                  t_rep[sd], m_rep_idx[sd], params.refine_iters)
    # Metrics at the refined poses; unrefined clusters keep those of their best pose.
    m_rep = {k: v[reps.to(v.device)].clone() for k, v in cl.m_all.items()}
    if len(sel):
        sd = sel.to(device)
        m_sel = cl.metrics(q_rep[sd], t_rep[sd], m_rep_idx[sd])
        m_sel["pyramid_score"] = ops.score(su.volume.double(), torch.ones(1, dtype=torch.float64, device=device),
                                           su.origin, su.voxel, su.batch.points.double(),
                                           su.batch.offsets, q_rep[sd], t_rep[sd],
                                           m_rep_idx[sd], validate=False)
        for k, v in m_sel.items():
            m_rep[k][sel.to(m_rep[k].device)] = v.to(m_rep[k].dtype)
    R_rep = quat_to_matrix(q_rep.cpu())                                         # [G, 3, 3]
    keep, hits = _merge_refined(g_mol, R_rep, t_rep.cpu(), m_rep[params.rank_by].cpu(), hits,
                                refined, params)

    # The best placements of each structure get ChimeraX's own numbers: each simulated
    # where it is placed (the many-placement metrics above move one simulation rigidly).
    exact = _exact_selection(g_mol, keep, refined, m_rep[params.rank_by].cpu(), params)
    if len(exact):
        idx = exact.numpy()
        mol = g_mol.numpy()[idx]
        R_sel = R_rep.numpy()[idx]
        T_sel = t_rep.cpu().numpy()[idx] - np.einsum("pij,pj->pi", R_sel, su.centroids[mol])
        cx = chimerax_metrics(su.dmap, su.structs, R_sel, T_sel, mol, su.resolution,
                              su.threshold, simulator=simulator_for(params))
        for k in ("correlation", "cam", "overlap", "mean_density", "inside_fraction"):
            m_rep[k][exact.to(m_rep[k].device)] = torch.from_numpy(cx[k]).to(m_rep[k])

    placements = []
    R_rep = R_rep.numpy()
    t_rep_np = t_rep.cpu().numpy()
    for g in keep.tolist():
        i, start = groups[g][0], groups[g][1]
        R = R_rep[g]
        mets = {k: float(v[g]) for k, v in m_rep.items()}
        T = t_rep_np[g] - R @ su.centroids[i]
        placements.append(Placement(
            rotation=R, translation=T, centre=R @ su.centroids[i] + T, hits=int(hits[g]),
            score=mets[params.rank_by], metrics=mets, structure_index=i,
            structure_name=su.structs[i].name, rank=0,
            iteration=int(se.rec["iteration"][se.best_k[start]]), start=start % su.per,
            refined=bool(refined[g])))
    placements.sort(key=lambda p: -p.score)
    counters = [0] * len(su.structs)
    for p in placements:
        counters[p.structure_index] += 1
        p.rank = counters[p.structure_index]
    return placements


def fit(target, structures, resolution: float, threshold: float | None = None,
        params: FitParams | None = None, progress: bool = False, check: bool = True,
        **overrides) -> FitResult:
    """Fit one or more structures into a map.

    Args:
        target: DensityMap or path of an MRC/CCP4 map.
        structures: Structure objects or paths (PDB/mmCIF), fitted together in one batch;
            or one map (a DensityMap or an MRC/CCP4 path), fitted through its Gaussian
            mixture (:mod:`difffit.workflows.mapfit`; keywords ``source_threshold``,
            ``n_gaussians``, ``gmm_iters``); ``result.source_map`` and ``result.mixture``
            are then set.
        resolution: map resolution in Angstrom (simulated maps for the metrics).
        threshold: contour level in map units; None uses
            :func:`difffit.preprocess.default_threshold` (mean + 1 standard deviation).
        params: FitParams; ``overrides`` replace single fields (e.g. ``n_iters=100``).
        progress: show a progress bar.
        check: plausibility checks (:mod:`difffit.checks`) before and after the search:
            errors raise, warnings are :class:`difffit.DifffitWarning`.

    Returns:
        FitResult with the ranked placements of every structure.
    """
    t_start = time.perf_counter()
    source = None
    if is_map_source(structures):  # a map to place: through its Gaussian mixture
        opts = {k: overrides.pop(k) for k in MAP_SOURCE_OPTIONS if k in overrides}
        pseudo, src_map, mixture = map_as_structure(structures, check_resolution(resolution),
                                                    **opts)
        source, structures = (src_map, mixture), [pseudo]
    (params,) = resolve(overrides, (FitParams, params))
    dmap = as_map(target)
    structs, notes = _fitted_atoms(as_structures(structures), params)
    resolution = check_resolution(resolution)
    threshold = check_threshold(threshold, dmap)
    check_paths(params)
    simulator_for(params)   # a missing or foreign checkpoint stops here, before the search
    # A regional fit searches (and measures) a cut-out of the map; the result keeps the
    # map. Cut first: a mask on another grid is refused before any other check or work.
    t0 = time.perf_counter()
    search_map = restrict_map(dmap, params, structs, threshold)
    t_cut = time.perf_counter() - t0
    if check:
        report(before_search(dmap, structs, resolution, threshold, params,
                             extra_levels_bound(structs, params, dmap.voxel_size)))
    timings = {}
    t0 = time.perf_counter() - t_cut
    su = _setup(search_map, structs, params, resolution, threshold)
    if describe(params):
        notes.append(describe(params))
    timings["preprocess"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    se = _search(su, progress)
    timings["optimise"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cl = _cluster(su, se)
    timings["cluster"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    placements = _refine_and_rank(su, se, cl)
    placements, ambiguous = _copies_and_significance(structs, placements, params)
    timings["refine"] = time.perf_counter() - t0
    if check:
        # The background is the first round: focused restarts crowd the best poses and
        # would raise the median the best is measured against.
        first = first_round(su.mol_idx, params)
        report(after_search(placements, structs, cl.m_all["cam"][first], su.mol_idx[first],
                            cl.metrics, su.pyr, params.seed))
    timings["total"] = time.perf_counter() - t_start
    traj = {k: v.cpu().numpy() for k, v in se.rec.items()}
    traj["mol_idx"] = su.mol_idx.cpu().numpy()
    # The result records the coarse steps used (None means "by the rule": say which).
    used = replace(params, coarse_iters=coarse_steps(params))
    result = FitResult(placements=placements, structures=structs, map=dmap, params=used,
                       resolution=resolution, threshold=su.threshold, timings=timings,
                       trajectory=traj, ambiguous=ambiguous, notes=notes)
    if source is not None:
        result.source_map, result.mixture = source
        notes.append(f"{structs[0].name}: a map, placed through its mixture of "
                     f"{len(source[1])} Gaussians (correlation with the map "
                     f"{source[1].info['correlation']:.3f})")
    return result


def _fitted_atoms(structs: list[Structure], params: FitParams) -> tuple[list[Structure], list[str]]:
    """The structures with ``min_plddt`` applied to their fitted atoms, and notes on
    predicted models (their pLDDT, in the B-factor column, says which parts to trust)."""
    notes, out = [], []
    for s in structs:
        why = alphafold_evidence(s)
        if params.min_plddt is not None:
            trimmed = with_min_plddt(s, params.min_plddt)
            notes.append(f"{s.name}: fitting the {trimmed.n_fit_atoms} of {s.n_fit_atoms} fitted "
                         f"atoms with pLDDT (B-factor) >= {params.min_plddt:g}; written models "
                         f"keep every atom")
            s = trimmed
        elif why:
            notes.append(f"{s.name} looks like an AlphaFold model ({why}); low-confidence "
                         f"parts can mislead the fit: consider {opt('min_plddt', 70)}")
        out.append(s)
    return out, notes


def _copies_and_significance(structs: list[Structure], placements: list[Placement],
                             params: FitParams) -> tuple[list[Placement], dict[str, str]]:
    """Rank each structure's distinct copies first (``copies``), give every placement its
    z-score and flag the structures whose answer is not clearly separated
    (:func:`difffit.copies.significance`)."""
    ambiguous, out = {}, []
    for i, s in enumerate(structs):
        ps = [p for p in placements if p.structure_index == i]  # best score first
        if not ps:
            continue
        trace = s.coords[trace_mask(s)]
        poses = [(p.rotation, p.translation) for p in ps]
        n_copies = 1
        if params.copies is not None:
            first = select_copies(trace, poses, [p.score for p in ps], params.copies)
            for k, j in enumerate(first):
                ps[j].copy = k + 1
            ps = [ps[j] for j in first] + [p for j, p in enumerate(ps) if j not in set(first)]
            n_copies = max(len(first), 1)
        z, why = significance([p.score for p in ps], n_copies)
        for p, zp, r in zip(ps, z, range(1, len(ps) + 1)):
            p.zscore, p.rank = float(zp), r
        if why and params.copies is None and len(ps) > 1 and \
                len(select_copies(trace, poses[:2], [1.0, 1.0], 2)) == 2:
            why += (f"; the runner-up does not overlap the best: the map may hold several "
                    f"copies ({opt('copies', 2)} ranks them first)")
        if why:
            ambiguous[s.name] = why
        out += ps
    out.sort(key=lambda p: (p.rank, -p.score))
    return out, ambiguous


def _refine_selection(g_mol: Tensor, pre_score: Tensor, params: FitParams) -> Tensor:
    """[G] bool: the clusters to refine, the ``refine_top`` best of each structure.

    Args:
        g_mol: [G] structure index of each cluster.
        pre_score: [G] ranking metric of each cluster's representative before refinement.
    """
    chosen = torch.zeros(g_mol.numel(), dtype=torch.bool)
    if not params.refine:
        return chosen
    for i in g_mol.unique().tolist():
        idx = torch.nonzero(g_mol == i).flatten()
        order = torch.argsort(-pre_score[idx].double().nan_to_num(-math.inf), stable=True)
        n = len(idx) if params.refine_top is None else params.refine_top
        chosen[idx[order[:n]]] = True
    return chosen


def _exact_selection(g_mol: Tensor, keep: Tensor, refined: Tensor, score: Tensor,
                     params: FitParams) -> Tensor:
    """Indices of the clusters whose metrics are computed exactly: the ``exact_top`` best
    refined ones of each structure that survived the merge.

    Args:
        g_mol: [G] structure of each cluster; keep: indices kept after merging;
            refined: [G] bool; score: [G] ranking metric.
    """
    kept = torch.zeros(g_mol.numel(), dtype=torch.bool)
    kept[keep] = True
    out = []
    for i in g_mol.unique().tolist():
        idx = torch.nonzero((g_mol == i) & kept & refined).flatten()
        order = torch.argsort(-score[idx].double().nan_to_num(-math.inf), stable=True)
        out.append(idx[order[: params.exact_top]])
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


def _merge_refined(g_mol: Tensor, R: Tensor, t: Tensor, score: Tensor, hits: Tensor,
                   refined: Tensor, params: FitParams) -> tuple[Tensor, Tensor]:
    """Merge clusters whose refined poses fall within the clustering tolerances.

    Refinement can carry two neighbouring clusters to the same optimum; they are one
    placement, whose hits are the sum. Greedy per structure, best refined score first.

    Args:
        g_mol: [G] structure of each cluster; R: [G, 3, 3], t: [G, 3] refined poses
            (centred frame); score: [G] ranking metric; hits: [G]; refined: [G] bool.

    Returns:
        (indices of the clusters kept, [G] hits with merged clusters' hits added).
    """
    hits = hits.clone()
    merged = torch.zeros(g_mol.numel(), dtype=torch.bool)
    for i in g_mol.unique().tolist():
        idx = torch.nonzero((g_mol == i) & refined).flatten()
        if len(idx) < 2:
            continue
        cl = cluster_poses(t[idx].double(), R[idx].double(), score[idx].double(),
                           params.shift_tol, params.angle_tol)
        for k in range(len(cl)):
            members = idx[cl.labels == k]
            rep = idx[cl.representative[k]]
            hits[rep] = hits[members].sum()
            merged[members[members != rep]] = True
    return torch.nonzero(~merged).flatten(), hits
