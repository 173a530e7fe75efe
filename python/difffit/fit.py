"""Fitting structures into a map: the DiffFit search, clustering, refinement and ranking.

Pipeline (docs: ../shared/docs/method.md sections 3-8):

1. Preprocess the target into a multi-resolution, negative-space pyramid; its levels are
   summed once (fixed weights), so every iteration samples a single channel.
2. Starts: ``n_rotations`` uniform rotations x ``n_positions`` enveloped positions for
   each structure; all structures go through the ragged kernel in one batch (chunked
   when the batch would exceed ``max_points_per_batch`` atom samples).
3. Adam on (quaternion, translation) of every start, the quaternion renormalised after
   every step; pose and score recorded together every ``record_every`` iterations.
4. Each start's best recorded pose; metrics for all of them; greedy clustering per
   structure (3 A / 6 degrees); the representative of each cluster is refined locally
   against the unsmoothed map (maximising the mean map value at all atoms, like ChimeraX
   ``fitmap`` on atoms) and ranked by ``rank_by``.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from . import ops
from .cluster import cluster_poses
from .errors import DifffitInputError
from .io import DensityMap, Structure, read_map, read_structure
from .preprocess import build_pyramid, default_threshold, envelope_positions
from .rotations import quat_to_matrix, uniform_rotations
from .simulate import molmap_points, splat_atoms

METRICS = ("correlation", "cam", "overlap", "atom_correlation", "atom_cam", "atom_overlap",
           "inside_fraction", "mean_density", "pyramid_score")


@dataclass
class FitParams:
    """Every knob of a fit; the defaults follow the paper's protocol (1000 starts, 200 steps)."""

    n_rotations: int = 100          # rotations per start position (uniform on SO(3))
    n_positions: int = 10           # enveloped start positions per structure
    n_iters: int = 200              # Adam steps
    lr_quat: float = 0.01
    lr_trans: float | None = None   # Angstrom per step; None -> 1 % of the mean box edge
    record_every: int = 10
    n_levels: int = 5               # pyramid levels
    smooth_sigma: float = 1.0       # voxels, per smoothing step
    negative: float = 0.5           # negative-space constant
    dust_min_size: int = 100        # voxels; smaller components are removed
    shift_tol: float = 3.0          # Angstrom, clustering
    angle_tol: float = 6.0          # degrees, clustering
    seed: int = 0
    refine: bool = True
    refine_iters: int = 60
    refine_top: int | None = 32     # clusters refined per structure (best first); None: all
    rank_by: str = "cam"   # correlation about the mean: robust to flat or clamped regions
    device: str = "cpu"
    max_points_per_batch: int = 4_000_000
    min_inside_fraction: float = 0.0

    def __post_init__(self):
        if self.rank_by not in METRICS:
            raise DifffitInputError(f"rank_by must be one of {', '.join(METRICS)}, got {self.rank_by!r}")
        for name in ("n_rotations", "n_positions", "n_iters", "record_every", "n_levels"):
            if int(getattr(self, name)) < 1:
                raise DifffitInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.refine_top is not None and int(self.refine_top) < 1:
            raise DifffitInputError(f"refine_top must be >= 1 or None, got {self.refine_top}")


@dataclass
class Placement:
    """One ranked cluster: a placement of one structure."""

    structure_index: int
    structure_name: str
    rank: int                  # 1-based, within its structure
    rotation: np.ndarray       # [3, 3] on the original coordinates: x -> R x + t
    translation: np.ndarray    # [3]
    hits: int                  # cluster size
    score: float               # metrics[rank_by]
    metrics: dict[str, float]
    iteration: int             # recorded iteration of the representative
    start: int                 # index of the representative's start
    refined: bool

    def moved(self, structure: Structure) -> Structure:
        """The structure moved into this placement."""
        return structure.transformed(self.rotation, self.translation)


@dataclass
class FitResult:
    placements: list[Placement]
    structures: list[Structure]
    map: DensityMap
    params: FitParams
    resolution: float
    threshold: float
    timings: dict[str, float] = field(default_factory=dict)
    trajectory: dict[str, np.ndarray] = field(default_factory=dict)

    def _index(self, key: int | str) -> int:
        if isinstance(key, str):
            names = [s.name for s in self.structures]
            if key not in names:
                raise KeyError(f"no structure named {key!r}; have {names}")
            return names.index(key)
        return int(key)

    def for_structure(self, key: int | str) -> list[Placement]:
        """Placements of one structure (index or name), best first."""
        i = self._index(key)
        return sorted((p for p in self.placements if p.structure_index == i), key=lambda p: p.rank)

    def best(self, key: int | str) -> Placement:
        found = self.for_structure(key)
        if not found:
            raise KeyError(f"structure {key!r} has no placement")
        return found[0]

    def rows(self) -> list[dict]:
        """One flat dict per placement (for CSV / JSON)."""
        out = []
        for p in self.placements:
            s = self.structures[p.structure_index]
            centre = p.rotation @ s.centroid + p.translation
            row = {"structure": p.structure_name, "rank": p.rank, "hits": p.hits,
                   "score": p.score, **p.metrics}
            row.update({f"r{i + 1}{j + 1}": float(p.rotation[i, j]) for i in range(3) for j in range(3)})
            row.update({"tx": float(p.translation[0]), "ty": float(p.translation[1]),
                        "tz": float(p.translation[2]), "cx": float(centre[0]),
                        "cy": float(centre[1]), "cz": float(centre[2]),
                        "iteration": p.iteration, "start": p.start, "refined": p.refined})
            out.append(row)
        return out


# ----------------------------------------------------------------------------------------


@dataclass
class _Batch:
    """Ragged batch of centred structures on one device."""

    points: Tensor     # [A, 3] centred fit atoms
    offsets: Tensor    # [M + 1]


def _ragged(arrays: Sequence[np.ndarray], device, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])])
    pts = torch.from_numpy(np.concatenate(arrays, 0)).to(device=device, dtype=dtype).contiguous()
    return pts, torch.from_numpy(offsets.astype(np.int64)).to(device)


class _Adam:
    """Adam (as torch.optim.Adam, default betas and eps) on one [P, k] tensor, in place.

    The score op returns its analytic gradients directly, so the search needs neither
    autograd nor an optimizer object: a few fused tensor operations per step.
    """

    def __init__(self, param: Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.p, self.lr, self.b1, self.b2, self.eps = param, lr, betas[0], betas[1], eps
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)
        self.t = 0

    def step(self, grad: Tensor) -> None:
        """One step along -grad (a descent step on the loss whose gradient is ``grad``)."""
        self.t += 1
        self.m.lerp_(grad, 1 - self.b1)
        self.v.mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        # sqrt(v_hat) as v_hat * rsqrt(v_hat): torch's CPU sqrt_ splits even 4000
        # elements over threads, which costs milliseconds a step when another process
        # holds a core. v_hat is clamped to 1e-30 (far below eps^2, so the step is the
        # same) to keep it out of the slow denormal range.
        vh = (self.v / c2).clamp_min_(1e-30)
        denom = vh.mul_(vh.rsqrt()).add_(self.eps)
        self.p.addcdiv_(self.m, denom, value=-self.lr / c1)


def _optimise(volume: Tensor, origin, voxel, batch: _Batch, quat0: Tensor, trans0: Tensor,
              mol_idx: Tensor, params: FitParams, lr_trans: float, progress) -> dict[str, Tensor]:
    """Adam on all starts; returns recorded quat [K,S,4], trans [K,S,3], score [K,S]."""
    ones = torch.ones(1, dtype=volume.dtype, device=volume.device)
    q, t = quat0.clone(), trans0.clone()
    opt_q, opt_t = _Adam(q, params.lr_quat), _Adam(t, lr_trans)
    rec_q, rec_t, rec_s, rec_i = [], [], [], []
    for it in range(params.n_iters + 1):
        score, gq, gt = ops.score_with_grad(volume, ones, origin, voxel, batch.points,
                                            batch.offsets, q, t, mol_idx, validate=False)
        # Record the pose together with the score computed at that very pose.
        if it % params.record_every == 0 or it == params.n_iters:
            rec_q.append(q.clone())
            rec_t.append(t.clone())
            rec_s.append(score)
            rec_i.append(it)
        if it == params.n_iters:
            break
        opt_q.step(gq.neg_())  # maximise the score
        opt_t.step(gt.neg_())
        q /= q.norm(dim=1, keepdim=True)
        if progress is not None:
            progress.update(1)
    return {"quat": torch.stack(rec_q), "trans": torch.stack(rec_t), "score": torch.stack(rec_s),
            "iteration": torch.tensor(rec_i)}


def _refine(volume: Tensor, origin, voxel, points: Tensor, offsets: Tensor, quat: Tensor,
            trans: Tensor, mol_idx: Tensor, iters: int, step: float) -> tuple[Tensor, Tensor]:
    """Local refinement: Adam with small steps on the mean map value at all atoms."""
    ones = torch.ones(1, dtype=volume.dtype, device=volume.device)
    q, t = quat.clone(), trans.clone()
    opt_q, opt_t = _Adam(q, step * 0.01), _Adam(t, step)
    for k in range(iters):
        # Steps shrink over the run (cosine schedule) so the pose settles at the optimum.
        scale = 0.5 * (1 + math.cos(math.pi * k / max(iters, 1)))
        opt_q.lr, opt_t.lr = step * 0.01 * scale, step * scale
        _, gq, gt = ops.score_with_grad(volume, ones, origin, voxel, points, offsets, q, t,
                                        mol_idx, validate=False)
        opt_q.step(gq.neg_())
        opt_t.step(gt.neg_())
        q /= q.norm(dim=1, keepdim=True)
    return q, t


class _Metrics:
    """Fit metrics of placements (centred-frame quat, trans) of the structures."""

    def __init__(self, structures: Sequence[Structure], centroids: np.ndarray, target: DensityMap,
                 level0: Tensor, pyr_origin, pyr_voxel, threshold: float, resolution: float,
                 device):
        self.device = device
        dt = torch.float64
        raw = torch.from_numpy(np.ascontiguousarray(target.data, dtype=np.float64)).to(device)
        self.raw = raw.unsqueeze(-1).contiguous()
        self.raw_frame = (target.origin.tolist(), target.voxel_size.tolist())
        self.level0 = level0.to(device=device, dtype=dt).unsqueeze(-1).contiguous()
        self.level0_frame = (list(pyr_origin), list(pyr_voxel))
        self.threshold = threshold
        # ChimeraX-style: simulated-map grid points above a low contour, centred.
        sim_pts, sim_val, atom_pts, atom_val = [], [], [], []
        for s, c in zip(structures, centroids):
            heavy = s.atomic_numbers > 1
            xyz, z = s.coords[heavy], s.atomic_numbers[heavy]
            p, v = molmap_points(xyz, z, resolution)
            sim_pts.append(p - c)
            sim_val.append(v)
            # Atom-style: the structure's own simulated density at each of its atoms.
            atom_pts.append(xyz - c)
            atom_val.append(_sample_own(xyz, z, resolution))
        self.sim_pts, self.sim_off = _ragged(sim_pts, device, dt)
        self.sim_val = torch.from_numpy(np.concatenate(sim_val)).to(device)
        self.atom_pts, self.atom_off = _ragged(atom_pts, device, dt)
        self.atom_val = torch.from_numpy(np.concatenate(atom_val)).to(device)

    def __call__(self, quat: Tensor, trans: Tensor, mol_idx: Tensor) -> dict[str, Tensor]:
        q, t, m = quat.to(self.device, torch.float64), trans.to(self.device, torch.float64), mol_idx.to(self.device)
        out = {}
        st = ops.point_stats(self.raw, *self.raw_frame, self.sim_pts, self.sim_val, self.sim_off,
                             q, t, m, threshold=self.threshold, validate=False)
        n_sim = (self.sim_off[1:] - self.sim_off[:-1])[m].to(st.dtype)
        out["overlap"], out["correlation"], out["cam"] = _correlations(st, n_sim)
        st = ops.point_stats(self.level0, *self.level0_frame, self.atom_pts, self.atom_val,
                             self.atom_off, q, t, m, threshold=0.0, validate=False)
        n = (self.atom_off[1:] - self.atom_off[:-1])[m].to(st.dtype)
        ov, out["atom_correlation"], out["atom_cam"] = _correlations(st, n)
        out["atom_overlap"] = ov / n
        out["mean_density"] = st[:, 2] / n
        st = ops.point_stats(self.raw, *self.raw_frame, self.atom_pts, self.atom_val,
                             self.atom_off, q, t, m, threshold=self.threshold, validate=False)
        out["inside_fraction"] = st[:, 5] / n
        return out


def _correlations(st: Tensor, n: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(overlap, correlation, correlation about the mean) from point_stats sums.

    Args:
        st: [P, 6] sums (w, w^2, d, d^2, w d, inside) over each placement's n points.
        n: [P] number of points.
    """
    sw, sww, sd, sdd, swd, _ = st.unbind(1)
    corr = swd / torch.sqrt(sww * sdd).clamp_min(1e-30)
    cov = n * swd - sw * sd
    var = (n * sww - sw * sw).clamp_min(0) * (n * sdd - sd * sd).clamp_min(0)
    cam = cov / torch.sqrt(var).clamp_min(1e-30)
    return swd, corr, cam


def _sample_own(xyz: np.ndarray, z: np.ndarray, resolution: float) -> np.ndarray:
    """Simulated density of a structure at its own atoms (W_i of the atom metrics)."""
    from scipy.ndimage import map_coordinates

    step = resolution / 3.0
    lo = xyz.min(0) - 3 * 0.225 * resolution
    n = np.ceil((xyz.max(0) + 3 * 0.225 * resolution - lo) / step).astype(int) + 1
    grid = splat_atoms(xyz, z, resolution, lo, (step, step, step), (n[2], n[1], n[0]))
    idx = ((xyz - lo) / step)[:, ::-1].T  # (z, y, x) fractional indices
    return map_coordinates(grid.astype(np.float64), idx, order=1, mode="nearest")


def _as_structures(structures) -> list[Structure]:
    if isinstance(structures, (Structure, str, Path)):
        structures = [structures]
    out = [s if isinstance(s, Structure) else read_structure(s) for s in structures]
    if not out:
        raise DifffitInputError("no structure to fit")
    return out


def fit(target, structures, resolution: float, threshold: float | None = None,
        params: FitParams | None = None, progress: bool = False, **overrides) -> FitResult:
    """Fit one or more structures into a map.

    Args:
        target: DensityMap or path of an MRC/CCP4 map.
        structures: Structure objects or paths (PDB/mmCIF), fitted together in one batch.
        resolution: map resolution in Angstrom (simulated maps for the metrics).
        threshold: contour level in map units; None uses
            :func:`difffit.preprocess.default_threshold` (mean + 1 standard deviation).
        params: FitParams; ``overrides`` replace single fields (e.g. ``n_iters=100``).
        progress: show a progress bar.

    Returns:
        FitResult with the ranked placements of every structure.
    """
    t_start = time.perf_counter()
    params = FitParams(**{**(asdict(params) if params else {}), **overrides})
    dmap = target if isinstance(target, DensityMap) else read_map(target)
    structs = _as_structures(structures)
    if not resolution or resolution <= 0:
        raise DifffitInputError(f"resolution must be a positive number of Angstrom, got {resolution}")
    device = torch.device(params.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DifffitInputError("device 'cuda' asked for, but torch sees no CUDA GPU; use device='cpu'")
    thr = float(default_threshold(dmap.data) if threshold is None else threshold)
    timings = {}

    # 1. Target preprocessing.
    t0 = time.perf_counter()
    pyr = build_pyramid(dmap.data, dmap.origin, dmap.voxel_size, thr, n_levels=params.n_levels,
                        sigma=params.smooth_sigma, negative=params.negative,
                        dust_min_size=params.dust_min_size)
    volume = pyr.levels.sum(-1, keepdim=True).to(device).contiguous()  # fixed weights: sum once
    origin, voxel = pyr.origin.tolist(), pyr.voxel_size.tolist()
    box = np.array(pyr.shape[::-1]) * pyr.voxel_size
    lr_trans = params.lr_trans if params.lr_trans else 0.01 * float(box.mean())
    timings["preprocess"] = time.perf_counter() - t0

    # 2. Starts: every structure gets the same rotations x positions.
    centroids = np.stack([s.centroid for s in structs])
    pts, off = _ragged([s.fit_coords - c for s, c in zip(structs, centroids)], device)
    batch = _Batch(pts, off)
    ops.validate_ragged(pts, off, torch.zeros(0, dtype=torch.int64))
    rots = uniform_rotations(params.n_rotations, seed=params.seed)            # [R, 4]
    pos = envelope_positions(pyr, params.n_positions, seed=params.seed)       # [N, 3]
    per = params.n_rotations * params.n_positions
    M = len(structs)
    quat0 = rots.repeat(params.n_positions, 1).repeat(M, 1)                   # [M*N*R, 4]
    trans0 = pos.repeat_interleave(params.n_rotations, 0).repeat(M, 1)        # [M*N*R, 3]
    mol_idx = torch.arange(M).repeat_interleave(per)
    quat0, trans0 = quat0.to(device, torch.float32), trans0.to(device, torch.float32)
    mol_idx = mol_idx.to(device)

    # 3. Optimise, in chunks of starts that keep each batch under max_points_per_batch.
    t0 = time.perf_counter()
    n_atoms = (off[1:] - off[:-1]).cpu()[mol_idx.cpu()]
    chunks = _chunks(n_atoms, params.max_points_per_batch)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=params.n_iters * len(chunks), desc="fitting", unit="step")
    recs = [_optimise(volume, origin, voxel, batch, quat0[a:b], trans0[a:b], mol_idx[a:b],
                      params, lr_trans, bar) for a, b in chunks]
    if bar is not None:
        bar.close()
    rec = {k: torch.cat([r[k] for r in recs], 1) for k in ("quat", "trans", "score")}
    rec["iteration"] = recs[0]["iteration"]
    timings["optimise"] = time.perf_counter() - t0

    # 4. Best recorded pose of each start, metrics, clustering per structure.
    t0 = time.perf_counter()
    best_k = rec["score"].argmax(0)                                           # [S]
    S = mol_idx.numel()
    ar = torch.arange(S, device=best_k.device)
    q_best, t_best = rec["quat"][best_k, ar], rec["trans"][best_k, ar]
    metrics = _Metrics(structs, centroids, dmap, pyr.levels[..., 0], origin, voxel, thr,
                       resolution, device)
    m_all = metrics(q_best, t_best, mol_idx)
    m_all["pyramid_score"] = rec["score"][best_k, ar].double()
    rank_score = m_all[params.rank_by].cpu()
    valid = (m_all["inside_fraction"] >= params.min_inside_fraction).cpu()
    R_best = quat_to_matrix(q_best.double().cpu())
    groups = []
    for i in range(M):
        sel = torch.nonzero(mol_idx.cpu() == i).flatten()
        cl = cluster_poses(t_best[sel].double().cpu(), R_best[sel], rank_score[sel],
                           params.shift_tol, params.angle_tol, valid[sel])
        for k in range(len(cl)):
            groups.append((i, int(sel[cl.representative[k]]), int(cl.size[k])))
    timings["cluster"] = time.perf_counter() - t0

    # 5. Refine the best clusters of each structure against the unsmoothed map, merge
    #    clusters whose refined poses coincide, then rank.
    t0 = time.perf_counter()
    reps = torch.tensor([g[1] for g in groups], dtype=torch.int64)
    g_mol = torch.tensor([g[0] for g in groups], dtype=torch.int64)
    hits = torch.tensor([g[2] for g in groups], dtype=torch.int64)
    q_rep, t_rep = q_best[reps.to(device)].double(), t_best[reps.to(device)].double()
    m_rep_idx = mol_idx[reps.to(device)]
    refined = _refine_selection(g_mol, rank_score[reps], params)                 # [G] bool
    sel = torch.nonzero(refined).flatten()
    if len(sel):
        raw = pyr_raw_volume(dmap, device)
        all_pts, all_off = _ragged([s.coords[s.atomic_numbers > 1] - c for s, c in zip(structs, centroids)],
                                   device, torch.float64)
        step = 0.1 * float(dmap.voxel_size.mean())
        sd = sel.to(device)
        q_rep[sd], t_rep[sd] = _refine(raw, dmap.origin.tolist(), dmap.voxel_size.tolist(), all_pts,
                                       all_off, q_rep[sd], t_rep[sd], m_rep_idx[sd],
                                       params.refine_iters, step)
    # Metrics at the refined poses; unrefined clusters keep those of their best pose.
    m_rep = {k: v[reps.to(v.device)].clone() for k, v in m_all.items()}
    if len(sel):
        sd = sel.to(device)
        m_sel = metrics(q_rep[sd], t_rep[sd], m_rep_idx[sd])
        m_sel["pyramid_score"] = ops.score(volume.double(), torch.ones(1, dtype=torch.float64, device=device),
                                           origin, voxel, pts.double(), off, q_rep[sd], t_rep[sd],
                                           m_rep_idx[sd], validate=False)
        for k, v in m_sel.items():
            m_rep[k][sel.to(m_rep[k].device)] = v.to(m_rep[k].dtype)
    R_rep = quat_to_matrix(q_rep.cpu())                                         # [G, 3, 3]
    keep, hits = _merge_refined(g_mol, R_rep, t_rep.cpu(),
                                m_rep[params.rank_by].cpu(), hits, refined, params)
    timings["refine"] = time.perf_counter() - t0

    placements = []
    R_rep = R_rep.numpy()
    t_rep_np = t_rep.cpu().numpy()
    for g in keep.tolist():
        i, start = groups[g][0], groups[g][1]
        R = R_rep[g]
        mets = {k: float(v[g]) for k, v in m_rep.items()}
        placements.append(Placement(
            structure_index=i, structure_name=structs[i].name, rank=0,
            rotation=R, translation=t_rep_np[g] - R @ centroids[i], hits=int(hits[g]),
            score=mets[params.rank_by], metrics=mets,
            iteration=int(rec["iteration"][best_k[start]]), start=start % per,
            refined=bool(refined[g])))
    placements.sort(key=lambda p: -p.score)
    counters = [0] * M
    for p in placements:
        counters[p.structure_index] += 1
        p.rank = counters[p.structure_index]
    timings["total"] = time.perf_counter() - t_start
    traj = {k: v.cpu().numpy() for k, v in rec.items()}
    traj["mol_idx"] = mol_idx.cpu().numpy()
    return FitResult(placements=placements, structures=structs, map=dmap, params=params,
                     resolution=float(resolution), threshold=thr, timings=timings, trajectory=traj)


def pyr_raw_volume(dmap: DensityMap, device) -> Tensor:
    """The unsmoothed map as a one-channel float64 volume, scaled to unit maximum."""
    data = np.asarray(dmap.data, dtype=np.float64)
    scale = float(np.abs(data).max()) or 1.0
    return torch.from_numpy(data / scale).to(device).unsqueeze(-1).contiguous()


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


def _chunks(n_atoms: Tensor, limit: int) -> list[tuple[int, int]]:
    """Consecutive start ranges whose summed atom counts stay under ``limit``."""
    cum = torch.cumsum(n_atoms, 0)
    out, a, base = [], 0, 0
    S = n_atoms.numel()
    while a < S:
        b = int(torch.searchsorted(cum, base + limit, right=True))
        b = max(b, a + 1)
        out.append((a, min(b, S)))
        base = int(cum[min(b, S) - 1])
        a = b
    return out
