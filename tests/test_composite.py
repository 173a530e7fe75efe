"""Composite workflow on real data: haemoglobin assembled from its alpha and beta chains
(moved away from their deposited poses, copy numbers not given), zero-out and simulation,
resuming an interrupted run, and the ``composite`` / ``simulate`` / ``zero`` commands."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import difffit.workflows.composite as comp
from difffit import DifffitInputError
from difffit.cli import main
from difffit import AcceptRules, composite
from difffit.report import composite_report
from difffit.simulate import explained_mask, zero_out
from difffit.io import read_map, read_structure, split_chains, write_structure
from difffit.simulate import molmap
from difffit.structures import simulation_mask

# The real-data helpers live in test_fit; its folder is on sys.path under any import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import data_file  # noqa: E402
from test_fit import random_move  # noqa: E402

HB = "hemoglobin_emd3488_5ni1"
DAQ = "daq_emd2566_3j6b"
# A reduced search for the small DAQ map (one chain): it still starts from a random pose
# 10-25 A away and still finds the deposited pose.
REDUCED = dict(n_rotations=20, n_positions=5, n_iters=60)
REDUCED_CLI = ["--rotations", "20", "--positions", "5", "--iterations", "60"]


def _ca_by_residue(structure) -> dict[tuple[str, int], np.ndarray]:
    """(residue name, number) -> CA position, from the structure's (moved) gemmi model."""
    out = {}
    for chain in structure.gemmi_structure[0]:
        for res in chain:
            ca = res.find_atom("CA", "*")
            if ca is not None:
                out[(res.name, res.seqid.num)] = np.array([ca.pos.x, ca.pos.y, ca.pos.z])
    return out


def _ca_rmsd(a, b) -> float:
    """CA RMSD over the residues two models share (copies of a chain may differ in length)."""
    ca, cb = _ca_by_residue(a), _ca_by_residue(b)
    common = sorted(set(ca) & set(cb))
    assert len(common) > 100
    d = np.array([ca[k] - cb[k] for k in common])
    return float(np.sqrt((d ** 2).sum(1).mean()))


def hb_inputs(data: Path) -> dict:
    """EMD-3488 and the alpha (A) and beta (B) chains of 5NI1, each moved by a random rigid
    transform and named "alpha" / "beta" (also used by benchmarks/bench_workflows.py)."""
    dmap = read_map(data_file(data, f"{HB}/emd_3488.mrc"))
    full = read_structure(data_file(data, f"{HB}/5ni1_updated.cif"))
    chains = {s.name.split("_")[-1]: s for s in split_chains(full)}
    moved = []
    for name, chain, seed in (("alpha", "A", 11), ("beta", "B", 12)):
        R, t = random_move(seed)
        s = chains[chain].transformed(R, t)
        s.name = name
        moved.append(s)
    return {"map": dmap, "full": full, "chains": chains, "moved": moved}


@pytest.fixture(scope="module")
def hb(shared_data):
    return hb_inputs(shared_data)


@pytest.fixture(scope="module")
def hb_run(hb, tmp_path_factory):
    """The issue's acceptance run: default search and rules, copy numbers not given."""
    out = tmp_path_factory.mktemp("hb") / "composite"
    return composite(hb["map"], hb["moved"], 3.2, outdir=out)


@pytest.fixture(scope="module")
def daq(shared_data, tmp_path_factory):
    model_path = data_file(shared_data, f"{DAQ}/3J6B_9.pdb")
    model = read_structure(model_path)
    R, t = random_move(3)
    moved = model.transformed(R, t)
    path = tmp_path_factory.mktemp("daq") / "chain9_moved.cif"
    write_structure(path, moved)
    return {"map_path": data_file(shared_data, f"{DAQ}/2566_3J6B_9.mrc"), "model": model,
            "model_path": model_path, "moved": moved, "moved_path": path}


# ----------------------------------------------------------------------------------------
# The acceptance test of the issue
# ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_haemoglobin_all_four_chains_placed_each_on_a_deposited_copy(hb, hb_run):
    res = hb_run
    names = sorted(p.structure_name for p in res.placements)
    assert names == ["alpha", "alpha", "beta", "beta"], res.summary_table()
    deposited = {"alpha": ("A", "C"), "beta": ("B", "D")}
    for kind, (i, s) in zip(("alpha", "beta"), enumerate(res.structures)):
        landed = []
        for p in res.for_structure(i):
            moved = p.moved(s)
            errors = {c: _ca_rmsd(moved, hb["chains"][c]) for c in deposited[kind]}
            chain, err = min(errors.items(), key=lambda kv: kv[1])
            assert err < 3.0, f"{kind} copy {p.copy}: CA RMSD {errors} A"
            landed.append(chain)
        # The two copies are the two deposited copies, not one twice.
        assert sorted(landed) == list(deposited[kind]), landed
    # Nothing more was accepted: the run stopped on empty rounds, not on a limit.
    assert "accepted nothing" in res.stop_reason
    assert not res.rounds[-1].accepted
    # Most of the map is explained by the four chains (haems and noise are left).
    assert res.rounds[-1].remaining < 0.2


@pytest.mark.slow
def test_haemoglobin_outputs_on_disk(hb_run, tmp_path):
    res, out = hb_run, hb_run.outdir
    state = json.loads((out / "state.json").read_text())
    assert state["finished"] and len(state["rounds"]) == len(res.rounds)
    assert state["key"]["copies"] == [None, None] and state["key"]["resolution"] == 3.2
    for rec in res.rounds:
        folder = out / f"round_{rec.index:02d}"
        doc = json.loads((folder / "round.json").read_text())
        assert len(doc["accepted"]) == len(rec.accepted)
        assert len(doc["candidates"]) == len(rec.candidates) > 0
        with open(folder / "candidates.csv") as fh:
            decisions = [r["decision"] for r in csv.DictReader(fh)]
        assert decisions.count("accepted") == len(rec.accepted)
        # A working map only where the round changed the map.
        assert (folder / "working_map.mrc").is_file() == bool(rec.accepted)
        assert (folder / "accepted.cif").is_file() == bool(rec.accepted)
    assert not list(out.glob(".round_*"))  # no temporary folder left behind

    # One mmCIF with every placed chain, named <chain>_<input>_<copy>, atoms as placed.
    model = read_structure(out / "composite.cif")
    assert sorted(model.chains) == ["A_1_1", "A_1_2", "B_2_1", "B_2_2"]
    for p in res.placements:
        (chain,) = p.chains
        moved = p.moved(res.structures[p.structure_index])
        np.testing.assert_allclose(model.coords[model.chain_ids == chain], moved.coords, atol=1e-3)
    cxc = (out / "composite.cxc").read_text()
    assert str((out / "composite.cif").resolve()) in cxc and "emd_3488.mrc" in cxc
    assert "color #2/A_1_1,A_1_2 " in cxc
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["chains"] for r in rows) == ["A_1_1", "A_1_2", "B_2_1", "B_2_2"]
    assert "4 copies placed" in (out / "summary.txt").read_text()

    # HTML report: self-contained, one section per round; never overwritten unasked.
    html = composite_report(res, tmp_path / "report.html").read_text()
    assert "<svg" in html and "A_1_2" in html and f"Round {len(res.rounds)}" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    with pytest.raises(FileExistsError):
        composite_report(res, tmp_path / "report.html")


# ----------------------------------------------------------------------------------------
# Zero-out and simulation
# ----------------------------------------------------------------------------------------


def _fraction_inside(dmap, structure, threshold) -> float:
    """Fraction of heavy atoms (waters left out) whose nearest voxel is above the contour."""
    heavy = simulation_mask(structure) & (structure.atomic_numbers > 1)
    ijk = np.rint(dmap.world_to_index(structure.coords[heavy])).astype(int)
    return float((dmap.data[ijk[:, 2], ijk[:, 1], ijk[:, 0]] > threshold).mean())


def test_zero_out_removes_the_density_of_placed_chains_only(hb):
    dmap, chains = hb["map"], hb["chains"]
    thr = 0.0387  # mean + 1 sd of EMD-3488
    before = {c: _fraction_inside(dmap, s, thr) for c, s in chains.items()}
    assert min(before.values()) > 0.8
    zeroed = zero_out(dmap, [chains["A"], chains["B"]], 3.2)
    after = {c: _fraction_inside(zeroed, s, thr) for c, s in chains.items()}
    # Placed chains: their density is gone; the other copies are untouched.
    assert after["A"] < 0.02 and after["B"] < 0.02, after
    assert after["C"] > before["C"] - 0.05 and after["D"] > before["D"] - 0.05, after
    # Zeroing only ever sets values to 0, and only near the placed atoms.
    changed = zeroed.data != dmap.data
    assert np.all(zeroed.data[changed] == 0)
    ijk = np.argwhere(changed)[:, ::-1]  # x, y, z indices
    world = dmap.index_to_world(ijk)
    from scipy.spatial import cKDTree
    placed = np.concatenate([chains["A"].coords, chains["B"].coords])
    assert cKDTree(placed).query(world)[0].max() < 5 * 0.225 * 3.2 + dmap.voxel_size.max()
    # The whole model explains most of the density above the contour.
    mask = explained_mask(dmap, [hb["full"]], 3.2)
    above = dmap.data > thr
    assert dmap.data[above & mask].sum() / dmap.data[above].sum() > 0.85


def test_simulate_on_the_grid_of_a_map(hb):
    dmap, full = hb["map"], hb["full"]
    sim = molmap(full, 3.2, like=dmap)
    assert sim.data.shape == dmap.data.shape
    np.testing.assert_array_equal(sim.origin, dmap.origin)
    np.testing.assert_array_equal(sim.voxel_size, dmap.voxel_size)
    # In frame, the simulated map correlates with the experimental one; moved by 5 A not.
    shifted = molmap(full.transformed(np.eye(3), np.array([5.0, 0, 0])), 3.2, like=dmap)
    corr = lambda a, b: float(np.corrcoef(a.data.ravel(), b.data.ravel())[0, 1])  # noqa: E731
    assert corr(sim, dmap) > 0.6 and corr(shifted, dmap) < corr(sim, dmap) - 0.3


def test_zero_and_simulate_reject_bad_input(hb):
    with pytest.raises(DifffitInputError, match="fraction"):
        zero_out(hb["map"], [hb["full"]], 3.2, fraction=1.5)
    with pytest.raises(DifffitInputError, match="resolution"):
        zero_out(hb["map"], [hb["full"]], 0.0)


# ----------------------------------------------------------------------------------------
# Copies, resume, errors (reduced search on a small map)
# ----------------------------------------------------------------------------------------


def test_copy_number_given_stops_when_reached(daq):
    res = composite(daq["map_path"], [daq["moved"]], 5.0, copies=1, **REDUCED)
    assert len(res.placements) == 1 and len(res.rounds) == 1
    assert res.stop_reason == "every structure has its copies"
    centre = res.placements[0].moved(daq["moved"]).centroid
    assert np.linalg.norm(centre - daq["model"].centroid) < 3.0
    assert res.placements[0].chains == ["9_1_1"]


@pytest.mark.slow
def test_interrupted_run_resumes_after_its_last_complete_round(daq, tmp_path, monkeypatch):
    args = (daq["map_path"], [daq["moved"]], 5.0)
    full = composite(*args, outdir=tmp_path / "full", **REDUCED)
    assert len(full.placements) == 1 and len(full.rounds) == 3  # accepted, then 2 empty rounds

    real_fit, calls = comp.fit, []

    def failing_fit(*a, **kw):
        calls.append(kw["seed"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # stopped during the second round
        return real_fit(*a, **kw)

    out = tmp_path / "cut"
    monkeypatch.setattr(comp, "fit", failing_fit)
    with pytest.raises(KeyboardInterrupt):
        composite(*args, outdir=out, **REDUCED)
    state = json.loads((out / "state.json").read_text())
    assert [r["round"] for r in state["rounds"]] == [1] and not state["finished"]
    assert (out / "round_01" / "working_map.mrc").is_file()
    assert not (out / "round_02").exists() and not list(out.glob(".round_*"))
    assert not (out / "composite.cif").exists()

    # A different setting cannot resume this run; no resume and no force is refused.
    monkeypatch.setattr(comp, "fit", real_fit)
    with pytest.raises(DifffitInputError, match="resolution"):
        composite(daq["map_path"], [daq["moved"]], 4.0, outdir=out, resume=True, **REDUCED)
    with pytest.raises(FileExistsError, match="resume"):
        composite(*args, outdir=out, **REDUCED)

    def counting_fit(*a, **kw):
        calls.append(kw["seed"])
        return real_fit(*a, **kw)

    calls.clear()
    monkeypatch.setattr(comp, "fit", counting_fit)
    resumed = composite(*args, outdir=out, resume=True, **REDUCED)
    assert calls == [1, 2]  # rounds 2 and 3 only (round k uses seed + k - 1)
    assert len(resumed.rounds) == len(full.rounds) and resumed.stop_reason == full.stop_reason
    for a, b in zip(resumed.placements, full.placements):
        key = lambda p: (p.structure_index, p.copy, p.round, p.chains)  # noqa: E731
        assert key(a) == key(b)
        np.testing.assert_allclose(a.rotation, b.rotation, atol=1e-9)
        np.testing.assert_allclose(a.translation, b.translation, atol=1e-9)
    np.testing.assert_array_equal(resumed.working_map.data, full.working_map.data)
    assert (out / "composite.cif").is_file()
    assert json.loads((out / "state.json").read_text())["finished"]


def test_bad_composite_input_is_a_clear_error(daq, tmp_path):
    m, s = daq["map_path"], [daq["moved"]]
    with pytest.raises(DifffitInputError, match="2 numbers given for 1"):
        composite(m, s, 5.0, copies=[1, 1])
    with pytest.raises(DifffitInputError, match="no structure named 'nope'"):
        composite(m, s, 5.0, copies={"nope": 1})
    with pytest.raises(DifffitInputError, match=">= 1"):
        composite(m, s, 5.0, copies=0)
    with pytest.raises(DifffitInputError, match="min_inside"):
        AcceptRules(min_inside=2)
    with pytest.raises(DifffitInputError, match="n_rotatons"):
        composite(m, s, 5.0, n_rotatons=10)
    with pytest.raises(DifffitInputError, match="outdir"):
        composite(m, s, 5.0, resume=True)
    with pytest.raises(DifffitInputError, match="no_such.pdb"):
        composite(m, [tmp_path / "no_such.pdb"], 5.0)


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_cli_composite(capsys, daq, tmp_path):
    out = tmp_path / "comp"
    argv = ["composite", daq["map_path"], daq["moved_path"], "-r", "5", "-o", out, *REDUCED_CLI]
    code, stdout, err = run(capsys, *argv, "--report", "-q")
    assert code == 0, err
    assert str(out) in stdout
    for name in ("state.json", "composite.cif", "composite.cxc", "summary.csv", "report.html",
                 "command.txt", "round_01/working_map.mrc"):
        assert (out / name).is_file(), name
    assert read_structure(out / "composite.cif").chains == ["9_1_1"]
    with open(out / "summary.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    centre = np.array([float(row[k]) for k in ("cx", "cy", "cz")])
    assert np.linalg.norm(centre - daq["model"].centroid) < 3.0
    # Again: refused without --resume or --force; --resume of a finished run refits nothing.
    code, _, err = run(capsys, *argv, "-q")
    assert code == 2 and "--force" in err and "Traceback" not in err
    code, _, err = run(capsys, *argv, "--resume")
    assert code == 0 and "resuming" in err
    code, _, err = run(capsys, *argv, "-q", "--force", "--copies", "1")
    assert code == 0, err
    assert json.loads((out / "state.json").read_text())["key"]["copies"] == [1]
    assert not (out / "round_02").exists()  # the previous run's rounds were cleared
    # Bad input: exit status 2 and a one-line message naming the problem.
    code, _, err = run(capsys, *argv, "--force", "--copies", "1,2")
    assert code == 2 and "2 numbers given for 1 structures" in err
    code, _, err = run(capsys, "composite", daq["map_path"], tmp_path / "absent.pdb", "-r", "5",
                       "-o", tmp_path / "x")
    assert code == 2 and "absent.pdb" in err
    code, _, _ = run(capsys, *argv, "--copies", "0")
    assert code == 2


def test_cli_simulate_and_zero(capsys, daq, tmp_path):
    model_path = daq["model_path"]
    sim_path = tmp_path / "sim.mrc"
    code, _, err = run(capsys, "simulate", model_path, "-r", "5", "-o", sim_path,
                       "--like", daq["map_path"])
    assert code == 0, err
    sim, target = read_map(sim_path), read_map(daq["map_path"])
    assert sim.data.shape == target.data.shape
    np.testing.assert_allclose(sim.origin, target.origin, atol=1e-4)
    np.testing.assert_allclose(sim.voxel_size, target.voxel_size, atol=1e-5)
    code, _, err = run(capsys, "simulate", model_path, "-r", "5", "-o", sim_path)
    assert code == 2 and "--force" in err
    code, _, err = run(capsys, "simulate", model_path, "-r", "6", "-o", sim_path, "--spacing",
                       "1.5", "--force")
    assert code == 0, err
    np.testing.assert_allclose(read_map(sim_path).voxel_size, 1.5, atol=1e-5)

    zero_path = tmp_path / "zeroed.mrc"
    code, stdout, err = run(capsys, "zero", daq["map_path"], model_path, "-r", "5", "-o", zero_path)
    assert code == 0, err
    assert "zeroed" in stdout
    zeroed = read_map(zero_path)
    thr = float(target.data.mean() + target.data.std())
    assert _fraction_inside(target, daq["model"], thr) > 0.8
    assert _fraction_inside(zeroed, daq["model"], thr) < 0.02
    code, _, err = run(capsys, "zero", daq["map_path"], tmp_path / "absent.pdb", "-r", "5",
                       "-o", tmp_path / "z2.mrc")
    assert code == 2 and "absent.pdb" in err
    code, _, err = run(capsys, "zero", daq["map_path"], model_path, "-r", "5", "-o", zero_path)
    assert code == 2 and "already exists" in err
