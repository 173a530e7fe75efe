"""Identify on real data: rank a library of structures against the DiffFit demo density
(an axoneme density that the two PACRG paralog domains fit), stream the library in
bounded batches, checkpoint and resume, run the batches on a Dask cluster, and the CLI."""
from __future__ import annotations

from pathlib import Path

import csv
import json
import zlib

import numpy as np
import pytest

from difffit import DifffitInputError
from difffit.cli import main
from difffit import identify
from difffit.library import library_files
from difffit.report import identify_report
from difffit.io import read_structure

from conftest import data_file
from test_fit import random_move

DEMO = "difffit_domain_demo"
PACRG = ("I7MLV6_D3", "I7M317_D1")
# The decoy shipped with the demo, then every in-frame model of the shared data (they sit
# in their own maps, far from this density's frame, and are different proteins).
DECOYS = (f"{DEMO}/I7LV70_D1.pdb",
          "apoferritin_emd20026_3ajo/3ajo_fitted_refined.pdb",
          "daq_emd2566_3j6b/3J6B_9.pdb",
          "hemoglobin_emd3488_5ni1/5ni1_updated.cif",
          "phage_emd4054_5lij/5lij.pdb",
          "spike_ntd_emd21457_6vyb/6vyb_Ndom.pdb",
          "spike_ntd_emd21457_6vyb/6vyb_Ndom_shifted.pdb",
          "tempy_factin_emd5168/1J6Z.pdb",
          "tempy_factin_emd5168/3MFP.pdb")
EXPECTED_CENTRE = np.array([367.5, 231.6, 385.8])  # shared/data/README.md
RES, CONTOUR = 4.0, 0.886
# A reduced search (64 random-rotation starts, 60 steps) for the tests that compare runs
# with each other: the outcome is real (the PACRG domains still come first).
QUICK = dict(n_rotations=16, n_positions=4, n_iters=60)  # as the CLI tests
# 824 + 828 | 1568 | 608 + 780 fitted atoms: three batches of at most 1700.
SMALL = (f"{DEMO}/I7MLV6_D3.pdb", f"{DEMO}/I7M317_D1.pdb", f"{DEMO}/I7LV70_D1.pdb",
         "phage_emd4054_5lij/5lij.pdb", "daq_emd2566_3j6b/3J6B_9.pdb")


def _map(data):
    return data_file(data, f"{DEMO}/density2.mrc")


@pytest.fixture(scope="module")
def small_library(shared_data, tmp_path_factory):
    """A text file listing the five SMALL structures (in place: nothing is copied)."""
    path = tmp_path_factory.mktemp("lib") / "library.txt"
    path.write_text("# PACRG domains first, then decoys\n"
                    + "".join(f"{data_file(shared_data, f)}\n" for f in SMALL))
    return path


@pytest.fixture(scope="module")
def reference(shared_data, small_library):
    """The small library in one batch, in this process: what every other run must match."""
    return identify(_map(shared_data), small_library, RES, CONTOUR, **QUICK)


def _same_ranking(a, b):
    assert a.ranking() == b.ranking()
    np.testing.assert_allclose([c.score for c in a.candidates], [c.score for c in b.candidates],
                               rtol=1e-4, atol=1e-5)
    assert [c.hits for c in a.candidates] == [c.hits for c in b.candidates]


@pytest.mark.slow
def test_pacrg_domains_outrank_the_decoy_and_every_in_frame_structure(shared_data):
    """The issue's acceptance test: both PACRG domains first, in the right place, with a
    clear margin, among the demo decoy and every in-frame model of the shared data, all
    moved away by random rigid transforms first."""
    lib = []
    for k, f in enumerate([f"{DEMO}/{n}.pdb" for n in PACRG] + list(DECOYS)):
        s = read_structure(data_file(shared_data, f))
        lib.append(s.transformed(*random_move(zlib.crc32(f.encode()) % 1000 + k)))
    res = identify(_map(shared_data), lib, RES, CONTOUR, batch_atoms=6000,
                   n_rotations=30, n_positions=10, n_iters=120)
    by_name = {c.name: c for c in res.candidates}
    assert len(res.candidates) == len(lib) and len(res.batches) > 1
    assert set(res.ranking()[:2]) == set(PACRG), [(c.name, round(c.score, 3)) for c in res.candidates]
    decoys = res.candidates[2:]
    for name in PACRG:
        c = by_name[name]
        assert c.score > max(d.score for d in decoys) + 0.1, (name, c.score)
        assert c.zscore > max(d.zscore for d in decoys), (name, c.zscore)
        assert np.linalg.norm(c.centre - EXPECTED_CENTRE) < 3.0, (name, c.centre)
        assert c.hits >= 2
        # The best placement as a model: its centroid is where the evidence says.
        moved = res.structure(c)
        np.testing.assert_allclose(moved.centroid, c.centre, atol=1e-6)
    # Why the score is a correlation and not a sum: the 4-chain haemoglobin (the largest
    # decoy) has a larger overlap (a sum over its points) than the small phage chain,
    # though it fits worse (lower cam): a raw sum would favour size.
    big, small = by_name["5ni1_updated"], by_name["5lij"]
    assert big.n_fit_atoms > 3 * small.n_fit_atoms
    assert big.metrics["overlap"] > small.metrics["overlap"] and big.score < small.score


@pytest.mark.slow
def test_bounded_batches_give_the_same_ranking_as_one_batch(shared_data, small_library, reference):
    res = identify(_map(shared_data), small_library, RES, CONTOUR, batch_atoms=1700, **QUICK)
    assert len(reference.batches) == 1
    assert [b["indices"] for b in res.batches] == [[0, 1], [2], [3, 4]]
    assert all(b["n_fit_atoms"] <= 1700 for b in res.batches)
    _same_ranking(res, reference)
    assert set(reference.ranking()[:2]) == set(PACRG)


@pytest.mark.slow
def test_interrupted_run_resumes_where_it_stopped(shared_data, small_library, reference, tmp_path):
    out = tmp_path / "run"
    calls = []

    def interrupt_after_first(info):
        calls.append(info["batch"])
        raise KeyboardInterrupt  # as Ctrl-C after the first batch

    with pytest.raises(KeyboardInterrupt):
        identify(_map(shared_data), small_library, RES, CONTOUR, batch_atoms=1700, outdir=out,
                 on_batch=interrupt_after_first, **QUICK)
    ck = out / "checkpoint"
    assert calls == [0]
    assert sorted(p.name for p in ck.iterdir()) == ["batch_00000.json", "state.json"]
    assert "batches (1 finished)" in (out / "identify_log.txt").read_text()
    first = (ck / "batch_00000.json").stat().st_mtime_ns

    # Not asked to resume: the folder is not overwritten.
    with pytest.raises(FileExistsError, match="force=True"):
        identify(_map(shared_data), small_library, RES, CONTOUR, batch_atoms=1700, outdir=out,
                 **QUICK)
    # Other settings: refused, saying what differs.
    with pytest.raises(DifffitInputError, match="n_iters"):
        identify(_map(shared_data), small_library, RES, CONTOUR, batch_atoms=1700, outdir=out,
                 resume=True, **{**QUICK, "n_iters": 61})

    resumed = []
    res = identify(_map(shared_data), small_library, RES, CONTOUR, batch_atoms=1700, outdir=out,
                   resume=True, on_batch=lambda info: resumed.append(info["batch"]), **QUICK)
    assert resumed == [1, 2]  # the finished batch is loaded, not recomputed
    assert [b["from_checkpoint"] for b in res.batches] == [True, False, False]
    assert (ck / "batch_00000.json").stat().st_mtime_ns == first
    _same_ranking(res, reference)
    rows = list(csv.DictReader(open(out / "ranking.csv")))
    assert [r["name"] for r in rows] == res.ranking()


def test_bad_library_file_is_a_clear_error_or_skipped(shared_data, tmp_path):
    bad = tmp_path / "broken.pdb"
    bad.write_text("this is not a structure\n")
    good = data_file(shared_data, "phage_emd4054_5lij/5lij.pdb")
    with pytest.raises(DifffitInputError, match="broken.pdb.*skip"):
        identify(_map(shared_data), [good, bad], RES, CONTOUR, n_rotations=2, n_positions=1,
                 n_iters=2)
    listing = tmp_path / "lib.txt"
    listing.write_text(f"{good}\nmissing.pdb\n")
    with pytest.raises(DifffitInputError, match="lib.txt, line 2: .*missing.pdb is not a file"):
        library_files(listing)
    with pytest.raises(DifffitInputError, match="does not exist"):
        library_files(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DifffitInputError, match="holds no PDB/mmCIF"):
        library_files(empty)
    # A dangling link in a library folder is an unreadable file, named, not skipped silently.
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / Path(good).name).symlink_to(good)
    (folder / "gone.pdb").symlink_to(tmp_path / "deleted.pdb")
    assert [Path(f).name for f in library_files(folder)] == [Path(good).name, "gone.pdb"]
    with pytest.raises(DifffitInputError, match="gone.pdb.*skip"):
        identify(_map(shared_data), folder, RES, CONTOUR, n_rotations=2, n_positions=1,
                 n_iters=2)

    res = identify(_map(shared_data), [good, bad], RES, CONTOUR, skip_bad=True, n_rotations=2,
                   n_positions=1, n_iters=2, refine=False)
    assert res.ranking() == ["5lij"]
    assert len(res.skipped) == 1 and res.skipped[0][0] == str(bad)
    assert "cannot read" in res.skipped[0][1] or "no atoms" in res.skipped[0][1]


def test_skip_bad_log_names_each_file_once_with_its_reason(shared_data, tmp_path, capsys):
    """--skip-bad: identify_log.txt lists each skipped file once, then why (gemmi's own
    message names the file again: that copy is left out)."""
    bad = tmp_path / "broken.pdb"
    bad.write_text("this is not a structure\n")
    garbled = tmp_path / "garbled.cif"
    garbled.write_text("loop_\n_atom_site.id\n")
    good = data_file(shared_data, "phage_emd4054_5lij/5lij.pdb")
    out = tmp_path / "out"
    assert main(["identify", str(_map(shared_data)), "-r", str(RES), "-t", str(CONTOUR),
                 "--library", str(good), str(bad), str(garbled), "--skip-bad", "-o", str(out),
                 "--rotations", "2", "--positions", "1", "--iterations", "2", "--no-refine",
                 "-q"]) == 0
    log = (out / "identify_log.txt").read_text()
    lines = [line for line in log.splitlines() if not line.startswith("command:")
             and ("broken.pdb" in line or "garbled.cif" in line)]
    assert len(lines) == 2, log
    for line, name in zip(lines, ("broken.pdb", "garbled.cif")):
        assert line.count(name) == 1 and line.strip().startswith(str(tmp_path / name) + ": "), line
    assert lines[0].strip().endswith(": no atoms found; is it a PDB or mmCIF file?")
    assert "cannot read as a PDB/mmCIF structure: line " in lines[1], lines[1]
    skipped = json.loads((out / "ranking.json").read_text())["skipped"]
    assert [Path(s["file"]).name for s in skipped] == ["broken.pdb", "garbled.cif"]
    assert not any(str(tmp_path) in s["reason"] for s in skipped)


@pytest.mark.slow
def test_dask_two_workers_give_the_same_ranking(shared_data, small_library, reference):
    distributed = pytest.importorskip("distributed", reason="dask[distributed] not installed")
    # Worker threads in this process: no process start-up on a 2-core machine; the batch
    # code path (scatter, tasks, results merged as they come) is the one of any cluster.
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        res = identify(_map(shared_data), small_library, RES, CONTOUR, batch_atoms=1700,
                       client=client, **QUICK)
        workers = set(client.scheduler_info()["workers"])
    assert len(workers) == 2 and len(res.batches) == 3
    assert {b["worker"] for b in res.batches} <= workers
    _same_ranking(res, reference)


@pytest.mark.slow
def test_cli_dask_local_worker_processes_give_the_same_ranking(shared_data, small_library,
                                                               reference, tmp_path):
    """--dask-local: two worker processes (tasks and structures pickled, files read by the
    workers, torch threads set per worker), as on a real cluster."""
    pytest.importorskip("distributed", reason="dask[distributed] not installed")
    out = tmp_path / "dask"
    assert main(["identify", str(_map(shared_data)), "--library", str(small_library), "-r", "4",
                 "-t", str(CONTOUR), "-o", str(out), "--batch-atoms", "1700", "--top", "0",
                 "--rotations", "16", "--positions", "4", "--iterations", "60",
                 "--dask-local", "2", "-q"]) == 0
    doc = json.loads((out / "ranking.json").read_text())
    assert [c["name"] for c in doc["candidates"]] == reference.ranking()
    np.testing.assert_allclose([c["score (cam)"] for c in doc["candidates"]],
                               [c.score for c in reference.candidates], rtol=1e-4, atol=1e-5)
    assert all(b["worker"].startswith("tcp://") for b in doc["batches"])


@pytest.mark.slow
def test_cli_identify_writes_ranking_models_report_and_resumes(shared_data, small_library,
                                                               reference, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["identify", str(_map(shared_data)), "--library", str(small_library), "-r", "4",
            "-t", str(CONTOUR), "-o", str(out), "--batch-atoms", "1700", "--top", "2",
            "--rotations", "16", "--positions", "4", "--iterations", "60", "--report", "-q"]
    assert main(args + ["--device", "cpu"]) == 0
    rows = list(csv.DictReader(open(out / "ranking.csv")))
    assert [r["name"] for r in rows] == reference.ranking()
    np.testing.assert_allclose([float(r["score (cam)"]) for r in rows],
                               [c.score for c in reference.candidates], rtol=1e-4, atol=1e-5)
    doc = json.loads((out / "ranking.json").read_text())
    assert doc["score"] == "cam" and doc["size_fair"] and len(doc["batches"]) == 3
    models = sorted(p.name for p in (out / "models").iterdir())
    assert models == [f"rank001_{rows[0]['name']}.cif", f"rank002_{rows[1]['name']}.cif"]
    moved = read_structure(out / "models" / models[0])
    assert np.linalg.norm(moved.centroid - EXPECTED_CENTRE) < 3.0
    html = (out / "report.html").read_text()
    assert "<svg" in html and all(n in html for n in PACRG)
    log = (out / "identify_log.txt").read_text()
    assert "3 batches" in log and "batch 2:" in log

    capsys.readouterr()
    assert main(args) == 2  # no overwrite without --force
    assert "--force" in capsys.readouterr().err
    assert main(args[:-1] + ["--resume"]) == 0  # everything from the checkpoint
    printed = capsys.readouterr().out
    assert "3 from the checkpoint" in printed and rows[0]["name"] in printed
    # --force starts afresh: the earlier run's models go (a second model would contradict
    # the new ranking), a file of the user's stays.
    (out / "models" / "notes.txt").write_text("mine")
    top1 = [a if a != "2" or args[i - 1] != "--top" else "1" for i, a in enumerate(args)]
    assert main(top1 + ["--force"]) == 0
    assert sorted(p.name for p in (out / "models").iterdir()) == sorted([models[0], "notes.txt"])
    assert main(["identify", str(_map(shared_data)), "--library", str(tmp_path / "no_such_folder"),
                 "-r", "4", "-o", str(tmp_path / "other"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "no_such_folder" in err and "does not exist" in err


@pytest.mark.slow
def test_table_shows_cam_beside_a_zscore_ranking(reference):
    """Ranked by z, the table's second number is cam (not the z-score again)."""
    import copy

    by_z = copy.copy(reference)
    by_z.score = "zscore"
    assert reference.summary_table().splitlines()[0].split()[3:5] == ["cam", "z"]
    assert by_z.summary_table().splitlines()[0].split()[3:5] == ["zscore", "cam"]
    first = by_z.summary_table().splitlines()[2].split()
    assert float(first[4]) == pytest.approx(reference.candidates[0].metric("cam"), abs=1e-3)


@pytest.mark.slow
def test_identify_report_refuses_to_overwrite(reference, tmp_path):
    path = identify_report(reference, tmp_path / "r.html")
    with pytest.raises(FileExistsError):
        identify_report(reference, path)
    assert identify_report(reference, path, overwrite=True) == path
