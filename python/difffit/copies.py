"""Distinct copies and how clearly the best placement stands out.

* :class:`Occupancy`: the CA traces of placements already taken, and the clash test that
  composite and ``fit --copies`` share: a placement clashes when more than ``max_clash``
  of its CA atoms (P for nucleotides) lie within ``clash_distance`` of one taken
  placement's.
* :func:`select_copies`: the best non-clashing placements of a structure, greedily, best
  score first: a map that holds several copies lists each of them once.
* :func:`significance`: z-scores of the placements against all clusters of their structure
  and the rule that flags an answer that is not clearly separated.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.spatial import cKDTree

from .params import AcceptRules

__all__ = ["Occupancy", "select_copies", "significance", "GAP_STD", "GAP_MIN"]

# The significance rule (docs/method.md section 7): the best placement is clearly
# separated when it leads the next distinct placement by at least GAP_STD standard
# deviations of all clusters' scores and by at least GAP_MIN in score.
GAP_STD = 1.0
GAP_MIN = 0.01


class Occupancy:
    """CA atoms of the placements taken so far, for the clash test."""

    def __init__(self):
        self.trees: list[tuple[str, cKDTree]] = []

    def add(self, label: str, xyz: np.ndarray) -> None:
        """Take a placement: its trace atoms ``xyz`` [K, 3] (world coordinates)."""
        self.trees.append((label, cKDTree(xyz)))

    def worst(self, xyz: np.ndarray, distance: float) -> tuple[float, str | None]:
        """(largest fraction of ``xyz`` [K, 3] within ``distance`` of one placement, its label)."""
        best, who = 0.0, None
        for label, tree in self.trees:
            d, _ = tree.query(xyz, k=1, distance_upper_bound=distance)
            frac = float(np.isfinite(d).mean())
            if frac > best:
                best, who = frac, label
        return best, who


def select_copies(trace: np.ndarray, poses: Sequence[tuple[np.ndarray, np.ndarray]],
                  scores: Sequence[float], copies: int | str,
                  rules: AcceptRules = AcceptRules()) -> list[int]:
    """The distinct copies among a structure's ranked placements.

    Args:
        trace: [K, 3] the structure's trace atoms (input coordinates).
        poses: (R [3, 3], t [3]) of each placement, best first.
        scores: the ranking metric of each placement.
        copies: how many copies to take, or "auto": every placement that does not clash
            with a better one and scores at least ``rules.min_score`` and
            ``rules.rel_score`` x the best score (composite's acceptance rule).
        rules: the clash test and, for "auto", the score floors.

    Returns:
        Indices into ``poses`` of the copies, best first.
    """
    occupied = Occupancy()
    taken: list[int] = []
    limit = None if copies == "auto" else int(copies)
    best = max((s for s in scores if np.isfinite(s)), default=float("nan"))
    for k, ((R, t), s) in enumerate(zip(poses, scores)):
        if limit is not None and len(taken) >= limit:
            break
        if limit is None and not (s >= rules.min_score and s >= rules.rel_score * best):
            break  # best first: nothing after it passes either
        xyz = trace @ np.asarray(R).T + np.asarray(t)
        clash, _ = occupied.worst(xyz, rules.clash_distance)
        if clash > rules.max_clash:
            continue
        occupied.add(str(k), xyz)
        taken.append(k)
    return taken


def significance(scores: Sequence[float], n_copies: int = 1, distinct_next: int | None = None
                 ) -> tuple[np.ndarray, str | None]:
    """z-scores of a structure's placements and whether its answer is clearly separated.

    Args:
        scores: the ranking metric of every cluster of the structure, best first.
        n_copies: the answer is the first ``n_copies`` placements (``fit --copies``).
        distinct_next: index of the first placement after the answer that is a
            different answer (default ``n_copies``).

    Returns:
        ([n] z-scores, (s - mean) / std over all clusters; NaN with fewer than 3 clusters),
        and None when the answer is clearly separated, else the reason in words.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size < 3 or not np.all(np.isfinite(s)) or s.std() == 0:
        return np.full(s.shape, np.nan), None
    z = (s - s.mean()) / s.std()
    k = n_copies if distinct_next is None else distinct_next
    if k >= s.size:
        return z, None
    last = s[n_copies - 1]
    gap = last - s[k]
    if gap < GAP_MIN or gap < GAP_STD * s.std():
        what = "the best placement" if n_copies == 1 else f"copy {n_copies}"
        return z, (f"{what} (score {last:.3f}, z {z[n_copies - 1]:.1f}) is not clearly "
                   f"separated from placement {k + 1} (score {s[k]:.3f}, z {z[k]:.1f}): "
                   f"the gap {gap:.3f} is below max({GAP_MIN}, {GAP_STD:g} std of all "
                   f"{s.size} clusters' scores = {s.std():.3f})")
    return z, None
