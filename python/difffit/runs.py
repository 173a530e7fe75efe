"""Run folders of the resumable workflows (composite, identify): one state file that
records what the results depend on, parts written as they finish, and the rule that a
resume must find every input and setting unchanged.

* :func:`map_fingerprint` / :func:`structure_fingerprint`: inputs by content, so that a
  moved file still matches and a changed one does not.
* :func:`differences`: what differs between a recorded key and the current one, in words.
* :class:`RunFolder`: starts a run in a folder (refusing one that holds other things
  unless forced), or reopens the run recorded there; saves and loads parts (batches).

Every file is written atomically (:func:`difffit.files.atomic_write`): the state file is
the commit point of a run.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .errors import DifffitInputError, opt
from .files import jsonable, write_json
from .maps import DensityMap
from .structures import Structure

__all__ = ["map_fingerprint", "structure_fingerprint", "differences", "key_hash",
           "check_outdir", "RunFolder"]


def _sha1(*arrays: np.ndarray) -> str:
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def map_fingerprint(dmap: DensityMap) -> dict:
    """A map by content: grid, origin, voxel size and a digest of the values."""
    return {"grid_xyz": list(dmap.shape_xyz), "origin": dmap.origin.tolist(),
            "voxel_size": dmap.voxel_size.tolist(),
            "sha1": _sha1(dmap.data, dmap.origin, dmap.voxel_size)}


def structure_fingerprint(s: Structure) -> str:
    """A structure by content: its atoms, their elements and the fitting selection."""
    return _sha1(s.coords.astype(np.float32), s.atomic_numbers, s.fit_mask)[:16]


def key_hash(key: dict) -> str:
    return hashlib.sha1(json.dumps(jsonable(key), sort_keys=True).encode()).hexdigest()


def differences(old: Any, new: Any, where: str = "") -> list[str]:
    """What differs between two JSON-like values, as ``name: old -> new`` phrases.

    Dicts are compared key by key and lists item by item (a different length is said
    once), so the phrase names the setting or the input that changed.
    """
    old, new = jsonable(old), jsonable(new)
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in list(old) + [k for k in new if k not in old]:
            out += differences(old.get(k), new.get(k), f"{where}.{k}" if where else str(k))
        return out
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{where or 'value'}: {len(old)} entries recorded, {len(new)} now"]
        for k, (a, b) in enumerate(zip(old, new)):
            found = differences(a, b, f"{where}[{k}]")
            if found:
                return found[:1]  # the first changed entry says enough
        return []
    text = lambda v: json.dumps(v)[:120]  # noqa: E731
    return [f"{where or 'value'}: {text(old)} -> {text(new)}"]


def check_outdir(outdir: Path, force: bool) -> None:
    """Refuse, before any work, an output path that is a file, or a folder that is not
    empty unless ``force``."""
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise DifffitInputError(f"{outdir}: output path exists and is not a folder")
    if outdir.is_dir() and any(outdir.iterdir()) and not force:
        raise FileExistsError(
            f"output folder {outdir} already exists and is not empty; choose another "
            f"({opt('outdir')}) or pass {opt('force', True)} to overwrite the files in it")


class RunFolder:
    """A resumable run's folder.

    Args:
        outdir: the folder.
        state: the state file, relative to ``outdir``.
        owned: glob patterns (relative to ``outdir``) of the files and folders the run
            writes besides the state: removed when a run starts anew with ``force``.
        what: the workflow's name, for messages.
    """

    def __init__(self, outdir, state: str, owned: Iterable[str], what: str):
        self.dir = Path(outdir)
        self.state_path = self.dir / state
        self.owned = tuple(owned)
        self.what = what

    def open(self, key: dict, resume: bool, force: bool) -> dict | None:
        """Reopen the run recorded here (``resume``) or prepare the folder for a new one.

        Args:
            key: everything the results depend on; a resume must find it unchanged.

        Returns:
            The recorded state when resuming, None for a new run (the folder then exists
            and holds none of this run's files; the caller writes the first state).

        Raises:
            DifffitInputError: the path is a file; a resume whose key differs (every
                difference named); ``resume`` of a non-empty folder with no state.
            FileExistsError: a non-empty folder, neither resume nor force.
        """
        if self.dir.exists() and not self.dir.is_dir():
            raise DifffitInputError(f"{self.dir}: output path exists and is not a folder")
        if resume and self.state_path.is_file():
            state = self.read_state()
            diffs = differences(state.get("key"), key)
            if diffs:
                raise DifffitInputError(
                    f"{self.dir}: cannot resume, the {self.what} run recorded there differs: "
                    f"{'; '.join(diffs)} (resume with the same inputs and settings, start a "
                    f"new run in another folder, or pass {opt('force', True)} to restart here)")
            return state
        busy = self.dir.is_dir() and any(self.dir.iterdir())
        if busy and not force:
            if resume:
                raise DifffitInputError(
                    f"{self.dir}: nothing to resume (no {self.state_path.relative_to(self.dir)})"
                    f"; choose an empty folder, or pass {opt('force', True)} to start afresh")
            raise FileExistsError(
                f"output folder {self.dir} already exists and is not empty; choose another, "
                f"resume the run recorded there ({opt('resume', True)}), or pass "
                f"{opt('force', True)} to start anew in it")
        if busy:
            self.clear()
        self.dir.mkdir(parents=True, exist_ok=True)
        return None

    def read_state(self) -> dict:
        try:
            state = json.loads(self.state_path.read_text())
            if not isinstance(state, dict) or "key" not in state:
                raise ValueError("no run key in it")
            return state
        except (OSError, ValueError) as exc:
            raise DifffitInputError(f"{self.state_path}: not a difffit {self.what} state file: "
                                    f"{exc}") from exc

    def write_state(self, state: dict) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.state_path, state)

    def clear(self) -> None:
        """Remove a previous run's state and owned files (only those)."""
        self.state_path.unlink(missing_ok=True)
        for pattern in self.owned:
            for p in self.dir.glob(pattern):
                shutil.rmtree(p) if p.is_dir() else p.unlink()

    # Parts: one JSON file per finished unit of work (identify's batches).

    def part_path(self, name: str) -> Path:
        return self.state_path.parent / f"{name}.json"

    def save_part(self, name: str, doc: dict) -> None:
        write_json(self.part_path(name), doc)

    def load_part(self, name: str) -> dict | None:
        """A saved part, or None when there is none (or it cannot be read: recomputed)."""
        p = self.part_path(name)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except ValueError:
            return None
