"""Map-in-map fitting on real data: a simulated map of haemoglobin's alpha chain, and a
cut-out of EMD-3488 itself, each moved away by a random rigid transform, fitted back into
EMD-3488 through their Gaussian mixtures (difffit.workflows.mapfit)."""
from __future__ import annotations

import json
from pathlib import Path

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


# ------------------------------------------------------------------ outputs and refusals

DAQ = "daq_emd2566_3j6b/2566_3J6B_9.mrc"


def _moved_daq(shared_data, tmp_path):
    """The DAQ region of EMD-2566 moved by a random rigid transform onto a grid of its own
    (written as a file, so the fit has a source map to name)."""
    from difffit import write_map

    dmap = read_map(data_file(shared_data, DAQ))
    R0, t0 = random_move(23)
    centre = dmap.origin + dmap.voxel_size * np.array(dmap.shape_xyz) / 2
    frame = DensityMap(np.zeros((56, 56, 56), np.float32),
                       R0 @ centre + t0 - 28 * dmap.voxel_size, dmap.voxel_size.copy(), None)
    path = tmp_path / "daq moved.mrc"  # a space: the script must quote it
    write_map(path, resample(dmap, frame, R0, t0))
    return dmap, path


def test_map_source_outputs_open_the_fitted_maps_in_chimerax(shared_data, tmp_path):
    """A map-in-map fit from the Python API writes fitted_map_<k>.mrc itself, and its
    ChimeraX script opens the target and those maps as surfaces at the source's contour,
    with no cartoon of the mixture's pseudo-atoms."""
    from difffit.output import write_fit_outputs

    dmap, src = _moved_daq(shared_data, tmp_path)
    thr = float(dmap.data.mean() + dmap.data.std())
    res = fit(dmap, src, 5.0, source_threshold=thr, gmm_iters=0, n_rotations=4,
              n_positions=2, n_iters=10)
    paths = write_fit_outputs(res, tmp_path / "out", top=2)
    maps = sorted(k for k in paths if k.startswith("fitted_map:"))
    assert maps == ["fitted_map:fitted_map_1.mrc", "fitted_map:fitted_map_2.mrc"]
    first = read_map(paths["fitted_map:fitted_map_1.mrc"])
    assert first.data.shape == dmap.data.shape and first.data.max() > thr
    np.testing.assert_allclose(first.origin, dmap.origin)
    cxc = paths["cxc"].read_text()
    assert "cartoon" not in cxc and "hide atoms" not in cxc
    opened = [line.split(" ", 1)[1] for line in cxc.splitlines() if line.startswith("open ")]
    assert opened == [str(Path(dmap.path).resolve()),
                      str((tmp_path / "out" / "fitted_map_1.mrc").resolve()),
                      str((tmp_path / "out" / "fitted_map_2.mrc").resolve())]
    assert f"volume #2 level {thr:.6g} style surface" in cxc
    assert f"volume #3 level {thr:.6g} style surface" in cxc
    assert f"volume #1 level {res.threshold:.6g}" in cxc
    # The positions apply to the source map opened unmoved: its file's name.
    lines = paths["positions"].read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == ["daq moved.mrc"] * 2
    doc = json.loads(paths["json"].read_text())
    assert {"fitted_map_1.mrc", "fitted_map_2.mrc"} <= set(doc["files"])
    assert [m["rank"] for m in doc["fitted_maps"]] == [1, 2]


def test_split_chains_and_chains_with_a_map_source_are_refused(shared_data, tmp_path, capsys):
    from difffit.cli import main

    daq = str(data_file(shared_data, DAQ))
    for flag in (["--split-chains"], ["--chains", "A"]):
        out = tmp_path / "never"
        assert main(["fit", daq, daq, "-r", "5", "-o", str(out), *flag]) == 2
        err = capsys.readouterr().err
        assert f"{daq}: {flag[0]} applies to atomic models" in err, err
        assert not out.exists()  # refused before any work


def test_a_map_where_models_are_expected_is_named_plainly(shared_data, tmp_path, capsys):
    """Every subcommand that takes atomic models says so, naming the map, instead of a PDB
    reader's complaint; `difffit fit` takes a map only alone."""
    from difffit.cli import main

    daq = str(data_file(shared_data, DAQ))
    pdb = str(data_file(shared_data, "daq_emd2566_3j6b/3J6B_9.pdb"))
    listing = tmp_path / "lib.txt"
    listing.write_text(f"{pdb}\n{daq}\n")
    out = tmp_path / "never"
    runs = {
        "identify --library": ["identify", daq, "-r", "5", "--library", pdb, daq, "-o", str(out)],
        "identify list": ["identify", daq, "-r", "5", "--library", str(listing), "-o", str(out)],
        "composite": ["composite", daq, pdb, daq, "-r", "5", "-o", str(out)],
        "assemble": ["assemble", daq, daq, "-r", "5", "-o", str(out)],
        "score": ["score", daq, daq, "-r", "5"],
        "simulate": ["simulate", daq, "-r", "5", "-o", str(tmp_path / "sim.mrc")],
        "zero": ["zero", daq, daq, "-r", "5", "-o", str(tmp_path / "zero.mrc")],
    }
    for what, argv in runs.items():
        assert main(argv) == 2, what
        err = capsys.readouterr().err
        assert f"{Path(daq).name}: a map (MRC/CCP4), but `difffit {argv[0]}` takes atomic " \
               f"models" in err, (what, err)
        assert "accepted only by `difffit fit" in err and "cannot read" not in err, err
    assert main(["fit", daq, pdb, daq, "-r", "5", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "a map among the structures; `difffit fit` places a map only alone" in err, err
    assert main(["fit", daq, pdb, "-r", "5", "-o", str(out), "--zone", daq]) == 2
    assert "--zone takes an atomic model" in capsys.readouterr().err
    assert not out.exists()
