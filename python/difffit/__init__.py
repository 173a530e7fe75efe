"""difffit: differentiable rigid-body fitting of atomic structures into cryo-EM maps.

The public face::

    import difffit
    result = difffit.fit("map.mrc", ["a.pdb"], resolution=4.0)

Workflows: :func:`fit`, :func:`composite`, :func:`identify`; their settings
:class:`FitParams`, :class:`AcceptRules`, :class:`IdentifyParams`; inputs
:func:`read_map`, :func:`read_structure`; the kernels as PyTorch ops: :mod:`ops`.

Names are imported lazily, so ``import difffit`` is quick and never fails for lack of the
compiled extension, CUDA or a GPU.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

from .errors import DifffitInputError, DifffitWarning  # noqa: E402

# name -> (module, attribute or None for the module itself)
_LAZY = {
    "fit": (".workflows.fit", "fit"),
    "composite": (".workflows.composite", "composite"),
    "assemble": (".workflows.assemble", "assemble"),
    "identify": (".workflows.identify", "identify"),
    "score": (".workflows.score", "score"),
    "FitParams": (".params", "FitParams"),
    "AcceptRules": (".params", "AcceptRules"),
    "AssembleParams": (".params", "AssembleParams"),
    "IdentifyParams": (".params", "IdentifyParams"),
    "METRICS": (".params", "METRICS"),
    "read_map": (".maps", "read_map"),
    "write_map": (".maps", "write_map"),
    "DensityMap": (".maps", "DensityMap"),
    "read_structure": (".structures", "read_structure"),
    "write_structure": (".structures", "write_structure"),
    "Structure": (".structures", "Structure"),
    "FitResult": (".results", "FitResult"),
    "CompositeResult": (".results", "CompositeResult"),
    "IdentifyResult": (".results", "IdentifyResult"),
    "read_results": (".readback", "read_results"),
    "ops": (".ops", None),
    "build_info": ("._ext", "build_info"),
}

__all__ = ["__version__", "DifffitInputError", "DifffitWarning", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        mod, attr = _LAZY[name]
        module = importlib.import_module(mod, __name__)
        return module if attr is None else getattr(module, attr)
    raise AttributeError(f"module 'difffit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
