"""End-to-end fitting benchmark on the shared data sets (default settings).

For each in-frame model: move it by a random rigid transform, fit with default settings,
and report time, hits of the top cluster, rotation / shift error and RMSD before and
after refinement. Then the same pipeline on one data set with the compiled ops replaced
by the pure-PyTorch references, and, as the last line,
``fit speedup_vs_torch_reference=<ratio>``.

    python benchmarks/bench_fit.py [--reference-set daq]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_fit import CASES, DATA, pose_error, random_move  # noqa: E402

from difffit import ops, reference  # noqa: E402
from difffit import fit  # noqa: E402
from difffit.rotations import superpose  # noqa: E402
from difffit.io import read_map, read_structure  # noqa: E402


# Haemoglobin chains fitted alone into EMD-3488, which holds two copies of each: the top
# placement may land on either; the error is against the nearer deposited copy.
HB = ("hemoglobin_emd3488_5ni1/emd_3488.mrc", "hemoglobin_emd3488_5ni1/5ni1_updated.cif", 3.2, None)
HB_CASES = [("hb_chain_A", *HB, ("A", "C")), ("hb_chain_B", *HB, ("B", "D"))]


def _copy_poses(model_path, chains):
    """The deposited copies of a chain as (R, t) moving the first chain onto each (Kabsch
    on the CA atoms both chains have)."""
    first = read_structure(DATA / model_path, chains=[chains[0]], selection="ca")
    out = []
    for c in chains:
        other = read_structure(DATA / model_path, chains=[c], selection="ca")
        n = min(first.n_fit_atoms, other.n_fit_atoms)
        out.append(superpose(first.fit_coords[:n], other.fit_coords[:n]))
    return out


def run(case, refine=True, seed=0, **overrides):
    name, map_path, model_path, res, voxel = case[:5]
    chains = case[5] if len(case) > 5 else None
    dmap = read_map(DATA / map_path, voxel_size=voxel)
    model = read_structure(DATA / model_path, chains=None if chains is None else [chains[0]])
    R0, t0 = random_move(seed)
    t = time.perf_counter()
    result = fit(dmap, [model.transformed(R0, t0)], res, refine=refine, **overrides)
    sec = time.perf_counter() - t
    top = result.best(0)
    if chains is None:
        return sec, model.n_fit_atoms, top, pose_error(top, R0, t0, model)
    # The fitted pose of the deposited chain: x -> P (R0 x + t0) + T; against each copy.
    R_fit, t_fit = top.rotation @ R0, top.rotation @ t0 + top.translation
    x = model.coords
    errors = []
    for R, t in _copy_poses(model_path, chains):
        cos = np.clip((np.trace(R_fit @ R.T) - 1) / 2, -1, 1)
        shift = np.linalg.norm((R_fit - R) @ model.centroid + t_fit - t)
        rmsd = np.sqrt(((x @ (R_fit - R).T + t_fit - t) ** 2).sum(1).mean())
        errors.append((float(np.degrees(np.arccos(cos))), float(shift), float(rmsd)))
    return sec, model.n_fit_atoms, top, min(errors, key=lambda e: e[0] + e[1])


def _compiled_op_called(*args, **kwargs):
    raise AssertionError("a compiled score / point_stats op ran inside reference_ops")


class reference_ops:
    """Swaps the compiled ops for the pure-PyTorch references inside the fit pipeline (the
    compiled score and point_stats ops raise if anything still reaches them)."""

    def __enter__(self):
        self.compiled = ops._score_op, ops._stats_op, ops._score_impl, ops._stats_impl
        ops._score_op = ops._stats_op = ops._score_impl = ops._stats_impl = _compiled_op_called
        self.saved = ops.score, ops.score_with_grad, ops.point_stats
        ops.score = lambda *a, validate=True: reference.score_reference(*a)
        ops.score_with_grad = lambda *a, validate=True: reference.score_with_grad_reference(*a)
        ops.point_stats = lambda *a, validate=True, **k: reference.point_stats_reference(*a, **k)

    def __exit__(self, *exc):
        ops.score, ops.score_with_grad, ops.point_stats = self.saved
        ops._score_op, ops._stats_op, ops._score_impl, ops._stats_impl = self.compiled


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference-set", default="daq")
    args = ap.parse_args()
    print(f"torch threads={torch.get_num_threads()}")
    print(f"{'data set':<14}{'atoms':>6}{'time s':>8}{'hits':>6}  {'unrefined deg/A/RMSD':>22}  {'refined deg/A/RMSD':>20}")
    for case in CASES + HB_CASES:
        _, _, raw_top, (a0, s0, r0) = run(case, refine=False)
        sec, atoms, top, (a, s, r) = run(case)
        print(f"{case[0]:<14}{atoms:>6}{sec:>8.2f}{top.hits:>6}  {a0:>7.2f} {s0:>6.2f} {r0:>6.2f}  {a:>7.2f} {s:>6.2f} {r:>6.2f}")
    case = next(c for c in CASES if c[0] == args.reference_set)
    # Atoms only first (the ops' share of the pipeline is largest there), then the default
    # (coarse-to-fine: 150 of the 200 steps with 20x fewer points, in both pipelines).
    ratios = []
    for label, kw in (("atoms only (coarse_iters=0)", {"coarse_iters": 0}), ("default", {})):
        t_fast = run(case, **kw)[0]
        with reference_ops():
            t_ref, _, top_ref, err = run(case, **kw)
        ratios.append(t_ref / t_fast)
        print(f"\n{case[0]}, {label}: compiled ops {t_fast:.2f} s, pure-PyTorch reference ops "
              f"{t_ref:.1f} s (reference top cluster: {err[0]:.2f} deg, {err[1]:.2f} A): "
              f"{t_ref / t_fast:.1f}x")
    print(f"fit speedup_vs_torch_reference={ratios[-1]:.1f} atoms_only={ratios[0]:.1f}")


if __name__ == "__main__":
    main()
