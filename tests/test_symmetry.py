"""Symmetry (difffit.symmetry, ``--symmetry``): Cn / Dn operators, the axis and centre found
from real maps (haemoglobin's C2; a C4 map the test makes from the DAQ map), and composite
and assemble placing every symmetric copy from one asymmetric unit moved away from its
deposited pose."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from difffit import DifffitInputError, assemble, composite
from difffit.cli import main
from difffit.io import read_map, read_structure
from difffit.maps import DensityMap
from difffit.preprocess import default_threshold
from difffit.symmetry import (axis_rotation, expand_pose, find_symmetry, parse_symmetry,
                              symmetry_operators)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import data_file  # noqa: E402
from test_fit import random_move  # noqa: E402

HB = "hemoglobin_emd3488_5ni1"
DAQ = "daq_emd2566_3j6b"
SMALL = dict(n_rotations=30, n_positions=6, n_iters=80)


def ca_by_residue(structure) -> dict:
    """(chain, residue number) -> CA position of the (moved) gemmi model."""
    out = {}
    for chain in structure.gemmi_structure[0]:
        for res in chain:
            ca = res.find_atom("CA", "*")
            if ca is not None:
                out[(chain.name.split("_")[0], res.seqid.num)] = np.array([ca.pos.x, ca.pos.y, ca.pos.z])
    return out


def ca_rmsd(a: dict, b: dict) -> float:
    common = sorted(set(a) & set(b))
    assert len(common) > 50
    d = np.array([a[k] - b[k] for k in common])
    return float(np.sqrt((d ** 2).sum(1).mean()))


# ----------------------------------------------------------------------------------------
# Operators
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,n", [("C", 4), ("C", 7), ("D", 2), ("D", 3)])
def test_operators_are_the_group(kind, n):
    axis = np.array([0.3, -0.2, 0.9])
    G = symmetry_operators(kind, n, axis)
    assert len(G) == n * (2 if kind == "D" else 1)
    assert np.allclose(G[0], np.eye(3))
    for A in G:
        assert np.allclose(A @ A.T, np.eye(3)) and np.isclose(np.linalg.det(A), 1)
        # Closed under products: every product is one of the operators.
        for B in G:
            assert min(np.abs(A @ B - C).max() for C in G) < 1e-9
    # The n-fold axis is fixed by the cyclic part.
    a = axis / np.linalg.norm(axis)
    assert all(np.allclose(A @ a, a) for A in G[:n])


def test_parse_and_bad_specs():
    assert parse_symmetry("c4") == ("C", 4) and parse_symmetry("D2") == ("D", 2)
    assert parse_symmetry("auto") == ("auto", None)
    for bad in ("C0", "I", "C", "T2", "4"):
        with pytest.raises(DifffitInputError, match="symmetry"):
            parse_symmetry(bad)


# ----------------------------------------------------------------------------------------
# Haemoglobin: C2 found from the map
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hb(shared_data):
    path = data_file(shared_data, f"{HB}/5ni1_updated.cif")
    dmap = read_map(data_file(shared_data, f"{HB}/emd_3488.mrc"))
    ab = read_structure(path, chains=["A", "B"])
    R, t = random_move(5)
    moved = ab.transformed(R, t)
    moved.name = "alpha_beta"
    cd = ca_by_residue(read_structure(path, chains=["C", "D"]))
    # C and D take the places of A and B under the C2: compare them under A's and B's names.
    cd = {({"C": "A", "D": "B"}[c], n): v for (c, n), v in cd.items()}
    return {"map": dmap, "ab": ab, "moved": moved, "ab_ca": ca_by_residue(ab), "cd_ca": cd}


def test_haemoglobin_c2_found_from_the_map_maps_ab_onto_cd(hb):
    sym = find_symmetry(hb["map"], default_threshold(hb["map"].data), "auto")
    assert sym.name == "C2", sym.scores
    assert sym.score > 0.7 and max(v for k, v in sym.scores.items() if k != 2) < 0.4, sym.scores
    R, t = expand_pose(sym, np.eye(3), np.zeros(3))[1]
    image = ca_by_residue(hb["ab"].transformed(R, t))
    assert ca_rmsd(image, hb["cd_ca"]) < 1.0
    assert "found from the map" in sym.describe()


def _check_four_chains(res, hb):
    assert len(res.placements) == 2, res.summary_table()
    errors = []
    for p in res.placements:
        moved = ca_by_residue(p.moved(hb["moved"]))
        errors.append((ca_rmsd(moved, hb["ab_ca"]), ca_rmsd(moved, hb["cd_ca"])))
    # One copy on A+B, the other on C+D: all four chains.
    (ab1, cd1), (ab2, cd2) = errors
    assert min(max(ab1, cd2), max(cd1, ab2)) < 2.0, errors
    assert all(p.metric("cam") > 0.5 for p in res.placements), res.summary_table()


def test_haemoglobin_pair_with_c2_gives_all_four_chains_composite(hb):
    res = composite(hb["map"], [hb["moved"]], 3.2, symmetry="C2", **SMALL)
    _check_four_chains(res, hb)
    assert res.symmetry.name == "C2" and "C2 images added" in res.stop_reason


@pytest.mark.slow
def test_haemoglobin_pair_with_c2_gives_all_four_chains_assemble(hb):
    res = assemble(hb["map"], [hb["moved"]], 3.2, symmetry="C2", n_combos=6, n_random=2,
                   joint_iters=60, refine_iters=30, **SMALL)
    _check_four_chains(res, hb)


def test_copies_must_fill_whole_symmetric_sets(hb):
    with pytest.raises(DifffitInputError, match="multiple of 2"):
        composite(hb["map"], [hb["moved"]], 3.2, symmetry="C2", copies=3, **SMALL)


# ----------------------------------------------------------------------------------------
# A C4 map made from the DAQ map
# ----------------------------------------------------------------------------------------


def c4_map(dmap: DensityMap, gap: float = 6.0) -> tuple[DensityMap, np.ndarray]:
    """The map's box put beside a z axis (``gap`` Angstrom from it) in a square box, and the
    sum of its four 90-degree turns about that axis: a C4 map holding four copies of the
    density, the first in its original place. Returns (map, the axis's point (x, y, z))."""
    d = dmap.data
    vs = float(dmap.voxel_size[0])
    nz, ny, nx = d.shape
    g = int(math.ceil(gap / vs))
    n = 2 * (max(nx, ny) + g)                 # even: the axis lies between voxel centres
    big = np.zeros((nz, n, n), dtype=np.float32)
    oy = ox = n // 2 + g
    big[:, oy:oy + ny, ox:ox + nx] = d
    c4 = sum(np.rot90(big, k, axes=(1, 2)) for k in range(4))
    origin = dmap.origin - np.array([ox, oy, 0]) * vs
    centre = origin + np.array([(n - 1) / 2 * vs, (n - 1) / 2 * vs, nz / 2 * vs])
    return DensityMap(np.ascontiguousarray(c4), origin=origin, voxel_size=dmap.voxel_size.copy()), centre


@pytest.fixture(scope="module")
def daq_c4(shared_data):
    dmap = read_map(data_file(shared_data, f"{DAQ}/2566_3J6B_9.mrc"))
    model = read_structure(data_file(shared_data, f"{DAQ}/3J6B_9.pdb"))
    c4, centre = c4_map(dmap)
    R, t = random_move(7)
    moved = model.transformed(R, t)
    truth = [ca_by_residue(model.transformed(*_about(axis_rotation(np.array([0, 0, 1.0]), k * math.pi / 2), centre)))
             for k in range(4)]
    return {"map": c4, "centre": centre, "model": model, "moved": moved, "truth": truth}


def _about(G, c):
    return G, c - G @ c


def test_c4_axis_found_in_a_map_made_c4(daq_c4):
    dmap = daq_c4["map"]
    sym = find_symmetry(dmap, default_threshold(dmap.data), "auto")
    assert sym.name == "C4", sym.scores
    assert abs(sym.axis[2]) > 0.999
    off = sym.centre - daq_c4["centre"]
    assert np.linalg.norm(off - off @ sym.axis * sym.axis) < 1.0  # the axis passes the centre


def _check_four_copies(res, truth):
    assert len(res.placements) == 4, res.summary_table()
    landed = []
    for p in res.placements:
        ca = ca_by_residue(p.moved(res.structures[0]))
        errs = [ca_rmsd(ca, t) for t in truth]
        landed.append(int(np.argmin(errs)))
        assert min(errs) < 2.0, errs
    assert sorted(landed) == [0, 1, 2, 3]
    # No clash: every copy's CA atoms keep clear of the others'.
    cas = [np.array(list(ca_by_residue(p.moved(res.structures[0])).values())) for p in res.placements]
    for i in range(4):
        for j in range(i):
            d = np.linalg.norm(cas[i][:, None] - cas[j][None], axis=-1)
            assert (d.min(1) < 3.0).mean() < 0.1


def test_c4_map_gives_four_non_clashing_copies_composite(daq_c4):
    res = composite(daq_c4["map"], [daq_c4["moved"]], 5.0, symmetry="C4", **SMALL)
    _check_four_copies(res, daq_c4["truth"])


@pytest.mark.slow
def test_c4_map_gives_four_non_clashing_copies_assemble(daq_c4):
    res = assemble(daq_c4["map"], [daq_c4["moved"]], 5.0, symmetry="C4", n_combos=6, n_random=2,
                   joint_iters=60, refine_iters=30, **SMALL)
    _check_four_copies(res, daq_c4["truth"])


def test_cli_composite_symmetry_with_given_axis(daq_c4, tmp_path, capsys):
    from difffit.maps import write_map
    from difffit.structures import write_structure
    mp, sp = tmp_path / "c4.mrc", tmp_path / "moved.cif"
    write_map(mp, daq_c4["map"])
    write_structure(sp, daq_c4["moved"])
    c = daq_c4["centre"]
    rc = main(["composite", str(mp), str(sp), "-r", "5", "-o", str(tmp_path / "out"),
               "--symmetry", "C4", "--symmetry-axis", "0,0,1",
               "--symmetry-centre", f"{c[0]},{c[1]},{c[2]}", "--rotations", "30",
               "--positions", "6", "--iterations", "80", "-q"])
    assert rc == 0
    text = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert len(text) == 5  # header + four copies
