"""The gradient search: Adam on every start's quaternion and translation at once.

docs/method.md sections 4-5. The score op returns its analytic gradients with the score,
so neither autograd nor torch.optim is needed: a few fused tensor operations per step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from . import ops
from .params import FitParams

__all__ = ["Batch", "Adam", "optimise", "refine", "chunks"]


@dataclass
class Batch:
    """Ragged batch of centred structures on one device."""

    points: Tensor     # [A, 3] centred fit atoms
    offsets: Tensor    # [M + 1]


class Adam:
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


def optimise(volume: Tensor, origin, voxel, batch: Batch, quat0: Tensor, trans0: Tensor,
              mol_idx: Tensor, params: FitParams, lr_trans: float, progress,
              n_iters: int | None = None) -> dict[str, Tensor]:
    """Adam on all starts for ``n_iters`` steps (default ``params.n_iters``); returns
    recorded quat [K,S,4], trans [K,S,3], score [K,S]."""
    n_iters = params.n_iters if n_iters is None else n_iters
    ones = torch.ones(1, dtype=volume.dtype, device=volume.device)
    q, t = quat0.clone(), trans0.clone()
    opt_q, opt_t = Adam(q, params.lr_quat), Adam(t, lr_trans)
    rec_q, rec_t, rec_s, rec_i = [], [], [], []
    for it in range(n_iters + 1):
        score, gq, gt = ops.score_with_grad(volume, ones, origin, voxel, batch.points,
                                            batch.offsets, q, t, mol_idx, validate=False)
        # Record the pose together with the score computed at that very pose.
        if it % params.record_every == 0 or it == n_iters:
            rec_q.append(q.clone())
            rec_t.append(t.clone())
            rec_s.append(score)
            rec_i.append(it)
        if it == n_iters:
            break
        opt_q.step(gq.neg_())  # maximise the score
        opt_t.step(gt.neg_())
        q /= q.norm(dim=1, keepdim=True)
        if progress is not None:
            progress.update(1)
    return {"quat": torch.stack(rec_q), "trans": torch.stack(rec_t), "score": torch.stack(rec_s),
            "iteration": torch.tensor(rec_i)}


def raw_volume(dmap, device) -> Tensor:
    """The unsmoothed map (a DensityMap) as a one-channel float64 volume [D, H, W, 1],
    scaled to unit maximum."""
    data = np.asarray(dmap.data, dtype=np.float64)
    scale = float(np.abs(data).max()) or 1.0
    return torch.from_numpy(data / scale).to(device).unsqueeze(-1).contiguous()


def refine_against_map(dmap, structs, centroids: np.ndarray, quat: Tensor, trans: Tensor,
                       mol_idx: Tensor, iters: int, dtype=torch.float64) -> tuple[Tensor, Tensor]:
    """The final refinement of poses (quat [P, 4], trans [P, 3] of the centred frames,
    structure mol_idx [P]) against the unsmoothed map with every simulated heavy atom
    (what the fit's metrics see), steps of a tenth of a voxel; poses back in float64.

    ``dtype`` float64 for placements that are reported; float32 (about 3x quicker) where
    the pose only feeds an estimate: on a good fit the metric there differs by 1e-4 at
    most, on a poor one (a flat landscape) by up to 0.003."""
    from .metrics import ragged
    from .structures import simulation_mask

    device = quat.device
    pts, off = ragged([s.coords[simulation_mask(s) & (s.atomic_numbers > 1)] - c
                       for s, c in zip(structs, centroids)], device, dtype)
    step = 0.1 * float(np.mean(dmap.voxel_size))
    q, t = refine(raw_volume(dmap, device).to(dtype), dmap.origin.tolist(),
                  dmap.voxel_size.tolist(), pts, off, quat.to(dtype), trans.to(dtype), mol_idx,
                  iters, step)
    return q.double(), t.double()


def refine(volume: Tensor, origin, voxel, points: Tensor, offsets: Tensor, quat: Tensor,
            trans: Tensor, mol_idx: Tensor, iters: int, step: float) -> tuple[Tensor, Tensor]:
    """Local refinement: Adam with small steps on the mean map value at all atoms."""
    ones = torch.ones(1, dtype=volume.dtype, device=volume.device)
    q, t = quat.clone(), trans.clone()
    opt_q, opt_t = Adam(q, step * 0.01), Adam(t, step)
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


def chunks(n_atoms: Tensor, limit: int) -> list[tuple[int, int]]:
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
