"""Self-contained HTML reports: ranked tables and plots a person would rather look at.

The building blocks return HTML fragments (:func:`table`) or inline SVG fragments
(:func:`histogram`, :func:`line_plot`, :func:`bar_chart`); :func:`page` puts them into one
HTML document with inline CSS and no external resources or JavaScript, so the file can be
mailed, archived or opened offline and looks the same years later. :func:`write_report`
writes it atomically and refuses to replace an existing file unless asked.

The reports of the workflows (:mod:`difffit.report.fit`, ``.composite``, ``.identify``)
are built from these blocks.

The SVG is written by hand (no plotting dependency): every plot is a frame with ticks and
labels (:class:`_Axes`) plus a few lines, rectangles or text elements. Non-finite values
are left out of plots (and said so), shown as "n/a" in tables.
"""
from __future__ import annotations

import html as _html
import math
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DifffitInputError
from ..files import atomic_write, refuse_existing

__all__ = ["table", "histogram", "line_plot", "bar_chart", "page", "write_report"]

# Colour-blind-safe palette (Okabe-Ito), cycled over series.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442",
           "#000000")
_BAR = "#9db4cf"        # ordinary bars
_HIGHLIGHT = "#d55e00"  # highlighted bars
_MARK = "#c0392b"       # marked values on a histogram

# Plot geometry in px (the SVG scales down with the page width; see the CSS).
_W, _H = 640, 320
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 20, 34, 48


def _esc(x: Any) -> str:
    return _html.escape(str(x), quote=True)


# ----------------------------------------------------------------------------------------
# Numbers
# ----------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    """A table cell: about four significant digits for floats, n/a for NaN, ints as they are,
    nothing for None."""
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return "n/a"
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        a = abs(v)
        if a == 0:
            return "0"
        if 1e-3 <= a < 1e5:
            # 0.1234, 1.234, 12.34, 123.4, 1234.5: digits after the point shrink with size,
            # but keep one so coordinates (Angstrom) stay readable to 0.1 A.
            decimals = min(4, max(1, 3 - math.floor(math.log10(a))))
            return f"{v:.{decimals}f}"
        return f"{v:.3e}"
    return str(v)


def _finite(values) -> tuple[np.ndarray, int]:
    """(finite values as float64 1-D, number of non-finite ones dropped)."""
    a = np.asarray(values, dtype=np.float64).ravel() if values is not None else np.zeros(0)
    ok = np.isfinite(a)
    return a[ok], int((~ok).sum())


def _nice_step(span: float, n: int) -> float:
    """A step of 1, 2 or 5 times a power of ten giving about ``n`` intervals over ``span``."""
    raw = span / max(n, 1)
    p = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * p >= raw:
            return m * p
    return 10 * p  # pragma: no cover - the loop always returns


def _limits(lo: float, hi: float) -> tuple[float, float]:
    """[lo, hi], widened when empty or degenerate so that it can be drawn."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if hi <= lo:  # a single value: give it some room either side
        pad = abs(lo) * 0.1 or 0.5
        return lo - pad, hi + pad
    return lo, hi


def _ticks(lo: float, hi: float, n: int = 5) -> tuple[list[float], float]:
    """Round-numbered ticks inside [lo, hi] (the axis keeps the data's own limits, so a
    histogram's bins fill the frame rather than a range rounded outwards), and their step."""
    step = _nice_step(hi - lo, n)
    k0, k1 = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [k * step for k in range(k0, k1 + 1)], step


def _tick_label(v: float, step: float) -> str:
    if abs(v) < step * 1e-6:
        return "0"
    if step >= 1 and abs(v) < 1e6:
        return f"{v:.0f}"
    if 1e-4 <= step < 1 and abs(v) < 1e6:
        return f"{v:.{-math.floor(math.log10(step) + 1e-9)}f}"
    return f"{v:.2g}"


# ----------------------------------------------------------------------------------------
# SVG
# ----------------------------------------------------------------------------------------


class _Axes:
    """A plot frame: maps data to px and draws the axes, ticks, labels and title."""

    def __init__(self, xlim, ylim, title="", xlabel="", ylabel="", width=_W, height=_H,
                 left=_LEFT, right=_RIGHT, xticks=True, yticks=True):
        self.x0, self.x1 = _limits(*xlim)
        self.y0, self.y1 = _limits(*ylim)
        self.xt, self.xstep = _ticks(self.x0, self.x1) if xticks else ([], 1.0)
        self.yt, self.ystep = _ticks(self.y0, self.y1) if yticks else ([], 1.0)
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.w, self.h, self.left = width, height, left
        self.right, self.top, self.bottom = width - right, _TOP, height - _BOTTOM
        self.items: list[str] = []

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def py(self, y: float) -> float:
        return self.bottom - (y - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)

    def add(self, item: str) -> None:
        self.items.append(item)

    def svg(self, caption: str = "") -> str:
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{self.w}" '
               f'height="{self.h}" viewBox="0 0 {self.w} {self.h}" role="img" '
               f'aria-label="{_esc(self.title or "plot")}">',
               f'<rect class="bg" x="0" y="0" width="{self.w}" height="{self.h}" fill="#fff"/>']
        if self.title:
            out.append(f'<text class="title" x="{(self.left + self.right) / 2:.1f}" y="20" '
                       f'text-anchor="middle" font-size="14" font-weight="bold">'
                       f'{_esc(self.title)}</text>')
        for x in self.xt:
            X = self.px(x)
            out.append(f'<line x1="{X:.1f}" y1="{self.bottom}" x2="{X:.1f}" '
                       f'y2="{self.bottom + 5}" stroke="#333"/>')
            out.append(f'<text x="{X:.1f}" y="{self.bottom + 18}" text-anchor="middle" '
                       f'font-size="11">{_tick_label(x, self.xstep)}</text>')
        for y in self.yt:
            Y = self.py(y)
            out.append(f'<line x1="{self.left}" y1="{Y:.1f}" x2="{self.right}" y2="{Y:.1f}" '
                       f'stroke="#e6e6e6"/>')  # grid line
            out.append(f'<line x1="{self.left - 5}" y1="{Y:.1f}" x2="{self.left}" y2="{Y:.1f}" '
                       f'stroke="#333"/>')
            out.append(f'<text x="{self.left - 8}" y="{Y + 4:.1f}" text-anchor="end" '
                       f'font-size="11">{_tick_label(y, self.ystep)}</text>')
        out += self.items
        out.append(f'<path d="M{self.left},{self.top} V{self.bottom} H{self.right}" '
                   f'fill="none" stroke="#333"/>')
        if self.xlabel:
            out.append(f'<text class="xlabel" x="{(self.left + self.right) / 2:.1f}" '
                       f'y="{self.h - 10}" text-anchor="middle" font-size="12">'
                       f'{_esc(self.xlabel)}</text>')
        if self.ylabel:
            yc = (self.top + self.bottom) / 2
            out.append(f'<text class="ylabel" x="14" y="{yc:.1f}" text-anchor="middle" '
                       f'font-size="12" transform="rotate(-90 14 {yc:.1f})">'
                       f'{_esc(self.ylabel)}</text>')
        out.append("</svg>")
        svg = "\n".join(out)
        if caption:
            return f'<figure>{svg}<figcaption>{_esc(caption)}</figcaption></figure>'
        return f"<figure>{svg}</figure>"


def _no_data(title: str, why: str = "no data") -> str:
    """An empty frame saying why there is nothing to plot (keeps the page layout)."""
    h = 90
    return (f'<figure><svg xmlns="http://www.w3.org/2000/svg" class="plot empty" width="{_W}" '
            f'height="{h}" viewBox="0 0 {_W} {h}" role="img" aria-label="{_esc(title or why)}">'
            f'<rect x="0.5" y="0.5" width="{_W - 1}" height="{h - 1}" fill="#fff" '
            f'stroke="#ccc"/>'
            f'<text x="{_W / 2}" y="30" text-anchor="middle" font-size="14" '
            f'font-weight="bold">{_esc(title)}</text>'
            f'<text x="{_W / 2}" y="60" text-anchor="middle" font-size="12" fill="#666">'
            f'{_esc(why)}</text></svg></figure>')


def _dropped_note(n: int) -> str:
    return f"{n} non-finite value{'s' if n != 1 else ''} left out" if n else ""


def histogram(values, bins: int = 50, title: str = "", xlabel: str = "",
              marks: dict[str, float] | None = None) -> str:
    """An inline SVG histogram (counts per bin).

    Args:
        values: numbers; NaN and inf are left out (the caption says how many).
        bins: number of equal-width bins over the range of the values (and the marks).
        title, xlabel: text above the plot and under the x axis.
        marks: label -> value, drawn as labelled vertical lines (e.g. the best clusters);
            None or NaN marks are left out.

    Returns:
        A ``<figure>`` holding the ``<svg>``.
    """
    v, dropped = _finite(values)
    marks = {str(k): float(x) for k, x in (marks or {}).items()
             if x is not None and math.isfinite(float(x))}
    if v.size == 0:
        return _no_data(title, "no finite values to plot" if dropped else "no data")
    bins = max(int(bins), 1)
    lo = min(float(v.min()), *marks.values()) if marks else float(v.min())
    hi = max(float(v.max()), *marks.values()) if marks else float(v.max())
    if hi <= lo:  # all equal: one bin centred on the value
        lo, hi = lo - (abs(lo) * 0.05 or 0.5), hi + (abs(hi) * 0.05 or 0.5)
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    ax = _Axes((lo, hi), (0, max(int(counts.max()), 1) * 1.08), title, xlabel, "count")
    for c, a, b in zip(counts, edges[:-1], edges[1:]):
        if c:
            x, y = ax.px(a), ax.py(c)
            ax.add(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" '
                   f'width="{max(ax.px(b) - x - 0.5, 0.5):.1f}" height="{ax.bottom - y:.1f}" '
                   f'fill="{_BAR}"><title>{_fmt(float(a))} to {_fmt(float(b))}: {c}</title>'
                   f'</rect>')
    # Labels stacked downwards so that close marks do not write over each other.
    for k, (label, x) in enumerate(sorted(marks.items(), key=lambda kv: -kv[1])):
        X = ax.px(x)
        anchor = "end" if X > (ax.left + ax.right) / 2 else "start"
        dx = -3 if anchor == "end" else 3
        ax.add(f'<line class="mark" x1="{X:.1f}" y1="{ax.top}" x2="{X:.1f}" y2="{ax.bottom}" '
               f'stroke="{_MARK}" stroke-width="1.5" stroke-dasharray="4 2"/>')
        ax.add(f'<text class="mark-label" x="{X + dx:.1f}" y="{ax.top + 12 + 13 * (k % 12)}" '
               f'text-anchor="{anchor}" font-size="11" fill="{_MARK}">{_esc(label)}</text>')
    note = f"{v.size} values" + (f"; {_dropped_note(dropped)}" if dropped else "")
    return ax.svg(note)


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str = "",
              xlabel: str = "", ylabel: str = "", *, context: set[str] | None = None) -> str:
    """An inline SVG line plot with a legend, one line per series.

    Args:
        series: name -> (xs, ys) of equal length. A non-finite point breaks the line
            there; a series with no finite point is left out (the caption says which).
        title, xlabel, ylabel: axis text.
        context: names of series drawn grey and dashed, as a backdrop (e.g. a median of
            all starts) rather than as one of the compared lines.

    Returns:
        A ``<figure>`` holding the ``<svg>``.
    """
    context = set(context or ())
    clean: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    empty: list[str] = []
    for name, (xs, ys) in series.items():
        x = np.asarray(xs, dtype=np.float64).ravel()
        y = np.asarray(ys, dtype=np.float64).ravel()
        if x.shape != y.shape:
            raise DifffitInputError(
                f"line_plot: series {name!r} has {x.size} x and {y.size} y values")
        if np.isfinite(x).any() and (np.isfinite(x) & np.isfinite(y)).any():
            clean[str(name)] = (x, y)
        else:
            empty.append(str(name))
    if not clean:
        return _no_data(title, "no finite values to plot" if empty else "no data")
    allx = np.concatenate([x[np.isfinite(x) & np.isfinite(y)] for x, y in clean.values()])
    ally = np.concatenate([y[np.isfinite(x) & np.isfinite(y)] for x, y in clean.values()])
    pad = 0.05 * (ally.max() - ally.min())  # lines off the frame's edges
    # The legend sits right of the frame, so that it never hides a line.
    names = list(clean)
    lw = 30 + 7 * max(len(n) for n in names)
    ax = _Axes((allx.min(), allx.max()), (ally.min() - pad, ally.max() + pad), title, xlabel,
               ylabel, width=_W + lw, right=lw + _RIGHT)
    palette = iter(PALETTE * (len(names) // len(PALETTE) + 1))
    styles = {n: ('stroke="#888" stroke-dasharray="5 3"' if n in context
                  else f'stroke="{next(palette)}"') for n in names}
    for name, (x, y) in clean.items():
        ok = np.isfinite(x) & np.isfinite(y)
        # One polyline per run of finite points: a gap shows where data is missing.
        runs, run = [], []
        for xi, yi, good in zip(x, y, ok):
            if good:
                run.append(f"{ax.px(xi):.1f},{ax.py(yi):.1f}")
            elif run:
                runs.append(run)
                run = []
        runs += [run] if run else []
        for r in runs:
            ax.add(f'<polyline class="series" points="{" ".join(r)}" fill="none" '
                   f'{styles[name]} stroke-width="1.8"><title>{_esc(name)}</title></polyline>')
            if len(r) == 1:  # a lone point has no line to show it
                cx, cy = r[0].split(",")
                ax.add(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="none" {styles[name]}/>')
    lx, ly = ax.right + 12, ax.top
    for k, name in enumerate(names):
        y = ly + 12 + 16 * k
        ax.add(f'<line class="legend" x1="{lx}" y1="{y - 4}" x2="{lx + 18}" y2="{y - 4}" '
               f'{styles[name]} stroke-width="2.5"/>')
        ax.add(f'<text x="{lx + 23}" y="{y}" font-size="11">{_esc(name)}</text>')
    note = f"left out (no finite point): {', '.join(empty)}" if empty else ""
    return ax.svg(note)


def bar_chart(labels: list[str], values, title: str = "", xlabel: str = "",
              highlight: set[int] | None = None) -> str:
    """An inline SVG horizontal bar chart, one bar per label, in the given order.

    Args:
        labels: bar names (long ones are shortened on the plot; the full name shows as
            the bar's tooltip).
        values: one number per label; zero is always on the axis (negative bars go left);
            a non-finite value gets no bar and "n/a".
        title, xlabel: text above the plot and under the x axis.
        highlight: indices of bars drawn in the highlight colour (e.g. the chosen ones).

    Returns:
        A ``<figure>`` holding the ``<svg>``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    labels = [str(s) for s in labels]
    if len(labels) != v.size:
        raise DifffitInputError(f"bar_chart: {len(labels)} labels but {v.size} values")
    ok = np.isfinite(v)
    if not ok.any():
        return _no_data(title, "no finite values to plot" if v.size else "no data")
    highlight = set(highlight or ())
    short = [s if len(s) <= 28 else s[:27] + "…" for s in labels]
    left = 16 + 7 * max(len(s) for s in short)  # room for the labels (about 7 px a glyph)
    row = 20
    height = _TOP + _BOTTOM + row * len(labels)
    lo, hi = min(0.0, float(v[ok].min())), max(0.0, float(v[ok].max()))
    span = hi - lo
    # Room beyond the longest bars for their value text.
    ax = _Axes((lo - 0.12 * span * (lo < 0), hi + 0.12 * span * (hi > 0)), (0, len(labels)),
               title, xlabel, "", height=height, left=left,
               yticks=False)
    zero = ax.px(0.0)
    for i, (name, s, val) in enumerate(zip(labels, short, v)):
        yc = ax.top + row * (i + 0.5)
        ax.add(f'<text x="{left - 6}" y="{yc + 4:.1f}" text-anchor="end" font-size="11">'
               f'{_esc(s)}</text>')
        if not math.isfinite(val):
            ax.add(f'<text x="{zero + 4:.1f}" y="{yc + 4:.1f}" font-size="11" fill="#666">'
                   f'n/a</text>')
            continue
        x = ax.px(val)
        colour = _HIGHLIGHT if i in highlight else _BAR
        cls = "bar highlight" if i in highlight else "bar"
        ax.add(f'<rect class="{cls}" x="{min(x, zero):.1f}" y="{yc - row * 0.35:.1f}" '
               f'width="{max(abs(x - zero), 0.5):.1f}" height="{row * 0.7:.1f}" '
               f'fill="{colour}"><title>{_esc(name)}: {_fmt(float(val))}</title></rect>')
        neg = val < 0  # the value is written beyond the bar's end, on its side of zero
        ax.add(f'<text x="{x - 4 if neg else x + 4:.1f}" y="{yc + 4:.1f}" font-size="10" '
               f'text-anchor="{"end" if neg else "start"}" fill="#222">'
               f'{_fmt(float(val))}</text>')
    if lo < 0 < hi:
        ax.add(f'<line x1="{zero:.1f}" y1="{ax.top}" x2="{zero:.1f}" y2="{ax.bottom}" '
               f'stroke="#333"/>')
    return ax.svg()


# ----------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------


def table(rows: list[dict], columns: list[str] | None = None, caption: str = "") -> str:
    """An HTML table fragment; every value HTML-escaped, floats to about 4 digits.

    Args:
        rows: one dict per row; a key missing from a row, or None, leaves its cell empty.
        columns: the columns, in order (default: every key, in order of first appearance).
        caption: text above the table.
    """
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
    out = ['<table class="data">']
    if caption:
        out.append(f"<caption>{_esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{_esc(c)}</th>" for c in columns) + "</tr></thead>")
    out.append("<tbody>")
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c, "")
            numeric = (isinstance(v, (int, float, np.integer, np.floating))
                       and not isinstance(v, bool))
            cells.append(f'<td class="num">{_esc(_fmt(v))}</td>' if numeric
                         else f"<td>{_esc(_fmt(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    if not rows:
        out.append(f'<tr><td class="empty" colspan="{max(len(columns), 1)}">(none)</td></tr>')
    out.append("</tbody></table>")
    return "\n".join(out)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
h3 { font-size: 1.05em; }
nav ul { margin: 0.3em 0; padding-left: 1.2em; }
table { border-collapse: collapse; margin: 0.6em 0 1em 0; font-size: 0.9em; }
caption { text-align: left; font-weight: bold; padding: 0.3em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; }
th { background: #f3f5f8; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.empty { color: #888; font-style: italic; }
tbody tr:nth-child(even) { background: #fafbfc; }
table.meta { font-size: 0.8em; color: #444; }
table.meta th { width: 12em; }
span.kv { white-space: nowrap; }
figure { margin: 0.8em 0 1.2em 0; }
figcaption { font-size: 0.8em; color: #666; }
svg.plot { max-width: 100%; height: auto; font-family: inherit; }
.note { color: #555; font-size: 0.9em; }
footer { margin-top: 3em; font-size: 0.8em; color: #888; }
"""


def _slug(text: str, used: set[str]) -> str:
    base = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "section"
    slug, n = base, 2
    while slug in used:
        slug, n = f"{base}-{n}", n + 1
    used.add(slug)
    return slug


def _meta_value(v: Any) -> str:
    """A meta value as HTML: dicts as ``key: value; ...``, the rest escaped and formatted."""
    if is_dataclass(v) and not isinstance(v, type):
        v = asdict(v)

    def short(x):  # parameters such as 0.01 read better as given than padded like a table
        return f"{x:.4g}" if isinstance(x, (float, np.floating)) and math.isfinite(x) else _fmt(x)

    if isinstance(v, dict):
        return "; ".join(f'<span class="kv">{_esc(k)}: {_esc(short(x))}</span>'
                         for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return _esc(", ".join(short(x) for x in v))
    return _esc(short(v))


def page(title: str, sections: list[tuple[str, str]], meta: dict | None = None) -> str:
    """A complete, self-contained HTML document.

    Args:
        title: the page title (escaped).
        sections: (heading, HTML fragment) pairs, in order; the heading is escaped, the
            fragment is inserted as it is (build it with :func:`table`, the plots, or
            escape it yourself).
        meta: key -> value shown as a small table under the title (version, command,
            parameters, timings); dict (and dataclass) values show as ``key: value; ...``.

    Returns:
        The document: inline CSS, no external resources, no JavaScript.
    """
    from .. import __version__

    used: set[str] = set()
    ids = [_slug(h, used) for h, _ in sections]
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_esc(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
           f"<h1>{_esc(title)}</h1>"]
    if meta:
        out.append('<table class="meta"><tbody>')
        out += [f"<tr><th>{_esc(k)}</th><td>{_meta_value(v)}</td></tr>" for k, v in meta.items()]
        out.append("</tbody></table>")
    if len(sections) > 2:  # a contents list only helps on longer pages
        out.append("<nav><ul>")
        out += [f'<li><a href="#{i}">{_esc(h)}</a></li>' for i, (h, _) in zip(ids, sections)]
        out.append("</ul></nav>")
    for i, (heading, body) in zip(ids, sections):
        out.append(f'<section id="{i}">\n<h2>{_esc(heading)}</h2>\n{body}\n</section>')
    out.append(f"<footer>Written by difffit {_esc(__version__)} on "
               f"{_esc(time.strftime('%Y-%m-%d %H:%M:%S %z'))}.</footer>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def write_report(path, html: str, overwrite: bool = False) -> Path:
    """Write an HTML document atomically (a reader never sees half a file).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        DifffitInputError: the folder of ``path`` does not exist.
    """
    p = Path(path)
    refuse_existing(p, overwrite)
    if not p.parent.is_dir():
        raise DifffitInputError(f"{p}: output folder {p.parent} does not exist")
    atomic_write(p, html)
    return p


