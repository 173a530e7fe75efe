"""Point-group symmetry of a map: Cn / Dn operators, and the axis and centre found from the map.

A symmetry is a centre c (Angstrom) and a rotation frame whose z axis is the principal
(n-fold) axis and whose x axis is a two-fold axis for Dn. Its operators are the rotations
g acting about the centre, x -> G (x - c) + c; the first is the identity. A placement
(R, t) of the asymmetric unit (x -> R x + t) has the images (G R, G (t - c) + c).

Found from the map (:func:`find_symmetry`): the centre is the centroid of the density
above the contour; candidate axes are the three principal axes of that density, each
refined on a small cone of directions; an n-fold rotation about an axis is scored by the
map's self-correlation, the correlation of the map with itself rotated by 360/n degrees
(over the voxels above the contour in either). ``auto`` picks the highest order whose
every rotation (k x 360/n, k = 1 .. n-1) correlates at least ``min_score`` (0.6), then
looks for a two-fold axis perpendicular to it (Dn).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .errors import DifffitInputError
from .maps import DensityMap

__all__ = ["Symmetry", "parse_symmetry", "symmetry_operators", "find_symmetry",
           "resolve_symmetry", "expand_pose", "expand_placements", "self_correlation"]

_SPEC = re.compile(r"^\s*([CcDd])\s*([0-9]+)\s*$")
MAX_ORDER = 12


@dataclass
class Symmetry:
    """A point group placed in space.

    Attributes:
        kind: "C" or "D"; order: n.
        centre: [3] Angstrom; axis: [3] unit n-fold axis; axis2: [3] unit two-fold axis
            perpendicular to ``axis`` (Dn only, else None).
        score: the map's self-correlation under the group's rotations (their minimum;
            NaN when not measured); found: whether axis and centre were found from the map.
        scores: self-correlation per order tried by ``auto`` (order -> score).
    """

    kind: str
    order: int
    centre: np.ndarray
    axis: np.ndarray
    axis2: np.ndarray | None = None
    score: float = float("nan")
    found: bool = False
    scores: dict[int, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.kind}{self.order}"

    @property
    def n_operators(self) -> int:
        return self.order * (2 if self.kind == "D" else 1)

    def operators(self) -> np.ndarray:
        """[G, 3, 3] rotation matrices, the identity first."""
        return symmetry_operators(self.kind, self.order, self.axis, self.axis2)

    def describe(self) -> str:
        how = "found from the map" if self.found else "given"
        ax = ", ".join(f"{v:.3f}" for v in self.axis)
        c = ", ".join(f"{v:.1f}" for v in self.centre)
        sc = "" if not math.isfinite(self.score) else f", self-correlation {self.score:.3f}"
        return f"{self.name} about axis ({ax}) through ({c}) A ({how}{sc})"

    def as_dict(self) -> dict:
        return {"symmetry": self.name, "axis": self.axis.tolist(), "centre": self.centre.tolist(),
                "axis2": None if self.axis2 is None else self.axis2.tolist(),
                "self_correlation": self.score, "found_from_map": self.found,
                "scores_by_order": {str(k): v for k, v in self.scores.items()}}


def parse_symmetry(spec: str) -> tuple[str, int | None]:
    """"C4" -> ("C", 4); "D2" -> ("D", 2); "auto" -> ("auto", None)."""
    if isinstance(spec, str) and spec.strip().lower() == "auto":
        return "auto", None
    m = _SPEC.match(spec) if isinstance(spec, str) else None
    if not m or not 1 <= int(m.group(2)) <= 60:
        raise DifffitInputError(f"symmetry must be Cn, Dn (n = 1..60) or auto, got {spec!r}")
    return m.group(1).upper(), int(m.group(2))


def _unit(v, what: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.shape != (3,) or not np.isfinite(a).all() or np.linalg.norm(a) < 1e-9:
        raise DifffitInputError(f"symmetry {what} must be three finite numbers, not all 0; got {v!r}")
    return a / np.linalg.norm(a)


def axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """[3, 3] rotation by ``angle`` radians about the unit ``axis`` (right-handed)."""
    x, y, z = axis
    c, s = math.cos(angle), math.sin(angle)
    K = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + s * K + (1 - c) * K @ K


def _perpendicular(axis: np.ndarray) -> np.ndarray:
    helper = np.eye(3)[int(np.argmin(np.abs(axis)))]
    p = np.cross(axis, helper)
    return p / np.linalg.norm(p)


def symmetry_operators(kind: str, order: int, axis, axis2=None) -> np.ndarray:
    """[G, 3, 3] rotations of Cn (G = n) or Dn (G = 2n) about ``axis`` (the identity first)."""
    axis = _unit(axis, "axis")
    ops = [axis_rotation(axis, 2 * math.pi * k / order) for k in range(order)]
    if kind == "D":
        a2 = _perpendicular(axis) if axis2 is None else _unit(axis2, "second axis")
        flip = axis_rotation(a2, math.pi)
        ops += [G @ flip for G in ops[:order]]
    return np.stack(ops)


def expand_pose(sym: Symmetry, rotation: np.ndarray, translation: np.ndarray
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The images (G R, G (t - c) + c) of one placement (x -> R x + t), the identity first."""
    c = sym.centre
    return [(G @ rotation, G @ (translation - c) + c) for G in sym.operators()]


# ----------------------------------------------------------------------------------------
# Finding the axis and centre from the map
# ----------------------------------------------------------------------------------------


@dataclass
class _Grid:
    data: np.ndarray      # [nz, ny, nx] resampled map, 0 below the contour
    origin: np.ndarray    # [3] x, y, z of voxel (0, 0, 0)
    steps: np.ndarray     # [3] x, y, z voxel size

    @property
    def step(self) -> float:
        return float(self.steps.max())


def _coarse(dmap: DensityMap, threshold: float, max_dim: int = 48) -> _Grid:
    """The map above the contour (0 elsewhere) on a grid of at most ``max_dim`` voxels per
    edge: the search rotates it many times."""
    vs = np.asarray(dmap.voxel_size, dtype=np.float64)
    shape = np.array(dmap.data.shape[::-1])                                   # x, y, z
    step = max(float(vs.max()), float((shape * vs).max()) / max_dim)
    d = np.where(dmap.data > threshold, dmap.data - threshold, 0).astype(np.float32)
    out = np.maximum(np.round(shape * vs / step).astype(int), 2)
    if np.array_equal(out, shape):
        return _Grid(d, np.asarray(dmap.origin, dtype=np.float64), vs)
    d = ndimage.zoom(d, (out / shape)[::-1], order=1, grid_mode=False)
    # zoom maps the first and last voxel centres onto each other: the spacing follows.
    steps = (shape - 1) * vs / (np.array(d.shape[::-1]) - 1)
    return _Grid(d, np.asarray(dmap.origin, dtype=np.float64), steps)


def self_correlation(grid: _Grid, centre: np.ndarray, G: np.ndarray) -> float:
    """Correlation of the map with itself rotated by G about ``centre`` (voxels where
    either is non-zero)."""
    # Output voxel p (world x = o + S p) reads the input at G^T (x - c) + c, i.e. at index
    # S^-1 G^T S p + S^-1 (G^T (o - c) + c - o); in (z, y, x) index order.
    S, o, c = grid.steps, grid.origin, np.asarray(centre, dtype=np.float64)
    M = (G.T * S[None, :]) / S[:, None]
    off = (G.T @ (o - c) + c - o) / S
    rot = ndimage.affine_transform(grid.data, M[::-1, ::-1], offset=off[::-1], order=1, cval=0.0)
    a, b = grid.data.ravel(), rot.ravel()
    m = (a > 0) | (b > 0)
    a, b = a[m] - a[m].mean(), b[m] - b[m].mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def _cn_score(grid: _Grid, centre, axis, n: int) -> float:
    """The lowest self-correlation over the n-1 non-trivial rotations of Cn."""
    ks = range(1, n // 2 + 1)  # k and n-k give the same correlation (inverse rotations)
    return min(self_correlation(grid, centre, axis_rotation(axis, 2 * math.pi * k / n)) for k in ks)


def _cone(axis: np.ndarray, angle_deg: float, n: int = 8) -> list[np.ndarray]:
    """``axis`` and n directions tilted from it by ``angle_deg``."""
    p1 = _perpendicular(axis)
    p2 = np.cross(axis, p1)
    a = math.radians(angle_deg)
    out = [axis]
    for k in range(n):
        phi = 2 * math.pi * k / n
        v = math.cos(a) * axis + math.sin(a) * (math.cos(phi) * p1 + math.sin(phi) * p2)
        out.append(v / np.linalg.norm(v))
    return out


def _refine_axis(grid, centre, axis, n, tilts=(8.0, 4.0, 2.0, 1.0)) -> tuple[np.ndarray, float]:
    best, best_s = axis, self_correlation(grid, centre, axis_rotation(axis, 2 * math.pi / n))
    for tilt in tilts:
        for v in _cone(best, tilt)[1:]:
            s = self_correlation(grid, centre, axis_rotation(v, 2 * math.pi / n))
            if s > best_s:
                best, best_s = v, s
    return best, _cn_score(grid, centre, best, n)


def _refine_centre(grid, centre, axis, n, steps) -> np.ndarray:
    """Move the centre in the plane perpendicular to the axis (moving along it changes
    nothing), by each of ``steps`` (Angstrom) in turn while that improves the correlation."""
    G = axis_rotation(axis, 2 * math.pi / n)
    p1 = _perpendicular(axis)
    dirs = [p1, np.cross(axis, p1)]
    best, best_s = centre, self_correlation(grid, centre, G)
    for step in steps:
        for _ in range(6):
            trial = [(self_correlation(grid, best + sgn * step * d, G), tuple(best + sgn * step * d))
                     for d in dirs for sgn in (1, -1)]
            s, c = max(trial)
            if s <= best_s + 1e-6:
                break
            best, best_s = np.array(c), s
    return best


def find_symmetry(dmap: DensityMap, threshold: float, spec: str = "auto", axis=None,
                  centre=None, min_score: float = 0.6) -> Symmetry:
    """The symmetry of a map: axis and centre given, or found from the map.

    Args:
        dmap: the map; threshold: its contour (the density above it is compared).
        spec: "Cn", "Dn" or "auto" (orders 2..12, C or D).
        axis: [3] the n-fold axis (None: found); centre: [3] Angstrom (None: found).
        min_score: ``auto`` takes the highest order whose self-correlation reaches it.

    Returns:
        Symmetry with the self-correlation of its rotations as ``score``.

    Raises:
        DifffitInputError: bad spec, or ``auto`` found no symmetry reaching ``min_score``.
    """
    kind, order = parse_symmetry(spec)
    grid = _coarse(dmap, threshold)
    if centre is None:
        w = grid.data
        idx = np.indices(w.shape).reshape(3, -1)[::-1].T  # [V, 3] x, y, z
        c = (idx * w.reshape(-1, 1)).sum(0) / max(float(w.sum()), 1e-30)
        c0 = grid.origin + c * grid.steps
    else:
        c0 = np.asarray(centre, dtype=np.float64).reshape(3)
    if axis is not None:
        axes = [_unit(axis, "axis")]
    else:
        w = grid.data.reshape(-1)
        idx = np.indices(grid.data.shape).reshape(3, -1)[::-1].T * grid.steps + grid.origin
        m = w > 0
        X = idx[m] - c0
        cov = (X * w[m, None]).T @ X
        axes = list(np.linalg.eigh(cov)[1].T)
    orders = range(2, MAX_ORDER + 1) if kind == "auto" else [order]
    if order == 1:
        return Symmetry(kind, 1, c0, axes[0], None, 1.0, axis is None or centre is None)
    scores: dict[int, float] = {}
    best = None
    for n in orders:
        for a in axes:
            s = _cn_score(grid, c0, a, n)
            scores[n] = max(scores.get(n, -1.0), s)
            if best is None or (n, s) > (best[0], best[2]) and (kind != "auto" or s >= min_score):
                if kind != "auto" or s >= min_score or best is None:
                    best = (n, a, s)
    n, a, s = best
    if kind == "auto" and s < min_score:
        raise DifffitInputError(
            f"symmetry auto: no rotation axis found: the best self-correlation is {max(scores.values()):.2f} "
            f"(C{max(scores, key=scores.get)}), below {min_score:g}; give the symmetry (C4) and "
            f"its axis and centre")
    if axis is None:
        a, s = _refine_axis(grid, c0, a, n)
    if centre is None:
        c0 = _refine_centre(grid, c0, a, n, (2 * grid.step, grid.step, 0.5 * grid.step))
        if axis is None:
            a, s = _refine_axis(grid, c0, a, n)
        # The search grid is coarse (48 voxels a side): settle centre and axis on a finer one.
        fine = _coarse(dmap, threshold, max_dim=72)
        if fine.step < grid.step:
            c0 = _refine_centre(fine, c0, a, n, (0.5 * fine.step, 0.25 * fine.step))
            if axis is None:
                a, _ = _refine_axis(fine, c0, a, n, tilts=(0.5, 0.25))
    s = _cn_score(grid, c0, a, n)
    a2 = None
    out_kind = "C" if kind == "auto" else kind
    if kind in ("D", "auto"):
        p1 = _perpendicular(a)
        p2 = np.cross(a, p1)
        best2 = (-1.0, p1)
        for deg in np.arange(0.0, 180.0, 3.0):
            phi = math.radians(deg)
            v = math.cos(phi) * p1 + math.sin(phi) * p2
            s2 = self_correlation(grid, c0, axis_rotation(v, math.pi))
            best2 = max(best2, (s2, v), key=lambda x: x[0])
        if kind == "D" or best2[0] >= min_score:
            out_kind, a2 = "D", best2[1]
            s = min(s, best2[0])
    return Symmetry(out_kind, n, c0, a, a2, float(s), axis is None or centre is None, scores)


def resolve_symmetry(dmap, threshold: float, symmetry, axis=None, centre=None) -> Symmetry | None:
    """A Symmetry from ``"Cn"`` / ``"Dn"`` / ``"auto"`` (or a Symmetry, or None), its axis
    and centre given or found from the map; a given one is measured on the map too."""
    if symmetry is None or isinstance(symmetry, Symmetry):
        return symmetry
    kind, order = parse_symmetry(symmetry)
    if axis is not None and centre is not None and kind != "auto":
        a = _unit(axis, "axis")
        c = np.asarray(centre, dtype=np.float64).reshape(3)
        s = self_correlation(_coarse(dmap, threshold), c, axis_rotation(a, 2 * math.pi / order)) \
            if order > 1 else 1.0
        return Symmetry(kind, order, c, a, None, float(s), False)
    return find_symmetry(dmap, threshold, symmetry, axis=axis, centre=centre)


def expand_placements(placements: list, structures: list, sym: Symmetry, dmap: DensityMap,
                      resolution: float, threshold: float, clash_distance: float,
                      max_clash: float, rank_by: str = "cam") -> tuple[list, list[str]]:
    """Every placement of an asymmetric unit and its symmetric images, each image checked
    for a CA clash with those kept before it and measured as ChimeraX would.

    Args:
        placements: CompositePlacements of the asymmetric unit (copy numbers 1..).
        structures: the input structures (their index is ``structure_index``).

    Returns:
        (the placements followed by their kept images, numbered on as further copies of
        their structure; one line per image left out for a clash).
    """
    from .copies import Occupancy
    from .metrics import chimerax_metrics
    from .results import CompositePlacement
    from .structures import trace_mask

    traces = [s.coords[trace_mask(s)] for s in structures]
    occ = Occupancy()
    counts = [0] * len(structures)
    for p in placements:
        occ.add(f"{p.structure_name} copy {p.copy}", traces[p.structure_index] @ p.rotation.T
                + p.translation)
        counts[p.structure_index] = max(counts[p.structure_index], p.copy)
    images, dropped = [], []
    for p in placements:
        for g, (R, T) in enumerate(expand_pose(sym, p.rotation, p.translation)[1:], start=2):
            xyz = traces[p.structure_index] @ R.T + T
            frac, who = occ.worst(xyz, clash_distance)
            if frac > max_clash:
                dropped.append(f"{p.structure_name} copy {p.copy} image {g} of {sym.name} clashes "
                               f"with {who} ({frac:.0%} of its CA atoms)")
                continue
            m = p.structure_index
            counts[m] += 1
            occ.add(f"{p.structure_name} copy {counts[m]}", xyz)
            c = structures[m].centroid
            images.append(CompositePlacement(
                rotation=R, translation=T, centre=R @ c + T, score=float("nan"), hits=p.hits,
                metrics={"symmetry_image": float(g)}, structure_index=m,
                structure_name=p.structure_name, copy=counts[m], round=p.round,
                chains=[f"{ch}_{m + 1}_{counts[m]}" for ch in structures[m].chains]))
    if images:
        cx = chimerax_metrics(dmap, structures, np.stack([p.rotation for p in images]),
                              np.stack([p.translation for p in images]),
                              np.array([p.structure_index for p in images]), resolution, threshold)
        for k, p in enumerate(images):
            p.metrics.update({key: float(v[k]) for key, v in cx.items()})
            p.score = p.metrics.get(rank_by, float("nan"))
    return placements + images, dropped
