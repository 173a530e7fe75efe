"""Local and regional fits (difffit.region) on the haemoglobin map: a local fit returns
to the deposited pose and stays on its copy; a centre, a zone or a mask decides which of
the two alpha copies (chains A and C, 31 A apart, related by the tetramer's 2-fold) a
search finds; bad regions are refused with what is wrong."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import data_file
from test_fit import pose_error, random_move

import difffit
from difffit import DifffitInputError
from difffit.cli import main
from difffit.maps import write_map
from difffit.region import crop, zone_weights

HB_MAP, HB_MODEL = "hemoglobin_emd3488_5ni1/emd_3488.mrc", "hemoglobin_emd3488_5ni1/5ni1_updated.cif"
RES = 3.2
# A search of 200 starts: the whole map's search at this size misses chain A (it is
# found by few of 1000 starts); limited to a region it finds the copy there.
SMALL = dict(n_rotations=50, n_positions=4)


@pytest.fixture(scope="module")
def hb(shared_data):
    dmap = difffit.read_map(data_file(shared_data, HB_MAP))
    path = data_file(shared_data, HB_MODEL)
    A = difffit.read_structure(path, chains=["A"])
    C = difffit.read_structure(path, chains=["C"])
    return dmap, A, C


def _small_rotation(deg: float, shift: float, seed: int, centre: np.ndarray):
    """R, t turning a structure by ``deg`` about its centre and shifting it by ``shift`` A."""
    rng = np.random.default_rng(seed)
    ax = rng.normal(size=3)
    ax /= np.linalg.norm(ax)
    K = np.array([[0, -ax[2], ax[1]], [ax[2], 0, -ax[0]], [-ax[1], ax[0], 0]])
    th = np.radians(deg)
    R = np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K
    d = rng.normal(size=3)
    return R, centre - R @ centre + d / np.linalg.norm(d) * shift


def _ca(s) -> dict[int, int]:
    """Residue number -> index in ``s.coords`` of its CA atom (coords follow gemmi's order)."""
    out, k = {}, 0
    for chain in s.gemmi_structure[0]:
        for res in chain:
            for atom in res:
                if atom.name == "CA":
                    out[res.seqid.num] = k
                k += 1
    return out


def _rmsd_to(placement, moved, target) -> float:
    """CA RMSD of the placed ``moved`` structure to ``target`` over their common residues
    (chains A and C hold the same sequence)."""
    x = placement.moved(moved).coords
    a, b = _ca(moved), _ca(target)
    common = sorted(set(a) & set(b))
    assert len(common) > 100
    d = x[[a[r] for r in common]] - target.coords[[b[r] for r in common]]
    return float(np.sqrt((d ** 2).sum(1).mean()))


@pytest.mark.parametrize("seed,deg,shift", [(0, 5.0, 2.0), (1, 5.0, 2.0), (2, 15.0, 5.0)])
def test_local_fit_returns_to_the_deposited_pose_on_its_own_copy(hb, seed, deg, shift):
    dmap, A, C = hb
    R0, t0 = _small_rotation(deg, shift, seed, A.centroid)
    moved = A.transformed(R0, t0)
    res = difffit.fit(dmap, [moved], RES, local=True)
    assert len(res.trajectory["mol_idx"]) == 1  # one start: no search
    best = res.best(0)
    angle, shift, rmsd = pose_error(best, R0, t0, A)
    assert angle < 1.0 and shift < 0.5 and rmsd < 0.5, (angle, shift, rmsd)
    assert _rmsd_to(best, moved, C) > 20  # never the other alpha copy
    assert any("local" in n for n in res.notes)


@pytest.mark.parametrize("copy", ["A", "C"])
def test_center_and_radius_find_the_copy_there(hb, copy):
    dmap, A, C = hb
    target = {"A": A, "C": C}[copy]
    R0, t0 = random_move(3)
    moved = A.transformed(R0, t0)
    res = difffit.fit(dmap, [moved], RES, center=tuple(target.centroid), radius=5.0, **SMALL)
    best = res.best(0)
    assert _rmsd_to(best, moved, target) < 0.5
    assert best.score > 0.6  # cam of the right pose (the whole-map search at this size: 0.36)
    assert np.linalg.norm(best.centre - target.centroid) < 1.0
    # The result keeps the whole map (its file), not the cut-out searched.
    assert res.map is dmap


def test_zone_restricts_the_map_to_a_copy(hb, tmp_path):
    dmap, A, C = hb
    zone = tmp_path / "chainC.pdb"
    C.gemmi_structure.write_pdb(str(zone))
    R0, t0 = random_move(3)
    moved = A.transformed(R0, t0)
    res = difffit.fit(dmap, [moved], RES, zone=str(zone), zone_radius=4.0, **SMALL)
    assert _rmsd_to(res.best(0), moved, C) < 0.5
    # Every placement lies in the zone: nothing was searched elsewhere.
    for p in res.placements:
        assert np.linalg.norm(p.centre - C.centroid) < 25


def test_mask_restricts_the_map_to_a_copy(hb, tmp_path):
    dmap, A, C = hb
    mask = tmp_path / "maskA.mrc"
    write_map(mask, dmap.copy_with(zone_weights(A, dmap, 4.0).astype(np.float32)))
    R0, t0 = random_move(3)
    moved = A.transformed(R0, t0)
    res = difffit.fit(dmap, [moved], RES, mask=str(mask), **SMALL)
    assert _rmsd_to(res.best(0), moved, A) < 0.5


def test_bad_regions_are_refused(hb, tmp_path):
    dmap, A, _ = hb
    for kw, what in ((dict(radius=0.0, center=(1, 2, 3)), "radius must be > 0"),
                     (dict(radius=-3.0, center=(1, 2, 3)), "radius must be > 0"),
                     (dict(center=(1, 2, 3)), "center needs radius"),
                     (dict(radius=5.0), "radius needs center"),
                     (dict(center=(1, 2), radius=5.0), "three finite numbers"),
                     (dict(local=True, center=(1, 2, 3), radius=5.0), "does not search"),
                     (dict(zone_radius=0.0), "zone_radius must be > 0")):
        with pytest.raises(DifffitInputError, match=what):
            difffit.FitParams(**kw)
    with pytest.raises(DifffitInputError, match="zone='.*missing.pdb': no such file"):
        difffit.fit(dmap, [A], RES, zone=str(tmp_path / "missing.pdb"), **SMALL)
    with pytest.raises(DifffitInputError, match="no such file"):
        difffit.fit(dmap, [A], RES, mask=str(tmp_path / "missing.mrc"), **SMALL)
    # A mask on another grid: the map cut by a voxel (its grid), or shifted (its origin).
    cut = crop(dmap, dmap.world_min + dmap.voxel_size, dmap.world_max)
    write_map(tmp_path / "cut.mrc", cut.copy_with(np.ones_like(cut.data)))
    with pytest.raises(DifffitInputError, match=r"grid 99x99x99 is not the grid of .*100x100x100.*resample"):
        difffit.fit(dmap, [A], RES, mask=str(tmp_path / "cut.mrc"), **SMALL)
    shifted = difffit.DensityMap(np.ones_like(dmap.data), dmap.origin + 2.0, dmap.voxel_size)
    write_map(tmp_path / "shifted.mrc", shifted)
    with pytest.raises(DifffitInputError, match="origin .* is not that of .*shifted"):
        difffit.fit(dmap, [A], RES, mask=str(tmp_path / "shifted.mrc"), **SMALL)
    write_map(tmp_path / "empty.mrc", dmap.copy_with(np.zeros_like(dmap.data)))
    with pytest.raises(DifffitInputError, match="no voxel of the mask is non-zero"):
        difffit.fit(dmap, [A], RES, mask=str(tmp_path / "empty.mrc"), **SMALL)
    # A sphere with no density above the contour, and a zone outside the map.
    with pytest.raises(DifffitInputError, match="no density above the contour .* within 3 A"):
        difffit.fit(dmap, [A], RES, center=(2.0, 2.0, 2.0), radius=3.0, **SMALL)
    far = tmp_path / "far.pdb"
    A.transformed(np.eye(3), np.array([500.0, 0, 0])).gemmi_structure.write_pdb(str(far))
    with pytest.raises(DifffitInputError, match="no voxel of the map lies within"):
        difffit.fit(dmap, [A], RES, zone=str(far), **SMALL)


def test_cli_local_and_regional_options(hb, shared_data, tmp_path, capsys):
    dmap, A, C = hb
    R0, t0 = _small_rotation(5.0, 2.0, 2, A.centroid)
    model = tmp_path / "A_moved.pdb"
    A.transformed(R0, t0).gemmi_structure.write_pdb(str(model))
    map_path = str(data_file(shared_data, HB_MAP))
    assert main(["fit", map_path, str(model), "-r", str(RES), "--local", "-q",
                 "-o", str(tmp_path / "local")]) == 0
    run = difffit.read_results(tmp_path / "local")
    best = run.best(0)
    assert np.linalg.norm(best.centre - A.centroid) < 0.5
    c = ",".join(f"{v:.2f}" for v in C.centroid)
    assert main(["fit", map_path, str(model), "-r", str(RES), "--center", c, "--radius", "5",
                 "--rotations", "50", "--positions", "4", "-q",
                 "-o", str(tmp_path / "centre")]) == 0
    best = difffit.read_results(tmp_path / "centre").best(0)
    assert np.linalg.norm(best.centre - C.centroid) < 1.0
    capsys.readouterr()
    # Bad input: one line, exit status 2, nothing written.
    for extra, what in ((["--radius", "5"], "--radius needs --center"),
                        (["--zone", str(tmp_path / "nope.pdb")], "--zone .*nope.pdb: no such file"),
                        (["--zone-radius", "3"], "--zone-radius needs --zone")):
        out = tmp_path / f"bad{len(extra)}{extra[0]}"
        assert main(["fit", map_path, str(model), "-r", str(RES), "-o", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("difffit: error:") and __import__("re").search(what, err), err
        assert not out.exists()
