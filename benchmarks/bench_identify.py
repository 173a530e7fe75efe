"""Identify at library scale: the 300-candidate library of bench_workflows.py ranked by the
plain atom fit of every candidate, and with the coarse first pass (a Gaussian per 20
fitted atoms over the whole library, then full fits of the candidates that could still
reach the top K; difffit.workflows.prescreen).

Each run is a process of its own (its peak resident memory is its own); both use the
default search. The last line is

    identify speedup_vs_atoms=<ratio> top4_atoms=[...] top4_first_pass=[...] same_top4=<bool>

    python benchmarks/bench_identify.py [--candidates 300] [--top 4] [--quick] [--repeats 3]

The first-pass run is repeated (``--repeats``, default 3: it takes seconds, and this
shared box slows one run by up to 20 % now and then) and its median time taken; every
repeat must rank alike. The plain run, minutes long, runs once.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_workflows import QUICK, _renamed_copy  # noqa: E402
from test_fit import DATA, random_move  # noqa: E402
from test_identify import CONTOUR, DECOYS, DEMO, PACRG, RES  # noqa: E402


def _library(n: int, kind: str = "copies"):
    """``copies``: bench_workflows.py's library (11 structures, each repeated under random
    poses). ``fragments``: n distinct candidates: the two PACRG domains and the demo's
    decoy once each, then windows of 50-130 residues of every protein chain of the other
    shared models (a proteome-like library: one or two answers among many different
    proteins), each under a random pose."""
    from difffit.io import read_structure

    base = [read_structure(DATA / DEMO / f"{name}.pdb") for name in PACRG]
    base += [read_structure(DATA / f) for f in DECOYS]
    rng = np.random.default_rng(0)
    if kind == "copies":
        return [_renamed_copy(base[i % len(base)], i // len(base), rng) for i in range(n)]
    out = [s.transformed(*random_move(int(rng.integers(1 << 30)))) for s in base[:3]]
    windows = [(f, ch, a, w) for w in (50, 70, 90, 110, 130) for f, ch, length in _chains()
               for a in range(0, length - w + 1, 6)]
    pick = np.sort(rng.choice(len(windows), size=min(n - 3, len(windows)), replace=False))
    for k in pick:
        out.append(read_structure(_window(*windows[k])).transformed(
            *random_move(int(rng.integers(1 << 30)))))
    return out


def _chains() -> list[tuple[str, str, int]]:
    """(file, chain, polymer length) of every protein chain of the shared decoy models
    (the demo's own decoy and the shifted copy of the spike domain excepted;
    haemoglobin's alpha and beta once each)."""
    import gemmi

    out = []
    for f in DECOYS[1:]:
        if "shifted" in f:
            continue
        g = gemmi.read_structure(str(DATA / f))
        for ch in g[0]:
            if "5ni1" in f and ch.name not in ("A", "B"):
                continue
            length = len(ch.get_polymer())
            if length >= 50:
                out.append((f, ch.name, length))
    return out


def _window(f: str, chain: str, a: int, w: int):
    """Residues a .. a + w - 1 of one chain, as a gemmi.Structure named after them."""
    import gemmi

    g = gemmi.read_structure(str(DATA / f))
    m = g[0]
    for name in [c.name for c in m if c.name != chain]:
        m.remove_chain(name)
    ch = m[chain]
    del ch[a + w:]
    del ch[:a]
    g.name = f"{Path(f).stem}_{chain}{a + 1}-{a + w}"
    return g


def _child(args) -> None:
    from difffit import identify

    library = _library(args.candidates, args.library)
    extra = dict(first_pass=True, first_pass_top=args.top) if args.child == "first_pass" else {}
    t0 = time.perf_counter()
    res = identify(DATA / DEMO / "density2.mrc", library, RES, CONTOUR,
                   **(QUICK if args.quick else {}), **extra)
    sec = time.perf_counter() - t0
    out = {"mode": args.child, "seconds": sec, "timings": res.timings,
           "top": [c.name for c in res.candidates[:args.top]],
           "top_scores": [c.score for c in res.candidates[:args.top]],
           "scores": {c.name: c.score for c in res.candidates},
           "first_pass": getattr(res, "first_pass", None),
           "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    print("RESULT " + json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, default=300)
    ap.add_argument("--top", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help=f"reduced search {QUICK}")
    ap.add_argument("--repeats", type=int, default=3,
                    help="first-pass runs (seconds: their median; the plain run, minutes "
                         "long, runs once)")
    ap.add_argument("--library", choices=("copies", "fragments"), default="copies",
                    help="copies: bench_workflows.py's library; fragments: distinct candidates")
    ap.add_argument("--child", choices=("atoms", "first_pass"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args)
    import torch

    print(f"torch threads={torch.get_num_threads()} candidates={args.candidates} "
          f"library={args.library} "
          f"search={'quick ' + str(QUICK) if args.quick else 'default'}", flush=True)
    runs = {}
    for mode in ("atoms",) + ("first_pass",) * args.repeats:
        cmd = [sys.executable, __file__, "--child", mode, "--candidates", str(args.candidates),
               "--top", str(args.top), "--library", args.library] + (["--quick"] if args.quick else [])
        run = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT ")), None)
        if run.returncode or line is None:
            print(f"{mode}: failed\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
            return 1
        r = json.loads(line[7:])
        print(f"{mode}: {r['seconds']:.1f} s, peak memory {r['peak_mb']:.0f} MB, top "
              f"{args.top} {r['top']} {[round(s, 4) for s in r['top_scores']]}", flush=True)
        same = (lambda x, y: json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True))
        if mode in runs and not (same(r["top"], runs[mode]["top"])
                                 and same(r["scores"], runs[mode]["scores"])):  # NaN-safe
            print(f"{mode}: a repeat ranked differently")
            return 1
        runs.setdefault(mode, r).setdefault("all_seconds", []).append(r["seconds"])
    f = runs["first_pass"]
    f["seconds"] = float(np.median(f["all_seconds"]))
    if args.repeats > 1:
        print(f"first_pass: median of {args.repeats} runs {f['seconds']:.1f} s "
              f"({', '.join(f'{x:.1f}' for x in f['all_seconds'])}; each the same ranking)")
    fp = runs["first_pass"]["first_pass"]
    a, f = runs["atoms"], runs["first_pass"]
    common = [n for n, s in f["scores"].items() if s is not None and np.isfinite(s)]
    diff = max((abs(f["scores"][n] - a["scores"][n]) for n in common), default=float("nan"))
    print(f"first pass: {f['timings'].get('first_pass', float('nan')):.1f} s over "
          f"{args.candidates} candidates; full fits of {fp['fitted']} in rounds {fp['rounds']} "
          f"({fp['seconds_full']:.1f} s); bound: margin {fp['margin']}, largest gain "
          f"full - estimate {fp['max_gain']:.4f}, gain bound {fp['gain_bound']:.4f}, "
          f"top-{args.top} full score {fp['top_full_score']:.4f}, best screened-out "
          f"estimate {fp['best_screened_estimate']:.4f}; checked (the best screened-out, "
          f"fitted): gains {[round(c['gain'], 4) for c in fp['checked']]}; the {len(common)} fully fitted "
          f"candidates' scores differ from the atom run's by at most {diff:.2g}")
    same = a["top"] == f["top"]
    print(f"identify speedup_vs_atoms={a['seconds'] / f['seconds']:.2f} "
          f"top{args.top}_atoms={a['top']} top{args.top}_first_pass={f['top']} "
          f"same_top{args.top}={same} peak_mb_atoms={a['peak_mb']:.0f} "
          f"peak_mb_first_pass={f['peak_mb']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
