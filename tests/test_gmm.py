"""Gaussian mixtures (difffit.gmm): built from real structures and maps, against the
plain-PyTorch reference and the molmap kernel; files; the coarse search; identify's
first pass; the CLI."""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from difffit import DifffitInputError, FitParams, identify, read_map
from difffit import gmm
from difffit.cli import main
from difffit.gmm_fit import as_structure, from_map, mixture_correlation
from difffit.gmm_search import coarse_search
from difffit.io import read_structure
from difffit.simulate import sigma_for, splat_atoms
from difffit.structures import simulation_mask

from conftest import data_file
from test_fit import random_move

DEMO = "difffit_domain_demo"
PACRG = f"{DEMO}/I7MLV6_D3.pdb"
DECOY = f"{DEMO}/I7LV70_D1.pdb"
RES, CONTOUR = 4.0, 0.886


@pytest.fixture(scope="module")
def pacrg(shared_data):
    return read_structure(data_file(shared_data, PACRG))


def _heavy(s):
    sel = simulation_mask(s) & (s.atomic_numbers > 1)
    return s.coords[sel], s.atomic_numbers[sel].astype(np.float64)


def test_kmeans_is_weighted_and_deterministic():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 3))
    b = rng.normal(size=(200, 3)) + 20
    pts = np.concatenate([a, b])
    w = np.concatenate([np.ones(200), np.full(200, 3.0)])
    c1, l1 = gmm.kmeans(pts, 2, w, seed=3)
    c2, l2 = gmm.kmeans(pts, 2, w, seed=3)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(l1, l2)
    far = int(np.argmax(c1[:, 0]))
    np.testing.assert_allclose(c1[far], b.mean(0), atol=1e-9)  # weights equal within a group
    with pytest.raises(DifffitInputError):
        gmm.kmeans(pts, 0)


def test_compiled_kmeans_steps_match_the_reference_on_real_structures(shared_data):
    """ops.kmeans_steps (every set in one call) against gmm.kmeans one set at a time, as
    the coarse search seeds it (the chain cut into pieces, 3 steps) and from far-off
    centres (more steps, clusters that empty and are re-seeded)."""
    from difffit import ops
    from difffit.gmm_search import chain_pieces

    files = [PACRG, DECOY, "daq_emd2566_3j6b/3J6B_9.pdb", "hemoglobin_emd3488_5ni1/5ni1_updated.cif"]
    xyz = [read_structure(data_file(shared_data, f)).fit_coords for f in files]
    rng = np.random.default_rng(4)
    for iters, seeds in ((3, [chain_pieces(x, len(x) // 20)[0] for x in xyz]),
                         (25, [x[rng.choice(len(x), 12, replace=False)] * 0.2 + 40 for x in xyz])):
        off = np.concatenate([[0], np.cumsum([len(x) for x in xyz])])
        c_off = np.concatenate([[0], np.cumsum([len(c) for c in seeds])])
        centres, labels = ops.kmeans_steps(np.concatenate(xyz), off, np.concatenate(seeds),
                                           c_off, iters)
        for i, (x, c0) in enumerate(zip(xyz, seeds)):
            want_c, want_l = gmm.kmeans(x, len(c0), None, iters=iters, init=c0)
            np.testing.assert_array_equal(labels[off[i]:off[i + 1]], want_l)
            np.testing.assert_allclose(centres[c_off[i]:c_off[i + 1]], want_c, rtol=0, atol=1e-9)
    with pytest.raises(DifffitInputError, match="do not agree"):
        ops.kmeans_steps(xyz[0], [0, len(xyz[0])], seeds[0], [0, 5, len(seeds[0])], 3)


def test_nearest_neighbour_rule_on_a_real_domain(pacrg):
    """N from the rule gives centres spaced about the resolution apart; at the atoms' own
    spacing (finer) one Gaussian per heavy atom."""
    xyz, z = _heavy(pacrg)
    mix = gmm.from_structure(pacrg, RES)
    assert 0.8 * RES <= mix.mean_nn_distance() <= 1.25 * RES
    assert 5 * len(mix) < len(xyz)
    assert mix.info["n_rule"] == "nearest-neighbour"
    assert mix.amplitudes.sum() == pytest.approx(z.sum())               # electrons conserved
    np.testing.assert_allclose(mix.centroid, (xyz * z[:, None]).sum(0) / z.sum(), atol=1e-9)
    assert gmm.choose_n(xyz, 1.0) == len(xyz)


def test_one_gaussian_per_atom_is_molmap(pacrg):
    """The reference density of a mixture with a Gaussian per atom at the molmap width is
    the molmap kernel's simulated map (ops.splat) on the same grid."""
    xyz, z = _heavy(pacrg)
    xyz, z = xyz[:300], z[:300]
    s = sigma_for(RES)
    norm = (2 * math.pi) ** -1.5 * s ** -3
    lo = xyz.min(0) - 6
    shape = (24, 22, 26)
    grid = splat_atoms(xyz, z, RES, lo, (1.5, 1.5, 1.5), shape, dtype=np.float64)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    pts = lo + np.stack([xx, yy, zz], -1).reshape(-1, 3) * 1.5
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    ref = gmm.density(t(xyz), t(np.full(len(z), s)), t(z), t(pts)).numpy().reshape(shape)
    # The kernel truncates at 5 sigma (a relative 4e-6 of the peak); amplitude z * norm.
    np.testing.assert_allclose(grid, ref, atol=1e-5 * grid.max())
    assert norm * z.max() > 0


def test_coarsen_conserves_mass_centroid_and_spread(pacrg):
    mix = gmm.from_structure(pacrg, RES)
    levels = gmm.hierarchy(mix, (60, 15, 4))
    assert [len(m) for m in levels] == [60, 15, 4]
    for m in levels:
        assert m.amplitudes.sum() == pytest.approx(mix.amplitudes.sum())
        np.testing.assert_allclose(m.centroid, mix.centroid, atol=1e-8)
    # Second moment about the centroid is conserved by moment matching.
    def moment(m):
        d = ((m.centres - m.centroid) ** 2).sum(1) + 3 * m.sigmas ** 2
        return float((m.amplitudes * d).sum() / m.amplitudes.sum())
    for m in levels:
        assert moment(m) == pytest.approx(moment(mix), rel=1e-9)


@pytest.mark.parametrize("suffix", [".json", ".pdb"])
def test_write_and_read_back(pacrg, tmp_path, suffix):
    mix = gmm.from_structure(pacrg, 6.0)
    path = gmm.write_mixture(mix, tmp_path / f"m{suffix}")
    back = gmm.read_mixture(path)
    tol = 1e-12 if suffix == ".json" else 2e-3
    np.testing.assert_allclose(back.centres, mix.centres, atol=tol)
    np.testing.assert_allclose(back.sigmas, mix.sigmas, rtol=tol if suffix == ".json" else 2e-3)
    np.testing.assert_allclose(back.amplitudes, mix.amplitudes,
                               atol=tol if suffix == ".json" else 0.01 * mix.amplitudes.max())
    assert back.resolution == 6.0 and back.source == "structure"
    with pytest.raises(FileExistsError):
        gmm.write_mixture(mix, path)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DifffitInputError, match="bad.json"):
        gmm.read_mixture(tmp_path / "bad.json")


@pytest.mark.slow
def test_map_mixture_fits_the_map(shared_data):
    """A real map (the DAQ region of EMD-2566): the Adam fit raises the k-means seed's
    correlation with the map."""
    dmap = read_map(data_file(shared_data, "daq_emd2566_3j6b/2566_3J6B_9.mrc"))
    thr = float(dmap.data.mean() + dmap.data.std())
    mix = from_map(dmap, 5.0, thr, iters=25)
    assert mix.source == "map" and len(mix) >= 10
    assert mix.info["correlation"] > mix.info["correlation_start"] + 0.05
    assert mix.info["correlation"] > 0.6
    assert mixture_correlation(mix, dmap, thr) == pytest.approx(mix.info["correlation"])
    st = as_structure(mix)
    assert st.n_fit_atoms == len(mix) and st.atomic_numbers.min() >= 2


def test_coarse_search_ranks_the_pacrg_domain_above_the_decoy(shared_data, pacrg):
    """The coarse search (a Gaussian per 20 backbone atoms) finds the PACRG domain's
    density from random poses and scores it far above the demo's decoy."""
    dmap = read_map(data_file(shared_data, f"{DEMO}/density2.mrc"))
    decoy = read_structure(data_file(shared_data, DECOY))
    moved = [s.transformed(*random_move(zlib.crc32(s.name.encode()) % 1000))
             for s in (pacrg, decoy)]
    hits = coarse_search(dmap, moved, RES, CONTOUR, FitParams(n_rotations=30, n_positions=6),
                         n_iters=60)
    assert hits[0].n_points < moved[0].n_fit_atoms / 10
    assert hits[0].score > 0.3 and hits[0].score > hits[1].score + 0.15


@pytest.mark.slow
def test_first_pass_keeps_the_top_and_its_scores(shared_data, tmp_path):
    """identify with the first pass: the same best candidate with the same score as the
    plain run; the screened-out candidates rank after it, unscored."""
    files = [data_file(shared_data, f) for f in
             (PACRG, DECOY, "phage_emd4054_5lij/5lij.pdb", "daq_emd2566_3j6b/3J6B_9.pdb")]
    quick = dict(n_rotations=16, n_positions=4, n_iters=60)
    dmap = data_file(shared_data, f"{DEMO}/density2.mrc")
    plain = identify(dmap, files, RES, CONTOUR, **quick)
    out = tmp_path / "fast"
    fast = identify(dmap, files, RES, CONTOUR, first_pass=True, first_pass_top=1, outdir=out,
                    top=4, **quick)
    assert fast.candidates[0].name == plain.candidates[0].name == "I7MLV6_D3"
    # The same fit in another batch: a candidate's fit does not depend on its batch
    # mates, so the score is the plain run's to the last bit.
    assert fast.candidates[0].score == plain.candidates[0].score
    fp = fast.first_pass
    assert fp["fitted"] + fp["screened_out"] == 4 and fp["screened_out"] >= 1
    assert fp["best_screened_estimate"] + fp["gain_bound"] < fp["top_full_score"]
    assert all(math.isnan(c.score) for c in fast.candidates[fp["fitted"]:])
    assert not any(b["from_checkpoint"] for b in fast.batches)  # all fitted in this run
    assert [c.screened for c in fast.candidates] == [False] * fp["fitted"] + [True] * fp["screened_out"]
    assert "* screened out by the first pass" in fast.summary_table()
    assert "nan" not in fast.summary_table()  # no estimate of a metric: "-"
    assert {r["fit"] for r in fast.rows()} == {"full", "first pass only"}
    # Models only for the fully fitted (a screened-out candidate has no fit); the log
    # counts the batches it lists.
    models = sorted(p.name for p in (out / "models").iterdir())
    assert len(models) == fp["fitted"] and models[0].startswith("rank001_I7MLV6_D3")
    log = (out / "identify_log.txt").read_text()
    assert f"batches ({len(fast.batches)} finished)" in log
    assert log.count("  batch ") == len(fast.batches)
    doc = json.loads((out / "ranking.json").read_text())
    assert "screened out" in doc["columns"]["fit"]


def test_cli_first_pass_with_k_above_the_library(shared_data, tmp_path, capsys):
    """--first-pass K larger than the library: everything is fitted, said plainly."""
    lib = tmp_path / "lib"
    lib.mkdir()
    for f in (PACRG, DECOY):
        src = data_file(shared_data, f)
        (lib / Path(src).name).symlink_to(src)
    code = main(["identify", str(data_file(shared_data, f"{DEMO}/density2.mrc")), "--library",
                 str(lib), "-r", "4", "-t", "0.886", "--first-pass", "4", "--rotations", "8",
                 "--positions", "4", "--iterations", "40", "-o", str(tmp_path / "out")])
    assert code == 0
    assert "first pass: all 2 candidates fitted fully" in capsys.readouterr().out
    # The bound's record is kept with the ranking.
    doc = json.loads((tmp_path / "out" / "ranking.json").read_text())
    assert doc["first_pass"]["top"] == 4 and doc["first_pass"]["fitted"] == 2
    assert doc["first_pass"]["screened_out"] == 0


def test_cli_gmm(shared_data, tmp_path, capsys):
    out = tmp_path / "pacrg.pdb"
    assert main(["gmm", str(data_file(shared_data, PACRG)), "-r", "6", "-o", str(out),
                 "--coarsen", "12"]) == 0
    assert gmm.read_mixture(out).resolution == 6.0
    assert len(gmm.read_mixture(tmp_path / "pacrg_12.pdb")) == 12
    assert main(["gmm", str(data_file(shared_data, PACRG)), "-r", "6", "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    mp = tmp_path / "daq.json"
    assert main(["gmm", str(data_file(shared_data, "daq_emd2566_3j6b/2566_3J6B_9.mrc")),
                 "-r", "6", "-o", str(mp), "--iterations", "5"]) == 0
    assert gmm.read_mixture(mp).source == "map"
    assert "correlation with the map" in capsys.readouterr().out


def test_cli_coarsen_names_files_by_k_and_says_what_they_hold(shared_data, tmp_path, capsys):
    """--coarsen K: FILE_K holds K Gaussians whatever the order of the Ks (each split from
    the next finer one); a K above the mixture's size keeps its promised name, and the
    warning and the summary say how many it holds."""
    out = tmp_path / "pacrg.json"
    assert main(["gmm", str(data_file(shared_data, PACRG)), "-r", "6", "-o", str(out),
                 "--coarsen", "10", "5000", "30"]) == 0
    n = len(gmm.read_mixture(out))  # the nearest-neighbour rule at 6 A: 82
    assert 30 < n < 5000
    sizes = {k: len(gmm.read_mixture(tmp_path / f"pacrg_{k}.json")) for k in (10, 30, 5000)}
    assert sizes == {10: 10, 30: 30, 5000: n}
    captured = capsys.readouterr()
    assert (f"warning: --coarsen 5000: the mixture has only {n} Gaussians, so "
            f"pacrg_5000.json holds those {n}") in captured.err
    assert f"pacrg_5000.json ({n} Gaussians)" in captured.out
    assert "pacrg_10.json (10 Gaussians)" in captured.out


def test_a_failed_mixture_write_leaves_no_file_behind(shared_data, tmp_path, capsys):
    """Haemoglobin's mixture coarsened to one Gaussian is too wide for the PDB B column:
    the CLI refuses it naming the file, and writes neither it nor the finer mixture."""
    hb = str(data_file(shared_data, "hemoglobin_emd3488_5ni1/5ni1_updated.cif"))
    out = tmp_path / "hb.pdb"
    assert main(["gmm", hb, "-r", "6", "-o", str(out), "--coarsen", "30", "1"]) == 2
    err = capsys.readouterr().err
    assert "hb_1.pdb: Gaussian 1 of 1 does not fit PDB columns" in err and ".json" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no file, no temporary
    # The Python API: every path and text is checked before any file is written.
    mix = gmm.from_structure(read_structure(hb), 6.0)
    one = gmm.coarsen(mix, 1)
    with pytest.raises(DifffitInputError, match="hb_1.pdb: Gaussian 1 of 1"):
        gmm.write_mixtures([(mix, out), (one, tmp_path / "hb_1.pdb")])
    with pytest.raises(DifffitInputError, match="missing/hb.json: folder"):
        gmm.write_mixtures([(mix, out), (mix, tmp_path / "missing" / "hb.json")])
    (tmp_path / "taken.json").mkdir()  # a folder in the second file's place
    with pytest.raises(DifffitInputError, match="taken.json: a folder"):
        gmm.write_mixtures([(mix, out), (mix, tmp_path / "taken.json")], force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.json"]
    written = gmm.write_mixtures([(mix, out), (one, tmp_path / "hb_1.json")])
    assert [len(gmm.read_mixture(p)) for p in written] == [len(mix), 1]


# ------------------------------------------------------- sparse density (map-mixture fit)


@pytest.fixture(scope="module")
def daq_mixture(shared_data):
    """The DAQ map's k-means mixture with uneven widths and amplitudes (as an Adam fit leaves
    them), and the voxels the refinement fits."""
    from difffit.gmm_fit import fit_voxels
    dmap = read_map(data_file(shared_data, "daq_emd2566_3j6b/2566_3J6B_9.mrc"))
    thr = float(dmap.data.mean() + dmap.data.std())
    mix = from_map(dmap, 5.0, thr, iters=0)
    rng = np.random.default_rng(3)
    s = mix.sigmas * rng.uniform(0.7, 1.6, len(mix))
    a = mix.amplitudes * rng.uniform(0.5, 1.5, len(mix))
    xyz, val = fit_voxels(dmap, thr, 5.0, 100_000)
    return dmap, thr, gmm.Mixture(mix.centres, s, a, "daq", "map", 5.0), xyz, val


def _dense_and_sparse(mix, xyz, val, i, j):
    """(density, gradients of the squared misfit) by gmm.density and by density_pairs."""
    from difffit.gmm_fit import density_pairs
    out = []
    for sparse in (False, True):
        c, s, a = (torch.tensor(x, requires_grad=True) for x in
                   (mix.centres, mix.sigmas, mix.amplitudes))
        pts = torch.as_tensor(xyz)
        rho = density_pairs(c, s, a, pts, i, j) if sparse else gmm.density(c, s, a, pts)
        loss = (rho - torch.as_tensor(val)).pow(2).sum()
        out.append((rho.detach(), *torch.autograd.grad(loss, [c, s, a])))
    return out


def test_sparse_density_and_gradients_are_the_dense_reference(daq_mixture):
    """density_pairs over the pairs within CUTOFF (6) widths is gmm.density (the dense
    reference) up to the truncation on a real map's mixture: density within 1e-7 of its
    maximum, gradients within 1e-6 of theirs; with every pair it is the dense sum."""
    from difffit.gmm_fit import CUTOFF, neighbour_pairs
    from scipy.spatial import cKDTree
    _, _, mix, xyz, val = daq_mixture
    i, j = neighbour_pairs(cKDTree(xyz), mix.centres, CUTOFF * mix.sigmas)
    assert len(i) < 0.2 * len(xyz) * len(mix)          # the point: few pairs near each
    (rd, *gd), (rs, *gs) = _dense_and_sparse(mix, xyz, val, i, j)
    assert float((rs - rd).abs().max()) < 1e-7 * float(rd.max())
    for a, b in zip(gs, gd):
        assert float((a - b).abs().max()) < 1e-6 * float(b.abs().max())
    P, N = len(xyz), len(mix)
    every = (torch.arange(P).repeat_interleave(N), torch.arange(N).repeat(P))
    (rd, *gd), (rs, *gs) = _dense_and_sparse(mix, xyz[:2000], val[:2000],
                                             *(x[: 2000 * N] for x in every))
    # The dense sum's |p|^2 + |c|^2 - 2 p.c rounds to ~1e-16 of |p|^2 (A^2): its own error.
    assert float((rs - rd).abs().max()) < 1e-10 * float(rd.abs().max())
    for a, b in zip(gs, gd):
        assert float((a - b).abs().max()) < 1e-10 * float(b.abs().max())


def test_neighbour_list_is_kept_while_its_bound_holds(daq_mixture):
    """The refinement's list, built at (c, s), holds every pair within CUTOFF widths of
    centres moved up to MOVE voxels and widths grown up to GROWTH-fold; beyond, it is
    rebuilt."""
    from difffit.gmm_fit import CUTOFF, GROWTH, MOVE, _Pairs, neighbour_pairs
    from scipy.spatial import cKDTree
    dmap, _, mix, xyz, _ = daq_mixture
    vox = float(np.mean(dmap.voxel_size))
    pairs = _Pairs(xyz, vox)
    i0, j0 = pairs.update(mix.centres, mix.sigmas)
    rng = np.random.default_rng(4)
    u = rng.normal(size=mix.centres.shape)
    c = mix.centres + 0.99 * MOVE * vox * u / np.linalg.norm(u, axis=1, keepdims=True)
    s = mix.sigmas * 0.99 * GROWTH
    i, j = pairs.update(c, s)
    assert pairs.builds == 1 and i is i0
    need = neighbour_pairs(cKDTree(xyz), c, CUTOFF * s)
    have = set(zip(i0.tolist(), j0.tolist()))
    assert set(zip(*(x.tolist() for x in need))) <= have
    pairs.update(c, mix.sigmas * 1.01 * GROWTH)
    assert pairs.builds == 2
    c[0] += 1.01 * MOVE * vox
    pairs.update(c, mix.sigmas * 1.01 * GROWTH)
    assert pairs.builds == 3


def test_sparse_correlation_is_the_dense_one(daq_mixture, monkeypatch):
    """mixture_correlation (sparse to 8 widths, by blocks of Gaussians when the pairs are
    many) equals the dense sum's correlation."""
    from difffit import gmm_fit
    dmap, thr, mix, _, _ = daq_mixture
    xyz, val = gmm_fit.fit_voxels(dmap, thr, 5.0, 200_000)
    t = torch.as_tensor
    rho = gmm.density(t(mix.centres), t(mix.sigmas), t(mix.amplitudes), t(xyz))
    dense = float(np.corrcoef(rho.numpy(), val)[0, 1])
    assert mixture_correlation(mix, dmap, thr) == pytest.approx(dense, abs=1e-12)
    monkeypatch.setattr(gmm_fit, "MAX_PAIRS", 20_000)            # about 10 blocks
    assert mixture_correlation(mix, dmap, thr) == pytest.approx(dense, abs=1e-12)


def test_sparse_refinement_is_the_dense_one(daq_mixture, monkeypatch):
    """refine_to_map on the neighbour list gives the mixture the dense reference gives
    (MAX_PAIRS 0 forces gmm.density) up to the truncation, on the DAQ map."""
    from difffit import gmm_fit
    dmap, thr, mix, _, _ = daq_mixture
    sparse = gmm_fit.refine_to_map(mix, dmap, thr, iters=5)
    monkeypatch.setattr(gmm_fit, "MAX_PAIRS", 0)
    dense = gmm_fit.refine_to_map(mix, dmap, thr, iters=5)
    assert sparse.info["neighbour_lists"] >= 1 and dense.info["neighbour_lists"] == 0
    # Measured: 8e-9 A, 8e-10, 1.4e-10, 3e-12.
    assert np.abs(sparse.centres - dense.centres).max() < 1e-6           # Angstrom
    assert np.abs(sparse.sigmas / dense.sigmas - 1).max() < 1e-7
    assert np.abs(sparse.amplitudes / dense.amplitudes - 1).max() < 1e-7
    assert sparse.info["correlation"] == pytest.approx(dense.info["correlation"], abs=1e-10)
    assert sparse.info["correlation"] > sparse.info["correlation_start"] + 0.05
