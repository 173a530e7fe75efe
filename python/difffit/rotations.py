"""Rotations: unit quaternions, rotation matrices and uniform sets of rotations on SO(3).

Conventions (see docs/method.md section 2):

- A quaternion is a tensor ``[..., 4]`` ordered ``(w, x, y, z)``; ``w`` is the scalar part.
- ``q`` and ``-q`` are the same rotation. Functions that *produce* quaternions return the
  canonical one with ``w >= 0``.
- ``quat_to_matrix(q)`` is the active rotation matrix: a point ``p`` goes to ``R @ p``, and
  ``quat_to_matrix(quat_multiply(a, b)) == quat_to_matrix(a) @ quat_to_matrix(b)``.

All functions are pure torch and broadcast over leading dimensions. Inputs are used in
their own dtype and device; the search sets (``random_rotations``, ``uniform_rotations``)
are generated in float64 and cast to the requested dtype at the end.
"""
from __future__ import annotations

import math
import operator

import numpy as np
import torch
from torch import Tensor

from .errors import DifffitInputError

__all__ = [
    "superpose",
    "quat_normalize",
    "quat_conjugate",
    "quat_multiply",
    "quat_canonical",
    "quat_to_matrix",
    "matrix_to_quat",
    "rotation_angle_deg",
    "random_rotations",
    "uniform_rotations",
]

# Super-Fibonacci constants (Alexa, "Super-Fibonacci Spirals: Fast, Low-Discrepancy
# Sampling of SO(3)", CVPR 2022): phi = sqrt(2) and psi, the real root of
# psi^4 = psi + 4. Their reciprocals are badly approximable together, which is what
# makes the two spiral angles fill the torus evenly.
_SF_PHI = math.sqrt(2.0)
_SF_PSI = 1.533751168755204288118041


def _check_last_dim(t: Tensor, size: int, name: str) -> None:
    if not isinstance(t, Tensor):
        raise DifffitInputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim < 1 or t.shape[-1] != size:
        raise DifffitInputError(f"{name} must have shape [..., {size}], got {tuple(t.shape)}")


def _check_matrix(t: Tensor, name: str) -> None:
    if not isinstance(t, Tensor):
        raise DifffitInputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim < 2 or t.shape[-2:] != (3, 3):
        raise DifffitInputError(f"{name} must have shape [..., 3, 3], got {tuple(t.shape)}")


def quat_normalize(q: Tensor, eps: float = 1e-12) -> Tensor:
    """Scale quaternions to unit length.

    Args:
        q: ``[..., 4]`` quaternions (w, x, y, z), any non-zero length.
        eps: lower bound on the norm, so a zero quaternion gives zeros instead of NaN.

    Returns:
        ``[..., 4]`` unit quaternions (sign unchanged).
    """
    _check_last_dim(q, 4, "q")
    return q / q.norm(dim=-1, keepdim=True).clamp_min(eps)


def quat_conjugate(q: Tensor) -> Tensor:
    """Conjugate (the inverse rotation for a unit quaternion).

    Args:
        q: ``[..., 4]`` quaternions (w, x, y, z).

    Returns:
        ``[..., 4]`` quaternions (w, -x, -y, -z).
    """
    _check_last_dim(q, 4, "q")
    sign = q.new_tensor([1.0, -1.0, -1.0, -1.0])
    return q * sign


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` (apply ``b`` first, then ``a``).

    Args:
        a: ``[..., 4]`` quaternions (w, x, y, z).
        b: ``[..., 4]`` quaternions, broadcastable against ``a``.

    Returns:
        ``[..., 4]`` product; unit if both inputs are unit. Not canonicalised.
    """
    _check_last_dim(a, 4, "a")
    _check_last_dim(b, 4, "b")
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        (
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ),
        dim=-1,
    )


def quat_canonical(q: Tensor) -> Tensor:
    """Pick the representative with ``w >= 0`` of each pair ``{q, -q}``.

    Args:
        q: ``[..., 4]`` quaternions.

    Returns:
        ``[..., 4]`` quaternions with non-negative scalar part.
    """
    _check_last_dim(q, 4, "q")
    # where() rather than multiplying by sign(w): sign(0) would zero the quaternion.
    return torch.where(q[..., :1] < 0, -q, q)


def quat_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrices of quaternions; differentiable, normalises ``q`` inside.

    The gradient flows through ``q / |q|``, so the fitting op can take unnormalised
    quaternions (method.md section 2).

    Args:
        q: ``[..., 4]`` quaternions (w, x, y, z), need not be unit.

    Returns:
        ``[..., 3, 3]`` proper rotation matrices (orthonormal, det +1), same dtype as ``q``.
    """
    _check_last_dim(q, 4, "q")
    w, x, y, z = quat_normalize(q).unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    rows = (
        1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
        2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
        2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
    )
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat(R: Tensor) -> Tensor:
    """Unit quaternions of rotation matrices (Shepperd's method).

    Of the four algebraically equivalent formulas (one per quaternion component taken
    from the diagonal), each matrix uses the one whose square root argument is largest
    (>= 1 for a rotation), so there is no cancellation and no division by a small
    number, whatever the rotation angle.

    Args:
        R: ``[..., 3, 3]`` rotation matrices. Slightly non-orthonormal input (float32
            round-off) is tolerated; the result is renormalised.

    Returns:
        ``[..., 4]`` unit quaternions (w, x, y, z) with ``w >= 0``.
    """
    _check_matrix(R, "R")
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]

    # 4 * component^2 for each of w, x, y, z.
    four_sq = torch.stack(
        (
            1 + m00 + m11 + m22,
            1 + m00 - m11 - m22,
            1 - m00 + m11 - m22,
            1 - m00 - m11 + m22,
        ),
        dim=-1,
    )
    # Candidate quaternions, each scaled by 4 * (its pivot component): the pivot row
    # has 4 * c^2 in the pivot slot and the off-diagonal combinations elsewhere.
    cand = torch.stack(
        (
            torch.stack((four_sq[..., 0], m21 - m12, m02 - m20, m10 - m01), -1),
            torch.stack((m21 - m12, four_sq[..., 1], m10 + m01, m02 + m20), -1),
            torch.stack((m02 - m20, m10 + m01, four_sq[..., 2], m12 + m21), -1),
            torch.stack((m10 - m01, m20 + m02, m21 + m12, four_sq[..., 3]), -1),
        ),
        dim=-2,
    )  # [..., 4 candidates, 4 components]
    best = four_sq.argmax(dim=-1)  # [...]
    # Divide by 2 * sqrt(4 c^2) = 4 |c|; clamp keeps the unused branches finite.
    denom = 2.0 * four_sq.clamp_min(1e-12).sqrt()  # [..., 4]
    q = cand / denom.unsqueeze(-1)
    idx = best[..., None, None].expand(best.shape + (1, 4))
    q = torch.gather(q, -2, idx).squeeze(-2)  # [..., 4]
    return quat_canonical(quat_normalize(q))


def rotation_angle_deg(Ra: Tensor, Rb: Tensor) -> Tensor:
    """Angle in degrees of the relative rotation ``Ra^T Rb`` (0 to 180).

    Uses ``atan2(sin, cos)`` with ``cos = (trace - 1) / 2`` and ``sin`` from the
    antisymmetric part, which is accurate for small angles too (a clamped ``acos`` of
    the trace loses about half the digits near 0, e.g. it cannot resolve 1e-6 deg in
    float64). ``cos`` is clamped to [-1, 1] for slightly non-orthonormal input.

    Args:
        Ra: ``[..., 3, 3]`` rotation matrices.
        Rb: ``[..., 3, 3]``, broadcastable against ``Ra``.

    Returns:
        ``[...]`` angles in degrees, dtype of the inputs.
    """
    _check_matrix(Ra, "Ra")
    _check_matrix(Rb, "Rb")
    Rrel = Ra.transpose(-1, -2) @ Rb
    cos = ((Rrel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) * 0.5).clamp(-1.0, 1.0)
    axis = torch.stack(
        (
            Rrel[..., 2, 1] - Rrel[..., 1, 2],
            Rrel[..., 0, 2] - Rrel[..., 2, 0],
            Rrel[..., 1, 0] - Rrel[..., 0, 1],
        ),
        dim=-1,
    )
    sin = (0.5 * axis.norm(dim=-1)).clamp(max=1.0)
    return torch.rad2deg(torch.atan2(sin, cos))


def random_rotations(
    n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
) -> Tensor:
    """``n`` independent rotations drawn uniformly (Haar measure) on SO(3).

    A normalised 4D standard Gaussian is uniform on the 3-sphere, hence uniform on SO(3).

    Args:
        n: number of rotations (>= 0).
        generator: optional CPU ``torch.Generator`` for reproducibility.
        dtype: floating dtype of the result (drawn in float64).

    Returns:
        ``[n, 4]`` unit quaternions (w, x, y, z), ``w >= 0``, on the CPU.
    """
    n = _check_count(n, "n")
    g = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    # A Gaussian 4-vector is zero with probability 0; the clamp in quat_normalize
    # keeps even that case finite.
    return quat_canonical(quat_normalize(g)).to(dtype)


def _check_count(n, name: str) -> int:
    """Validate a count: a non-negative integer (bool rejected)."""
    if isinstance(n, bool):
        raise DifffitInputError(f"{name} must be an integer, got {n!r}")
    try:
        n = operator.index(n)  # accepts int, numpy integers, 0-d integer tensors
    except TypeError:
        raise DifffitInputError(f"{name} must be an integer, got {n!r}") from None
    if n < 0:
        raise DifffitInputError(f"{name} must be >= 0, got {n}")
    return n


def uniform_rotations(n: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    """A deterministic, low-discrepancy set of ``n`` rotations covering SO(3) evenly.

    Super-Fibonacci spiral (Alexa, CVPR 2022): for ``i = 0..n-1`` with ``s = i + 1/2``,
    ``r = sqrt(s/n)``, ``R = sqrt(1 - s/n)``, ``alpha = 2 pi s / sqrt(2)``,
    ``beta = 2 pi s / psi`` (``psi^4 = psi + 4``), the quaternion is
    ``(r sin alpha, r cos alpha, R sin beta, R cos beta)``. This covers SO(3) markedly
    better than ``n`` random rotations (smaller largest gap).

    Every seed, including 0, then applies one global rotation drawn uniformly from a
    ``torch.Generator`` seeded with ``seed`` (left-multiplied: ``q_i -> g q_i``). The
    Haar measure is invariant under it, so every seed gives an equally uniform set, and
    different seeds give different sets (e.g. to repeat a search with fresh starts, or so
    that no start is systematically aligned with the map's axes).

    Args:
        n: number of rotations (>= 0).
        seed: integer seed of the global rotation.
        dtype: floating dtype of the result (computed in float64).

    Returns:
        ``[n, 4]`` unit quaternions (w, x, y, z), ``w >= 0``, on the CPU. The same
        ``(n, seed)`` always gives the same tensor.
    """
    n = _check_count(n, "n")
    seed = int(seed)
    s = torch.arange(n, dtype=torch.float64) + 0.5  # [n]
    t = s / max(n, 1)
    r = t.sqrt()
    R = (1.0 - t).sqrt()
    alpha = (2.0 * math.pi / _SF_PHI) * s
    beta = (2.0 * math.pi / _SF_PSI) * s
    q = torch.stack((r * alpha.sin(), r * alpha.cos(), R * beta.sin(), R * beta.cos()), dim=-1)

    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    offset = random_rotations(1, generator=gen)  # [1, 4]
    q = quat_multiply(offset, q)
    return quat_canonical(quat_normalize(q)).to(dtype)


def superpose(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rigid motion (R [3, 3], t [3]) minimising sum |R x_i + t - y_i|^2 (Kabsch), a
    proper rotation (det +1), for matched [N, 3] point sets (N >= 3, float64)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    cx, cy = x.mean(0), y.mean(0)
    u, _, vt = np.linalg.svd((x - cx).T @ (y - cy))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    R = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return R, cy - R @ cx
