"""Tests for difffit.preprocess: contour, dust removal, normalisation, pyramid, starts."""
from __future__ import annotations

from pathlib import Path

import gemmi
import mrcfile
import numpy as np
import pytest
import torch
from scipy import ndimage

from difffit.errors import DifffitInputError
from difffit.preprocess import (
    Pyramid,
    build_pyramid,
    default_threshold,
    envelope_positions,
    remove_dust,
)

from conftest import data_file

DEMO = "difffit_domain_demo/density2.mrc"
HEMO = "hemoglobin_emd3488_5ni1/emd_3488.mrc"
DEMO_CONTOUR = 0.886  # the usual contour of the demo map (shared/data/README.md)


def _read_map(path: Path):
    """(data [nz,ny,nx] float32, origin xyz, voxel xyz) for the simple maps used here.

    Independent of difffit.io on purpose; these maps have standard axis order and
    either an ORIGIN field or zero NSTART.
    """
    with mrcfile.open(path, permissive=True) as m:
        h = m.header
        assert (int(h.mapc), int(h.mapr), int(h.maps)) == (1, 2, 3)
        data = np.asarray(m.data, dtype=np.float32).copy()
        vox = np.array([m.voxel_size.x, m.voxel_size.y, m.voxel_size.z], dtype=np.float64)
        origin = np.array([h.origin.x, h.origin.y, h.origin.z], dtype=np.float64)
        if not origin.any():
            origin = np.array([h.nxstart, h.nystart, h.nzstart], dtype=np.float64) * vox
    return data, origin, vox


def _atoms(path: Path) -> np.ndarray:
    """[N,3] xyz of the protein heavy atoms of the first model."""
    st = gemmi.read_structure(str(path))
    st.setup_entities()
    st.remove_ligands_and_waters()
    st.remove_hydrogens()
    return np.array([a.pos.tolist() for ch in st[0] for res in ch for a in res])


def _world_to_index(xyz: np.ndarray, pyr: Pyramid) -> np.ndarray:
    """Nearest voxel [N,3] in (z, y, x) order."""
    return np.rint((xyz - pyr.origin) / pyr.voxel_size).astype(int)[:, ::-1]


def _blob_map() -> np.ndarray:
    """Synthetic [20, 24, 28] map: one 6x7x8 blob of values 1..2 plus tiny specks."""
    rng = np.random.default_rng(0)
    data = rng.normal(0.0, 0.05, size=(20, 24, 28)).astype(np.float32)
    data[5:11, 6:13, 8:16] = 1.0 + rng.random((6, 7, 8)).astype(np.float32)  # 336 voxels
    data[1, 1, 1] = 3.0  # a single hot voxel (dust)
    data[15, 20, 2:4] = 1.5  # a 2-voxel speck
    data[17, 2, 20] = 1.5  # two voxels touching on an edge only: not 6-connected
    data[18, 3, 20] = 1.5
    return data


# ------------------------------------------------------------------ dust removal


def test_remove_dust_synthetic():
    mask = np.zeros((12, 12, 12), bool)
    mask[2:7, 2:7, 2:6] = True  # 100 voxels: exactly min_size, kept
    mask[9, 9, 9] = True  # speck
    mask[9, 1:3, 1] = True  # 2-voxel speck
    mask[0, 10, 10] = mask[1, 11, 10] = True  # edge neighbours: two 1-voxel components
    mask[8:11, 8:11, 0:3] = True  # 27 voxels
    mask[9, 9, 9] = True
    out = remove_dust(mask, min_size=100)
    expected = np.zeros_like(mask)
    expected[2:7, 2:7, 2:6] = True
    assert out.dtype == bool and np.array_equal(out, expected)
    # min_size 27 keeps the cube too, but still no specks
    out27 = remove_dust(mask, min_size=27)
    assert out27.sum() == 127
    # min_size <= 1 keeps everything; input not modified
    assert np.array_equal(remove_dust(mask, min_size=1), mask)
    assert mask.sum() == 100 + 1 + 2 + 2 + 27


def test_remove_dust_on_demo_map(shared_data):
    data, _, _ = _read_map(data_file(shared_data, DEMO))
    above = data > DEMO_CONTOUR
    labels, n = ndimage.label(above, structure=ndimage.generate_binary_structure(3, 1))
    sizes = np.bincount(labels.ravel())[1:]
    # Measured: 32 six-connected components at 0.886, one of 5206 voxels, the rest < 20.
    assert n == 32 and sizes.max() == 5206 and np.sort(sizes)[-2] < 100
    kept = remove_dust(above, min_size=100)
    assert kept.sum() == 5206
    assert np.array_equal(kept, labels == np.argmax(sizes) + 1)


# ------------------------------------------------------------------------ pyramid


def test_pyramid_layout_and_level0_values():
    data = _blob_map()
    origin, vox = np.array([10.0, -5.0, 3.0]), np.array([1.0, 1.5, 2.0])
    pyr = build_pyramid(data, origin, vox, threshold=0.5, n_levels=4, robust_percentile=100.0)
    assert isinstance(pyr.levels, torch.Tensor)
    assert pyr.levels.shape == (20, 24, 28, 4) and pyr.levels.dtype == torch.float32
    # voxel-major: the L levels of a voxel are contiguous, then x, then y, then z
    assert pyr.levels.is_contiguous() and pyr.levels.stride() == (24 * 28 * 4, 28 * 4, 4, 1)
    assert pyr.n_levels == 4 and pyr.shape == (20, 24, 28)
    np.testing.assert_array_equal(pyr.origin, origin)
    np.testing.assert_array_equal(pyr.voxel_size, vox)
    assert pyr.threshold == 0.5
    # Only the blob survives dust removal (specks < 100 voxels).
    expected_mask = np.zeros(data.shape, bool)
    expected_mask[5:11, 6:13, 8:16] = True
    assert np.array_equal(pyr.mask, expected_mask)
    # percentile 100: scale is the blob max; level 0 = raw / scale inside the mask
    assert pyr.scale == pytest.approx(float(data[expected_mask].max()))
    lvl0 = pyr.levels[..., 0].numpy()
    np.testing.assert_allclose(lvl0[expected_mask], data[expected_mask] / pyr.scale, rtol=1e-6)
    # negative space exactly outside the mask, values in [-c, 1]
    assert np.all(lvl0[~expected_mask] == -0.5)
    assert np.all(lvl0[expected_mask] > 0) and lvl0.max() == pytest.approx(1.0)


def test_pyramid_smoothing_from_nonnegative_levels():
    data = _blob_map()
    c = 0.3
    pyr = build_pyramid(data, [0, 0, 0], 1.0, threshold=0.5, n_levels=5, negative=c)
    lv = pyr.levels.numpy()
    assert np.all(lv >= -c) and np.all(lv <= 1.0)
    # Each level is exactly -c or positive.
    assert np.all((lv == np.float32(-c)) | (lv > 0))
    # Reference: smooth the non-negative map, 5-voxel kernel (truncate 2 sigma).
    pos = np.where(lv[..., 0] > 0, lv[..., 0], 0.0).astype(np.float32)
    for k in range(1, 5):
        pos = ndimage.gaussian_filter(pos, 1.0, mode="constant", truncate=2.0)
        np.testing.assert_allclose(lv[..., k], np.where(pos > 0, pos, -c), rtol=1e-5, atol=1e-7)
    maxima = lv.reshape(-1, 5).max(0)
    footprint = (lv > 0).reshape(-1, 5).sum(0)
    assert np.all(np.diff(maxima) < 0), maxima  # smoothing lowers the peak
    assert np.all(np.diff(footprint) > 0), footprint  # and widens the footprint
    # Each level reaches exactly 2 voxels (the kernel radius) beyond the previous one.
    assert lv[7, 9, 8 - 2, 1] > 0 and lv[7, 9, 8 - 3, 1] == np.float32(-c)


def test_pyramid_anisotropic_sigma_axis_order():
    data = np.zeros((9, 9, 9), np.float32)
    data[4, 4, 4] = 1.0
    # sigma given as (x, y, z): only x (the last array axis) is blurred
    pyr = build_pyramid(data, [0, 0, 0], 1.0, 0.5, n_levels=2, sigma=(1.0, 0.01, 0.01), dust_min_size=1)
    lv1 = pyr.levels[..., 1].numpy()
    assert lv1[4, 4, 2] > 0 and lv1[4, 4, 6] > 0  # spreads along x
    assert lv1[4, 3, 4] < 0 and lv1[3, 4, 4] < 0  # not along y or z


def test_pyramid_robust_normaliser_resists_hot_voxel():
    data = _blob_map()
    data[7, 8, 10] = 1000.0  # one hot voxel inside the blob
    pyr = build_pyramid(data, [0, 0, 0], 1.0, threshold=0.5, robust_percentile=99.0)
    assert pyr.scale < 2.0
    lvl0 = pyr.levels[..., 0].numpy()
    assert lvl0[7, 8, 10] == 1.0  # clipped
    assert np.median(lvl0[pyr.mask]) > 0.6  # the rest is not squashed towards 0
    plain = build_pyramid(data, [0, 0, 0], 1.0, threshold=0.5, robust_percentile=100.0)
    assert plain.scale == 1000.0


def test_pyramid_padding():
    data = _blob_map()
    origin, vox = np.array([10.0, -5.0, 3.0]), np.array([1.0, 1.5, 2.0])
    pyr0 = build_pyramid(data, origin, vox, threshold=0.5, n_levels=3)
    pyr = build_pyramid(data, origin, vox, threshold=0.5, n_levels=3, pad=3)
    assert pyr.levels.shape == (26, 30, 34, 3) and pyr.mask.shape == (26, 30, 34)
    np.testing.assert_allclose(pyr.origin, origin - 3 * vox)
    # Same world point, same values: the padded grid is the old one shifted by 3 voxels.
    torch.testing.assert_close(pyr.levels[3:-3, 3:-3, 3:-3], pyr0.levels)
    assert np.array_equal(pyr.mask[3:-3, 3:-3, 3:-3], pyr0.mask) and pyr.mask.sum() == pyr0.mask.sum()
    assert torch.all(pyr.levels[:3, ..., 0] == -0.5)


def test_pyramid_errors():
    data = _blob_map()
    with pytest.raises(DifffitInputError, match=r"threshold 5 is at or above the map's maximum 3"):
        build_pyramid(data, [0, 0, 0], 1.0, threshold=5.0)
    with pytest.raises(DifffitInputError, match="after dust removal.*largest.*336 voxels"):
        build_pyramid(data, [0, 0, 0], 1.0, threshold=0.5, dust_min_size=400)
    with pytest.raises(DifffitInputError, match="voxel_size must be positive"):
        build_pyramid(data, [0, 0, 0], [1.0, 0.0, 1.0], threshold=0.5)
    with pytest.raises(DifffitInputError, match="data must be a 3D array"):
        build_pyramid(data[0], [0, 0, 0], 1.0, threshold=0.5)
    bad = data.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(DifffitInputError, match="non-finite"):
        build_pyramid(bad, [0, 0, 0], 1.0, threshold=0.5)
    with pytest.raises(DifffitInputError, match="n_levels"):
        build_pyramid(data, [0, 0, 0], 1.0, threshold=0.5, n_levels=0)


def test_pyramid_demo_map(shared_data):
    data, origin, vox = _read_map(data_file(shared_data, DEMO))
    pyr = build_pyramid(data, origin, vox, DEMO_CONTOUR, n_levels=5)
    assert pyr.levels.shape == data.shape + (5,)
    lvl0 = pyr.levels[..., 0].numpy()
    assert lvl0.min() == -0.5 and lvl0.max() == 1.0
    assert np.array_equal(lvl0 > 0, pyr.mask) and pyr.mask.sum() == 5206
    assert np.all(lvl0[~pyr.mask] == -0.5)
    maxima = pyr.levels.reshape(-1, 5).max(0).values
    assert torch.all(maxima[1:] < maxima[:-1])


# ---------------------------------------------------------------- default level


def test_default_threshold_on_demo_map(shared_data):
    data, _, _ = _read_map(data_file(shared_data, DEMO))
    t = default_threshold(data)
    assert t == pytest.approx(float(data.mean(dtype=np.float64) + data.std(dtype=np.float64)))
    # Close to the usual contour (0.886): 0.73, enclosing a similar volume.
    assert 0.6 < t < 1.0
    ratio = (data > t).sum() / (data > DEMO_CONTOUR).sum()
    assert 1.0 <= ratio < 1.3


@pytest.mark.parametrize(
    "map_rel, model_rel, min_inside",
    [
        # measured fractions of atoms inside the kept mask: 0.89, 0.98, 0.88
        ("hemoglobin_emd3488_5ni1/emd_3488.mrc", "hemoglobin_emd3488_5ni1/5ni1_updated.cif", 0.85),
        ("apoferritin_emd20026_3ajo/emd20026_prot.mrc", "apoferritin_emd20026_3ajo/3ajo_fitted_refined.pdb", 0.95),
        ("daq_emd2566_3j6b/2566_3J6B_9.mrc", "daq_emd2566_3j6b/3J6B_9.pdb", 0.85),
    ],
)
def test_default_threshold_keeps_deposited_model_inside(shared_data, map_rel, model_rel,
                                                        min_inside):
    data, origin, vox = _read_map(data_file(shared_data, map_rel))
    pyr = build_pyramid(data, origin, vox)  # default threshold, dust removal on
    assert pyr.threshold == pytest.approx(default_threshold(data))
    atoms = _atoms(data_file(shared_data, model_rel))
    idx = _world_to_index(atoms, pyr)
    inside_box = np.all((idx >= 0) & (idx < np.array(pyr.mask.shape)), axis=1)
    inside = pyr.mask[tuple(idx[inside_box].T)].sum() / len(atoms)
    assert inside >= min_inside
    # ... while the footprint stays a small part of the box
    assert pyr.mask.mean() < 0.1


def test_default_threshold_rejects_bad_input():
    with pytest.raises(DifffitInputError, match="non-finite"):
        default_threshold(np.full((2, 2, 2), np.inf))


# ---------------------------------------------------------------- start positions


def test_envelope_positions_inside_mask_and_seeded(shared_data):
    data, origin, vox = _read_map(data_file(shared_data, HEMO))
    pyr = build_pyramid(data, origin, vox, pad=2)
    pos = envelope_positions(pyr, 500, seed=7)
    assert pos.shape == (500, 3) and pos.dtype == torch.float64
    idx_f = (pos.numpy() - pyr.origin) / pyr.voxel_size
    np.testing.assert_allclose(idx_f, np.rint(idx_f), atol=1e-9)  # voxel centres
    idx = _world_to_index(pos.numpy(), pyr)
    assert pyr.mask[tuple(idx.T)].all()
    assert len({tuple(i) for i in idx}) == 500  # without replacement
    assert torch.equal(pos, envelope_positions(pyr, 500, seed=7))
    assert not torch.equal(pos, envelope_positions(pyr, 500, seed=8))


def test_envelope_positions_more_than_mask_voxels():
    data = np.zeros((6, 6, 6), np.float32)
    data[2:4, 2:4, 2:4] = 1.0  # 8 voxels
    pyr = build_pyramid(data, [1.0, 2.0, 3.0], 0.5, 0.5, dust_min_size=1)
    pos = envelope_positions(pyr, 20, seed=0)
    idx = _world_to_index(pos.numpy(), pyr)
    assert pyr.mask[tuple(idx.T)].all()
    # Every voxel used 2 or 3 times (20 = 2 * 8 + 4): as spread out as possible.
    _, counts = np.unique(idx, axis=0, return_counts=True)
    assert len(counts) == 8 and set(counts.tolist()) <= {2, 3}
    assert envelope_positions(pyr, 0, seed=0).shape == (0, 3)
    with pytest.raises(DifffitInputError, match="n must be"):
        envelope_positions(pyr, -1, seed=0)
