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

from difffit import build_info
from difffit.reference import score_reference

import bench_kernels  # noqa: E402  (same folder: the shared workload)
from bench_kernels import fwd_bwd, fast as fused  # noqa: E402

REF_MAX_PAIRS = 10_000_000  # (placement, atom) pairs the reference is timed up to


def workload(*args, **kwargs):
    """The CPU benchmark's workload (same map, molecule and placements), on the GPU."""
    return bench_kernels.workload(*args, device="cuda", **kwargs)


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
