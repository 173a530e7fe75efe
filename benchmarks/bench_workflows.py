"""Workflow benchmark: composite on haemoglobin, identify on a library of 300 candidates.

* composite: EMD-3488 with the alpha and the beta chain of 5NI1, each moved away from its
  deposited pose, copy numbers not given (the acceptance case of tests/test_composite.py).
* identify: the DiffFit demo density against a library made of the shared structures
  (the two PACRG domains, the decoy and every in-frame model of ../shared/data), each
  repeated under different chain names and random poses up to ``--candidates``.

Each workflow runs in a process of its own, so the peak memory printed (maximum resident
set size) is that workflow's alone. Default search settings unless ``--quick``.

    python benchmarks/bench_workflows.py [--candidates 300] [--quick] [--only composite|identify]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_fit import DATA, random_move  # noqa: E402
from test_identify import CONTOUR, DECOYS, DEMO, PACRG, RES  # noqa: E402

QUICK = dict(n_rotations=30, n_positions=5, n_iters=100)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_composite(quick: bool) -> dict:
    from difffit import composite
    from test_composite import hb_inputs

    hb = hb_inputs(DATA)
    dmap, moved = hb["map"], hb["moved"]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = composite(dmap, moved, 3.2, outdir=Path(tmp) / "out", **(QUICK if quick else {}))
        sec = time.perf_counter() - t0
    placed = [p.structure_name for p in res.placements]
    return {"workflow": "composite", "seconds": sec, "rounds": len(res.rounds),
            "placed": {n: placed.count(n) for n in ("alpha", "beta")},
            "fit_atoms": int(sum(s.n_fit_atoms for s in moved)), "peak_mb": _peak_mb()}


def _renamed_copy(s, k: int, rng: np.random.Generator):
    """The structure under new chain names (suffix k) and a random pose: a new candidate."""
    g = s.gemmi_structure.clone()
    mapping = {}
    for ch in g[0]:
        mapping[ch.name] = f"{ch.name}{k}"
        ch.name = mapping[ch.name]
    g.setup_entities()
    R, t = random_move(int(rng.integers(1 << 30)))
    moved = dataclasses.replace(s, name=f"{s.name}_copy{k}", gemmi_structure=g,
                                chain_ids=np.array([mapping.get(c, c) for c in s.chain_ids]))
    return moved.transformed(R, t)


def run_identify(n_candidates: int, quick: bool) -> dict:
    from difffit import identify
    from difffit.io import read_structure

    base = [read_structure(DATA / DEMO / f"{name}.pdb") for name in PACRG]
    base += [read_structure(DATA / f) for f in DECOYS]
    rng = np.random.default_rng(0)
    library = [_renamed_copy(base[i % len(base)], i // len(base), rng) for i in range(n_candidates)]
    t0 = time.perf_counter()
    res = identify(DATA / DEMO / "density2.mrc", library, RES, CONTOUR, **(QUICK if quick else {}))
    sec = time.perf_counter() - t0
    top = [c.name for c in res.candidates[:4]]
    return {"workflow": "identify", "seconds": sec, "candidates": n_candidates,
            "batches": len(res.batches),
            "fit_atoms": int(sum(s.n_fit_atoms for s in library)),
            "top": top, "peak_mb": _peak_mb()}


def _child(args) -> None:
    out = run_composite(args.quick) if args.child == "composite" else run_identify(args.candidates, args.quick)
    print("RESULT " + json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, default=300)
    ap.add_argument("--quick", action="store_true", help=f"reduced search {QUICK}")
    ap.add_argument("--only", choices=("composite", "identify"), default=None)
    ap.add_argument("--child", choices=("composite", "identify"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args)
    import torch

    print(f"torch threads={torch.get_num_threads()} search={'quick ' + str(QUICK) if args.quick else 'default'}")
    for name in ("composite", "identify"):
        if args.only and name != args.only:
            continue
        cmd = [sys.executable, __file__, "--child", name, "--candidates", str(args.candidates)]
        run = subprocess.run(cmd + (["--quick"] if args.quick else []), capture_output=True, text=True)
        line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT ")), None)
        if run.returncode or line is None:
            print(f"{name}: failed\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
            continue
        r = json.loads(line[7:])
        if name == "composite":
            n = sum(r["placed"].values())
            print(f"composite (haemoglobin, alpha + beta, copies open): {r['seconds']:.1f} s, "
                  f"{r['rounds']} rounds, placed {r['placed']} -> {r['seconds'] / max(n, 1):.1f} s per "
                  f"chain placed; peak memory {r['peak_mb']:.0f} MB")
        else:
            print(f"identify ({r['candidates']} candidates, {r['fit_atoms']} fitted atoms, "
                  f"{r['batches']} batches): {r['seconds']:.1f} s -> "
                  f"{r['candidates'] / r['seconds']:.2f} candidates/s, "
                  f"{r['seconds'] / r['candidates']:.2f} s per candidate; top 4 {r['top']}; "
                  f"peak memory {r['peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
