"""Tables: the pose columns every result row carries, text tables and CSV text.

One place for the columns a placement is written with, so that results.csv, summary.csv,
ranking.csv and the reports name and order them alike.
"""
from __future__ import annotations

import csv
import io
from typing import Sequence

import numpy as np

__all__ = ["pose_columns", "text_table", "csv_text"]


def pose_columns(rotation: np.ndarray, translation: np.ndarray, centre: np.ndarray) -> dict:
    """``r11..r33``, ``tx ty tz`` (x -> R x + t on the input coordinates) and ``cx cy cz``
    (where the fitted atoms' centroid lands), as floats.

    Args:
        rotation: [3, 3]; translation: [3]; centre: [3] (Angstrom).
    """
    R, t, c = (np.asarray(a, dtype=np.float64) for a in (rotation, translation, centre))
    row = {f"r{i + 1}{j + 1}": float(R[i, j]) for i in range(3) for j in range(3)}
    row.update({"tx": float(t[0]), "ty": float(t[1]), "tz": float(t[2]),
                "cx": float(c[0]), "cy": float(c[1]), "cz": float(c[2])})
    return row


def fmt_centre(c: np.ndarray) -> str:
    """A centre as three aligned columns, for text tables."""
    return f"{c[0]:8.2f} {c[1]:8.2f} {c[2]:8.2f}"


def text_table(header: Sequence[str], lines: Sequence[Sequence[str]],
               left: Sequence[int] = (0,)) -> list[str]:
    """Aligned text table: a header, a rule, one line per row.

    Args:
        header: column headings.
        lines: rows of already formatted cells.
        left: indices of the left-aligned columns (the others are right-aligned).

    Returns:
        The lines of text (no trailing newline).
    """
    widths = [max([len(h)] + [len(r[k]) for r in lines]) for k, h in enumerate(header)]

    def fmt(r):
        return "  ".join((v.ljust(w) if k in left else v.rjust(w))
                         for k, (v, w) in enumerate(zip(r, widths)))

    return [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in lines]


def csv_text(rows: list[dict], empty_columns: Sequence[str] = ("structure", "rank", "hits", "score")
             ) -> str:
    """Rows as CSV text: the union of their keys as columns, in order of appearance; floats
    with 8 significant digits. No rows still give a header (``empty_columns``)."""
    columns: list[str] = []
    for row in rows:
        for k in row:
            if k not in columns:
                columns.append(k)
    if not columns:
        columns = list(empty_columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()
