"""Exchange with UCSF ChimeraX: placements as a positions file, and atom specs that its
command parser reads as meant.

A ChimeraX positions file (``save x.positions models #2-5``; ``open x.positions models
#2-5`` applies it) holds one line per model: the model's name and 12 comma-separated
numbers, the 3x4 matrix [R | t] row by row (the translation is the 4th, 8th and 12th
number), the matrix ``view matrix models`` reports. difffit's placements are x -> R x + t on
the input file's coordinates, so a line applied to the input structure, opened unmoved,
puts it where the fit placed it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = ["positions_line", "positions_text", "model_name", "chain_spec", "SAFE_CHAIN"]

# Chain ids that an atom spec names as they are (ChimeraX reads "/A,B_1_2" as two chains;
# a comma, a dash, a colon, an @ or a space in a chain id would change the spec's meaning).
SAFE_CHAIN = re.compile(r"[A-Za-z0-9_]+")


def model_name(structure) -> str:
    """The name ChimeraX gives a structure opened from its file: the file's name (an
    in-memory structure: its name). Commas become '_' (the positions file's separator)."""
    path = getattr(structure, "path", None)
    name = Path(path).name if path else structure.name
    return name.replace(",", "_").replace("\n", " ")


def positions_line(name: str, rotation, translation) -> str:
    """``name,r11,r12,r13,t1,r21,r22,r23,t2,r31,r32,r33,t3``."""
    R = np.asarray(rotation, np.float64).reshape(3, 3)
    t = np.asarray(translation, np.float64).reshape(3)
    M = np.hstack([R, t[:, None]])
    return ",".join([name.replace(",", "_")] + [f"{v:.10g}" for v in M.ravel()])


def positions_text(entries: Iterable[tuple[str, Sequence, Sequence]]) -> str:
    """A positions file: one :func:`positions_line` per (name, R [3, 3], t [3])."""
    return "".join(positions_line(n, R, t) + "\n" for n, R, t in entries)


def chain_spec(model_id: int, chains: Sequence[str]) -> tuple[str | None, list[str]]:
    """An atom spec for some chains of model ``#model_id``: ("#2/A,B_1_1", []), and the
    chain ids it cannot name (left out; None when none is left)."""
    ok = [c for c in chains if SAFE_CHAIN.fullmatch(c)]
    bad = [c for c in chains if not SAFE_CHAIN.fullmatch(c)]
    return (f"#{model_id}/{','.join(ok)}" if ok else None), bad
