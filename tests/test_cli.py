"""The command line: argument errors (exit 2, a message, no traceback), info, demo, and a
reduced fit on real data."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import difffit
from difffit.cli import main
from difffit.io import read_structure

from conftest import data_file

REDUCED = ["--rotations", "20", "--positions", "5", "--iterations", "60"]


@pytest.fixture
def daq_map(shared_data):
    return data_file(shared_data, "daq_emd2566_3j6b/2566_3J6B_9.mrc")


@pytest.fixture
def daq_model(shared_data):
    return data_file(shared_data, "daq_emd2566_3j6b/3J6B_9.pdb")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_missing_map_file(capsys, tmp_path):
    missing = tmp_path / "no_such_map.mrc"
    model = tmp_path / "m.pdb"
    model.write_text("")
    code, out, err = run(capsys, "fit", missing, model, "--resolution", "4", "-o", tmp_path / "o")
    assert code == 2
    assert "no_such_map.mrc" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_missing_structure_file(daq_map, capsys, tmp_path):
    code, _, err = run(capsys, "fit", daq_map, tmp_path / "absent.pdb", "-r", "5", "-o", tmp_path / "o")
    assert code == 2 and "absent.pdb" in err and "Traceback" not in err


def test_unknown_chain(daq_map, daq_model, capsys, tmp_path):
    code, _, err = run(capsys, "fit", daq_map, daq_model, "-r", "5", "--chains", "Q",
                       "-o", tmp_path / "o")
    assert code == 2 and "'Q'" in err


def test_argument_errors(capsys, tmp_path):
    code, _, err = run(capsys, "fit", "a.mrc", "b.pdb")  # no --resolution
    assert code == 2 and "--resolution" in err
    code, _, err = run(capsys, "fit", "a.mrc", "b.pdb", "-r", "-3")
    assert code == 2 and "positive" in err
    code, _, err = run(capsys, "fit", "a.mrc", "b.pdb", "-r", "4", "--voxel-size", "1,2")
    assert code == 2
    code, _, _ = run(capsys)  # no command: usage, status 2
    assert code == 2
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "fit" in out


def test_refuses_non_empty_outdir_before_fitting(daq_map, daq_model, capsys, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run(capsys, "fit", daq_map, daq_model, "-r", "5", "-o", out, *REDUCED)
    assert code == 2 and "--force" in err and str(out) in err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_info(capsys):
    code, out, _ = run(capsys, "info")
    assert code == 0
    assert f"difffit {difffit.__version__}" in out
    assert "torch" in out and "CUDA available" in out and "openmp" in out


def test_python_dash_m(tmp_path):
    """``python -m difffit`` runs the same command line, in a fresh process."""
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "difffit", "fit", str(tmp_path / "nomap.mrc"),
                           "x.pdb", "-r", "4"], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=120)
    assert proc.returncode == 2
    assert "nomap.mrc" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "difffit", "info"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "difffit" in proc.stdout


def test_progress_bars_stay_out_of_a_log(daq_map, daq_model, tmp_path):
    """With stderr going to a file (a batch job's log), no progress bar is drawn: each
    redraw would be one more fragment in the log. The warnings and messages stay."""
    log = tmp_path / "job.log"
    with open(log, "w") as err:
        proc = subprocess.run([sys.executable, "-m", "difffit", "fit", str(daq_map), str(daq_model),
                               "-r", "5", *REDUCED, "-o", str(tmp_path / "out")],
                              stdout=subprocess.DEVNULL, stderr=err, timeout=300)
    assert proc.returncode == 0
    text = log.read_text()
    assert "difffit: fitting 1 structure(s)" in text
    assert "step/s" not in text and "\r" not in text


def test_fit_writes_outputs(daq_map, daq_model, capsys, tmp_path):
    out = tmp_path / "fit"
    code, stdout, err = run(capsys, "fit", daq_map, daq_model, "--resolution", "5", "-o", out,
                            "--quiet", "--top", "2", *REDUCED)
    assert code == 0, err
    assert str(out) in stdout
    for name in ("results.csv", "results.json", "difffit_fits.cxc", "trajectories.npz", "log.txt"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "models").iterdir()) == ["3J6B_9_rank1.cif", "3J6B_9_rank2.cif"]
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and rows[0]["rank"] == "1"
    doc = json.loads((out / "results.json").read_text())
    assert doc["params"]["n_rotations"] == 20 and doc["params"]["n_iters"] == 60
    assert doc["resolution"] == 5.0
    assert "--rotations 20" in (out / "log.txt").read_text()
    # The model is deposited in frame: the best placement lands on it.
    deposited = read_structure(daq_model)
    best = rows[0]
    centre = np.array([float(best[k]) for k in ("cx", "cy", "cz")])
    assert np.linalg.norm(centre - deposited.centroid) < 3.0
    # Running again without --force is refused; with it, it works.
    code, _, err = run(capsys, "fit", daq_map, daq_model, "-r", "5", "-o", out, "-q", *REDUCED)
    assert code == 2 and "--force" in err
    code, _, err = run(capsys, "fit", daq_map, daq_model, "-r", "5", "-o", out, "-q", "--force",
                       "--no-refine", "--model-format", "pdb", "--top", "1", *REDUCED)
    assert code == 0, err
    assert (out / "models" / "3J6B_9_rank1.pdb").is_file()


def test_fit_default_outdir_and_summary(daq_map, daq_model, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run(capsys, "fit", daq_map, daq_model, "-r", "5", "--split-chains",
                          "--selection", "ca", *REDUCED)
    assert code == 0
    out = tmp_path / "difffit_out" / "2566_3J6B_9"
    assert (out / "results.csv").is_file()
    assert "3J6B_9_9" in stdout  # split chains are named <file>_<chain>
    assert "rank" in stdout.splitlines()[0] and "cam" in stdout.splitlines()[0]


def test_demo_command(capsys, tmp_path):
    code, out, _ = run(capsys, "demo", "--quick", "-o", tmp_path / "demo")
    assert code == 0
    assert "demo: recovered 2/2 copies" in out
    assert (tmp_path / "demo" / "map.mrc").is_file()
    assert (tmp_path / "demo" / "results.csv").is_file()
