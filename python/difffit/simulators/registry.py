"""The registry: a simulator by name (and checkpoint), and the one a workflow's FitParams
ask for."""
from __future__ import annotations

from pathlib import Path

from ..errors import DifffitInputError
from ..params import SIMULATORS
from .base import Simulator
from .gemmi_sim import GemmiSimulator
from .molmap import MolmapSimulator


def get_simulator(name: str | Simulator | None = "molmap", checkpoint=None,
                  device: str = "cpu") -> Simulator:
    """The simulator called ``name`` (one of :data:`SIMULATORS`; a Simulator is returned as
    is; None is molmap). ``learned`` needs ``checkpoint``, a file written by
    ``difffit train-simulator``."""
    if isinstance(name, Simulator):
        return name
    if name is None or name == "molmap":
        return MolmapSimulator(device=device)
    if name == "gemmi":
        return GemmiSimulator()
    if name == "learned":
        if checkpoint is None:
            raise DifffitInputError("the learned simulator needs a checkpoint "
                                    "(--checkpoint FILE, written by difffit train-simulator)")
        from .learned import LearnedSimulator
        return LearnedSimulator.load(checkpoint, device=device)
    raise DifffitInputError(f"simulator must be one of {', '.join(SIMULATORS)}, got {name!r}")


def simulator_record(sim: Simulator | None) -> dict:
    """The record of the simulator used (molmap when None), for outputs."""
    return {"simulator": "molmap"} if sim is None else sim.describe()


_CACHE: dict = {}


def simulator_for(params) -> Simulator | None:
    """The simulator a workflow's FitParams ask for (``simulator``, ``checkpoint``,
    ``device``): None for molmap, so that the molmap paths keep their exact numbers. A
    learned simulator is loaded once per checkpoint file version (and raises
    DifffitInputError at once for a missing or foreign checkpoint)."""
    name = getattr(params, "simulator", "molmap")
    if name == "molmap":
        return None
    ckpt = getattr(params, "checkpoint", None)
    device = str(params.torch_device()) if hasattr(params, "torch_device") else "cpu"
    key = (name, ckpt, device)
    if ckpt is not None:
        p = Path(ckpt)
        key += (p.stat().st_mtime_ns if p.is_file() else None,)
    if key not in _CACHE:
        _CACHE.clear()   # one at a time: a network's weights are not worth hoarding
        _CACHE[key] = get_simulator(name, ckpt, device=device)
    return _CACHE[key]
