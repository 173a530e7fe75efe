"""Reading and writing cryo-EM density maps and atomic structures.

Conventions (see docs/method.md section 2):

* World coordinates are x, y, z in Angstrom.
* A map's data array is stored ``[nz, ny, nx]`` (x fastest, C-contiguous float32).
  ``origin`` is the world position of the centre of voxel index (0, 0, 0), and voxel
  centres sit on integer indices, so index ``(i, j, k)`` (x, y, z order) is at
  ``origin + (i, j, k) * voxel_size``.
* The map origin comes from the MRC ORIGIN field when it is non-zero, otherwise from
  NSTART times the voxel size. MAPC/MAPR/MAPS (the axis order of the file) are honoured.

Structure reading keeps one model, the first alternative conformation, and (by default)
neither hydrogens, waters nor ligands. Atom selections ("backbone", "ca") are made by
residue type *and* atom name, so that a water oxygen or a calcium ion named "CA" is never
taken for a backbone atom.
"""
from __future__ import annotations

import gzip
import os
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import gemmi
import mrcfile
import numpy as np

from .errors import DifffitInputError

__all__ = [
    "DensityMap",
    "read_map",
    "write_map",
    "Structure",
    "SELECTIONS",
    "read_structure",
    "split_chains",
    "write_structure",
]


# ----------------------------------------------------------------------------------------
# Small helpers shared by maps and structures
# ----------------------------------------------------------------------------------------


def _refuse_existing(path: Path, overwrite: bool) -> None:
    """Raise FileExistsError when ``path`` exists and overwriting was not asked for."""
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path}: file already exists; pass overwrite=True (or --force on the "
            f"command line) to replace it"
        )


def _umask_mode() -> int:
    """0666 minus the process umask: what a plain open() would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_write_bytes(path: Path, payload: bytes | str) -> None:
    """Write ``payload`` (bytes, or text as UTF-8) to ``path`` via a temporary file in the same folder.

    The final ``os.replace`` is atomic on POSIX, so a reader never sees a half-written
    file and a crash leaves the previous file (if any) intact.
    """
    if isinstance(payload, str):
        payload = payload.encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, _umask_mode())  # mkstemp makes 0600 files; outputs are for sharing
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _is_gz(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def _stem(path: Path) -> str:
    """File name without ``.gz`` and without the format suffix: ``a/x.cif.gz`` -> ``x``."""
    name = path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    return Path(name).stem


# ----------------------------------------------------------------------------------------
# Density maps
# ----------------------------------------------------------------------------------------


@dataclass
class DensityMap:
    """A 3D density map on an orthogonal grid.

    Attributes:
        data: [nz, ny, nx] float32, C-contiguous (x fastest).
        origin: [3] float64, x, y, z Angstrom: world position of voxel index (0, 0, 0).
        voxel_size: [3] float64, x, y, z Angstrom per voxel.
        path: the file the map was read from, if any.
    """

    data: np.ndarray
    origin: np.ndarray
    voxel_size: np.ndarray
    path: str | None = None

    def __post_init__(self) -> None:
        # Normalise types once here so that every consumer (kernels included) can rely on
        # them without re-checking.
        self.data = np.ascontiguousarray(self.data, dtype=np.float32)
        if self.data.ndim != 3:
            raise DifffitInputError(
                f"{self.path or 'DensityMap'}: data must be 3D [nz, ny, nx], "
                f"got shape {self.data.shape}"
            )
        self.origin = np.asarray(self.origin, dtype=np.float64).reshape(3).copy()
        self.voxel_size = np.asarray(self.voxel_size, dtype=np.float64).reshape(3).copy()
        if not np.all(np.isfinite(self.voxel_size)) or np.any(self.voxel_size <= 0):
            raise DifffitInputError(
                f"{self.path or 'DensityMap'}: voxel size must be positive, "
                f"got {self.voxel_size.tolist()}"
            )

    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        """Grid size as (nx, ny, nz)."""
        nz, ny, nx = self.data.shape
        return int(nx), int(ny), int(nz)

    @property
    def world_min(self) -> np.ndarray:
        """[3] world x, y, z of the centre of the first voxel (same as ``origin``)."""
        return self.origin.copy()

    @property
    def world_max(self) -> np.ndarray:
        """[3] world x, y, z of the centre of the last voxel."""
        return self.origin + (np.array(self.shape_xyz, dtype=np.float64) - 1.0) * self.voxel_size

    @property
    def center(self) -> np.ndarray:
        """[3] world x, y, z of the centre of the box."""
        return 0.5 * (self.world_min + self.world_max)

    def index_to_world(self, ijk_xyz: np.ndarray) -> np.ndarray:
        """Convert (fractional) voxel indices to world coordinates.

        Args:
            ijk_xyz: [..., 3] voxel indices in x, y, z order (not the array's z, y, x).

        Returns:
            [..., 3] float64 world coordinates in Angstrom.
        """
        return self.origin + np.asarray(ijk_xyz, dtype=np.float64) * self.voxel_size

    def world_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Convert world coordinates to fractional voxel indices (inverse of index_to_world).

        Args:
            xyz: [..., 3] world coordinates in Angstrom.

        Returns:
            [..., 3] float64 fractional indices in x, y, z order; integer values are voxel
            centres. To index ``data`` reverse the last axis (``data[k, j, i]``).
        """
        return (np.asarray(xyz, dtype=np.float64) - self.origin) / self.voxel_size

    def copy_with(self, data: np.ndarray) -> "DensityMap":
        """A new map in the same frame (origin, voxel size, path) holding ``data``.

        Args:
            data: [nz, ny, nx] array with the same shape as ``self.data``.

        Returns:
            A new DensityMap; ``data`` is converted to float32 C-contiguous.
        """
        data = np.asarray(data)
        if data.shape != self.data.shape:
            raise DifffitInputError(
                f"{self.path or 'DensityMap'}: copy_with needs data of shape "
                f"{self.data.shape}, got {data.shape}"
            )
        return DensityMap(data, self.origin.copy(), self.voxel_size.copy(), self.path)


def _voxel_override(path: Path, voxel_size: float | Sequence[float]) -> np.ndarray:
    vs = np.asarray(voxel_size, dtype=np.float64).reshape(-1)
    if vs.size == 1:
        vs = np.repeat(vs, 3)
    if vs.size != 3:
        raise DifffitInputError(
            f"{path}: voxel_size override must be one number or three (x, y, z), "
            f"got {np.asarray(voxel_size).tolist()}"
        )
    if not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise DifffitInputError(f"{path}: voxel_size override must be positive, got {vs.tolist()}")
    return vs


# MRC modes that hold one real number per voxel; complex modes (3, 4) and packed 4-bit
# (101) are not density volumes we can fit into.
_REAL_MODES = {0, 1, 2, 6, 12}


def read_map(path, voxel_size: float | Sequence[float] | None = None) -> DensityMap:
    """Read an MRC/CCP4 density map (optionally gzip-compressed).

    Args:
        path: .mrc / .map / .ccp4 file, optionally ending in .gz (compression is detected
            from the file content, not the name).
        voxel_size: optional override, one number or (x, y, z) in Angstrom, for maps whose
            header is wrong. When given, an origin derived from NSTART is recomputed as
            NSTART * new voxel size; an explicit ORIGIN field is kept as is.

    Returns:
        DensityMap with data [nz, ny, nx] float32 (x fastest, whatever MAPC/MAPR/MAPS say).

    Raises:
        DifffitInputError: missing, empty, truncated or non-MRC file; complex or 2D data;
            NaN/Inf values; a non-orthogonal cell; a zero or negative voxel size.
    """
    p = Path(path)
    if not p.exists():
        raise DifffitInputError(f"{p}: map file does not exist")
    if not p.is_file():
        raise DifffitInputError(f"{p}: not a regular file")
    if p.stat().st_size == 0:
        raise DifffitInputError(f"{p}: map file is empty")

    try:
        # permissive=False: a bad map ID, a short data block etc. raise instead of warning.
        # mrcfile.open recognises gzip/bzip2 content by its magic bytes.
        with mrcfile.open(str(p), mode="r", permissive=False) as mrc:
            header = mrc.header
            raw = mrc.data
            if raw is None:
                raise ValueError("no data block")
            mode = int(header.mode)
            # Copy header fields out before the file is closed.
            mapcrs = (int(header.mapc), int(header.mapr), int(header.maps))
            nstart_crs = (int(header.nxstart), int(header.nystart), int(header.nzstart))
            origin_field = np.array(
                [header.origin.x, header.origin.y, header.origin.z], dtype=np.float64
            )
            angles = np.array(
                [header.cellb.alpha, header.cellb.beta, header.cellb.gamma], dtype=np.float64
            )
            vs = mrc.voxel_size
            header_voxel = np.array([vs.x, vs.y, vs.z], dtype=np.float64)
            if mode not in _REAL_MODES:
                raise DifffitInputError(
                    f"{p}: MRC mode {mode} is not a real-valued density volume"
                )
            if raw.ndim != 3:
                raise DifffitInputError(
                    f"{p}: not a 3D volume (data has {raw.ndim} dimensions, "
                    f"shape {raw.shape}); image stacks and 2D images are not supported"
                )
            # Copy into our own float32 array (mrcfile's array may be read-only or
            # big-endian); the transpose below happens on this copy.
            raw = np.array(raw, dtype=np.float32, copy=True)
    except DifffitInputError:
        raise
    except (ValueError, OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DifffitInputError(f"{p}: cannot read as an MRC/CCP4 map: {exc}") from exc

    if min(raw.shape) < 2:
        raise DifffitInputError(
            f"{p}: not a 3D volume: grid shape (sections, rows, columns) {raw.shape} has an "
            f"axis of size < 2"
        )

    # Axis order. mrcfile gives data[section, row, column]; MAPC/MAPR/MAPS say which world
    # axis (1=x, 2=y, 3=z) the columns, rows and sections run along.
    if sorted(mapcrs) != [1, 2, 3]:
        raise DifffitInputError(f"{p}: MAPC/MAPR/MAPS = {mapcrs} is not a permutation of 1,2,3")
    axis_of_array_dim = (mapcrs[2], mapcrs[1], mapcrs[0])  # array dims 0,1,2 -> world axis
    perm = [axis_of_array_dim.index(a) for a in (3, 2, 1)]  # new dims z, y, x
    data = np.ascontiguousarray(raw.transpose(perm))  # [nz, ny, nx]

    # NSTART is given per column/row/section too: permute it to x, y, z alongside.
    nstart_xyz = np.zeros(3, dtype=np.float64)
    for crs_index, world_axis in enumerate(mapcrs):
        nstart_xyz[world_axis - 1] = nstart_crs[crs_index]

    # Orthogonal cells only. All-zero angles are an unset field (some writers leave it so)
    # and are read as 90 degrees.
    if not (np.allclose(angles, 90.0, atol=1e-3) or np.all(angles == 0.0)):
        raise DifffitInputError(
            f"{p}: non-orthogonal cell (angles {angles.tolist()} degrees); only orthogonal "
            f"grids are supported"
        )

    if voxel_size is not None:
        voxel = _voxel_override(p, voxel_size)
    else:
        voxel = header_voxel
        if not np.all(np.isfinite(voxel)) or np.any(voxel <= 0):
            raise DifffitInputError(
                f"{p}: voxel size from the header is {voxel.tolist()} (cell lengths / "
                f"MX,MY,MZ); it must be positive. Pass voxel_size= to override it"
            )

    if not np.all(np.isfinite(origin_field)):
        raise DifffitInputError(f"{p}: ORIGIN field is not finite: {origin_field.tolist()}")
    if np.any(origin_field != 0.0):
        origin = origin_field
    else:
        origin = nstart_xyz * voxel

    finite = np.isfinite(data)
    if not finite.all():
        n_bad = int(data.size - np.count_nonzero(finite))
        raise DifffitInputError(f"{p}: map contains {n_bad} NaN or infinite values")

    return DensityMap(data=data, origin=origin, voxel_size=voxel, path=str(p))


def write_map(path, dmap: DensityMap, overwrite: bool = False) -> None:
    """Write a map as MRC (float32), gzip-compressed when ``path`` ends in ``.gz``.

    The header gets ORIGIN = ``dmap.origin``, NSTART = 0, cell = shape * voxel size,
    MAPC/MAPR/MAPS = 1, 2, 3. The file is written to a temporary name in the same folder
    and then renamed, so an existing file is never left half-written.

    Args:
        path: output file.
        dmap: the map to write.
        overwrite: replace an existing file; otherwise refuse.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    p = Path(path)
    _refuse_existing(p, overwrite)
    if not p.parent.is_dir():
        raise DifffitInputError(f"{p}: output folder {p.parent} does not exist")

    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        compression = "gzip" if _is_gz(p) else None
        with mrcfile.new(tmp, overwrite=True, compression=compression) as mrc:
            mrc.set_data(np.ascontiguousarray(dmap.data, dtype=np.float32))
            mrc.set_volume()
            # voxel_size setter writes cell lengths = voxel * MX,MY,MZ (= nx, ny, nz).
            mrc.voxel_size = tuple(float(v) for v in dmap.voxel_size)
            mrc.header.origin = tuple(float(v) for v in dmap.origin)
            mrc.header.nxstart = mrc.header.nystart = mrc.header.nzstart = 0
            mrc.header.mapc, mrc.header.mapr, mrc.header.maps = 1, 2, 3
            mrc.header.cellb = (90.0, 90.0, 90.0)
            mrc.update_header_stats()
        os.chmod(tmp, _umask_mode())  # mkstemp makes 0600 files; outputs are for sharing
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------------------
# Atomic structures
# ----------------------------------------------------------------------------------------

SELECTIONS = ("backbone", "ca", "heavy", "all")

# Backbone atom names. Nucleotides: the sugar-phosphate backbone including the sugar ring
# (C1', C2', O4'), which is as rigid as the phosphate trace and adds density coverage.
# O1P/O2P are the pre-2007 PDB names of OP1/OP2.
_AA_BACKBONE = frozenset({"N", "CA", "C", "O"})
_NA_BACKBONE = frozenset(
    {"P", "OP1", "OP2", "O1P", "O2P", "O5'", "C5'", "C4'", "O4'", "C3'", "O3'", "C2'", "C1'"}
)
# Atoms whose joint presence identifies a residue as part of a polymer even when its name
# is not in gemmi's table (e.g. an unusual modified residue).
_PEPTIDE_CORE = frozenset({"N", "CA", "C"})
_NUCLEOTIDE_CORE = frozenset({"C1'", "C3'", "C4'", "O4'"})

_AA, _NA, _WATER, _OTHER = "aa", "na", "water", "other"


def _residue_class(res: gemmi.Residue) -> str:
    """Classify a residue as amino acid, nucleotide, water or other (ligand / ion).

    Decided per residue from its name and atoms, not from gemmi's entity types: those come
    from TER records / het flags, which are unreliable in real files (e.g. the shared
    1J6Z.pdb has a stray TER mid-chain, after which gemmi calls 299 amino acids
    "non-polymer").
    """
    if res.is_water():
        return _WATER
    info = gemmi.find_tabulated_residue(res.name)
    if info is not None:
        if info.is_amino_acid():
            return _AA
        if info.is_nucleic_acid():
            return _NA
        if info.is_water():
            return _WATER
        # A tabulated non-polymer component (CA calcium, MG, NAG, HEM, ADP ...) is a
        # ligand even if it has atoms named like backbone atoms.
        return _OTHER
    # Fallback for components missing from gemmi's table (unusual modified residues):
    # recognise a polymer residue by its backbone atoms.
    names = {a.name for a in res}
    if _PEPTIDE_CORE <= names:
        return _AA
    if _NUCLEOTIDE_CORE <= names:
        return _NA
    return _OTHER


def _select_atom(cls: str, atom: gemmi.Atom, selection: str) -> bool:
    """Whether ``atom`` of a residue of class ``cls`` belongs to ``selection``."""
    if selection == "all":
        return True
    if selection == "heavy":
        return not atom.is_hydrogen()
    if selection == "backbone":
        if cls == _AA:
            return atom.name in _AA_BACKBONE
        if cls == _NA:
            return atom.name in _NA_BACKBONE
        return False
    if selection == "ca":
        if cls == _AA:
            return atom.name == "CA"
        if cls == _NA:
            return atom.name == "P"
        return False
    raise AssertionError(selection)


@dataclass
class Structure:
    """An atomic model prepared for fitting.

    Attributes:
        name: file stem, plus ``_<chain>`` for structures made by :func:`split_chains`.
        path: source file, if any.
        coords: [N, 3] float64 world coordinates of all kept atoms (after the water,
            ligand and hydrogen filters), in the atom order of ``gemmi_structure``.
        atomic_numbers: [N] int32 atomic numbers (unknown element -> 6, carbon).
        fit_mask: [N] bool, True for the atoms used for fitting (the selection).
        chain_ids: [N] str chain name of each atom.
        gemmi_structure: the kept atoms only (one model), for writing fitted models with
            their original names and numbering.
    """

    name: str
    path: str | None
    coords: np.ndarray
    atomic_numbers: np.ndarray
    fit_mask: np.ndarray
    chain_ids: np.ndarray
    gemmi_structure: gemmi.Structure = field(repr=False)

    @property
    def fit_coords(self) -> np.ndarray:
        """[M, 3] float64 coordinates of the fitted atoms."""
        return self.coords[self.fit_mask]

    @property
    def n_fit_atoms(self) -> int:
        return int(np.count_nonzero(self.fit_mask))

    @property
    def n_atoms(self) -> int:
        return int(self.coords.shape[0])

    @property
    def centroid(self) -> np.ndarray:
        """[3] float64 mean of the fitted atoms' coordinates."""
        return self.fit_coords.mean(axis=0)

    @property
    def chains(self) -> list[str]:
        """Chain names in order of first appearance."""
        return list(dict.fromkeys(self.chain_ids.tolist()))

    def transformed(self, rotation: np.ndarray, translation: np.ndarray) -> "Structure":
        """A new Structure with every atom moved by x -> R x + t.

        Args:
            rotation: [3, 3] rotation matrix R.
            translation: [3] translation t in Angstrom.

        Returns:
            A new Structure; coordinates and the gemmi structure (positions and
            anisotropic ADPs) are both transformed. ``self`` is not modified.
        """
        R, t = _check_rt(rotation, translation)
        st = self.gemmi_structure.clone()
        tr = gemmi.Transform()
        tr.mat.fromlist(R.tolist())
        tr.vec.fromlist(t.tolist())
        st[0].transform_pos_and_adp(tr)
        return Structure(
            name=self.name,
            path=self.path,
            coords=self.coords @ R.T + t,  # [N, 3]
            atomic_numbers=self.atomic_numbers.copy(),
            fit_mask=self.fit_mask.copy(),
            chain_ids=self.chain_ids.copy(),
            gemmi_structure=st,
        )


def _check_rt(rotation, translation) -> tuple[np.ndarray, np.ndarray]:
    R = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    t = np.zeros(3) if translation is None else np.asarray(translation, dtype=np.float64)
    if R.shape != (3, 3) or t.shape != (3,):
        raise DifffitInputError(
            f"rotation must be [3, 3] and translation [3], got {R.shape} and {t.shape}"
        )
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
        raise DifffitInputError("rotation and translation must be finite")
    return R, t


def _structure_from_gemmi(
    st: gemmi.Structure, name: str, path: str | None, selection: str
) -> Structure:
    """Build a Structure from a one-model gemmi structure holding only the kept atoms."""
    coords: list[tuple[float, float, float]] = []
    znum: list[int] = []
    mask: list[bool] = []
    chain_ids: list[str] = []
    for chain in st[0]:
        for res in chain:
            cls = _residue_class(res)
            for atom in res:
                pos = atom.pos
                coords.append((pos.x, pos.y, pos.z))
                z = atom.element.atomic_number
                znum.append(z if z > 0 else 6)
                mask.append(_select_atom(cls, atom, selection))
                chain_ids.append(chain.name)
    return Structure(
        name=name,
        path=path,
        coords=np.array(coords, dtype=np.float64).reshape(-1, 3),
        atomic_numbers=np.array(znum, dtype=np.int32),
        fit_mask=np.array(mask, dtype=bool),
        chain_ids=np.array(chain_ids, dtype=str),
        gemmi_structure=st,
    )


def read_structure(
    path,
    selection: str = "backbone",
    chains: Sequence[str] | None = None,
    keep_waters: bool = False,
    keep_ligands: bool = False,
    keep_hydrogens: bool = False,
    model_index: int = 0,
) -> Structure:
    """Read a PDB or mmCIF model (optionally gzip-compressed) for fitting.

    Only one model is kept and, for atoms with alternative conformations, the first one.
    Residues are classified one by one (amino acid, nucleotide, water, other): see
    ``_residue_class``. Ligands are all non-polymer, non-water residues (ions, sugars,
    cofactors).

    Args:
        path: .pdb / .ent / .cif / .mmcif, optionally .gz.
        selection: atoms used for fitting, one of SELECTIONS:
            "backbone": N, CA, C, O of amino acids and the sugar-phosphate backbone of
            nucleotides (P, OP1, OP2, O5', C5', C4', O4', C3', O3', C2', C1');
            "ca": CA of amino acids and P of nucleotides;
            "heavy": all non-hydrogen kept atoms; "all": all kept atoms.
        chains: keep only these chain names (default: all chains).
        keep_waters, keep_ligands, keep_hydrogens: keep these atoms (they are then in
            ``coords`` and in "all"/"heavy", never in "backbone"/"ca").
        model_index: which model (0-based position in the file) to use.

    Returns:
        Structure with the kept atoms and the selection mask.

    Raises:
        DifffitInputError: missing or unparsable file, no such model, unknown chain,
            no atoms left after filtering, or an empty selection.
    """
    p = Path(path)
    if selection not in SELECTIONS:
        raise DifffitInputError(
            f"{p}: unknown selection {selection!r}; choose one of {', '.join(SELECTIONS)}"
        )
    if not p.exists():
        raise DifffitInputError(f"{p}: structure file does not exist")
    if not p.is_file() or p.stat().st_size == 0:
        raise DifffitInputError(f"{p}: structure file is empty or not a regular file")
    try:
        st = gemmi.read_structure(str(p))
    except (RuntimeError, ValueError, OSError) as exc:
        raise DifffitInputError(f"{p}: cannot read as a PDB/mmCIF structure: {exc}") from exc

    n_models = len(st)
    if n_models == 0 or not any(len(res) for model in st for ch in model for res in ch):
        # gemmi reads any text as a PDB file; no atoms at all means it was not one.
        raise DifffitInputError(f"{p}: no atoms found; is it a PDB or mmCIF file?")
    if not 0 <= model_index < n_models:
        raise DifffitInputError(
            f"{p}: model_index {model_index} out of range; the file has {n_models} model(s)"
        )
    # Keep only the requested model, as model 0.
    for i in reversed(range(n_models)):
        if i != model_index:
            del st[i]
    st.setup_entities()
    st.remove_alternative_conformations()  # keeps the first altloc
    if not keep_hydrogens:
        st.remove_hydrogens()  # H and D

    model = st[0]
    available = list(dict.fromkeys(ch.name for ch in model))
    if chains is not None:
        if isinstance(chains, str):
            chains = [chains]
        wanted = list(dict.fromkeys(chains))
        unknown = [c for c in wanted if c not in available]
        if unknown:
            raise DifffitInputError(
                f"{p}: chain(s) {unknown} not found; available chains: {available}"
            )
        for i in reversed(range(len(model))):
            if model[i].name not in wanted:
                del model[i]

    # Remove waters / ligands residue by residue (see _residue_class for why not by entity).
    for chain in model:
        for i in reversed(range(len(chain))):
            cls = _residue_class(chain[i])
            if (cls == _WATER and not keep_waters) or (cls == _OTHER and not keep_ligands):
                del chain[i]
    st.remove_empty_chains()

    if sum(len(res) for ch in st[0] for res in ch) == 0:
        removed = [
            what
            for what, kept in (("waters", keep_waters), ("ligands", keep_ligands),
                               ("hydrogens", keep_hydrogens))
            if not kept
        ]
        raise DifffitInputError(
            f"{p}: no atoms left in chains {list(chains or available)} after removing "
            f"{', '.join(removed) or 'nothing'}; see keep_waters / keep_ligands / keep_hydrogens"
        )

    out = _structure_from_gemmi(st, _stem(p), str(p), selection)
    if out.n_fit_atoms == 0:
        raise DifffitInputError(
            f"{p}: selection {selection!r} matches no atoms "
            f"({out.n_atoms} atoms kept, chains {out.chains})"
        )
    return out


def split_chains(structure: Structure) -> list[Structure]:
    """Split a structure into one Structure per chain.

    Args:
        structure: a Structure, e.g. from read_structure.

    Returns:
        One Structure per chain name, in order of appearance, named
        ``f"{structure.name}_{chain}"``, each with its own gemmi structure holding only
        that chain. Chains with no fitted atoms (e.g. only ions) are skipped with a warning,
        since they cannot be fitted.
    """
    out: list[Structure] = []
    for chain in structure.chains:
        sel = structure.chain_ids == chain  # [N] bool
        if not np.any(structure.fit_mask[sel]):
            warnings.warn(
                f"{structure.path or structure.name}: chain {chain!r} has no atoms in the "
                f"fitting selection; skipped",
                stacklevel=2,
            )
            continue
        st = structure.gemmi_structure.clone()
        model = st[0]
        for i in reversed(range(len(model))):
            if model[i].name != chain:
                del model[i]
        out.append(
            Structure(
                name=f"{structure.name}_{chain}",
                path=structure.path,
                coords=structure.coords[sel].copy(),
                atomic_numbers=structure.atomic_numbers[sel].copy(),
                fit_mask=structure.fit_mask[sel].copy(),
                chain_ids=structure.chain_ids[sel].copy(),
                gemmi_structure=st,
            )
        )
    return out


def write_structure(
    path,
    structure: Structure,
    rotation: np.ndarray | None = None,
    translation: np.ndarray | None = None,
    overwrite: bool = False,
) -> None:
    """Write a (transformed) structure as mmCIF or PDB.

    Every kept atom is moved by x -> R x + t (identity by default). Chain names, residue
    names and numbering are the original ones. The format is mmCIF when the name ends in
    .cif or .mmcif (optionally .gz), PDB otherwise; ``.gz`` gives gzip compression.

    Args:
        path: output file.
        structure: the structure to write.
        rotation: [3, 3] rotation matrix R, default identity.
        translation: [3] translation t in Angstrom, default zero.
        overwrite: replace an existing file; otherwise refuse.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        DifffitInputError: bad R/t, or chain names too long for the PDB format.
    """
    p = Path(path)
    _refuse_existing(p, overwrite)
    if not p.parent.is_dir():
        raise DifffitInputError(f"{p}: output folder {p.parent} does not exist")
    R, t = _check_rt(rotation, translation)
    moved = structure.transformed(R, t)
    st = moved.gemmi_structure

    # ``coords`` is the canonical data: write those positions, so that a Structure whose
    # coords were replaced (dataclasses.replace) is still written as it is.
    n = 0
    for chain in st[0]:
        for res in chain:
            for atom in res:
                if n < moved.coords.shape[0]:
                    atom.pos = gemmi.Position(*moved.coords[n])
                n += 1
    if n != moved.coords.shape[0]:
        raise DifffitInputError(
            f"{p}: structure {structure.name} has {moved.coords.shape[0]} coordinates but its "
            f"gemmi model has {n} atoms"
        )

    lower = p.name.lower()
    base = lower[:-3] if lower.endswith(".gz") else lower
    try:
        if base.endswith((".cif", ".mmcif")):
            text = st.make_mmcif_document().as_string()
        else:
            text = st.make_pdb_string()
    except RuntimeError as exc:
        raise DifffitInputError(
            f"{p}: cannot write structure {structure.name}: {exc} (write .cif instead)"
        ) from exc
    payload = text.encode()
    if _is_gz(p):
        payload = gzip.compress(payload)
    _atomic_write_bytes(p, payload)
