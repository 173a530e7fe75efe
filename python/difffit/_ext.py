"""Loads the compiled extension lazily, so `import difffit` never fails because of it."""
from __future__ import annotations

import functools
from typing import Any


@functools.lru_cache(maxsize=None)
def load():
    """Returns the compiled module `difffit._C`, or raises an ImportError that says how to build it."""
    try:
        from . import _C  # type: ignore[attr-defined]
    except ImportError as exc:  # pragma: no cover - only on a broken install
        raise ImportError(
            "difffit's compiled kernels (difffit._C) are missing or do not load: "
            f"{exc}. Build them with `pip install --no-build-isolation .` from a checkout "
            "(needs a C++ compiler, CMake and pybind11)."
        ) from exc
    return _C


def build_info() -> dict[str, Any]:
    """What the compiled extension was built with.

    Returns:
        dict with keys ``cuda`` (bool: CUDA kernels compiled), ``cuda_version``,
        ``cuda_architectures`` (comma-separated), ``openmp`` (bool), ``openmp_version``,
        ``compiler``, ``cpu_variant`` (the CPU kernels in use: ``avx512``, ``avx2`` or
        ``baseline``), the kernels' constants ``num_stats`` (columns of
        :func:`difffit.ops.point_stats`) and ``max_channels`` (most channels of a volume),
        plus ``cuda_available`` (a CUDA device is usable by torch now) and ``version``.
    """
    from . import __version__

    info = dict(load().build_info())
    try:
        import torch

        info["cuda_available"] = bool(info["cuda"] and torch.cuda.is_available())
    except ImportError:  # pragma: no cover
        info["cuda_available"] = False
    info["version"] = __version__
    return info
