"""Simulated maps behind one interface: ``molmap`` (default, ChimeraX molmap's Gaussians),
``gemmi`` (electron form factors) and ``learned`` (a trained 3D nested U-Net that turns a
molmap into an experimental-like map, the struc2mapGAN idea).

Every consumer of a simulated map (metrics, zero-out, ``difffit simulate``, identify) takes a
:class:`~difffit.simulators.base.Simulator` made by :func:`get_simulator`; ``None`` there
means molmap, with today's numbers.
"""
from __future__ import annotations

from ..params import SIMULATORS
from .base import Simulator
from .registry import get_simulator, simulator_for, simulator_record

__all__ = ["SIMULATORS", "Simulator", "get_simulator", "simulator_for", "simulator_record"]
