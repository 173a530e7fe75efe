"""The HTML report of an identify run: the ranked table, the runner-up placements of the
best candidates, the scores as bars and as a distribution."""
from __future__ import annotations

from pathlib import Path

from .. import __version__
from ..params import SIZE_FAIR
from ..results import IdentifyResult
from ..errors import DifffitInputError
from .blocks import _esc, bar_chart, histogram, page, table, write_report
from .molstar import write_assets
from .views import picture_section

__all__ = ["identify_report"]


def identify_report(result: IdentifyResult, path, overwrite: bool = False, top: int = 30, *,
                    command: str | None = None, view3d: bool = True) -> Path:
    """Write the HTML report of an identify run: the ranked table, the scores of the best
    candidates as bars, and the distribution of every candidate's score.

    Args:
        result: the IdentifyResult.
        path: the ``.html`` file to write.
        overwrite: replace an existing file.
        top: candidates in the table and the bar chart.
        command: the command line, shown in the header.
        view3d: an interactive 3D view (Mol*) of the best candidate in its placement,
            beside the map's projections (the viewer is written next to the report).

    Returns:
        The path written.
    """
    top = max(int(top), 1)
    shown = result.candidates[:top]
    rows = [{"rank": c.rank, "candidate": c.name, "atoms": c.n_atoms, result.score: c.score,
             "zscore": c.zscore, "hits": c.hits, "clusters": c.n_clusters,
             "corr": c.metrics.get("correlation"), "cam": c.metrics.get("cam"),
             "inside": c.metrics.get("inside_fraction"),
             "centre x (Å)": float(c.centre[0]), "y": float(c.centre[1]),
             "z": float(c.centre[2]), "file": Path(c.source).name} for c in shown]
    fair = "" if result.score in SIZE_FAIR else \
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
    if result.candidates:
        best = result.candidates[0]
        try:
            placed = [(f"#1 {best.name}", result.structure(best))]
        except (DifffitInputError, OSError) as exc:  # its file gone since the run
            placed, view3d = [], False
            sections.append(("The best candidate in the map",
                             f'<p class="note">{_esc(str(exc))}</p>'))
        if placed:
            sections.insert(1, ("The best candidate in the map", picture_section(
                result.map, result.threshold, placed, view3d=view3d)))
    if result.skipped:
        sections.append(("Skipped files", table([{"file": f, "reason": why}
                                                  for f, why in result.skipped])))
    sections.append(("Batches", table([{k: v for k, v in b.items() if k != "indices"}
                                       | {"candidates": len(b["indices"])}
                                       for b in result.batches])))
    m = result.map
    meta = {"difffit": __version__}
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
    out = write_report(path, page(title, sections, meta), overwrite=overwrite)
    if view3d and result.candidates:
        write_assets(out.parent)
    return out
