"""The ChimeraX-style metrics reproduce UCSF ChimeraX 1.7.1 ``fitmap`` (no motion) at 18
poses on real maps (``chimerax_fitmap_metrics.json``, shared data README), and depend on
nothing of the frame the model came in."""
import json

import numpy as np
import pytest
from conftest import data_file

from difffit.maps import read_map
from difffit.metrics import chimerax_metrics
from difffit.structures import read_structure

ROWS_FILE = "chimerax_fitmap_metrics.json"


def _rows(root):
    return json.loads(data_file(root, ROWS_FILE).read_text())


def _case(root, row):
    dmap = read_map(data_file(root, row["map"]))
    # ChimeraX scored every atom of the file but waters (hydrogens included).
    s = read_structure(data_file(root, row["model"]), selection="all", chains=row["chain"],
                       keep_hydrogens=True, keep_ligands=True)
    return dmap, s


def test_every_row_matches_chimerax(shared_data):
    rows = _rows(shared_data)
    assert len(rows) == 18
    for row in rows:
        dmap, s = _case(shared_data, row)
        m = chimerax_metrics(dmap, [s], np.array([row["R"]]), np.array([row["t"]]), [0],
                             row["resolution"], row["map_level"])
        what = f"{row['case']} {row['pose']}"
        assert abs(m["correlation"][0] - row["correlation"]) < 0.005, what
        assert abs(m["cam"][0] - row["cam"]) < 0.005, what
        assert abs(m["overlap"][0] / row["overlap"] - 1) < 0.005, what
        assert abs(m["envelope_points"][0] / row["envelope_points"] - 1) < 0.005, what
        assert m["mean_density"][0] == pytest.approx(row["atom_mean_density"], rel=1e-3, abs=1e-5), what
        assert m["inside_fraction"][0] == pytest.approx(row["atoms_inside_level"], abs=2e-3), what


def test_metrics_do_not_depend_on_the_input_frame(shared_data):
    """The same final pose reached from a model given in another frame scores the same."""
    row = next(r for r in _rows(shared_data) if r["case"].startswith("hemoglobin") and r["pose"] != "reference")
    dmap, s = _case(shared_data, row)
    rng = np.random.default_rng(3)
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    A = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                  [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                  [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    b = rng.normal(size=3) * 40
    other = s.transformed(A, b)                       # the model in another frame
    R, t = np.array(row["R"]), np.array(row["t"])
    R2, t2 = R @ A.T, t - R @ A.T @ b                 # the same final pose from there
    m1 = chimerax_metrics(dmap, [s], R[None], t[None], [0], row["resolution"], row["map_level"])
    m2 = chimerax_metrics(dmap, [other], R2[None], t2[None], [0], row["resolution"], row["map_level"])
    for k in ("correlation", "cam", "overlap", "mean_density", "inside_fraction"):
        assert m2[k][0] == pytest.approx(m1[k][0], rel=1e-6, abs=1e-9), k


def _approximate(dmap, s, R, t, row):
    """The many-placement metrics (one simulation in the model's principal frame, moved)."""
    import torch

    from difffit.metrics import Metrics
    from difffit.preprocess import build_pyramid
    from difffit.rotations import matrix_to_quat

    c = s.centroid
    pyr = build_pyramid(dmap.data, dmap.origin, dmap.voxel_size, row["map_level"], n_levels=1)
    m = Metrics([s], c[None], dmap, pyr.levels[..., 0], pyr.origin.tolist(),
                pyr.voxel_size.tolist(), row["map_level"], row["resolution"], "cpu")
    q = matrix_to_quat(torch.from_numpy(R)[None])
    return m(q, torch.from_numpy(R @ c + t)[None], torch.zeros(1, dtype=torch.int64))


def test_many_placement_metrics_are_close_to_chimerax_and_frame_free(shared_data):
    for row in [r for r in _rows(shared_data) if r["pose"] != "reference"][::2]:
        dmap, s = _case(shared_data, row)
        R, t = np.array(row["R"]), np.array(row["t"])
        got = _approximate(dmap, s, R, t, row)
        what = f"{row['case']} {row['pose']}"
        assert abs(got["correlation"].item() - row["correlation"]) < 0.01, what
        assert abs(got["cam"].item() - row["cam"]) < 0.01, what
        assert abs(got["overlap"].item() / row["overlap"] - 1) < 0.03, what
        # The same final pose from a model given in another frame: the same numbers.
        A = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        b = np.array([12.0, -7.0, 30.0])
        again = _approximate(dmap, s.transformed(A, b), R @ A.T, t - R @ A.T @ b, row)
        assert again["cam"].item() == pytest.approx(got["cam"].item(), abs=1e-4), what


def test_batched_envelopes_match_the_one_structure_reference(shared_data):
    """The compiled envelopes of many structures at once (Metrics' set-up) are molmap's
    envelope of each (simulate.molmap_envelope, numpy): the same grid points, the same
    values, in the world frame and in each structure's principal frame, at several
    resolutions."""
    from difffit.simulate import molmap_envelope, molmap_envelopes, principal_frame
    from difffit.structures import simulation_mask

    models = sorted({(r["model"], r["chain"]) for r in _rows(shared_data)})
    atoms = []
    for model, chain in models:
        s = read_structure(data_file(shared_data, model), selection="all", chains=chain)
        sel = simulation_mask(s)
        atoms.append((s.coords[sel], s.atomic_numbers[sel]))
    frames = [principal_frame(x, x.mean(0)) for x, _ in atoms]
    for resolution in (3.0, 6.0, 12.0):
        for fr in (None, frames):
            pts, val, counts = molmap_envelopes(atoms, resolution, fr)
            assert counts.sum() == len(pts) == len(val)
            cut = np.cumsum(counts)[:-1]
            for k, (p, v) in enumerate(zip(np.split(pts, cut), np.split(val, cut))):
                rp, rv = molmap_envelope(*atoms[k], resolution,
                                         frame=None if fr is None else fr[k])
                assert p.shape == rp.shape, (models[k], resolution)
                np.testing.assert_allclose(p, rp, rtol=0, atol=1e-9)
                np.testing.assert_allclose(v, rv, rtol=1e-6, atol=0)
