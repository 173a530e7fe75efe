"""Identify: which structure is this density? Fit every candidate of a library into a
map and rank the candidates by a size-fair score, with the evidence beside each one.

Pipeline (docs/method.md sections 1 (use 3), 5-7, 8 "bounded memory"):

1. The library (a folder, a list of files, or a text file listing paths) is read once to
   check every file and count its fitted atoms; nothing but the counts is kept.
2. Candidates are cut, in library order, into batches of at most ``batch_atoms`` fitted
   atoms (a candidate larger than that gets a batch of its own), so memory stays bounded
   however large the library is. Each batch goes through :func:`difffit.fit` (the
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

import math
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import __version__
from ..dask_runner import run_on_dask, worker_setup
from ..errors import DifffitInputError, opt
from ..files import jsonable
from ..checks import before_search, report
from .fit import as_map, check_resolution, check_threshold, fit
from ..library import library_files, plan_batches, read_library
from ..maps import DensityMap
from ..output.identify import RunLog, write_identify_outputs
from ..params import METRICS, FitParams, IdentifyParams, resolve
from ..results import Candidate, IdentifyResult
from ..runs import RunFolder, check_outdir, key_hash, map_fingerprint
from ..structures import Structure, read_structure
from .prescreen import first_pass, first_pass_line, run_rounds, screened_evidence
from ..progress import progress_bar

__all__ = ["identify"]

_KEEP_PLACEMENTS = 3   # placements kept per candidate as evidence (the best and the next)
_STATE_FORMAT = "difffit-identify-state/2"


def _batch_name(b: int) -> str:
    return f"batch_{b:05d}"


def _run_key(dmap, entries, resolution, threshold, params: FitParams,
             settings: IdentifyParams) -> dict:
    """Everything that decides the results: a resume must match it exactly. The device and
    the map's file name are left out: a run may be resumed on other hardware, with the
    map moved (its content is compared)."""
    p = asdict(params)
    p.pop("device", None)
    s = asdict(settings)
    s.pop("skip_bad")
    return jsonable({
        "map": {k: v for k, v in map_fingerprint(dmap).items() if k in ("grid_xyz", "sha1")},
        "resolution": float(resolution), "threshold": float(threshold), "params": p,
        **s, "library": [[e.label, e.n_fit_atoms, e.fingerprint] for e in entries],
    })


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
                               "centre": p.centre,
                               "metrics": p.metrics})
        best = placements[0]
        d.update(score=z if score == "zscore" else float(best["metrics"][score]), zscore=z,
                 hits=best["hits"], metrics=best["metrics"], rotation=best["rotation"],
                 translation=best["translation"], centre=best["centre"],
                 placements=placements)
        out.append(d)
    return [jsonable(d) for d in out]


def _run_batch(task: dict, dmap: DensityMap) -> dict:
    """Fit one batch of candidates; returns its evidence (plain, JSON-able data).

    ``task``: batch (int), entries [(index, source path or Structure, label)],
    resolution, threshold, params (FitParams as dict), score, selection.
    """
    t0 = time.perf_counter()
    params = dict(task["params"])
    params["device"], worker = worker_setup(params["device"])
    structures = [src if isinstance(src, Structure) else
                  read_structure(src, selection=task["selection"])
                  for _, src, _ in task["entries"]]
    result = fit(dmap, structures, task["resolution"], threshold=task["threshold"],
                 params=FitParams(**params), check=False)
    cands = _evidence(result, [e[0] for e in task["entries"]], [e[2] for e in task["entries"]],
                      task["batch"], task["score"])
    return {"batch": task["batch"], "indices": [e[0] for e in task["entries"]],
            "candidates": cands, "seconds": time.perf_counter() - t0,
            "device": params["device"], "worker": worker}


def identify(target, library, resolution: float, threshold: float | None = None,
             params: FitParams | None = None, settings: IdentifyParams | None = None,
             progress: bool = False, *, outdir=None, resume: bool = False,
             force: bool = False, client=None, top: int = 10, model_format: str = "cif",
             command: str | None = None, on_batch: Callable[[dict], None] | None = None,
             **overrides) -> IdentifyResult:
    """Fit every structure of a library into a map and rank them by a size-fair score.

    Args:
        target: DensityMap or path of an MRC/CCP4 map.
        library: folder, structure files, a text file listing paths, Structures, or a
            list of these (see :func:`library_files`).
        resolution: map resolution in Angstrom.
        threshold: contour level in map units; None: mean + 1 standard deviation. It is
            resolved once, so every batch uses the same.
        outdir: folder for checkpoints and results (ranking.csv/json, models of the
            ``top`` candidates, identify_log.txt); None keeps everything in memory.
        resume: continue the interrupted run in ``outdir`` (same settings and library).
        force: start afresh in a non-empty ``outdir`` (replacing its checkpoint).
        client: a ``dask.distributed.Client``: batches run as tasks on its workers.
        params: FitParams of every batch's fit. Without it, ``device`` defaults to
            "auto" (the GPU of the process or worker that runs a batch when it has one,
            else its CPU) and ``rank_by`` to the ranking score when that is a metric.
        settings: IdentifyParams (score, batch_atoms, selection, skip_bad).
        progress: progress bar (candidates done, best so far).
        top: best-pose models written for the best ``top`` candidates (with outdir).
        model_format: "cif" or "pdb" for those models.
        command: the command line recorded in the log.
        on_batch: called after each batch is checkpointed with a dict (batch, done,
            total, names, seconds); an exception raised there stops the run (the finished
            batches stay checkpointed).
        overrides: single fields of IdentifyParams (``score="zscore"``,
            ``batch_atoms=50_000``) or FitParams (``n_rotations=50``).

    Returns:
        IdentifyResult, candidates best first.

    Raises:
        DifffitInputError: bad input (a file named), or a resume whose settings differ.
        FileExistsError: ``outdir`` is not empty and neither ``resume`` nor ``force``.
    """
    t_start = time.perf_counter()
    given = params
    params, settings = resolve(overrides, (FitParams, FitParams(device="auto") if given is None
                                           else given), (IdentifyParams, settings))
    score, selection, batch_atoms = settings.score, settings.selection, settings.batch_atoms
    if given is None and score in METRICS and "rank_by" not in overrides:
        # A candidate's best placement is the best by its ranking score.
        params = replace(params, rank_by=score)
    fparams = params
    resolution = check_resolution(resolution)

    if settings.first_pass and (resume or client is not None):  # before any work
        raise DifffitInputError(f"{opt('first_pass', True)} does not combine with "
                                f"{opt('resume', True) if resume else 'a Dask client'} yet: "
                                f"its batches are decided as the run goes")
    folder = None
    if outdir is not None:
        outdir = Path(outdir)
        # A forced restart removes the earlier run's files, so that models/ cannot hold a
        # ranking the new ranking.csv does not list.
        folder = RunFolder(outdir, "checkpoint/state.json",
                           owned=("checkpoint/batch_*.json", "models/rank[0-9]*_*.cif",
                                  "models/rank[0-9]*_*.pdb", "ranking.csv", "ranking.json",
                                  "identify_log.txt", "report.html"), what="identify")
        if not resume:  # refuse an occupied folder before reading a large library
            check_outdir(outdir, force)

    dmap = as_map(target)
    threshold = check_threshold(threshold, dmap)
    # The map's checks, once; a candidate that does not fit is what identify is for.
    report(before_search(dmap, [], resolution, threshold, fparams))

    t0 = time.perf_counter()
    entries, skipped = read_library(library_files(library), selection, settings.skip_bad,
                                    progress)
    t_read = time.perf_counter() - t0
    plan = plan_batches(entries, int(batch_atoms))
    key = _run_key(dmap, entries, resolution, threshold, fparams, settings)
    khash = key_hash(key)

    done: dict[int, dict] = {}
    if settings.first_pass:
        plan = []  # decided by the first pass
    if folder is not None:
        state = folder.open(key, resume, force)
        if state is not None:
            for b, indices in enumerate(state["plan"]):
                doc = folder.load_part(_batch_name(b))
                if doc is not None and doc.get("key_hash") == khash and doc.get("indices") == indices:
                    done[b] = doc
        else:
            folder.write_state({"format": _STATE_FORMAT, "difffit_version": __version__,
                                "key": key, "key_hash": khash, "plan": plan,
                                "started": time.strftime("%Y-%m-%d %H:%M:%S %z")})

    task_base = {"resolution": resolution, "threshold": threshold,
                 "params": asdict(fparams), "score": score, "selection": selection}
    pending = [b for b in range(len(plan)) if b not in done]
    log = RunLog(outdir, command, dmap, resolution, threshold, fparams, score, batch_atoms,
                  len(entries), None if settings.first_pass else len(plan), skipped)
    for b in sorted(done):
        log.batch(done[b], from_checkpoint=True)

    bar = None
    if progress:
        bar = progress_bar(total=len(entries), initial=sum(len(plan[b]) for b in done),
                   desc="identify", unit="structure")
    best: tuple[float, str] | None = None
    computed: set[int] = set()  # batches fitted in this run (the rest: from the checkpoint)

    def finished(out: dict) -> None:
        nonlocal best
        done[out["batch"]] = out
        computed.add(out["batch"])
        if folder is not None:
            folder.save_part(_batch_name(out["batch"]), {**out, "key_hash": khash})
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
    screened: list[dict] = []
    first = None
    try:
        if settings.first_pass:
            screened, first = _with_first_pass(dmap, entries, plan, resolution, threshold,
                                               fparams, settings, task, finished, done)
        elif client is None:
            for b in pending:
                finished(_run_batch(task(b), dmap))
        else:
            run_on_dask(client, _run_batch, [task(b) for b in pending], dmap, finished)
    finally:
        if bar is not None:
            bar.close()
        log.write()  # the batches finished so far, also after an interruption
    t_fit = time.perf_counter() - t0

    # Rank: score (NaN last), then library order, so ties and reruns rank alike.
    cands = [Candidate.from_dict(c) for b in sorted(done) for c in done[b]["candidates"]]
    cands += [Candidate.from_dict(c) for c in screened]  # no score: ranked after the fitted
    # The screened-out after the fitted, by their first-pass estimate.
    estimate = {c["index"]: c["first_pass_estimate"] for c in screened}
    cands.sort(key=lambda c: (not math.isfinite(c.score), -c.score if math.isfinite(c.score) else 0.0,
                              -_number_or(estimate.get(c.index), -math.inf), c.index))
    for r, c in enumerate(cands, 1):
        c.rank = r
    batches = [{"batch": b, "indices": done[b]["indices"],
                "n_fit_atoms": sum(entries[i].n_fit_atoms for i in done[b]["indices"]),
                "seconds": done[b]["seconds"], "device": done[b]["device"],
                "worker": done[b]["worker"], "from_checkpoint": b not in computed}
               for b in sorted(done)]
    result = IdentifyResult(
        candidates=cands, map=dmap, resolution=resolution, threshold=threshold,
        params=fparams, score=score, batch_atoms=int(batch_atoms), batches=batches,
        skipped=skipped, outdir=outdir, selection=selection,
        _library=[e.source for e in entries])
    result.timings = {"read_library": t_read, "fit": t_fit,
                      "total": time.perf_counter() - t_start}
    result.first_pass = first
    if first is not None:
        result.timings["first_pass"] = first["seconds_first_pass"]
        log.lines.append(first_pass_line(first, len(entries), {e.index: e.name for e in entries}))
        log.write()
    if outdir is not None:
        write_identify_outputs(result, outdir, top=top, model_format=model_format,
                               command=command, log=log)
    return result




def _number_or(x, default: float) -> float:
    return float(x) if x is not None and math.isfinite(float(x)) else default


def _with_first_pass(dmap, entries, plan: list, resolution: float, threshold: float,
                     fparams: FitParams, settings: IdentifyParams, task, finished,
                     done: dict) -> tuple[list[dict], dict]:
    """The coarse first pass over the whole library, then full fits (the usual batches,
    appended to ``plan``) of the candidates the bound keeps (:mod:`.prescreen`).

    Returns:
        (evidence of the screened-out candidates, the bound's record).
    """
    t0 = time.perf_counter()
    est = first_pass(dmap, entries, resolution, threshold, fparams, settings)
    t_first = time.perf_counter() - t0

    def fit_indices(todo: list[int]) -> dict[int, float]:
        scores = {}
        for idx in plan_batches([entries[i] for i in todo], int(settings.batch_atoms)):
            b = len(plan)
            plan.append(idx)  # entry indices
            finished(_run_batch(task(b), dmap))
            for c in done[b]["candidates"]:
                scores[c["index"]] = float("nan") if c["score"] is None else float(c["score"])
        return scores

    record = run_rounds(est, int(settings.first_pass_top), float(settings.first_pass_margin),
                        int(settings.first_pass_check), fit_indices)
    record["seconds_first_pass"] = t_first
    fitted = {i for b in done for i in done[b]["indices"]}
    screened = [screened_evidence(entries[i], est[i], settings.score)
                for i in sorted(est) if i not in fitted]
    return [jsonable(d) for d in screened], record
