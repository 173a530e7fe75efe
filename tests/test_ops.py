"""The compiled CPU kernels against their pure-PyTorch references (float64, tight), autograd,
opcheck, torch.compile and the edge cases of the kernel testing contract."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import mrcfile
import numpy as np
import pytest
import torch

from difffit import DifffitInputError, ops
from difffit.reference import (point_stats_reference, score_reference,
                               score_with_grad_reference, splat_reference)

from conftest import data_file


def make_case(dtype=torch.float64, C=3, sizes=(1, 50, 200), P=40, shape=(17, 13, 11),
              voxel=(1.1, 0.9, 1.3), spread=6.0, seed=0):
    """A smooth random volume with anisotropic voxels and a ragged batch of molecules."""
    g = torch.Generator().manual_seed(seed)
    D, H, W = shape
    vol = torch.randn(D, H, W, C, generator=g, dtype=dtype)
    # Smooth it a little so gradients are meaningful.
    if min(shape) >= 3:
        vol = torch.nn.functional.avg_pool3d(vol.permute(3, 0, 1, 2)[None], 3, 1, 1)[0].permute(1, 2, 3, 0).contiguous()
    weights = torch.rand(C, generator=g, dtype=dtype) + 0.5
    origin = (-3.0, 2.0, 5.0)
    centre = torch.tensor(origin, dtype=dtype) + torch.tensor(voxel, dtype=dtype) * torch.tensor([W, H, D], dtype=dtype) / 2
    points = torch.randn(sum(sizes), 3, generator=g, dtype=dtype) * spread / 2
    offsets = torch.tensor([0] + list(np.cumsum(sizes)), dtype=torch.int64)
    quat = torch.randn(P, 4, generator=g, dtype=dtype) * 1.7  # unnormalised on purpose
    trans = centre + torch.randn(P, 3, generator=g, dtype=dtype) * 3
    mol_idx = torch.randint(0, len(sizes), (P,), generator=g)
    return vol, weights, origin, voxel, points, offsets, quat, trans, mol_idx


# (2, larger volume): the multi-channel kernel; 40: channels summed first (ops.py's rule).
@pytest.mark.parametrize("P,shape", [(2, (40, 30, 20)), (40, (17, 13, 11))])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_score_matches_reference(P, shape, dtype):
    case = make_case(P=P, shape=shape)
    vol, w, o, v, pts, off, q, t, m = case
    want = score_reference(*case)
    if dtype == torch.float32:
        case = [c.float() if torch.is_tensor(c) and c.is_floating_point() else c for c in case]
    got = ops.score(*case)
    if dtype == torch.float32:
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
        return
    want = score_reference(vol, w, o, v, pts, off, q, t, m)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_score_float32_close_to_float64():
    case = make_case()
    s64 = ops.score(*case)
    case32 = [c.float() if torch.is_tensor(c) and c.is_floating_point() else c for c in case]
    s32 = ops.score(*case32)
    torch.testing.assert_close(s32.double(), s64, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,spread", [((17, 13, 11), 6.0),   # atoms inside and outside
                                          ((40, 36, 32), 6.0),   # most 32-atom groups inside
                                          ((40, 36, 32), 14.0),  # groups inside and across the border
                                          ((9, 12, 1), 4.0),     # one-voxel x axis
                                          ((1, 6, 7), 30.0)])    # one-voxel z, most clamped
def test_score_float32_one_channel_gradients_match_float64_reference(shape, spread):
    """The float32 one-channel path (8 atoms per step on AVX2) against float64."""
    case = make_case(C=1, sizes=(1, 7, 8, 9, 203), P=60, shape=shape, spread=spread, seed=3)
    vol, w, o, v, pts, off, q, t, m = case
    want = score_reference(vol, w, o, v, pts, off, q.requires_grad_(), t.requires_grad_(), m)
    want.sum().backward()
    f32 = [c.float() if torch.is_tensor(c) and c.is_floating_point() else c for c in case]
    s, gq, gt = ops.score_with_grad(*[c.detach() if torch.is_tensor(c) else c for c in f32])
    torch.testing.assert_close(s.double(), want.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gq.double(), q.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gt.double(), t.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("C,shape,spread", [(1, (40, 36, 32), 6.0),    # groups inside the grid
                                            (1, (17, 13, 11), 14.0),   # clamped atoms
                                            (1, (9, 12, 1), 4.0),      # one-voxel x axis
                                            (3, (40, 30, 20), 6.0)])   # several channels
def test_score_without_autograd_is_the_score_with_gradients(dtype, C, shape, spread):
    """A call that needs no gradient runs the kernel's score-only form (a scan): the same
    scores, bit for bit, as the full kernel's."""
    case = make_case(C=C, sizes=(1, 7, 200, 33), P=300, shape=shape, spread=spread, seed=5)
    case = [c.to(dtype) if torch.is_tensor(c) and c.is_floating_point() else c for c in case]
    alone = ops.score(*case)
    with_grads = ops.score_with_grad(*case)[0]
    assert torch.equal(alone, with_grads)


_CPU_VARIANTS = ("baseline", "avx2", "avx512")  # slowest to fastest


@pytest.mark.slow
@pytest.mark.parametrize("variant", _CPU_VARIANTS[:-1])
def test_lower_cpu_builds_pass_the_kernel_tests(variant):
    """DIFFFIT_CPU=baseline|avx2 caps the CPU build; each must pass the same checks."""
    running = ops.load().build_info()["cpu_variant"]
    if _CPU_VARIANTS.index(running) <= _CPU_VARIANTS.index(variant):
        pytest.skip(f"this machine runs the {running} build already")
    env = {**os.environ, "DIFFFIT_CPU": variant}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                          "-k", "matches_reference or float32 or gradcheck or outside or one_voxel"
                          " or without_autograd"],
                         env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " passed" in run.stdout
    probe = subprocess.run([sys.executable, "-c", "import difffit; print(difffit.build_info()['cpu_variant'])"],
                           env=env, capture_output=True, text=True)
    assert probe.stdout.strip() == variant


def test_analytic_gradient_matches_autograd_of_reference():
    vol, w, o, v, pts, off, q, t, m = make_case()
    q1, t1 = q.clone().requires_grad_(), t.clone().requires_grad_()
    q2, t2 = q.clone().requires_grad_(), t.clone().requires_grad_()
    up = torch.randn(q.shape[0], dtype=q.dtype)
    (ops.score(vol, w, o, v, pts, off, q1, t1, m) * up).sum().backward()
    (score_reference(vol, w, o, v, pts, off, q2, t2, m) * up).sum().backward()
    torch.testing.assert_close(q1.grad, q2.grad, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(t1.grad, t2.grad, rtol=1e-8, atol=1e-10)


def test_eager_calls_match_the_registered_op():
    """Eager calls skip the dispatcher (ops._direct, ops._ScoreFunction); the registered op
    (what torch.compile and opcheck see) must give bitwise the same values and gradients."""
    vol, w, o, v, pts, off, q, t, m = make_case()
    frame = list(o) + list(v)
    up = torch.randn(q.shape[0], dtype=q.dtype, generator=torch.Generator().manual_seed(2))
    grads = []
    for call in (lambda qq, tt: ops.score(vol, w, o, v, pts, off, qq, tt, m),
                 lambda qq, tt: ops._score_op(vol, w, frame, pts, off, qq, tt, m)[0]):
        qq, tt = q.clone().requires_grad_(), t.clone().requires_grad_()
        s = call(qq, tt)
        (s * up).sum().backward()
        grads.append((s.detach(), qq.grad, tt.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    pw = torch.rand(pts.shape[0], dtype=pts.dtype, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ops.point_stats(vol, o, v, pts, pw, off, q, t, m, channel=1),
                               ops._stats_op(vol, frame, pts, pw, off, q, t, m, 1, 0.0), rtol=0, atol=0)


def test_score_with_grad_reference_matches_the_op():
    case = make_case(P=9)
    for got, want in zip(ops.score_with_grad(*case), score_with_grad_reference(*case)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_score_with_grad_returns_the_gradients():
    vol, w, o, v, pts, off, q, t, m = make_case(P=7)
    s, gq, gt = ops.score_with_grad(vol, w, o, v, pts, off, q, t, m)
    qq, tt = q.clone().requires_grad_(), t.clone().requires_grad_()
    ops.score(vol, w, o, v, pts, off, qq, tt, m).sum().backward()
    torch.testing.assert_close(gq, qq.grad)
    torch.testing.assert_close(gt, tt.grad)
    # Through the normalisation: d score / dq is orthogonal to q.
    assert torch.allclose((gq * q).sum(1), torch.zeros(7, dtype=q.dtype), atol=1e-10)


def test_gradcheck():
    vol, w, o, v, pts, off, q, t, m = make_case(sizes=(3, 5), P=4, spread=3.0)
    q.requires_grad_()
    t.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda q_, t_: ops.score(vol, w, o, v, pts, off, q_, t_, m), (q, t), eps=1e-6, atol=1e-6)


def test_opcheck():
    vol, w, o, v, pts, off, q, t, m = make_case(sizes=(3, 5), P=4)
    frame = list(o) + list(v)
    q.requires_grad_()
    t.requires_grad_()
    torch.library.opcheck(ops._score_op, (vol, w, frame, pts, off, q, t, m))
    torch.library.opcheck(ops._stats_op, (vol, frame, pts, torch.rand(8, dtype=vol.dtype), off,
                                          q.detach(), t.detach(), m, 1, 0.1))
    torch.library.opcheck(ops._splat_op, (pts, torch.rand(8, dtype=pts.dtype), 1.5, 3.0,
                                          [6, 5, 4], frame))


def test_torch_compile_fullgraph_forward_backward():
    vol, w, o, v, pts, off, q, t, m = make_case(P=9)

    def loss(q_, t_):
        return -ops.score(vol, w, o, v, pts, off, q_, t_, m, validate=False).sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    q1, t1 = q.clone().requires_grad_(), t.clone().requires_grad_()
    q2, t2 = q.clone().requires_grad_(), t.clone().requires_grad_()
    l1, l2 = loss(q1, t1), compiled(q2, t2)
    l1.backward()
    l2.backward()
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(q1.grad, q2.grad)
    torch.testing.assert_close(t1.grad, t2.grad)


def test_atoms_outside_the_grid_clamp_to_the_border():
    vol, w, o, v, pts, off, q, t, m = make_case(P=12)
    t = t + torch.tensor([200.0, -150.0, 90.0], dtype=t.dtype)  # everything far outside
    got, gq, gt = ops.score_with_grad(vol, w, o, v, pts, off, q, t, m)
    want = score_reference(vol, w, o, v, pts, off, q, t, m)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # Far outside on every axis the value is one corner voxel and nothing moves it.
    assert torch.all(gt == 0) and torch.all(gq == 0)
    corner = (vol[-1, 0, -1] * w).sum()  # z high, y low, x high
    torch.testing.assert_close(got, corner.expand_as(got))


def test_single_atom_and_one_voxel_thick_axis():
    vol, w, o, v, pts, off, q, t, m = make_case(sizes=(1,), P=5, shape=(3, 9, 8))
    vol = vol[:1].contiguous()
    got = ops.score(vol, w, o, v, pts, off, q, t, m)
    # A one-voxel axis is constant along that axis: compare with a 2-voxel copy of it.
    vol2 = vol.expand(2, -1, -1, -1).contiguous()
    want = score_reference(vol2, w, o, v, pts, off, q, t, m)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


# 40 placements run on one thread; 800 x 400 points take the multi-threaded path.
@pytest.mark.parametrize("P,sizes", [(40, (1, 50, 200)), (800, (300, 500))])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_point_stats_matches_reference(P, sizes, dtype):
    case = make_case(P=P, sizes=sizes)
    case = [c.to(dtype) if torch.is_tensor(c) and c.is_floating_point() else c for c in case]
    vol, w, o, v, pts, off, q, t, m = case
    pw = torch.rand(pts.shape[0], dtype=dtype, generator=torch.Generator().manual_seed(5))
    got = ops.point_stats(vol, o, v, pts, pw, off, q, t, m, channel=2, threshold=0.05)
    want = point_stats_reference(*[c.double() if torch.is_tensor(c) and c.is_floating_point() else c
                                   for c in (vol, o, v, pts, pw, off, q, t, m)], channel=2, threshold=0.05)
    if dtype == torch.float64:
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    else:  # float32 samples, double sums; the inside count may differ where d ~ threshold
        torch.testing.assert_close(got[:, :5].double(), want[:, :5], rtol=1e-5, atol=1e-3)
        assert (got[:, 5].double() - want[:, 5]).abs().max() <= 2


def test_splat_matches_reference_and_molmap_integral():
    g = torch.Generator().manual_seed(3)
    pts = torch.rand(60, 3, generator=g, dtype=torch.float64) * 10 + 2
    amp = torch.randint(6, 9, (60,), generator=g).double()
    args = (pts, amp, 1.2, 3.0, (14, 15, 16), (0.5, 0.0, -0.5), (1.0, 0.95, 1.05))
    got = ops.splat(*args)
    torch.testing.assert_close(ops.splat(*args), got, rtol=0, atol=0)  # bitwise reproducible
    threads = torch.get_num_threads()
    try:  # each voxel sums its atoms in input order, however the planes are shared out
        torch.set_num_threads(1)
        torch.testing.assert_close(ops.splat(*args), got, rtol=0, atol=0)
    finally:
        torch.set_num_threads(threads)
    # The kernel agrees with a numpy float64 molmap to 1e-14 every time; torch's float64 exp
    # in the reference was off by up to 3e-9 (relative) in about 1 run in 25 of this file
    # (seen 2026-11-30, torch 2.13.0 CPU), hence rtol 1e-7: a wrong sigma, cutoff, frame or
    # inclusion rule moves values by 1e-3 or more.
    torch.testing.assert_close(got, splat_reference(*args), rtol=1e-7, atol=1e-9)
    # With a wide cutoff on a fine grid each Gaussian integrates to amp (2 pi)^1.5 sigma^3.
    one = ops.splat(torch.tensor([[5.0, 5.0, 5.0]], dtype=torch.float64), torch.tensor([7.0], dtype=torch.float64),
                    1.0, 5.0, (41, 41, 41), (0.0, 0.0, 0.0), (0.25, 0.25, 0.25))
    assert math.isclose(float(one.sum()) * 0.25 ** 3, 7 * (2 * math.pi) ** 1.5, rel_tol=1e-4)


def test_numpy_in_numpy_out():
    case = make_case(P=6)
    np_case = [c.numpy() if torch.is_tensor(c) else c for c in case]
    got = ops.score(*np_case)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, ops.score(*case).numpy())


def test_real_map_score_peaks_at_the_deposited_pose(shared_data):
    """On a real map the deposited model scores higher than the same model moved away."""
    import gemmi

    with mrcfile.open(data_file(shared_data, "daq_emd2566_3j6b/2566_3J6B_9.mrc"),
                      permissive=False) as mrc:
        data = np.asarray(mrc.data, dtype=np.float64)
        origin = [float(mrc.header.origin[a]) for a in "xyz"]
        voxel = [float(mrc.voxel_size[a]) for a in "xyz"]
    st = gemmi.read_structure(str(data_file(shared_data, "daq_emd2566_3j6b/3J6B_9.pdb")))
    xyz = np.array([[a.pos.x, a.pos.y, a.pos.z] for r in st[0][0] for a in r if a.name == "CA"])
    c = xyz.mean(0)
    vol = torch.from_numpy(np.ascontiguousarray(data[..., None]))
    pts = torch.from_numpy(xyz - c)
    off = torch.tensor([0, len(xyz)])
    q = torch.tensor([[1.0, 0, 0, 0], [0.9, 0.3, 0.1, 0.0], [1.0, 0, 0, 0]], dtype=torch.float64)
    t = torch.from_numpy(np.stack([c, c, c + np.array([4.0, 0, 0])]))
    m = torch.zeros(3, dtype=torch.int64)
    s = ops.score(vol, torch.ones(1, dtype=torch.float64), origin, voxel, pts, off, q, t, m)
    assert s[0] > s[1] + 0.5 * s[0].abs() and s[0] > s[2]
    torch.testing.assert_close(s, score_reference(vol, torch.ones(1, dtype=torch.float64), origin, voxel, pts, off, q, t, m))


# ---------------------------------------------------------------------------------------
# Bad input: a clear error, never silent garbage.


def test_wrong_dtype_is_rejected():
    vol, w, o, v, pts, off, q, t, m = make_case()
    with pytest.raises(DifffitInputError, match="quat must have dtype"):
        ops.score(vol, w, o, v, pts, off, q.float(), t, m)
    with pytest.raises(DifffitInputError, match="offsets must have dtype"):
        ops.score(vol, w, o, v, pts, off.int(), q, t, m)


def test_wrong_shape_is_rejected():
    vol, w, o, v, pts, off, q, t, m = make_case()
    with pytest.raises(DifffitInputError, match="points must have shape"):
        ops.score(vol, w, o, v, pts[:, :2].contiguous(), off, q, t, m)
    with pytest.raises(DifffitInputError, match="weights must have shape"):
        ops.score(vol, w[:2].contiguous(), o, v, pts, off, q, t, m)
    with pytest.raises(DifffitInputError, match="volume must have shape"):
        ops.score(vol[..., 0].contiguous(), w, o, v, pts, off, q, t, m)


def test_non_contiguous_is_rejected():
    vol, w, o, v, pts, off, q, t, m = make_case()
    with pytest.raises(DifffitInputError, match="contiguous"):
        ops.score(vol, w, o, v, pts, off, q.t().contiguous().t(), t, m)
    with pytest.raises(DifffitInputError, match="contiguous"):
        ops.score(vol.transpose(0, 2), w, o, v, pts, off, q, t, m)


def test_empty_molecule_and_bad_indices_are_rejected():
    vol, w, o, v, pts, off, q, t, m = make_case(sizes=(5, 7))
    bad = torch.tensor([0, 5, 5, 12])
    with pytest.raises(DifffitInputError, match="molecule 1 has no atoms"):
        ops.score(vol, w, o, v, pts, bad, q, t, m)
    with pytest.raises(DifffitInputError, match="mol_idx must lie"):
        ops.score(vol, w, o, v, pts, off, q, t, m + 5)
    with pytest.raises(DifffitInputError, match="end at the number of points"):
        ops.score(vol, w, o, v, pts, torch.tensor([0, 5, 11]), q, t, m)
    with pytest.raises(DifffitInputError, match="voxel_size must be positive"):
        ops.score(vol, w, o, (1.0, 0.0, 1.0), pts, off, q, t, m)


def test_cuda_tensor_on_cpu_only_build_says_how_to_rebuild():
    import difffit

    if difffit.build_info()["cuda"] or not torch.cuda.is_available():
        pytest.skip("needs a GPU with a CPU-only build to provoke the error")
    vol, w, o, v, pts, off, q, t, m = [c.cuda() if torch.is_tensor(c) else c for c in make_case()]
    with pytest.raises(RuntimeError, match="Rebuild"):
        ops.score(vol, w, o, v, pts, off, q, t, m)


def test_zero_placements_give_empty_outputs():
    vol, w, o, v, pts, off, q, t, m = make_case()
    s, gq, gt = ops.score_with_grad(vol, w, o, v, pts, off, q[:0], t[:0], m[:0])
    assert s.shape == (0,) and gq.shape == (0, 4) and gt.shape == (0, 3)
    st = ops.point_stats(vol, o, v, pts, torch.ones(pts.shape[0], dtype=pts.dtype), off, q[:0], t[:0], m[:0])
    assert st.shape == (0, 6)


def test_too_many_channels_are_rejected_at_the_kernels_limit():
    """ops reads the kernels' constants from the compiled module (build_info)."""
    info = ops.load().build_info()
    assert ops.NUM_STATS == info["num_stats"] == len(ops.STAT_NAMES)
    assert ops.MAX_CHANNELS == info["max_channels"]
    vol, w, o, v, pts, off, q, t, m = make_case(C=1, shape=(3, 4, 5))
    wide = vol.expand(-1, -1, -1, ops.MAX_CHANNELS + 1).contiguous()
    with pytest.raises(DifffitInputError, match=f"at most {ops.MAX_CHANNELS} are supported"):
        ops.score(wide, torch.ones(wide.shape[3], dtype=wide.dtype), o, v, pts, off, q, t, m)


# ---------------------------------------------------------------------------------------
# The CUDA kernels' per-point code (math.h's score_point / stats_point and the samplers
# under them, looped by kernels.h's score_share / stats_share), run serially on the CPU:
# the CPU kernels above do not execute it, so without this only a GPU run would test it.


@pytest.mark.parametrize("C,P,shape,spread", [
    (3, 2, (40, 30, 20), 6.0),   # several channels: weighted corners (no channel sum first)
    (1, 60, (17, 13, 11), 6.0),  # atoms inside and outside the grid
    (1, 30, (9, 12, 1), 4.0),    # one-voxel x axis
    (2, 30, (1, 6, 7), 30.0),    # one-voxel z axis, most atoms clamped
])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_per_point_code_on_the_cpu_matches_reference(C, P, shape, spread, dtype):
    case = make_case(C=C, sizes=(1, 7, 203), P=P, shape=shape, spread=spread, seed=4)
    vol, w, o, v, pts, off, q, t, m = case
    frame = list(o) + list(v)
    want = score_with_grad_reference(*case)
    pw = torch.rand(pts.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    want_stats = point_stats_reference(vol, o, v, pts, pw, off, q, t, m, channel=C - 1, threshold=0.05)
    vol, w, pts, q, t, pw = (x.to(dtype) for x in (vol, w, pts, q, t, pw))
    got = ops._run_score(vol, w, frame, pts, off, q, t, m, pointwise=True)
    stats = ops._run_stats(vol, frame, pts, pw, off, q, t, m, C - 1, 0.05, pointwise=True)
    if dtype == torch.float64:
        for g, want_g in zip(got, want):
            torch.testing.assert_close(g, want_g, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(stats, want_stats, rtol=1e-10, atol=1e-10)
    else:  # float32 points and sums; the inside count may differ where d ~ threshold
        for g, want_g, tol in zip(got, want, (1e-5, 1e-4, 1e-4)):
            torch.testing.assert_close(g.double(), want_g, rtol=tol, atol=tol)
        torch.testing.assert_close(stats[:, :5].double(), want_stats[:, :5], rtol=1e-5, atol=1e-3)
        assert (stats[:, 5].double() - want_stats[:, 5]).abs().max() <= 2
