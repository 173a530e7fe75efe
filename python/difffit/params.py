"""Settings of the fitting workflows: one dataclass per workflow, checked on creation.

* :class:`FitParams`: every knob of a fit (search, clustering, refinement, ranking, device).
* :class:`AcceptRules`: when composite accepts a placement, how it zeroes, when it stops.
* :class:`IdentifyParams`: identify's own settings (score, batch bound, selection).

Every public workflow takes its parameter objects plus single fields as keywords
(``fit(..., n_iters=100)``, ``composite(..., min_score=0.4)``, ``identify(...,
batch_atoms=50_000)``); :func:`resolve` routes the keywords to the right class.
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from .errors import DifffitInputError, opt

__all__ = ["METRICS", "SCORES", "SIZE_FAIR", "FitParams", "AcceptRules", "IdentifyParams",
           "AssembleParams", "resolve"]

# Metrics measured for every placement (docs/method.md section 6).
METRICS = ("correlation", "cam", "overlap", "atom_correlation", "atom_cam", "atom_overlap",
           "inside_fraction", "mean_density", "pyramid_score")
# Simulated-map makers (difffit.simulators); molmap is ChimeraX's and the default.
SIMULATORS = ("molmap", "gemmi", "learned")
# Scores identify can rank by: a metric, or how far the best placement stands out.
SCORES = METRICS + ("zscore",)
# Per-point (normalised) scores: fair across candidate sizes. The rest are sums.
SIZE_FAIR = ("cam", "correlation", "atom_cam", "atom_correlation", "inside_fraction",
             "mean_density", "atom_overlap", "pyramid_score", "zscore")

_DEVICES = ("cpu", "cuda", "auto")
_DEVICE_RE = re.compile(r"(cpu|auto|cuda(:[0-9]+)?)")


def _number(obj, name: str, *, integer: bool = False, lo: float | None = None,
            hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
            none_ok: bool = False) -> None:
    """Check that field ``name`` of ``obj`` is a finite number in range (normalised to a
    plain int or float), naming the field and what it expects."""
    v = getattr(obj, name)
    if v is None and none_ok:
        return
    what = ("an integer" if integer else "a number") + (" or None" if none_ok else "")
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) or (
            integer and not isinstance(v, numbers.Integral)):
        raise DifffitInputError(f"{opt(name)} must be {what}, got {v!r} ({type(v).__name__})")
    v = int(v) if integer else float(v)
    if not math.isfinite(v):
        raise DifffitInputError(f"{opt(name)} must be finite, got {v}")
    if (lo is not None and (v <= lo if lo_open else v < lo)) or (
            hi is not None and (v >= hi if hi_open else v > hi)):
        bounds = ([f"{'>' if lo_open else '>='} {lo:g}"] if lo is not None else []) + (
            [f"{'<' if hi_open else '<='} {hi:g}"] if hi is not None else [])
        raise DifffitInputError(f"{opt(name)} must be {' and '.join(bounds)}, got {v:g}")
    setattr(obj, name, v)


def _flag(obj, name: str) -> None:
    v = getattr(obj, name)
    if not isinstance(v, (bool, np.bool_)):
        raise DifffitInputError(f"{opt(name)} must be True or False, got {v!r}")
    setattr(obj, name, bool(v))


def _choice(obj, name: str, choices) -> None:
    v = getattr(obj, name)
    if not isinstance(v, str) or v not in choices:
        raise DifffitInputError(f"{opt(name)} must be one of {', '.join(choices)}, got {v!r}")


@dataclass
class FitParams:
    """Every knob of a fit: 1200 starts (800 scanned, 400 focused) of 200 steps each."""

    # Starts (difffit.starts, docs/method.md section 5): n_positions positions spread over
    # the density; at each, the n_rotations best of scan_rotations uniform rotations (scored
    # without descent); then focus_starts restarts around each of the focus_top best
    # distinct poses, perturbed by up to focus_angle degrees and focus_shift A.
    n_rotations: int = 2            # starts per position (the best scanned rotations)
    n_positions: int = 400          # start positions per structure, spread over the density
    scan_rotations: int = 500       # rotations scored per position; <= n_rotations: no scan
    scan_smooth: float = 2.0        # voxels: Gaussian on the search volume for the scan
    focus_top: int = 10             # best distinct poses restarted from; 0: no focus
    focus_starts: int | None = None  # restarts per focused pose; None: half the scanned
                                     # starts shared out (40 with the defaults)
    focus_iters: int | None = None  # steps of the restarts; None: n_iters // 2
    focus_angle: float = 20.0       # degrees
    focus_shift: float = 3.0        # Angstrom (sd per axis)
    n_iters: int = 200              # Adam steps
    # Coarse-to-fine (difffit.coarse): the first coarse_iters steps of the first-round
    # descent move coarse_atoms-atom groups (k-means points) on pyramid levels shifted
    # to match their spread; the rest move the atoms. 0: atoms only; None: all but the
    # last 50 steps when n_iters >= 200 (150 of 200), else 0. Local fits ignore it.
    coarse_iters: int | None = None
    coarse_atoms: float = 20.0      # fitted atoms per coarse point
    lr_quat: float = 0.01
    lr_trans: float | None = None   # Angstrom per step; None -> 1 % of the mean box edge
    record_every: int = 10
    n_levels: int = 5               # pyramid levels
    smooth_sigma: float = 1.0       # voxels, per smoothing step
    negative: float = 0.5           # negative-space constant
    dust_min_size: int = 100        # voxels; smaller components are removed
    shift_tol: float = 3.0          # Angstrom, clustering
    angle_tol: float = 6.0          # degrees, clustering
    seed: int = 0
    refine: bool = True
    refine_iters: int = 60
    refine_top: int | None = 32     # clusters refined per structure (best first); None: all
    exact_top: int = 10    # refined placements per structure given ChimeraX-exact metrics
    rank_by: str = "cam"   # correlation about the mean: robust to flat or clamped regions
    device: str = "cpu"    # "cpu", "cuda", "cuda:N", or "auto" (a GPU when there is one)
    max_points_per_batch: int = 4_000_000
    min_inside_fraction: float = 0.0
    copies: int | str | None = None  # rank the N (or "auto") best distinct copies first
    min_plddt: float | None = None   # fit only residues with B-factor (pLDDT) >= this
    # The simulated map the fitmap-style metrics and zero-out use (difffit.simulators):
    # molmap (ChimeraX's), gemmi (electron form factors) or learned (needs checkpoint).
    simulator: str = "molmap"
    checkpoint: str | None = None
    # Local and regional fits (difffit.region): refine from the current pose only; start
    # only within `radius` A of `center`; search the map times a mask on its grid, or
    # only within `zone_radius` A of the atoms of the structure file `zone`.
    local: bool = False
    center: tuple[float, float, float] | None = None
    radius: float | None = None
    mask: str | None = None
    zone: str | None = None
    zone_radius: float = 5.0

    def __post_init__(self):
        # Every field: its type and its range, so that a bad value stops here with its
        # name rather than deep in the search (or, worse, runs and gives a poor result).
        _choice(self, "rank_by", METRICS)
        for name in ("n_rotations", "n_positions", "n_iters", "record_every", "n_levels",
                     "max_points_per_batch"):
            _number(self, name, integer=True, lo=1)
        _number(self, "refine_top", integer=True, lo=1, none_ok=True)
        for name in ("exact_top", "refine_iters", "dust_min_size", "seed", "scan_rotations",
                     "focus_top"):
            _number(self, name, integer=True, lo=0)
        for name in ("lr_quat", "smooth_sigma", "shift_tol", "focus_angle"):
            _number(self, name, lo=0, lo_open=True)
        _number(self, "lr_trans", lo=0, lo_open=True, none_ok=True)
        _number(self, "negative", lo=0)
        _number(self, "focus_shift", lo=0)
        _number(self, "scan_smooth", lo=0)
        _number(self, "focus_starts", integer=True, lo=0, none_ok=True)
        _number(self, "focus_iters", integer=True, lo=1, none_ok=True)
        _number(self, "coarse_iters", integer=True, lo=0, none_ok=True)
        if self.coarse_iters is not None and self.coarse_iters >= self.n_iters:
            raise DifffitInputError(f"{opt('coarse_iters')} must be less than {opt('n_iters')} "
                                    f"({self.n_iters}): the last steps move the atoms; got "
                                    f"{self.coarse_iters}")
        _number(self, "coarse_atoms", lo=1)
        _number(self, "angle_tol", lo=0, hi=180, lo_open=True)
        _number(self, "min_inside_fraction", lo=0, hi=1)
        _flag(self, "refine")
        if self.copies != "auto":
            _number(self, "copies", integer=True, lo=1, none_ok=True)
        _number(self, "min_plddt", lo=0, hi=100, none_ok=True)
        _simulator_fields(self)
        _region_fields(self)
        if not isinstance(self.device, str) or not _DEVICE_RE.fullmatch(self.device):
            raise DifffitInputError(f"{opt('device')} must be auto, cpu, cuda or cuda:N, "
                                    f"got {self.device!r}")

    def torch_device(self):
        """The torch.device to fit on: "auto" is a CUDA GPU when torch sees one, else the CPU.

        Raises:
            DifffitInputError: "cuda" asked for, but torch sees no CUDA GPU.
        """
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise DifffitInputError(f"{opt('device', self.device)} asked for, but torch sees no "
                                    f"CUDA GPU; use {opt('device', 'cpu')}")
        return device


def _region_fields(p: "FitParams") -> None:
    """The local / regional fields of FitParams (difffit.region): types, ranges, and the
    combinations that make sense (a local fit does not search, so it takes no centre)."""
    import os

    _flag(p, "local")
    _number(p, "radius", lo=0, lo_open=True, none_ok=True)
    _number(p, "zone_radius", lo=0, lo_open=True)
    if p.center is not None:
        c = p.center
        if isinstance(c, str):
            c = c.replace(",", " ").split()
        try:
            c = tuple(float(v) for v in c)
        except (TypeError, ValueError):
            c = ()
        if len(c) != 3 or not all(math.isfinite(v) for v in c):
            raise DifffitInputError(f"{opt('center')} must be three finite numbers x, y, z "
                                    f"(Angstrom), got {p.center!r}")
        p.center = c
        if p.radius is None:
            raise DifffitInputError(f"{opt('center')} needs {opt('radius', 'R')}: the starts "
                                    f"lie within R Angstrom of the centre")
    elif p.radius is not None:
        raise DifffitInputError(f"{opt('radius')} needs {opt('center', 'X,Y,Z')}")
    if p.local and p.center is not None:
        raise DifffitInputError(f"{opt('local', True)} refines from the current pose and does "
                                f"not search: leave out {opt('center')} / {opt('radius')}")
    for name in ("mask", "zone"):
        v = getattr(p, name)
        if v is not None:
            if not isinstance(v, (str, os.PathLike)) or not str(v):
                raise DifffitInputError(f"{opt(name)} must be the path of a file, got {v!r}")
            setattr(p, name, str(v))


def _simulator_fields(p) -> None:
    """simulator: one of SIMULATORS; checkpoint: a file path, needed by (only) learned."""
    import os

    _choice(p, "simulator", SIMULATORS)
    if p.checkpoint is not None:
        if not isinstance(p.checkpoint, (str, os.PathLike)) or not str(p.checkpoint):
            raise DifffitInputError(f"{opt('checkpoint')} must be the path of a file, got "
                                    f"{p.checkpoint!r}")
        p.checkpoint = str(p.checkpoint)
    if p.simulator == "learned" and p.checkpoint is None:
        raise DifffitInputError(f"{opt('simulator', 'learned')} needs {opt('checkpoint', 'FILE')} "
                                f"(written by difffit train-simulator)")
    if p.simulator != "learned" and p.checkpoint is not None:
        raise DifffitInputError(f"{opt('checkpoint')} is for {opt('simulator', 'learned')} only")


@dataclass
class AcceptRules:
    """When a candidate placement is accepted, how density is zeroed, when to stop.

    A candidate (one cluster representative of :func:`difffit.fit`, its metrics
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
        _number(self, "min_score", lo=-1, hi=1)
        for name in ("rel_score", "min_inside", "max_clash"):
            _number(self, name, lo=0, hi=1)
        _number(self, "zero_fraction", lo=0, hi=1, lo_open=True, hi_open=True)
        _number(self, "clash_distance", lo=0, lo_open=True)
        for name in ("empty_rounds", "max_rounds"):
            _number(self, name, integer=True, lo=1)


@dataclass
class IdentifyParams:
    """Identify's own settings.

    Attributes:
        score: ranking score, a metric of :data:`METRICS` (per-point ones are size-fair;
            "overlap" is a sum and is not) or "zscore" (how far the best placement
            stands out from the candidate's other clusters).
        batch_atoms: at most this many fitted atoms per batch (memory bound); a larger
            candidate gets a batch of its own.
        selection: atoms fitted ("backbone", "ca", "heavy", "all").
        skip_bad: leave unreadable library files out (listed in the result and the log)
            instead of stopping with an error naming the file.
        first_pass: screen the library first with a coarse search (a Gaussian per
            ``first_pass_atoms`` fitted atoms; ``first_pass_positions`` positions, the best
            rotations of ``first_pass_rotations`` at each, ``first_pass_iters`` steps; the
            best pose then polished and refined with the atoms) and fit fully only the
            candidates that could still reach the top ``first_pass_top``: the bound is
            the largest gain (full score - estimate) seen, at least ``first_pass_margin``
            times the K-th best full score, checked by fully fitting the
            ``first_pass_check`` best screened-out candidates (difffit.workflows.prescreen).
            Raise ``first_pass_positions`` for a map much larger than the candidates.
    """

    score: str = "cam"
    batch_atoms: int = 100_000
    selection: str = "backbone"
    skip_bad: bool = False
    first_pass: bool = False
    first_pass_top: int = 10
    first_pass_margin: float = 0.01
    first_pass_check: int = 2
    first_pass_atoms: float = 20.0
    first_pass_positions: int = 60
    first_pass_rotations: int = 120
    first_pass_iters: int = 40

    def __post_init__(self):
        from .structures import SELECTIONS

        _choice(self, "score", SCORES)
        _number(self, "batch_atoms", integer=True, lo=1)
        _choice(self, "selection", SELECTIONS)
        _flag(self, "skip_bad")
        _flag(self, "first_pass")
        for name in ("first_pass_top", "first_pass_iters", "first_pass_positions",
                     "first_pass_rotations"):
            _number(self, name, integer=True, lo=1)
        _number(self, "first_pass_check", integer=True, lo=0)
        if self.first_pass and self.score == "zscore":
            # A z-score needs all of a candidate's clusters, which only a full fit gives,
            # so the first pass has nothing to estimate it with.
            raise DifffitInputError(f"{opt('first_pass', True)} ranks by a metric: choose "
                                    f"one with {opt('score')} (e.g. {opt('score', 'cam')}), "
                                    f"not {opt('score', 'zscore')}")
        _number(self, "first_pass_margin", lo=0)
        _number(self, "first_pass_atoms", lo=1)


@dataclass
class AssembleParams:
    """Joint assembly's own settings (:func:`difffit.assemble`, docs/method.md section 10).

    Attributes:
        n_candidates: placements of each structure's own fit kept as starts, per copy.
        n_combos: configurations built from those candidates (the first greedily, best
            score first with no CA clash; the others with the order shuffled by noise).
        n_random: configurations with every unit at a random pose in the density.
        joint_iters: Adam steps of the joint optimisation on the search pyramid.
        refine_iters: steps of the final joint refinement against the unsmoothed map.
        clash_weight: weight of the claim penalty (density claimed twice), per fitted
            atom, in units of the search volume (at most ``n_levels`` inside density).
    """

    n_candidates: int = 4
    n_combos: int = 24
    n_random: int = 8
    joint_iters: int = 120
    refine_iters: int = 60
    clash_weight: float = 4.0

    def __post_init__(self):
        _number(self, "n_candidates", integer=True, lo=1)
        _number(self, "n_combos", integer=True, lo=1)
        for name in ("n_random", "joint_iters", "refine_iters"):
            _number(self, name, integer=True, lo=0)
        _number(self, "clash_weight", lo=0)


def resolve(overrides: dict[str, Any], *given: tuple[type, Any]) -> list[Any]:
    """Build each parameter class from its given object and the keywords that name its fields.

    Args:
        overrides: single fields, each routed to the first class that has it.
        given: (class, object or None) pairs, e.g. ``(FitParams, params)``.

    Returns:
        One instance per class, in the order given.

    Raises:
        DifffitInputError: a keyword that no class has, naming the valid classes.
    """
    names = [{f.name for f in fields(cls)} for cls, _ in given]
    unknown = sorted(set(overrides) - set().union(*names))
    if unknown:
        raise DifffitInputError(
            f"unknown setting(s) {', '.join(unknown)}; the valid names are the fields of "
            f"{', '.join(cls.__name__ for cls, _ in given)}")
    out, taken = [], set()
    for (cls, obj), keys in zip(given, names):
        mine = {k: v for k, v in overrides.items() if k in keys and k not in taken}
        taken |= set(mine)
        out.append(cls(**{**(asdict(obj) if obj is not None else {}), **mine}))
    return out
