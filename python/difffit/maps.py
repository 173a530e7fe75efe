"""Cryo-EM density maps: the DensityMap type, reading and writing MRC/CCP4.

Conventions (docs/method.md section 2):

* World coordinates are x, y, z in Angstrom.
* A map's data array is stored ``[nz, ny, nx]`` (x fastest, C-contiguous float32).
  ``origin`` is the world position of the centre of voxel index (0, 0, 0), and voxel
  centres sit on integer indices, so index ``(i, j, k)`` (x, y, z order) is at
  ``origin + (i, j, k) * voxel_size``.
* The map origin comes from the MRC ORIGIN field when it is non-zero, otherwise from
  NSTART times the voxel size. MAPC/MAPR/MAPS (the axis order of the file) are honoured.
"""
from __future__ import annotations

import os
import re
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import mrcfile
import numpy as np

from .errors import DifffitInputError, opt
from .files import is_gz, refuse_existing, umask_mode

__all__ = ["DensityMap", "read_map", "write_map"]


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
        where = self.path or "DensityMap"
        if hasattr(self.data, "detach"):  # a torch tensor
            self.data = self.data.detach().cpu().numpy()
        try:
            self.data = np.ascontiguousarray(self.data, dtype=np.float32)
        except (TypeError, ValueError):
            raise DifffitInputError(f"{where}: data must be a 3D array of numbers [nz, ny, nx], "
                                    f"got {type(self.data).__name__}") from None
        if self.data.ndim != 3:
            raise DifffitInputError(
                f"{where}: data must be 3D [nz, ny, nx], got shape {self.data.shape}"
            )
        self.origin = _xyz(self.origin, where, "origin")
        self.voxel_size = _xyz(self.voxel_size, where, "voxel_size")
        if not np.all(np.isfinite(self.origin)):
            raise DifffitInputError(f"{where}: origin must be finite, got {self.origin.tolist()}")
        if not np.all(np.isfinite(self.voxel_size)) or np.any(self.voxel_size <= 0):
            raise DifffitInputError(
                f"{where}: voxel size must be positive, "
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


def _xyz(value, where: str, name: str) -> np.ndarray:
    """[3] float64 from one number (isotropic) or three (x, y, z)."""
    try:
        v = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        v = np.zeros(0)
    if v.size == 1:
        v = np.repeat(v, 3)
    if v.size != 3:
        raise DifffitInputError(f"{where}: {name} must be one number or three (x, y, z), "
                                f"got {value!r}")
    return v.copy()


def _voxel_override(path: Path, voxel_size: float | Sequence[float]) -> np.ndarray:
    vs = _xyz(voxel_size, str(path), opt("voxel_size"))
    if not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise DifffitInputError(f"{path}: {opt('voxel_size')} must be positive, got {vs.tolist()}")
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
        DifffitInputError: missing, empty, truncated or non-MRC file; a data block whose
            size does not match the header's mode and grid (both named); complex or 2D
            data; NaN/Inf values; a non-orthogonal cell; a zero or negative voxel size; a
            grid too large for the memory available.
    """
    p = as_path(path, "map")
    if not p.exists():
        raise DifffitInputError(f"{p}: map file does not exist")
    if not p.is_file():
        raise DifffitInputError(f"{p}: not a regular file")
    if p.stat().st_size == 0:
        raise DifffitInputError(f"{p}: map file is empty")

    try:
        # The header first: a grid too large to hold is refused before it is read.
        with mrcfile.open(str(p), mode="r", permissive=False, header_only=True) as mrc:
            layout = (int(mrc.header.mode),
                      (int(mrc.header.nx), int(mrc.header.ny), int(mrc.header.nz)))
        from .checks import check_memory

        check_memory(4.0 * 3 * np.prod(layout[1], dtype=np.float64),
                     f"{p}: reading a {' x '.join(map(str, layout[1]))} map")
        # permissive=False: a bad map ID, a short data block etc. raise instead of warning.
        # mrcfile.open recognises gzip/bzip2 content by its magic bytes. A data block
        # longer than the header's mode and grid say is only a warning there: an error here.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                mrc = mrcfile.open(str(p), mode="r", permissive=False)
            except ValueError as exc:
                short = re.search(r"Expected (\d+) bytes in data block but limit is (\d+)",
                                  str(exc))
                if short:
                    _data_size_error(p, *layout, int(short.group(2)))
                raise
        longer = [w for w in caught if "larger than expected" in str(w.message)]
        for w in caught:  # anything else mrcfile says, passed on
            if w not in longer:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        with mrc:
            header = mrc.header
            if longer:
                extra = re.search(r"(\d+) bytes larger", str(longer[0].message))
                _data_size_error(p, *layout, _expected_bytes(*layout) + int(extra.group(1))
                                 if extra else None)
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
                f"MX,MY,MZ); it must be positive. Give the right one with "
                f"{opt('voxel_size', 'V')}"
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


# Bytes per voxel of each MRC mode, and what the mode holds.
_MODE_BYTES = {0: (1, "int8"), 1: (2, "int16"), 2: (4, "float32"), 3: (4, "complex int16"),
               4: (8, "complex float32"), 6: (2, "uint16"), 12: (2, "float16")}


def _expected_bytes(mode: int, grid: tuple[int, int, int]) -> int:
    """Bytes of the data block a header's mode and grid call for."""
    return _MODE_BYTES.get(mode, (0, ""))[0] * grid[0] * grid[1] * grid[2]


def _data_size_error(p: Path, mode: int, grid: tuple[int, int, int], actual: int | None):
    """Raise the error of a data block whose size does not match the header's mode and
    grid, naming both (and the modes the size would fit)."""
    size, name = _MODE_BYTES.get(mode, (0, "unknown"))
    need = _expected_bytes(mode, grid)
    msg = (f"{p}: the data block does not match the header: mode {mode} ({name}, {size} "
           f"byte{'s' if size != 1 else ''} per voxel) on a {grid[0]} x {grid[1]} x "
           f"{grid[2]} grid needs {need} bytes")
    if actual is not None:
        msg += f", the file holds {actual}"
        fits = [f"mode {m} ({nm})" for m in sorted(_REAL_MODES)
                if m != mode and _expected_bytes(m, grid) == actual
                for nm in [_MODE_BYTES[m][1]]]
        if fits:
            msg += f", which fits {' or '.join(fits)}: the header's mode is probably wrong"
        elif actual < need:
            msg += ": the file is truncated"
    raise DifffitInputError(msg)


def as_path(path, what: str) -> Path:
    """A path argument as a Path, or an error saying what was expected."""
    if isinstance(path, (str, os.PathLike)):
        return Path(path)
    raise DifffitInputError(f"{what} must be a path (str or pathlib.Path) of a file, got "
                            f"{type(path).__name__}")


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
    p = as_path(path, "the output map")
    if not isinstance(dmap, DensityMap):
        raise DifffitInputError(f"{p}: write_map needs a DensityMap, got {type(dmap).__name__}")
    refuse_existing(p, overwrite)
    if not p.parent.is_dir():
        raise DifffitInputError(f"{p}: output folder {p.parent} does not exist")

    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        compression = "gzip" if is_gz(p) else None
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
        os.chmod(tmp, umask_mode())  # mkstemp makes 0600 files; outputs are for sharing
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

