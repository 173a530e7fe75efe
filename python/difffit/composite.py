"""Composite fitting: place several subunits (each possibly several times) into one map.

Round after round (docs: ../shared/docs/method.md sections 1, 7 and 9):

1. Fit every subunit that may still be placed into the *working map* (round 1: the input
   map) with :func:`difffit.fit.fit`: all structures in one batch, every cluster of every
   structure is a candidate.
2. Go through the candidates of all structures together, best score first, and accept a
   candidate when every rule of :class:`AcceptRules` holds (see there): its structure
   still has copies to place; its score reaches the absolute floor ``min_score`` and
   ``rel_score`` times the best score that structure has reached in any round; at least
   ``min_inside`` of its atoms lie in unexplained density; and its CA trace does not
   clash with any placement accepted before it (this round or earlier).
3. Zero out the density the round's accepted placements explain (:func:`explained_mask`:
   every voxel where their simulated map, at the map's resolution and on the map's grid,
   exceeds ``zero_fraction`` of its maximum) and use the result as the next working map.
4. Stop when every structure has all its copies, after ``max_rounds`` rounds, or when
   ``empty_rounds`` consecutive rounds accept nothing (default 2: an empty round is
   retried once from new starts, since one search can miss a subunit).

The contour level is resolved once, on the input map, and kept for every round: zeroed
voxels then fall below it, so the next fits see them as solvent (negative space) and are
pushed into the density that is still unexplained.

Output folder (``outdir``; every file is written atomically)::

    state.json               inputs (with fingerprints), parameters, the completed rounds
    round_NN/round.json      the round's accepted placements and every candidate's decision
    round_NN/accepted.csv    accepted placements (rotation, translation, metrics, chains)
    round_NN/candidates.csv  every candidate of the round: scores, clash, decision, reason
    round_NN/accepted.cif    the round's placed chains
    round_NN/working_map.mrc the map after this round's zeroing (absent when nothing was
                             accepted: the map did not change)
    composite.cif            all placed chains, renamed <chain>_<input>_<copy>
    composite.cxc            ChimeraX script: the map, the composite model, the residual map
    summary.csv, summary.txt one row per placed copy

A round folder is written under a temporary name and renamed when complete, then
``state.json`` is updated: the state file is the commit point, so ``resume=True`` after an
interruption continues with the round after the last one recorded there.

Chain names in the composite model: ``<original chain>_<input number>_<copy number>``
(1-based; input numbers follow the order of ``structures``): ``A_2_1`` is chain A of the
second input structure, first copy placed. mmCIF has no limit on chain-name length.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import gemmi
import numpy as np
from scipy.spatial import cKDTree

from .errors import DifffitInputError
from .fit import FitParams, FitResult, _as_structures, fit
from .io import (DensityMap, Structure, _atomic_write_bytes, _residue_class, _select_atom,
                 _umask_mode, read_map, read_structure, write_map, write_structure)
from .output import _COLOURS, _abs, _csv_text, _cxc_quote, _jsonable, _version
from .preprocess import default_threshold
from .simulate import molmap

__all__ = ["AcceptRules", "CompositePlacement", "RoundRecord", "CompositeResult",
           "composite", "explained_mask", "zero_out", "write_composite_outputs",
           "composite_report", "add_cli"]

STATE_FILE = "state.json"
_STATE_FORMAT = "difffit-composite-state/1"
_ROUND_RE = re.compile(r"^round_(\d+)$")


# ----------------------------------------------------------------------------------------
# Acceptance rules and results
# ----------------------------------------------------------------------------------------


@dataclass
class AcceptRules:
    """When a candidate placement is accepted, how density is zeroed, when to stop.

    A candidate (one cluster representative of :func:`difffit.fit.fit`, its metrics
    measured on the working map of its round) is accepted when, in this order:

    1. its structure has fewer accepted copies than asked for (no limit when the copy
       number is left open);
    2. ``score >= min_score`` (``score`` is the fit's ``rank_by`` metric, ``cam`` by
       default: the ChimeraX-style correlation about the mean);
    3. ``score >= rel_score * best``, where ``best`` is the highest score the structure
       has reached in any round so far (this one included): a further copy must fit
       about as well as the structure's best fit anywhere, which rejects a homologous
       subunit squeezed into the wrong density (on haemoglobin an alpha chain in beta
       density scores 0.47 of its own best);
    4. ``inside_fraction >= min_inside``: that fraction of its atoms lies above the
       contour of the working map, i.e. in density not yet explained;
    5. it does not clash with an already accepted placement: at most ``max_clash`` of
       its CA atoms (P for nucleotides) lie within ``clash_distance`` of the CA atoms of
       any one accepted placement. Chains packed against each other keep CA atoms more
       than about 4 A apart, two copies in one density overlap by about half.

    Candidates are examined best score first across all structures, so when two
    subunits compete for one density the better fit wins.

    Attributes:
        min_score: absolute floor on the score.
        rel_score: fraction of the structure's best score a copy must reach.
        min_inside: minimum fraction of atoms inside the working map's contour.
        clash_distance: Angstrom between CA atoms counted as a clash.
        max_clash: largest tolerated fraction of clashing CA atoms.
        zero_fraction: zero-out level, as a fraction of the maximum of each accepted
            placement's simulated map (0.02: about 1.8 A around a carbon at 3.2 A; the
            radius grows with the resolution).
        empty_rounds: stop after this many consecutive rounds that accept nothing. Each
            round searches from new starts (another seed), and one search of the paper's
            size can miss a subunit (on haemoglobin the right pose may be found by 1 start
            in 1000), so by default one empty round is retried once.
        max_rounds: hard stop on the number of rounds.
    """

    min_score: float = 0.3
    rel_score: float = 0.6
    min_inside: float = 0.5
    clash_distance: float = 3.0
    max_clash: float = 0.1
    zero_fraction: float = 0.02
    empty_rounds: int = 2
    max_rounds: int = 10

    def __post_init__(self):
        for name in ("rel_score", "min_inside", "max_clash"):
            v = float(getattr(self, name))
            if not 0.0 <= v <= 1.0:
                raise DifffitInputError(f"{name} must be between 0 and 1, got {v}")
        if not 0.0 < float(self.zero_fraction) < 1.0:
            raise DifffitInputError(f"zero_fraction must be between 0 and 1 (exclusive), "
                                    f"got {self.zero_fraction}")
        if not float(self.clash_distance) > 0:
            raise DifffitInputError(f"clash_distance must be positive, got {self.clash_distance}")
        for name in ("empty_rounds", "max_rounds"):
            if int(getattr(self, name)) < 1:
                raise DifffitInputError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class CompositePlacement:
    """One accepted copy of a structure.

    Attributes:
        structure_index: 0-based index into ``CompositeResult.structures``.
        structure_name: the structure's name.
        copy: 1-based copy number of this structure (in order of acceptance).
        round: 1-based round in which it was accepted.
        rotation: [3, 3] and translation: [3], acting on the input coordinates,
            x -> R x + t.
        score: the fit's ``rank_by`` metric, on the working map of its round.
        hits: size of its cluster.
        metrics: every fit metric (on the working map of its round).
        chains: its chain names in the composite model (``<chain>_<input>_<copy>``).
    """

    structure_index: int
    structure_name: str
    copy: int
    round: int
    rotation: np.ndarray
    translation: np.ndarray
    score: float
    hits: int
    metrics: dict[str, float]
    chains: list[str]

    def moved(self, structure: Structure) -> Structure:
        """The structure moved into this placement."""
        return structure.transformed(self.rotation, self.translation)


@dataclass
class RoundRecord:
    """What one round did.

    Attributes:
        index: 1-based round number.
        fitted: indices of the structures fitted in this round.
        accepted: the placements accepted in this round.
        candidates: one dict per candidate (structure, rank, score, ..., decision, reason).
        timings: seconds (fit, decide, zero).
        remaining: fraction of the input map's density above the contour (summed values)
            still unexplained after this round.
        working_map: path of the map after this round's zeroing (None in memory, or when
            nothing was accepted).
    """

    index: int
    fitted: list[int]
    accepted: list[CompositePlacement]
    candidates: list[dict]
    timings: dict[str, float] = field(default_factory=dict)
    remaining: float = float("nan")
    working_map: str | None = None


@dataclass
class CompositeResult:
    """The outcome of :func:`composite`.

    Attributes:
        placements: every accepted copy, in order of acceptance.
        structures: the input structures (input coordinates).
        map: the input map; ``working_map``: what is left after the last zeroing.
        rounds: one RoundRecord per round run (resumed rounds included).
        copies: the copy numbers asked for per structure (None: open).
        stop_reason: why the run stopped.
        outdir: the output folder, when written; ``paths``: the final files.
    """

    placements: list[CompositePlacement]
    structures: list[Structure]
    map: DensityMap
    working_map: DensityMap
    resolution: float
    threshold: float
    params: FitParams
    rules: AcceptRules
    copies: list[int | None]
    rounds: list[RoundRecord]
    stop_reason: str
    outdir: Path | None = None
    paths: dict[str, Path] = field(default_factory=dict)

    def for_structure(self, key: int | str) -> list[CompositePlacement]:
        """Accepted copies of one structure (index or name), in copy order."""
        names = [s.name for s in self.structures]
        if isinstance(key, str):
            if key not in names:
                raise KeyError(f"no structure named {key!r}; have {names}")
            key = names.index(key)
        return [p for p in self.placements if p.structure_index == int(key)]

    def model(self) -> Structure:
        """All placed chains as one Structure, chains renamed ``<chain>_<input>_<copy>``."""
        return _assemble(self.structures, self.placements)

    def rows(self) -> list[dict]:
        """One flat dict per accepted copy (for CSV / JSON)."""
        return [_placement_row(p, self.structures[p.structure_index]) for p in self.placements]

    def summary_table(self) -> str:
        """A text table of the placed copies (no trailing newline)."""
        header = ("structure", "copy", "chains", "round", "score", "corr", "inside", "hits",
                  "centroid (x, y, z) A")
        lines = []
        for p in self.placements:
            c = p.rotation @ self.structures[p.structure_index].centroid + p.translation
            lines.append((p.structure_name, str(p.copy), ",".join(p.chains), str(p.round),
                          f"{p.score:.3f}", f"{p.metrics.get('correlation', float('nan')):.3f}",
                          f"{p.metrics.get('inside_fraction', float('nan')):.2f}", str(p.hits),
                          f"{c[0]:8.2f} {c[1]:8.2f} {c[2]:8.2f}"))
        widths = [max([len(h)] + [len(r[k]) for r in lines]) for k, h in enumerate(header)]
        fmt = lambda r: "  ".join(  # noqa: E731
            (v.ljust(w) if k in (0, 2) else v.rjust(w)) for k, (v, w) in enumerate(zip(r, widths)))
        text = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in lines]
        counts = [len(self.for_structure(i)) for i in range(len(self.structures))]
        for i, s in enumerate(self.structures):
            want = self.copies[i]
            if want is not None and counts[i] < want:
                text.append(f"{s.name}: {counts[i]} of {want} copies placed")
        text.append(f"{len(self.placements)} copies placed in {len(self.rounds)} round(s); "
                    f"stopped: {self.stop_reason}")
        return "\n".join(text)


def _placement_row(p: CompositePlacement, s: Structure) -> dict:
    centre = p.rotation @ s.centroid + p.translation
    row = {"structure": p.structure_name, "input": p.structure_index + 1, "copy": p.copy,
           "chains": " ".join(p.chains), "round": p.round, "score": p.score, "hits": p.hits,
           **p.metrics}
    row.update({f"r{i + 1}{j + 1}": float(p.rotation[i, j]) for i in range(3) for j in range(3)})
    row.update({"tx": float(p.translation[0]), "ty": float(p.translation[1]),
                "tz": float(p.translation[2]), "cx": float(centre[0]), "cy": float(centre[1]),
                "cz": float(centre[2])})
    return row


def _placement_from_row(row: dict) -> CompositePlacement:
    """Inverse of the JSON form written in round.json."""
    return CompositePlacement(
        structure_index=int(row["structure_index"]), structure_name=row["structure_name"],
        copy=int(row["copy"]), round=int(row["round"]),
        rotation=np.asarray(row["rotation"], dtype=np.float64).reshape(3, 3),
        translation=np.asarray(row["translation"], dtype=np.float64).reshape(3),
        score=float(row["score"]), hits=int(row["hits"]),
        metrics={k: (float("nan") if v is None else float(v)) for k, v in row["metrics"].items()},
        chains=list(row["chains"]))


# ----------------------------------------------------------------------------------------
# Zero-out
# ----------------------------------------------------------------------------------------


def explained_mask(dmap: DensityMap, placed: Sequence[Structure], resolution: float,
                   fraction: float = AcceptRules.zero_fraction, device: str = "cpu") -> np.ndarray:
    """Voxels of a map explained by placed structures.

    Each structure's map is simulated on ``dmap``'s grid at ``resolution`` (ChimeraX
    molmap: one Gaussian per atom, all kept atoms, sigma = 0.225 x resolution); a voxel
    is explained when some structure's simulated density there exceeds ``fraction`` of
    that structure's simulated maximum. Per-structure maxima keep a small subunit's
    envelope as wide as a large one's.

    Args:
        dmap: the map whose grid is used.
        placed: structures already in their placed (world) coordinates.
        resolution: Angstrom.
        fraction: level relative to each simulated maximum, in (0, 1).

    Returns:
        [nz, ny, nx] bool.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise DifffitInputError(f"zero fraction must be between 0 and 1 (exclusive), got {fraction}")
    mask = np.zeros(dmap.data.shape, dtype=bool)
    for s in placed:
        sim = molmap(s, resolution, like=dmap, device=device).data
        peak = float(sim.max())
        if peak > 0:  # a structure entirely outside the box explains nothing
            mask |= sim > fraction * peak
    return mask


def zero_out(dmap: DensityMap, placed: Sequence[Structure], resolution: float,
             fraction: float = AcceptRules.zero_fraction, device: str = "cpu") -> DensityMap:
    """The map with the density explained by placed structures set to zero.

    Zeroing (not subtracting a scaled simulation) is method.md section 9: it needs no
    amplitude match between simulated and experimental density, and a zeroed voxel is
    below any positive contour, so a later fit treats it as solvent.

    Args:
        dmap: the map.
        placed: structures in their placed coordinates.
        resolution: Angstrom.
        fraction: see :func:`explained_mask`.

    Returns:
        A new DensityMap on the same grid ([nz, ny, nx]).
    """
    mask = explained_mask(dmap, placed, resolution, fraction, device)
    data = dmap.data.copy()
    data[mask] = 0.0
    return dmap.copy_with(data)


# ----------------------------------------------------------------------------------------
# Pieces of a round
# ----------------------------------------------------------------------------------------


def _trace_mask(s: Structure) -> np.ndarray:
    """[N] bool: CA of amino acids and P of nucleotides (the clash test's atoms).

    Falls back to the fitted atoms for a structure with neither (e.g. a ligand-only input).
    """
    mask = []
    for chain in s.gemmi_structure[0]:
        for res in chain:
            cls = _residue_class(res)
            mask.extend(_select_atom(cls, atom, "ca") for atom in res)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape[0] != s.n_atoms or not mask.any():
        return s.fit_mask.copy()
    return mask


def _normalise_copies(copies, structures: Sequence[Structure]) -> list[int | None]:
    """copies (None, int, list, or dict keyed by name or index) -> [M] int or None."""
    M = len(structures)
    if copies is None:
        out: list[Any] = [None] * M
    elif isinstance(copies, (int, np.integer)):
        out = [int(copies)] * M
    elif isinstance(copies, dict):
        out = [None] * M
        names = [s.name for s in structures]
        for key, value in copies.items():
            if isinstance(key, (int, np.integer)):
                if not 0 <= int(key) < M:
                    raise DifffitInputError(f"copies: structure index {key} out of range 0..{M - 1}")
                out[int(key)] = value
            elif key in names:
                out[names.index(key)] = value
            else:
                raise DifffitInputError(f"copies: no structure named {key!r}; have {names}")
    else:
        out = list(copies)
        if len(out) != M:
            raise DifffitInputError(f"copies: {len(out)} numbers given for {M} structures")
    for k, v in enumerate(out):
        if v is not None and (not isinstance(v, (int, np.integer)) or int(v) < 1):
            raise DifffitInputError(
                f"copies: {structures[k].name}: copy number must be an integer >= 1 or None "
                f"(open), got {v!r}")
    return [None if v is None else int(v) for v in out]


class _Occupancy:
    """CA atoms of the accepted placements, for the clash test."""

    def __init__(self):
        self.trees: list[tuple[str, cKDTree]] = []

    def add(self, label: str, xyz: np.ndarray) -> None:
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


def _density_above(dmap: DensityMap, threshold: float) -> float:
    """Summed map values above the contour (float64)."""
    d = dmap.data
    return float(d[d > threshold].sum(dtype=np.float64))


def _decide(res: FitResult, fitted: list[int], structures: Sequence[Structure],
            traces: list[np.ndarray], counts: list[int], copies: list[int | None],
            best: list[float], occupancy: _Occupancy, rules: AcceptRules, round_no: int
            ) -> tuple[list[CompositePlacement], list[dict]]:
    """Apply the AcceptRules to every candidate of a round's fit.

    ``res.structures[k]`` is ``structures[fitted[k]]``. ``counts``, ``best`` and
    ``occupancy`` are updated in place.
    """
    for p in res.placements:
        g = fitted[p.structure_index]
        best[g] = max(best[g], float(p.score))
    accepted: list[CompositePlacement] = []
    rows: list[dict] = []
    # res.placements is sorted by score, best first, across all structures.
    for p in res.placements:
        g = fitted[p.structure_index]
        s = structures[g]
        inside = float(p.metrics.get("inside_fraction", float("nan")))
        clash, reason = None, None
        if copies[g] is not None and counts[g] >= copies[g]:
            reason = f"all {copies[g]} copies placed"
        elif not p.score >= rules.min_score:
            reason = f"score < min_score {rules.min_score:g}"
        elif not p.score >= rules.rel_score * best[g]:
            reason = f"score < {rules.rel_score:g} x best {best[g]:.3f}"
        elif not inside >= rules.min_inside:
            reason = f"inside fraction < {rules.min_inside:g}"
        else:
            xyz = traces[g] @ p.rotation.T + p.translation
            clash, who = occupancy.worst(xyz, rules.clash_distance)
            if clash > rules.max_clash:
                reason = f"clashes with {who}"
        centre = p.rotation @ s.centroid + p.translation
        row = {"round": round_no, "structure": s.name, "input": g + 1, "rank": p.rank,
               "hits": p.hits, "score": float(p.score),
               "correlation": float(p.metrics.get("correlation", float("nan"))),
               "inside_fraction": inside, "clash_fraction": clash,
               "decision": "accepted" if reason is None else "rejected", "reason": reason or "",
               "cx": float(centre[0]), "cy": float(centre[1]), "cz": float(centre[2])}
        if reason is None:
            counts[g] += 1
            chains = [f"{c}_{g + 1}_{counts[g]}" for c in s.chains]
            cp = CompositePlacement(
                structure_index=g, structure_name=s.name, copy=counts[g], round=round_no,
                rotation=np.asarray(p.rotation, dtype=np.float64),
                translation=np.asarray(p.translation, dtype=np.float64),
                score=float(p.score), hits=int(p.hits), metrics=dict(p.metrics), chains=chains)
            accepted.append(cp)
            occupancy.add(f"{s.name} copy {counts[g]}", traces[g] @ cp.rotation.T + cp.translation)
            row["chains"] = " ".join(chains)
        rows.append(row)
    return accepted, rows


def _assemble(structures: Sequence[Structure], placements: Sequence[CompositePlacement]
              ) -> Structure:
    """One Structure holding every placement's moved chains, renamed as in ``p.chains``."""
    st = gemmi.Structure()
    st.name = "difffit_composite"
    model = gemmi.Model("1")
    coords, znum, fmask, chain_ids = [], [], [], []
    for p in placements:
        moved = p.moved(structures[p.structure_index])
        rename = dict(zip(moved.chains, p.chains))
        for ch in moved.gemmi_structure[0]:
            c = ch.clone()
            c.name = rename[ch.name]
            model.add_chain(c)
        coords.append(moved.coords)
        znum.append(moved.atomic_numbers)
        fmask.append(moved.fit_mask)
        chain_ids.append(np.array([rename[c] for c in moved.chain_ids.tolist()], dtype=object))
    st.add_model(model)
    # Subchain (label_asym_id) and entity records are rebuilt for the merged chains; copies
    # of one input keep one entity.
    st.setup_entities()
    st.assign_subchains(force=True)
    if not placements:
        return Structure(name="composite", path=None, coords=np.zeros((0, 3)),
                         atomic_numbers=np.zeros(0, np.int32), fit_mask=np.zeros(0, bool),
                         chain_ids=np.zeros(0, dtype=str), gemmi_structure=st)
    return Structure(name="composite", path=None, coords=np.concatenate(coords),
                     atomic_numbers=np.concatenate(znum), fit_mask=np.concatenate(fmask),
                     chain_ids=np.concatenate(chain_ids).astype(str), gemmi_structure=st)


# ----------------------------------------------------------------------------------------
# State on disk
# ----------------------------------------------------------------------------------------


def _crc(*arrays: np.ndarray) -> str:
    c = 0
    for a in arrays:
        c = zlib.crc32(np.ascontiguousarray(a).tobytes(), c)
    return f"{c:08x}"


def _fingerprint(dmap: DensityMap, structures: Sequence[Structure]) -> dict:
    """What a resumed run must find unchanged: the map and structures, by content."""
    return {
        "map": {"path": _abs(dmap.path), "grid_xyz": list(dmap.shape_xyz),
                "origin": dmap.origin.tolist(), "voxel_size": dmap.voxel_size.tolist(),
                "crc32": _crc(dmap.data)},
        "structures": [{"index": i, "name": s.name, "path": _abs(s.path), "n_atoms": s.n_atoms,
                        "n_fit_atoms": s.n_fit_atoms, "chains": s.chains,
                        "crc32": _crc(s.coords.astype(np.float32), s.fit_mask)}
                       for i, s in enumerate(structures)],
    }


def _same_inputs(state: dict, now: dict, state_path: Path) -> None:
    """Raise DifffitInputError naming every input or setting that differs from the state's.

    Settings are compared by name; a setting the state does not know (added to difffit
    since) is not held against it. The device, max_rounds and empty_rounds may change.
    """
    free = {"device", "max_rounds", "empty_rounds"}
    pick = {
        "map": lambda d: {k: d["map"][k] for k in ("grid_xyz", "crc32")},
        "structures": lambda d: [[s["name"], s["n_atoms"], s["crc32"]] for s in d["structures"]],
        "resolution": lambda d: d["resolution"],
        "threshold": lambda d: d["threshold"],
        "copies": lambda d: d["copies"],
    }
    diffs = []
    try:
        for what, get in pick.items():
            old, new = _jsonable(get(state)), _jsonable(get(now))
            if old != new:
                diffs.append(f"{what} {json.dumps(old)[:120]} -> {json.dumps(new)[:120]}")
        for group in ("rules", "fit_params"):
            old, new = _jsonable(state[group]), _jsonable(now[group])
            diffs += [f"{k} {old[k]!r} -> {new[k]!r}" for k in old
                      if k in new and k not in free and old[k] != new[k]]
    except (KeyError, TypeError):
        raise DifffitInputError(f"{state_path}: not a difffit composite state file") from None
    if diffs:
        raise DifffitInputError(
            f"{state_path}: cannot resume, the run recorded there differs: {'; '.join(diffs)} "
            f"(start a new run in another folder, or force to restart here)")


def _write_json(path: Path, doc: dict) -> None:
    _atomic_write_bytes(path, json.dumps(_jsonable(doc), indent=1, allow_nan=False) + "\n")


def _clear_run(outdir: Path) -> None:
    """Remove a previous composite run's state and round folders (force on a fresh start)."""
    (outdir / STATE_FILE).unlink(missing_ok=True)
    for child in outdir.iterdir():
        if child.is_dir() and (_ROUND_RE.match(child.name) or child.name.startswith(".round_")):
            shutil.rmtree(child)


def _round_dir(outdir: Path, k: int) -> Path:
    return outdir / f"round_{k:02d}"


def _write_round(outdir: Path, rec: RoundRecord, structures: Sequence[Structure],
                 working: DensityMap | None) -> None:
    """Write a round folder under a temporary name, then rename it into place."""
    final = _round_dir(outdir, rec.index)
    tmp = Path(tempfile.mkdtemp(dir=outdir, prefix=f".{final.name}."))
    try:
        mode = _umask_mode()  # mkdtemp makes 0700 folders; outputs are for sharing
        os.chmod(tmp, mode | (mode & 0o444) >> 2)
        if working is not None:
            write_map(tmp / "working_map.mrc", working)
            rec.working_map = str(final / "working_map.mrc")
        accepted_rows = [{**asdict(p)} for p in rec.accepted]
        _write_json(tmp / "round.json", {
            "round": rec.index, "fitted": [structures[i].name for i in rec.fitted],
            "fitted_indices": rec.fitted, "timings": rec.timings, "remaining": rec.remaining,
            "working_map": None if working is None else "working_map.mrc",
            "accepted": accepted_rows, "candidates": rec.candidates})
        _atomic_write_bytes(tmp / "accepted.csv", _csv_text(
            [_placement_row(p, structures[p.structure_index]) for p in rec.accepted]))
        _atomic_write_bytes(tmp / "candidates.csv", _csv_text(rec.candidates))
        if rec.accepted:
            write_structure(tmp / "accepted.cif", _assemble(structures, rec.accepted))
        if final.exists():  # a stale folder of a round the state never recorded
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_round(outdir: Path, k: int) -> RoundRecord:
    path = _round_dir(outdir, k) / "round.json"
    try:
        doc = json.loads(path.read_text())
        wm = doc.get("working_map")
        return RoundRecord(index=int(doc["round"]), fitted=list(doc["fitted_indices"]),
                           accepted=[_placement_from_row(r) for r in doc["accepted"]],
                           candidates=list(doc["candidates"]), timings=dict(doc["timings"]),
                           remaining=float(doc["remaining"]),
                           working_map=None if wm is None else str(path.parent / wm))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DifffitInputError(f"{path}: cannot resume from this round record: {exc}") from exc


def _open_run(out: Path, now: dict, resume: bool, force: bool,
              log: Callable[[str], None]) -> list[RoundRecord]:
    """Start a run in ``out`` (writing the state ``now``) or resume the one recorded there.

    Returns the rounds already complete (empty for a new run). ``now["rounds"]`` is set to
    the recorded ones.
    """
    if out.exists() and not out.is_dir():
        raise DifffitInputError(f"{out}: output path exists and is not a folder")
    state_path = out / STATE_FILE
    if resume and state_path.is_file():
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError) as exc:
            raise DifffitInputError(f"{state_path}: unreadable state file: {exc}") from exc
        _same_inputs(state, now, state_path)
        rounds = [_read_round(out, int(r["round"])) for r in state["rounds"]]
        # Round folders beyond the state's last round are from an interrupted write.
        for child in out.iterdir():
            m = _ROUND_RE.match(child.name)
            if (m and int(m.group(1)) > len(rounds)) or child.name.startswith(".round_"):
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        now["rounds"] = state["rounds"]
        log(f"composite: resuming {out} after round {len(rounds)}")
        return rounds
    if out.is_dir() and any(out.iterdir()):
        if not (force or resume):
            raise FileExistsError(
                f"output folder {out} already exists and is not empty; choose another, "
                f"resume the run recorded there (--resume / resume=True), or pass "
                f"--force (force=True) to start anew in it")
        _clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(state_path, now)
    return []


# ----------------------------------------------------------------------------------------
# The workflow
# ----------------------------------------------------------------------------------------


def composite(target, structures, resolution: float, threshold: float | None = None,
              copies=None, outdir=None, resume: bool = False, force: bool = False,
              params: FitParams | None = None, rules: AcceptRules | None = None,
              progress: bool = False, log: Callable[[str], None] | None = None,
              **overrides) -> CompositeResult:
    """Place several subunits into one map, round after round (see the module docstring).

    Args:
        target: DensityMap or path of an MRC/CCP4 map.
        structures: Structure objects or paths; each is one subunit (all its chains move
            together). Read with the default backbone selection when given as paths.
        resolution: map resolution in Angstrom (fit metrics and the zero-out simulation).
        threshold: contour level; None: mean + 1 standard deviation of the input map.
            Resolved once and used in every round.
        copies: how many copies of each structure to place at most: None (open, for all),
            an int (the same for all), a list (one int or None per structure), or a dict
            keyed by structure name or index (missing ones open).
        outdir: write every round and the final outputs here (None: nothing is written).
        resume: continue the run recorded in ``outdir/state.json`` (inputs and settings
            must match) after its last complete round; without a state file, start anew.
        force: start anew in an ``outdir`` that is not empty (a previous run's state and
            round folders there are removed).
        params: FitParams for every round's fit (the seed of round k is ``seed + k - 1``,
            so a failed search is retried from other starts).
        rules: AcceptRules.
        progress: progress bars and one line per round on stderr.
        log: called with one line per round (default: print to stderr when ``progress``).
        overrides: single fields of AcceptRules (``min_score=0.4``) or FitParams
            (``n_iters=100``).

    Returns:
        CompositeResult.

    Raises:
        DifffitInputError: bad input, or ``resume`` with different inputs or settings.
        FileExistsError: ``outdir`` is not empty and neither ``resume`` nor ``force``.
    """
    t_start = time.perf_counter()
    rule_keys = {f.name for f in fields(AcceptRules)}
    unknown = sorted(set(overrides) - rule_keys - {f.name for f in fields(FitParams)})
    if unknown:
        raise DifffitInputError(f"composite: unknown setting(s) {', '.join(unknown)}; see "
                                f"AcceptRules and FitParams for the valid names")
    if resume and outdir is None:
        raise DifffitInputError("composite: resume=True needs the outdir of the run to resume")
    rules = AcceptRules(**{**(asdict(rules) if rules else {}),
                           **{k: v for k, v in overrides.items() if k in rule_keys}})
    params = FitParams(**{**(asdict(params) if params else {}),
                          **{k: v for k, v in overrides.items() if k not in rule_keys}})
    if not resolution or not float(resolution) > 0:
        raise DifffitInputError(f"resolution must be a positive number of Angstrom, got {resolution}")
    resolution = float(resolution)
    dmap = target if isinstance(target, DensityMap) else read_map(target)
    structs = _as_structures(structures)
    want = _normalise_copies(copies, structs)
    thr = float(default_threshold(dmap.data) if threshold is None else threshold)
    if log is None:
        log = (lambda msg: print(msg, file=sys.stderr)) if progress else (lambda msg: None)

    now = {"format": _STATE_FORMAT, "difffit_version": _version(), **_fingerprint(dmap, structs),
           "resolution": resolution, "threshold": thr, "copies": want, "rules": asdict(rules),
           "fit_params": asdict(params), "rounds": [], "finished": False, "stop_reason": None}
    out = Path(outdir) if outdir is not None else None
    rounds = [] if out is None else _open_run(out, now, resume, force, log)
    working = dmap
    for rec in rounds:
        if rec.working_map is not None:
            working = read_map(rec.working_map)

    # Replay the recorded rounds: copy counts, best scores and occupied space.
    traces = [s.coords[_trace_mask(s)] for s in structs]
    total = _density_above(dmap, thr) or 1.0
    counts = [0] * len(structs)
    best = [-np.inf] * len(structs)
    occupancy = _Occupancy()
    placements: list[CompositePlacement] = []
    for rec in rounds:
        for row in rec.candidates:
            g = int(row["input"]) - 1
            if row.get("score") is not None:
                best[g] = max(best[g], float(row["score"]))
        for p in rec.accepted:
            counts[p.structure_index] += 1
            occupancy.add(f"{p.structure_name} copy {p.copy}",
                          traces[p.structure_index] @ p.rotation.T + p.translation)
            placements.append(p)

    stop = None
    while stop is None:
        k = len(rounds) + 1
        empty = len(rounds) - max([r.index for r in rounds if r.accepted], default=0)
        if empty >= rules.empty_rounds:
            stop = f"{empty} consecutive round(s) accepted nothing"
            break
        fitted = [i for i in range(len(structs)) if want[i] is None or counts[i] < want[i]]
        if not fitted:
            stop = "every structure has its copies"
            break
        if k > rules.max_rounds:
            stop = f"max_rounds ({rules.max_rounds}) reached"
            break
        t0 = time.perf_counter()
        res = fit(working, [structs[i] for i in fitted], resolution, threshold=thr,
                  params=params, progress=progress, seed=params.seed + k - 1)
        t1 = time.perf_counter()
        accepted, rows = _decide(res, fitted, structs, traces, counts, want, best, occupancy,
                                 rules, k)
        t2 = time.perf_counter()
        new_working = None
        if accepted:
            new_working = zero_out(working, [p.moved(structs[p.structure_index]) for p in accepted],
                                   resolution, rules.zero_fraction, params.device)
        rec = RoundRecord(index=k, fitted=fitted, accepted=accepted, candidates=rows,
                          timings={"fit": t1 - t0, "decide": t2 - t1,
                                   "zero": time.perf_counter() - t2},
                          remaining=_density_above(
                              working if new_working is None else new_working, thr) / total)
        if out is not None:
            _write_round(out, rec, structs, new_working)
            now["rounds"].append({"round": k, "dir": _round_dir(out, k).name,
                                  "accepted": len(accepted), "timings": rec.timings})
            _write_json(out / STATE_FILE, now)
        rounds.append(rec)
        placements.extend(accepted)
        if new_working is not None:
            working = new_working
        log(f"composite: round {k}: fitted {len(fitted)} structure(s), accepted "
            + (", ".join(f"{p.structure_name} copy {p.copy} ({p.score:.3f})" for p in accepted)
               or "nothing"))

    result = CompositeResult(placements=placements, structures=structs, map=dmap,
                             working_map=working, resolution=resolution, threshold=thr,
                             params=params, rules=rules, copies=want, rounds=rounds,
                             stop_reason=stop, outdir=out)
    if out is not None:
        now["finished"], now["stop_reason"] = True, stop
        now["total_seconds_last_session"] = time.perf_counter() - t_start
        _write_json(out / STATE_FILE, now)
        result.paths = write_composite_outputs(result, out)
    return result


# ----------------------------------------------------------------------------------------
# Final outputs
# ----------------------------------------------------------------------------------------


def _map_file(result: CompositeResult, outdir: Path) -> str:
    """Path of the input map for the ChimeraX script (written here when it has no file)."""
    if result.map.path is not None and Path(result.map.path).is_file():
        return str(Path(result.map.path).resolve())
    path = outdir / "map.mrc"
    write_map(path, result.map, overwrite=True)
    return str(path.resolve())


def _cxc_text(result: CompositeResult, map_path: str, model_path: Path,
              residual: str | None) -> str:
    lines = [
        "# difffit composite: open in UCSF ChimeraX (`open composite.cxc`).",
        "# Model numbers assume a fresh session: #1 the map, #2 the composite model"
        + (", #3 the density left unexplained (hidden)." if residual else "."),
        f"open {_cxc_quote(map_path)}",
        f"volume #1 level {result.threshold:.6g} style surface transparency 0.6",
    ]
    if result.placements:
        lines.append(f"open {_cxc_quote(str(model_path))}")
    for i, s in enumerate(result.structures):
        copies = result.for_structure(i)
        if not copies:
            lines.append(f"# {s.name} (input {i + 1}): no copy placed")
            continue
        chains = [c for p in copies for c in p.chains]
        colour = _COLOURS[i % len(_COLOURS)]
        lines.append(f"# {s.name} (input {i + 1}): {len(copies)} cop{'y' if len(copies) == 1 else 'ies'}, "
                     f"scores {', '.join(f'{p.score:.3f}' for p in copies)}")
        lines.append(f"color #2/{','.join(chains)} {colour} target ac")
    if residual:
        lines += [f"open {_cxc_quote(residual)}",
                  f"volume #3 level {result.threshold:.6g} style mesh", "hide #3 models"]
    if result.placements:
        lines += ["hide #2 atoms", "show #2 cartoons"]
    lines.append("view")
    return "\n".join(lines) + "\n"


def write_composite_outputs(result: CompositeResult, outdir) -> dict[str, Path]:
    """Write composite.cif, composite.cxc, summary.csv and summary.txt into ``outdir``.

    These files belong to the run in ``outdir`` and are replaced when it is resumed.

    Returns:
        Paths written: "outdir", "model", "cxc", "csv", "txt" (and "map" when the input
        map had no file and was written here).
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"outdir": outdir}
    map_path = _map_file(result, outdir)
    if map_path == str((outdir / "map.mrc").resolve()):
        paths["map"] = outdir / "map.mrc"
    paths["model"] = outdir / "composite.cif"
    if result.placements:
        write_structure(paths["model"], result.model(), overwrite=True)
    else:
        paths["model"].unlink(missing_ok=True)
    residual = next((r.working_map for r in reversed(result.rounds) if r.working_map), None)
    paths["cxc"] = outdir / "composite.cxc"
    _atomic_write_bytes(paths["cxc"], _cxc_text(
        result, map_path, paths["model"].resolve(),
        None if residual is None else str(Path(residual).resolve())))
    paths["csv"] = outdir / "summary.csv"
    _atomic_write_bytes(paths["csv"], _csv_text(result.rows()))
    paths["txt"] = outdir / "summary.txt"
    _atomic_write_bytes(paths["txt"], result.summary_table() + "\n")
    return paths


def composite_report(result: CompositeResult, path, overwrite: bool = False,
                     command: str | None = None) -> Path:
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

    Returns:
        The path written.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    from . import report as rp

    sections = []
    placed = [{"structure": p.structure_name, "copy": p.copy, "chains": " ".join(p.chains),
               "round": p.round, "score": round(p.score, 4),
               "correlation": round(p.metrics.get("correlation", float("nan")), 4),
               "inside": round(p.metrics.get("inside_fraction", float("nan")), 3), "hits": p.hits}
              for p in result.placements]
    sections.append(("Placed copies", rp.table(placed, caption=(
        f"{len(result.placements)} copies in {len(result.rounds)} round(s); stopped: "
        f"{result.stop_reason}. Chains are named <chain>_<input>_<copy>."))))
    rules = result.rules
    sections.append(("Acceptance rule", rp.table([
        {"rule": "score (fit's rank_by metric) at least", "value": rules.min_score},
        {"rule": "fraction of the structure's best score at least", "value": rules.rel_score},
        {"rule": "fraction of atoms in unexplained density at least", "value": rules.min_inside},
        {"rule": "CA clash distance (A)", "value": rules.clash_distance},
        {"rule": "clashing CA fraction at most", "value": rules.max_clash},
        {"rule": "zero-out level (fraction of simulated maximum)", "value": rules.zero_fraction},
    ])))
    if result.rounds:
        ks = [r.index for r in result.rounds]
        sections.append(("Unexplained density", rp.line_plot(
            {"density above the contour left": ([0] + ks, [1.0] + [r.remaining for r in result.rounds])},
            title="Density left after each round (fraction of the input map's)",
            xlabel="round", ylabel="fraction")))
    for rec in result.rounds:
        scores = [r["score"] for r in rec.candidates if r.get("score") is not None]
        marks = {f"{p.structure_name} copy {p.copy}": p.score for p in rec.accepted}
        body = rp.histogram(scores, bins=40, title=f"Round {rec.index}: candidate scores "
                            "(accepted marked)", xlabel="score", marks=marks)
        shown = [r for r in rec.candidates if r["decision"] == "accepted"]
        shown += [r for r in rec.candidates if r["decision"] != "accepted"][:10]
        cols = ["structure", "rank", "hits", "score", "correlation", "inside_fraction",
                "clash_fraction", "decision", "reason"]
        rows = [{c: (round(r[c], 4) if isinstance(r.get(c), float) else r.get(c)) for c in cols}
                for r in shown]
        body += rp.table(rows, columns=cols, caption=(
            f"Fitted {', '.join(result.structures[i].name for i in rec.fitted)}; "
            f"{len(rec.candidates)} candidates, the accepted ones and the 10 best rejected shown "
            f"(all in round_{rec.index:02d}/candidates.csv)."))
        sections.append((f"Round {rec.index}", body))
    meta = {"difffit": _version(), **({"command": command} if command else {}),
            "map": result.map.path or "(in memory)", "resolution (Å)": result.resolution,
            "threshold": result.threshold,
            "structures": ", ".join(s.name for s in result.structures),
            "copies asked": ", ".join("open" if c is None else str(c) for c in result.copies),
            "parameters": result.params}
    return rp.write_report(path, rp.page("difffit composite", sections, meta=meta),
                           overwrite=overwrite)


# ----------------------------------------------------------------------------------------
# Command line: difffit composite / simulate / zero
# ----------------------------------------------------------------------------------------


def _copies_arg(text: str) -> list[int | None] | int:
    """``2`` (all structures) or ``2,2,*`` (one per structure; ``*`` = open)."""
    parts = [p.strip() for p in text.split(",")]
    out: list[int | None] = []
    for p in parts:
        if p in ("*", "?", ""):
            out.append(None)
            continue
        try:
            v = int(p)
        except ValueError:
            raise argparse.ArgumentTypeError(f"copy numbers are integers or '*', got {p!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"copy numbers must be >= 1, got {v}")
        out.append(v)
    return out[0] if len(out) == 1 and out[0] is not None else out


def _add_structure_options(p: argparse.ArgumentParser, with_selection: bool,
                           output: bool = False) -> None:
    """Atom-filter options; with ``output`` also -r, -o OUT.mrc and --force (simulate, zero)."""
    from .cli import _chains, _positive_float

    if output:
        p.add_argument("-r", "--resolution", type=_positive_float, required=True,
                       help="resolution in Angstrom")
        p.add_argument("-o", "--output", required=True, metavar="OUT.mrc", help="map to write")
        p.add_argument("--force", action="store_true", help="overwrite OUT.mrc")
    if with_selection:
        p.add_argument("--selection", choices=("backbone", "ca", "heavy", "all"), default="backbone",
                       help="atoms used for fitting (default: backbone)")
    p.add_argument("--chains", type=_chains, default=None, metavar="A,B",
                   help="keep only these chains of every structure")
    p.add_argument("--keep-waters", action="store_true", help="keep water molecules")
    p.add_argument("--keep-ligands", action="store_true", help="keep ligands and ions")


def _read_structures(args) -> list[Structure]:
    return [read_structure(p, selection=getattr(args, "selection", "backbone"), chains=args.chains,
                           keep_waters=args.keep_waters, keep_ligands=args.keep_ligands)
            for p in args.structures]


# One option per AcceptRules field: (field, type, metavar, help); --min-score etc.
_RULE_OPTIONS = (
    ("min_score", "float", "S", "accept only scores (cam) >= S"),
    ("rel_score", "float", "F", "accept only scores >= F x the structure's best score"),
    ("min_inside", "float", "F", "least fraction of atoms in unexplained density"),
    ("clash_distance", "positive", "A", "CA-CA distance counted as a clash"),
    ("max_clash", "float", "F", "largest fraction of clashing CA atoms"),
    ("zero_fraction", "float", "F",
     "zero voxels where a placed copy's simulated map exceeds F x its maximum"),
    ("empty_rounds", "count", "N", "stop after N consecutive rounds that accept nothing"),
    ("max_rounds", "count", "N", "stop after N rounds"),
)


def add_cli(sub) -> None:
    """Register ``difffit composite``, ``difffit simulate`` and ``difffit zero``."""
    from .cli import (_positive_float, _positive_int, _voxel_size, add_map_arguments,
                      add_search_arguments)

    c = sub.add_parser(
        "composite", help="place several subunits into one map, round after round",
        description="Fit all subunits, accept the best non-overlapping placements (score "
                    "floor, fraction of the structure's best score, atoms in unexplained "
                    "density, no CA clash), zero out the density they explain, refit the "
                    "rest; repeat until a round accepts nothing. Every round is written to "
                    "the output folder; the result is composite.cif (chains named "
                    "<chain>_<input>_<copy>) with a ChimeraX script.")
    add_map_arguments(c)  # MAP, -r, -t, --voxel-size
    c.add_argument("structures", metavar="STRUCTURE", nargs="+",
                   help="subunits to place (PDB/mmCIF); all chains of a file move together")
    c.add_argument("--copies", type=_copies_arg, default=None, metavar="N|N1,N2,..",
                   help="copies to place at most: one number for all, or one per structure "
                        "('*' = open); default: open (until nothing more is accepted)")
    c.add_argument("-o", "--outdir", default=None, metavar="DIR",
                   help="output folder (default: difffit_composite/<map name>)")
    c.add_argument("--resume", action="store_true",
                   help="continue the run recorded in the output folder after its last round")
    c.add_argument("--force", action="store_true",
                   help="start anew in a non-empty output folder (its previous run is removed)")
    c.add_argument("--report", action="store_true", help="also write report.html")
    _add_structure_options(c, with_selection=True)
    c.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    add_search_arguments(c)
    types = {"float": float, "positive": _positive_float, "count": _positive_int}
    d = AcceptRules()
    for name, kind, metavar, text in _RULE_OPTIONS:
        c.add_argument("--" + name.replace("_", "-"), type=types[kind], default=getattr(d, name),
                       metavar=metavar, help=f"{text} (default: {getattr(d, name)})")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    c.set_defaults(_run=_cmd_composite)

    s = sub.add_parser(
        "simulate", help="simulated map of a structure (ChimeraX molmap)",
        description="Simulate a structure's density at a resolution (one Gaussian per atom, "
                    "sigma = 0.225 x resolution), on another map's grid (--like) or on a box "
                    "around the atoms (--spacing, default resolution / 3).")
    s.add_argument("structure", metavar="STRUCTURE", help="PDB/mmCIF file")
    _add_structure_options(s, with_selection=False, output=True)
    grid = s.add_mutually_exclusive_group()
    grid.add_argument("--like", default=None, metavar="MAP", help="use this map's grid")
    grid.add_argument("--spacing", type=_positive_float, default=None, metavar="S",
                      help="grid spacing in Angstrom (default: resolution / 3)")
    s.set_defaults(_run=_cmd_simulate)

    z = sub.add_parser(
        "zero", help="zero the density that placed structures explain",
        description="Set to zero every voxel of MAP where the simulated map of a placed "
                    "structure (in its file's coordinates) exceeds a fraction of its maximum.")
    z.add_argument("map", metavar="MAP", help="density map")
    z.add_argument("structures", metavar="STRUCTURE", nargs="+", help="placed structures")
    _add_structure_options(z, with_selection=False, output=True)
    z.add_argument("--fraction", type=float, default=d.zero_fraction, metavar="F",
                   help="zero-out level, fraction of the simulated maximum "
                        f"(default: {d.zero_fraction})")
    z.add_argument("--voxel-size", type=_voxel_size, default=None, metavar="V",
                   help="override the map header's voxel size")
    z.set_defaults(_run=_cmd_zero)


def _check_output_file(path: Path, force: bool) -> None:
    """Refuse before any work: an existing output without --force, or a missing folder."""
    if path.exists() and not force:
        raise FileExistsError(f"{path}: file already exists; pass --force to overwrite it")
    if not path.parent.is_dir():
        raise DifffitInputError(f"{path}: output folder {path.parent} does not exist")


def _cmd_composite(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .cli import _check_device, _map_stem, search_overrides

    _check_device(args.device)
    map_path = Path(args.map)
    outdir = Path(args.outdir) if args.outdir else Path("difffit_composite") / _map_stem(map_path)
    dmap = read_map(map_path, voxel_size=args.voxel_size)
    structures = _read_structures(args)
    copies = args.copies
    if isinstance(copies, list) and len(copies) != len(structures):
        raise DifffitInputError(f"--copies: {len(copies)} numbers given for "
                                f"{len(structures)} structures")
    overrides = {**search_overrides(args), "device": args.device}
    rules = AcceptRules(**{name: getattr(args, name) for name, *_ in _RULE_OPTIONS})
    if not args.quiet:
        print(f"difffit: composite of {len(structures)} structure(s) in {map_path} at "
              f"{args.resolution:g} A -> {outdir}/", file=sys.stderr)
    result = composite(dmap, structures, args.resolution, threshold=args.threshold,
                       copies=copies, outdir=outdir, resume=args.resume, force=args.force,
                       rules=rules, progress=not args.quiet, **overrides)
    command = "difffit " + " ".join(shlex.quote(a) for a in argv)
    _atomic_write_bytes(outdir / "command.txt", command + "\n")
    if args.report:
        composite_report(result, outdir / "report.html", overwrite=True, command=command)
    if not args.quiet:
        print(result.summary_table())
    print(f"results written to {outdir}/ (open composite.cxc in ChimeraX)")
    return 0


def _cmd_simulate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    out = Path(args.output)
    _check_output_file(out, args.force)
    args.structures = [args.structure]
    structure = _read_structures(args)[0]
    like = read_map(args.like) if args.like else None
    sim = molmap(structure, args.resolution, like=like, spacing=args.spacing)
    write_map(out, sim, overwrite=args.force)
    print(f"simulated map of {structure.name} ({structure.n_atoms} atoms, "
          f"{'x'.join(map(str, sim.shape_xyz))} voxels) written to {out}")
    return 0


def _cmd_zero(args: argparse.Namespace, argv: Sequence[str]) -> int:
    out = Path(args.output)
    _check_output_file(out, args.force)
    if not 0.0 < args.fraction < 1.0:
        raise DifffitInputError(f"--fraction must be between 0 and 1, got {args.fraction}")
    dmap = read_map(args.map, voxel_size=args.voxel_size)
    placed = _read_structures(args)
    mask = explained_mask(dmap, placed, args.resolution, args.fraction)
    data = dmap.data.copy()
    data[mask] = 0.0
    write_map(out, dmap.copy_with(data), overwrite=args.force)
    print(f"zeroed {int(mask.sum())} of {mask.size} voxels ({100.0 * mask.mean():.1f} %); "
          f"written to {out}")
    return 0
