"""Settings of the fitting workflows: one dataclass per workflow, checked on creation.

* :class:`FitParams`: every knob of a fit (search, clustering, refinement, ranking, device).
* :class:`AcceptRules`: when composite accepts a placement, how it zeroes, when it stops.
* :class:`IdentifyParams`: identify's own settings (score, batch bound, selection).

Every public workflow takes its parameter objects plus single fields as keywords
(``fit(..., n_iters=100)``, ``composite(..., min_score=0.4)``, ``identify(...,
batch_atoms=50_000)``); :func:`resolve` routes the keywords to the right class.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import DifffitInputError

__all__ = ["METRICS", "SCORES", "SIZE_FAIR", "FitParams", "AcceptRules", "IdentifyParams",
           "resolve"]

# Metrics measured for every placement (docs/method.md section 6).
METRICS = ("correlation", "cam", "overlap", "atom_correlation", "atom_cam", "atom_overlap",
           "inside_fraction", "mean_density", "pyramid_score")
# Scores identify can rank by: a metric, or how far the best placement stands out.
SCORES = METRICS + ("zscore",)
# Per-point (normalised) scores: fair across candidate sizes. The rest are sums.
SIZE_FAIR = ("cam", "correlation", "atom_cam", "atom_correlation", "inside_fraction",
             "mean_density", "atom_overlap", "pyramid_score", "zscore")

_DEVICES = ("cpu", "cuda", "auto")


@dataclass
class FitParams:
    """Every knob of a fit; the defaults follow the paper's protocol (1000 starts, 200 steps)."""

    n_rotations: int = 100          # rotations per start position (uniform on SO(3))
    n_positions: int = 10           # enveloped start positions per structure
    n_iters: int = 200              # Adam steps
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
    rank_by: str = "cam"   # correlation about the mean: robust to flat or clamped regions
    device: str = "cpu"    # "cpu", "cuda", "cuda:N", or "auto" (a GPU when there is one)
    max_points_per_batch: int = 4_000_000
    min_inside_fraction: float = 0.0

    def __post_init__(self):
        if self.rank_by not in METRICS:
            raise DifffitInputError(f"rank_by must be one of {', '.join(METRICS)}, got {self.rank_by!r}")
        for name in ("n_rotations", "n_positions", "n_iters", "record_every", "n_levels"):
            if int(getattr(self, name)) < 1:
                raise DifffitInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.refine_top is not None and int(self.refine_top) < 1:
            raise DifffitInputError(f"refine_top must be >= 1 or None, got {self.refine_top}")
        if not isinstance(self.device, str) or self.device.split(":")[0] not in _DEVICES:
            raise DifffitInputError(f"device must be auto, cpu or cuda (cuda:N), got {self.device!r}")

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
            raise DifffitInputError("device 'cuda' asked for, but torch sees no CUDA GPU; use device='cpu'")
        return device


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
    """

    score: str = "cam"
    batch_atoms: int = 100_000
    selection: str = "backbone"
    skip_bad: bool = False

    def __post_init__(self):
        from .structures import SELECTIONS

        if self.score not in SCORES:
            raise DifffitInputError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")
        if int(self.batch_atoms) < 1:
            raise DifffitInputError(f"batch_atoms must be >= 1, got {self.batch_atoms}")
        if self.selection not in SELECTIONS:
            raise DifffitInputError(f"selection must be one of {', '.join(SELECTIONS)}, "
                                    f"got {self.selection!r}")


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
