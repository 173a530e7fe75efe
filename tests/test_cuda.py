"""CUDA kernels against the CPU kernels on the same inputs (marker ``cuda``).

Every test here is skipped, with the reason shown by ``pytest -rs``, unless torch sees a
CUDA device and difffit was built with its CUDA kernels (``difffit.build_info()["cuda"]``).

Both backends run the per-point arithmetic of csrc/include/difffit/math.h; they differ in
the order of the per-placement sums (the CUDA kernels accumulate float32 inputs in float32,
the CPU in float64), in splatting's atomics, and in FMA contraction (CUDA is compiled with
--fmad=false; a CPU variant built with -mfma may contract). Tolerances: float64 1e-9 of the
largest magnitude, float32 1e-4.

A float32 subtlety: a moved atom within a few ulps of a voxel face can land in the
neighbouring cell on one backend, and the trilinear gradient jumps across faces (the value
does not). With thousands of placements a handful then differ in their float32 gradients
by far more than rounding. So float32 values and sums are compared on a general volume,
and float32 gradients on a globally trilinear volume, which trilinear interpolation
reproduces exactly, so its gradient is continuous and a face crossing changes nothing
beyond rounding. The float64 tests compare everything on the general volume.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from difffit import build_info, ops
from difffit._ext import load


def _skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    try:
        info = build_info()
    except ImportError as exc:  # pragma: no cover - broken install
        return f"difffit's compiled extension does not load: {exc}"
    if not info["cuda"]:
        return ("difffit was built without CUDA kernels "
                "(rebuild with DIFFFIT_CUDA=ON pip install --no-build-isolation .)")
    return None


_REASON = _skip_reason()
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]

DEVICE = "cuda"  # the device under test; the CPU kernels are the reference
DTYPES = [torch.float64, torch.float32]
RTOL = {torch.float64: 1e-9, torch.float32: 1e-4}
SIZES = (1, 50, 700)  # ragged molecules: one atom, small, large


def assert_close_scaled(got, want, dtype, what):
    """|got - want| <= rtol * (|want| + max|want|), elementwise, in float64 on the CPU."""
    got = got.detach().cpu().double()
    want = want.detach().cpu().double()
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    rtol = RTOL[dtype]
    scale = float(want.abs().max()) if want.numel() else 0.0
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * max(scale, 1e-30),
                               msg=lambda m: f"{what} ({dtype}): {m}")


def make_case(dtype, C=4, sizes=SIZES, P=64, shape=(23, 19, 17), voxel=(1.1, 0.9, 1.3),
              seed=0, far_fraction=0.25):
    """A smooth random multi-channel volume with anisotropic voxels, ragged molecules, and
    placements spread so that many atoms fall outside the grid, some placements entirely.

    Returns CPU tensors (volume, weights, origin, voxel, points, offsets, quat, trans, mol_idx).
    """
    g = torch.Generator().manual_seed(seed)
    D, H, W = shape
    vol = torch.randn(D, H, W, C, generator=g, dtype=torch.float64)
    vol = torch.nn.functional.avg_pool3d(vol.permute(3, 0, 1, 2)[None], 3, 1, 1)[0]
    vol = vol.permute(1, 2, 3, 0).contiguous().to(dtype)
    weights = (torch.rand(C, generator=g, dtype=torch.float64) + 0.5).to(dtype)
    origin = (-3.0, 2.0, 5.0)
    extent = torch.tensor(voxel, dtype=torch.float64) * torch.tensor([W - 1, H - 1, D - 1])
    centre = torch.tensor(origin, dtype=torch.float64) + extent / 2
    # Molecules about as wide as the grid: the large one pokes out of it for most placements.
    points = (torch.randn(sum(sizes), 3, generator=g, dtype=torch.float64) * 5.0).to(dtype)
    offsets = torch.tensor([0] + list(np.cumsum(sizes)), dtype=torch.int64)
    quat = (torch.randn(P, 4, generator=g, dtype=torch.float64) * 1.7).to(dtype)  # unnormalised
    trans = centre + torch.randn(P, 3, generator=g, dtype=torch.float64) * 4.0
    n_far = int(P * far_fraction)
    if n_far:
        trans[:n_far] += torch.tensor([150.0, -120.0, 90.0], dtype=torch.float64)
    trans = trans.to(dtype)
    mol_idx = torch.randint(0, len(sizes), (P,), generator=g)
    mol_idx[: min(P, len(sizes))] = torch.arange(min(P, len(sizes)))  # every molecule appears
    return vol, weights, origin, voxel, points, offsets, quat, trans, mol_idx


def trilinear_case(dtype, C=3, sizes=SIZES, P=64, shape=(40, 38, 36), voxel=(1.1, 0.9, 1.3),
                   seed=0):
    """A volume that is globally trilinear in (x, y, z) per channel, and placements that keep
    every atom at least 5 A inside the grid (atoms within 9 A of their centroid, centroids
    within 1.5 A per axis of the grid centre; the half-extents are 19, 16 and 25 A), so the
    sampled gradient is continuous along every path the atoms can take.
    """
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    D, H, W = shape
    z = torch.linspace(0, 1, D, dtype=f64)[:, None, None].expand(D, H, W)
    y = torch.linspace(0, 1, H, dtype=f64)[None, :, None].expand(D, H, W)
    x = torch.linspace(0, 1, W, dtype=f64)[None, None, :].expand(D, H, W)
    basis = torch.stack([torch.ones_like(x), x, y, z, x * y, y * z, x * z, x * y * z], -1)
    coef = torch.randn(8, C, generator=g, dtype=f64) * 3
    vol = (basis @ coef).contiguous().to(dtype)  # [D, H, W, C]
    weights = (torch.rand(C, generator=g, dtype=f64) + 0.5).to(dtype)
    origin = (-3.0, 2.0, 5.0)
    extent = torch.tensor(voxel, dtype=f64) * torch.tensor([W - 1, H - 1, D - 1])
    centre = torch.tensor(origin, dtype=f64) + extent / 2
    points = torch.randn(sum(sizes), 3, generator=g, dtype=f64) * 3.0
    points = points * (9.0 / points.norm(dim=1, keepdim=True)).clamp(max=1.0)
    offsets = torch.tensor([0] + list(np.cumsum(sizes)), dtype=torch.int64)
    quat = torch.randn(P, 4, generator=g, dtype=f64) * 1.7
    trans = centre + (torch.rand(P, 3, generator=g, dtype=f64) * 2 - 1) * 1.5
    mol_idx = torch.randint(0, len(sizes), (P,), generator=g)
    mol_idx[: min(P, len(sizes))] = torch.arange(min(P, len(sizes)))
    return (vol, weights, origin, voxel, points.to(dtype), offsets, quat.to(dtype),
            trans.to(dtype), mol_idx)


def check_score(got, want, dtype, what, gradients=True):
    names = ("score", "grad_q", "grad_t") if gradients else ("score",)
    for name, a, b in zip(names, got, want):
        assert_close_scaled(a, b, dtype, f"{name}, {what}")


def check_stats(got, want, dtype, what):
    """Sums column by column; the inside count exactly in float64, within one point in
    float32 (a density within an ulp of the threshold may fall either side)."""
    for k, name in enumerate(ops.STAT_NAMES[:5]):
        assert_close_scaled(got[:, k], want[:, k], dtype, f"{name}, {what}")
    diff = (got[:, 5].cpu().double() - want[:, 5].double()).abs()
    assert float(diff.max()) <= (0 if dtype == torch.float64 else 1), f"n_inside, {what}"


def on(device, case):
    return tuple(c.to(device) if torch.is_tensor(c) else c for c in case)


def team_sizes_placements():
    """Placement counts that make the CUDA launcher pick each team size (8, 4, 2 and 1 warps
    per placement; see choose_team in csrc/cuda/kernels.cu: the fewest warps per placement
    that reach 64 resident warps per multiprocessor). None of them fills whole blocks, so
    the idle tail of the last block is exercised as well."""
    target = torch.cuda.get_device_properties(0).multi_processor_count * 64
    return [target // 8 - 1, target // 4 + 1, target // 2 + 1, target + 1]


# ----------------------------------------------------------------------------------------
# score


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [1, 4])
def test_score_with_grad_matches_cpu(dtype, C):
    case = make_case(dtype, C=C)
    want = ops.score_with_grad(*case)
    got = ops.score_with_grad(*on(DEVICE, case))
    for a in got:
        assert a.device.type == torch.device(DEVICE).type and a.dtype == dtype
    # float32 gradients: test_score_gradients_match_cpu_on_trilinear_volume (module docstring).
    check_score(got, want, dtype, f"C={C}", gradients=dtype == torch.float64)
    # The far placements sample one border voxel: the gradients vanish exactly.
    n_far = case[6].shape[0] // 4
    assert torch.all(got[1][:n_far] == 0) and torch.all(got[2][:n_far] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [1, 4])
def test_score_gradients_match_cpu_on_trilinear_volume(dtype, C):
    case = trilinear_case(dtype, C=C)
    check_score(ops.score_with_grad(*on(DEVICE, case)), ops.score_with_grad(*case), dtype,
                f"trilinear volume, C={C}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_score_matches_cpu_for_every_team_size(dtype):
    for P in team_sizes_placements():
        case = make_case(dtype, P=P, seed=P)
        check_score(ops.score_with_grad(*on(DEVICE, case)), ops.score_with_grad(*case), dtype,
                    f"P={P}", gradients=dtype == torch.float64)
        if dtype == torch.float32:
            case = trilinear_case(dtype, P=P, seed=P)
            check_score(ops.score_with_grad(*on(DEVICE, case)), ops.score_with_grad(*case),
                        dtype, f"trilinear volume, P={P}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_score_backward_matches_cpu(dtype):
    case = make_case(dtype, P=33) if dtype == torch.float64 else trilinear_case(dtype, P=33)
    o, v = case[2], case[3]
    up = torch.randn(case[6].shape[0], generator=torch.Generator().manual_seed(1), dtype=dtype)
    grads = {}
    for dev in ("cpu", DEVICE):
        vd, wd, _, _, pd, od, qd, td, md = on(dev, case)
        qd, td = qd.clone().requires_grad_(), td.clone().requires_grad_()
        (ops.score(vd, wd, o, v, pd, od, qd, td, md) * up.to(dev)).sum().backward()
        grads[dev] = (qd.grad, td.grad)
    assert_close_scaled(grads[DEVICE][0], grads["cpu"][0], dtype, "quat.grad")
    assert_close_scaled(grads[DEVICE][1], grads["cpu"][1], dtype, "trans.grad")


def kernel_score(vol, w, o, v, pts, off, q, t, m):
    """The compiled score kernel called directly, without ops.score's channel pre-sum (which
    hands the kernel a one-channel volume whenever samples outnumber voxels / 8), so the
    kernel's own multi-channel loop is what gets compared."""
    P = q.shape[0]
    score = torch.empty(P, dtype=vol.dtype, device=vol.device)
    grad_q = torch.empty(P, 4, dtype=vol.dtype, device=vol.device)
    grad_t = torch.empty(P, 3, dtype=vol.dtype, device=vol.device)
    cuda = vol.device.type == "cuda"
    stream = torch.cuda.current_stream(vol.device).cuda_stream if cuda else 0
    fn = getattr(load(), "score_f64" if vol.dtype == torch.float64 else "score_f32")
    fn(int(cuda), vol.data_ptr(), list(vol.shape), list(o), list(v), w.data_ptr(),
       pts.data_ptr(), off.data_ptr(), off.numel() - 1, q.data_ptr(), t.data_ptr(),
       m.data_ptr(), P, score.data_ptr(), grad_q.data_ptr(), grad_t.data_ptr(), stream)
    return score, grad_q, grad_t


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [2, 5, 64])
def test_multichannel_score_kernel_matches_cpu(dtype, C):
    checks = [("general volume", make_case(dtype, C=C, P=200), dtype == torch.float64),
              ("trilinear volume", trilinear_case(dtype, C=C, P=200), True)]
    for what, case, gradients in checks:
        want = kernel_score(*case)
        got = kernel_score(*on(DEVICE, case))
        check_score(got, want, dtype, f"{what}, C={C}, kernel called directly",
                    gradients=gradients)


def test_gradcheck_cuda_float64():
    vol, w, o, v, pts, off, q, t, m = on(DEVICE, make_case(torch.float64, C=2, sizes=(3, 5), P=4,
                                                          far_fraction=0.0))
    q.requires_grad_()
    t.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda q_, t_: ops.score(vol, w, o, v, pts, off, q_, t_, m), (q, t), eps=1e-6, atol=1e-6)


def test_score_runs_on_the_current_stream():
    case = make_case(torch.float32)
    want = ops.score_with_grad(*on(DEVICE, case))
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        cuda_case = on(DEVICE, case)
        got = ops.score_with_grad(*cuda_case, validate=False)
    stream.synchronize()
    for a, b in zip(got, want):
        assert_close_scaled(a, b, torch.float32, "score on a side stream")


def test_no_placements():
    vol, w, o, v, pts, off, q, t, m = on(DEVICE, make_case(torch.float32))
    s, gq, gt = ops.score_with_grad(vol, w, o, v, pts, off, q[:0], t[:0], m[:0])
    assert s.shape == (0,) and gq.shape == (0, 4) and gt.shape == (0, 3)
    st = ops.point_stats(vol, o, v, pts, torch.ones_like(pts[:, 0]), off, q[:0], t[:0], m[:0])
    assert st.shape == (0, ops.NUM_STATS)


def test_opcheck_cuda():
    vol, w, o, v, pts, off, q, t, m = on(DEVICE, make_case(torch.float64, C=2, sizes=(3, 5), P=4))
    frame = list(o) + list(v)
    torch.library.opcheck(ops._score_op, (vol, w, frame, pts, off, q.requires_grad_(),
                                          t.requires_grad_(), m))
    pw = torch.rand(pts.shape[0], dtype=pts.dtype, device=pts.device)
    torch.library.opcheck(ops._stats_op, (vol, frame, pts, pw, off, q.detach(), t.detach(), m,
                                          1, 0.1))
    torch.library.opcheck(ops._splat_op, (pts, pw, 1.5, 3.0, [6, 5, 4], frame))


# ----------------------------------------------------------------------------------------
# point statistics


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channel", [0, 2])
def test_point_stats_matches_cpu(dtype, channel):
    vol, w, o, v, pts, off, q, t, m = make_case(dtype, C=3, P=80)
    pw = torch.rand(pts.shape[0], generator=torch.Generator().manual_seed(2), dtype=dtype)
    thr = float(vol[..., channel].median()) + 1e-3
    want = ops.point_stats(vol, o, v, pts, pw, off, q, t, m, channel=channel, threshold=thr)
    vd, _, _, _, pd, od, qd, td, md = on(DEVICE, (vol, w, o, v, pts, off, q, t, m))
    got = ops.point_stats(vd, o, v, pd, pw.to(DEVICE), od, qd, td, md, channel=channel,
                          threshold=thr)
    assert got.shape == (q.shape[0], ops.NUM_STATS) and got.dtype == dtype
    check_stats(got, want, dtype, f"channel {channel}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_point_stats_matches_cpu_for_every_team_size(dtype):
    for P in team_sizes_placements():
        vol, w, o, v, pts, off, q, t, m = make_case(dtype, C=2, P=P, seed=P + 1)
        pw = torch.rand(pts.shape[0], generator=torch.Generator().manual_seed(P), dtype=dtype)
        want = ops.point_stats(vol, o, v, pts, pw, off, q, t, m, channel=1, threshold=0.01)
        vd, _, _, _, pd, od, qd, td, md = on(DEVICE, (vol, w, o, v, pts, off, q, t, m))
        got = ops.point_stats(vd, o, v, pd, pw.to(DEVICE), od, qd, td, md, channel=1,
                              threshold=0.01)
        check_stats(got, want, dtype, f"P={P}")


# ----------------------------------------------------------------------------------------
# splatting


def splat_case(dtype, n=300, seed=0):
    """Atoms inside, straddling and far outside an anisotropic grid with a shifted origin."""
    g = torch.Generator().manual_seed(seed)
    shape = (21, 18, 25)  # nz, ny, nx
    origin = (-4.0, 3.5, 10.25)
    voxel = (0.8, 1.1, 1.25)
    extent = torch.tensor(voxel, dtype=torch.float64) * torch.tensor(shape[::-1])
    pts = torch.tensor(origin, dtype=torch.float64) + (torch.rand(n, 3, generator=g,
                                                                  dtype=torch.float64) * 1.6 - 0.3) * extent
    pts[:10] += 500.0  # entirely outside
    amp = torch.rand(n, generator=g, dtype=torch.float64) * 8 + 1
    return pts.to(dtype), amp.to(dtype), shape, origin, voxel


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sigma,cutoff", [(1.2, 3.0), (0.45, 5.0), (2.5, 2.0)])
def test_splat_matches_cpu(dtype, sigma, cutoff):
    pts, amp, shape, origin, voxel = splat_case(dtype)
    want = ops.splat(pts, amp, sigma, cutoff, shape, origin, voxel)
    got = ops.splat(pts.to(DEVICE), amp.to(DEVICE), sigma, cutoff, shape, origin, voxel)
    assert got.device.type == torch.device(DEVICE).type and got.shape == tuple(shape)
    assert_close_scaled(got, want, dtype, "splat")
    # Same support: the inclusion rule (r <= cutoff * sigma, boxes from splat_range) matches.
    assert torch.equal(got.cpu() != 0, want != 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_splat_includes_exact_ties_at_the_cutoff(dtype):
    # Integer geometry: the voxels exactly cutoff * sigma = 2 away (r2 == 4 exactly, also
    # along z, where the CUDA box is derived differently from the CPU's plane test) count.
    pts = torch.tensor([[3.0, 4.0, 5.0], [0.0, 0.0, 0.0], [9.0, 9.0, 2.0]], dtype=dtype)
    amp = torch.tensor([1.0, 2.0, 3.0], dtype=dtype)
    shape, origin, voxel = (10, 10, 10), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    want = ops.splat(pts, amp, 1.0, 2.0, shape, origin, voxel)
    got = ops.splat(pts.to(DEVICE), amp.to(DEVICE), 1.0, 2.0, shape, origin, voxel).cpu()
    assert want[7, 4, 3] > 0 and want[3, 4, 3] > 0 and want[5, 4, 1] > 0  # z +-2, x -2
    assert torch.equal(got != 0, want != 0)
    assert_close_scaled(got, want, dtype, "splat ties")


def test_splat_no_points():
    pts = torch.zeros(0, 3, device=DEVICE)
    got = ops.splat(pts, torch.zeros(0, device=DEVICE), 1.0, 3.0, (4, 5, 6), (0, 0, 0), (1, 1, 1))
    assert got.shape == (4, 5, 6) and torch.all(got == 0)
