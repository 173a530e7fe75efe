"""CUDA benchmark: the fused score op (forward + backward) against the pure-PyTorch reference
(grid_sample + autograd), in the same run, on the same GPU.

Workload W1: a 100^3 map with 4 channels, 1000 placements of a 1000-atom molecule, float32.
Correctness is checked first. Times are CUDA-event medians after warm-up. Then scaling
rows with atoms (100, 1000, 10000 at 1000 placements) and placements (100 .. 100000 at
1000 atoms); the reference is timed only where it fits in memory comfortably.

    python benchmarks/bench_cuda.py [--repeats 20] [--warmup 3]

Prints ``W1 cuda speedup_vs_torch_reference=<ratio>`` (reference median / fused median).
Without a GPU or without difffit's CUDA kernels it prints one line saying so and exits 0.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys

import torch

from difffit import build_info, ops
from difffit.reference import score_reference

REF_MAX_PAIRS = 10_000_000  # (placement, atom) pairs the reference is timed up to


def workload(n_atoms=1000, n_place=1000, shape=(100, 100, 100), C=4, dtype=torch.float32,
             device="cuda", seed=0):
    """A smooth random map and a compact molecule placed well inside it, like a fitting run."""
    g = torch.Generator().manual_seed(seed)
    D, H, W = shape
    vol = torch.rand(1, C, D // 4, H // 4, W // 4, generator=g, dtype=dtype)
    vol = torch.nn.functional.interpolate(vol, size=shape, mode="trilinear", align_corners=True)
    vol = vol[0].permute(1, 2, 3, 0).contiguous()  # [D, H, W, C]
    weights = torch.rand(C, generator=g, dtype=dtype) + 0.5
    origin, voxel = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    # Atoms of a globular protein: ~1000 atoms fill a ball of radius ~15 A.
    pts = torch.randn(n_atoms, 3, generator=g, dtype=dtype) * 8.0
    offsets = torch.tensor([0, n_atoms], dtype=torch.int64)
    quat = torch.randn(n_place, 4, generator=g, dtype=dtype)
    trans = 20 + torch.rand(n_place, 3, generator=g, dtype=dtype) * 60
    mol_idx = torch.zeros(n_place, dtype=torch.int64)
    to = lambda t: t.to(device)  # noqa: E731
    return (to(vol), to(weights), origin, voxel, to(pts), to(offsets), to(quat), to(trans),
            to(mol_idx))


def fused(*args):
    return ops.score(*args, validate=False)  # validate reads offsets on the host: a sync


def fwd_bwd(fn, case):
    vol, w, o, v, pts, off, q, t, m = case
    q = q.clone().requires_grad_()
    t = t.clone().requires_grad_()
    s = fn(vol, w, o, v, pts, off, q, t, m)
    (-s.sum()).backward()
    return s.detach(), q.grad, t.grad


def cuda_median_ms(fn, case, repeats, warmup):
    """Median over `repeats` of forward + backward, timed with CUDA events."""
    for _ in range(warmup):
        fwd_bwd(fn, case)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fwd_bwd(fn, case)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def check_correctness() -> None:
    """W1 geometry, fused CUDA op against the reference on the GPU, before any timing.

    float64 must agree to rounding. In float32 the score agrees to 1e-4, but a gradient can
    differ by a few tenths of a percent of its largest entry: the two paths compute the moved
    positions with different float32 roundings, an atom within that rounding of a voxel face
    lands in the neighbouring cell, and the trilinear gradient jumps across faces.
    """
    for dtype, rtol, gtol in ((torch.float64, 1e-9, 1e-9), (torch.float32, 1e-4, 2e-2)):
        case = workload(dtype=dtype)
        got = fwd_bwd(fused, case)
        want = fwd_bwd(score_reference, case)
        for name, a, b, tol in zip(("score", "d/dq", "d/dt"), got, want, (rtol, gtol, gtol)):
            scale = float(b.abs().max())
            torch.testing.assert_close(a, b, rtol=tol, atol=tol * scale,
                                       msg=lambda m: f"W1 {dtype} {name}: {m}")
            print(f"correctness {str(dtype)[6:]} {name}: max |fused - reference| = "
                  f"{float((a - b).abs().max()):.2e} (max |reference| {scale:.2e})")
    print("correctness: fused CUDA op matches the reference (score, d/dq, d/dt)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()

    info = build_info()
    if not torch.cuda.is_available():
        print("bench_cuda: no CUDA device visible to torch; nothing to benchmark")
        return 0
    if not info["cuda"]:
        print("bench_cuda: difffit was built without CUDA kernels "
              "(DIFFFIT_CUDA=ON pip install --no-build-isolation .); nothing to benchmark")
        return 0

    props = torch.cuda.get_device_properties(0)
    print(f"command: {' '.join([sys.executable] + sys.argv)}")
    print(f"gpu={props.name} sms={props.multi_processor_count} torch={torch.__version__} "
          f"cuda_runtime(torch)={torch.version.cuda} host={platform.node()}")
    print(f"difffit build: cuda {info['cuda_version']} archs {info['cuda_architectures']}")
    print(f"timing: CUDA events, median of {args.repeats} after {args.warmup} warm-up runs, "
          "forward + backward, float32")

    check_correctness()
    case = workload()

    print("\nscaling (forward + backward, median ms):")
    print(f"{'atoms':>7} {'placements':>10} {'fused_ms':>10} {'ns/pair':>9} {'ref_ms':>10} "
          f"{'speedup':>8}")
    rows = [(100, 1000), (1000, 1000), (10000, 1000),
            (1000, 100), (1000, 10000), (1000, 100000)]
    for n_atoms, n_place in rows:
        c = workload(n_atoms, n_place)
        t_fast = cuda_median_ms(fused, c, args.repeats, args.warmup)
        ref = "-"
        speed = "-"
        if n_atoms * n_place <= REF_MAX_PAIRS:
            t_ref = cuda_median_ms(score_reference, c, max(3, args.repeats // 4), 1)
            ref, speed = f"{t_ref:.2f}", f"{t_ref / t_fast:.1f}"
        print(f"{n_atoms:>7} {n_place:>10} {t_fast:>10.3f} "
              f"{1e6 * t_fast / (n_atoms * n_place):>9.3f} {ref:>10} {speed:>8}")
        del c
        torch.cuda.empty_cache()

    t_fast = cuda_median_ms(fused, case, args.repeats, args.warmup)
    t_ref = cuda_median_ms(score_reference, case, args.repeats, args.warmup)
    print(f"\nW1 (100^3 x 4 channels, 1000 placements x 1000 atoms, fwd+bwd, float32): "
          f"fused {t_fast:.3f} ms, torch reference {t_ref:.2f} ms (medians)")
    print(f"W1 cuda speedup_vs_torch_reference={t_ref / t_fast:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
