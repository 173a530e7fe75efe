"""The learned simulator against molmap and gemmi, leaving one map out in turn.

For each of the shared in-frame map/model pairs: train a small generator on the others
(cubes of 16 voxels, a slim nested U-Net, a few minutes on 2 cores; its residual base, a
blur of the input to a factor of each map's resolution, is fitted to those others too),
simulate the left-out model on its map's grid, and score against the experimental map
(ChimeraX-style correlation and correlation about the mean over the simulated map's 95 %
envelope, Pearson over the box, 3D SSIM) for ``learned``, ``molmap`` at 2 A, ``molmap`` at
the map's resolution and ``gemmi`` at the map's resolution. Last line
``learned_vs_molmap2A_correlation=<mean ratio>``.

    python benchmarks/bench_simulator.py [--epochs 10] [--steps 15] [--only daq,phage]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import data_dirs  # noqa: E402

from difffit import read_map, read_structure  # noqa: E402
from difffit.simulators import get_simulator  # noqa: E402
from difffit.simulators.learned import LearnedSimulator, load_checkpoint  # noqa: E402
from difffit.simulators.scores import map_scores  # noqa: E402
from difffit.simulators.training import Pair, curate, prepare_pair, train  # noqa: E402

DATA = data_dirs()[-1]
# name, map, model, resolution (A, as the tests and benchmarks use), voxel size override
PAIRS = [
    ("daq", "daq_emd2566_3j6b/2566_3J6B_9.mrc", "daq_emd2566_3j6b/3J6B_9.pdb", 5.0, None),
    ("apoferritin", "apoferritin_emd20026_3ajo/emd20026_prot.mrc",
     "apoferritin_emd20026_3ajo/3ajo_fitted_refined.pdb", 3.0, None),
    ("haemoglobin", "hemoglobin_emd3488_5ni1/emd_3488.mrc",
     "hemoglobin_emd3488_5ni1/5ni1_updated.cif", 3.2, None),
    ("spike_ntd", "spike_ntd_emd21457_6vyb/emd_21457_seg.mrc",
     "spike_ntd_emd21457_6vyb/6vyb_Ndom.pdb", 3.5, None),
    ("phage", "phage_emd4054_5lij/emd_4054.mrc", "phage_emd4054_5lij/5lij.pdb", 4.0, 1.38),
    ("actin_cut", "tempy_factin_emd5168/emd_5168_monomer.mrc", "tempy_factin_emd5168/3MFP.pdb",
     6.0, None),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=15, help="steps per epoch")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--only", default=None, help="comma-separated left-out pairs")
    args = ap.parse_args()
    pairs = [Pair(n, DATA / m, DATA / s, r, v) for n, m, s, r, v in PAIRS
             if (DATA / m).is_file() and (DATA / s).is_file()]
    if len(pairs) < 3:
        sys.exit(f"bench_simulator: needs the shared data in {DATA}")
    t0 = time.perf_counter()
    data = [prepare_pair(p) for p in pairs]
    kept, dropped = curate(data, min_correlation=0.0, max_unmodelled=1.0, max_identity=1.0)
    _, would_drop = curate(data)
    print(f"{len(data)} pairs prepared in {time.perf_counter() - t0:.0f} s; the paper's curation "
          f"would drop {len(would_drop)}, but with so few pairs all are used:")
    for d in would_drop:
        print(f"  {d['name']}: {d['reason']}")
    only = set(args.only.split(",")) if args.only else None
    cols = ("correlation", "cam", "pearson", "ssim")
    sims = ("learned", "molmap_2A", "molmap_res", "gemmi_res")
    print(f"\n{'left out':12s} {'simulator':11s} " + " ".join(f"{c:>11s}" for c in cols))
    ratios, table = [], {s: [] for s in sims}
    other = {"cam": [], "ssim": []}
    for k, held in enumerate(data):
        name = held.pair.name
        if only and name not in only:
            continue
        rest = [d for d in data if d is not held]
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            # Validation (choosing best.pt) on the training pairs' own cubes, another
            # sample: the left-out map must not choose the checkpoint.
            # The residual's base (a blur to a factor of each map's resolution) is fitted
            # to the training pairs inside train().
            train(rest, rest, tmp, epochs=args.epochs, steps=args.steps, batch=args.batch,
                  lr=2e-3, seed=k)
            learned = LearnedSimulator.load(Path(tmp) / "best.pt")
            best = load_checkpoint(Path(tmp) / "best.pt")
        t_train = time.perf_counter() - t1
        dmap = read_map(held.pair.map, voxel_size=held.pair.voxel_size)
        s = read_structure(held.pair.model)
        res = held.pair.resolution
        t2 = time.perf_counter()
        maps = {"learned": learned.simulate(s, res, like=dmap).data}
        t_infer = time.perf_counter() - t2
        maps["molmap_2A"] = get_simulator("molmap").simulate(s, 2.0, like=dmap).data
        maps["molmap_res"] = get_simulator("molmap").simulate(s, res, like=dmap).data
        maps["gemmi_res"] = get_simulator("gemmi").simulate(s, res, like=dmap).data
        sc = {n: map_scores(v, dmap.data) for n, v in maps.items()}
        for n in sims:
            table[n].append([sc[n][c] for c in cols])
            print(f"{name:12s} {n:11s} " + " ".join(f"{sc[n][c]:11.3f}" for c in cols))
        ratios.append(sc["learned"]["correlation"] / sc["molmap_2A"]["correlation"])
        for c in ("cam", "ssim"):
            other[c].append(sc["learned"][c] / sc["molmap_2A"][c])
        print(f"{name:12s} trained {t_train:.0f} s ({args.epochs * args.steps} steps), "
              f"inference {t_infer:.1f} s; base factor {learned.config['base_factor']:g}, "
              f"best epoch {best['epoch']}; learned / molmap 2 A correlation {ratios[-1]:.3f}",
              flush=True)
    print(f"\n{'mean':12s} {'simulator':11s} " + " ".join(f"{c:>11s}" for c in cols))
    for n in sims:
        print(f"{'':12s} {n:11s} " + " ".join(f"{v:11.3f}" for v in np.mean(table[n], 0)))
    print(f"total {time.perf_counter() - t0:.0f} s")
    for c, v in other.items():
        print(f"learned_vs_molmap2A_{c}={float(np.mean(v)):.3f}")
    print(f"learned_vs_molmap2A_correlation={float(np.mean(ratios)):.3f}")


if __name__ == "__main__":
    main()
