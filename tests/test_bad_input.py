"""Never a silent wrong answer (#12): every bad or implausible input, one row each.

Command-line rows give the arguments, the exit status, what stderr must say (and must not:
no traceback, no Python keyword spelling on the command line), and whether anything may
be written: a refused run leaves every file under the test folder as it was. Python rows
give the call and the exception (or warning) with its message. Rows that need a real
search are marked slow; the others run reduced searches or stop before the search.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import gemmi
import numpy as np
import pytest
from conftest import data_file

import difffit
from difffit.cli import main
from difffit.demo import ideal_protein
from difffit.errors import DifffitInputError, DifffitWarning
from difffit.maps import DensityMap, read_map, write_map
from difffit.simulate import splat_atoms
from difffit.structures import read_structure, write_structure

REDUCED = ["--rotations", "10", "--positions", "5", "--iterations", "30"]
DEMO = "difffit_domain_demo"
PHAGE = "phage_emd4054_5lij"
DAQ = "daq_emd2566_3j6b"
# Python keyword spellings that must never reach a command-line user.
PYTHON_SPELLING = r"\b\w+=(True|False)\b|\bvoxel_size=|\bdust_min_size\b|\bskip_bad\b|" \
                  r"\bkeep_hydrogens\b|\bkeep_waters\b|\bkeep_ligands\b|\bn_rotations\b"


# ----------------------------------------------------------------------------- inputs


def _raw(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def _with_mode(raw: bytes, mode: int) -> bytes:
    return raw[:12] + np.int32(mode).tobytes() + raw[16:]


def _model_scaled(src: Path, out: Path, factor: float) -> None:
    st = gemmi.read_structure(str(src))
    xyz = np.array([a.pos.tolist() for ch in st[0] for r in ch for a in r])
    c = xyz.mean(0)
    for ch in st[0]:
        for r in ch:
            for a in r:
                a.pos = gemmi.Position(*(c + (np.array(a.pos.tolist()) - c) * factor))
    st.write_pdb(str(out))


def _model_with_everything(src: Path, out: Path) -> None:
    """The daq model (with its hydrogens) plus a residue of unknown name, a zinc ion and a
    water: every kind of atom the fit leaves out of its selection."""
    st = gemmi.read_structure(str(src))
    st.remove_alternative_conformations()
    chain = st[0][0]
    chain[20].name = "ZZZ"  # a name gemmi's table does not know
    for name, element, resname, num, het in (("ZN", "Zn", "ZN", 901, "H"),
                                              ("O", "O", "HOH", 902, "H")):
        res = gemmi.Residue()
        res.name, res.seqid, res.het_flag = resname, gemmi.SeqId(num, " "), het
        atom = gemmi.Atom()
        atom.name, atom.element = name, gemmi.Element(element)
        atom.pos = chain[10][0].pos  # somewhere in the model
        atom.occ, atom.b_iso = 1.0, 30.0
        res.add_atom(atom)
        chain.add_residue(res)
    st.write_pdb(str(out))


def _c4_channel(tmp: Path) -> tuple[Path, Path]:
    """A C4 channel: four copies of an ideal helical bundle on a ring, simulated at 5 A
    with a little noise (the map holds those four copies and nothing else)."""
    s = ideal_protein(n_helices=3, helix_length=18, seed=0)
    xyz = s.coords - s.coords.mean(0)
    ring = np.sqrt((xyz[:, :2] ** 2).sum(1)).max() + 2.0
    parts = []
    for k in range(4):
        a = k * np.pi / 2
        R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        parts.append((xyz + [ring, 0, 0]) @ R.T)
    allx = np.concatenate(parts)
    vox = 1.2
    lo = allx.min(0) - 12
    n = np.ceil((allx.max(0) + 12 - lo) / vox).astype(int) + 1
    data = splat_atoms(allx, np.tile(s.atomic_numbers, 4), 5.0, lo, (vox,) * 3,
                       (n[2], n[1], n[0]))
    data = data + np.random.default_rng(0).normal(0, 0.02 * data.max(), data.shape)
    write_map(tmp / "c4.mrc", DensityMap(data.astype(np.float32), lo, vox))
    write_structure(tmp / "c4_subunit.pdb", s)
    return tmp / "c4.mrc", tmp / "c4_subunit.pdb"


@dataclass
class Inputs:
    tmp: Path
    files: dict[str, Path] = field(default_factory=dict)

    def __getitem__(self, key: str) -> str:
        return str(self.files[key])


@pytest.fixture
def inputs(shared_data, tmp_path) -> Inputs:
    """Real maps and models (read in place) and the broken ones made from them (in
    ``tmp_path/in``)."""
    d = tmp_path / "in"
    d.mkdir()
    f = {"demo_map": data_file(shared_data, f"{DEMO}/density2.mrc"),
         "pacrg": data_file(shared_data, f"{DEMO}/I7MLV6_D3.pdb"),
         "phage_map": data_file(shared_data, f"{PHAGE}/emd_4054.mrc"),
         "phage_model": data_file(shared_data, f"{PHAGE}/5lij.pdb"),
         "daq_map": data_file(shared_data, f"{DAQ}/2566_3J6B_9.mrc"),
         "daq_model": data_file(shared_data, f"{DAQ}/3J6B_9.pdb")}
    raw = _raw(f["daq_map"])
    for mode in (0, 1):
        f[f"mode{mode}"] = d / f"mode{mode}.mrc"
        f[f"mode{mode}"].write_bytes(_with_mode(raw, mode))
    f["truncated"] = d / "truncated.mrc"
    f["truncated"].write_bytes(raw[:100_000])
    # Cell lengths 0: the header's voxel size is 0.
    f["voxel0"] = d / "voxel0.mrc"
    f["voxel0"].write_bytes(raw[:40] + np.zeros(3, np.float32).tobytes() + raw[52:])
    f["big"] = d / "big.pdb"
    _model_scaled(f["pacrg"], f["big"], 10.0)
    f["one_atom"] = d / "one_atom.pdb"
    f["one_atom"].write_text("ATOM      1  CA  ALA A   1     367.500 231.600 385.800  1.00 30.00"
                             "           C\nEND\n")
    f["hydrogens"] = d / "hydrogens.pdb"
    f["hydrogens"].write_text("HETATM    1  H1  HHH A   1      10.000  10.000  10.000  1.00 30.00"
                              "           H\nHETATM    2  H2  HHH A   1      11.000  10.000  "
                              "10.000  1.00 30.00           H\nEND\n")
    f["everything"] = d / "everything.pdb"
    _model_with_everything(_unzipped(f["daq_model"], d), f["everything"])
    f["bad_library"] = d / "library"
    f["bad_library"].mkdir()
    (f["bad_library"] / "good.pdb").write_bytes(_raw(f["pacrg"]))
    (f["bad_library"] / "broken.pdb").write_text("not a structure\n")
    f["a_file"] = d / "a_file"
    f["a_file"].write_text("I am a file\n")
    f["busy"] = tmp_path / "busy"
    f["busy"].mkdir()
    (f["busy"] / "mine.txt").write_text("keep me\n")
    f["csv_folder"] = tmp_path / "csv_folder"
    (f["csv_folder"] / "results.csv").mkdir(parents=True)
    return Inputs(tmp_path, f)


def _unzipped(path: Path, d: Path) -> Path:
    if not path.name.endswith(".gz"):
        return path
    out = d / path.name[:-3]
    out.write_bytes(_raw(path))
    return out


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with a digest of its content."""
    return {str(p.relative_to(root)): (hashlib.sha1(p.read_bytes()).hexdigest()
                                       if p.is_file() else "folder")
            for p in sorted(root.rglob("*"))}


def _run(capsys, argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ command-line rows


@dataclass
class Row:
    id: str
    argv: Callable[[Inputs], list]
    code: int
    stderr: str | None = None       # a regex stderr must match
    absent: str | None = None       # a regex stderr must not match
    writes: bool = False            # outputs may appear (under the output folder only)
    slow: bool = False
    check: Callable[[Inputs, str], None] | None = None


def _out(i: Inputs, name: str = "out") -> Path:
    return i.tmp / name


def _fit(map_key, model_key, *more):
    return lambda i: ["fit", i[map_key], i[model_key], *more, "-o", _out(i), "-q"]


def _models_keep_every_atom(i: Inputs, err: str) -> None:
    (model,) = sorted((_out(i) / "models").glob("*_rank1.cif"))
    written = gemmi.read_structure(str(model))
    given = gemmi.read_structure(i["everything"])
    assert written[0].count_atom_sites() == given[0].count_atom_sites()
    names = {r.name for ch in written[0] for r in ch}
    assert {"ZZZ", "ZN", "HOH"} <= names
    assert any(a.is_hydrogen() for ch in written[0] for r in ch for a in r)
    # The unknown residue has a peptide backbone: it is fitted like its neighbours.
    s = read_structure(i["everything"])
    assert s.n_fit_atoms == 4 * sum(1 for ch in given[0] for r in ch
                                    if r.name not in ("ZN", "HOH"))


def _models_without_waters(i: Inputs, err: str) -> None:
    (model,) = sorted((_out(i) / "models").glob("*_rank1.cif"))
    names = {r.name for ch in gemmi.read_structure(str(model))[0] for r in ch}
    assert "HOH" not in names and {"ZZZ", "ZN"} <= names


def _composite_complete(i: Inputs, err: str) -> None:
    out = _out(i)
    state = json.loads((out / "state.json").read_text())
    assert state["finished"] and "fully explained" in state["stop_reason"]
    assert (out / "composite.cif").is_file() and (out / "summary.csv").is_file()
    assert len(gemmi.read_structure(str(out / "composite.cif"))[0]) == 4  # four copies


ROWS = [
    # --- silent wrong answers ---------------------------------------------------------
    Row("phage_header_voxel_size", _fit("phage_map", "phage_model", "-r", "4", *REDUCED),
        0, r"warning: 5lij: the model's size is 1\.3\d times .*--voxel-size 1\.3\d", writes=True),
    Row("phage_header_voxel_size_full_search", _fit("phage_map", "phage_model", "-r", "4"),
        0, r"(?s)--voxel-size 1\.3\d.*5lij: the best placement .* does not stand out",
        writes=True, slow=True),
    Row("phage_right_voxel_size", _fit("phage_map", "phage_model", "-r", "4",
                                       "--voxel-size", "1.38"),
        0, None, absent=r"warning", writes=True, slow=True),
    Row("resolution_1000_on_a_1.37_A_map", _fit("demo_map", "pacrg", "-r", "1000", *REDUCED),
        2, r"density2\.mrc(\.gz)?: resolution 1000 A is coarser than the map's whole box .*--resolution"),
    Row("voxel_size_0.001", _fit("demo_map", "pacrg", "-r", "4", "--voxel-size", "0.001"),
        2, r"coarser than the map's whole box .*voxel size 0\.001 A.*--voxel-size"),
    Row("model_10x_larger_than_the_box", _fit("demo_map", "big", "-r", "4", *REDUCED),
        2, r"big: the model .* is \d+\.\d times the size of the map's box"),
    Row("one_atom_model", _fit("demo_map", "one_atom", "-r", "4", "--selection", "all"),
        2, r"one_atom: 1 fitted atom.*at least 3 atoms.*--selection"),
    Row("threshold_below_the_minimum", _fit("demo_map", "pacrg", "-r", "4", "-t", "-100"),
        2, r"threshold -100 is below the map's minimum.*raise --threshold"),
    Row("threshold_above_the_maximum", _fit("demo_map", "pacrg", "-r", "4", "-t", "100"),
        2, r"density2\.mrc(\.gz)?: threshold 100 is at or above the map's maximum.*lower --threshold"),
    Row("mode_1_header_over_float32_data", _fit("mode1", "daq_model", "-r", "5"),
        2, r"mode 1 \(int16, 2 bytes per voxel\) on a 35 x 52 x 47 grid needs 171080 bytes, "
           r"the file holds 342160, which fits mode 2 \(float32\)"),
    Row("mode_0_header_over_float32_data", _fit("mode0", "daq_model", "-r", "5"),
        2, r"mode 0 \(int8, 1 byte per voxel\).*needs 85540 bytes.*fits mode 2"),
    Row("truncated_data", _fit("truncated", "daq_model", "-r", "5"),
        2, r"needs 342160 bytes, the file holds 98976: the file is truncated"),
    Row("unknown_residue_hydrogens_ion_water_in_written_models",
        _fit("daq_map", "everything", "-r", "5", *REDUCED), 0, writes=True,
        check=_models_keep_every_atom),
    Row("keep_ligands_is_still_accepted_drop_waters_drops",
        _fit("daq_map", "everything", "-r", "5", "--keep-ligands", "--drop-waters", *REDUCED),
        0, writes=True, check=_models_without_waters),
    Row("composite_c4_channel_fully_explained",
        lambda i: ["composite", *_c4_channel(i.tmp / "in"), "-r", "5", "-o", _out(i), "-q"],
        0, None, absent="error", writes=True, slow=True, check=_composite_complete),
    # --- rough edges ------------------------------------------------------------------
    Row("outdir_under_a_file", lambda i: ["fit", i["demo_map"], i["pacrg"], "-r", "4",
                                          "-o", i.files["a_file"] / "out"],
        2, r"a_file is a file, not a folder"),
    Row("outdir_in_proc", lambda i: ["fit", i["demo_map"], i["pacrg"], "-r", "4", "-o",
                                     "/proc/difffit_x"],
        2, r"/proc/difffit_x: cannot write in /proc"),
    Row("results_csv_is_a_folder_with_force",
        lambda i: ["fit", i["demo_map"], i["pacrg"], "-r", "4", "-o", i["csv_folder"],
                   "--force"],
        2, r"results\.csv: an output file goes there but a folder is in its place"),
    Row("occupied_outdir_without_force",
        lambda i: ["fit", i["demo_map"], i["pacrg"], "-r", "4", "-o", i["busy"]],
        2, r"already exists and is not empty.*--force"),
    Row("header_voxel_size_zero", _fit("voxel0", "daq_model", "-r", "5"),
        2, r"voxel size from the header is \[0\.0, 0\.0, 0\.0\].*--voxel-size V"),
    Row("dust_min_size_leaves_nothing",
        _fit("demo_map", "pacrg", "-r", "4", "--dust-min-size", "1000000"),
        2, r"nothing is left of the map after dust removal.*--dust-min-size"),
    Row("dropping_hydrogens_leaves_nothing",
        _fit("demo_map", "hydrogens", "-r", "4", "--drop-hydrogens"),
        2, r"no atoms left .*after removing hydrogens; keep them \(--keep-hydrogens\)"),
    Row("identify_unreadable_library_file",
        lambda i: ["identify", i["demo_map"], "-r", "4", "--library", i["bad_library"],
                   "-o", _out(i), "--device", "cpu", "-q"],
        2, r"broken\.pdb.*--skip-bad"),
    Row("identify_first_pass_with_zscore",
        lambda i: ["identify", i["demo_map"], "-r", "4", "--library", i["pacrg"],
                   "--first-pass", "4", "--score", "zscore", "-o", _out(i), "-q"],
        2, r"--first-pass ranks by a metric.*--score cam.*not --score zscore"),
    Row("identify_first_pass_with_dask",
        lambda i: ["identify", i["demo_map"], "-r", "4", "--library", i["pacrg"],
                   "--first-pass", "2", "--dask-local", "1", "-o", _out(i), "-q"],
        2, r"--first-pass does not combine with --dask-scheduler or --dask-local"),
    Row("identify_first_pass_with_resume",
        lambda i: ["identify", i["demo_map"], "-r", "4", "--library", i["pacrg"],
                   "--first-pass", "2", "--resume", "-o", _out(i), "-q"],
        2, r"--first-pass does not combine with --resume yet"),
    Row("identify_first_pass_zero",
        lambda i: ["identify", i["demo_map"], "-r", "4", "--library", i["pacrg"],
                   "--first-pass", "0", "-o", _out(i), "-q"],
        2, r"^difffit: error: argument --first-pass: .*>= 1.*\(see difffit identify --help\)$"),
    Row("simulate_a_1.5_TB_grid",
        lambda i: ["simulate", i["pacrg"], "-r", "0.01", "--spacing", "0.01", "-o",
                   i.tmp / "sim.mrc"],
        2, r"\d+ x \d+ x \d+ voxels \(\d+\.\d GB\).*spacing"),
    Row("missing_map", lambda i: ["fit", i.tmp / "nothing.mrc", i["pacrg"], "-r", "4"],
        2, r"nothing\.mrc: map file does not exist"),
    Row("device_name_that_is_none", _fit("demo_map", "pacrg", "-r", "4", "--device", "gpu"),
        2, r"--device must be cpu, cuda or auto"),
]


@pytest.mark.parametrize(
    "row", [pytest.param(r, id=r.id, marks=[pytest.mark.slow] if r.slow else []) for r in ROWS])
def test_command_line(row: Row, inputs: Inputs, capsys):
    before = _snapshot(inputs.tmp)
    code, out, err = _run(capsys, row.argv(inputs))
    assert code == row.code, err
    assert "Traceback" not in err
    assert not re.search(PYTHON_SPELLING, err), err  # the command line speaks in flags
    for line in err.splitlines():  # every message is one line with its prefix
        assert line.startswith(("difffit: error: ", "difffit: warning: ")), line
    if row.stderr is not None:
        assert re.search(row.stderr, err), err
    if row.absent is not None:
        assert not re.search(row.absent, err), err
    after = _snapshot(inputs.tmp)
    if row.writes:
        changed = [k for k in before if after.get(k) != before[k]]
        assert not changed, changed  # no input touched
        new = [k for k in after if k not in before]
        assert all(k == "out" or k.startswith(("out/", "in/c4")) for k in new), new
    else:
        assert after == before  # nothing written, nothing overwritten
    if row.check is not None:
        row.check(inputs, err)


def test_an_os_error_is_one_line_and_exit_1(inputs, capsys, monkeypatch):
    def full(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("difffit.output.write_fit_outputs", full)
    code, _, err = _run(capsys, ["fit", inputs["daq_map"], inputs["daq_model"], "-r", "5",
                                 "-o", _out(inputs), *REDUCED])
    assert code == 1
    assert err.strip().splitlines()[-1] == "difffit: error: [Errno 28] No space left on device"
    assert "Traceback" not in err


def test_an_unexpected_error_is_one_line_and_exit_1(inputs, capsys, monkeypatch):
    def bug(*a, **kw):
        raise KeyError("oops")

    monkeypatch.delenv("DIFFFIT_TRACEBACK", raising=False)
    monkeypatch.setattr("difffit.workflows.fit.fit", bug)
    code, _, err = _run(capsys, ["fit", inputs["daq_map"], inputs["daq_model"], "-r", "5",
                                 "-o", _out(inputs), *REDUCED])
    assert code == 1 and "Traceback" not in err
    assert re.fullmatch(r"difffit: error: unexpected KeyError: 'oops' .*DIFFFIT_TRACEBACK.*\n",
                        err.split("\n", err.count("\n") - 1)[-1])


def test_composite_resume_of_a_fully_explained_run_is_complete(inputs, capsys):
    """The run that stopped because nothing is left is finished; --resume reports it."""
    c4_map, c4_model = _c4_channel(inputs.tmp / "in")
    argv = ["composite", c4_map, c4_model, "-r", "5", "-o", _out(inputs), "-q",
            "--max-rounds", "1"]
    assert _run(capsys, argv)[0] == 0  # round 1 places the copies, max_rounds stops it
    code, _, err = _run(capsys, [*argv[:-2], "--resume"])
    assert code == 0, err
    state = json.loads((_out(inputs) / "state.json").read_text())
    assert "fully explained" in state["stop_reason"] and len(state["rounds"]) == 1
    assert (_out(inputs) / "composite.cif").is_file()


# ----------------------------------------------------------------------- Python rows


@dataclass
class PyRow:
    id: str
    call: Callable[[Inputs], object]
    raises: type | None
    match: str | None = None
    slow: bool = False


SMALL = dict(n_rotations=4, n_positions=3, n_iters=5)


def _demo(i: Inputs) -> DensityMap:
    return read_map(i["demo_map"])


PY_ROWS = [
    PyRow("lr_quat_negative", lambda i: difffit.FitParams(lr_quat=-1), DifffitInputError,
          r"lr_quat must be > 0, got -1"),
    PyRow("lr_quat_negative_in_fit",
          lambda i: difffit.fit(i["demo_map"], i["pacrg"], 4.0, lr_quat=-1),
          DifffitInputError, r"lr_quat must be > 0"),
    PyRow("n_rotations_a_string", lambda i: difffit.FitParams(n_rotations="3"),
          DifffitInputError, r"n_rotations must be an integer, got '3' \(str\)"),
    PyRow("device_gpu", lambda i: difffit.FitParams(device="gpu"), DifffitInputError,
          r"device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    PyRow("write_structure_of_a_string",
          lambda i: difffit.write_structure(i.tmp / "x.cif", "model.pdb"), DifffitInputError,
          r"structure must be a difffit Structure .*got str"),
    PyRow("composite_with_a_map_as_model",
          lambda i: difffit.composite(i["demo_map"], [i["pacrg"], i["daq_map"]], 4.0),
          DifffitInputError, r"2566_3J6B_9.mrc(.gz)?: a map \(MRC/CCP4\), where an atomic model "
          r"\(PDB/mmCIF\) is expected; a map is placed into a map only by difffit.fit"),
    PyRow("identify_with_a_map_in_the_library",
          lambda i: difffit.identify(i["demo_map"], [i["pacrg"], i["daq_map"]], 4.0),
          DifffitInputError, r"2566_3J6B_9.mrc(.gz)?: a map \(MRC/CCP4\), where an atomic model"),
    PyRow("molmap_of_a_string", lambda i: __import__("difffit.simulate").simulate.molmap("m.pdb", 4.0),
          DifffitInputError, r"molmap: structure must be a difffit Structure"),
    PyRow("min_score_a_string", lambda i: difffit.AcceptRules(min_score="a"),
          DifffitInputError, r"min_score must be a number"),
    PyRow("batch_atoms_zero", lambda i: difffit.IdentifyParams(batch_atoms=0),
          DifffitInputError, r"batch_atoms must be >= 1"),
    PyRow("resolution_a_string", lambda i: difffit.fit(_demo(i), i["pacrg"], "4"),
          DifffitInputError, r"resolution must be a positive number of Angstrom, got '4'"),
    PyRow("threshold_a_string",
          lambda i: difffit.fit(_demo(i), i["pacrg"], 4.0, threshold="0.9"),
          DifffitInputError, r"threshold must be a number"),
    PyRow("map_an_array", lambda i: difffit.fit(_demo(i).data, i["pacrg"], 4.0),
          DifffitInputError, r"a path .* or a DensityMap.*DensityMap\(data, origin="),
    PyRow("structures_an_int", lambda i: difffit.fit(_demo(i), 123, 4.0),
          DifffitInputError, r"structures must be a path .*, a difffit Structure or a "
                             r"gemmi\.Structure.*got int"),
    PyRow("read_map_an_array", lambda i: read_map(_demo(i).data), DifffitInputError,
          r"must be a path .*got ndarray"),
    PyRow("read_structure_an_array", lambda i: read_structure(np.zeros(3)), DifffitInputError,
          r"path of a PDB/mmCIF file .*got ndarray"),
    PyRow("write_map_an_array", lambda i: write_map(i.tmp / "x.mrc", _demo(i).data),
          DifffitInputError, r"needs a DensityMap"),
    PyRow("identify_first_pass_with_zscore",
          lambda i: difffit.identify(_demo(i), [i["pacrg"]], 4.0, first_pass=True,
                                     score="zscore"),
          DifffitInputError, r"first_pass=True ranks by a metric.*score='cam'"),
    PyRow("identify_library_an_int", lambda i: difffit.identify(_demo(i), 123, 4.0),
          DifffitInputError, r"library must be .*got int"),
    PyRow("header_voxel_size_zero_speaks_python", lambda i: read_map(i["voxel0"]),
          DifffitInputError, r"voxel_size=V"),
    PyRow("threshold_below_the_minimum",
          lambda i: difffit.fit(_demo(i), i["pacrg"], 4.0, threshold=-100, **SMALL),
          DifffitInputError, r"below the map's minimum.*raise threshold"),
    PyRow("density_map_scalar_voxel_size",
          lambda i: np.testing.assert_array_equal(
              DensityMap(np.zeros((2, 3, 4)), (0, 0, 0), 1.5).voxel_size, [1.5] * 3), None),
    PyRow("gemmi_structure_is_accepted",
          lambda i: difffit.fit(_demo(i), gemmi.read_structure(i["pacrg"]), 4.0,
                                threshold=0.886, **SMALL), None),
]


@pytest.mark.parametrize(
    "row", [pytest.param(r, id=r.id, marks=[pytest.mark.slow] if r.slow else []) for r in PY_ROWS])
def test_python(row: PyRow, inputs: Inputs):
    before = _snapshot(inputs.tmp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DifffitWarning)
        if row.raises is None:
            row.call(inputs)
        else:
            with pytest.raises(row.raises, match=row.match):
                row.call(inputs)
    assert _snapshot(inputs.tmp) == before


def test_python_warnings_speak_python_and_can_be_filtered(inputs):
    """The wrong phage header warns as a DifffitWarning naming the keyword."""
    with pytest.warns(DifffitWarning, match=r"voxel_size=1\.3\d"):
        difffit.fit(inputs["phage_map"], inputs["phage_model"], 4.0, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DifffitWarning)  # a script can make them errors
        with pytest.raises(DifffitWarning):
            difffit.fit(inputs["phage_map"], inputs["phage_model"], 4.0, **SMALL)


# Every shared data set with its own model: (map, model, voxel size, chains, resolution).
RIGHT_MODELS = [
    ("daq_emd2566_3j6b/2566_3J6B_9.mrc", "daq_emd2566_3j6b/3J6B_9.pdb", None, None, 5),
    ("apoferritin_emd20026_3ajo/emd20026_prot.mrc",
     "apoferritin_emd20026_3ajo/3ajo_fitted_refined.pdb", None, None, 2),
    ("hemoglobin_emd3488_5ni1/emd_3488.mrc", "hemoglobin_emd3488_5ni1/5ni1_updated.cif",
     None, None, 3.2),
    ("hemoglobin_emd3488_5ni1/emd_3488.mrc", "hemoglobin_emd3488_5ni1/5ni1_updated.cif",
     None, ["A"], 3.2),
    ("hemoglobin_emd3488_5ni1/emd_3488.mrc", "hemoglobin_emd3488_5ni1/5ni1_updated.cif",
     None, ["B"], 3.2),
    ("spike_ntd_emd21457_6vyb/emd_21457_seg.mrc", "spike_ntd_emd21457_6vyb/6vyb_Ndom.pdb",
     None, None, 3.5),
    ("spike_ntd_emd21457_6vyb/emd_21457_seg_orig0.mrc",
     "spike_ntd_emd21457_6vyb/6vyb_Ndom_shifted.pdb", None, None, 3.5),
    (f"{PHAGE}/emd_4054.mrc", f"{PHAGE}/5lij.pdb", 1.38, None, 4),
    ("tempy_factin_emd5168/emd_5168_monomer.mrc", "tempy_factin_emd5168/3MFP.pdb", None, None,
     6.6),
    ("tempy_factin_emd5168/emd_5168_monomer.mrc", "tempy_factin_emd5168/1J6Z.pdb", None, None,
     6.6),
    ("tempy_factin_emd5168/emd_5168.map", "tempy_factin_emd5168/3MFP.pdb", None, None, 6.6),
    ("tempy_factin_emd5168/emd_5170.map", "tempy_factin_emd5168/1J6Z.pdb", None, None, 9),
    (f"{DEMO}/density2.mrc", f"{DEMO}/I7MLV6_D3.pdb", None, None, 4),
    (f"{DEMO}/density2.mrc", f"{DEMO}/I7M317_D1.pdb", None, None, 4),
]


@pytest.mark.parametrize("map_name,model_name,vs,chains,res", RIGHT_MODELS,
                         ids=[f"{m.split('/')[1]}-{s.split('/')[1]}{'-' + c[0] if c else ''}"
                              for m, s, _, c, _ in RIGHT_MODELS])
def test_checks_do_not_fire_on_the_right_models(shared_data, map_name, model_name, vs,
                                                chains, res):
    """The checks stay silent on every shared data set with its own model (filament maps
    hold many copies; a haemoglobin chain is a quarter of its map), at the default
    contour and, on the demo density, at its usual one."""
    from difffit.checks import before_search
    from difffit.params import FitParams
    from difffit.workflows.fit import check_threshold

    dmap = read_map(data_file(shared_data, map_name), voxel_size=vs)
    model = read_structure(data_file(shared_data, model_name), chains=chains)
    for thr in (None, 0.886) if DEMO in map_name else (None,):
        found = before_search(dmap, [model], res, check_threshold(thr, dmap), FitParams())
        assert found == [], found


def test_the_decoy_is_larger_than_the_density_but_the_voxel_size_is_right(shared_data):
    """The decoy, much larger than the demo density, is told so, not about the voxel size."""
    from difffit.checks import before_search
    from difffit.params import FitParams

    dmap = read_map(data_file(shared_data, f"{DEMO}/density2.mrc"))
    decoy = read_structure(data_file(shared_data, f"{DEMO}/I7LV70_D1.pdb"))
    found = before_search(dmap, [decoy], 4.0, 0.886, FitParams())
    assert [f.level for f in found] == ["warning"]
    assert "the size of the density" in found[0].message and "voxel" not in found[0].message
