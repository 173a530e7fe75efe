"""Tests for difffit.rotations: quaternion algebra, conversions, uniform rotation sets."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from difffit.errors import DifffitInputError
from difffit.rotations import (
    matrix_to_quat,
    quat_canonical,
    quat_conjugate,
    quat_multiply,
    quat_to_matrix,
    random_rotations,
    rotation_angle_deg,
    uniform_rotations,
)


def _axis_angle_quat(axis, angle_deg) -> torch.Tensor:
    """[N,4] quaternions of rotations by angle_deg [N] about unit axis [N,3]."""
    half = torch.deg2rad(torch.as_tensor(angle_deg, dtype=torch.float64)) / 2
    axis = torch.nn.functional.normalize(torch.as_tensor(axis, dtype=torch.float64), dim=-1)
    return torch.cat([half.cos()[..., None], axis * half.sin()[..., None]], dim=-1)


def _covering_radius_deg(rot_set: torch.Tensor, probes: torch.Tensor) -> float:
    """Largest angle (deg) from any probe rotation to its nearest set member."""
    # Angle between unit quaternions p, q: 2 acos(|p.q|).
    dots = (probes @ rot_set.T).abs().clamp(max=1.0)  # [probes, set]
    return math.degrees(2 * math.acos(dots.max(dim=1).values.min().item()))


# ------------------------------------------------------------------ conversions


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_quat_to_matrix_is_proper_rotation(dtype):
    q = torch.randn(500, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype) * 3.0  # unnormalised
    R = quat_to_matrix(q)
    assert R.shape == (500, 3, 3) and R.dtype == dtype
    eye = torch.eye(3, dtype=dtype).expand(500, 3, 3)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye, atol=tol, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(500, dtype=dtype), atol=tol, rtol=0)


def test_quat_to_matrix_known_rotation_and_leading_dims():
    # 90 deg about +z (active): x -> y, y -> -x.
    q = _axis_angle_quat([0.0, 0.0, 1.0], 90.0)
    R = quat_to_matrix(q)
    expected = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(R, expected, atol=1e-15, rtol=0)
    # Arbitrary leading dims, identity quaternion
    Q = torch.zeros(2, 3, 4, dtype=torch.float64)
    Q[..., 0] = 2.0
    torch.testing.assert_close(quat_to_matrix(Q), torch.eye(3, dtype=torch.float64).expand(2, 3, 3, 3))


def test_quat_multiply_matches_matrix_product():
    a = random_rotations(200, torch.Generator().manual_seed(2))
    b = random_rotations(200, torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        quat_to_matrix(quat_multiply(a, b)), quat_to_matrix(a) @ quat_to_matrix(b), atol=1e-12, rtol=0
    )
    # q * conj(q) = identity quaternion
    ident = quat_multiply(a, quat_conjugate(a))
    torch.testing.assert_close(ident, torch.tensor([1.0, 0, 0, 0], dtype=torch.float64).expand(200, 4))


def test_quat_to_matrix_gradient():
    q = torch.randn(4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(quat_to_matrix, (q,))
    # Scaling q does not change R, so the gradient is orthogonal to q (flows through q/|q|).
    (quat_to_matrix(q) * torch.randn(4, 3, 3, dtype=torch.float64)).sum().backward()
    torch.testing.assert_close((q.grad * q.detach()).sum(-1), torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)


def test_matrix_to_quat_round_trip_all_angles():
    g = torch.Generator().manual_seed(5)
    axes = torch.randn(600, 3, generator=g, dtype=torch.float64)
    # Include identity, tiny angles and (near) half turns, where naive formulas break.
    angles = torch.cat(
        [torch.tensor([0.0, 1e-9, 1e-4, 90.0, 179.9999, 180.0]).repeat(50),
         torch.rand(300, generator=g, dtype=torch.float64) * 180]
    )
    q = _axis_angle_quat(axes, angles)
    q_back = matrix_to_quat(quat_to_matrix(q))
    assert (q_back[:, 0] >= 0).all()
    torch.testing.assert_close(q_back.norm(dim=-1), torch.ones(600, dtype=torch.float64))
    # q and -q are the same rotation.
    err = torch.minimum((q_back - q).norm(dim=-1), (q_back + q).norm(dim=-1))
    assert err.max() < 1e-12
    # and the matrices agree
    torch.testing.assert_close(quat_to_matrix(q_back), quat_to_matrix(q), atol=1e-12, rtol=0)


def test_matrix_to_quat_canonical_and_float32():
    q = random_rotations(100, torch.Generator().manual_seed(6), dtype=torch.float32)
    q_back = matrix_to_quat(quat_to_matrix(q))
    assert q_back.dtype == torch.float32
    torch.testing.assert_close(q_back, quat_canonical(q), atol=1e-5, rtol=0)


def test_rotation_angle_deg_known_angles():
    axes = torch.randn(7, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    angles = torch.tensor([0.0, 1e-6, 0.5, 6.0, 90.0, 179.5, 180.0], dtype=torch.float64)
    R = quat_to_matrix(_axis_angle_quat(axes, angles))
    eye = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(rotation_angle_deg(eye, R), angles, atol=1e-9, rtol=0)
    # Relative angle does not depend on a common left factor; broadcast [1] vs [7].
    base = quat_to_matrix(random_rotations(1, torch.Generator().manual_seed(8)))
    torch.testing.assert_close(rotation_angle_deg(base, base @ R), angles, atol=1e-9, rtol=0)
    # Symmetric in its arguments
    torch.testing.assert_close(rotation_angle_deg(R, base), rotation_angle_deg(base, R))


def test_bad_shapes_raise():
    with pytest.raises(DifffitInputError, match="q must have shape"):
        quat_to_matrix(torch.zeros(3, 3))
    with pytest.raises(DifffitInputError, match="R must have shape"):
        matrix_to_quat(torch.zeros(4))
    with pytest.raises(DifffitInputError, match="n must be >= 0"):
        uniform_rotations(-1)


# ---------------------------------------------------------------- rotation sets


def test_random_rotations_seeded_unit_canonical():
    a = random_rotations(1000, torch.Generator().manual_seed(9))
    b = random_rotations(1000, torch.Generator().manual_seed(9))
    assert a.shape == (1000, 4) and a.dtype == torch.float64
    assert torch.equal(a, b)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(1000, dtype=torch.float64))
    assert (a[:, 0] >= 0).all()
    # Uniform on SO(3): E[R] = 0 (each entry has variance 1/3, so the mean of 1000 is
    # within ~0.02 * 5).
    assert quat_to_matrix(a).mean(0).abs().max() < 0.1


def test_uniform_rotations_deterministic_seeded_canonical():
    a = uniform_rotations(500, seed=3)
    assert a.shape == (500, 4) and a.dtype == torch.float64
    assert torch.equal(a, uniform_rotations(500, seed=3))
    assert not torch.allclose(a, uniform_rotations(500, seed=4))
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(500, dtype=torch.float64))
    assert (a[:, 0] >= 0).all()
    assert uniform_rotations(10, dtype=torch.float32).dtype == torch.float32
    assert uniform_rotations(0).shape == (0, 4)


def test_uniform_rotations_cover_so3_better_than_random():
    n = 1000
    probes = random_rotations(20000, torch.Generator().manual_seed(123))
    sf = _covering_radius_deg(uniform_rotations(n, seed=0), probes)
    rnd = _covering_radius_deg(random_rotations(n, torch.Generator().manual_seed(0)), probes)
    # Measured: super-Fibonacci ~21.5 deg (seeds 0-4: 20.8-21.9), random ~31-33 deg.
    # (The ideal covering of 1000 balls would be ~15 deg.)
    assert sf < 25.0
    assert sf < rnd - 5.0
    # And no near-duplicates: min pairwise angle is ~17.7 deg (random sets: ~1 deg).
    S = uniform_rotations(n, seed=0)
    dots = (S @ S.T).abs().clamp(max=1.0)
    dots.fill_diagonal_(0.0)
    assert math.degrees(2 * math.acos(dots.max().item())) > 10.0


def test_uniform_rotations_is_uniform_in_mean():
    # Low discrepancy: the mean rotation matrix of a uniform set is ~0.
    R = quat_to_matrix(uniform_rotations(2000, seed=1))
    assert R.mean(0).abs().max() < 0.005  # measured ~5e-4


def _bare_super_fibonacci(n: int) -> torch.Tensor:
    """Alexa's super-Fibonacci spiral, written out independently of the module."""
    psi = 1.533751168755204288118041
    out = []
    for i in range(n):
        s = i + 0.5
        r, R = math.sqrt(s / n), math.sqrt(1 - s / n)
        a, b = 2 * math.pi * s / math.sqrt(2), 2 * math.pi * s / psi
        out.append([r * math.sin(a), r * math.cos(a), R * math.sin(b), R * math.cos(b)])
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 17])
def test_uniform_rotations_is_globally_rotated_spiral(seed):
    n = 300
    bare = _bare_super_fibonacci(n)
    got = uniform_rotations(n, seed=seed)
    # got_i = +-(g * bare_i) for one g: got_i * conj(bare_i) is the same rotation for all i.
    g = quat_canonical(quat_multiply(got, quat_conjugate(bare)))  # [n, 4]
    torch.testing.assert_close(g, g[:1].expand(n, 4), atol=1e-12, rtol=0)
    # Every seed applies a non-trivial offset (seed 0 included).
    assert rotation_angle_deg(quat_to_matrix(g[0]), torch.eye(3, dtype=torch.float64)) > 1.0


def test_superpose_recovers_a_rigid_motion_and_never_reflects():
    from difffit.rotations import superpose

    g = torch.Generator().manual_seed(3)
    x = torch.randn(50, 3, generator=g, dtype=torch.float64).numpy()
    R = quat_to_matrix(random_rotations(1, generator=g))[0].numpy()
    t = np.array([4.0, -2.0, 7.5])
    R2, t2 = superpose(x, x @ R.T + t)
    np.testing.assert_allclose(R2, R, atol=1e-10)
    np.testing.assert_allclose(t2, t, atol=1e-10)
    Rm, _ = superpose(x, x * np.array([-1.0, 1.0, 1.0]))  # a mirror image
    assert np.linalg.det(Rm) > 0.999
