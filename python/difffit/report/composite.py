"""The HTML report of a composite run: placed copies, the acceptance rule, the density
left after each round, and per round the candidates' scores and decisions."""
from __future__ import annotations

from pathlib import Path

from .. import __version__
from ..results import CompositeResult
from .blocks import histogram, line_plot, page, table, write_report
from .molstar import write_assets
from .views import picture_section

__all__ = ["composite_report"]


def composite_report(result: CompositeResult, path, overwrite: bool = False,
                     command: str | None = None, view3d: bool = True) -> Path:
    """Write a self-contained HTML report of a composite run.

    Sections: the placed copies; the acceptance rule's settings; the unexplained density
    after each round; per round, the histogram of all candidate scores with the accepted
    copies marked and a table of the accepted and the best rejected candidates with the
    reason for each rejection.

    Args:
        result: a CompositeResult.
        path: the .html file.
        overwrite: replace an existing file.
        command: the command line, shown in the header table.
        view3d: an interactive 3D view (Mol*) of the placed copies in the map, beside
            the map's projections (the viewer is written next to the report).

    Returns:
        The path written.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    sections = []
    placed = [{"structure": p.structure_name, "copy": p.copy, "chains": " ".join(p.chains),
               "round": p.round, "score": round(p.score, 4),
               "correlation": round(p.metric("correlation"), 4),
               "inside": round(p.metric("inside_fraction"), 3), "hits": p.hits}
              for p in result.placements]
    sections.append(("Placed copies", table(placed, caption=(
        f"{len(result.placements)} copies in {len(result.rounds)} round(s); stopped: "
        f"{result.stop_reason}. Chains are named <chain>_<input>_<copy>."))))
    if result.placements:
        sections.append(("The copies in the map", picture_section(
            result.map, result.threshold,
            [(f"{p.structure_name} copy {p.copy}", p.moved(result.structures[p.structure_index]))
             for p in result.placements], view3d=view3d)))
    rules = result.rules
    sections.append(("Acceptance rule", table([
        {"rule": "score (fit's rank_by metric) at least", "value": rules.min_score},
        {"rule": "fraction of the structure's best score at least", "value": rules.rel_score},
        {"rule": "fraction of atoms in unexplained density at least", "value": rules.min_inside},
        {"rule": "CA clash distance (A)", "value": rules.clash_distance},
        {"rule": "clashing CA fraction at most", "value": rules.max_clash},
        {"rule": "zero-out level (fraction of simulated maximum)", "value": rules.zero_fraction},
    ])))
    if result.rounds:
        ks = [r.index for r in result.rounds]
        sections.append(("Unexplained density", line_plot(
            {"density above the contour left": ([0] + ks, [1.0] + [r.remaining for r in result.rounds])},
            title="Density left after each round (fraction of the input map's)",
            xlabel="round", ylabel="fraction")))
    for rec in result.rounds:
        scores = [r["score"] for r in rec.candidates if r.get("score") is not None]
        marks = {f"{p.structure_name} copy {p.copy}": p.score for p in rec.accepted}
        body = histogram(scores, bins=40, title=f"Round {rec.index}: candidate scores "
                            "(accepted marked)", xlabel="score", marks=marks)
        shown = [r for r in rec.candidates if r["decision"] == "accepted"]
        shown += [r for r in rec.candidates if r["decision"] != "accepted"][:10]
        cols = ["structure", "rank", "hits", "score", "correlation", "inside_fraction",
                "clash_fraction", "decision", "reason"]
        rows = [{c: (round(r[c], 4) if isinstance(r.get(c), float) else r.get(c)) for c in cols}
                for r in shown]
        body += table(rows, columns=cols, caption=(
            f"Fitted {', '.join(result.structures[i].name for i in rec.fitted)}; "
            f"{len(rec.candidates)} candidates, the accepted ones and the 10 best rejected shown "
            f"(all in round_{rec.index:02d}/candidates.csv)."))
        sections.append((f"Round {rec.index}", body))
    meta = {"difffit": __version__, **({"command": command} if command else {}),
            "map": result.map.path or "(in memory)", "resolution (Å)": result.resolution,
            "threshold": result.threshold,
            "structures": ", ".join(s.name for s in result.structures),
            "copies asked": ", ".join("open" if c is None else str(c) for c in result.copies),
            **({"symmetry": result.symmetry.describe()} if result.symmetry is not None else {}),
            "parameters": result.params}
    out = write_report(path, page("difffit composite", sections, meta=meta),
                       overwrite=overwrite)
    if view3d and result.placements:
        write_assets(out.parent)
    return out
