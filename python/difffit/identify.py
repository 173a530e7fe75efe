"""Identify: which structure is this density? Fit every candidate of a library into a
map and rank the candidates by a size-fair score, with the evidence beside each one.

Pipeline (docs: ../shared/docs/method.md sections 1 (use 3), 5-7, 8 "bounded memory"):

1. The library (a folder, a list of files, or a text file listing paths) is read once to
   check every file and count its fitted atoms; nothing but the counts is kept.
2. Candidates are cut, in library order, into batches of at most ``batch_atoms`` fitted
   atoms (a candidate larger than that gets a batch of its own), so memory stays bounded
   however large the library is. Each batch goes through :func:`difffit.fit.fit` (the
   ragged kernel: one launch for all candidates of the batch).
3. Of each candidate only the evidence is kept: its best placement (rotation, translation,
   hits, all metrics), its next best placements, and the statistics of its clusters.
4. Candidates are ranked by the size-fair score (below), best first.

Size-fair score. The default is ``cam`` of the candidate's best placement: the ChimeraX
``fitmap`` correlation about the mean between the candidate's simulated map and the
target, over the simulated map's own grid points. It is a normalised correlation, not a
sum over atoms or points, so a candidate is not rewarded for being large; a candidate
that overhangs the density is penalised, since its simulated density outside the map's
envelope meets low target values. A sum (``overlap``, or the DiffFit score times the atom
count) favours large candidates: on the DiffFit demo density the actin subunits (1472
fitted atoms, cam 0.05) and the 4-chain haemoglobin (2296, cam 0.045, 13 % of its atoms
inside the contour) get twice the overlap of the small phage chain (608, cam 0.13)
(tests/test_identify.py). ``score="zscore"`` ranks instead by how far the best placement
stands out from the candidate's own other placements, ``(best - mean) / std`` of the
``rank_by`` metric over them (DomainFit-style; NaN with fewer than two others): on the
demo density both PACRG domains score 17-19 against at most 3.9 for the decoys (cam 0.38-
0.40 against at most 0.13). It depends on the number of starts, so cam is the default;
both are always reported.

Checkpoints. With ``outdir``, every finished batch is written at once (atomically) to
``outdir/checkpoint/batch_NNNNN.json``; ``checkpoint/state.json`` holds the run's settings
and the batch plan. An interrupted run (Ctrl-C, a killed job) continues with
``resume=True`` (``--resume``): finished batches are loaded, not recomputed, and the
ranking is the same as an uninterrupted run's (the search is seeded and every candidate's
fit is independent of its batch mates).

Dask. With ``client`` (a ``dask.distributed.Client``) every pending batch is a task on
the cluster; workers read the candidate files themselves (so on several machines the paths
must be on a shared filesystem), fit on their own GPU when they have one (``device=
"auto"``) and otherwise on their CPU cores, and the driver checkpoints each batch as it
arrives, then ranks. The ranking does not depend on which worker fitted what.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import DifffitInputError
from .fit import METRICS, FitParams, fit
from .io import DensityMap, Structure, _atomic_write_bytes, read_map, read_structure, write_structure
from .output import _check_outdir, _csv_text, _jsonable, _model_args, _safe_name, _version

__all__ = ["identify", "identify_report", "write_identify_outputs", "library_files",
           "Candidate", "IdentifyResult", "SCORES", "add_cli"]

SCORES = METRICS + ("zscore",)
# Per-point (normalised) metrics: fair across candidate sizes. The rest are sums.
_SIZE_FAIR = ("cam", "correlation", "atom_cam", "atom_correlation", "inside_fraction",
              "mean_density", "atom_overlap", "pyramid_score", "zscore")
_STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")
_LIST_SUFFIXES = (".txt", ".lst", ".list")
_KEEP_PLACEMENTS = 3   # placements kept per candidate as evidence (the best and the next)
_STATE_VERSION = 1


# ----------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """One library structure and the evidence for it.

    Attributes:
        index: 0-based position in the library.
        name: the structure's name (file stem).
        source: its file, or ``"<memory>"`` for a Structure given in memory.
        n_atoms, n_fit_atoms: atoms kept and atoms fitted.
        batch: the batch it was fitted in.
        score: the size-fair ranking score (see the module docstring); NaN when the
            candidate has no placement.
        zscore: how far the best placement stands out from the candidate's other
            clusters (NaN with fewer than three clusters).
        hits: size of the best placement's cluster.
        n_clusters: number of distinct placements found.
        metrics: every metric of the best placement (fit.METRICS).
        rotation: [3, 3], translation: [3]: the best placement on the original
            coordinates, x -> R x + t.
        centre: [3] where the best placement puts the fitted-atom centroid (Angstrom).
        placements: the best few placements as dicts (score, hits, rotation,
            translation, centre, metrics), best first.
        cluster_scores: mean, std and count of the ``rank_by`` metric over its clusters.
        rank: 1-based rank in the library.
    """

    index: int
    name: str
    source: str
    n_atoms: int
    n_fit_atoms: int
    batch: int
    score: float
    zscore: float
    hits: int
    n_clusters: int
    metrics: dict[str, float]
    rotation: np.ndarray
    translation: np.ndarray
    centre: np.ndarray
    placements: list[dict] = field(default_factory=list)
    cluster_scores: dict[str, float] = field(default_factory=dict)
    rank: int = 0

    @classmethod
    def _from_dict(cls, d: dict) -> "Candidate":
        d = dict(d)
        for k, shape in (("rotation", (3, 3)), ("translation", (3,)), ("centre", (3,))):
            d[k] = np.full(shape, np.nan) if d.get(k) is None else np.asarray(d[k], dtype=np.float64)
        for k in ("score", "zscore"):
            d[k] = float("nan") if d.get(k) is None else float(d[k])
        d["metrics"] = {k: float("nan") if v is None else float(v) for k, v in d["metrics"].items()}
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class IdentifyResult:
    """The ranked library.

    Attributes:
        candidates: every candidate, best first (``rank`` 1, 2, ...).
        map: the target map.
        resolution, threshold: as used (the threshold resolved once for all batches).
        params: the FitParams of every batch (``device`` may read "auto").
        score: the ranking score's name (a metric of fit.METRICS or "zscore").
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

    def ranking(self) -> list[str]:
        """Candidate names, best first."""
        return [c.name for c in self.candidates]

    def candidate(self, key: int | str) -> Candidate:
        """A candidate by name, or by 1-based rank."""
        if isinstance(key, str):
            for c in self.candidates:
                if c.name == key:
                    return c
            raise KeyError(f"no candidate named {key!r}")
        return self.candidates[int(key) - 1]

    def structure(self, c: Candidate | str | int, moved: bool = True) -> Structure:
        """The candidate's structure (read again from its file), in its best placement
        when ``moved`` (otherwise as in the file)."""
        c = c if isinstance(c, Candidate) else self.candidate(c)
        src = self._library[c.index] if self._library else c.source
        s = src if isinstance(src, Structure) else read_structure(src, selection=self.selection)
        if moved:
            if not np.all(np.isfinite(c.rotation)):
                raise DifffitInputError(f"candidate {c.name} has no placement")
            s = s.transformed(c.rotation, c.translation)
        return s

    def rows(self) -> list[dict]:
        """One flat dict per candidate, best first (for CSV / JSON)."""
        out = []
        for c in self.candidates:
            row = {"rank": c.rank, "name": c.name, f"score ({self.score})": c.score,
                   "zscore": c.zscore, "hits": c.hits, "n_clusters": c.n_clusters,
                   "n_atoms": c.n_atoms, "n_fit_atoms": c.n_fit_atoms}
            row.update({k: c.metrics.get(k, float("nan")) for k in METRICS})
            row.update({"cx": float(c.centre[0]), "cy": float(c.centre[1]),
                        "cz": float(c.centre[2])})
            row.update({f"r{i + 1}{j + 1}": float(c.rotation[i, j]) for i in range(3) for j in range(3)})
            row.update({"tx": float(c.translation[0]), "ty": float(c.translation[1]),
                        "tz": float(c.translation[2]), "batch": c.batch, "file": c.source})
            out.append(row)
        return out


# ----------------------------------------------------------------------------------------
# The library
# ----------------------------------------------------------------------------------------


def _is_structure_file(p: Path) -> bool:
    name = p.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(_STRUCTURE_SUFFIXES)


def library_files(library) -> list[str | Structure]:
    """The library's entries in order: absolute file paths (str; Dask workers and resumed
    runs may start elsewhere) and in-memory Structures.

    Args:
        library: a folder (every .pdb/.ent/.cif/.mmcif file in it, optionally .gz, sorted
            by name; subfolders are not searched, so an output folder inside it is never
            taken for candidates), a structure file, a text file (.txt/.lst/.list) listing
            one path per line (blank lines and ``#`` comments ignored; relative paths are
            relative to the list's folder), a Structure, or a list of any of these.

    Raises:
        DifffitInputError: a path that does not exist, or a library with no structure.
    """
    items = [library] if isinstance(library, (str, Path, Structure)) else list(library)
    out: list[str | Structure] = []
    for item in items:
        if isinstance(item, Structure):
            out.append(item)
            continue
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and _is_structure_file(f))
            if not found:
                raise DifffitInputError(f"{p}: library folder holds no PDB/mmCIF files "
                                        f"({', '.join(_STRUCTURE_SUFFIXES)}, optionally .gz)")
            out += [os.path.abspath(f) for f in found]
        elif p.is_file() and p.name.lower().endswith(_LIST_SUFFIXES):
            for n, line in enumerate(p.read_text().splitlines(), 1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                q = Path(line) if Path(line).is_absolute() else p.parent / line
                if not q.is_file():
                    raise DifffitInputError(f"{p}, line {n}: {q} is not a file")
                out.append(os.path.abspath(q))
        elif p.exists():
            out.append(os.path.abspath(p))
        else:
            raise DifffitInputError(f"{p}: library path does not exist")
    if not out:
        raise DifffitInputError("the library holds no structure")
    return out


@dataclass
class _Entry:
    index: int
    source: str | Structure
    name: str
    n_atoms: int
    n_fit_atoms: int
    fingerprint: str   # of the fitted coordinates: a changed file is noticed on resume

    @property
    def label(self) -> str:
        return self.source if isinstance(self.source, str) else "<memory>"


def _fingerprint(s: Structure) -> str:
    return f"{zlib.crc32(np.ascontiguousarray(s.fit_coords).tobytes()):08x}-{s.n_atoms}"


def _read_library(sources, selection: str, skip_bad: bool, progress: bool
                  ) -> tuple[list[_Entry], list[tuple[str, str]]]:
    """Read every entry once (to check it and count its atoms), keeping only the counts."""
    entries: list[_Entry] = []
    skipped: list[tuple[str, str]] = []
    it = sources
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(sources, desc="reading library", unit="file", leave=False)
    for src in it:
        try:
            s = src if isinstance(src, Structure) else read_structure(src, selection=selection)
        except DifffitInputError as exc:
            if not skip_bad:
                raise DifffitInputError(f"library: {exc} (pass skip_bad=True / --skip-bad to "
                                        f"leave unreadable files out)") from exc
            skipped.append((str(src), str(exc)))
            continue
        entries.append(_Entry(len(entries), src, s.name, s.n_atoms, s.n_fit_atoms, _fingerprint(s)))
    if not entries:
        raise DifffitInputError("no readable structure in the library "
                                f"({len(skipped)} file(s) skipped)")
    return entries, skipped


def _plan(entries: Sequence[_Entry], batch_atoms: int) -> list[list[int]]:
    """Consecutive candidates in batches of at most ``batch_atoms`` fitted atoms."""
    plan: list[list[int]] = []
    cur: list[int] = []
    total = 0
    for e in entries:
        if cur and total + e.n_fit_atoms > batch_atoms:
            plan.append(cur)
            cur, total = [], 0
        cur.append(e.index)
        total += e.n_fit_atoms
    if cur:
        plan.append(cur)
    return plan


# ----------------------------------------------------------------------------------------
# One batch (runs in this process or on a Dask worker)
# ----------------------------------------------------------------------------------------


def _worker_setup(device: str) -> tuple[str, str]:
    """(device to use, worker name). On a Dask worker in a process of its own, torch gets
    as many threads as the worker has (a worker's threads are its share of the cores); a
    worker thread inside the client's process (``processes=False``) leaves the process-
    wide setting alone, since that would change it for everyone in the process."""
    import multiprocessing

    import torch

    worker = "local"
    try:
        from distributed import get_worker

        w = get_worker()
        worker = str(w.address)
        if multiprocessing.parent_process() is not None:
            n = getattr(getattr(w, "state", None), "nthreads", None) or getattr(w, "nthreads", 1)
            torch.set_num_threads(max(int(n), 1))
    except (ImportError, ValueError):
        pass  # not on a Dask worker
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device, worker


def _evidence(result, indices: Sequence[int], labels: Sequence[str], batch: int,
              score: str) -> list[dict]:
    """JSON-able evidence of every candidate of one batch's FitResult."""
    out = []
    prm = result.params
    for i, s in enumerate(result.structures):
        ps = result.for_structure(i)
        scores = np.array([p.score for p in ps], dtype=np.float64)
        d: dict[str, Any] = {
            "index": int(indices[i]), "name": s.name, "source": labels[i],
            "n_atoms": s.n_atoms, "n_fit_atoms": s.n_fit_atoms, "batch": batch,
            "n_clusters": len(ps),
            "cluster_scores": {"metric": prm.rank_by, "count": len(ps),
                               "mean": float(scores.mean()) if len(ps) else None,
                               "std": float(scores.std()) if len(ps) else None},
        }
        if not ps:  # e.g. every start left the map (min_inside_fraction)
            d.update(score=None, zscore=None, hits=0, metrics={k: None for k in METRICS},
                     rotation=None, translation=None, centre=None, placements=[])
            out.append(d)
            continue
        # z of the best against the candidate's other placements (the background it
        # stands out from); fewer than two others give no usable spread.
        rest = scores[1:]
        z = (float((scores[0] - rest.mean()) / rest.std())
             if rest.size >= 2 and rest.std() > 0 else float("nan"))
        placements = []
        for p in ps[:_KEEP_PLACEMENTS]:
            placements.append({"score": p.score, "hits": p.hits, "rotation": p.rotation,
                               "translation": p.translation,
                               "centre": p.rotation @ s.centroid + p.translation,
                               "metrics": p.metrics})
        best = placements[0]
        d.update(score=z if score == "zscore" else float(best["metrics"][score]), zscore=z,
                 hits=best["hits"], metrics=best["metrics"], rotation=best["rotation"],
                 translation=best["translation"], centre=best["centre"],
                 placements=placements)
        out.append(d)
    return [_jsonable(d) for d in out]


def _run_batch(task: dict, dmap: DensityMap) -> dict:
    """Fit one batch of candidates; returns its evidence (plain, JSON-able data).

    ``task``: batch (int), entries [(index, source path or Structure, label)],
    resolution, threshold, params (FitParams as dict), score, selection.
    """
    t0 = time.perf_counter()
    params = dict(task["params"])
    params["device"], worker = _worker_setup(params["device"])
    structures = [src if isinstance(src, Structure) else
                  read_structure(src, selection=task["selection"])
                  for _, src, _ in task["entries"]]
    result = fit(dmap, structures, task["resolution"], threshold=task["threshold"],
                 params=FitParams(**params))
    cands = _evidence(result, [e[0] for e in task["entries"]], [e[2] for e in task["entries"]],
                      task["batch"], task["score"])
    return {"batch": task["batch"], "indices": [e[0] for e in task["entries"]],
            "candidates": cands, "seconds": time.perf_counter() - t0,
            "device": params["device"], "worker": worker}


# ----------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------


def _map_digest(dmap: DensityMap) -> str:
    h = hashlib.sha1(np.ascontiguousarray(dmap.data).tobytes())
    h.update(np.concatenate([dmap.origin, dmap.voxel_size]).tobytes())
    return h.hexdigest()


def _run_key(dmap, entries, resolution, threshold, params: FitParams, score, selection,
             batch_atoms) -> dict:
    """Everything that decides the results: a resume must match it exactly. The device and
    the map's file name are left out: a run may be resumed on other hardware, with the
    map moved (its content is compared)."""
    p = asdict(params)
    p.pop("device", None)
    return _jsonable({
        "map": {"grid_xyz": list(dmap.shape_xyz), "sha1": _map_digest(dmap)},
        "resolution": float(resolution), "threshold": float(threshold), "params": p,
        "score": score, "selection": selection, "batch_atoms": int(batch_atoms),
        "library": [[e.label, e.n_fit_atoms, e.fingerprint] for e in entries],
    })


def _key_hash(key: dict) -> str:
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _key_difference(old: dict, new: dict) -> str:
    diffs = []
    for k in sorted(set(old) | set(new)):
        if old.get(k) == new.get(k):
            continue
        if k == "library":
            a, b = old.get(k) or [], new.get(k) or []
            if len(a) != len(b):
                diffs.append(f"library has {len(b)} structures, the checkpoint {len(a)}")
            else:
                bad = next(x[0] for x, y in zip(a, b) if x != y)
                diffs.append(f"library entry {bad} differs (file changed or order changed)")
        elif isinstance(old.get(k), dict) and isinstance(new.get(k), dict):
            sub = [s for s in sorted(set(old[k]) | set(new[k])) if old[k].get(s) != new[k].get(s)]
            diffs += [f"{k}.{s}: {old[k].get(s)!r} -> {new[k].get(s)!r}" for s in sub]
        else:
            diffs.append(f"{k}: {old.get(k)!r} -> {new.get(k)!r}")
    return "; ".join(diffs)


class _Checkpoint:
    """``outdir/checkpoint``: state.json (settings + plan) and one file per finished batch."""

    def __init__(self, outdir: Path):
        self.dir = Path(outdir) / "checkpoint"
        self.state = self.dir / "state.json"

    def batch_path(self, b: int) -> Path:
        return self.dir / f"batch_{b:05d}.json"

    def clear(self) -> None:
        """Remove a previous run's checkpoint files (only ours, only with force)."""
        if self.dir.is_dir():
            for f in self.dir.glob("batch_*.json"):
                f.unlink()
            if self.state.exists():
                self.state.unlink()

    def start(self, key: dict, plan: list[list[int]]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        doc = {"version": _STATE_VERSION, "difffit_version": _version(), "key": key,
               "key_hash": _key_hash(key), "plan": plan,
               "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        _atomic_write_bytes(self.state, json.dumps(doc, indent=1) + "\n")

    def load_state(self) -> dict | None:
        if not self.state.is_file():
            return None
        try:
            doc = json.loads(self.state.read_text())
            if doc.get("version") != _STATE_VERSION:
                raise ValueError(f"version {doc.get('version')}, expected {_STATE_VERSION}")
            return doc
        except (ValueError, KeyError) as exc:
            raise DifffitInputError(f"{self.state}: unreadable checkpoint state: {exc}") from exc

    def save(self, out: dict, key_hash: str) -> None:
        doc = {**out, "key_hash": key_hash}
        _atomic_write_bytes(self.batch_path(out["batch"]),
                            json.dumps(_jsonable(doc), allow_nan=False) + "\n")

    def load_done(self, plan: list[list[int]], key_hash: str) -> dict[int, dict]:
        """Finished batches of this run (same settings and same candidates)."""
        done = {}
        for b, indices in enumerate(plan):
            p = self.batch_path(b)
            if not p.is_file():
                continue
            try:
                doc = json.loads(p.read_text())
            except ValueError:  # cannot happen with atomic writes; recompute if it does
                continue
            if doc.get("key_hash") == key_hash and doc.get("indices") == indices:
                done[b] = doc
        return done


# ----------------------------------------------------------------------------------------
# identify
# ----------------------------------------------------------------------------------------


def identify(target, library, resolution: float, threshold: float | None = None, *,
             batch_atoms: int = 100_000, outdir=None, resume: bool = False,
             force: bool = False, client=None, params: FitParams | None = None,
             progress: bool = False, score: str = "cam", selection: str = "backbone",
             skip_bad: bool = False, top: int = 10, model_format: str = "cif",
             command: str | None = None,
             on_batch: Callable[[dict], None] | None = None, **fit_overrides) -> IdentifyResult:
    """Fit every structure of a library into a map and rank them by a size-fair score.

    Args:
        target: DensityMap or path of an MRC/CCP4 map.
        library: folder, structure files, a text file listing paths, Structures, or a
            list of these (see :func:`library_files`).
        resolution: map resolution in Angstrom.
        threshold: contour level in map units; None: mean + 1 standard deviation. It is
            resolved once, so every batch uses the same.
        batch_atoms: at most this many fitted atoms per batch (memory bound); a larger
            candidate gets a batch of its own.
        outdir: folder for checkpoints and results (ranking.csv/json, models of the
            ``top`` candidates, identify_log.txt); None keeps everything in memory.
        resume: continue the interrupted run in ``outdir`` (same settings and library).
        force: start afresh in a non-empty ``outdir`` (replacing its checkpoint).
        client: a ``dask.distributed.Client``: batches run as tasks on its workers.
        params: FitParams; ``fit_overrides`` replace single fields (``n_rotations=50``).
            Without ``params``, ``device`` defaults to "auto": the GPU of the process or
            worker that runs a batch when it has one, else its CPU.
        progress: progress bar (candidates done, best so far).
        score: ranking score: "cam" (default) or another metric of ``fit.METRICS``
            (per-point ones are size-fair; "overlap" is a sum and is not), or "zscore".
        selection: atoms fitted ("backbone", "ca", "heavy", "all").
        skip_bad: leave unreadable library files out (listed in ``result.skipped`` and
            the log) instead of stopping with an error naming the file.
        top: best-pose models written for the best ``top`` candidates (with outdir).
        model_format: "cif" or "pdb" for those models.
        command: the command line recorded in the log.
        on_batch: called after each batch is checkpointed with a dict (batch, done,
            total, names, seconds); an exception raised there stops the run (the finished
            batches stay checkpointed).

    Returns:
        IdentifyResult, candidates best first.

    Raises:
        DifffitInputError: bad input (a file named), or a resume whose settings differ.
        FileExistsError: ``outdir`` is not empty and neither ``resume`` nor ``force``.
    """
    t_start = time.perf_counter()
    if score not in SCORES:
        raise DifffitInputError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
    if int(batch_atoms) < 1:
        raise DifffitInputError(f"batch_atoms must be >= 1, got {batch_atoms}")
    if not resolution or resolution <= 0:
        raise DifffitInputError(f"resolution must be a positive number of Angstrom, got {resolution}")
    base = asdict(params) if params is not None else {"device": "auto"}
    if score in METRICS and "rank_by" not in fit_overrides and params is None:
        base["rank_by"] = score  # a candidate's best placement is the best by its score
    fparams = FitParams(**{**base, **fit_overrides})
    if fparams.device.split(":")[0] not in ("auto", "cpu", "cuda"):
        raise DifffitInputError(f"device must be auto, cpu or cuda, got {fparams.device!r}")

    ckpt = None
    if outdir is not None:
        outdir = Path(outdir)
        ckpt = _Checkpoint(outdir)
        if resume:
            if outdir.exists() and not outdir.is_dir():
                raise DifffitInputError(f"{outdir}: output path exists and is not a folder")
            if not ckpt.state.is_file() and outdir.is_dir() and any(outdir.iterdir()):
                raise DifffitInputError(f"{outdir}: nothing to resume (no checkpoint/state.json)"
                                        f"; choose an empty folder, or --force to start afresh")
        else:
            # Refuse an occupied folder before reading a large library.
            _check_outdir(outdir, force)

    dmap = target if isinstance(target, DensityMap) else read_map(target)
    if threshold is None:
        from .preprocess import default_threshold
        threshold = default_threshold(dmap.data)
    threshold = float(threshold)

    t0 = time.perf_counter()
    entries, skipped = _read_library(library_files(library), selection, skip_bad, progress)
    t_read = time.perf_counter() - t0
    plan = _plan(entries, int(batch_atoms))
    key = _run_key(dmap, entries, resolution, threshold, fparams, score, selection, batch_atoms)
    khash = _key_hash(key)

    done: dict[int, dict] = {}
    if ckpt is not None:
        state = ckpt.load_state() if resume else None
        if state is not None:
            if state["key_hash"] != khash:
                raise DifffitInputError(
                    f"{outdir}: the checkpoint is of a run with other settings or another "
                    f"library ({_key_difference(state['key'], key)}); resume with the same "
                    f"ones, or start afresh with --force")
            done = ckpt.load_done(state["plan"], khash)
        else:
            ckpt.clear()
            ckpt.start(key, plan)

    task_base = {"resolution": float(resolution), "threshold": threshold,
                 "params": asdict(fparams), "score": score, "selection": selection}
    pending = [b for b in range(len(plan)) if b not in done]
    log = _RunLog(outdir, command, dmap, resolution, threshold, fparams, score, batch_atoms,
                  len(entries), len(plan), skipped)
    for b in sorted(done):
        log.batch(done[b], from_checkpoint=True)

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(entries), initial=sum(len(plan[b]) for b in done),
                   desc="identify", unit="structure")
    best: tuple[float, str] | None = None

    def finished(out: dict) -> None:
        nonlocal best
        done[out["batch"]] = out
        if ckpt is not None:
            ckpt.save(out, khash)
        log.batch(out, from_checkpoint=False)
        for c in out["candidates"]:
            s = c.get("score")
            if s is not None and (best is None or s > best[0]):
                best = (s, c["name"])
        if bar is not None:
            bar.update(len(out["indices"]))
            if best is not None:
                bar.set_postfix_str(f"best {best[1]} {score} {best[0]:.3f}")
        if on_batch is not None:
            on_batch({"batch": out["batch"], "done": len(done), "total": len(plan),
                      "names": [c["name"] for c in out["candidates"]],
                      "seconds": out["seconds"]})

    def task(b: int) -> dict:
        return {**task_base, "batch": b,
                "entries": [(i, entries[i].source, entries[i].label) for i in plan[b]]}

    t0 = time.perf_counter()
    try:
        if client is None:
            for b in pending:
                finished(_run_batch(task(b), dmap))
        else:
            _run_on_dask(client, [task(b) for b in pending], dmap, finished)
    finally:
        if bar is not None:
            bar.close()
        log.write()  # the batches finished so far, also after an interruption
    t_fit = time.perf_counter() - t0

    # Rank: score (NaN last), then library order, so ties and reruns rank alike.
    cands = [Candidate._from_dict(c) for b in sorted(done) for c in done[b]["candidates"]]
    cands.sort(key=lambda c: (not math.isfinite(c.score), -c.score if math.isfinite(c.score) else 0.0,
                              c.index))
    for r, c in enumerate(cands, 1):
        c.rank = r
    batches = [{"batch": b, "indices": done[b]["indices"],
                "n_fit_atoms": sum(entries[i].n_fit_atoms for i in done[b]["indices"]),
                "seconds": done[b]["seconds"], "device": done[b]["device"],
                "worker": done[b]["worker"], "from_checkpoint": b not in pending}
               for b in sorted(done)]
    result = IdentifyResult(
        candidates=cands, map=dmap, resolution=float(resolution), threshold=threshold,
        params=fparams, score=score, batch_atoms=int(batch_atoms), batches=batches,
        skipped=skipped, outdir=outdir, selection=selection,
        _library=[e.source for e in entries])
    result.timings = {"read_library": t_read, "fit": t_fit,
                      "total": time.perf_counter() - t_start}
    if outdir is not None:
        write_identify_outputs(result, outdir, top=top, model_format=model_format,
                               command=command, log=log)
    return result


def _run_on_dask(client, tasks: list[dict], dmap: DensityMap, finished) -> None:
    """Run the batches as tasks on the client's cluster; ``finished`` gets each result as
    it arrives (in completion order; the ranking does not depend on it)."""
    try:
        from distributed import as_completed
    except ImportError as exc:  # pragma: no cover - a client implies distributed
        raise DifffitInputError("client= needs dask.distributed: pip install 'difffit[dask]'") from exc
    if not tasks:
        return
    # The map goes to every worker once, not once per task.
    dmap_f = client.scatter(dmap, broadcast=True)
    futures = [client.submit(_run_batch, t, dmap_f, pure=False,
                             key=f"difffit-identify-batch-{t['batch']}-{time.time_ns()}")
               for t in tasks]
    try:
        for fut in as_completed(futures):
            finished(fut.result())
    except BaseException:
        client.cancel(futures)
        raise


# ----------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------


class _RunLog:
    """identify_log.txt: settings, every batch (where, how long), skipped files, ranking.
    Rewritten atomically after every batch, so an interrupted run leaves an accurate log."""

    def __init__(self, outdir, command, dmap, resolution, threshold, params, score,
                 batch_atoms, n_candidates, n_batches, skipped):
        import torch

        self.path = None if outdir is None else Path(outdir) / "identify_log.txt"
        self.head = [
            f"difffit {_version()} identify log, started {time.strftime('%Y-%m-%d %H:%M:%S %z')}",
            f"command: {command if command is not None else ' '.join(sys.argv)}",
            f"python {platform.python_version()}, torch {torch.__version__}, "
            f"numpy {np.__version__}, {platform.platform()}",
            "",
            f"map: {dmap.path or '(in memory)'}",
            f"  grid (x, y, z) {dmap.shape_xyz}, voxel size {dmap.voxel_size.tolist()} A, "
            f"origin {dmap.origin.tolist()} A",
            f"resolution: {resolution:g} A",
            f"threshold (contour level): {threshold:.6g}",
            f"score: {score}",
            f"library: {n_candidates} structures in {n_batches} batches of at most "
            f"{batch_atoms} fitted atoms",
        ]
        if skipped:
            self.head.append(f"skipped {len(skipped)} unreadable file(s):")
            self.head += [f"  {f}: {why}" for f, why in skipped]
        self.head += ["", "parameters:"] + [f"  {k}: {v}" for k, v in asdict(params).items()]
        self.lines: list[str] = []
        self.tail: list[str] = []

    def batch(self, out: dict, from_checkpoint: bool) -> None:
        names = ", ".join(c["name"] for c in out["candidates"][:4])
        if len(out["candidates"]) > 4:
            names += f", ... ({len(out['candidates'])})"
        how = "loaded from checkpoint" if from_checkpoint else \
            f"{out['seconds']:.1f} s on {out['device']} ({out['worker']})"
        self.lines.append(f"  batch {out['batch']}: {names}: {how}")

    def write(self, tail: list[str] | None = None) -> None:
        if tail is not None:
            self.tail = tail
        if self.path is None or not self.path.parent.is_dir():
            return
        text = self.head + ["", f"batches ({len(self.lines)} finished):"] + self.lines + self.tail
        _atomic_write_bytes(self.path, "\n".join(text) + "\n")


def summary_table(result: IdentifyResult, top: int = 10) -> str:
    """A short ranked text table of the best ``top`` candidates (no trailing newline)."""
    header = ("rank", "candidate", "atoms", result.score, "z", "hits", "corr", "inside",
              "centre (x, y, z) A")
    lines = []
    for c in result.candidates[: max(int(top), 0)]:
        m = c.metrics
        lines.append((str(c.rank), c.name, str(c.n_atoms), f"{c.score:.3f}", f"{c.zscore:.2f}",
                       str(c.hits), f"{m.get('correlation', float('nan')):.3f}",
                       f"{m.get('inside_fraction', float('nan')):.2f}",
                       f"{c.centre[0]:8.2f} {c.centre[1]:8.2f} {c.centre[2]:8.2f}"))
    widths = [max(len(h), *(len(r[k]) for r in lines)) if lines else len(h)
              for k, h in enumerate(header)]
    fmt = lambda r: "  ".join(  # noqa: E731
        (v.ljust(w) if k == 1 else v.rjust(w)) for k, (v, w) in enumerate(zip(r, widths)))
    text = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in lines]
    if len(result.candidates) > len(lines):
        text.append(f"... {len(result.candidates) - len(lines)} more in ranking.csv")
    return "\n".join(text)


def _model_name(c: Candidate, fmt: str) -> str:
    return f"rank{c.rank:03d}_{_safe_name(c.name)}.{fmt}"


def write_identify_outputs(result: IdentifyResult, outdir, *, top: int = 10,
                           model_format: str = "cif", command: str | None = None,
                           log: _RunLog | None = None) -> dict[str, Path]:
    """Write the ranking of an identify run into ``outdir`` (next to its checkpoint).

    Files: ranking.csv (one row per candidate, best first: rank, name, score, zscore,
    hits, clusters, atoms, every metric, centre, rotation r11..r33, translation, batch,
    file), ranking.json (the same plus settings, batches, skipped files and each
    candidate's next-best placements), models/rankNNN_<name>.cif (the best ``top``
    candidates in their best placement, all atoms) and identify_log.txt. Files of these
    names are replaced (they belong to this run); nothing else is touched.

    Returns:
        Paths written: "outdir", "csv", "json", "log", "models" and "model:<name>".
    """
    fmt = _model_args(model_format, top)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"outdir": outdir, "models": outdir / "models"}
    paths["models"].mkdir(exist_ok=True)
    models = []
    for c in result.candidates[: int(top)]:
        if not np.all(np.isfinite(c.rotation)):
            continue
        p = paths["models"] / _model_name(c, fmt)
        write_structure(p, result.structure(c, moved=False), c.rotation, c.translation,
                        overwrite=True)
        paths[f"model:{p.name}"] = p
        models.append({"name": c.name, "rank": c.rank, "path": str(p.resolve())})

    rows = result.rows()
    paths["csv"] = outdir / "ranking.csv"
    _atomic_write_bytes(paths["csv"], _csv_text(rows))
    doc = {
        "difffit_version": _version(),
        "command": command if command is not None else " ".join(sys.argv),
        "map": {"path": result.map.path, "grid_xyz": list(result.map.shape_xyz),
                "voxel_size": result.map.voxel_size, "origin": result.map.origin},
        "resolution": result.resolution, "threshold": result.threshold,
        "score": result.score, "size_fair": result.score in _SIZE_FAIR,
        "params": asdict(result.params), "batch_atoms": result.batch_atoms,
        "timings": result.timings, "batches": result.batches,
        "skipped": [{"file": f, "reason": why} for f, why in result.skipped],
        "models": models,
        "candidates": [{**row, "placements": c.placements, "cluster_scores": c.cluster_scores}
                       for row, c in zip(rows, result.candidates)],
    }
    paths["json"] = outdir / "ranking.json"
    _atomic_write_bytes(paths["json"], json.dumps(_jsonable(doc), indent=1, allow_nan=False) + "\n")

    if log is None:
        log = _RunLog(outdir, command, result.map, result.resolution, result.threshold,
                      result.params, result.score, result.batch_atoms, len(result.candidates),
                      len(result.batches), result.skipped)
        for b in result.batches:
            log.lines.append(f"  batch {b['batch']}: {len(b['indices'])} structures, "
                             f"{b['seconds']:.1f} s on {b['device']} ({b['worker']})")
    log.path = outdir / "identify_log.txt"
    log.write(["", "timings (s):"] + [f"  {k}: {v:.3f}" for k, v in result.timings.items()]
              + ["", "outputs:"] + [f"  {k}: {v}" for k, v in paths.items() if ":" not in k]
              + ["", summary_table(result, top=max(int(top), 20)), ""])
    paths["log"] = log.path
    return paths


def identify_report(result: IdentifyResult, path, overwrite: bool = False, top: int = 30, *,
                    command: str | None = None) -> Path:
    """Write the HTML report of an identify run: the ranked table, the scores of the best
    candidates as bars, and the distribution of every candidate's score.

    Args:
        result: the IdentifyResult.
        path: the ``.html`` file to write.
        overwrite: replace an existing file.
        top: candidates in the table and the bar chart.
        command: the command line, shown in the header.

    Returns:
        The path written.
    """
    from .report import bar_chart, histogram, page, table, write_report

    top = max(int(top), 1)
    shown = result.candidates[:top]
    rows = [{"rank": c.rank, "candidate": c.name, "atoms": c.n_atoms, result.score: c.score,
             "zscore": c.zscore, "hits": c.hits, "clusters": c.n_clusters,
             "corr": c.metrics.get("correlation"), "cam": c.metrics.get("cam"),
             "inside": c.metrics.get("inside_fraction"),
             "centre x (Å)": float(c.centre[0]), "y": float(c.centre[1]),
             "z": float(c.centre[2]), "file": Path(c.source).name} for c in shown]
    fair = "" if result.score in _SIZE_FAIR else \
        " (a sum over points or atoms: it favours large candidates)"
    note = (f'<p class="note">{len(result.candidates)} candidates ranked by '
            f'{result.score}{fair}; z-score: how far the best placement stands out from the '
            f"candidate's other clusters.</p>")
    scores = [c.score for c in result.candidates]
    marks = {f"#{c.rank} {c.name}": c.score for c in result.candidates[:3]}
    # The runner-up placements of the best candidates: a second pose scoring nearly as
    # well (e.g. a pseudo-symmetric flip) weakens the case for the first.
    alt = [{"candidate": c.name, "placement": k + 1, result.params.rank_by: p["score"],
            "hits": p["hits"], "corr": p["metrics"].get("correlation"),
            "inside": p["metrics"].get("inside_fraction"),
            "centre x (Å)": float(p["centre"][0]), "y": float(p["centre"][1]),
            "z": float(p["centre"][2])}
           for c in result.candidates[:5] for k, p in enumerate(c.placements)]
    sections = [
        ("Ranking", note + table(rows, caption=f"Best {len(shown)} candidates (files: "
                                               f"ranking.csv)")),
        ("Placements of the best candidates",
         table(alt, caption="Each candidate's best placements (distinct poses), best first")),
        ("Scores", bar_chart([c.name for c in shown], [c.score for c in shown],
                             title=f"{result.score} of the best placement, best first",
                             xlabel=result.score, highlight={0})
         + histogram(scores, bins=min(50, max(10, len(scores) // 3)),
                     title=f"{result.score} of every candidate", xlabel=result.score,
                     marks=marks)),
    ]
    if result.skipped:
        sections.append(("Skipped files", table([{"file": f, "reason": why}
                                                  for f, why in result.skipped])))
    sections.append(("Batches", table([{k: v for k, v in b.items() if k != "indices"}
                                       | {"candidates": len(b["indices"])}
                                       for b in result.batches])))
    m = result.map
    meta = {"difffit": _version()}
    if command:
        meta["command"] = command
    meta.update({
        "map": f"{m.path or '(in memory)'}; grid {'x'.join(map(str, m.shape_xyz))}",
        "resolution (Å)": result.resolution, "threshold": result.threshold,
        "library": f"{len(result.candidates)} candidates, {len(result.skipped)} skipped, "
                   f"{len(result.batches)} batch(es) of at most {result.batch_atoms} fitted "
                   f"atoms",
        "parameters": result.params, "timings (s)": result.timings,
    })
    title = f"difffit identify: {Path(m.path).name if m.path else 'map'}"
    return write_report(path, page(title, sections, meta), overwrite=overwrite)


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------


def add_cli(subparsers) -> None:
    """Register ``difffit identify`` (called by difffit.cli)."""
    from .cli import _METRICS, _positive_int, add_map_arguments, add_search_arguments

    p = subparsers.add_parser(
        "identify", help="rank a library of structures by how well each fits a density",
        description="Fit every structure of a library into a map and rank them by a "
                    "size-fair score (default cam: correlation about the mean, not a sum). "
                    "Batches are checkpointed to the output folder: an interrupted run "
                    "continues with --resume. Batches can run on a Dask cluster.")
    add_map_arguments(p)
    p.add_argument("--library", "-l", nargs="+", required=True, metavar="DIR_OR_FILE",
                   help="a folder of PDB/mmCIF files (optionally .gz), structure files, or "
                        "a .txt/.lst file listing one path per line")
    p.add_argument("-o", "--outdir", default=None, metavar="DIR",
                   help="output folder (default: difffit_identify/<map name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in the output folder")
    p.add_argument("--force", action="store_true",
                   help="start afresh in an existing non-empty output folder")
    p.add_argument("--batch-atoms", type=_positive_int, default=100_000, metavar="N",
                   help="at most N fitted atoms per batch (default: 100000)")
    p.add_argument("--top", type=int, default=10, metavar="N",
                   help="candidates shown and written as best-pose models (default: 10)")
    p.add_argument("--score", choices=_METRICS + ("zscore",), default="cam",
                   help="ranking score (default: cam; zscore: the best placement against "
                        "the candidate's other clusters)")
    p.add_argument("--selection", choices=("backbone", "ca", "heavy", "all"), default="backbone",
                   help="atoms used for fitting (default: backbone)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave unreadable library files out (listed in the log) instead of "
                        "stopping")
    p.add_argument("--device", default="auto",
                   help="auto (a GPU where the batch runs, when there is one), cpu or cuda")
    dask = p.add_mutually_exclusive_group()
    dask.add_argument("--dask-scheduler", metavar="ADDRESS", default=None,
                      help="run the batches on this Dask scheduler (e.g. tcp://host:8786)")
    dask.add_argument("--dask-local", type=_positive_int, metavar="N", default=None,
                      help="run the batches on a local Dask cluster of N worker processes")
    add_search_arguments(p)
    p.add_argument("--model-format", choices=("cif", "pdb"), default="cif",
                   help="format of the best-pose models (default: cif)")
    p.add_argument("--report", action="store_true", help="also write report.html")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(_run=_cmd_identify)


def _dask_client(args):
    """(client, cluster or None) for --dask-scheduler / --dask-local, else (None, None)."""
    if args.dask_scheduler is None and args.dask_local is None:
        return None, None
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise DifffitInputError("--dask-scheduler/--dask-local need dask.distributed: "
                                "pip install 'difffit[dask]'") from None
    if args.dask_scheduler is not None:
        try:
            return Client(args.dask_scheduler, timeout="20s"), None
        except (OSError, TimeoutError) as exc:
            raise DifffitInputError(f"--dask-scheduler {args.dask_scheduler}: cannot connect: "
                                    f"{exc}") from exc
    import os

    # Each worker process gets its share of the cores (torch threads follow it).
    threads = max(1, (os.cpu_count() or 1) // args.dask_local)
    cluster = LocalCluster(n_workers=args.dask_local, threads_per_worker=threads,
                           processes=True, dashboard_address=None)
    return Client(cluster), cluster


def _cmd_identify(args, argv) -> int:
    import shlex

    from .cli import _check_device, _map_stem, search_overrides

    if args.device != "auto":
        _check_device(args.device)
    if args.top < 0:
        raise DifffitInputError(f"--top must be >= 0, got {args.top}")
    map_path = Path(args.map)
    outdir = Path(args.outdir) if args.outdir else Path("difffit_identify") / _map_stem(map_path)
    if not args.resume:
        _check_outdir(outdir, args.force)
    overrides = {**search_overrides(args), "device": args.device}
    command = "difffit " + " ".join(shlex.quote(a) for a in argv)
    dmap = read_map(map_path, voxel_size=args.voxel_size)  # a bad map fails before Dask starts
    client, cluster = _dask_client(args)
    try:
        if client is not None and not args.quiet:
            print(f"difffit: dask cluster {client.scheduler.address}", file=sys.stderr)
        result = identify(dmap, args.library, args.resolution, args.threshold,
                          batch_atoms=args.batch_atoms, outdir=outdir, resume=args.resume,
                          force=args.force, client=client, progress=not args.quiet,
                          score=args.score, selection=args.selection, skip_bad=args.skip_bad,
                          top=args.top, model_format=args.model_format, command=command,
                          **overrides)
    except KeyboardInterrupt:
        print(f"difffit: interrupted; finished batches are saved in {outdir}/checkpoint: "
              f"continue with the same command plus --resume", file=sys.stderr)
        raise
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    if args.report:
        identify_report(result, outdir / "report.html", overwrite=True, command=command)
    if not args.quiet:
        print(summary_table(result, top=args.top or 10))
        n_ck = sum(b["from_checkpoint"] for b in result.batches)
        print(f"\n{len(result.candidates)} candidates in {len(result.batches)} batches"
              + (f" ({n_ck} from the checkpoint)" if n_ck else "")
              + f", {result.timings['total']:.1f} s (threshold {result.threshold:.4g})"
              + (f"; skipped {len(result.skipped)} unreadable file(s), see the log"
                 if result.skipped else ""))
    print(f"results written to {outdir}/ (ranking.csv, models/, identify_log.txt"
          + (", report.html" if args.report else "") + ")")
    return 0
