"""Output folder of a fit: tables, models, ChimeraX script, trajectories, log.

The FitResult here is built by hand (no fitting), so these tests are fast and check the
writers alone: every file is there and parses, models are the input atoms moved by the
placement, nothing is overwritten without force, and no temporary file is left behind.
"""
from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path

import gemmi
import numpy as np
import pytest
import torch

import difffit
from difffit.demo import ideal_protein
from difffit.params import FitParams
from difffit.results import FitResult, Placement
from difffit.io import DensityMap, read_map, write_map
from difffit.files import atomic_write as _atomic_write
from difffit.output import write_fit_outputs
from difffit.rotations import quat_to_matrix, random_rotations

METRIC_KEYS = ("correlation", "cam", "overlap", "atom_correlation", "atom_cam", "atom_overlap",
               "inside_fraction", "mean_density", "pyramid_score")


def _rotation(seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return quat_to_matrix(random_rotations(1, generator=g))[0].numpy()


def _placement(i: int, name: str, rank: int, seed: int, score: float) -> Placement:
    R = _rotation(seed)
    t = np.array([10.0 + seed, -5.0, 3.0 * rank])
    metrics = {k: float(score - 0.01 * j) for j, k in enumerate(METRIC_KEYS)}
    metrics["cam"] = score
    return Placement(structure_index=i, structure_name=name, rank=rank, rotation=R,
                     translation=t, centre=np.full(3, np.nan), hits=20 - rank, score=score,
                     metrics=metrics, iteration=10 * rank, start=seed, refined=True)


def _result(map_path: str | None, n_structures: int = 2, per_structure: int = 4) -> FitResult:
    """A hand-made FitResult: n structures, per_structure placements each."""
    structs = []
    for i in range(n_structures):
        s = ideal_protein(n_helices=2, helix_length=10 + 2 * i, seed=i)
        s.name = f"prot{i}"
        structs.append(s)
    placements = []
    for i, s in enumerate(structs):
        for r in range(1, per_structure + 1):
            placements.append(_placement(i, s.name, r, seed=10 * i + r, score=0.9 - 0.1 * r - 0.01 * i))
    for p in placements:
        p.centre = p.rotation @ structs[p.structure_index].centroid + p.translation
    placements.sort(key=lambda p: -p.score)
    data = np.random.default_rng(0).random((20, 22, 24)).astype(np.float32)
    dmap = DensityMap(data=data, origin=np.array([1.0, 2.0, 3.0]), voxel_size=np.full(3, 1.5),
                      path=map_path)
    S, K = n_structures * 6, 3
    traj = {"quat": np.random.default_rng(1).normal(size=(K, S, 4)).astype(np.float32),
            "trans": np.zeros((K, S, 3), np.float32), "score": np.ones((K, S), np.float32),
            "iteration": np.array([0, 10, 20]), "mol_idx": np.repeat(np.arange(n_structures), 6)}
    return FitResult(placements=placements, structures=structs, map=dmap,
                     params=FitParams(n_rotations=3, n_positions=2), resolution=5.0,
                     threshold=0.25, timings={"preprocess": 0.1, "optimise": 1.0, "cluster": 0.01,
                                              "refine": 0.2, "total": 1.4},
                     trajectory=traj)


@pytest.fixture
def result(tmp_path) -> FitResult:
    mp = tmp_path / "inputs" / "target map.mrc"  # a space in the name: quoting in the .cxc
    mp.parent.mkdir()
    r = _result(None)
    write_map(mp, r.map)
    r.map = read_map(mp)
    return r


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]


def test_writes_every_output(result, tmp_path):
    out = tmp_path / "out" / "nested"
    paths = write_fit_outputs(result, out, top=3, command="difffit fit test")
    for key in ("csv", "json", "cxc", "trajectories", "log", "models"):
        assert paths[key].exists(), key
    assert "map" not in paths  # the map has a file of its own: referenced, not copied
    models = sorted(p.name for p in (out / "models").iterdir())
    assert models == sorted(f"prot{i}_rank{k}.cif" for i in range(2) for k in (1, 2, 3))
    assert _no_temp_files(out)
    # Readable by others, as any file the user writes (mkstemp alone gives 0600).
    mask = os.umask(0)
    os.umask(mask)
    for p in out.rglob("*"):
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask, p


def test_csv_and_json_parse(result, tmp_path):
    paths = write_fit_outputs(result, tmp_path / "o")
    with open(paths["csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(result.placements)
    for row, p in zip(rows, result.placements):
        assert row["structure"] == p.structure_name and int(row["rank"]) == p.rank
        assert int(row["hits"]) == p.hits
        assert float(row["cam"]) == pytest.approx(p.metrics["cam"], rel=1e-5)
        R = np.array([[float(row[f"r{i}{j}"]) for j in (1, 2, 3)] for i in (1, 2, 3)])
        np.testing.assert_allclose(R, p.rotation, atol=1e-5)
        t = np.array([float(row[k]) for k in ("tx", "ty", "tz")])
        np.testing.assert_allclose(t, p.translation, atol=1e-4)
        c = np.array([float(row[k]) for k in ("cx", "cy", "cz")])
        s = result.structures[p.structure_index]
        np.testing.assert_allclose(c, p.rotation @ s.centroid + p.translation, atol=1e-3)
        for k in METRIC_KEYS:
            assert k in row
    doc = json.loads(paths["json"].read_text())
    assert doc["difffit_version"] == difffit.__version__
    assert doc["resolution"] == 5.0 and doc["threshold"] == 0.25
    assert doc["params"]["n_rotations"] == 3 and doc["params"]["n_positions"] == 2
    assert set(doc["timings"]) == {"preprocess", "optimise", "cluster", "refine", "total"}
    assert doc["map"]["path"] == str(Path(result.map.path).resolve())
    assert [s["name"] for s in doc["structures"]] == ["prot0", "prot1"]
    assert len(doc["placements"]) == len(result.placements)
    assert doc["placements"][0]["score (cam)"] == pytest.approx(result.placements[0].score)
    assert len(doc["models"]) == 6


def test_json_has_no_nan(result, tmp_path):
    result.placements[0].metrics["atom_cam"] = float("nan")
    paths = write_fit_outputs(result, tmp_path / "o")
    doc = json.loads(paths["json"].read_text())  # strict JSON: NaN written as null
    assert doc["placements"][0]["atom_cam"] is None
    assert "NaN" not in paths["json"].read_text()


def test_models_are_moved_atoms(result, tmp_path):
    paths = write_fit_outputs(result, tmp_path / "o", top=2)
    for i, s in enumerate(result.structures):
        for p in result.for_structure(i)[:2]:
            st = gemmi.read_structure(str(paths["models"] / f"{s.name}_rank{p.rank}.cif"))
            xyz = np.array([a.pos.tolist() for ch in st[0] for r in ch for a in r])
            assert xyz.shape == s.coords.shape  # all atoms, not only the fitted ones
            np.testing.assert_allclose(xyz, s.coords @ p.rotation.T + p.translation, atol=2e-3)
            assert [ch.name for ch in st[0]] == s.chains
            names = [a.name for ch in st[0] for r in ch for a in r]
            assert names[:4] == ["N", "CA", "C", "O"]


def test_pdb_models(result, tmp_path):
    paths = write_fit_outputs(result, tmp_path / "o", top=1, model_format="pdb")
    files = sorted(paths["models"].iterdir())
    assert [f.suffix for f in files] == [".pdb", ".pdb"]
    st = gemmi.read_structure(str(files[0]))
    assert st[0].count_atom_sites() == result.structures[0].n_atoms


def test_cxc_script(result, tmp_path):
    paths = write_fit_outputs(result, tmp_path / "o", top=2)
    text = paths["cxc"].read_text()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    map_abs = str(Path(result.map.path).resolve())
    assert lines[0] == f'open "{map_abs}"'  # absolute, quoted (the name holds a space)
    assert lines[1].startswith("volume #1 level 0.25 ")
    opens = [ln.split(" ", 1)[1] for ln in lines[2:] if ln.startswith("open ")]
    assert len(opens) == 4
    for o in opens:
        assert Path(o).is_absolute() and Path(o).is_file()
    assert "color #2 " in text and "color #5 " in text


def test_trajectories_and_log(result, tmp_path):
    paths = write_fit_outputs(result, tmp_path / "o", command="difffit fit a.mrc b.pdb -r 5")
    with np.load(paths["trajectories"]) as npz:
        assert set(npz.files) == set(result.trajectory) | {"structure_names", "centroids",
                                                           "convention"}
        for k, v in result.trajectory.items():
            np.testing.assert_array_equal(npz[k], v)
    log = paths["log"].read_text()
    assert "difffit fit a.mrc b.pdb -r 5" in log
    assert difffit.__version__ in log
    for field in ("n_rotations", "lr_quat", "dust_min_size", "rank_by", "min_inside_fraction"):
        assert f"{field}:" in log
    assert "build_info" in log and "optimise" in log


def test_refuses_non_empty_folder(result, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    write_fit_outputs(result, out)  # an empty existing folder is fine
    before = (out / "results.csv").read_bytes()
    with pytest.raises(FileExistsError, match="force") as exc:  # --force / force=True
        write_fit_outputs(result, out)
    assert str(out) in str(exc.value)
    assert (out / "results.csv").read_bytes() == before
    result.placements[0].hits = 999
    write_fit_outputs(result, out, force=True)
    assert (out / "results.csv").read_bytes() != before
    assert _no_temp_files(out)


def test_outdir_is_a_file(result, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(difffit.DifffitInputError, match="not a folder"):
        write_fit_outputs(result, f, force=True)


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "results.csv"
    target.write_text("old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        _atomic_write(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_map_without_file_is_written(tmp_path):
    r = _result(None, n_structures=1, per_structure=2)
    paths = write_fit_outputs(r, tmp_path / "o")
    assert paths["map"] == tmp_path / "o" / "map.mrc"
    back = read_map(paths["map"])
    np.testing.assert_allclose(back.data, r.map.data)
    np.testing.assert_allclose(back.origin, r.map.origin)
    assert f"open {paths['map'].resolve()}" in paths["cxc"].read_text()


def test_top_and_empty_result(tmp_path):
    r = _result(None, n_structures=2, per_structure=2)
    paths = write_fit_outputs(r, tmp_path / "a", top=5)
    assert len(list(paths["models"].iterdir())) == 4  # only as many as there are
    r.placements = []
    paths = write_fit_outputs(r, tmp_path / "b")
    assert list(paths["models"].iterdir()) == []
    with open(paths["csv"]) as fh:
        assert list(csv.DictReader(fh)) == []
    assert "no placement for: prot0, prot1" in r.summary_table()


def test_same_structure_names_do_not_collide(tmp_path):
    r = _result(None, n_structures=2, per_structure=1)
    for s in r.structures:
        s.name = "same"
    paths = write_fit_outputs(r, tmp_path / "o")
    assert sorted(p.name for p in paths["models"].iterdir()) == ["same_1_rank1.cif", "same_2_rank1.cif"]


def test_summary_table(result):
    text = result.summary_table(top=2)
    lines = text.splitlines()
    header = lines[0].split()
    assert header[:5] == ["structure", "rank", "hits", "corr", "cam"] and "inside" in header
    body = lines[2:]
    assert len(body) == 4
    # Structures in order of their best score; ranks within each.
    assert [ln.split()[:2] for ln in body] == [["prot0", "1"], ["prot0", "2"], ["prot1", "1"], ["prot1", "2"]]
    p = result.best("prot0")
    c = p.rotation @ result.structures[0].centroid + p.translation
    assert f"{c[0]:.2f}" in body[0] and f"{p.metrics['cam']:.3f}" in body[0]


# ----------------------------------------------------------------------------------------
# Outputs a user can read back (#13): the score names its metric, the columns their units,
# the JSON the transform convention; trajectories.npz describes itself; read_results.
# ----------------------------------------------------------------------------------------


def test_score_metric_units_and_convention(result, tmp_path):
    result.params = FitParams(n_rotations=3, n_positions=2, rank_by="correlation")
    paths = write_fit_outputs(result, tmp_path / "o")
    with open(paths["csv"]) as fh:
        header = next(csv.reader(fh))
    assert "score (correlation)" in header and "score" not in header
    assert header[:3] == ["structure", "input", "rank"]
    doc = json.loads(paths["json"].read_text())
    assert doc["kind"] == "fit"
    assert doc["score_metric"] == "correlation" and doc["score_column"] == "score (correlation)"
    assert "x -> R x + t" in doc["transform"] and "input structure file" in doc["transform"]
    assert doc["units"]["length"] == "Angstrom"
    # Every column described; lengths in Angstrom, the rotation unitless, metrics defined.
    assert list(doc["columns"]) == header and all(doc["columns"].values())
    for k in ("tx", "ty", "tz", "cx", "cy", "cz"):
        assert "Angstrom" in doc["columns"][k]
    assert "unitless" in doc["columns"]["r23"] and "unitless" in doc["columns"]["cam"]
    assert "map units" in doc["columns"]["mean_density"]
    assert doc["columns"]["score (correlation)"].startswith("the ranking score, correlation")
    for rec, s in zip(doc["structures"], result.structures):
        np.testing.assert_allclose(rec["centroid"], s.centroid)


def test_read_results_of_a_fit(result, tmp_path):
    write_fit_outputs(result, tmp_path / "o")
    run = difffit.read_results(tmp_path / "o")
    assert run.kind == "fit" and run.score_metric == "cam"
    assert run.path == tmp_path / "o" / "results.json"
    assert [s["name"] for s in run.structures] == ["prot0", "prot1"]
    assert len(run.placements) == len(result.placements)
    for got, p in zip(run.placements, result.placements):
        assert isinstance(got, Placement)
        for k in ("structure_index", "structure_name", "rank", "hits", "iteration", "start",
                  "refined"):
            assert getattr(got, k) == getattr(p, k), k
        np.testing.assert_allclose(got.rotation, p.rotation, atol=1e-7)
        np.testing.assert_allclose(got.translation, p.translation, atol=1e-6)
        np.testing.assert_allclose(got.centre, p.centre, atol=1e-6)
        assert got.score == pytest.approx(p.score)
        assert got.metrics == pytest.approx(p.metrics)
    assert run.best("prot1").rank == 1 and run.best("prot1").structure_index == 1
    assert [p.rank for p in run.for_structure(0)] == [1, 2, 3, 4]
    assert run.best().score == pytest.approx(result.best().score)
    assert difffit.read_results(tmp_path / "o" / "results.json").rows() == run.rows()
    with pytest.raises(difffit.DifffitInputError, match="results.json"):
        difffit.read_results(tmp_path)  # nothing there
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{}")
    with pytest.raises(difffit.DifffitInputError, match="not a difffit results file"):
        difffit.read_results(tmp_path / "bad")


def test_trajectories_read_back_as_poses(result, tmp_path):
    from difffit.readback import read_trajectories

    paths = write_fit_outputs(result, tmp_path / "o")
    traj = read_trajectories(paths["trajectories"])
    assert traj.structure_names == ["prot0", "prot1"]
    np.testing.assert_allclose(traj.centroids, [s.centroid for s in result.structures])
    assert "R(q) (x - centroids[mol_idx[s]]) + t" in traj.convention
    np.testing.assert_array_equal(traj.starts("prot1"), np.arange(6, 12))
    R, t = traj.poses()
    K, S = result.trajectory["score"].shape
    assert R.shape == (K, S, 3, 3) and t.shape == (K, S, 3)
    # Atom x of structure i, moved by start s: R(q)(x - c) + trans == R x + t.
    q = torch.from_numpy(result.trajectory["quat"].astype(np.float64))
    for s in (0, 7):
        struct = result.structures[result.trajectory["mol_idx"][s]]
        x = struct.coords
        for k in range(K):
            Rq = quat_to_matrix(q[k, s]).numpy()
            want = (x - struct.centroid) @ Rq.T + result.trajectory["trans"][k, s]
            np.testing.assert_allclose(x @ R[k, s].T + t[k, s], want, atol=1e-4)
    R1, t1 = traj.poses("prot1")
    np.testing.assert_allclose(R1, R[:, 6:])
    np.testing.assert_allclose(t1, t[:, 6:])

    # A file of an older difffit (no centroids): refused unless they are given.
    old = tmp_path / "old.npz"
    np.savez(old, **result.trajectory)
    with pytest.raises(difffit.DifffitInputError, match="centroids="):
        read_trajectories(old)
    again = read_trajectories(old, centroids=traj.centroids, names=["a", "b"])
    np.testing.assert_allclose(again.poses()[1], t)
    assert again.structure_names == ["a", "b"]


# ----------------------------------------------------------------------------------------
# --force replaces an earlier fit's outputs completely, and nothing else (#12)
# ----------------------------------------------------------------------------------------


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_force_replaces_the_earlier_fit_completely(result, tmp_path):
    out = tmp_path / "o"
    first = write_fit_outputs(result, out, top=3, report=True, command="difffit fit old")
    assert first["report"].is_file()
    listed = json.loads(first["json"].read_text())["files"]
    assert set(listed) == _files(out)  # results.json lists exactly what the fit wrote
    # The user's files, beside and among the fit's, and one outside.
    (out / "notes.txt").write_text("mine")
    (out / "models" / "mine.cif").write_text("mine")
    (tmp_path / "outside.txt").write_text("mine")

    second = write_fit_outputs(result, out, top=1, force=True, command="difffit fit new")
    assert "report" not in second
    now = json.loads(second["json"].read_text())["files"]
    assert _files(out) == set(now) | {"notes.txt", "models/mine.cif"}
    assert sorted(p.name for p in (out / "models").iterdir()) == [
        "mine.cif", "prot0_rank1.cif", "prot1_rank1.cif"]
    assert "difffit fit old" not in "".join(p.read_text() for p in out.glob("*.txt"))
    assert (tmp_path / "outside.txt").read_text() == "mine"
    assert _no_temp_files(out)


def test_force_never_removes_what_the_fit_did_not_write(result, tmp_path):
    out = tmp_path / "o"
    paths = write_fit_outputs(result, out, top=1)
    (tmp_path / "outside.txt").write_text("mine")
    (out / "notes.txt").write_text("mine")
    doc = json.loads(paths["json"].read_text())
    # A results.json naming files outside the folder, or a folder, or missing files.
    doc["files"] += ["../outside.txt", str(tmp_path / "outside.txt"), "models", "gone.txt"]
    paths["json"].write_text(json.dumps(doc))
    write_fit_outputs(result, out, top=1, force=True)
    assert (tmp_path / "outside.txt").read_text() == "mine"
    assert (out / "notes.txt").read_text() == "mine" and (out / "models").is_dir()


def test_force_over_a_foreign_results_json(result, tmp_path):
    """A results.json that difffit did not write names nothing to remove."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "data.csv").write_text("mine")
    (out / "results.json").write_text(json.dumps({"files": ["data.csv"]}))
    write_fit_outputs(result, out, force=True)
    assert (out / "data.csv").read_text() == "mine"


def test_force_over_a_results_json_without_file_list(result, tmp_path):
    """A results.json written before the file list: its models are still known."""
    out = tmp_path / "o"
    paths = write_fit_outputs(result, out, top=3)
    doc = json.loads(paths["json"].read_text())
    del doc["files"]
    paths["json"].write_text(json.dumps(doc))
    (out / "notes.txt").write_text("mine")
    write_fit_outputs(result, out, top=1, force=True)
    assert sorted(p.name for p in (out / "models").iterdir()) == ["prot0_rank1.cif",
                                                                   "prot1_rank1.cif"]
    assert (out / "notes.txt").read_text() == "mine"
