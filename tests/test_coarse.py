"""The coarse stage of a fit's descent (FitParams.coarse_iters, difffit.coarse) on real data:
its wiring against the plain descent, its score against the atoms' score, the answer
from a random move with it on, batch-mate independence, the CLI flag and bad values."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from difffit import DifffitInputError, FitParams, fit, ops
from difffit.cli import main
from difffit.coarse import coarse_steps
from difffit.io import read_map, read_structure, split_chains
from difffit.preprocess import build_pyramid
from difffit.region import restrict_starts
from difffit.search import optimise
from difffit.starts import scan_volume, scanned_starts, spread_positions
from difffit.workflows.fit import _scan_points, _search, _setup

from conftest import data_file
from test_fit import assert_alone_as_in_a_batch, pose_error, random_move

DAQ = ("daq_emd2566_3j6b/2566_3J6B_9.mrc", "daq_emd2566_3j6b/3J6B_9.pdb")
HB = ("hemoglobin_emd3488_5ni1/emd_3488.mrc", "hemoglobin_emd3488_5ni1/5ni1_updated.cif")


@pytest.fixture
def daq(shared_data):
    return (read_map(data_file(shared_data, DAQ[0])),
            read_structure(data_file(shared_data, DAQ[1])))


def test_pyramid_with_extra_levels_starts_with_the_plain_pyramid(daq):
    """Why the fit builds its pyramid once: levels 0..L-1 of an L+m pyramid are the L one."""
    dmap, _ = daq
    a = build_pyramid(dmap.data, dmap.origin, dmap.voxel_size, None, n_levels=5)
    b = build_pyramid(dmap.data, dmap.origin, dmap.voxel_size, None, n_levels=9)
    assert torch.equal(a.levels, b.levels[..., :5])


def test_coarse_stage_with_atoms_as_points_is_the_plain_descent_in_two_legs(daq):
    """coarse_atoms=1 makes every atom its own point (k-means with k = n, variance 0, so
    m = 0 and the atoms' own volume): the fit's records must then be those of the plain
    descent run for coarse_iters steps and continued (fresh Adam) for the rest, recorded
    for the second leg only, with their true iteration numbers."""
    dmap, model = daq
    params = FitParams(n_rotations=4, n_positions=6, n_iters=40, coarse_iters=15,
                       coarse_atoms=1, focus_top=0, refine=False)
    su = _setup(dmap, [model], params, 5.0, None)
    assert su.coarse.shift.tolist() == [0] and su.pyr.levels.shape[-1] == params.n_levels
    assert torch.equal(su.coarse.volumes[0], su.volume)
    pts = su.coarse.batch.points
    assert torch.equal(pts[torch.argsort(pts[:, 0])], su.batch.points[torch.argsort(su.batch.points[:, 0])])
    se = _search(su, progress=False)

    # The reference: the same starts (the lines of _search), two plain descents.
    pos = spread_positions(restrict_starts(su.pyr, params), params.n_positions, seed=params.seed)
    q0, t0, mol = scanned_starts(scan_volume(su.pyr, params.scan_smooth, su.device), su.origin,
                                 su.voxel, *_scan_points(su), pos, params)
    box = np.array(su.pyr.shape[::-1]) * su.pyr.voxel_size
    lr = 0.01 * float(box.mean())
    first = optimise(su.volume, su.origin, su.voxel, su.batch, q0, t0, mol, params, lr, None, 15)
    second = optimise(su.volume, su.origin, su.voxel, su.batch, first["quat"][-1],
                      first["trans"][-1], mol, params, lr, None, 25)
    assert se.rec["iteration"].tolist() == [15, 25, 35, 40]
    for k in ("quat", "trans", "score"):
        torch.testing.assert_close(se.rec[k], second[k], rtol=0, atol=1e-6)


def test_coarse_points_score_poses_as_the_atoms_do(shared_data):
    """The coarse points on their shifted levels rank poses as the atoms on levels 0..L-1
    (300 poses within about 60 degrees and 6 A of the deposited one), and better than the
    same points on the atoms' levels: the shift m is right."""
    for map_path, model_path, chains in ((*DAQ, None), (*HB, ["A"])):
        dmap = read_map(data_file(shared_data, map_path))
        s = read_structure(data_file(shared_data, model_path), chains=chains)
        su = _setup(dmap, [s], FitParams(coarse_iters=100), 4.0, None)
        co, m = su.coarse, int(su.coarse.shift[0])
        assert m >= 1 and co.batch.points.shape[0] * 10 < su.batch.points.shape[0]
        g = torch.Generator().manual_seed(0)
        n = 300
        half = 0.5 * torch.rand(n, generator=g)
        axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1)
        q = torch.cat([half.cos()[:, None], half.sin()[:, None] * axis], 1)
        t = torch.from_numpy(s.centroid).float() + 6 * torch.randn(n, 3, generator=g)
        mol, one = torch.zeros(n, dtype=torch.int64), torch.ones(1)
        atoms = ops.score(su.volume, one, su.origin, su.voxel, su.batch.points,
                          su.batch.offsets, q, t, mol).numpy()
        coarse = ops.score(co.volumes[m], one, su.origin, su.voxel, co.batch.points,
                           co.batch.offsets, q, t, mol).numpy()
        unshifted = ops.score(su.volume, one, su.origin, su.voxel, co.batch.points,
                              co.batch.offsets, q, t, mol).numpy()
        r, r0 = np.corrcoef(atoms, coarse)[0, 1], np.corrcoef(atoms, unshifted)[0, 1]
        assert r > 0.97 and r > r0, (map_path, r, r0)


def test_haemoglobin_chain_found_from_a_random_move_with_the_coarse_stage(shared_data):
    """Chain A alone into EMD-3488 (two alpha copies, A and C), 150 of the 200 steps coarse:
    the top placement is one of the copies (3 A / 6 degrees, then refined)."""
    dmap = read_map(data_file(shared_data, HB[0]))
    chains = {s.name.split("_")[-1]: s
              for s in split_chains(read_structure(data_file(shared_data, HB[1])))}
    R0, t0 = random_move(7)
    result = fit(dmap, [chains["A"].transformed(R0, t0)], 3.2, coarse_iters=150)
    top = result.best(0)
    ca = lambda s: s.coords[s.fit_mask]  # noqa: E731
    moved = ca(chains["A"].transformed(R0, t0).transformed(top.rotation, top.translation))
    off = []
    for c in ("A", "C"):
        target = ca(chains[c])
        n = min(len(moved), len(target))
        off.append((float(np.sqrt(((moved[:n] - target[:n]) ** 2).sum(1).mean())),
                    float(np.linalg.norm(moved[:n].mean(0) - target[:n].mean(0)))))
    rmsd, shift = min(off)
    assert rmsd < 1.0 and shift < 1.0 and top.hits >= 2, off
    assert result.trajectory["iteration"][0] == 150 and result.trajectory["iteration"][-1] == 200


def test_pacrg_domain_found_from_a_random_move_with_the_coarse_stage(shared_data):
    """The demo density (DiffFit paper): I7MLV6_D3 lands where ChimeraX puts it and
    outranks the decoy, with 100 of the 200 steps coarse."""
    demo = "difffit_domain_demo"
    dom = read_structure(data_file(shared_data, f"{demo}/I7MLV6_D3.pdb"))
    decoy = read_structure(data_file(shared_data, f"{demo}/I7LV70_D1.pdb"))
    R0, t0 = random_move(3)
    with pytest.warns(Warning):  # the decoy is far larger than the density
        result = fit(data_file(shared_data, f"{demo}/density2.mrc"),
                     [dom.transformed(R0, t0), decoy], 4.0, threshold=0.886, coarse_iters=100)
    best = result.best(0)
    centre = best.moved(result.structures[0]).centroid
    assert np.linalg.norm(centre - [367.5, 231.6, 385.8]) < 3.0, centre
    assert best.score > result.best(1).score + 0.05


def test_a_structures_result_does_not_depend_on_its_batch_mates_with_the_coarse_stage(
        shared_data, daq):
    """Each structure has its own coarse points and level shift (haemoglobin chain A's
    differs from the daq chain's): its placements are the same alone or in a batch."""
    dmap, model = daq
    other = split_chains(read_structure(data_file(shared_data, HB[1])))[0]
    kw = dict(n_rotations=4, n_positions=10, n_iters=40, coarse_iters=20, refine_top=3,
              check=False)
    assert_alone_as_in_a_batch(dmap, model, other, kw)


def test_records_stay_of_equal_length_when_the_restarts_outlast_the_atom_steps(daq):
    """coarse_iters 30 of 40: 10 atom steps (2 records) in the first round, 20 for the
    focused restarts (3 records); the first round holds its last record."""
    dmap, model = daq
    r = fit(dmap, [model], 5.0, n_rotations=4, n_positions=6, n_iters=40, coarse_iters=30,
            focus_top=2, focus_starts=3, refine=False, check=False)
    tr = r.trajectory
    assert tr["score"].shape == (3, 24 + 6) and tr["iteration"].tolist() == [30, 40, 40]
    first = tr["score"][:, :24]
    np.testing.assert_array_equal(first[2], first[1])
    assert all(0 <= p.iteration <= 40 for p in r.placements)


def test_cli_coarse_iters(shared_data, capsys, tmp_path):
    argv = ["fit", data_file(shared_data, DAQ[0]), data_file(shared_data, DAQ[1]), "-r", "5",
            "--rotations", "4", "--positions", "5", "--iterations", "40", "-q"]
    assert main([str(a) for a in argv + ["--coarse-iters", "20", "-o", tmp_path / "ok"]]) == 0
    assert (tmp_path / "ok" / "results.csv").exists()
    capsys.readouterr()
    assert main([str(a) for a in argv + ["--coarse-iters", "40", "-o", tmp_path / "bad"]]) == 2
    err = capsys.readouterr().err
    assert "--coarse-iters" in err and "--iterations" in err and "Traceback" not in err
    assert not (tmp_path / "bad" / "results.csv").exists()
    assert main([str(a) for a in argv + ["--coarse-iters", "-3", "-o", tmp_path / "neg"]]) == 2


@pytest.mark.parametrize("kw,words", [
    (dict(coarse_iters=200), ("coarse_iters", "n_iters", "200")),
    (dict(coarse_iters=50, n_iters=50), ("coarse_iters", "n_iters")),
    (dict(coarse_iters=-1), ("coarse_iters", ">= 0")),
    (dict(coarse_iters=2.5), ("coarse_iters", "integer")),
    (dict(coarse_atoms=0.5), ("coarse_atoms", ">= 1")),
    (dict(coarse_atoms="20"), ("coarse_atoms", "number")),
])
def test_bad_coarse_values_are_clear_errors(kw, words):
    with pytest.raises(DifffitInputError) as e:
        FitParams(**kw)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_default_coarse_steps():
    """None (the default): all but the last 50 steps of descents of 200 or more (measured at
    200, benchmarks/bench_coarse.py), atoms only for shorter ones; 0 turns it off."""
    assert coarse_steps(FitParams()) == 150 and FitParams().coarse_iters is None
    assert coarse_steps(FitParams(n_iters=300)) == 250
    assert coarse_steps(FitParams(n_iters=199)) == 0
    assert coarse_steps(FitParams(coarse_iters=0)) == 0
    assert coarse_steps(FitParams(n_iters=60, coarse_iters=30)) == 30
    assert coarse_steps(FitParams(local=True)) == 0


def test_local_fit_ignores_the_coarse_stage(daq):
    """A local fit refines from where the model is: no coarse stage (the same result)."""
    dmap, model = daq
    a = fit(dmap, [model], 5.0, local=True, n_iters=30, check=False)
    b = fit(dmap, [model], 5.0, local=True, n_iters=30, coarse_iters=20, check=False)
    np.testing.assert_array_equal(a.best(0).rotation, b.best(0).rotation)
    assert pose_error(b.best(0), np.eye(3), np.zeros(3), model)[1] < 1.0


def test_the_memory_check_bounds_the_extra_levels(shared_data, daq):
    """checks.fit_memory counts the coarse stage's extra pyramid levels from a bound that
    skips the k-means; it must not be below what the fit then builds."""
    from difffit.coarse import extra_levels_bound, prepare

    dmap, model = daq
    hb = split_chains(read_structure(data_file(shared_data, HB[1])))[:2]
    for params in (FitParams(), FitParams(coarse_atoms=40), FitParams(smooth_sigma=0.5)):
        structs = [model] + hb
        actual = prepare(structs, params, dmap.voxel_size, "cpu").extra_levels
        assert actual >= 1
        assert actual <= extra_levels_bound(structs, params, dmap.voxel_size) <= actual + 3
    assert extra_levels_bound([model], FitParams(coarse_iters=0), dmap.voxel_size) == 0
