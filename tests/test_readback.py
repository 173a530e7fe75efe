"""Outputs read back on real data (DAQ map, reduced search): ``difffit.read_results`` of a
fit's, a composite's and an identify's folder gives the placements the run returned, a
structure moved by a placement read back lands where the run put it, the recorded
trajectories turn into poses of the input file, and ``fit --force`` on the command line
replaces the earlier run's files."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import difffit
from difffit.cli import main
from difffit.output import write_fit_outputs
from difffit.readback import read_trajectories
from difffit.results import Candidate, CompositePlacement, Placement

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import data_file  # noqa: E402
from test_composite import REDUCED  # noqa: E402

REDUCED_CLI = ["--rotations", "20", "--positions", "5", "--iterations", "60"]


@pytest.fixture(scope="module")
def daq(shared_data):
    return {"map": data_file(shared_data, "daq_emd2566_3j6b/2566_3J6B_9.mrc"),
            "model": data_file(shared_data, "daq_emd2566_3j6b/3J6B_9.pdb"),
            "decoy": data_file(shared_data, "difffit_domain_demo/I7MLV6_D3.pdb")}


@pytest.fixture(scope="module")
def fitted(daq, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "out"
    result = difffit.fit(daq["map"], [daq["model"]], 5.0, **REDUCED)
    write_fit_outputs(result, out, report=True)
    return result, out


def _same_pose(a, b, atol=1e-6):
    np.testing.assert_allclose(a.rotation, b.rotation, atol=atol)
    np.testing.assert_allclose(a.translation, b.translation, atol=atol)
    np.testing.assert_allclose(a.centre, b.centre, atol=atol)
    assert a.score == pytest.approx(b.score) and a.hits == b.hits


def test_fit_read_back(fitted):
    result, out = fitted
    run = difffit.read_results(out)
    assert run.kind == "fit" and run.score_metric == result.params.rank_by
    assert len(run.placements) == len(result.placements)
    for got, p in zip(run.placements, result.placements):
        assert isinstance(got, Placement) and got.rank == p.rank
        _same_pose(got, p)
    best = run.best("3J6B_9")
    _same_pose(best, result.best("3J6B_9"))
    # The structure read again from its file, moved: where the fit put it, every atom.
    moved = run.structure("3J6B_9")
    want = result.best(0).moved(result.structures[0])
    assert moved.n_atoms == want.n_atoms
    np.testing.assert_allclose(moved.coords, want.coords, atol=1e-6)
    np.testing.assert_allclose(moved.fit_coords.mean(0), best.centre, atol=1e-6)


def test_trajectories_reach_the_placements(fitted):
    """The recorded pose of a cluster's representative start, at its recorded iteration,
    read back as x -> R x + t on the input file, is the placement before refinement: the
    same when unrefined, a few A from the refined one (within 1.5 A for the best; a wrong
    start, centroid or convention would be tens of A off)."""
    result, out = fitted
    traj = read_trajectories(out / "trajectories.npz")
    assert traj.structure_names == ["3J6B_9"]
    np.testing.assert_allclose(traj.centroids[0], result.structures[0].centroid)
    R, t = traj.poses("3J6B_9")
    x = result.structures[0].fit_coords
    for p in result.for_structure(0)[:5]:
        (k,) = np.flatnonzero(traj.iteration == p.iteration)
        a = x @ R[k, p.start].T + t[k, p.start]
        b = x @ p.rotation.T + p.translation
        rmsd = float(np.sqrt(((a - b) ** 2).sum(1).mean()))
        assert rmsd < (1e-3 if not p.refined else 1.5 if p.rank == 1 else 5.0), (p.rank, rmsd)
        # The recorded pose is that start's best: the one its cluster was made of.
        s = traj.starts(0)[p.start]
        assert traj.score[k, s] == traj.score[:, s].max()


def test_composite_read_back(daq, tmp_path):
    res = difffit.composite(daq["map"], [daq["model"]], 5.0, copies=1, outdir=tmp_path / "c",
                            **REDUCED)
    run = difffit.read_results(tmp_path / "c")
    assert run.kind == "composite" and run.path.name == "summary.json"
    assert len(run.placements) == len(res.placements) == 1
    got, p = run.placements[0], res.placements[0]
    assert isinstance(got, CompositePlacement)
    assert (got.chains, got.copy, got.round, got.structure_index) == (p.chains, p.copy,
                                                                       p.round, 0)
    _same_pose(got, p)
    doc = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert doc["score_column"] == "score (cam)" and "x -> R x + t" in doc["transform"]
    with open(tmp_path / "c" / "summary.csv") as fh:
        assert "score (cam)" in fh.readline().split(",")
    with open(tmp_path / "c" / "round_01" / "candidates.csv") as fh:
        assert "score (cam)" in fh.readline().split(",")


def test_identify_read_back(daq, tmp_path):
    res = difffit.identify(daq["map"], [daq["model"], daq["decoy"]], 5.0, outdir=tmp_path / "i",
                           top=1, device="cpu", **REDUCED)
    run = difffit.read_results(tmp_path / "i")
    assert run.kind == "identify" and run.score_metric == res.score
    assert [c.name for c in run.placements] == res.ranking()
    for got, c in zip(run.placements, res.candidates):
        assert isinstance(got, Candidate)
        assert (got.rank, got.index, got.source, got.n_atoms) == (c.rank, c.index, c.source,
                                                                  c.n_atoms)
        _same_pose(got, c)
        assert got.placements and got.cluster_scores
    assert run.best().name == res.at_rank(1).name
    assert [s["name"] for s in run.structures] == ["3J6B_9", "I7MLV6_D3"]
    moved = run.structure(res.at_rank(1).name)
    np.testing.assert_allclose(moved.coords, res.structure(res.at_rank(1)).coords, atol=1e-6)


def test_cli_fit_force_replaces_earlier_outputs(daq, capsys, tmp_path):
    out = tmp_path / "fit"
    argv = ["fit", daq["map"], daq["model"], "-r", "5", "-o", out, "-q", *REDUCED_CLI]
    assert main([str(a) for a in argv + ["--top", "3", "--report"]]) == 0
    assert (out / "report.html").is_file() and len(list((out / "models").iterdir())) == 3
    (out / "notes.txt").write_text("mine")
    assert main([str(a) for a in argv + ["--top", "1", "--force"]]) == 0
    capsys.readouterr()
    assert not (out / "report.html").exists()
    assert [p.name for p in (out / "models").iterdir()] == ["3J6B_9_rank1.cif"]
    assert (out / "notes.txt").read_text() == "mine"
    files = json.loads((out / "results.json").read_text())["files"]
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == {*files,
                                                                               "notes.txt"}
