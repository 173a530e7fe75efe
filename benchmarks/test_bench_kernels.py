"""pytest-benchmark suite of the kernels and of one default fit, for tracking regressions.

    pytest benchmarks/ --benchmark-only                      # time everything
    pytest benchmarks/ --benchmark-only --benchmark-autosave # keep the run in .benchmarks/
    pytest benchmarks/ --benchmark-only --benchmark-compare  # against the last saved run
    pytest benchmarks/ --benchmark-disable                   # run each once, as a check

Every benchmark checks its result first (against the pure-PyTorch reference, or the
deposited pose for the fit), so a fast wrong kernel fails instead of winning. The
W1 ratio fused / reference is in ``bench_kernels.py``, which times both in one run;
here the reference has its own row (``test_w1_reference``) and ``--benchmark-compare``
tracks each. CUDA rows run only with a GPU and a CUDA build.
"""
from __future__ import annotations

import pytest
import torch

from bench_kernels import check, fast, fwd_bwd, workload
from difffit import build_info, ops
from difffit.reference import point_stats_reference, score_reference, splat_reference

DEVICES = ["cpu"] + (["cuda"] if build_info()["cuda_available"] else [])


@pytest.fixture(scope="module", params=DEVICES)
def w1(request):
    """W1: 100^3 map, 4 channels, 1000 placements of a 1000-atom molecule (float32)."""
    return request.param, workload(device=request.param)


def _timed(benchmark, fn, case, device, rounds=None):
    def run():
        out = fwd_bwd(fn, case)
        if device == "cuda":
            torch.cuda.synchronize()
        return out
    if rounds:
        return benchmark.pedantic(run, rounds=rounds, warmup_rounds=1)
    return benchmark(run)


def test_w1_fused(benchmark, w1):
    device, case = w1
    check(case, device)
    benchmark.extra_info["workload"] = "W1 fused forward + backward"
    _timed(benchmark, fast, case, device)


def test_w1_reference(benchmark, w1):
    device, case = w1
    benchmark.extra_info["workload"] = "W1 pure-PyTorch reference (grid_sample + autograd)"
    _timed(benchmark, score_reference, case, device, rounds=3)


@pytest.mark.parametrize("n_atoms,n_place", [(100, 1000), (10000, 1000), (1000, 100), (1000, 10000)])
def test_scaling(benchmark, n_atoms, n_place):
    case = workload(n_atoms, n_place)
    s, gq, gt = fwd_bwd(fast, case)
    assert torch.isfinite(s).all() and torch.isfinite(gq).all() and torch.isfinite(gt).all()
    benchmark.extra_info["samples"] = n_atoms * n_place
    _timed(benchmark, fast, case, "cpu")


def test_fitting_case_one_channel(benchmark):
    """What the fitter calls 200 times per fit: float32, channels already summed."""
    vol, w, o, v, pts, off, q, t, m = workload()
    vol1 = (vol @ w).unsqueeze(-1).contiguous()
    one = torch.ones(1)
    s, _, _ = ops.score_with_grad(vol1, one, o, v, pts, off, q, t, m)
    torch.testing.assert_close(s, ops.score(vol, w, o, v, pts, off, q, t, m), rtol=1e-5, atol=1e-5)
    benchmark(ops.score_with_grad, vol1, one, o, v, pts, off, q, t, m, validate=False)


def test_point_stats(benchmark):
    """Fit metrics: 200 placements x 20,000 weighted points, float64."""
    vol, _, o, v, pts, off, q, t, m = workload(n_atoms=20000, n_place=200, dtype=torch.float64)
    vol = vol[..., :1].contiguous()
    pw = torch.rand(pts.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    args = (vol, o, v, pts, pw, off, q, t, m)
    torch.testing.assert_close(ops.point_stats(*args, threshold=0.5),
                               point_stats_reference(*args, threshold=0.5), rtol=1e-9, atol=1e-9)
    benchmark(ops.point_stats, *args, threshold=0.5, validate=False)


def test_splat(benchmark):
    """A simulated map: 5,000 atoms at 4 A resolution (ChimeraX molmap sigma) on 100^3."""
    g = torch.Generator().manual_seed(2)
    pts = 50 + torch.randn(5000, 3, generator=g, dtype=torch.float64) * 12
    amp = torch.full((5000,), 6.0, dtype=torch.float64)
    args = (pts, amp, 0.225 * 4.0, 5.0, (100, 100, 100), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    # The reference (every atom against every voxel) on a part: 500 atoms, a 30^3 corner.
    part = (pts[:500] - 35, amp[:500], 0.9, 5.0, (30, 30, 30), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    # rtol 1e-7: see tests/test_ops.py (torch's float64 exp in the reference is not always exact)
    torch.testing.assert_close(ops.splat(*part), splat_reference(*part), rtol=1e-7, atol=1e-9)
    benchmark(ops.splat, *args)


def test_default_fit_daq(benchmark):
    """End to end: the default fit of the daq domain, moved away first (bench_fit.py's run)."""
    from bench_fit import CASES, DATA, run  # bench_fit puts tests/ on the path
    case = next(c for c in CASES if c[0] == "daq")
    if not (DATA / case[1]).exists():
        pytest.skip("../shared/data is not beside the checkout")
    result = benchmark.pedantic(run, args=(case,), rounds=3, warmup_rounds=0)
    _, _, _, (deg, shift, _) = result
    assert deg < 6 and shift < 3
