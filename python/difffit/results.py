"""What the workflows return: placements and the results that hold them.

Every placement (a ranked cluster of a fit, an accepted copy of composite, a candidate's
best placement in identify) is a :class:`Pose`: rotation and translation acting on the
input coordinates (x -> R x + t), where the fitted atoms' centroid lands, the score, the
hits and every metric. Every result answers the same questions the same way:

* ``result.for_structure(key)``: the placements of one structure, best first; ``key`` is
  the structure's name or its 0-based input position;
* ``result.best(key=None)``: the best placement of that structure (or of all);
* ``result.rows()``: one flat dict per placement (the CSV / JSON rows), pose columns from
  :func:`difffit.tables.pose_columns`;
* ``result.summary_table()``: a short text table.

Ranks are 1-based everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import DifffitInputError
from .maps import DensityMap
from .params import METRICS, AcceptRules, FitParams
from .structures import Structure, combine, read_structure
from .tables import fmt_centre, pose_columns, text_table

__all__ = ["Pose", "Placement", "FitResult", "CompositePlacement", "RoundRecord",
           "CompositeResult", "Candidate", "IdentifyResult", "score_column"]


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def score_column(metric: str) -> str:
    """The name of the score column of result rows: the score with its metric,
    ``"score (cam)"``, so that a table read alone says what its score is."""
    return f"score ({metric})"


@dataclass
class Pose:
    """A placement of a structure.

    Attributes:
        rotation: [3, 3] and translation: [3] on the input coordinates, x -> R x + t.
        centre: [3] where the placement puts the fitted atoms' centroid (Angstrom).
        score: the ranking metric's value.
        hits: size of its cluster (starts that reached it).
        metrics: every fit metric (:data:`difffit.params.METRICS`).
    """

    rotation: np.ndarray
    translation: np.ndarray
    centre: np.ndarray
    score: float
    hits: int
    metrics: dict[str, float]

    def moved(self, structure: Structure) -> Structure:
        """The structure moved into this placement."""
        return structure.transformed(self.rotation, self.translation)

    def pose_columns(self) -> dict:
        """``r11..r33``, ``tx ty tz``, ``cx cy cz``."""
        return pose_columns(self.rotation, self.translation, self.centre)

    def metric(self, name: str) -> float:
        return float(self.metrics.get(name, float("nan")))


def _index(names: Sequence[str], key: int | str, what: str = "structure") -> int:
    """0-based position of a structure given by name or position."""
    if isinstance(key, str):
        if key not in names:
            raise KeyError(f"no {what} named {key!r}; have {list(names)[:20]}")
        return list(names).index(key)
    i = int(key)
    if not 0 <= i < len(names):
        raise KeyError(f"{what} index {i} out of range 0..{len(names) - 1}")
    return i


class _Placements:
    """The shared accessors; subclasses hold ``placements`` and define ``_names``."""

    placements: list

    def _names(self) -> list[str]:
        raise NotImplementedError

    def _of(self, p) -> int:
        return p.structure_index

    def for_structure(self, key: int | str) -> list:
        """Placements of one structure (name or 0-based input position), best first."""
        i = _index(self._names(), key)
        return [p for p in self.placements if self._of(p) == i]

    def best(self, key: int | str | None = None):
        """The best placement of one structure, or of all when ``key`` is None."""
        found = self.placements if key is None else self.for_structure(key)
        found = [p for p in found if np.isfinite(p.score)]
        if not found:
            raise KeyError(f"{'no' if key is None else repr(key) + ' has no'} placement")
        return max(found, key=lambda p: p.score)


# ----------------------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------------------


@dataclass
class Placement(Pose):
    """One ranked cluster of a fit: a placement of one structure.

    Attributes (besides :class:`Pose`'s):
        structure_index: 0-based input position; structure_name: its name.
        rank: 1-based, within its structure.
        iteration: recorded iteration of the representative start.
        start: index of the representative's start (within its structure).
        refined: whether it was refined against the unsmoothed map (its metrics are then
            ChimeraX-exact when it is among the structure's ``exact_top`` best).
        zscore: (score - mean) / std of the scores of all the structure's clusters.
        copy: with ``copies``: its copy number (1, 2, ...) when it is one of the distinct
            copies ranked first, else 0.
    """

    structure_index: int
    structure_name: str
    rank: int
    iteration: int
    start: int
    refined: bool
    zscore: float = float("nan")
    copy: int = 0

    def row(self, score_name: str) -> dict:
        """The CSV / JSON row; ``score_name``: the ranking metric (the fit's ``rank_by``)."""
        return {"structure": self.structure_name, "input": self.structure_index + 1,
                "rank": self.rank, "hits": self.hits, score_column(score_name): self.score,
                **self.metrics, **self.pose_columns(),
                "iteration": self.iteration, "start": self.start, "refined": self.refined,
                "zscore": self.zscore, "copy": self.copy}


@dataclass
class FitResult(_Placements):
    """The outcome of :func:`difffit.fit`: ranked placements of every structure."""

    placements: list[Placement]
    structures: list[Structure]
    map: DensityMap
    params: FitParams
    resolution: float
    threshold: float
    timings: dict[str, float] = field(default_factory=dict)
    trajectory: dict[str, np.ndarray] = field(default_factory=dict)
    # structure name -> why its answer is not clearly separated (copies.significance)
    ambiguous: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the fit noticed about its inputs

    def _names(self) -> list[str]:
        return [s.name for s in self.structures]

    def rows(self) -> list[dict]:
        """One flat dict per placement (for CSV / JSON), best first."""
        return [p.row(self.params.rank_by) for p in self.placements]

    def summary_table(self, top: int = 3) -> str:
        """The top placements of every structure: rank, hits, correlation, cam, fraction
        of atoms inside the contour, where the centroid lands. Structures in order of
        their best score. No trailing newline."""
        order: list[int] = []
        for p in self.placements:  # sorted by score, best first
            if p.structure_index not in order:
                order.append(p.structure_index)
        lines = [(p.structure_name, str(p.rank), str(p.hits), f"{p.metric('correlation'):.3f}",
                  f"{p.metric('cam'):.3f}", f"{p.zscore:.1f}", f"{p.metric('inside_fraction'):.2f}",
                  fmt_centre(p.centre))
                 for i in order for p in self.for_structure(i)[: max(int(top), 0)]]
        text = text_table(("structure", "rank", "hits", "corr", "cam", "z", "inside",
                           "centroid (x, y, z) A"), lines)
        missing = [s.name for k, s in enumerate(self.structures) if k not in order]
        if missing:
            text.append(f"no placement for: {', '.join(missing)}")
        text += [f"ambiguous: {name}: {why}" for name, why in self.ambiguous.items()]
        return "\n".join(text)


# ----------------------------------------------------------------------------------------
# composite
# ----------------------------------------------------------------------------------------


@dataclass
class CompositePlacement(Pose):
    """One accepted copy of a structure.

    Attributes (besides :class:`Pose`'s; score and metrics are measured on the working
    map of its round):
        structure_index: 0-based input position; structure_name: its name.
        copy: 1-based copy number of this structure (in order of acceptance).
        round: 1-based round in which it was accepted.
        chains: its chain names in the composite model (``<chain>_<input>_<copy>``).
    """

    structure_index: int
    structure_name: str
    copy: int
    round: int
    chains: list[str]

    def row(self, score_name: str) -> dict:
        """The CSV / JSON row; ``score_name``: the ranking metric (the fit's ``rank_by``)."""
        return {"structure": self.structure_name, "input": self.structure_index + 1,
                "copy": self.copy, "chains": " ".join(self.chains), "round": self.round,
                score_column(score_name): self.score, "hits": self.hits, **self.metrics,
                **self.pose_columns()}

    @classmethod
    def from_dict(cls, d: dict) -> "CompositePlacement":
        """Inverse of ``dataclasses.asdict`` after a JSON round trip."""
        return cls(
            structure_index=int(d["structure_index"]), structure_name=d["structure_name"],
            copy=int(d["copy"]), round=int(d["round"]),
            rotation=np.asarray(d["rotation"], dtype=np.float64).reshape(3, 3),
            translation=np.asarray(d["translation"], dtype=np.float64).reshape(3),
            centre=np.asarray(d["centre"], dtype=np.float64).reshape(3),
            score=float(d["score"]), hits=int(d["hits"]),
            metrics={k: _nan(v) for k, v in d["metrics"].items()}, chains=list(d["chains"]))


@dataclass
class RoundRecord:
    """What one composite round did.

    Attributes:
        index: 1-based round number.
        fitted: indices of the structures fitted in this round.
        accepted: the placements accepted in this round.
        candidates: one dict per candidate (structure, rank, score, ..., decision, reason).
        timings: seconds (fit, decide, zero).
        remaining: fraction of the input map's density above the contour (summed values)
            still unexplained after this round.
        working_map: path of the map after this round's zeroing (None in memory, or when
            nothing was accepted).
    """

    index: int
    fitted: list[int]
    accepted: list[CompositePlacement]
    candidates: list[dict]
    timings: dict[str, float] = field(default_factory=dict)
    remaining: float = float("nan")
    working_map: str | None = None


@dataclass
class CompositeResult(_Placements):
    """The outcome of :func:`difffit.composite`.

    Attributes:
        placements: every accepted copy, in order of acceptance.
        structures: the input structures (input coordinates).
        map: the input map; ``working_map``: what is left after the last zeroing.
        rounds: one RoundRecord per round run (resumed rounds included).
        copies: the copy numbers asked for per structure (None: open).
        stop_reason: why the run stopped.
        outdir: the output folder, when written; ``paths``: the final files.
        symmetry: the :class:`difffit.symmetry.Symmetry` used (its axis, centre and
            self-correlation), or None.
    """

    placements: list[CompositePlacement]
    structures: list[Structure]
    map: DensityMap
    working_map: DensityMap
    resolution: float
    threshold: float
    params: FitParams
    rules: AcceptRules
    copies: list[int | None]
    rounds: list[RoundRecord]
    stop_reason: str
    outdir: Path | None = None
    paths: dict[str, Path] = field(default_factory=dict)
    symmetry: Any = None  # difffit.symmetry.Symmetry used (composite / assemble), or None

    def _names(self) -> list[str]:
        return [s.name for s in self.structures]

    def model(self) -> Structure:
        """All placed chains as one Structure, chains renamed ``<chain>_<input>_<copy>``."""
        return combine([(p.moved(self.structures[p.structure_index]), p.chains)
                        for p in self.placements], name="composite")

    def rows(self) -> list[dict]:
        """One flat dict per accepted copy (for CSV / JSON)."""
        return [p.row(self.params.rank_by) for p in self.placements]

    def summary_table(self) -> str:
        """A text table of the placed copies (no trailing newline)."""
        lines = [(p.structure_name, str(p.copy), ",".join(p.chains), str(p.round),
                  f"{p.score:.3f}", f"{p.metric('correlation'):.3f}",
                  f"{p.metric('inside_fraction'):.2f}", str(p.hits), fmt_centre(p.centre))
                 for p in self.placements]
        text = text_table(("structure", "copy", "chains", "round", "score", "corr", "inside",
                           "hits", "centroid (x, y, z) A"), lines, left=(0, 2))
        counts = [len(self.for_structure(i)) for i in range(len(self.structures))]
        for i, s in enumerate(self.structures):
            want = self.copies[i]
            if want is not None and counts[i] < want:
                text.append(f"{s.name}: {counts[i]} of {want} copies placed")
        text.append(f"{len(self.placements)} copies placed in {len(self.rounds)} round(s); "
                    f"stopped: {self.stop_reason}")
        return "\n".join(text)


# ----------------------------------------------------------------------------------------
# identify
# ----------------------------------------------------------------------------------------


@dataclass
class Candidate(Pose):
    """One library structure, its best placement (the :class:`Pose` fields; NaN when it
    has none) and the evidence for it.

    Attributes (besides :class:`Pose`'s):
        index: 0-based position in the library.
        name: the structure's name (file stem).
        source: its file, or ``"<memory>"`` for a Structure given in memory.
        n_atoms, n_fit_atoms: atoms kept and atoms fitted.
        batch: the batch it was fitted in.
        zscore: how far the best placement stands out from the candidate's other
            clusters (NaN with fewer than three clusters).
        n_clusters: number of distinct placements found.
        placements: the best few placements as dicts (score, hits, rotation,
            translation, centre, metrics), best first.
        cluster_scores: mean, std and count of the ``rank_by`` metric over its clusters.
        rank: 1-based rank in the library.
        screened: left out by identify's first pass: no full fit, no score; its pose and
            metrics are the first pass's coarse estimate (it ranks after every fitted
            candidate, by that estimate).

    ``score`` is the size-fair ranking score (:class:`difffit.IdentifyParams`).
    """

    index: int
    name: str
    source: str
    n_atoms: int
    n_fit_atoms: int
    batch: int
    zscore: float
    n_clusters: int
    placements: list[dict] = field(default_factory=list)
    cluster_scores: dict[str, float] = field(default_factory=dict)
    rank: int = 0
    screened: bool = False

    @property
    def structure_index(self) -> int:
        return self.index

    @property
    def structure_name(self) -> str:
        return self.name

    def row(self, score_name: str) -> dict:
        """The CSV / JSON row; ``score_name``: the ranking score (identify's ``score``)."""
        return {"rank": self.rank, "name": self.name, "input": self.index + 1,
                score_column(score_name): self.score,
                "zscore": self.zscore, "hits": self.hits, "n_clusters": self.n_clusters,
                "n_atoms": self.n_atoms, "n_fit_atoms": self.n_fit_atoms,
                **{k: self.metrics.get(k, float("nan")) for k in METRICS},
                **self.pose_columns(), "batch": self.batch,
                "fit": "first pass only" if self.screened else "full", "file": self.source}

    @classmethod
    def from_dict(cls, d: dict) -> "Candidate":
        """From the JSON-able evidence of a batch (None for missing numbers)."""
        d = dict(d)
        for k, shape in (("rotation", (3, 3)), ("translation", (3,)), ("centre", (3,))):
            d[k] = np.full(shape, np.nan) if d.get(k) is None else np.asarray(d[k], dtype=np.float64)
        for k in ("score", "zscore"):
            d[k] = _nan(d.get(k))
        d["metrics"] = {k: _nan(v) for k, v in d["metrics"].items()}
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class IdentifyResult(_Placements):
    """The ranked library of :func:`difffit.identify`.

    Attributes:
        candidates: every candidate, best first (``rank`` 1, 2, ...); ``placements`` is
            the same list.
        map: the target map.
        resolution, threshold: as used (the threshold resolved once for all batches).
        params: the FitParams of every batch (``device`` may read "auto").
        score: the ranking score's name (a metric of METRICS or "zscore").
        batch_atoms: the batch bound in fitted atoms.
        batches: one dict per batch: batch, indices, n_fit_atoms, seconds, device,
            worker, from_checkpoint (True when loaded on resume, not computed).
        skipped: (file, reason) of library files left out with ``skip_bad``.
        timings: seconds: "read_library", "fit" (this call), "total".
        outdir: the output folder, if any.
    """

    candidates: list[Candidate]
    map: DensityMap
    resolution: float
    threshold: float
    params: FitParams
    score: str
    batch_atoms: int
    batches: list[dict]
    skipped: list[tuple[str, str]]
    timings: dict[str, float] = field(default_factory=dict)
    outdir: Path | None = None
    selection: str = "backbone"
    _library: list[Any] = field(default_factory=list, repr=False)  # sources, by index

    @property
    def placements(self) -> list[Candidate]:
        return self.candidates

    def _names(self) -> list[str]:
        names = [""] * (max((c.index for c in self.candidates), default=-1) + 1)
        for c in self.candidates:
            names[c.index] = c.name
        return names

    def _of(self, c: Candidate) -> int:
        return c.index

    def ranking(self) -> list[str]:
        """Candidate names, best first."""
        return [c.name for c in self.candidates]

    def at_rank(self, rank: int) -> Candidate:
        """The candidate of 1-based rank ``rank``."""
        if not 1 <= int(rank) <= len(self.candidates):
            raise KeyError(f"rank {rank} out of range 1..{len(self.candidates)}")
        return self.candidates[int(rank) - 1]

    def structure(self, key: Candidate | int | str, moved: bool = True) -> Structure:
        """A candidate's structure (read again from its file), in its best placement when
        ``moved`` (otherwise as in the file). ``key``: a Candidate, a name or a 0-based
        library position."""
        c = key if isinstance(key, Candidate) else self.for_structure(key)[0]
        src = self._library[c.index] if self._library else c.source
        s = src if isinstance(src, Structure) else read_structure(src, selection=self.selection)
        if moved:
            if not np.all(np.isfinite(c.rotation)):
                raise DifffitInputError(f"candidate {c.name} has no placement")
            s = s.transformed(c.rotation, c.translation)
        return s

    def rows(self) -> list[dict]:
        """One flat dict per candidate, best first (for CSV / JSON)."""
        return [c.row(self.score) for c in self.candidates]

    def summary_table(self, top: int = 10) -> str:
        """A short ranked text table of the best ``top`` candidates (no trailing newline)."""
        shown = self.candidates[: max(int(top), 0)]
        # Beside the ranking score, the other of cam and z (z twice says nothing).
        other = "cam" if self.score == "zscore" else "z"
        lines = [(str(c.rank), c.name + (" *" if c.screened else ""), str(c.n_atoms),
                  "-" if c.screened else f"{c.score:.3f}",
                  _number(c.metric("cam"), 3) if other == "cam" else
                  "-" if c.screened else f"{c.zscore:.2f}",
                  "-" if c.screened else str(c.hits), _number(c.metric('correlation'), 3),
                  _number(c.metric('inside_fraction'), 2), fmt_centre(c.centre)) for c in shown]
        text = text_table(("rank", "candidate", "atoms", self.score, other, "hits", "corr",
                           "inside", "centre (x, y, z) A"), lines, left=(1,))
        if len(self.candidates) > len(lines):
            text.append(f"... {len(self.candidates) - len(lines)} more in ranking.csv")
        n_screened = sum(c.screened for c in self.candidates)
        if n_screened:
            text.append(f"* screened out by the first pass ({n_screened} in all): not fitted fully, "
                        f"no model written; corr and centre are its coarse estimate "
                        f"(ranking.csv: fit = first pass only)")
        return "\n".join(text)


def _number(x: float, digits: int) -> str:
    """A table cell: the number, or "-" when there is none (NaN)."""
    return f"{x:.{digits}f}" if np.isfinite(x) else "-"
