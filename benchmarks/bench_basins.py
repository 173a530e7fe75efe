"""Basin sizes on haemoglobin (issue #11): of the 1000 starts of a default fit of chain A
(or B) alone into EMD-3488, how many end (best recorded pose) within 3 A / 6 deg of one of
the chain's two deposited copies, and the (rank, hits) of each copy among the placements.

    python benchmarks/bench_basins.py ['{"lr_quat": 0.05}']   # FitParams fields as JSON
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import difffit
from difffit.rotations import quat_to_matrix, superpose

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_fit import random_move  # noqa: E402

D = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "hemoglobin_emd3488_5ni1") + "/"
dmap = difffit.read_map(D + "emd_3488.mrc")

kabsch = superpose

def copies(chain, mate):
    a = difffit.read_structure(D + "5ni1_updated.cif", chains=[chain], selection="ca")
    b = difffit.read_structure(D + "5ni1_updated.cif", chains=[mate], selection="ca")
    n = min(a.n_fit_atoms, b.n_fit_atoms)
    R, t = kabsch(a.fit_coords[:n], b.fit_coords[:n])
    return [(np.eye(3), np.zeros(3)), (R, t)]

def basin(chain, mate, seeds=(0, 1, 2), **kw):
    s = difffit.read_structure(D + "5ni1_updated.cif", chains=[chain])
    cps = copies(chain, mate)
    cA = s.centroid
    out = []
    for seed in seeds:
        R0, t0 = random_move(seed)
        moved = s.transformed(R0, t0)
        t = time.perf_counter()
        r = difffit.fit(dmap, [moved], 3.2, **kw)
        sec = time.perf_counter() - t
        tr = r.trajectory
        best = tr["score"].argmax(0)
        S = best.shape[0]
        q = torch.from_numpy(tr["quat"][best, np.arange(S)]).double()
        tt = tr["trans"][best, np.arange(S)].astype(np.float64)
        Rq = quat_to_matrix(q).numpy()
        c = moved.centroid
        # deposited chain coords x -> moved R0 x + t0 -> fitted Rq (R0 x + t0 - c) + tt
        M = np.einsum("sij,jk->sik", Rq, R0)
        centre = np.einsum("sij,j->si", Rq, R0 @ cA + t0 - c) + tt
        counts = []
        for Rc, tc in cps:
            ang = np.degrees(np.arccos(np.clip((np.einsum("sij,ij->s", M, Rc) - 1) / 2, -1, 1)))
            d = np.linalg.norm(centre - (Rc @ cA + tc), axis=1)
            counts.append(int(np.sum((ang < 6) & (d < 3))))
        # ranks of the copies among placements
        ranks = []
        for Rc, tc in cps:
            rk = None
            for p in r.placements:
                Mp = p.rotation @ R0
                a = np.degrees(np.arccos(np.clip((np.trace(Mp @ Rc.T) - 1) / 2, -1, 1)))
                cc = p.rotation @ (R0 @ cA + t0) + p.translation
                if a < 6 and np.linalg.norm(cc - (Rc @ cA + tc)) < 3:
                    rk = p.rank; hits = p.hits; break
            ranks.append((rk, hits if rk else 0))
        out.append((seed, counts, ranks, sec, len(r.placements)))
        print(f"{chain} seed {seed}: starts reaching copy1/copy2 {counts}, (rank, hits) {ranks}, {sec:.2f} s, {len(r.placements)} clusters", flush=True)
    return out

if __name__ == "__main__":
    kw = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    print("settings", kw)
    basin("A", "C", **kw)
    basin("B", "D", **kw)
