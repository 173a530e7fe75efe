"""Files: atomic writes, refusal to overwrite, names, and JSON-able values.

Every output difffit writes goes through :func:`atomic_write`: a temporary file in the
same folder renamed into place, so an interrupted run never leaves a half-written file.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import opt

__all__ = ["refuse_existing", "umask_mode", "atomic_write", "write_json", "is_gz", "stem",
           "MAP_SUFFIXES", "is_map_path",
           "safe_name", "jsonable"]


def refuse_existing(path: Path, overwrite: bool) -> None:
    """Raise FileExistsError when ``path`` exists and overwriting was not asked for."""
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path}: file already exists; pass {opt('overwrite', True)} to replace it"
        )


def umask_mode() -> int:
    """0666 minus the process umask: what a plain open() would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, payload: bytes | str) -> None:
    """Write ``payload`` (bytes, or text as UTF-8) to ``path`` via a temporary file in the same folder.

    The final ``os.replace`` is atomic on POSIX, so a reader never sees a half-written
    file and a crash leaves the previous file (if any) intact.
    """
    if isinstance(payload, str):
        payload = payload.encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, umask_mode())  # mkstemp makes 0600 files; outputs are for sharing
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def is_gz(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


MAP_SUFFIXES = (".mrc", ".map", ".ccp4", ".mrcs")


def is_map_path(path) -> bool:
    """A map file by its name (MRC/CCP4 suffixes, optionally .gz)."""
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(MAP_SUFFIXES)


def stem(path: Path) -> str:
    """File name without ``.gz`` and without the format suffix: ``a/x.cif.gz`` -> ``x``."""
    name = path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    return Path(name).stem



def write_json(path: Path, doc: Any) -> None:
    """Write ``doc`` (made JSON-able, NaN -> null) atomically, indented."""
    atomic_write(Path(path), json.dumps(jsonable(doc), indent=1, allow_nan=False) + "\n")


def safe_name(name: str) -> str:
    """A file-name-safe version of a name (letters, digits, ``._-``)."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return out or "structure"


def jsonable(x: Any) -> Any:
    """numpy / Path / dataclass values -> plain JSON values; NaN and inf -> None."""
    if is_dataclass(x) and not isinstance(x, type):
        return jsonable(asdict(x))
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, Path):
        return str(x)
    if x is None or isinstance(x, (str, int)):
        return x
    return str(x)
