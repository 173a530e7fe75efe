"""Reading a run's outputs back: the placements of a fit, composite or identify folder, and
the recorded trajectories of a fit as poses of the input files.

    run = difffit.read_results("out/")       # the folder of a fit, composite or identify run
    best = run.best("subunit")               # a Placement, as FitResult.best gives it
    moved = run.structure("subunit")         # read from its file, in that placement

    traj = read_trajectories("out/trajectories.npz")
    R, t = traj.poses("subunit")             # [K, S, 3, 3], [K, S, 3]: x -> R x + t

Every placement read back acts on the coordinates of the input file, x -> R x + t
(README "Output files"), so it needs neither the selection nor the centroid of the run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DifffitInputError
from .params import METRICS
from .results import (Candidate, CompositePlacement, Placement, _index, _nan, _Placements,
                      score_column)
from .structures import Structure, read_structure

__all__ = ["read_results", "SavedRun", "read_trajectories", "Trajectories"]

# The JSON of each kind of run: file name -> (kind, the key of its rows).
_DOCUMENTS = {"results.json": ("fit", "placements"), "summary.json": ("composite", "placements"),
              "ranking.json": ("identify", "candidates")}


@dataclass
class SavedRun(_Placements):
    """The placements of a run, read from its output folder; the same accessors as the
    results of the workflows (``for_structure``, ``best``, ``rows``).

    Attributes:
        kind: "fit", "composite" or "identify".
        path: the JSON read (results.json, summary.json or ranking.json).
        placements: :class:`Placement` (fit), :class:`CompositePlacement` (composite) or
            :class:`Candidate` (identify) objects, in the order of the file (best first;
            composite: in order of acceptance).
        score_metric: what ``score`` is (e.g. "cam").
        document: the whole JSON document.
    """

    kind: str
    path: Path
    placements: list
    score_metric: str
    document: dict = field(repr=False)

    @property
    def structures(self) -> list[dict]:
        """The inputs as recorded (index, name, path, ...); identify: its candidates."""
        if self.kind == "identify":
            return [{"index": c.index, "name": c.name, "path": c.source}
                    for c in sorted(self.placements, key=lambda c: c.index)]
        return list(self.document["structures"])

    def _names(self) -> list[str]:
        names = [""] * (max((s["index"] for s in self.structures), default=-1) + 1)
        for s in self.structures:
            names[s["index"]] = s["name"]
        return names

    def rows(self) -> list[dict]:
        """The rows as written (CSV columns)."""
        return list(self.document[_DOCUMENTS[self.path.name][1]])

    def structure(self, key: int | str, moved: bool = True) -> Structure:
        """A structure read again from its recorded file (``read_structure`` defaults), in
        its best placement when ``moved``. ``key``: its name or 0-based input position."""
        rec = next(s for s in self.structures if s["index"] == _index(self._names(), key))
        if not rec.get("path") or not Path(rec["path"]).is_file():
            raise DifffitInputError(f"{self.path}: the file of {rec['name']} is not at "
                                    f"{rec.get('path')!r} any more")
        s = read_structure(rec["path"])
        return self.best(rec["index"]).moved(s) if moved else s

    def trajectories(self) -> "Trajectories":
        """The recorded trajectories of a fit (its trajectories.npz)."""
        return read_trajectories(self.path.parent / "trajectories.npz")


def _pose(row: dict) -> dict:
    """rotation [3, 3], translation [3], centre [3] from the pose columns (the inverse of
    :func:`difffit.tables.pose_columns`; null, i.e. NaN, stays NaN)."""
    return {"rotation": np.array([[_nan(row[f"r{i}{j}"]) for j in (1, 2, 3)] for i in (1, 2, 3)]),
            "translation": np.array([_nan(row[f"t{a}"]) for a in "xyz"]),
            "centre": np.array([_nan(row[f"c{a}"]) for a in "xyz"])}


def _placement(kind: str, row: dict, score: str, names: list[str]):
    """A placement from its row: the pose, score and metrics, the index of its structure,
    then every other field of its class that the row has a column of (rank, hits, ...)."""
    cls = {"fit": Placement, "composite": CompositePlacement, "identify": Candidate}[kind]
    given = {**_pose(row), "score": _nan(row[score]),
             "metrics": {k: _nan(row[k]) for k in METRICS if k in row}}
    if kind == "identify":
        given.update(index=int(row["input"]) - 1, source=row["file"])
    else:
        given["structure_index"] = (int(row["input"]) - 1 if "input" in row
                                    else names.index(row["structure"]))
        given["structure_name"] = row["structure"]
    if kind == "composite":
        given["chains"] = row["chains"].split()
    for name, f in cls.__dataclass_fields__.items():
        if name not in given and name in row:
            # JSON null is a NaN of a float field; other fields take their type's value.
            kind_of = {"float": float, "int": int, "bool": bool}.get(str(f.type))
            v = row[name]
            given[name] = _nan(v) if kind_of is float else kind_of(v) if kind_of else v
    return cls(**given)


def read_results(folder) -> SavedRun:
    """The placements of a run, read from its output folder.

    Args:
        folder: the output folder of ``difffit fit`` (results.json), ``composite``
            (summary.json) or ``identify`` (ranking.json); or that JSON file itself.

    Returns:
        SavedRun: ``placements`` as the run's result held them, ``best(name)``,
        ``for_structure(name)``, ``structure(name)``.

    Raises:
        DifffitInputError: no results JSON there, or one that cannot be read.
    """
    p = Path(folder)
    candidates = [p] if p.is_file() else [p / name for name in _DOCUMENTS]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise DifffitInputError(f"{p}: no difffit results here (looked for "
                                f"{', '.join(_DOCUMENTS)})")
    try:
        doc = json.loads(path.read_text())
        kind, key = _DOCUMENTS[path.name]
        metric = doc.get("score_metric") or doc.get("score") or doc["params"]["rank_by"]
        # Rows written before the score column named its metric have a plain "score".
        score = next((c for c in (doc.get("score_column"), score_column(metric), "score")
                      if c and doc[key] and c in doc[key][0]), score_column(metric))
        names = [s["name"] for s in doc.get("structures", [])]
        placements = [_placement(kind, row, score, names) for row in doc[key]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DifffitInputError(f"{path}: not a difffit results file this version reads: "
                                f"{type(exc).__name__}: {exc}") from exc
    return SavedRun(kind=kind, path=path, placements=placements, score_metric=metric,
                    document=doc)


@dataclass
class Trajectories:
    """The recorded search of a fit (trajectories.npz).

    Attributes:
        quat: [K, S, 4] quaternions (w, x, y, z) of every start at every recorded step.
        trans: [K, S, 3] translations (Angstrom) in the centred frame: start s moves atom x
            of the input file to R(quat) (x - centroids[mol_idx[s]]) + trans.
        score: [K, S] the search score (pyramid_score) at those poses.
        iteration: [K] the iteration of each recorded step.
        mol_idx: [S] the structure of each start.
        structure_names: [M] names; centroids: [M, 3] the fitted atoms' centroids.
        convention: the pose convention, as written in the file.
    """

    quat: np.ndarray
    trans: np.ndarray
    score: np.ndarray
    iteration: np.ndarray
    mol_idx: np.ndarray
    structure_names: list[str]
    centroids: np.ndarray
    convention: str

    def starts(self, key: int | str) -> np.ndarray:
        """[S_i] indices of the starts of one structure (name or 0-based position)."""
        return np.flatnonzero(self.mol_idx == _index(self.structure_names, key))

    def poses(self, key: int | str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The recorded poses on the input coordinates, x -> R x + t.

        Args:
            key: one structure's starts (name or 0-based position); None: all starts.

        Returns:
            R [K, S, 3, 3] and t [K, S, 3] (Angstrom), S the starts selected.
        """
        import torch

        from .rotations import quat_to_matrix

        sel = slice(None) if key is None else self.starts(key)
        q = np.asarray(self.quat[:, sel], dtype=np.float64)
        R = quat_to_matrix(torch.from_numpy(q)).numpy()                    # [K, S, 3, 3]
        c = self.centroids[self.mol_idx[sel]]                              # [S, 3]
        t = self.trans[:, sel].astype(np.float64) - np.einsum("ksij,sj->ksi", R, c)
        return R, t


def read_trajectories(path, centroids=None, names=None) -> Trajectories:
    """Read a fit's trajectories.npz.

    Args:
        path: the file.
        centroids, names: [M, 3] fitted-atom centroids and [M] names of the structures,
            needed only for a file written before they were recorded in it
            (``Structure.centroid`` of each structure read with the run's selection).

    Raises:
        DifffitInputError: not a trajectories file, or one without centroids and none given.
    """
    try:
        with np.load(Path(path), allow_pickle=False) as npz:
            arrays: dict[str, Any] = {k: npz[k] for k in npz.files}
        cs = arrays["centroids"] if centroids is None and "centroids" in arrays else centroids
        if cs is None:
            raise DifffitInputError(
                f"{path}: no centroids recorded (written by an older difffit); pass "
                f"centroids= (the Structure.centroid of every structure of the fit)")
        cs = np.asarray(cs, dtype=np.float64).reshape(-1, 3)
        got = arrays.get("structure_names", names)
        return Trajectories(
            quat=arrays["quat"], trans=arrays["trans"], score=arrays["score"],
            iteration=arrays["iteration"], mol_idx=arrays["mol_idx"].astype(np.int64),
            structure_names=[str(n) for n in (got if got is not None else range(len(cs)))],
            centroids=cs, convention=str(arrays.get("convention", "")))
    except (OSError, ValueError, KeyError) as exc:
        raise DifffitInputError(f"{path}: not a difffit trajectories file: {exc}") from exc
