"""Joint assembly against greedy composite, on the same inputs.

Cases (the maps low-pass filtered by the benchmark itself, sigma = resolution / (pi sqrt 2),
molmap's convention; every subunit moved by a random rigid transform first):

* ``hb12``, ``hb15``: EMD-3488 at 12 A and 15 A; haemoglobin's alpha (A) and beta (B)
  chains, two copies each; right = within 3 A and 6 degrees of a distinct deposited chain
  of its kind (alpha: A, C; beta: B, D).
* ``hb20``: the same at 20 A (alpha and beta look alike there).
* ``actin3``: EMD-5168 (F-actin) cut to three neighbouring subunits and blurred to 10 A;
  3MFP, three copies; right = within 3 A / 6 degrees of the deposited subunit or one of its
  two neighbours up the helix (the helical step measured from the subunit's own fits).
* ``actin5``: the whole filament map at 10 A, five copies (the five whole subunits of the
  box; a sixth is cut by the box's edge).

Both workflows get the same copy numbers and default search settings. Per case: placed
right and seconds for each; the last line is ``assemble placed_right=<n>/<total>``.

    python benchmarks/bench_assemble.py [--only hb12,actin3] [--quick]
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import data_dirs  # noqa: E402
from test_assemble import (actin_case, actin_inputs, blurred, ca_by_number,  # noqa: E402
                           hb_case, placed_right)

QUICK = dict(n_rotations=50, n_positions=8)


def actin_whole(root: Path, n_sub: int = 5, resolution: float = 10.0) -> dict:
    """The whole filament box blurred to ``resolution``, n_sub subunits to place."""
    dmap, model, poses, moved = actin_inputs(root, n_sub)
    return {"map": blurred(dmap, resolution), "structures": [moved], "copies": n_sub,
            "resolution": resolution, "total": n_sub,
            "truths": {"actin": [ca_by_number(model.transformed(R, t)) for R, t in poses]}}


CASES = {
    "hb12": lambda root: hb_case(root, 12.0),
    "hb15": lambda root: hb_case(root, 15.0),
    "hb20": lambda root: hb_case(root, 20.0),
    "actin3": lambda root: actin_case(root, 3),
    "actin5": lambda root: actin_whole(root, 5),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(CASES), help="comma-separated cases")
    ap.add_argument("--quick", action="store_true", help="a smaller own-fit search")
    args = ap.parse_args()
    from difffit import assemble, composite

    root = data_dirs()[-1]
    kw = QUICK if args.quick else {}
    total_a = total_c = total = 0
    print(f"{'case':8s} {'units':>5s}  {'assemble':>9s} {'s':>6s}  {'composite':>9s} {'s':>6s}")
    for name in args.only.split(","):
        case = CASES[name](root)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            ra = assemble(case["map"], case["structures"], case["resolution"],
                          copies=case["copies"], **kw)
            ta = time.perf_counter() - t0
            t0 = time.perf_counter()
            rc = composite(case["map"], case["structures"], case["resolution"],
                           copies=case["copies"], **kw)
            tc = time.perf_counter() - t0
        na, ea = placed_right(ra, case["truths"])
        nc, ec = placed_right(rc, case["truths"])
        n = case["total"]
        total_a, total_c, total = total_a + na, total_c + nc, total + n
        print(f"{name:8s} {n:5d}  {na:4d}/{n:<4d} {ta:6.1f}  {nc:4d}/{n:<4d} {tc:6.1f}", flush=True)
        print(f"  assemble (structure, copy, truth, deg, A): {ea}")
        print(f"  composite: {ec}", flush=True)
    print(f"composite placed_right={total_c}/{total}")
    print(f"assemble placed_right={total_a}/{total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
