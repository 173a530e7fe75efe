"""Composite fitting: place several subunits (each possibly several times) into one map.

Round after round (docs/method.md sections 1, 7 and 9):

1. Fit every subunit that may still be placed into the *working map* (round 1: the input
   map) with :func:`difffit.fit.fit`: all structures in one batch, every cluster of every
   structure is a candidate.
2. Go through the candidates of all structures together, best score first, and accept a
   candidate when every rule of :class:`AcceptRules` holds (see there): its structure
   still has copies to place; its score reaches the absolute floor ``min_score`` and
   ``rel_score`` times the best score that structure has reached in any round; at least
   ``min_inside`` of its atoms lie in unexplained density; and its CA trace does not
   clash with any placement accepted before it (this round or earlier).
3. Zero out the density the round's accepted placements explain (:func:`difffit.simulate.explained_mask`:
   every voxel where their simulated map, at the map's resolution and on the map's grid,
   exceeds ``zero_fraction`` of its maximum) and use the result as the next working map.
4. Stop when every structure has all its copies, after ``max_rounds`` rounds, when no
   density is left above the contour (the map is fully explained: a complete run, with
   its outputs), or when ``empty_rounds`` consecutive rounds accept nothing (default 2: an empty round is
   retried once from new starts, since one search can miss a subunit).

The contour level is resolved once, on the input map, and kept for every round: zeroed
voxels then fall below it, so the next fits see them as solvent (negative space) and are
pushed into the density that is still unexplained.

The output folder's layout is in :mod:`difffit.output.composite`. A round folder is
written under a temporary name and renamed when complete, then ``state.json`` is updated:
the state file is the commit point, so ``resume=True`` after an interruption continues
with the round after the last one recorded there.

Chain names in the composite model: ``<original chain>_<input number>_<copy number>``
(1-based; input numbers follow the order of ``structures``): ``A_2_1`` is chain A of the
second input structure, first copy placed. mmCIF has no limit on chain-name length.
"""
from __future__ import annotations

import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import __version__
from ..copies import Occupancy
from ..errors import DifffitInputError
from .fit import as_map, as_structures, check_resolution, check_threshold, fit
from ..maps import DensityMap, read_map
from ..output.composite import read_round, round_dir, write_composite_outputs, write_round
from ..params import AcceptRules, FitParams, resolve
from ..preprocess import remove_dust
from ..results import CompositePlacement, CompositeResult, FitResult, RoundRecord
from ..runs import RunFolder, map_fingerprint, structure_fingerprint
from ..simulate import zero_out
from ..simulators import simulator_for
from ..structures import Structure, trace_mask
from ..symmetry import expand_placements, resolve_symmetry
from ..tables import pose_columns

__all__ = ["composite"]

STATE_FILE = "state.json"
_STATE_FORMAT = "difffit-composite-state/2"


def _normalise_copies(copies, structures: Sequence[Structure]) -> list[int | None]:
    """copies (None, int, list, or dict keyed by name or index) -> [M] int or None."""
    M = len(structures)
    if copies is None:
        out: list[Any] = [None] * M
    elif isinstance(copies, (int, np.integer)):
        out = [int(copies)] * M
    elif isinstance(copies, dict):
        out = [None] * M
        names = [s.name for s in structures]
        for key, value in copies.items():
            if isinstance(key, (int, np.integer)):
                if not 0 <= int(key) < M:
                    raise DifffitInputError(f"copies: structure index {key} out of range 0..{M - 1}")
                out[int(key)] = value
            elif key in names:
                out[names.index(key)] = value
            else:
                raise DifffitInputError(f"copies: no structure named {key!r}; have {names}")
    else:
        out = list(copies)
        if len(out) != M:
            raise DifffitInputError(f"copies: {len(out)} numbers given for {M} structures")
    for k, v in enumerate(out):
        if v is not None and (not isinstance(v, (int, np.integer)) or int(v) < 1):
            raise DifffitInputError(
                f"copies: {structures[k].name}: copy number must be an integer >= 1 or None "
                f"(open), got {v!r}")
    return [None if v is None else int(v) for v in out]


def _asu_copies(w: int, sym, k: int) -> int:
    """Copies of structure ``k`` in the asymmetric unit: ``w`` in the whole map / group size."""
    if w % sym.n_operators:
        raise DifffitInputError(f"copies: {w} copies of structure {k + 1} cannot be made of "
                                f"whole {sym.name} sets; give a multiple of {sym.n_operators}")
    return w // sym.n_operators


def _density_above(dmap: DensityMap, threshold: float) -> float:
    """Summed map values above the contour (float64)."""
    d = dmap.data
    return float(d[d > threshold].sum(dtype=np.float64))


def _decide(res: FitResult, fitted: list[int], structures: Sequence[Structure],
            traces: list[np.ndarray], counts: list[int], copies: list[int | None],
            best: list[float], occupancy: Occupancy, rules: AcceptRules, round_no: int
            ) -> tuple[list[CompositePlacement], list[dict]]:
    """Apply the AcceptRules to every candidate of a round's fit.

    ``res.structures[k]`` is ``structures[fitted[k]]``. ``counts``, ``best`` and
    ``occupancy`` are updated in place.
    """
    for p in res.placements:
        g = fitted[p.structure_index]
        best[g] = max(best[g], float(p.score))
    accepted: list[CompositePlacement] = []
    rows: list[dict] = []
    # res.placements is sorted by score, best first, across all structures.
    for p in res.placements:
        g = fitted[p.structure_index]
        s = structures[g]
        inside = float(p.metrics.get("inside_fraction", float("nan")))
        clash, reason = None, None
        if copies[g] is not None and counts[g] >= copies[g]:
            reason = f"all {copies[g]} copies placed"
        elif not p.score >= rules.min_score:
            reason = f"score < min_score {rules.min_score:g}"
        elif not p.score >= rules.rel_score * best[g]:
            reason = f"score < {rules.rel_score:g} x best {best[g]:.3f}"
        elif not inside >= rules.min_inside:
            reason = f"inside fraction < {rules.min_inside:g}"
        else:
            xyz = traces[g] @ p.rotation.T + p.translation
            clash, who = occupancy.worst(xyz, rules.clash_distance)
            if clash > rules.max_clash:
                reason = f"clashes with {who}"
        row = {"round": round_no, "structure": s.name, "input": g + 1, "rank": p.rank,
               "hits": p.hits, "score": float(p.score),
               "correlation": float(p.metrics.get("correlation", float("nan"))),
               "inside_fraction": inside, "clash_fraction": clash,
               "decision": "accepted" if reason is None else "rejected", "reason": reason or "",
               **pose_columns(p.rotation, p.translation, p.centre)}
        if reason is None:
            counts[g] += 1
            chains = [f"{c}_{g + 1}_{counts[g]}" for c in s.chains]
            cp = CompositePlacement(
                rotation=np.asarray(p.rotation, dtype=np.float64),
                translation=np.asarray(p.translation, dtype=np.float64),
                centre=np.asarray(p.centre, dtype=np.float64), score=float(p.score),
                hits=int(p.hits), metrics=dict(p.metrics), structure_index=g,
                structure_name=s.name, copy=counts[g], round=round_no, chains=chains)
            accepted.append(cp)
            occupancy.add(f"{s.name} copy {counts[g]}", traces[g] @ cp.rotation.T + cp.translation)
            row["chains"] = " ".join(chains)
        rows.append(row)
    return accepted, rows


def _run_key(dmap, structs, resolution, thr, want, rules: AcceptRules, params: FitParams) -> dict:
    """What a resumed run must find unchanged. The device and the stopping rules
    (max_rounds, empty_rounds) may change: they decide how long a run goes, not what it
    finds."""
    r = asdict(rules)
    for k in ("max_rounds", "empty_rounds"):
        r.pop(k)
    p = asdict(params)
    p.pop("device")
    return {"map": {k: v for k, v in map_fingerprint(dmap).items() if k in ("grid_xyz", "sha1")},
            "structures": [[s.name, s.n_atoms, structure_fingerprint(s)] for s in structs],
            "resolution": resolution, "threshold": thr, "copies": want, "rules": r,
            "fit_params": p}


def composite(target, structures, resolution: float, threshold: float | None = None,
              copies=None, outdir=None, resume: bool = False, force: bool = False,
              params: FitParams | None = None, rules: AcceptRules | None = None,
              progress: bool = False, log: Callable[[str], None] | None = None,
              symmetry=None, symmetry_axis=None, symmetry_centre=None,
              **overrides) -> CompositeResult:
    """Place several subunits into one map, round after round (see the module docstring).

    Args:
        target: DensityMap or path of an MRC/CCP4 map.
        structures: Structure objects or paths; each is one subunit (all its chains move
            together). Read with the default backbone selection when given as paths.
        resolution: map resolution in Angstrom (fit metrics and the zero-out simulation).
        threshold: contour level; None: mean + 1 standard deviation of the input map.
            Resolved once and used in every round.
        copies: how many copies of each structure to place at most: None (open, for all),
            an int (the same for all), a list (one int or None per structure), or a dict
            keyed by structure name or index (missing ones open).
        outdir: write every round and the final outputs here (None: nothing is written).
        resume: continue the run recorded in ``outdir/state.json`` (inputs and settings
            must match) after its last complete round; without a state file, start anew.
        force: start anew in an ``outdir`` that is not empty (a previous run's state and
            round folders there are removed).
        params: FitParams for every round's fit (the seed of round k is ``seed + k - 1``,
            so a failed search is retried from other starts).
        rules: AcceptRules.
        progress: progress bars and one line per round on stderr.
        log: called with one line per round (default: print to stderr when ``progress``).
        symmetry: None, "Cn", "Dn", "auto" or a :class:`difffit.symmetry.Symmetry`: the
            structures are the asymmetric unit (one copy each unless ``copies`` says how
            many in the whole map, a multiple of the group's size); each accepted copy's
            symmetric images are added after the rounds, those that clash left out.
        symmetry_axis, symmetry_centre: [3] each; None: found from the map.
        overrides: single fields of AcceptRules (``min_score=0.4``) or FitParams
            (``n_iters=100``).

    Returns:
        CompositeResult.

    Raises:
        DifffitInputError: bad input, or ``resume`` with different inputs or settings.
        FileExistsError: ``outdir`` is not empty and neither ``resume`` nor ``force``.
    """
    t_start = time.perf_counter()
    if resume and outdir is None:
        raise DifffitInputError("composite: resume=True needs the outdir of the run to resume")
    params, rules = resolve(overrides, (FitParams, params), (AcceptRules, rules))
    resolution = check_resolution(resolution)
    dmap = as_map(target)
    structs = as_structures(structures)
    want = _normalise_copies(copies, structs)
    thr = check_threshold(threshold, dmap)
    device = str(params.torch_device())
    if log is None:
        log = (lambda msg: print(msg, file=sys.stderr)) if progress else (lambda msg: None)
    sym = resolve_symmetry(dmap, thr, symmetry, symmetry_axis, symmetry_centre)
    if sym is not None:  # the rounds place the asymmetric unit; its images come after
        log(f"composite: symmetry {sym.describe()}")
        want = [1 if w is None else _asu_copies(w, sym, k) for k, w in enumerate(want)]

    now = {"format": _STATE_FORMAT, "difffit_version": __version__,
           "key": _run_key(dmap, structs, resolution, thr, want, rules, params),
           "map_path": None if dmap.path is None else str(Path(dmap.path).resolve()),
           "rules": asdict(rules), "fit_params": asdict(params), "rounds": [],
           "finished": False, "stop_reason": None}
    out = Path(outdir) if outdir is not None else None
    rounds: list[RoundRecord] = []
    if out is not None:
        folder = RunFolder(out, STATE_FILE, owned=("round_[0-9]*", ".round_*"), what="composite")
        state = folder.open(now["key"], resume, force)
        if state is not None:
            rounds = [read_round(out, int(r["round"])) for r in state["rounds"]]
            # Round folders beyond the state's last round are from an interrupted write.
            for p in [*out.glob(".round_*"), *out.glob("round_[0-9]*")]:
                if p.name.startswith(".") or int(p.name.split("_")[1]) > len(rounds):
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
            now["rounds"] = state["rounds"]
            log(f"composite: resuming {out} after round {len(rounds)}")
        folder.write_state(now)
    working = dmap
    for rec in rounds:
        if rec.working_map is not None:
            working = read_map(rec.working_map)

    # Replay the recorded rounds: copy counts, best scores and occupied space.
    traces = [s.coords[trace_mask(s)] for s in structs]
    total = _density_above(dmap, thr) or 1.0
    counts = [0] * len(structs)
    best = [-np.inf] * len(structs)
    occupancy = Occupancy()
    placements: list[CompositePlacement] = []
    for rec in rounds:
        for row in rec.candidates:
            g = int(row["input"]) - 1
            if row.get("score") is not None:
                best[g] = max(best[g], float(row["score"]))
        for p in rec.accepted:
            counts[p.structure_index] += 1
            occupancy.add(f"{p.structure_name} copy {p.copy}",
                          traces[p.structure_index] @ p.rotation.T + p.translation)
            placements.append(p)

    stop = None
    while stop is None:
        k = len(rounds) + 1
        empty = len(rounds) - max([r.index for r in rounds if r.accepted], default=0)
        if empty >= rules.empty_rounds:
            stop = f"{empty} consecutive round(s) accepted nothing"
            break
        fitted = [i for i in range(len(structs)) if want[i] is None or counts[i] < want[i]]
        if not fitted:
            stop = "every structure has its copies"
            break
        if k > rules.max_rounds:
            stop = f"max_rounds ({rules.max_rounds}) reached"
            break
        if rounds and not remove_dust(working.data > thr, params.dust_min_size).any():
            stop = "the map is fully explained: no density is left above the contour"
            break
        t0 = time.perf_counter()
        # The plausibility checks judge the input map (round 1); a working map with
        # density zeroed is smaller than the models by design.
        res = fit(working, [structs[i] for i in fitted], resolution, threshold=thr,
                  params=params, progress=progress, check=k == 1, seed=params.seed + k - 1)
        t1 = time.perf_counter()
        accepted, rows = _decide(res, fitted, structs, traces, counts, want, best, occupancy,
                                 rules, k)
        t2 = time.perf_counter()
        new_working = None
        if accepted:
            new_working = zero_out(working, [p.moved(structs[p.structure_index]) for p in accepted],
                                   resolution, rules.zero_fraction, device,
                                   simulator_for(params))
        rec = RoundRecord(index=k, fitted=fitted, accepted=accepted, candidates=rows,
                          timings={"fit": t1 - t0, "decide": t2 - t1,
                                   "zero": time.perf_counter() - t2},
                          remaining=_density_above(
                              working if new_working is None else new_working, thr) / total)
        if out is not None:
            write_round(out, rec, structs, new_working, params.rank_by)
            now["rounds"].append({"round": k, "dir": round_dir(out, k).name,
                                  "accepted": len(accepted), "timings": rec.timings})
            folder.write_state(now)
        rounds.append(rec)
        placements.extend(accepted)
        if new_working is not None:
            working = new_working
        log(f"composite: round {k}: fitted {len(fitted)} structure(s), accepted "
            + (", ".join(f"{p.structure_name} copy {p.copy} ({p.score:.3f})" for p in accepted)
               or "nothing"))

    if sym is not None:
        placements, dropped = expand_placements(placements, structs, sym, dmap, resolution, thr,
                                                rules.clash_distance, rules.max_clash, params.rank_by)
        for line in dropped:
            log(f"composite: {line}")
        want = [w if w is None else w * sym.n_operators for w in want]
        stop += f"; {sym.name} images added ({len(dropped)} left out for a clash)"
    result = CompositeResult(placements=placements, structures=structs, map=dmap,
                             working_map=working, resolution=resolution, threshold=thr,
                             params=params, rules=rules, copies=want, rounds=rounds,
                             stop_reason=stop, outdir=out, symmetry=sym)
    if out is not None:
        now["finished"], now["stop_reason"] = True, stop
        now["total_seconds_last_session"] = time.perf_counter() - t_start
        folder.write_state(now)
        result.paths = write_composite_outputs(result, out)
    return result


