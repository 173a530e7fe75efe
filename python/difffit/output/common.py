"""What every writer of results shares: the map a script opens, ChimeraX quoting and
colours, the model format, the version and build recorded in each output."""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import DifffitInputError
from ..maps import DensityMap, write_map

__all__ = ["COLOURS", "cxc_quote", "map_file", "abs_path", "check_model_format", "version",
           "build_info"]

# Colours given to the models in the ChimeraX scripts, one per structure (cycled).
COLOURS = ("cornflowerblue", "orange", "mediumseagreen", "orchid", "gold", "tomato",
           "turquoise", "sienna", "hotpink", "slategray")


def abs_path(path: str | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def cxc_quote(path: str) -> str:
    """Quote a path for a ChimeraX command when it holds spaces or quotes."""
    if re.search(r"[\s\"';#]", path):
        return '"' + path.replace('"', '\\"') + '"'
    return path


def map_file(dmap: DensityMap, outdir: Path, paths: dict[str, Path]) -> str:
    """Absolute path of the map for a ChimeraX script: its own file, or ``outdir/map.mrc``
    written here (recorded in ``paths["map"]``) when it has none (e.g. simulated)."""
    if dmap.path is not None and Path(dmap.path).is_file():
        return str(Path(dmap.path).resolve())
    paths["map"] = Path(outdir) / "map.mrc"
    write_map(paths["map"], dmap, overwrite=True)
    return str(paths["map"].resolve())


def check_model_format(fmt: str, top: int) -> str:
    """The model file suffix ("cif" or "pdb") after checking ``fmt`` and ``top``."""
    out = str(fmt).lower().lstrip(".")
    if out not in ("cif", "pdb"):
        raise DifffitInputError(f"model_format must be 'cif' or 'pdb', got {fmt!r}")
    if int(top) < 0:
        raise DifffitInputError(f"top must be >= 0, got {top}")
    return out


def version() -> str:
    from .. import __version__

    return __version__


def build_info() -> dict:
    """The compiled kernels' build information, or the error that prevents loading them
    (an output must not fail for lack of the extension)."""
    try:
        from .._ext import build_info as info

        return info()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
