"""The first pass's bound (difffit.workflows.prescreen.run_rounds): which candidates get
the full fit, given first-pass estimates and the full scores the fits would return.

The real-data check (identify with the first pass gives the plain run's top candidate and
score) is tests/test_gmm.py::test_first_pass_keeps_the_top_and_its_scores; here the rule
itself, on estimate tables shaped like the 300-candidate benchmark's."""
from __future__ import annotations

import math

from difffit.workflows.prescreen import run_rounds


def _rounds(estimates, full, top=2, margin=0.01, check=2):
    est = {i: {"estimate": e} for i, e in enumerate(estimates)}
    calls = []

    def fit(todo):
        calls.append(list(todo))
        return {i: full[i] for i in todo}

    return run_rounds(est, top, margin, check, fit), calls


def test_clear_top_is_fitted_and_the_rest_screened_after_a_check():
    # Two answers (est 0.45, full 0.455), a near miss (0.44 -> 0.442), decoys far below.
    est = [0.45, 0.449, 0.44, 0.43, 0.10, 0.09, 0.08]
    full = [0.455, 0.454, 0.442, 0.431, 0.15, 0.14, 0.13]
    rec, calls = _rounds(est, full)
    assert calls[0] == [0, 1]                     # within 1% of the 2nd best estimate
    assert calls[1] == [2, 3]                     # the check: the two best screened out
    assert rec["fitted"] == 4 and rec["screened_out"] == 3
    assert rec["top_full_score"] == 0.454
    assert math.isclose(rec["max_gain"], 0.005)
    assert rec["gain_bound"] >= 0.005 and [c["index"] for c in rec["checked"]] == [2, 3]


def test_a_check_that_gains_more_widens_the_bound():
    # The nearest screened-out candidate's coarse search missed: it gains 0.35 and
    # reaches the top; the bound widens and takes in every candidate within that gain.
    est = [0.45, 0.449, 0.20, 0.12, 0.11, 0.05]
    full = [0.455, 0.454, 0.55, 0.13, 0.12, 0.06]
    rec, calls = _rounds(est, full)
    assert calls[:2] == [[0, 1], [2, 3]]
    assert calls[2] == [4]                        # 0.11 + 0.35 >= s_K > 0.05 + 0.35
    assert rec["screened_out"] == 1 and math.isclose(rec["gain_bound"], 0.35)
    assert rec["top_full_score"] == 0.455


def test_no_check_and_ties_at_the_cut():
    est = [0.5, 0.5, 0.5, 0.3]
    full = [0.5, 0.5, 0.5, 0.3]
    rec, calls = _rounds(est, full, top=1, check=0)
    assert calls == [[0, 1, 2]]                   # every tie of the K-th estimate
    assert rec["screened_out"] == 1 and rec["checked"] == []
