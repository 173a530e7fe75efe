"""Map-in-map fitting on real data: a simulated map of haemoglobin's alpha chain, and a
cut-out of EMD-3488 itself, each moved away by a random rigid transform, fitted back into
EMD-3488 through their Gaussian mixtures (difffit.workflows.mapfit)."""
from __future__ import annotations

import numpy as np
import pytest

from difffit import DensityMap, fit, read_map
from difffit.rotations import superpose
from difffit.io import read_structure
from difffit.simulate import molmap
from difffit.structures import split_chains
from difffit.workflows.mapfit import is_map_source, resample

from conftest import data_file
from test_fit import random_move

HB = "hemoglobin_emd3488_5ni1"
RES = 3.2
QUICK = dict(n_rotations=60, n_positions=10, n_iters=150)


@pytest.fixture(scope="module")
def hb(shared_data):
    dmap = read_map(data_file(shared_data, f"{HB}/emd_3488.mrc"))
    chains = {s.name.split("_")[-1]: s for s in
              split_chains(read_structure(data_file(shared_data, f"{HB}/5ni1_updated.cif")))}
    return dmap, chains


def _ca(s):
    return s.coords[[a.atom.name == "CA" for a in s.gemmi_structure[0].all()]]


_kabsch = superpose  # R, t with R a + t ~ b (least squares)


def _errors(R, T, R0, t0, hb_chains):
    """(angle, shift) of the composed pose (source -> target after the move R0, t0) from
    each alpha copy's pose (A: identity; C: A superposed on C), the smaller one."""
    M, m = R @ R0, R @ t0 + T
    a_ca = _ca(hb_chains["A"])
    out = []
    for c in ("A", "C"):
        c_ca = _ca(hb_chains[c])
        Rc, tc = (np.eye(3), np.zeros(3)) if c == "A" else _kabsch(a_ca, c_ca[:len(a_ca)])
        angle = float(np.degrees(np.arccos(np.clip((np.trace(M @ Rc.T) - 1) / 2, -1, 1))))
        cen = a_ca.mean(0)
        shift = float(np.linalg.norm((M @ cen + m) - (Rc @ cen + tc)))
        out.append((angle, shift))
    return min(out, key=lambda x: x[1])


def test_is_map_source(tmp_path):
    assert is_map_source("a.mrc") and is_map_source("b.map.gz") and is_map_source("c.ccp4")
    assert not is_map_source("a.pdb") and not is_map_source(3)


@pytest.mark.slow
def test_simulated_alpha_chain_map_fits_back_into_emd3488(hb):
    dmap, chains = hb
    R0, t0 = random_move(21)
    src = molmap(chains["A"].transformed(R0, t0), RES)
    res = fit(dmap, src, RES, **QUICK)
    best = res.best()
    angle, shift = _errors(best.rotation, best.translation, R0, t0, chains)
    assert angle < 6 and shift < 3, (angle, shift)
    assert res.mixture.info["correlation"] > 0.8  # 0.866 measured
    # The fitted source map on the target's grid sits in alpha density.
    placed = resample(src, dmap, best.rotation, best.translation)
    inside = placed.data > 0.5 * placed.data.max()
    assert dmap.data[inside].mean() > dmap.data.mean() + 2 * dmap.data.std()


@pytest.mark.slow
def test_cut_out_of_emd3488_fits_back(hb, tmp_path):
    """A 30 A box of EMD-3488 around chain A, moved away (resampled onto a new grid under a
    random rigid transform), is fitted back onto an alpha copy."""
    dmap, chains = hb
    c = _ca(chains["A"]).mean(0)
    lo = np.floor((c - 15 - dmap.origin) / dmap.voxel_size).astype(int)
    n = np.ceil(30 / dmap.voxel_size).astype(int)
    box = dmap.data[lo[2]:lo[2] + n[2], lo[1]:lo[1] + n[1], lo[0]:lo[0] + n[0]]
    cut = DensityMap(np.ascontiguousarray(box), dmap.origin + lo * dmap.voxel_size,
                     dmap.voxel_size.copy(), None)
    R0, t0 = random_move(22)
    # The cut-out moved by (R0, t0): a grid around the moved box, filled by resampling.
    moved_origin = (R0 @ (cut.origin + cut.voxel_size * n / 2)) + t0 - 25.0
    frame = DensityMap(np.zeros((48, 48, 48), np.float32), moved_origin, dmap.voxel_size.copy(),
                       None)
    moved = resample(cut, frame, R0, t0)
    path = tmp_path / "cut_moved.mrc"
    from difffit import write_map
    write_map(path, moved)
    res = fit(dmap, path, RES, source_threshold=float(dmap.data.mean() + 2 * dmap.data.std()),
              **QUICK)
    best = res.best()
    angle, shift = _errors(best.rotation, best.translation, R0, t0, chains)
    assert angle < 6 and shift < 3, (angle, shift)


@pytest.mark.slow
def test_cli_fits_a_map_into_a_map(shared_data, tmp_path):
    """`difffit fit MAP SOURCE.mrc` writes the usual results and the placed source map on
    the target's grid (a reduced search: this checks the plumbing; the tests above the
    answers)."""
    from difffit.cli import main

    daq = str(data_file(shared_data, "daq_emd2566_3j6b/2566_3J6B_9.mrc"))
    out = tmp_path / "mm"
    assert main(["fit", daq, daq, "-r", "5", "-o", str(out), "--rotations", "4",
                 "--positions", "2", "--iterations", "10", "--top", "1", "-q"]) == 0
    placed = read_map(out / "fitted_map_1.mrc")
    assert placed.data.shape == read_map(daq).data.shape
    assert (out / "results.csv").is_file()
