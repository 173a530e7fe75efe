"""The demo: an ideal protein, a simulated two-copy map, and recovering both copies."""
from __future__ import annotations

import gemmi
import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from difffit.demo import ANGLE, BOND, demo_map, ideal_protein, run_demo


@pytest.fixture(scope="module")
def protein():
    return ideal_protein()


def _atoms(structure):
    """{(residue index, atom name): xyz} and the residue names."""
    out, names = {}, []
    k = 0
    for i, res in enumerate(structure.gemmi_structure[0]["A"]):
        names.append(res.name)
        for a in res:
            out[(i, a.name)] = structure.coords[k]
            k += 1
    assert k == structure.n_atoms
    return out, names


def _angle(a, b, c):
    u, v = a - b, c - b
    return np.degrees(np.arccos(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v)))


def test_ideal_geometry(protein):
    atoms, names = _atoms(protein)
    n = len(names)
    bonds = {"N-CA": [], "CA-C": [], "C-N": [], "C-O": [], "CA-CB": []}
    angles = {"N-CA-C": [], "CA-C-N": [], "C-N-CA": []}
    for i in range(n):
        N, CA, C, O = (atoms[(i, x)] for x in ("N", "CA", "C", "O"))
        bonds["N-CA"].append(np.linalg.norm(CA - N))
        bonds["CA-C"].append(np.linalg.norm(C - CA))
        bonds["C-O"].append(np.linalg.norm(O - C))
        angles["N-CA-C"].append(_angle(N, CA, C))
        if names[i] != "GLY":
            bonds["CA-CB"].append(np.linalg.norm(atoms[(i, "CB")] - CA))
            # L-amino acid: torsion C-N-CA-CB about -122.6 degrees.
            tors = np.degrees(gemmi.calculate_dihedral(*(gemmi.Position(*atoms[(i, x)])
                                                         for x in ("C", "N", "CA", "CB"))))
            assert tors == pytest.approx(-122.6, abs=0.5)
        else:
            assert (i, "CB") not in atoms
        if i + 1 < n:
            N1, CA1 = atoms[(i + 1, "N")], atoms[(i + 1, "CA")]
            bonds["C-N"].append(np.linalg.norm(N1 - C))
            angles["CA-C-N"].append(_angle(CA, C, N1))
            angles["C-N-CA"].append(_angle(C, N1, CA1))
            omega = np.degrees(gemmi.calculate_dihedral(*(gemmi.Position(*x) for x in (CA, C, N1, CA1))))
            assert abs(abs(omega) - 180.0) < 0.5
    for k, v in bonds.items():
        assert np.abs(np.array(v) - BOND[k]).max() < 0.02, k
    for k, v in angles.items():
        assert np.abs(np.array(v) - ANGLE[k]).max() < 0.5, k


def test_compact_and_clash_free(protein):
    atoms, names = _atoms(protein)
    ca = np.array([atoms[(i, "CA")] for i in range(len(names))])
    d = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert d.min() > 3.5
    far = np.abs(np.arange(len(ca))[:, None] - np.arange(len(ca))[None]) > 1
    assert d[far].min() > 4.0
    rg = np.sqrt(((protein.coords - protein.coords.mean(0)) ** 2).sum(1).mean())
    assert 9.0 < rg < 15.0
    # No clashes: atoms of residues two or more apart at least 3 A apart (an ideal helix
    # has O(i)...N(i+4) at 3.09 A), CB pairs (standing in for side chains) 3.8 A.
    res_of = np.repeat(np.arange(len(names)), [5 if r != "GLY" else 4 for r in names])
    is_cb = np.array([a.name == "CB" for r in protein.gemmi_structure[0]["A"] for a in r])
    x = protein.coords
    dd = np.linalg.norm(x[:, None] - x[None], axis=-1)
    apart = np.abs(res_of[:, None] - res_of[None]) > 1
    assert dd[apart].min() > 2.99
    assert dd[apart & is_cb[:, None] & is_cb[None]].min() > 3.79
    # Asymmetric: distinct principal moments, so the orientation is well defined.
    ev = np.linalg.eigvalsh(np.cov((x - x.mean(0)).T))
    assert np.min(np.diff(ev) / ev[-1]) > 0.05


def test_structure_fields(protein):
    _, names = _atoms(protein)
    assert protein.name == "ideal_bundle" and protein.path is None
    assert protein.chains == ["A"]
    assert protein.n_fit_atoms == 4 * len(names)  # backbone N, CA, C, O
    assert set(protein.atomic_numbers.tolist()) == {6, 7, 8}
    assert np.all(np.abs(protein.centroid) < 1.0)  # centred near the origin
    st = protein.gemmi_structure
    assert st[0]["A"][0].name in ("LEU", "ALA") and "GLY" in names


def test_deterministic():
    a, b, c = ideal_protein(seed=3), ideal_protein(seed=3), ideal_protein(seed=4)
    np.testing.assert_array_equal(a.coords, b.coords)
    assert a.coords.shape != c.coords.shape or not np.allclose(a.coords, c.coords)


def test_demo_map_has_density_at_true_poses(protein):
    dmap, poses = demo_map(protein, n_copies=2, resolution=5.0, voxel=1.5, noise=0.1, seed=1)
    assert len(poses) == 2
    clean, _ = demo_map(protein, n_copies=2, resolution=5.0, voxel=1.5, noise=0.0, seed=1)
    assert clean.data.max() == pytest.approx(1.0)
    assert dmap.data.std() > clean.data.std()  # noise was added

    def at(points, m):
        idx = m.world_to_index(points)[:, ::-1].T  # (z, y, x)
        return map_coordinates(m.data.astype(np.float64), idx, order=1, mode="nearest")

    moved = []
    for R, t in poses:
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(R) == pytest.approx(1.0)
        x = protein.coords @ R.T + t
        assert np.all(x > dmap.world_min) and np.all(x < dmap.world_max)  # inside the box
        assert at(x, clean).mean() > 0.5
        assert np.mean(at(x, clean) > 0.3) > 0.95
        moved.append(x)
    # Copies do not overlap.
    d = np.linalg.norm(moved[0][:, None] - moved[1][None], axis=-1)
    assert d.min() >= 4.0
    # A wrong pose (copy 1 rotated 90 degrees about its centroid) sits in far less density.
    R, t = poses[0]
    c = R @ protein.centroid + t
    Rz = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    wrong = (moved[0] - c) @ Rz.T + c
    assert at(wrong, clean).mean() < 0.7 * at(moved[0], clean).mean()


def test_demo_map_seeded(protein):
    a, pa = demo_map(protein, seed=5)
    b, pb = demo_map(protein, seed=5)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(pa[0][0], pb[0][0])


def test_run_demo_recovers_both_copies(tmp_path, capsys):
    """The main job: the default protocol finds both copies, to well under 1 A RMSD."""
    out = run_demo(outdir=tmp_path / "demo", seed=0)
    text = capsys.readouterr().out
    assert "demo: recovered 2/2 copies" in text
    assert out["recovered"] == 2 and out["n_copies"] == 2
    ranks = sorted(c["rank"] for c in out["copies"])
    assert ranks == [1, 2]  # the two copies are the two best placements
    for c in out["copies"]:
        assert c["recovered"]
        assert c["rotation_error_deg"] < 2.0 and c["shift"] < 0.5 and c["rmsd"] < 0.5
        assert c["hits"] >= 5
    assert out["time"] > 0
    paths = out["outputs"]
    assert paths["map"].is_file() and paths["csv"].is_file() and paths["cxc"].is_file()
    assert "open " + str(paths["map"].resolve()) in paths["cxc"].read_text()


@pytest.mark.parametrize("seed", [1, 2])
def test_run_demo_quick_other_seeds(seed):
    out = run_demo(seed=seed, quick=True, verbose=False)
    assert out["recovered"] == 2
