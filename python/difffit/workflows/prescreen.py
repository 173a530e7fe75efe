"""Identify's first pass: a coarse search of every library candidate (a few dozen Gaussians
each, :mod:`difffit.gmm_search`), and the bound that decides which candidates get the full
atom fit.

The bound (docs/method.md, "identify at library scale"). The first pass gives each
candidate j an estimate e_j: its ranking metric (cam by default) at the best pose the
coarse search found, measured on the real structure. The full fit of a candidate
usually ends a little above or below its estimate (refinement, exact metrics), and a
candidate whose coarse search missed its pose ends far above it. So:

1. candidates with e_j >= e_(K) - margin are fitted fully (e_(K): the K-th best estimate);
2. after the full fits, g = max(margin, the largest f_i - e_i seen over the fitted
   candidates) and s_K = the K-th best full score;
3. every unfitted candidate with e_j + g >= s_K could still reach the top K: it is fitted
   too, and 2-3 repeat until none is left.

So a candidate is dropped only when its estimate is below the top K's full scores by
more than any fitted candidate ever gained from its estimate (and by at least
``margin``). The gains, the rounds and the final bound are reported
(``IdentifyResult.first_pass``), so the assumption is checked on every run.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np

from ..gmm_search import coarse_search
from ..library import Entry, plan_batches
from ..params import FitParams
from ..rotations import quat_to_matrix
from ..structures import Structure, read_structure

__all__ = ["first_pass", "initial_keep", "widen", "screened_evidence"]


def first_pass(dmap, entries: Sequence[Entry], resolution: float, threshold: float,
               params: FitParams, selection: str, batch_atoms: int, score: str,
               atoms_per_point: float, n_iters: int) -> dict[int, dict]:
    """The coarse search of every candidate, in batches of ``batch_atoms`` fitted atoms.

    Returns:
        index -> {"estimate", "metrics", "quat", "trans", "n_points", "centroid"}.
    """
    metric = params.rank_by if score == "zscore" else score
    out: dict[int, dict] = {}
    for idx in plan_batches(entries, batch_atoms):
        structs = [entries[i].source if isinstance(entries[i].source, Structure) else
                   read_structure(entries[i].source, selection=selection) for i in idx]
        hits = coarse_search(dmap, structs, resolution, threshold, params,
                             atoms_per_point=atoms_per_point, n_iters=n_iters, keep=4)
        for i, s, h in zip(idx, structs, hits):
            out[i] = {"estimate": float(h.metrics[metric][0]) if len(h.quat) else float("nan"),
                      "metrics": {k: float(v[0]) for k, v in h.metrics.items()} if len(h.quat) else {},
                      "quat": h.quat[0] if len(h.quat) else None,
                      "trans": h.trans[0] if len(h.quat) else None,
                      "n_points": h.n_points, "centroid": s.centroid}
    return out


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


def initial_keep(est: dict[int, dict], top: int, margin: float) -> list[int]:
    """Indices with estimate >= the ``top``-th best estimate - ``margin`` (library order)."""
    e = sorted((_finite(v["estimate"]) for v in est.values()), reverse=True)
    cut = e[min(top, len(e)) - 1] - margin
    return sorted(i for i, v in est.items() if _finite(v["estimate"]) >= cut)


def widen(est: dict[int, dict], full: dict[int, float], top: int, margin: float
          ) -> tuple[list[int], float, float]:
    """The unfitted candidates that could still reach the top ``top``.

    Args:
        est: the first pass's estimates; full: index -> full-fit score of those fitted.

    Returns:
        (indices to fit now, the gain bound g, the top-th best full score s_K).
    """
    gains = [full[i] - est[i]["estimate"] for i in full
             if math.isfinite(full[i]) and math.isfinite(est[i]["estimate"])]
    g = max([margin] + gains)
    scores = sorted((_finite(v) for v in full.values()), reverse=True)
    s_k = scores[top - 1] if len(scores) >= top else -math.inf
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
            "placements": [], "first_pass_estimate": e["estimate"]}


def run_rounds(est: dict[int, dict], top: int, margin: float,
               fit_indices: Callable[[list[int]], dict[int, float]]) -> dict:
    """Fit the initial keep set, then widen until no unfitted candidate can reach the top.

    Args:
        fit_indices: fits the given candidates fully; returns index -> full score.

    Returns:
        the bound's record: rounds (fitted per round), gain bound, s_K, the largest gain
        seen, fitted count.
    """
    t0 = time.perf_counter()
    full: dict[int, float] = {}
    todo = initial_keep(est, top, margin)
    rounds = []
    g, s_k = margin, -math.inf
    while todo:
        full.update(fit_indices(todo))
        rounds.append(len(todo))
        todo, g, s_k = widen(est, full, top, margin)
    gains = [full[i] - est[i]["estimate"] for i in full
             if math.isfinite(full[i]) and math.isfinite(est[i]["estimate"])]
    unfitted = [_finite(v["estimate"]) for i, v in est.items() if i not in full]
    return {"top": int(top), "margin": float(margin), "rounds": rounds, "fitted": len(full),
            "screened_out": len(est) - len(full), "gain_bound": float(g),
            "max_gain": float(max(gains)) if gains else None,
            "top_full_score": float(s_k) if math.isfinite(s_k) else None,
            "best_screened_estimate": float(max(unfitted)) if unfitted else None,
            "seconds_full": time.perf_counter() - t0}
