"""Identify's first pass: a coarse search of every library candidate (a few dozen Gaussians
each, :mod:`difffit.gmm_search`), and the bound that decides which candidates get the full
atom fit.

The bound (docs/method.md section 11). The first pass gives each candidate j an estimate
e_j: its ranking metric (cam by default) at the best pose the coarse search found, after
the same refinement against the map a full fit ends with, measured on the real
structure. A full fit that finds the same basin ends within a few thousandths of it; a
candidate whose coarse search missed its pose ends far above it. So:

1. candidates with e_j >= e_(K) - margin |e_(K)| are fitted fully (e_(K): the K-th best
   estimate);
2. after the full fits, g = the largest of margin |s_K| and the gains f_i - e_i seen over
   the fitted candidates, s_K being the K-th best full score;
3. every unfitted candidate with e_j + g >= s_K could still reach the top K: it is fitted
   too, and 2-3 repeat until none is left;
4. the check: the ``check`` best unfitted candidates (the nearest to the cut) are fitted
   as well, their gains join step 2, and step 3 runs again.

So a candidate is dropped only when its estimate is below the top K's full scores by
more than any fitted candidate, those nearest the cut included, ever gained from its
estimate. The gains, the rounds and the final bound are reported
(``IdentifyResult.first_pass``), so the assumption is checked on every run.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from ..gmm_search import coarse_search
from ..library import Entry, plan_batches
from ..params import FitParams, IdentifyParams
from ..rotations import quat_to_matrix
from ..structures import Structure, read_structure

__all__ = ["first_pass", "initial_keep", "widen", "screened_evidence", "run_rounds",
           "first_pass_line"]

_POLISH = 20   # atom steps of each kept coarse pose before its refinement


def first_pass(dmap, entries: Sequence[Entry], resolution: float, threshold: float,
               params: FitParams, settings: IdentifyParams) -> dict[int, dict]:
    """The coarse search of every candidate, in batches of ``settings.batch_atoms`` fitted
    atoms, with the first pass's own positions, rotations and steps (IdentifyParams).

    Returns:
        index -> {"estimate", "metrics", "quat", "trans", "n_points", "centroid"}.
    """
    metric = params.rank_by if settings.score == "zscore" else settings.score
    coarse = replace(params, n_positions=settings.first_pass_positions,
                     scan_rotations=settings.first_pass_rotations, rank_by=metric)
    out: dict[int, dict] = {}
    for idx in plan_batches(entries, settings.batch_atoms):
        structs = [entries[i].source if isinstance(entries[i].source, Structure) else
                   read_structure(entries[i].source, selection=settings.selection) for i in idx]
        hits = coarse_search(dmap, structs, resolution, threshold, coarse,
                             atoms_per_point=settings.first_pass_atoms,
                             n_iters=settings.first_pass_iters, keep=4, polish_iters=_POLISH)
        for i, s, h in zip(idx, structs, hits):
            out[i] = {"estimate": float(h.metrics[metric][0]) if len(h.quat) else float("nan"),
                      "metrics": {k: float(v[0]) for k, v in h.metrics.items()} if len(h.quat) else {},
                      "quat": h.quat[0] if len(h.quat) else None,
                      "trans": h.trans[0] if len(h.quat) else None,
                      "n_points": h.n_points, "centroid": s.centroid}
    return out


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


def _floor(margin: float, score: float) -> float:
    """The smallest gain the bound allows: ``margin`` of the score's size."""
    return margin * abs(score) if math.isfinite(score) else math.inf


def initial_keep(est: dict[int, dict], top: int, margin: float) -> list[int]:
    """Indices with estimate >= e_K - margin |e_K|, e_K the ``top``-th best (library order)."""
    e = sorted((_finite(v["estimate"]) for v in est.values()), reverse=True)
    e_k = e[min(top, len(e)) - 1]
    cut = e_k - _floor(margin, e_k)
    return sorted(i for i, v in est.items() if _finite(v["estimate"]) >= cut)


def _gains(est: dict[int, dict], full: dict[int, float]) -> list[float]:
    return [full[i] - est[i]["estimate"] for i in full
            if math.isfinite(full[i]) and math.isfinite(est[i]["estimate"])]


def widen(est: dict[int, dict], full: dict[int, float], top: int, margin: float
          ) -> tuple[list[int], float, float]:
    """The unfitted candidates that could still reach the top ``top``.

    Args:
        est: the first pass's estimates; full: index -> full-fit score of those fitted.

    Returns:
        (indices to fit now, the gain bound g, the top-th best full score s_K).
    """
    scores = sorted((_finite(v) for v in full.values()), reverse=True)
    s_k = scores[top - 1] if len(scores) >= top else -math.inf
    g = max([_floor(margin, s_k)] + _gains(est, full))
    more = sorted(i for i, v in est.items() if i not in full
                  and _finite(v["estimate"]) + g >= s_k)
    return more, g, s_k


def screened_evidence(entry: Entry, e: dict, score: str) -> dict:
    """Evidence of a candidate left out after the first pass: no full fit, so no score
    (it ranks after every fitted candidate); its coarse pose and metrics are kept."""
    R = t = centre = None
    if e["quat"] is not None:
        import torch

        R = quat_to_matrix(torch.as_tensor(e["quat"], dtype=torch.float64)[None])[0].numpy()
        centre = np.asarray(e["trans"], dtype=np.float64)
        t = centre - R @ e["centroid"]
    return {"index": entry.index, "name": entry.name, "source": entry.label,
            "n_atoms": entry.n_atoms, "n_fit_atoms": entry.n_fit_atoms, "batch": -1,
            "n_clusters": 0, "cluster_scores": {}, "score": None, "zscore": None, "hits": 0,
            "metrics": e["metrics"], "rotation": R, "translation": t, "centre": centre,
            "placements": [], "first_pass_estimate": e["estimate"], "screened": True}


def run_rounds(est: dict[int, dict], top: int, margin: float, check: int,
               fit_indices: Callable[[list[int]], dict[int, float]]) -> dict:
    """Fit the initial keep set, widen until no unfitted candidate can reach the top, fit
    the ``check`` best unfitted ones as a check, and widen again.

    Args:
        fit_indices: fits the given candidates fully; returns index -> full score.

    Returns:
        the bound's record: rounds (fitted per round), gain bound, s_K, the largest gain
        seen, the checked candidates' gains, fitted count.
    """
    t0 = time.perf_counter()
    full: dict[int, float] = {}
    todo = initial_keep(est, top, margin)
    rounds, checked = [], []
    g, s_k = math.inf, -math.inf
    while todo:
        full.update(fit_indices(todo))
        rounds.append(len(todo))
        todo, g, s_k = widen(est, full, top, margin)
        if not todo and not checked and check > 0:
            rest = sorted((i for i in est if i not in full),
                          key=lambda i: -_finite(est[i]["estimate"]))[:check]
            if rest:
                full.update(fit_indices(sorted(rest)))
                rounds.append(len(rest))
                checked = [{"index": i, "estimate": est[i]["estimate"], "full": full[i],
                            "gain": full[i] - est[i]["estimate"]} for i in rest]
                todo, g, s_k = widen(est, full, top, margin)
    gains = _gains(est, full)
    unfitted = [_finite(v["estimate"]) for i, v in est.items() if i not in full]
    return {"top": int(top), "margin": float(margin), "rounds": rounds, "fitted": len(full),
            "screened_out": len(est) - len(full), "gain_bound": float(g),
            "max_gain": float(max(gains)) if gains else None, "checked": checked,
            "top_full_score": float(s_k) if math.isfinite(s_k) else None,
            "best_screened_estimate": float(max(unfitted)) if unfitted else None,
            "seconds_full": time.perf_counter() - t0}


def first_pass_line(record: dict, n_candidates: int, names: dict[int, str] | None = None) -> str:
    """One line on what the first pass did (the CLI's and the log's)."""
    fitted, top = record["fitted"], record["top"]
    if record["screened_out"] == 0:
        return (f"first pass: all {n_candidates} candidates fitted fully (the top {top} and "
                f"the check leave nothing to screen out)")
    checked = record.get("checked") or []
    what = ", ".join(f"{(names or {}).get(c['index'], '#%d' % (c['index'] + 1))} "
                     f"{c['estimate']:.3f} -> {c['full']:.3f}" for c in checked)
    return (f"first pass: {fitted} of {n_candidates} candidates fitted fully in rounds "
            f"{record['rounds']} (could reach the top {top}: estimate + "
            f"{record['gain_bound']:.4f} >= {record['top_full_score']:.4f}, the largest gain "
            f"seen {record['max_gain'] or 0.0:+.4f})"
            + (f"; checked (the best screened out, fitted): {what}" if checked else "")
            + f"; the other {record['screened_out']} ranked after them by their estimate, "
              f"not fitted fully")
