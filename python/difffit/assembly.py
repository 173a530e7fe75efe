"""The differentiable joint objective of an assembly, and its optimiser.

An *assembly* is K units (a subunit structure each; copies of one structure are separate
units) placed together. A *configuration* gives every unit a pose (q, t): unit k's fitted
atoms x move to R(q)(x - c_k) + t (docs/method.md section 2). Many configurations are
optimised at once, each independently.

The joint score of a configuration (to maximise), per fitted atom of the assembly:

    J = (1 / sum_k N_k) sum_k N_k [ s_k  -  w mean_{i in trace(k)} occ_{-k}(y_i) ]

* s_k: unit k's map score, the mean over its N_k fitted atoms of the search volume (the
  summed negative-space pyramid, section 4) or, in the final refinement, of the raw map;
* the *claim penalty*: density claimed twice. Each structure has an occupancy map in its
  own centred frame, occ(x) = 1 - exp(-sum_j exp(-|x - y_j|^2 / (2 sigma^2))) over its
  trace atoms y_j (CA; P for nucleotides): about 0.85 inside a protein, 0 away from it.
  ``occ_{-k}(y)`` is the summed occupancy of every *other* unit at trace atom y of unit k;
  weighted by N_k as the map term, so a unit pushed wholly into its
  neighbour's density loses about ``w`` per atom, more than the map can pay (a volume
  value is at most the number of pyramid levels, typically 2-4 inside density);
* w: ``clash_weight``.

With a symmetry (:mod:`difffit.symmetry`) the K units are the asymmetric unit and every
configuration also holds the images g(R, t) = (G R, G (t - c) + c) of each unit: they are
scored and penalised like the units themselves, and the gradient reaches the asymmetric
unit's pose through the images.

The map score uses the fused op :func:`difffit.ops.score` (its autograd gives the analytic
gradients); the occupancy is sampled with ``grid_sample``. :func:`joint_score_reference`
is the same objective in plain PyTorch (``grid_sample`` for the map too), for the test.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import ops
from .metrics import ragged
from .rotations import matrix_to_quat, quat_multiply, quat_to_matrix
from .search import Adam
from .structures import Structure, trace_mask

__all__ = ["Assembly", "optimise_joint", "joint_score_reference", "poses_to_qt", "qt_to_pose",
           "MAX_TRACE"]

MAX_TRACE = 100       # trace atoms per structure for the claim penalty (evenly thinned)
OCC_SIGMA = 2.0       # Angstrom: occupancy Gaussian of each trace atom
OCC_STEP = 1.0        # Angstrom: occupancy grid spacing


@dataclass
class _Occupancy:
    grid: Tensor        # [1, 1, D, H, W] occupancy in the structure's centred frame
    lo: Tensor          # [3] x, y, z of voxel (0, 0, 0)
    hi: Tensor          # [3] x, y, z of the last voxel


def _occupancy(trace: np.ndarray, device, dtype) -> _Occupancy:
    """Occupancy grid of centred trace atoms [n, 3]."""
    pad = 4 * OCC_SIGMA
    lo = trace.min(0) - pad
    shape = np.ceil((trace.max(0) + pad - lo) / OCC_STEP).astype(int) + 1    # x, y, z
    # Sum of the trace atoms' Gaussians (truncated at 4 sigma, where they are < 4e-4).
    acc = ops.splat(torch.from_numpy(trace), torch.ones(len(trace), dtype=torch.float64),
                    OCC_SIGMA, 4.0, [int(shape[2]), int(shape[1]), int(shape[0])],
                    lo.tolist(), [OCC_STEP] * 3)
    occ = 1 - torch.exp(-acc)
    hi = lo + (shape - 1) * OCC_STEP
    return _Occupancy(occ[None, None].to(device, dtype), torch.from_numpy(lo).to(device, dtype),
                      torch.from_numpy(hi).to(device, dtype))


def _sample_occ(occ: _Occupancy, pts: Tensor) -> Tensor:
    """Occupancy at points [..., 3] of the structure's centred frame (0 outside its grid)."""
    shape = pts.shape[:-1]
    g = (2 * (pts - occ.lo) / (occ.hi - occ.lo) - 1).reshape(1, -1, 1, 1, 3)
    v = F.grid_sample(occ.grid, g, mode="bilinear", padding_mode="zeros", align_corners=True)
    return v.reshape(shape)


class Assembly:
    """The units of an assembly and everything the joint score needs on one device.

    Args:
        structs: the distinct structures (fitted atoms, trace atoms).
        unit_struct: [K] structure index of each unit.
        clash_weight: w of the claim penalty.
        sym_ops: [G, 3, 3] rotations of a symmetry (identity first), or None;
            sym_centre: [3] its centre.
        device, dtype: where and in what precision the score is computed.
    """

    def __init__(self, structs: list[Structure], unit_struct: list[int], clash_weight: float,
                 sym_ops: np.ndarray | None = None, sym_centre: np.ndarray | None = None,
                 device="cpu", dtype=torch.float32):
        self.structs, self.unit_struct = structs, list(unit_struct)
        self.device, self.dtype, self.clash_weight = torch.device(device), dtype, float(clash_weight)
        self.centroids = np.stack([s.centroid for s in structs])               # [M, 3]
        self.points, self.offsets = ragged([s.fit_coords - c for s, c in zip(structs, self.centroids)],
                                           self.device, dtype)
        self.n_fit = torch.tensor([s.n_fit_atoms for s in structs], dtype=dtype, device=self.device)
        traces, self.occ = [], []
        for s, c in zip(structs, self.centroids):
            tr = s.coords[trace_mask(s)] - c
            if len(tr) < 3:
                tr = s.fit_coords - c
            self.occ.append(_occupancy(tr, self.device, dtype))
            step = max(1, math.ceil(len(tr) / MAX_TRACE))
            traces.append(tr[::step])
        self.traces = [torch.from_numpy(t).to(self.device, dtype) for t in traces]
        self.n_trace = torch.tensor([len(t) for t in traces], dtype=dtype, device=self.device)
        G = np.eye(3)[None] if sym_ops is None else np.asarray(sym_ops, dtype=np.float64)
        self.sym_R = torch.from_numpy(G).to(self.device, dtype)                          # [G, 3, 3]
        self.sym_q = matrix_to_quat(torch.from_numpy(G)).to(self.device, dtype)          # [G, 4]
        self.sym_c = torch.zeros(3, dtype=dtype, device=self.device) if sym_centre is None else \
            torch.as_tensor(np.asarray(sym_centre, dtype=np.float64), dtype=dtype, device=self.device)
        self.n_images = G.shape[0]

    @property
    def K(self) -> int:
        return len(self.unit_struct)

    def images(self, q: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Poses of every unit's symmetry images: q [C, K, 4], t [C, K, 3] ->
        [C, G * K, 4], [C, G * K, 3], image (g, k) at g * K + k (g = 0: the units)."""
        if self.n_images == 1:
            return q, t
        C, K = q.shape[:2]
        qi = quat_multiply(self.sym_q[None, :, None].expand(C, -1, K, -1), q[:, None].expand(-1, self.n_images, -1, -1))
        ti = torch.einsum("gij,ckj->cgki", self.sym_R, t - self.sym_c) + self.sym_c
        return qi.reshape(C, -1, 4), ti.reshape(C, -1, 3)

    def image_struct(self) -> list[int]:
        return self.unit_struct * self.n_images

    def terms(self, volume: Tensor, origin, voxel, q: Tensor, t: Tensor) -> dict[str, Tensor]:
        """The joint score and its parts for C configurations.

        Args:
            volume: [D, H, W, 1] the map the units are scored against.
            q: [C, K, 4], t: [C, K, 3] the units' poses (centred-frame convention).

        Returns:
            dict: ``joint`` [C], ``unit_score`` [C, G*K] (s_k), ``claim`` [C, G*K] (summed
            occupancy of the others at each unit's trace atoms, per trace atom).
        """
        qi, ti = self.images(q, t)
        C, KG = qi.shape[:2]
        mol = torch.tensor(self.image_struct(), device=self.device).repeat(C)
        ones = torch.ones(1, dtype=volume.dtype, device=volume.device)
        s = ops.score(volume, ones, origin, voxel, self.points, self.offsets,
                      qi.reshape(-1, 4), ti.reshape(-1, 3), mol, validate=False).reshape(C, KG)
        claim = self._claims(qi, ti)
        return self._combine(s, claim)

    def _combine(self, s: Tensor, claim: Tensor) -> dict[str, Tensor]:
        n = self.n_fit[torch.tensor(self.image_struct(), device=self.device)]
        total = (s * n).sum(1) - self.clash_weight * (claim * n).sum(1)
        return {"joint": total / n.sum(), "unit_score": s, "claim": claim}

    def _claims(self, qi: Tensor, ti: Tensor) -> Tensor:
        """[C, G*K]: per unit, the mean over its trace atoms of the other units' summed
        occupancy there."""
        C, KG = qi.shape[:2]
        R = quat_to_matrix(qi / qi.norm(dim=-1, keepdim=True))                 # [C, KG, 3, 3]
        ist = self.image_struct()
        # World positions of every unit's trace atoms: [C, T, 3], owner [T].
        world, owner = [], []
        for k, m in enumerate(ist):
            world.append(torch.einsum("cij,nj->cni", R[:, k], self.traces[m]) + ti[:, k, None])
            owner.append(torch.full((len(self.traces[m]),), k, device=self.device))
        Wd = torch.cat(world, 1)
        own = torch.cat(owner)
        claim = torch.zeros(C, KG, dtype=Wd.dtype, device=self.device)
        occ_at = torch.zeros(C, Wd.shape[1], dtype=Wd.dtype, device=self.device)
        for k, m in enumerate(ist):
            # Everyone's trace atoms in unit k's frame, its occupancy there; its own masked.
            local = torch.einsum("cji,cnj->cni", R[:, k], Wd - ti[:, k, None])
            o = _sample_occ(self.occ[m], local) * (own != k)
            occ_at = occ_at + o
        for k in range(KG):
            claim[:, k] = occ_at[:, own == k].mean(1)
        return claim


def optimise_joint(asm: Assembly, volume: Tensor, origin, voxel, q0: Tensor, t0: Tensor,
                   iters: int, lr_quat: float, lr_trans: float) -> tuple[Tensor, Tensor]:
    """Adam on every configuration's unit poses, ascending the joint score; the steps
    shrink on a cosine schedule so each configuration settles.

    Args:
        q0: [C, K, 4], t0: [C, K, 3] starting poses.

    Returns:
        (q, t) after ``iters`` steps, the same shapes, detached.
    """
    q = q0.detach().clone().to(asm.device, asm.dtype)
    t = t0.detach().clone().to(asm.device, asm.dtype)
    # A step is many small tensor operations: on the CPU, waking torch's thread pool for
    # each costs more than the work (5x slower on 2 busy cores), so small problems run on
    # one thread.
    samples = q.shape[0] * asm.n_images * float(sum(asm.n_fit[m] for m in asm.unit_struct))
    threads = torch.get_num_threads()
    if asm.device.type == "cpu" and samples < 4e6:
        torch.set_num_threads(1)
    try:
        return _adam_joint(asm, volume, origin, voxel, q, t, iters, lr_quat, lr_trans)
    finally:
        torch.set_num_threads(threads)


def _adam_joint(asm, volume, origin, voxel, q, t, iters, lr_quat, lr_trans):
    opt_q, opt_t = Adam(q, lr_quat), Adam(t, lr_trans)
    for k in range(iters):
        scale = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / max(iters, 1)))
        opt_q.lr, opt_t.lr = lr_quat * scale, lr_trans * scale
        qg, tg = q.clone().requires_grad_(True), t.clone().requires_grad_(True)
        # Configurations are independent: the gradient of the sum is each one's own.
        asm.terms(volume, origin, voxel, qg, tg)["joint"].sum().backward()
        with torch.no_grad():
            opt_q.step(-qg.grad)
            opt_t.step(-tg.grad)
            q /= q.norm(dim=-1, keepdim=True)
    return q.detach(), t.detach()


def joint_score_reference(asm: Assembly, volume: Tensor, origin, voxel, q: Tensor, t: Tensor) -> Tensor:
    """[C] the joint score in plain PyTorch: the map term with ``grid_sample`` on the
    volume (align_corners, border clamping, as the op) instead of the fused op."""
    qi, ti = asm.images(q, t)
    C, KG = qi.shape[:2]
    R = quat_to_matrix(qi / qi.norm(dim=-1, keepdim=True))
    vol = volume[..., 0][None, None]                                       # [1, 1, D, H, W]
    D, H, W = volume.shape[:3]
    size = torch.tensor([W - 1, H - 1, D - 1], dtype=volume.dtype, device=volume.device)
    org = torch.as_tensor(origin, dtype=volume.dtype, device=volume.device)
    vs = torch.as_tensor(voxel, dtype=volume.dtype, device=volume.device)
    s = torch.zeros(C, KG, dtype=volume.dtype, device=volume.device)
    for k, m in enumerate(asm.image_struct()):
        x = asm.points[asm.offsets[m]:asm.offsets[m + 1]].to(volume.dtype)
        p = torch.einsum("cij,nj->cni", R[:, k].to(volume.dtype), x) + ti[:, k, None].to(volume.dtype)
        g = 2 * (p - org) / vs / size - 1
        v = F.grid_sample(vol, g.reshape(1, -1, 1, 1, 3), mode="bilinear",
                          padding_mode="border", align_corners=True)
        s[:, k] = v.reshape(C, -1).mean(1)
    return asm._combine(s.to(asm.dtype), asm._claims(qi, ti))["joint"]


def poses_to_qt(R: np.ndarray, T: np.ndarray, centroid: np.ndarray) -> tuple[Tensor, Tensor]:
    """File-frame placement (x -> R x + T) -> centred-frame (q [4], t [3]) of the ops."""
    q = matrix_to_quat(torch.from_numpy(np.asarray(R, dtype=np.float64))[None])[0]
    return q, torch.from_numpy(np.asarray(R, dtype=np.float64) @ centroid + T)


def qt_to_pose(q: Tensor, t: Tensor, centroid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centred-frame (q [4], t [3]) -> file-frame (R [3, 3], T [3])."""
    R = quat_to_matrix(q.double().cpu()[None] / q.double().norm())[0].numpy()
    return R, t.double().cpu().numpy() - R @ centroid
