"""Structure libraries for identify: which files a library holds, reading each once to
check it and count its atoms, and cutting it into batches of bounded size."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import gemmi

from .errors import DifffitInputError, opt
from .runs import structure_fingerprint
from .structures import Structure, read_structure
from .progress import progress_bar

__all__ = ["library_files", "Entry", "read_library", "plan_batches"]

_STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")
_LIST_SUFFIXES = (".txt", ".lst", ".list")


def _is_structure_file(p: Path) -> bool:
    name = p.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(_STRUCTURE_SUFFIXES)


def library_files(library) -> list[str | Structure]:
    """The library's entries in order: absolute file paths (str; Dask workers and resumed
    runs may start elsewhere) and in-memory Structures.

    Args:
        library: a folder (every .pdb/.ent/.cif/.mmcif file in it, optionally .gz, sorted
            by name; subfolders are not searched, so an output folder inside it is never
            taken for candidates), a structure file, a text file (.txt/.lst/.list) listing
            one path per line (blank lines and ``#`` comments ignored; relative paths are
            relative to the list's folder), a Structure, or a list of any of these.

    Raises:
        DifffitInputError: a path that does not exist, or a library with no structure.
    """
    one = (str, os.PathLike, Structure, gemmi.Structure)
    items = [library] if isinstance(library, one) else library
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, one) for i in items):
        raise DifffitInputError(
            "library must be a folder, a structure file, a text file listing paths, a "
            "Structure or a gemmi.Structure, or a list of these; got "
            + type(items if not isinstance(items, (list, tuple)) else
                   next(i for i in items if not isinstance(i, one))).__name__)
    out: list[str | Structure] = []
    for item in items:
        if isinstance(item, (Structure, gemmi.Structure)):
            out.append(item if isinstance(item, Structure) else read_structure(item))
            continue
        p = Path(item)
        if p.is_dir():
            # A dangling link is listed too: reading it then fails, naming it (or
            # --skip-bad leaves it out, logged), instead of vanishing silently.
            found = sorted(f for f in p.iterdir() if _is_structure_file(f)
                           and (f.is_file() or (f.is_symlink() and not f.exists())))
            if not found:
                raise DifffitInputError(f"{p}: library folder holds no PDB/mmCIF files "
                                        f"({', '.join(_STRUCTURE_SUFFIXES)}, optionally .gz)")
            out += [os.path.abspath(f) for f in found]
        elif p.is_file() and p.name.lower().endswith(_LIST_SUFFIXES):
            for n, line in enumerate(p.read_text().splitlines(), 1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                q = Path(line) if Path(line).is_absolute() else p.parent / line
                if not q.is_file():
                    raise DifffitInputError(f"{p}, line {n}: {q} is not a file")
                out.append(os.path.abspath(q))
        elif p.exists():
            out.append(os.path.abspath(p))
        else:
            raise DifffitInputError(f"{p}: library path does not exist")
    if not out:
        raise DifffitInputError("the library holds no structure")
    return out


@dataclass
class Entry:
    index: int
    source: str | Structure
    name: str
    n_atoms: int
    n_fit_atoms: int
    fingerprint: str   # of the fitted coordinates: a changed file is noticed on resume

    @property
    def label(self) -> str:
        return self.source if isinstance(self.source, str) else "<memory>"


def read_library(sources, selection: str, skip_bad: bool, progress: bool
                  ) -> tuple[list[Entry], list[tuple[str, str]]]:
    """Read every entry once (to check it and count its atoms), keeping only the counts."""
    entries: list[Entry] = []
    skipped: list[tuple[str, str]] = []
    it = sources
    if progress:
        it = progress_bar(sources, desc="reading library", unit="file", leave=False)
    for src in it:
        try:
            s = src if isinstance(src, Structure) else read_structure(src, selection=selection)
        except DifffitInputError as exc:
            if not skip_bad:
                raise DifffitInputError(f"library: {exc} (pass {opt('skip_bad', True)} to "
                                        f"leave unreadable files out)") from exc
            skipped.append((str(src), _reason(exc, str(src))))
            continue
        entries.append(Entry(len(entries), src, s.name, s.n_atoms, s.n_fit_atoms, structure_fingerprint(s)))
    if not entries:
        raise DifffitInputError("no readable structure in the library "
                                f"({len(skipped)} file(s) skipped)")
    return entries, skipped


def _reason(exc: Exception, path: str) -> str:
    """Why a file was skipped, without its path (the log names the file once): the
    reader's message starts with the path, and gemmi's own names it again before the line
    ("PATH:12:0(0): ...")."""
    why = str(exc)
    if why.startswith(f"{path}: "):
        why = why[len(path) + 2:]
    why = re.sub(re.escape(path) + r":(?=\d)", "line ", why)
    return why.replace(path, "the file")


def plan_batches(entries: Sequence[Entry], batch_atoms: int) -> list[list[int]]:
    """Consecutive candidates in batches of at most ``batch_atoms`` fitted atoms."""
    plan: list[list[int]] = []
    cur: list[int] = []
    total = 0
    for e in entries:
        if cur and total + e.n_fit_atoms > batch_atoms:
            plan.append(cur)
            cur, total = [], 0
        cur.append(e.index)
        total += e.n_fit_atoms
    if cur:
        plan.append(cur)
    return plan
