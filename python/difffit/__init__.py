"""difffit: differentiable rigid-body fitting of atomic structures into cryo-EM maps.

Submodules are imported lazily so that ``import difffit`` never fails for lack of the
compiled extension, CUDA or a GPU.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

from .errors import DifffitInputError  # noqa: E402

_LAZY = {
    "build_info": ("._ext", "build_info"),
}


def __getattr__(name: str):
    if name in _LAZY:
        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod, __name__), attr)
    raise AttributeError(f"module 'difffit' has no attribute {name!r}")
