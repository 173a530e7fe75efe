"""Tests for difffit.io on the real maps and models of the test data (see conftest.py).

The map-model agreement checks are what prove the frame handling (ORIGIN, NSTART,
voxel-size override): an in-frame model sits on high density only if the map's origin
and voxel size were read correctly.
"""
from __future__ import annotations

import gzip
import itertools
import shutil
from pathlib import Path

import gemmi
import mrcfile
import numpy as np
import pytest
from scipy.ndimage import map_coordinates
from scipy.spatial.transform import Rotation

from difffit.errors import DifffitInputError
from difffit.io import (
    SELECTIONS,
    DensityMap,
    Structure,
    read_map,
    read_structure,
    split_chains,
    write_map,
    write_structure,
)

from conftest import data_file

SPIKE = "spike_ntd_emd21457_6vyb"
DAQ_MAP = "daq_emd2566_3j6b/2566_3J6B_9.mrc"
DAQ_PDB = "daq_emd2566_3j6b/3J6B_9.pdb"
HB_MAP = "hemoglobin_emd3488_5ni1/emd_3488.mrc"
HB_CIF = "hemoglobin_emd3488_5ni1/5ni1_updated.cif"
APO_PDB = "apoferritin_emd20026_3ajo/3ajo_fitted_refined.pdb"


def sigma_at_atoms(dmap: DensityMap, xyz: np.ndarray) -> tuple[float, float]:
    """Mean trilinear map value at ``xyz`` [N, 3] in map sigmas, and the fraction of
    atoms above mean + 1 sigma. Outside the box the border value is used (clamped)."""
    ijk = dmap.world_to_index(xyz)  # [N, 3] x, y, z order
    vals = map_coordinates(dmap.data, ijk[:, ::-1].T, order=1, mode="nearest")
    mu, sd = float(dmap.data.mean()), float(dmap.data.std())
    return (float(vals.mean()) - mu) / sd, float(np.mean(vals > mu + sd))


# ----------------------------------------------------------------------------------------
# Map-model agreement on every data set (README table)
# ----------------------------------------------------------------------------------------

# (map, model, voxel_size override, minimum sigma); all kept atoms (no H, waters, ligands).
RIGHT_PAIRS = [
    (DAQ_MAP, DAQ_PDB, None, 1.5),  # 2.95 without H (README's 2.1 counts the hydrogens)
    ("apoferritin_emd20026_3ajo/emd20026_prot.mrc", APO_PDB, None, 5.0),  # 6.7
    (HB_MAP, HB_CIF, None, 4.0),  # 4.7
    (f"{SPIKE}/emd_21457_seg.mrc", f"{SPIKE}/6vyb_Ndom.pdb", None, 1.0),  # 1.38
    (f"{SPIKE}/emd_21457_seg_nstart.mrc", f"{SPIKE}/6vyb_Ndom.pdb", None, 1.0),
    (f"{SPIKE}/emd_21457_seg_orig0.mrc", f"{SPIKE}/6vyb_Ndom_shifted.pdb", None, 1.0),
    ("phage_emd4054_5lij/emd_4054.mrc", "phage_emd4054_5lij/5lij.pdb", 1.38, 7.0),  # 8.3
    ("phage_emd4054_5lij/emd_4054.mrc", "phage_emd4054_5lij/5lij.pdb", (1.38,) * 3, 7.0),
    ("tempy_factin_emd5168/emd_5168.map", "tempy_factin_emd5168/3MFP.pdb", None, 1.5),
    ("tempy_factin_emd5168/emd_5168.map", "tempy_factin_emd5168/1J6Z.pdb", None, 1.5),
    ("tempy_factin_emd5168/emd_5170.map", "tempy_factin_emd5168/3MFP.pdb", None, 2.0),
    ("tempy_factin_emd5168/emd_5170.map", "tempy_factin_emd5168/1J6Z.pdb", None, 2.0),
    # The monomer cut-out is 92 % zeros, so its sigma is large: about 1.2-1.4 here.
    ("tempy_factin_emd5168/emd_5168_monomer.mrc", "tempy_factin_emd5168/3MFP.pdb", None, 1.0),
    ("tempy_factin_emd5168/emd_5168_monomer.mrc", "tempy_factin_emd5168/1J6Z.pdb", None, 1.0),
]

# Wrong frame (or voxel size): the model must not sit on density.
WRONG_PAIRS = [
    (f"{SPIKE}/emd_21457_seg_orig0.mrc", f"{SPIKE}/6vyb_Ndom.pdb", None),
    (f"{SPIKE}/emd_21457_seg.mrc", f"{SPIKE}/6vyb_Ndom_shifted.pdb", None),
    (f"{SPIKE}/emd_21457_seg_nstart.mrc", f"{SPIKE}/6vyb_Ndom_shifted.pdb", None),
    ("phage_emd4054_5lij/emd_4054.mrc", "phage_emd4054_5lij/5lij.pdb", None),  # header 1.0 A
    (HB_MAP, "hemoglobin_emd3488_5ni1/modelangelo_5ni1.cif", None),  # not in frame
]


@pytest.mark.parametrize("map_rel,model_rel,voxel,min_sigma", RIGHT_PAIRS)
def test_model_sits_on_density(shared_data, map_rel, model_rel, voxel, min_sigma):
    dmap = read_map(data_file(shared_data, map_rel), voxel_size=voxel)
    model = data_file(shared_data, model_rel)
    st = read_structure(model, selection="all")
    sigma, frac = sigma_at_atoms(dmap, st.coords)
    assert sigma > min_sigma, (map_rel, model_rel, sigma)
    assert frac > 0.4, (map_rel, model_rel, frac)
    # The backbone selection sits on density too.
    assert sigma_at_atoms(dmap, read_structure(model).fit_coords)[0] > min_sigma


@pytest.mark.parametrize("map_rel,model_rel,voxel", WRONG_PAIRS)
def test_wrong_pairing_gives_no_density(shared_data, map_rel, model_rel, voxel):
    dmap = read_map(data_file(shared_data, map_rel), voxel_size=voxel)
    st = read_structure(data_file(shared_data, model_rel), selection="all")
    sigma, frac = sigma_at_atoms(dmap, st.coords)
    # Wrong pairings may read negative (clamped border voxels), but never high density.
    assert sigma < 0.5, (map_rel, model_rel, sigma)
    assert frac < 0.2, (map_rel, model_rel, frac)


def test_phage_voxel_override(shared_data):
    path = data_file(shared_data, "phage_emd4054_5lij/emd_4054.mrc")
    header = read_map(path)
    fixed = read_map(path, voxel_size=1.38)
    np.testing.assert_allclose(header.voxel_size, 1.0)
    np.testing.assert_allclose(fixed.voxel_size, 1.38)
    np.testing.assert_array_equal(header.data, fixed.data)
    st = read_structure(data_file(shared_data, "phage_emd4054_5lij/5lij.pdb"), selection="all")
    assert sigma_at_atoms(fixed, st.coords)[0] > 8.0
    assert sigma_at_atoms(header, st.coords)[0] < 1.0


def test_hemoglobin_per_chain(shared_data):
    dmap = read_map(data_file(shared_data, HB_MAP))
    parts = split_chains(read_structure(data_file(shared_data, HB_CIF), selection="all"))
    for part in parts:
        assert sigma_at_atoms(dmap, part.coords)[0] > 4.0, part.name


def test_domain_demo_density_position(shared_data):
    # No placed model here; the density above the usual contour must lie around the
    # expected PACRG centroid (367.5, 231.6, 385.8), which needs the ORIGIN field.
    dmap = read_map(data_file(shared_data, "difffit_domain_demo/density2.mrc"))
    np.testing.assert_allclose(dmap.origin, (342.52, 206.88, 350.74), atol=0.01)
    ijk = np.argwhere(dmap.data > 0.886)[:, ::-1]  # [M, 3] x, y, z
    centre = dmap.index_to_world(ijk).mean(axis=0)
    assert np.linalg.norm(centre - np.array([367.5, 231.6, 385.8])) < 4.0


# ----------------------------------------------------------------------------------------
# Map header conventions
# ----------------------------------------------------------------------------------------


def test_spike_three_header_conventions(shared_data):
    seg = read_map(data_file(shared_data, f"{SPIKE}/emd_21457_seg.mrc"))
    nstart = read_map(data_file(shared_data, f"{SPIKE}/emd_21457_seg_nstart.mrc"))
    orig0 = read_map(data_file(shared_data, f"{SPIKE}/emd_21457_seg_orig0.mrc"))
    for m in (seg, nstart, orig0):
        assert m.data.shape == (47, 40, 48)
        assert m.shape_xyz == (48, 40, 47)
        assert m.data.dtype == np.float32 and m.data.flags.c_contiguous
        np.testing.assert_allclose(m.voxel_size, 1.05, atol=1e-6)
    np.testing.assert_array_equal(seg.data, nstart.data)
    np.testing.assert_array_equal(seg.data, orig0.data)
    np.testing.assert_allclose(seg.origin, (162.75, 231.0, 204.75), atol=1e-3)
    np.testing.assert_allclose(nstart.origin, np.array([155, 220, 195]) * 1.05, atol=1e-3)
    np.testing.assert_allclose(orig0.origin, 0.0)


def test_factin_nstart_origin(shared_data):
    m = read_map(data_file(shared_data, "tempy_factin_emd5168/emd_5168.map"))
    np.testing.assert_allclose(m.origin, -50 * 1.742, atol=1e-4)
    m = read_map(data_file(shared_data, "tempy_factin_emd5168/emd_5170.map"))
    np.testing.assert_allclose(m.origin, -49 * 2.38, atol=1e-4)
    # The override recomputes an NSTART origin with the new voxel size ...
    m = read_map(data_file(shared_data, "tempy_factin_emd5168/emd_5168.map"), voxel_size=2.0)
    np.testing.assert_allclose(m.origin, -100.0, atol=1e-6)
    # ... but keeps an explicit ORIGIN field.
    m = read_map(data_file(shared_data, DAQ_MAP), voxel_size=(1.0, 1.1, 1.2))
    np.testing.assert_allclose(m.origin, (356.44, 155.44, 159.46), atol=1e-3)
    np.testing.assert_allclose(m.voxel_size, (1.0, 1.1, 1.2))


def _write_permuted(path: Path, data_zyx, voxel_xyz, nstart_xyz, mapcrs) -> None:
    """Write a map whose file axis order is MAPC/MAPR/MAPS = ``mapcrs``.

    The file array is [section, row, column]; column runs along world axis mapc, etc.
    In data_zyx, world axis a (1=x, 2=y, 3=z) is array dim 3 - a.
    """
    mapc, mapr, maps = mapcrs
    file_data = np.ascontiguousarray(data_zyx.transpose(3 - maps, 3 - mapr, 3 - mapc))
    nz, ny, nx = data_zyx.shape
    with mrcfile.new(str(path), overwrite=True) as mrc:
        mrc.set_data(file_data)
        h = mrc.header
        h.mapc, h.mapr, h.maps = mapc, mapr, maps
        # NSTART is per column/row/section, MX/MY/MZ and the cell per world x/y/z.
        h.nxstart = nstart_xyz[mapc - 1]
        h.nystart = nstart_xyz[mapr - 1]
        h.nzstart = nstart_xyz[maps - 1]
        h.mx, h.my, h.mz = nx, ny, nz
        h.cella = tuple(float(v) for v in np.array([nx, ny, nz]) * np.array(voxel_xyz))
        h.origin = (0.0, 0.0, 0.0)


@pytest.mark.parametrize("mapcrs", list(itertools.permutations((1, 2, 3))))
def test_axis_order_mapc_mapr_maps(shared_data, tmp_path, mapcrs):
    ref = read_map(data_file(shared_data, DAQ_MAP))  # 35 x 52 x 47: every axis length differs
    voxel = (1.0, 1.5, 2.0)  # anisotropic, to catch a voxel size read on the wrong axis
    nstart = (5, -7, 11)
    path = tmp_path / f"perm_{''.join(map(str, mapcrs))}.mrc"
    _write_permuted(path, ref.data, voxel, nstart, mapcrs)
    got = read_map(path)
    assert got.data.shape == ref.data.shape
    np.testing.assert_array_equal(got.data, ref.data)
    np.testing.assert_allclose(got.voxel_size, voxel, rtol=1e-6)
    np.testing.assert_allclose(got.origin, np.array(nstart) * voxel, atol=1e-5)


def test_index_world_roundtrip(shared_data):
    m = read_map(data_file(shared_data, DAQ_MAP))
    ijk = np.array([[0, 0, 0], [34, 51, 46], [1.5, 2.25, 3.0]])
    xyz = m.index_to_world(ijk)
    np.testing.assert_allclose(xyz[0], m.origin)
    np.testing.assert_allclose(xyz[1], m.world_max)
    np.testing.assert_allclose(m.world_to_index(xyz), ijk, atol=1e-9)
    doubled = m.copy_with(m.data * 2)
    np.testing.assert_array_equal(doubled.origin, m.origin)
    np.testing.assert_array_equal(doubled.data, m.data * 2)
    with pytest.raises(DifffitInputError):
        m.copy_with(m.data[:-1])


# ----------------------------------------------------------------------------------------
# Compression
# ----------------------------------------------------------------------------------------


def _gzip_copy(src: Path, dst: Path) -> Path:
    with open(src, "rb") as fin, gzip.open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    return dst


def _plain(src: Path, folder: Path) -> Path:
    """``src`` itself, or an uncompressed copy in ``folder`` when the test data is gzipped."""
    if src.suffix != ".gz":
        return src
    dst = folder / src.stem
    with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    return dst


def test_gzipped_map(shared_data, tmp_path):
    src = _plain(data_file(shared_data, f"{SPIKE}/emd_21457_seg.mrc"), tmp_path)
    gz = _gzip_copy(src, tmp_path / "seg.mrc.gz")
    a, b = read_map(src), read_map(gz)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.origin, b.origin)
    np.testing.assert_array_equal(a.voxel_size, b.voxel_size)


@pytest.mark.parametrize("rel", [DAQ_PDB, HB_CIF])
def test_gzipped_structure(shared_data, tmp_path, rel):
    src = _plain(data_file(shared_data, rel), tmp_path)
    gz = _gzip_copy(src, tmp_path / (src.name + ".gz"))
    a, b = read_structure(src), read_structure(gz)
    assert b.name == src.stem
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_array_equal(a.fit_mask, b.fit_mask)
    np.testing.assert_array_equal(a.chain_ids, b.chain_ids)


# ----------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------


def _expect_input_error(func, path, *args, match=None, **kwargs) -> str:
    with pytest.raises(DifffitInputError) as info:
        func(path, *args, **kwargs)
    msg = str(info.value)
    assert Path(path).name in msg, msg
    if match is not None:
        assert match in msg.lower(), msg
    return msg


def _small_map(path: Path, data=None, cellb=(90.0, 90.0, 90.0), voxel=1.0) -> Path:
    if data is None:
        data = np.random.default_rng(0).normal(size=(6, 7, 8)).astype(np.float32)
    with mrcfile.new(str(path), overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = voxel
        mrc.header.cellb = cellb
    return path


def test_error_missing_file(tmp_path):
    _expect_input_error(read_map, tmp_path / "nope.mrc", match="does not exist")
    _expect_input_error(read_structure, tmp_path / "nope.pdb", match="does not exist")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # mrcfile warns when writing NaN
def test_error_nan_and_inf(tmp_path):
    for bad in (np.nan, np.inf):
        data = np.ones((6, 7, 8), dtype=np.float32)
        data[2, 3, 4] = bad
        _expect_input_error(read_map, _small_map(tmp_path / f"bad_{bad}.mrc", data), match="nan")


def test_error_truncated_map(shared_data, tmp_path):
    plain = _plain(data_file(shared_data, DAQ_MAP), tmp_path)
    raw = plain.read_bytes()
    cut = tmp_path / "half.mrc"
    cut.write_bytes(raw[: len(raw) // 2])
    _expect_input_error(read_map, cut)
    head_only = tmp_path / "short_header.mrc"
    head_only.write_bytes(raw[:500])
    _expect_input_error(read_map, head_only)
    # A truncated gzip stream as well.
    gz = _gzip_copy(plain, tmp_path / "full.mrc.gz")
    cut_gz = tmp_path / "half.mrc.gz"
    cut_gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    _expect_input_error(read_map, cut_gz)


def test_error_empty_and_text_map(tmp_path):
    empty = tmp_path / "empty.mrc"
    empty.write_bytes(b"")
    _expect_input_error(read_map, empty, match="empty")
    text = tmp_path / "notes.mrc"
    text.write_text("this is not a map\n" * 200)
    _expect_input_error(read_map, text, match="mrc")


def test_error_structure_given_as_map(shared_data):
    _expect_input_error(read_map, data_file(shared_data, DAQ_PDB))


def test_error_non_orthogonal_cell(tmp_path):
    path = _small_map(tmp_path / "mono.mrc", cellb=(90.0, 100.0, 90.0))
    _expect_input_error(read_map, path, match="orthogonal")


def test_error_zero_voxel_size_and_override(tmp_path):
    path = _small_map(tmp_path / "novox.mrc", voxel=0.0)
    _expect_input_error(read_map, path, match="voxel size")
    m = read_map(path, voxel_size=2.0)  # the override rescues a bad header
    np.testing.assert_allclose(m.voxel_size, 2.0)
    _expect_input_error(read_map, _small_map(tmp_path / "ok.mrc"), voxel_size=-1.0)
    _expect_input_error(read_map, tmp_path / "ok.mrc", voxel_size=(1.0, 2.0))


def test_error_not_a_volume(tmp_path):
    # A single image (nz == 1) and a 2D image are not volumes.
    one = _small_map(tmp_path / "one.mrc", np.ones((1, 7, 8), dtype=np.float32))
    _expect_input_error(read_map, one, match="volume")
    with mrcfile.new(str(tmp_path / "img.mrc")) as mrc:
        mrc.set_data(np.ones((7, 8), dtype=np.float32))
    _expect_input_error(read_map, tmp_path / "img.mrc", match="volume")
    with mrcfile.new(str(tmp_path / "complex.mrc")) as mrc:
        mrc.set_data(np.ones((4, 5, 6), dtype=np.complex64))
    _expect_input_error(read_map, tmp_path / "complex.mrc", match="mode")


def test_integer_modes_become_float32(tmp_path):
    data = np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8)
    m = read_map(_small_map(tmp_path / "int16.mrc", data))
    assert m.data.dtype == np.float32
    np.testing.assert_array_equal(m.data, data.astype(np.float32))


def test_error_structure_inputs(shared_data, tmp_path):
    hb_cif = data_file(shared_data, HB_CIF)
    msg = _expect_input_error(read_structure, hb_cif, chains=["Z"])
    assert "Z" in msg and "'A'" in msg  # lists the available chains
    _expect_input_error(read_structure, hb_cif, selection="sidechain")
    _expect_input_error(read_structure, hb_cif, model_index=3, match="model")
    waters = tmp_path / "waters.pdb"
    waters.write_text(
        "HETATM    1  O   HOH W   1      10.000  10.000  10.000  1.00 20.00           O\n"
        "HETATM    2  O   HOH W   2      12.000  10.000  10.000  1.00 20.00           O\n"
        "END\n"
    )
    _expect_input_error(read_structure, waters, keep_waters=False, match="no atoms left")
    # With waters kept (the default) the atoms are there, but no backbone: an empty selection.
    _expect_input_error(read_structure, waters, match="selection")
    _expect_input_error(read_structure, waters, keep_waters=True, match="selection")
    assert read_structure(waters, selection="all", keep_waters=True).n_atoms == 2
    garbage = tmp_path / "garbage.cif"
    garbage.write_text("data_x\nloop_\n_foo.bar\n'unterminated\n")
    _expect_input_error(read_structure, garbage)
    text = tmp_path / "notes.pdb"
    text.write_text("hello, this is not a model\n")
    _expect_input_error(read_structure, text, match="no atoms")
    empty = tmp_path / "empty.pdb"
    empty.write_text("")
    _expect_input_error(read_structure, empty)
    _expect_input_error(read_structure, data_file(shared_data, DAQ_MAP))  # a map given as model


# ----------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["out.mrc", "out.map", "out.mrc.gz"])
def test_write_map_roundtrip(shared_data, tmp_path, name):
    src = read_map(data_file(shared_data, f"{SPIKE}/emd_21457_seg_nstart.mrc"))  # NSTART origin
    out = tmp_path / name
    write_map(out, src)
    back = read_map(out)
    np.testing.assert_array_equal(back.data, src.data)
    np.testing.assert_allclose(back.origin, src.origin, atol=1e-4)
    np.testing.assert_allclose(back.voxel_size, src.voxel_size, rtol=1e-6)
    with mrcfile.open(str(out)) as mrc:
        h = mrc.header
        assert (int(h.mapc), int(h.mapr), int(h.maps)) == (1, 2, 3)
        assert (int(h.nxstart), int(h.nystart), int(h.nzstart)) == (0, 0, 0)
        assert h.mode == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temp file left


def test_write_map_anisotropic(tmp_path):
    data = np.random.default_rng(1).normal(size=(5, 6, 7)).astype(np.float32)
    m = DensityMap(data, origin=(-3.5, 10.25, 7.0), voxel_size=(0.8, 1.2, 1.7))
    write_map(tmp_path / "a.mrc", m)
    back = read_map(tmp_path / "a.mrc")
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_allclose(back.voxel_size, (0.8, 1.2, 1.7), rtol=1e-6)
    np.testing.assert_allclose(back.origin, (-3.5, 10.25, 7.0), atol=1e-5)


def test_write_map_refuses_overwrite(shared_data, tmp_path):
    m = read_map(data_file(shared_data, DAQ_MAP))
    out = tmp_path / "m.mrc"
    write_map(out, m)
    before = out.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        write_map(out, m.copy_with(m.data + 1))
    assert out.read_bytes() == before
    write_map(out, m.copy_with(m.data + 1), overwrite=True)
    np.testing.assert_allclose(read_map(out).data, m.data + 1)


def _random_rt(seed: int) -> tuple[np.ndarray, np.ndarray]:
    R = Rotation.random(random_state=seed).as_matrix()
    t = np.random.default_rng(seed).uniform(-50, 50, size=3)
    return R, t


@pytest.mark.parametrize("name", ["moved.cif", "moved.pdb", "moved.cif.gz", "moved.pdb.gz"])
def test_write_structure_roundtrip(shared_data, tmp_path, name):
    st = read_structure(data_file(shared_data, HB_CIF), selection="all", keep_ligands=True)
    R, t = _random_rt(7)
    out = tmp_path / name
    write_structure(out, st, rotation=R, translation=t)
    back = read_structure(out, selection="all", keep_ligands=True)
    assert back.n_atoms == st.n_atoms
    # PDB keeps 3 decimals, mmCIF as gemmi writes it at least as many.
    np.testing.assert_allclose(back.coords, st.coords @ R.T + t, atol=1.5e-3)
    np.testing.assert_array_equal(back.chain_ids, st.chain_ids)
    np.testing.assert_array_equal(back.atomic_numbers, st.atomic_numbers)
    orig_res = [(r.name, r.seqid.num) for ch in st.gemmi_structure[0] for r in ch]
    back_res = [(r.name, r.seqid.num) for ch in back.gemmi_structure[0] for r in ch]
    assert orig_res == back_res
    if ".cif" in name:
        doc = gemmi.cif.read(str(out))  # a valid mmCIF document
        assert doc.sole_block().find_values("_atom_site.Cartn_x")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temp file left


def test_write_structure_identity_and_overwrite(shared_data, tmp_path):
    st = read_structure(data_file(shared_data, DAQ_PDB))
    out = tmp_path / "same.pdb"
    write_structure(out, st)
    np.testing.assert_allclose(read_structure(out).coords, st.coords, atol=1e-3)
    assert read_structure(out).chains == ["9"]
    with pytest.raises(FileExistsError, match="overwrite"):
        write_structure(out, st)
    R, t = _random_rt(3)
    write_structure(out, st, R, t, overwrite=True)
    np.testing.assert_allclose(read_structure(out).coords, st.coords @ R.T + t, atol=1e-3)


def test_write_pdb_long_chain_names(shared_data, tmp_path):
    st = read_structure(data_file(shared_data, "hemoglobin_emd3488_5ni1/modelangelo_5ni1.cif"))
    st.gemmi_structure[0][0].name = "LONGNAME"  # cannot be written as PDB
    _expect_input_error(write_structure, tmp_path / "long.pdb", st, match="pdb")
    write_structure(tmp_path / "long.cif", st)  # fine as mmCIF


def test_transformed(shared_data):
    st = read_structure(data_file(shared_data, DAQ_PDB))
    R, t = _random_rt(11)
    moved = st.transformed(R, t)
    np.testing.assert_allclose(moved.coords, st.coords @ R.T + t)
    gem = np.array([a.pos.tolist() for ch in moved.gemmi_structure[0] for r in ch for a in r])
    np.testing.assert_allclose(gem, moved.coords, atol=1e-9)
    # The original is untouched, the centroid moves as a point.
    orig = np.array([a.pos.tolist() for ch in st.gemmi_structure[0] for r in ch for a in r])
    np.testing.assert_allclose(orig, st.coords)
    np.testing.assert_allclose(moved.centroid, R @ st.centroid + t, atol=1e-9)


# ----------------------------------------------------------------------------------------
# Selections and filters
# ----------------------------------------------------------------------------------------


def test_selection_counts_3j6b(shared_data):
    pdb = data_file(shared_data, DAQ_PDB)
    bb = read_structure(pdb)
    n_res = sum(len(ch) for ch in bb.gemmi_structure[0])
    assert n_res == 195
    assert bb.n_fit_atoms == 4 * n_res  # complete backbone
    ca = read_structure(pdb, selection="ca")
    assert ca.n_fit_atoms == n_res
    heavy = read_structure(pdb, selection="heavy", keep_hydrogens=False)
    assert heavy.n_fit_atoms == heavy.n_atoms == 1428  # hydrogens removed on request
    with_h = read_structure(pdb, selection="heavy")  # kept by default
    assert with_h.n_atoms == 1428 + 1437
    assert with_h.n_fit_atoms == 1428
    assert read_structure(pdb, "all").n_fit_atoms == 2865
    # Selections differ only in the mask, never in the kept atoms.
    for sel in SELECTIONS:
        np.testing.assert_array_equal(read_structure(pdb, sel).coords, bb.coords)
    np.testing.assert_allclose(bb.centroid, bb.coords[bb.fit_mask].mean(axis=0))


def test_hemoglobin_chains(shared_data):
    st = read_structure(data_file(shared_data, HB_CIF))
    assert st.chains == ["A", "B", "C", "D"]
    parts = split_chains(st)
    assert [p.name for p in parts] == [f"5ni1_updated_{c}" for c in "ABCD"]
    assert sum(p.n_atoms for p in parts) == st.n_atoms
    for part, chain in zip(parts, "ABCD"):
        assert set(part.chain_ids) == {chain}
        assert [ch.name for ch in part.gemmi_structure[0]] == [chain]
        np.testing.assert_array_equal(part.coords, st.coords[st.chain_ids == chain])
    # HEM and HOH are kept by default; both go on request.
    names = {r.name for ch in st.gemmi_structure[0] for r in ch}
    assert {"HEM", "HOH"} <= names
    bare = read_structure(data_file(shared_data, HB_CIF), keep_waters=False, keep_ligands=False)
    names = {r.name for ch in bare.gemmi_structure[0] for r in ch}
    assert "HEM" not in names and "HOH" not in names
    assert bare.n_fit_atoms == st.n_fit_atoms  # neither is in the backbone
    sub = read_structure(data_file(shared_data, HB_CIF), chains=["B", "D"])
    assert sub.chains == ["B", "D"]


def test_apoferritin_waters_and_ions(shared_data):
    st = read_structure(data_file(shared_data, APO_PDB), selection="all", keep_waters=False,
                        keep_ligands=False)
    names = {r.name for ch in st.gemmi_structure[0] for r in ch}
    assert "HOH" not in names and "MG" not in names
    assert 12 not in st.atomic_numbers  # magnesium
    full = read_structure(data_file(shared_data, APO_PDB), selection="all")  # all kept
    names = {r.name for ch in full.gemmi_structure[0] for r in ch}
    assert {"HOH", "MG"} <= names
    assert full.n_atoms == st.n_atoms + 229 + 12  # 229 waters, 12 Mg
    bb = read_structure(data_file(shared_data, APO_PDB))
    assert bb.n_fit_atoms == read_structure(data_file(shared_data, APO_PDB), keep_waters=False,
                                            keep_ligands=False).n_fit_atoms


def test_stray_ter_keeps_polymer(shared_data):
    # 1J6Z.pdb has a TER after residue 72 although the chain goes on to 372; gemmi's
    # entity setup then calls the rest "non-polymer". Residue-level typing keeps it all.
    st = read_structure(data_file(shared_data, "tempy_factin_emd5168/1J6Z.pdb"), selection="ca")
    assert st.n_fit_atoms == 368


def test_spike_glycans_are_ligands(shared_data):
    pdb = data_file(shared_data, f"{SPIKE}/6vyb_Ndom.pdb")
    st = read_structure(pdb, selection="all", keep_ligands=False)
    assert "NAG" not in {r.name for ch in st.gemmi_structure[0] for r in ch}
    kept = read_structure(pdb, selection="all")  # kept by default
    assert kept.n_atoms == st.n_atoms + 42  # 3 NAG x 14 atoms
    # In "heavy" they count, in "backbone" they do not.
    assert read_structure(pdb).n_fit_atoms == read_structure(pdb, keep_ligands=False).n_fit_atoms


SYNTHETIC_PDB = """\
ATOM      1  N   ALA A   1       0.000   0.000   0.000  1.00 10.00           N
ATOM      2  CA  ALA A   1       1.458   0.000   0.000  1.00 10.00           C
ATOM      3  C   ALA A   1       2.009   1.420   0.000  1.00 10.00           C
ATOM      4  O   ALA A   1       1.251   2.390   0.000  1.00 10.00           O
ATOM      5  CB  ALA A   1       1.988  -0.773  -1.199  1.00 10.00           C
ATOM      6  H   ALA A   1      -0.500   0.800   0.000  1.00 10.00           H
ATOM      7  P     U B   1      10.000   0.000   0.000  1.00 10.00           P
ATOM      8  OP1   U B   1      11.000   0.000   0.000  1.00 10.00           O
ATOM      9  C4'   U B   1      10.000   1.500   0.000  1.00 10.00           C
ATOM     10  N1    U B   1      10.000   3.000   0.000  1.00 10.00           N
HETATM   11 CA    CA A 101       5.000   5.000   5.000  1.00 10.00          CA
HETATM   12  O   HOH A 201       7.000   7.000   7.000  1.00 10.00           O
END
"""


def test_backbone_never_takes_water_or_calcium(tmp_path):
    path = tmp_path / "mini.pdb"
    path.write_text(SYNTHETIC_PDB)
    kw = dict(keep_hydrogens=False)
    allatoms = read_structure(path, selection="all", **kw)
    assert allatoms.n_atoms == 11  # the hydrogen is removed on request
    assert sorted(allatoms.atomic_numbers.tolist()) == sorted([7, 6, 6, 8, 6, 15, 8, 6, 7, 20, 8])
    calcium = allatoms.atomic_numbers == 20
    water_o = np.all(np.isclose(allatoms.coords, 7.0), axis=1)
    assert calcium.sum() == 1 and water_o.sum() == 1
    for sel, expected in [("backbone", 4 + 3), ("ca", 1 + 1), ("heavy", 11), ("all", 11)]:
        st = read_structure(path, selection=sel, **kw)
        assert st.n_fit_atoms == expected, sel
        if sel in ("backbone", "ca"):
            assert not st.fit_mask[calcium].any() and not st.fit_mask[water_o].any(), sel
    ca = read_structure(path, selection="ca", **kw)
    np.testing.assert_allclose(ca.fit_coords, [[1.458, 0, 0], [10, 0, 0]])  # CA of ALA, P of U
    # Every atom is kept by default; ion, water and hydrogen go on request.
    assert read_structure(path, selection="all", keep_waters=False, keep_ligands=False,
                          keep_hydrogens=False).n_atoms == 9
    assert read_structure(path, selection="all", keep_waters=False,
                          keep_ligands=False).n_atoms == 10
    assert read_structure(path, selection="all").n_atoms == 12
    parts = split_chains(read_structure(path, **kw))
    assert [p.name for p in parts] == ["mini_A", "mini_B"]
    assert isinstance(parts[0], Structure)
