"""The simulator interface (difffit.simulators): molmap identical to today's numbers,
gemmi's electron form factors, and the learned simulator (nested U-Net shapes, checkpoint
round trip, cube reassembly against whole-map inference, training on real pairs through
``difffit train-simulator``, and fit / composite / simulate with it)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import difffit
from conftest import data_file
from difffit import read_map, read_structure
from difffit.cli import main
from difffit.errors import DifffitInputError
from difffit.metrics import chimerax_metrics
from difffit.simulate import molmap, molmap_envelope, zero_out
from difffit.simulators import get_simulator
from difffit.simulators.learned import (LearnedSimulator, load_checkpoint, molmap_input,
                                       save_checkpoint)
from difffit.simulators.scores import map_scores
from difffit.simulators.training import read_pairs
from difffit.simulators.unet import Discriminator3d, NestedUNet3d, infer_cubes, infer_whole
from test_fit import random_move

DAQ = ("daq_emd2566_3j6b/2566_3J6B_9.mrc", "daq_emd2566_3j6b/3J6B_9.pdb", 5.0)
PHAGE = ("phage_emd4054_5lij/emd_4054.mrc", "phage_emd4054_5lij/5lij.pdb", 4.0)
ACTIN = ("tempy_factin_emd5168/emd_5168_monomer.mrc", "tempy_factin_emd5168/3MFP.pdb", 6.0)
REDUCED = dict(n_rotations=20, n_positions=5, n_iters=60)


@pytest.fixture(scope="module")
def daq(shared_data):
    return {"map": read_map(data_file(shared_data, DAQ[0])),
            "map_path": data_file(shared_data, DAQ[0]),
            "model": read_structure(data_file(shared_data, DAQ[1]))}


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory):
    """A tiny checkpoint trained in the test through the CLI on real pairs (daq and actin
    train, phage validates): (folder, CLI status, checkpoint path)."""
    out = tmp_path_factory.mktemp("sim") / "ckpt"
    csv = out.parent / "pairs.csv"
    rows = ["map,model,resolution,voxel_size,split"]
    for (m, s, r), vox, split in ((DAQ, "", "train"), (ACTIN, "", "train"),
                                  (PHAGE, "1.38", "val")):
        rows.append(f"{data_file(shared_data, m)},{data_file(shared_data, s)},{r},{vox},{split}")
    csv.write_text("\n".join(rows) + "\n")
    argv = ["train-simulator", str(csv), "-o", str(out), "--epochs", "2", "--steps", "4",
            "--batch", "4", "--min-correlation", "0.0", "--base", "input"]
    status = main(argv)
    return {"dir": out, "status": status, "ckpt": out / "best.pt", "csv": csv, "argv": argv}


# ----------------------------------------------------------------------------------------
# The interface: molmap keeps today's numbers; gemmi
# ----------------------------------------------------------------------------------------


def test_molmap_simulator_is_todays_molmap(daq):
    sim = get_simulator("molmap")
    a = sim.simulate(daq["model"], 5.0, like=daq["map"]).data
    np.testing.assert_array_equal(a, molmap(daq["model"], 5.0, like=daq["map"]).data)
    xyz, z = daq["model"].coords, daq["model"].atomic_numbers
    p1, v1 = sim.envelope(xyz, z, 5.0)
    p2, v2 = molmap_envelope(xyz, z, 5.0)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(v1, v2)
    assert get_simulator(None).describe() == {"simulator": "molmap"}
    with pytest.raises(DifffitInputError, match="simulator must be one of"):
        get_simulator("blur")
    with pytest.raises(DifffitInputError, match="needs a checkpoint"):
        get_simulator("learned")


def test_gemmi_simulator_agrees_with_molmap_and_the_map(daq):
    g = get_simulator("gemmi").simulate(daq["model"], 5.0, like=daq["map"]).data
    m = molmap(daq["model"], 5.0, like=daq["map"]).data
    assert g.shape == m.shape and g.min() >= 0
    # Same blur, other form factors: the maps nearly coincide, and both fit the density.
    assert np.corrcoef(g.ravel(), m.ravel())[0, 1] > 0.98
    sg, sm = map_scores(g, daq["map"].data), map_scores(m, daq["map"].data)
    assert abs(sg["correlation"] - sm["correlation"]) < 0.05 and sg["correlation"] > 0.7
    # An atom beyond the box adds nothing and does not wrap around into it.
    far = get_simulator("gemmi").grid_values(np.array([[-50.0, 0, 0]]), np.array([6]), 5.0,
                                              (0, 0, 0), (1, 1, 1), (8, 8, 8))
    assert float(np.abs(far).max()) == 0.0


def test_score_and_zero_out_take_a_simulator(daq, shared_data, capsys, tmp_path):
    dmap, s = daq["map"], daq["model"]
    sim = get_simulator("gemmi")
    eye = np.eye(3)[None]
    mol = chimerax_metrics(dmap, [s], eye, np.zeros((1, 3)), [0], 5.0, 0.1)
    gem = chimerax_metrics(dmap, [s], eye, np.zeros((1, 3)), [0], 5.0, 0.1, simulator=sim)
    assert mol["correlation"][0] > 0.8 and gem["correlation"][0] > 0.7
    assert mol["envelope_points"][0] != gem["envelope_points"][0]
    rows = difffit.score(dmap, [s], 5.0, simulator="gemmi")
    assert rows[0]["correlation"] == pytest.approx(gem["correlation"][0])
    z0 = zero_out(dmap, [s], 5.0)
    np.testing.assert_array_equal(z0.data, zero_out(dmap, [s], 5.0, simulator=None).data)
    zg = zero_out(dmap, [s], 5.0, simulator=sim)
    assert 0.5 < (zg.data == 0).sum() / (z0.data == 0).sum() < 2.0
    # The same from the command line.
    model = str(data_file(shared_data, DAQ[1]))
    assert main(["score", str(daq["map_path"]), model, "-r", "5", "--simulator", "gemmi",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["correlation"] == pytest.approx(
        gem["correlation"][0])
    assert main(["zero", str(daq["map_path"]), model, "-r", "5", "-o", str(tmp_path / "z.mrc"),
                 "--simulator", "gemmi"]) == 0
    np.testing.assert_array_equal(read_map(tmp_path / "z.mrc").data == 0, zg.data == 0)


def test_fit_params_check_the_simulator_fields():
    assert difffit.FitParams().simulator == "molmap"
    with pytest.raises(DifffitInputError, match="needs"):
        difffit.FitParams(simulator="learned")
    with pytest.raises(DifffitInputError, match="must be one of"):
        difffit.FitParams(simulator="chimera")
    with pytest.raises(DifffitInputError, match="only"):
        difffit.FitParams(checkpoint="x.pt")


# ----------------------------------------------------------------------------------------
# The networks
# ----------------------------------------------------------------------------------------


def test_network_shapes_and_identity_start():
    torch.manual_seed(0)
    g = NestedUNet3d((4, 8, 16))
    x = torch.rand(2, 1, 16, 24, 20)
    y = g(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x)          # the zero head: an untrained net is the identity
    assert len(g.nodes) == 6                  # X[0,0..2], X[1,0..1], X[2,0]
    with pytest.raises(ValueError, match="divisible"):
        g(torch.rand(1, 1, 18, 16, 16))
    d = Discriminator3d((8, 16, 32))
    assert d(torch.rand(3, 1, 16, 16, 16)).shape == (3,)


def test_untrained_residual_generator_reproduces_its_input_exactly(tmp_path, daq):
    """The residual generator starts as its base: exactly the molmap input (no blur), and
    with a fitted base factor a molmap at that factor x the resolution; checkpoints from
    before the residual fields load as the plain residual (no blur)."""
    torch.manual_seed(0)
    g = NestedUNet3d((4, 8, 16)).eval()
    x = torch.rand(2, 1, 16, 24, 20)
    with torch.no_grad():
        assert torch.equal(g(x), x)
        assert torch.equal(NestedUNet3d((4, 8, 16), residual=False)(x), torch.zeros_like(x))
    v = torch.rand(40, 36, 28)
    assert torch.equal(infer_cubes(g, v, cube=32, margin=8), v)
    # An old checkpoint (no residual / base_factor in its config) loads as the identity.
    path = save_checkpoint(tmp_path / "old.pt", g, {"channels": [4, 8, 16]})
    sim = LearnedSimulator.load(path)
    assert sim.generator.residual and sim.config["base_factor"] == 0.0
    m, s = daq["map"], daq["model"]
    inp = molmap_input(s.coords, s.atomic_numbers, m.origin, m.voxel_size, m.data.shape)
    assert np.array_equal(sim.normalised(inp, m.voxel_size, 5.0), inp)
    # With a base factor of 1 the untrained generator is about a molmap at the resolution
    # (not exactly: the 2 A molmap is under-sampled on 1.34 A voxels before the blur).
    blurred = LearnedSimulator(g, {"channels": [4, 8, 16], "base_factor": 1.0})
    out = blurred.normalised(inp, m.voxel_size, 5.0)
    ref = get_simulator().simulate(s, 5.0, like=m).data
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.98


def _scrambled(seed=0) -> NestedUNet3d:
    torch.manual_seed(seed)
    g = NestedUNet3d((4, 8, 16))
    torch.nn.init.normal_(g.head.weight, std=2.0)
    return g.eval()


def test_cube_inference_matches_whole_map_inference(daq):
    """Overlapping cubes put together equal the whole map at once (in the same zero
    surroundings), up to what lies beyond a cube's margin."""
    g = _scrambled()
    x = torch.from_numpy(get_simulator().simulate(daq["model"], 2.0, like=daq["map"]).data)
    x = x / x.max()
    whole = infer_whole(g, x, pad=8)
    cubes = infer_cubes(g, x, cube=32, margin=8, batch=3)
    assert cubes.shape == x.shape == whole.shape
    change = float((whole - x).abs().max())
    assert change > 0.02                                          # the net does something
    assert float((cubes - whole).abs().max()) < 0.02 * change
    # A wider margin sees more of the map: closer still to the whole map at once.
    whole16 = infer_whole(g, x, pad=16)
    wide = infer_cubes(g, x, cube=48, margin=16)
    assert float((wide - whole16).abs().max()) <= float((cubes - whole).abs().max())
    # The simulator's default path (cubes) against its reference path (whole map).
    sim = LearnedSimulator(g, {"channels": [4, 8, 16], "infer_margin": 8, "infer_cube": 32})
    ref = LearnedSimulator(g, {"channels": [4, 8, 16], "infer_margin": 8}, whole=True)
    a = sim.simulate(daq["model"], 5.0, like=daq["map"]).data
    b = ref.simulate(daq["model"], 5.0, like=daq["map"]).data
    assert np.abs(a - b).max() < 0.02 * change


def test_checkpoint_round_trip(tmp_path, daq):
    g = _scrambled(1)
    path = save_checkpoint(tmp_path / "g.pt", g, {"channels": [4, 8, 16]}, epoch=3,
                           history=[{"epoch": 3, "val_loss": 0.1}])
    doc = load_checkpoint(path)
    assert doc["epoch"] == 3 and doc["history"][0]["val_loss"] == 0.1
    sim = LearnedSimulator.load(path)
    for k, v in g.state_dict().items():
        torch.testing.assert_close(sim.generator.state_dict()[k], v)
    a = sim.simulate(daq["model"], 5.0, like=daq["map"]).data
    b = LearnedSimulator(g, {"channels": [4, 8, 16]}).simulate(daq["model"], 5.0,
                                                               like=daq["map"]).data
    np.testing.assert_array_equal(a, b)
    assert sim.describe()["checkpoint_sha256"] and sim.describe()["simulator"] == "learned"
    (tmp_path / "foreign.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DifffitInputError, match="foreign.pt"):
        LearnedSimulator.load(tmp_path / "foreign.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(DifffitInputError, match="not a difffit simulator checkpoint"):
        get_simulator("learned", tmp_path / "other.pt")


# ----------------------------------------------------------------------------------------
# Training on real pairs, and the learned simulator in the workflows
# ----------------------------------------------------------------------------------------


def test_train_simulator_reduces_validation_loss(trained):
    assert trained["status"] == 0
    doc = load_checkpoint(trained["dir"] / "last.pt")
    h = doc["history"]
    assert [e["epoch"] for e in h] == [0, 1, 2]
    # Epoch 0 is the molmap input itself (--base input: no fitted blur); a few steps already
    # beat it on the held-out pair.
    assert doc["config"]["base_factor"] == 0.0
    assert min(e["val_loss"] for e in h[1:]) < 0.99 * h[0]["val_loss"]
    report = (trained["dir"] / "report.html").read_text()
    assert "Validation curve" in report and "<svg" in report
    cur = (trained["dir"] / "curation.json").read_text()
    assert '"use": "validation"' in cur
    # An existing run is not overwritten without --force; --resume continues it.
    assert main(trained["argv"]) == 2
    assert main(trained["argv"][:4] + ["--epochs", "3", "--steps", "2", "--batch", "2",
                                       "--min-correlation", "0.0", "--resume"]) == 0
    assert load_checkpoint(trained["dir"] / "last.pt")["epoch"] == 3


def test_curation_reports_what_it_drops(trained, capsys):
    out = trained["dir"].parent / "strict"
    assert main(["train-simulator", str(trained["csv"]), "-o", str(out), "--epochs", "1",
                 "--steps", "1", "--batch", "2", "--min-correlation", "0.95"]) == 2
    err = capsys.readouterr()
    assert "dropped" in err.out and "--min-correlation" in err.out
    assert "no training pairs left" in err.err


def test_pairs_file_errors(tmp_path):
    with pytest.raises(DifffitInputError, match="not found"):
        read_pairs(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("map,model\nx.mrc,y.pdb\n")
    with pytest.raises(DifffitInputError, match="resolution"):
        read_pairs(bad)
    bad.write_text("map,model,resolution\nx.mrc,y.pdb,4\n")
    with pytest.raises(DifffitInputError, match="x.mrc"):
        read_pairs(bad)


def test_simulate_cli_with_the_learned_simulator(trained, daq, tmp_path):
    out = tmp_path / "learned.mrc"
    assert main(["simulate", str(daq["map_path"]).replace(".mrc", ".mrc"), "-r", "5",
                 "-o", str(out)]) == 2   # a map is not a structure: refused
    path = str(data_file(daq["map_path"].parents[1], DAQ[1]))
    assert main(["simulate", path, "-r", "5", "-o", str(out), "--like",
                 str(daq["map_path"]), "--simulator", "learned", "--checkpoint",
                 str(trained["ckpt"])]) == 0
    sim = read_map(out)
    assert sim.data.shape == daq["map"].data.shape and sim.data.min() >= 0
    # Trained on two other maps, the learned map still sits on the model's density.
    assert map_scores(sim.data, daq["map"].data)["correlation"] > 0.6


@pytest.mark.slow
def test_fit_and_composite_with_the_learned_simulator(trained, daq, tmp_path):
    R0, t0 = random_move(5)
    moved = daq["model"].transformed(R0, t0)
    kw = dict(simulator="learned", checkpoint=str(trained["ckpt"]), exact_top=2, **REDUCED)
    res = difffit.fit(daq["map"], [moved], 5.0, **kw)
    assert res.params.simulator == "learned"
    best = res.placements[0]
    centre = best.moved(moved).centroid
    assert np.linalg.norm(centre - daq["model"].centroid) < 3.0
    assert -1.0 <= best.metrics["correlation"] <= 1.0
    comp = difffit.composite(daq["map_path"], [moved], 5.0, copies=1, outdir=tmp_path / "c",
                             **kw)
    assert len(comp.placements) == 1
    centre = comp.placements[0].moved(moved).centroid
    assert np.linalg.norm(centre - daq["model"].centroid) < 3.0
    assert comp.params.simulator == "learned"
