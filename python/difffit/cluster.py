"""Greedy clustering of fitted placements (docs/method.md section 7).

The rule is ChimeraX ``fitmap``'s: visit the placements from best to worst score; each
joins the first existing cluster (in creation order) whose representative is within
``shift_tol`` Angstrom (distance between the molecule centres) *and* ``angle_tol_deg``
(angle of the relative rotation); otherwise it founds a new cluster and is its
representative. Because clusters are founded in score order, the representative is the
best-scoring member, and creation order is already the ranking by best score.

"Within" is inclusive: a distance exactly ``shift_tol`` or an angle exactly
``angle_tol_deg`` still joins. Symmetric molecules are not special-cased: placements
related by a symmetry of the molecule are different rotations and form different
clusters.

Vectorisation: placements are processed in blocks of the score order. A block is first
compared with all representatives that exist before it in one batched operation; only the
placements that match none of them can found clusters, and those are resolved among
themselves with one block-local compatibility matrix and a short Python loop. The result
is exactly the sequential greedy rule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .errors import DifffitInputError

__all__ = ["Clusters", "cluster_poses", "first_representatives"]

_BLOCK = 1024  # placements per block; bounds the [block, K] and [block, block] work arrays


@dataclass
class Clusters:
    """Result of :func:`cluster_poses`; clusters are numbered by rank (0 = best).

    Attributes:
        labels: ``[P]`` int64 cluster id per input placement, ``-1`` for placements
            masked out by ``valid`` (or with a non-finite score).
        representative: ``[K]`` int64 index (into the input) of each cluster's
            representative, its best-scoring member.
        size: ``[K]`` int64 number of members ("hits") per cluster.
        best_score: ``[K]`` the representative's score (dtype of ``scores``),
            non-increasing.
    """

    labels: Tensor
    representative: Tensor
    size: Tensor
    best_score: Tensor

    def __len__(self) -> int:
        return int(self.representative.numel())


def _compatible_pairs(
    c_a: Tensor, R_a: Tensor, c_b: Tensor, R_b: Tensor, shift_tol2: float, cos_tol: float
) -> tuple[Tensor, Tensor]:
    """Pairs (a, b) with placement a within both tolerances of placement b.

    The angle test runs first, densely, as one matrix product: it compares
    ``trace(R_a^T R_b)`` with ``1 + 2 cos(angle_tol)`` instead of taking an arccos
    (equivalent, and exact at the boundary up to round-off). Few pairs pass it (a 6 deg
    ball is ~1e-4 of SO(3)), so the distances are then computed exactly, coordinate by
    coordinate, for those pairs only.

    Returns:
        ``(rows, cols)`` int64 tensors, sorted row-major (by row, then column).
    """
    # trace(R_a^T R_b) = sum_ij R_a[ij] R_b[ij]
    tr = R_a.reshape(-1, 9) @ R_b.reshape(-1, 9).T  # [A, B]
    rows, cols = torch.nonzero(tr >= 1.0 + 2.0 * cos_tol, as_tuple=True)
    d2 = (c_a[rows] - c_b[cols]).square().sum(dim=1)  # [pairs]
    near = d2 <= shift_tol2
    return rows[near], cols[near]


def cluster_poses(
    centers: Tensor,
    rotations: Tensor,
    scores: Tensor,
    shift_tol: float = 3.0,
    angle_tol_deg: float = 6.0,
    valid: Tensor | None = None,
) -> Clusters:
    """Cluster placements of one molecule greedily by centre shift and rotation angle.

    Args:
        centers: ``[P, 3]`` world xyz of the molecule centre of each placement (the
            translation ``t`` of the centred molecule).
        rotations: ``[P, 3, 3]`` rotation matrices.
        scores: ``[P]`` metric, higher is better (negate a loss before calling).
        shift_tol: Angstrom; members are within this distance of the representative.
        angle_tol_deg: degrees; members' relative rotation to the representative is at
            most this.
        valid: optional ``[P]`` bool; False placements (filtered out, e.g. by a minimum
            inside fraction) get label -1 and take no part. Placements with a NaN or
            infinite score, centre or rotation are treated as invalid as well (a
            diverged fit must not found the top cluster).

    Returns:
        :class:`Clusters` on the CPU. Equal scores are ordered by input index (the
        earlier placement comes first), so the result is deterministic.

    Raises:
        DifffitInputError: shapes that do not match, negative tolerances.
    """
    centers, rotations, scores, valid = _check_inputs(centers, rotations, scores, valid)
    if not (math.isfinite(shift_tol) and shift_tol >= 0):
        raise DifffitInputError(f"shift_tol must be a finite number >= 0, got {shift_tol!r}")
    if not (math.isfinite(angle_tol_deg) and 0 <= angle_tol_deg):
        raise DifffitInputError(
            f"angle_tol_deg must be a finite number >= 0, got {angle_tol_deg!r}"
        )
    P = scores.shape[0]
    score_dtype = scores.dtype if scores.is_floating_point() else torch.float64

    c = centers.detach().to("cpu", torch.float64)
    R = rotations.detach().to("cpu", torch.float64)
    s = scores.detach().to("cpu", torch.float64)
    # Non-finite poses or scores (a diverged fit) are dropped like invalid ones.
    ok = (
        valid.detach().to("cpu")
        & torch.isfinite(s)
        & torch.isfinite(c).all(dim=1)
        & torch.isfinite(R).reshape(P, 9).all(dim=1)
    )

    # Score order, best first; ties by input index (lexsort's last key is primary,
    # and it is stable, so equal scores keep index order).
    idx = torch.nonzero(ok).squeeze(1).numpy()
    order = idx[np.lexsort((idx, -s.numpy()[idx]))]  # [Pv] input indices
    order_t = torch.from_numpy(order)
    c_o, R_o = c[order_t], R[order_t]  # [Pv, 3], [Pv, 3, 3]

    shift_tol2 = float(shift_tol) ** 2
    cos_tol = math.cos(math.radians(min(float(angle_tol_deg), 180.0)))

    labels_o = np.full(order.size, -1, dtype=np.int64)  # label per position in order
    reps: list[int] = []  # positions (in order) of the representatives, by cluster id
    for start in range(0, order.size, _BLOCK):
        stop = min(start + _BLOCK, order.size)
        cb, Rb = c_o[start:stop], R_o[start:stop]
        if reps:
            rep_t = torch.tensor(reps, dtype=torch.long)
            rows, cols = _compatible_pairs(cb, Rb, c_o[rep_t], R_o[rep_t], shift_tol2, cos_tol)
            # First compatible representative per row = the lowest cluster id, i.e. the
            # earliest-created (best-ranked) cluster: the greedy rule.
            first = torch.full((stop - start,), len(reps), dtype=torch.long)
            first.scatter_reduce_(0, rows, cols, reduce="amin")
            hit = first < len(reps)
            labels_o[start:stop][hit.numpy()] = first[hit].numpy()
        # The rest match no older cluster: resolve them in order among themselves.
        rest = np.flatnonzero(labels_o[start:stop] < 0)  # block-local positions
        if rest.size == 0:
            continue
        rest_t = torch.from_numpy(rest)
        rows, cols = _compatible_pairs(
            cb[rest_t], Rb[rest_t], cb[rest_t], Rb[rest_t], shift_tol2, cos_tol
        )
        local = np.zeros((rest.size, rest.size), dtype=bool)  # [U, U]
        local[rows.numpy(), cols.numpy()] = True
        # Sequential greedy within the block, vectorised over earlier block members:
        # u joins the earliest block-local representative compatible with it.
        is_rep = np.zeros(rest.size, dtype=bool)
        cluster_of = np.full(rest.size, -1, dtype=np.int64)  # cluster id of each local rep
        for u in range(rest.size):
            cand = local[u, :u] & is_rep[:u]
            if cand.any():
                # Local reps appear in creation order, so the first True is the
                # earliest-created (best-ranked) compatible cluster.
                labels_o[start + rest[u]] = cluster_of[int(cand.argmax())]
            else:
                is_rep[u] = True
                cluster_of[u] = len(reps)
                labels_o[start + rest[u]] = len(reps)
                reps.append(start + int(rest[u]))

    labels = torch.full((P,), -1, dtype=torch.int64)
    labels[order_t] = torch.from_numpy(labels_o)
    K = len(reps)
    representative = order_t[torch.tensor(reps, dtype=torch.long)]  # [K]
    size = torch.bincount(torch.from_numpy(labels_o), minlength=K)  # [K]
    best_score = scores.detach().to("cpu")[representative].to(score_dtype)
    return Clusters(labels=labels, representative=representative, size=size, best_score=best_score)


def first_representatives(centers: Tensor, rotations: Tensor, scores: Tensor, keep: int,
                          shift_tol: float = 3.0, angle_tol_deg: float = 6.0) -> Tensor:
    """The first ``keep`` representatives :func:`cluster_poses` would give, for M sets of
    placements at once (M molecules' starts, say): the same greedy rule (best score first,
    ties by index; a placement founds a cluster unless it is within both tolerances of an
    earlier representative), stepping through the S placements of all sets together.

    Args:
        centers: [M, S, 3]; rotations: [M, S, 3, 3]; scores: [M, S] (higher is better;
            non-finite scores, centres or rotations take no part, as there).

    Returns:
        [M, keep] int64 indices into S, best cluster first; -1 where a set has fewer
        clusters.
    """
    M, S = scores.shape
    c = centers.detach().to("cpu", torch.float64)
    R = rotations.detach().to("cpu", torch.float64).reshape(M, S, 9)
    s = scores.detach().to("cpu", torch.float64)
    ok = torch.isfinite(s) & torch.isfinite(c).all(-1) & torch.isfinite(R).all(-1)
    order = torch.argsort(-torch.where(ok, s, -math.inf), dim=1, stable=True)   # [M, S]
    c = c.gather(1, order[..., None].expand(M, S, 3))
    R = R.gather(1, order[..., None].expand(M, S, 9))
    ok = ok.gather(1, order)
    shift_tol2 = float(shift_tol) ** 2
    trace_min = 1.0 + 2.0 * math.cos(math.radians(min(float(angle_tol_deg), 180.0)))
    reps = torch.full((M, keep), -1, dtype=torch.int64)
    rep_c, rep_R = torch.zeros(M, keep, 3, dtype=torch.float64), torch.zeros(M, keep, 9, dtype=torch.float64)
    n = torch.zeros(M, dtype=torch.int64)
    rows = torch.arange(M)
    for u in range(S):
        used = torch.arange(keep)[None, :] < n[:, None]                       # [M, keep]
        near = (used & ((rep_R * R[:, u, None]).sum(-1) >= trace_min)
                & ((rep_c - c[:, u, None]).square().sum(-1) <= shift_tol2))
        new = ok[:, u] & ~near.any(1) & (n < keep)
        if new.any():
            m = rows[new]
            rep_c[m, n[m]], rep_R[m, n[m]], reps[m, n[m]] = c[m, u], R[m, u], order[m, u]
            n[m] += 1
        if bool((n >= keep).all()):
            break
    return reps


def _check_inputs(centers, rotations, scores, valid):
    for name, t in (("centers", centers), ("rotations", rotations), ("scores", scores)):
        if not isinstance(t, Tensor):
            raise DifffitInputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if scores.ndim != 1:
        raise DifffitInputError(f"scores must have shape [P], got {tuple(scores.shape)}")
    P = scores.shape[0]
    if centers.shape != (P, 3):
        raise DifffitInputError(
            f"centers must have shape [P, 3] = [{P}, 3] to match scores, got {tuple(centers.shape)}"
        )
    if rotations.shape != (P, 3, 3):
        raise DifffitInputError(
            f"rotations must have shape [P, 3, 3] = [{P}, 3, 3] to match scores, "
            f"got {tuple(rotations.shape)}"
        )
    if valid is None:
        valid = torch.ones(P, dtype=torch.bool)
    else:
        if not isinstance(valid, Tensor):
            valid = torch.as_tensor(valid)
        if valid.shape != (P,) or valid.dtype != torch.bool:
            raise DifffitInputError(
                f"valid must be a bool tensor of shape [{P}], got {valid.dtype} {tuple(valid.shape)}"
            )
    return centers, rotations, scores, valid
