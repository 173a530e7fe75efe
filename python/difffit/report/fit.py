"""The HTML report of a fit (``difffit fit --report``): per structure, the ranked
placements, the score distribution of all starts with the best clusters marked, and the
convergence of the best clusters' representative starts."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..results import FitResult
from .blocks import _esc, _fmt, bar_chart, histogram, line_plot, page, table, write_report
from .molstar import molstar_view, write_assets
from .views import placed_trace, projection_views

__all__ = ["fit_report", "fit_sections", "fit_meta"]


# Columns of the placements table: (metric key, heading).
_FIT_METRICS = (("correlation", "corr"), ("cam", "cam"), ("overlap", "overlap"),
                ("atom_correlation", "atom corr"), ("inside_fraction", "inside"))
_N_MARKED = 5  # clusters marked on the histogram and followed in the convergence plot


def _starts(result: FitResult, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(iterations [K], recorded scores [K, S_i], best recorded score [S_i]) of structure i's
    starts, or None when the result holds no trajectory."""
    tr = result.trajectory or {}
    if not all(k in tr for k in ("score", "iteration", "mol_idx")):
        return None
    score = np.asarray(tr["score"], dtype=np.float64)
    sel = np.nonzero(np.asarray(tr["mol_idx"]).ravel() == i)[0]
    if score.ndim != 2 or sel.size == 0 or score.shape[1] <= sel.max():
        return None
    s = score[:, sel]
    best = np.where(np.isfinite(s), s, -np.inf).max(0)
    best[~np.isfinite(best)] = np.nan  # a start that never recorded a finite score
    return np.asarray(tr["iteration"], dtype=np.float64).ravel(), s, best


def _placement_rows(result: FitResult, placements) -> list[dict]:
    rows = []
    for p in placements:
        c = p.centre
        row = {"structure": p.structure_name, "rank": p.rank, "hits": p.hits,
               f"score ({result.params.rank_by})": p.score}
        row.update({h: p.metrics.get(k, float("nan")) for k, h in _FIT_METRICS
                    if k != result.params.rank_by})  # already the score column
        row.update({"centre x (Å)": float(c[0]), "y": float(c[1]), "z": float(c[2]),
                    "start": p.start, "iteration": p.iteration})
        rows.append(row)
    return rows


def _hits(n: int) -> str:
    return f"{n} hit{'s' if n != 1 else ''}"


def fit_sections(result: FitResult, top: int = 10, views: int = 3) -> list[tuple[str, str]]:
    """The sections of a fit report: a summary (more than one structure), then per
    structure its ranked placements, the map around its best ``views`` placements with
    their traces drawn in (:mod:`difffit.report.views`), the score distribution of all its
    starts and the convergence of its best clusters.

    Workflows that embed fits in their own reports (:func:`page`) can reuse these.
    """
    top = max(int(top), 0)
    per = [result.for_structure(i) for i in range(len(result.structures))]
    sections = []
    if len(result.structures) > 1:
        best = sorted((ps[0] for ps in per if ps), key=lambda p: -p.score)
        body = [table(_placement_rows(result, best), caption="Best placement of each structure")]
        missing = [s.name for s, ps in zip(result.structures, per) if not ps]
        if missing:
            body.append(f'<p class="note">No placement for: {_esc(", ".join(missing))}.</p>')
        body.append(bar_chart([p.structure_name for p in best], [p.score for p in best],
                              title="Best placement of each structure",
                              xlabel=f"score ({result.params.rank_by})"))
        sections.append(("Summary", "\n".join(body)))
    for i, (s, ps) in enumerate(zip(result.structures, per)):
        body = [f'<p class="note">{len(ps)} cluster{"s" if len(ps) != 1 else ""} '
                f'(placements) ranked by {_esc(result.params.rank_by)}; {s.n_fit_atoms} '
                f'fitted atoms of {s.n_atoms}.</p>',
                table([{k: v for k, v in r.items() if k != "structure"}
                       for r in _placement_rows(result, ps[:top])],
                      caption=f"Top {min(top, len(ps))} placements")]
        for p in ps[:max(int(views), 0)]:
            body.append(projection_views(
                result.map, [(f"{s.name} rank {p.rank}", placed_trace(s, p.rotation, p.translation))],
                caption=f"Rank {p.rank} ({result.params.rank_by} {_fmt(p.score)}, "
                        f"{_hits(p.hits)}):"))
        starts = _starts(result, i)
        if starts is None:
            body.append('<p class="note">No trajectory recorded: no per-start plots.</p>')
        else:
            its, rec, best_per_start = starts
            shown = [p for p in ps[:_N_MARKED] if 0 <= p.start < rec.shape[1]]
            # The recorded score is the optimised (pyramid) score, not the ranking metric:
            # the marks show where each best cluster's representative start ended on it.
            marks = {f"#{p.rank}": float(best_per_start[p.start]) for p in shown}
            body.append(histogram(best_per_start, bins=50,
                                  title=f"{s.name}: best recorded score of each of "
                                        f"{rec.shape[1]} starts",
                                  xlabel="pyramid score (the optimised objective); "
                                         "#k: the representative of cluster k", marks=marks))
            series = {f"#{p.rank} ({_hits(p.hits)}), start {p.start}": (its, rec[:, p.start])
                      for p in shown}
            with np.errstate(all="ignore"):
                med = np.array([np.nanmedian(r) if np.isfinite(r).any() else np.nan for r in rec])
            series["median of all starts"] = (its, med)
            # Coarse-to-fine: the first steps move a Gaussian per group of atoms and are
            # not recorded (only atom poses are ranked), so the curves start there.
            first = int(np.nanmin(its)) if its.size else 0
            xlabel = ("iteration" if first <= 1 else f"iteration (steps 0-{first - 1} moved "
                      f"coarse Gaussians and are not recorded)")
            body.append(line_plot(series, title=f"{s.name}: convergence of the best clusters",
                                  xlabel=xlabel, ylabel="pyramid score",
                                  context={"median of all starts"}))
        sections.append((f"Structure {i + 1}: {s.name}", "\n".join(body)))
    return sections


def fit_meta(result: FitResult, command: str | None = None) -> dict:
    """Version, command, map, resolution, threshold, parameters and timings of a fit."""
    from .. import __version__

    m = result.map
    meta: dict[str, Any] = {"difffit": __version__}
    if command:
        meta["command"] = command
    meta["map"] = (f"{m.path or '(in memory)'}; grid {'x'.join(map(str, m.shape_xyz))}, "
                   f"voxel {', '.join(_fmt(float(v)) for v in m.voxel_size)} Å")
    names = [f"{s.name} ({s.n_atoms} atoms)" for s in result.structures]
    meta["structures"] = ", ".join(names[:10]) + (f" and {len(names) - 10} more"
                                                  if len(names) > 10 else "")
    meta["resolution (Å)"] = float(result.resolution)
    meta["threshold"] = float(result.threshold)
    meta["parameters"] = result.params
    meta["timings (s)"] = {k: float(v) for k, v in result.timings.items()}
    return meta


def fit_report(result: FitResult, path, overwrite: bool = False, top: int = 10, *,
               command: str | None = None, views: int = 3, view3d: bool = True) -> Path:
    """Write the HTML report of a fit (``difffit fit --report``).

    Args:
        result: the FitResult of :func:`difffit.fit`.
        path: the ``.html`` file to write.
        overwrite: replace an existing file.
        top: placements listed per structure.
        command: the command line, shown in the report's header table.
        views: placements per structure shown in the map along three axes.
        view3d: an interactive 3D view (Mol*) of each structure's best placement in the
            map; the viewer is written next to the report (:mod:`difffit.report.molstar`).

    Returns:
        The path written.
    """
    names = ", ".join(s.name for s in result.structures[:4])
    if len(result.structures) > 4:
        names += f" and {len(result.structures) - 4} more"
    sections = fit_sections(result, top, views)
    if view3d:
        best = [(i, result.for_structure(i)[0]) for i in range(len(result.structures))
                if result.for_structure(i)]
        sections.insert(0, ("3D view", molstar_view(
            result.map, result.threshold,
            [(f"{result.structures[i].name} rank 1", p.moved(result.structures[i]))
             for i, p in best[:8]])))
    html = page(f"difffit fit: {names}", sections, fit_meta(result, command))
    out = write_report(path, html, overwrite=overwrite)
    if view3d:
        write_assets(out.parent)
    return out
