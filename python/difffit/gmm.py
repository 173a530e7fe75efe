"""Gaussian mixtures: a structure or a map as a sum of N isotropic Gaussians.

After the Gaussian-mixture representation of Chen, Schmid and Chiu (EMAN2 ``e2gmm``):
each Gaussian j has a centre c_j (Angstrom), a width sigma_j (Angstrom) and an amplitude
A_j, its integrated mass (electrons for a structure, map units x A^3 for a map), so the
mixture's density is

    rho(x) = sum_j A_j (2 pi sigma_j^2)^(-3/2) exp(-|x - c_j|^2 / (2 sigma_j^2)).

* :func:`from_structure`: one Gaussian per heavy atom, or a k-means of the heavy atoms
  (weighted by atomic number) into N groups; amplitude = the group's electrons, width^2 =
  the resolution's molmap width^2 plus the group's spread (moment matching).
* :func:`difffit.gmm_fit.from_map`: k-means of the voxels above the contour weighted by
  their density, constant amplitude and width, then Adam on every centre, width and
  amplitude to match the map; the fit's correlation is kept.
* :func:`choose_n`: N such that the mean nearest-neighbour distance between centres
  matches the target resolution (one Gaussian per heavy atom at high resolution).
* :func:`coarsen`: a hierarchical, coarser mixture: k-means of the centres (weighted by
  amplitude) into k groups, each merged by moment matching.
* :func:`density`: the plain-PyTorch reference of rho at points (differentiable).
* :func:`write_mixture` / :func:`read_mixture`: JSON (every number) or a PDB of
  pseudo-atoms (B = 8 pi^2 sigma^2, occupancy = A / max A, the scale in a REMARK);
  :func:`write_mixtures` writes several files all or none.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from .errors import DifffitInputError
from .files import jsonable, refuse_existing, umask_mode
from .maps import DensityMap
from .simulate import sigma_for
from .structures import Structure, simulation_mask

__all__ = ["Mixture", "kmeans", "choose_n", "from_structure", "coarsen",
           "hierarchy", "density", "render", "write_mixture", "write_mixtures", "read_mixture"]

_FORMAT = "difffit-gmm/1"
# Mean nearest-neighbour distance of N points spread uniformly through a volume V is
# about 0.554 (V / N)^(1/3) (Chandrasekhar 1943); used to guess N before checking it.
_NN_CONSTANT = 0.554


@dataclass
class Mixture:
    """N isotropic Gaussians.

    Attributes:
        centres: [N, 3] float64 world xyz (Angstrom).
        sigmas: [N] float64 widths (Angstrom).
        amplitudes: [N] float64 integrated masses (electrons, or map units x A^3).
        name: what it was built from (a structure's or a map's name).
        source: "structure" or "map".
        resolution: the resolution it was built for (Angstrom), or None.
        info: how it was built (N rule, k-means, the map fit's correlation, ...).
    """

    centres: np.ndarray
    sigmas: np.ndarray
    amplitudes: np.ndarray
    name: str = "mixture"
    source: str = "structure"
    resolution: float | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.centres = np.asarray(self.centres, dtype=np.float64).reshape(-1, 3)
        n = len(self.centres)
        self.sigmas = np.broadcast_to(np.asarray(self.sigmas, dtype=np.float64), (n,)).copy()
        self.amplitudes = np.broadcast_to(np.asarray(self.amplitudes, dtype=np.float64),
                                          (n,)).copy()
        if n == 0:
            raise DifffitInputError(f"{self.name}: a mixture needs at least one Gaussian")
        if not (np.isfinite(self.centres).all() and np.isfinite(self.sigmas).all()
                and np.isfinite(self.amplitudes).all()):
            raise DifffitInputError(f"{self.name}: mixture holds non-finite numbers")
        if (self.sigmas <= 0).any():
            raise DifffitInputError(f"{self.name}: every Gaussian width must be positive")

    def __len__(self) -> int:
        return len(self.centres)

    @property
    def centroid(self) -> np.ndarray:
        """[3] amplitude-weighted mean of the centres."""
        w = np.abs(self.amplitudes)
        return (self.centres * w[:, None]).sum(0) / max(w.sum(), 1e-300)

    def mean_nn_distance(self) -> float:
        return mean_nn_distance(self.centres)

    def transformed(self, rotation: np.ndarray, translation: np.ndarray) -> "Mixture":
        """The mixture moved by x -> R x + t (widths are isotropic, so unchanged)."""
        R = np.asarray(rotation, dtype=np.float64)
        t = np.asarray(translation, dtype=np.float64)
        return Mixture(self.centres @ R.T + t, self.sigmas, self.amplitudes, self.name,
                       self.source, self.resolution, dict(self.info))


# ----------------------------------------------------------------------------- k-means


def kmeans(points: np.ndarray, k: int, weights: np.ndarray | None = None, iters: int = 50,
           seed: int = 0, init: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted k-means (Lloyd) with k-means++ seeding, deterministic for a seed.

    Args:
        points: [P, 3]; weights: [P] non-negative (None: all 1); k <= P.
        init: [k, 3] starting centres instead of k-means++ (e.g. a chain cut into
            pieces, already close to the answer: a few iterations suffice).

    Returns:
        (centres [k, 3] weighted means, labels [P] int64). A cluster that empties is
        re-seeded at the points farthest from their centres.
    """
    x = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    P = len(x)
    w = np.ones(P) if weights is None else np.clip(np.asarray(weights, dtype=np.float64), 0, None)
    if not 1 <= k <= P:
        raise DifffitInputError(f"k-means: k must be between 1 and the {P} points, got {k}")
    if k == P:
        return x.copy(), np.arange(P)
    rng = np.random.default_rng(int(seed))
    # k-means++ (D^2 x weight sampling).
    def draw(p: np.ndarray) -> int:  # one index with probability p / sum p
        cum = np.cumsum(p)
        return min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), P - 1)

    if init is not None:
        c = np.array(init, dtype=np.float64).reshape(k, 3)
    else:
        c = np.empty((k, 3))
        c[0] = x[draw(w + 1e-12)]
        d2 = np.einsum("ij,ij->i", x - c[0], x - c[0])
        for j in range(1, k):
            c[j] = x[draw(d2 * w + 1e-300)]
            e = x - c[j]
            np.minimum(d2, np.einsum("ij,ij->i", e, e), out=d2)
    labels = np.full(P, -1)
    for _ in range(iters):
        dist, new = _nearest(c, x)
        mass = np.bincount(new, w, minlength=k)
        s = np.stack([np.bincount(new, w * x[:, a], minlength=k) for a in range(3)], 1)
        empty = mass <= 0
        cn = np.where(empty[:, None], c, s / np.maximum(mass, 1e-300)[:, None])
        if empty.any():  # re-seed at the worst-served points
            cn[empty] = x[np.argsort(-dist)[: int(empty.sum())]]
        done = np.array_equal(new, labels)
        c, labels = cn, new
        if done:
            break
    return c, labels


def _nearest(c: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to and index of the nearest centre c [k, 3] of each point x [P, 3]: dense
    for small problems (a tree costs more to build than it saves there)."""
    if len(c) * len(x) > 2_000_000:
        return cKDTree(c).query(x)
    d2 = (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]
    idx = d2.argmin(1)
    return np.sqrt(np.maximum(d2[np.arange(len(x)), idx], 0.0)), idx


def mean_nn_distance(points: np.ndarray) -> float:
    """Mean distance from each point to its nearest other point (0 for one point)."""
    x = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(x) < 2:
        return 0.0
    d, _ = cKDTree(x).query(x, k=2)
    return float(d[:, 1].mean())


def choose_n(points: np.ndarray, resolution: float, weights: np.ndarray | None = None,
             seed: int = 0) -> int:
    """N Gaussians whose centres' mean nearest-neighbour distance matches ``resolution``.

    Starts from the uniform-density estimate N = P (d_P / resolution)^3 (d_P: the points'
    own mean nearest-neighbour distance), then corrects it with k-means twice (the
    distance scales as N^(-1/3)). At or below the points' own spacing: one per point.

    Args:
        points: [P, 3] (atoms, or voxels above a contour); resolution: Angstrom.
    """
    P = len(points)
    d0 = mean_nn_distance(points)
    if P <= 1 or d0 >= resolution:
        return max(P, 1)
    n = int(np.clip(round(P * (d0 / resolution) ** 3), 1, P))
    for _ in range(2):
        if n < 2:
            break
        c, _ = kmeans(points, n, weights, iters=20, seed=seed)
        d = mean_nn_distance(c)
        if d <= 0:
            break
        n = int(np.clip(round(n * (d / resolution) ** 3), 1, P))
    return n


# ----------------------------------------------------------------------------- builders


def _merge(centres: np.ndarray, sigmas2: np.ndarray, amps: np.ndarray, labels: np.ndarray,
           k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moment-matched merge of Gaussians (or points, sigma 0) by label: mass, mean and
    isotropic variance (the mean of sigma^2 + |c - C|^2 / 3) of each group."""
    w = np.abs(amps)
    mass = np.bincount(labels, w, minlength=k)
    amp = np.bincount(labels, amps, minlength=k)
    C = np.stack([np.bincount(labels, w * centres[:, a], minlength=k) for a in range(3)], 1)
    C /= np.maximum(mass, 1e-300)[:, None]
    spread = sigmas2 + ((centres - C[labels]) ** 2).sum(1) / 3.0
    var = np.bincount(labels, w * spread, minlength=k) / np.maximum(mass, 1e-300)
    return C, var, amp


def from_structure(structure: Structure, resolution: float, n: int | None = None,
                   seed: int = 0, spread_only: bool = False) -> Mixture:
    """A mixture of a structure's atoms (every atom but waters; hydrogens excluded).

    Args:
        structure: the atoms.
        resolution: Angstrom; sets N (:func:`choose_n`) when ``n`` is None, and each
            Gaussian's width: sqrt(sigma_res^2 + the group's spread), sigma_res =
            0.225 x resolution (ChimeraX molmap), so the mixture approximates molmap.
        n: number of Gaussians (None: the nearest-neighbour rule); at least the atoms'
            count gives one Gaussian per atom.
        spread_only: widths from the groups' spread alone (no resolution term): the
            atoms as point masses, what the search's atom score sees.

    Returns:
        Mixture with amplitudes in electrons (atomic numbers summed per group).
    """
    if not isinstance(structure, Structure):
        raise DifffitInputError(f"a mixture is built from a difffit Structure, got "
                                f"{type(structure).__name__}")
    sel = simulation_mask(structure) & (structure.atomic_numbers > 1)
    xyz = structure.coords[sel]
    z = structure.atomic_numbers[sel].astype(np.float64)
    if len(xyz) == 0:
        raise DifffitInputError(f"{structure.name}: no heavy atom to build a mixture from")
    rule = "nearest-neighbour" if n is None else "given"
    if n is None:
        n = choose_n(xyz, resolution, z, seed)
    n = int(min(max(int(n), 1), len(xyz)))
    if n == len(xyz):
        C, var, amp = xyz.copy(), np.zeros(n), z
    else:
        _, labels = kmeans(xyz, n, z, seed=seed)
        C, var, amp = _merge(xyz, np.zeros(len(xyz)), z, labels, n)
    s_res = 0.0 if spread_only else sigma_for(resolution)
    # A lone atom has no spread: give it a floor (a tenth of an Angstrom) so its width stays
    # positive when the resolution term is off.
    sig = np.sqrt(np.maximum(var + s_res ** 2, 0.01))
    return Mixture(C, sig, amp, structure.name, "structure", float(resolution),
                   {"n_rule": rule,
                    "atoms": int(len(xyz)), "seed": int(seed), "spread_only": bool(spread_only),
                    "mean_nn_distance": mean_nn_distance(C)})


def map_points(dmap: DensityMap, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """World xyz [P, 3] and values [P] of the voxels above the contour."""
    data = np.asarray(dmap.data)
    idx = np.argwhere(data > threshold)                    # [P, 3] as (z, y, x)
    if len(idx) == 0:
        raise DifffitInputError(f"{dmap.path or 'map'}: no voxel above the contour "
                                f"{threshold:.6g}; give a lower threshold")
    xyz = dmap.origin + idx[:, ::-1] * dmap.voxel_size
    return xyz, data[tuple(idx.T)].astype(np.float64)


def coarsen(mixture: Mixture, k: int, seed: int = 0) -> Mixture:
    """A coarser mixture: k-means of the centres (weighted by amplitude) into k groups,
    each group merged by moment matching (mass, mean, isotropic variance)."""
    k = int(min(max(int(k), 1), len(mixture)))
    _, labels = kmeans(mixture.centres, k, np.abs(mixture.amplitudes), seed=seed)
    C, var, amp = _merge(mixture.centres, mixture.sigmas ** 2, mixture.amplitudes, labels, k)
    info = {**mixture.info, "coarsened_from": len(mixture), "seed": int(seed)}
    return Mixture(C, np.sqrt(var), amp, mixture.name, mixture.source, mixture.resolution, info)


def hierarchy(mixture: Mixture, sizes: Sequence[int], seed: int = 0) -> list[Mixture]:
    """Successively coarser mixtures, each a k-means split of the previous one.

    Args:
        sizes: Gaussians per level, largest first (e.g. (200, 50, 12)).
    """
    out, cur = [], mixture
    for k in sorted({int(s) for s in sizes}, reverse=True):
        cur = coarsen(cur, k, seed)
        out.append(cur)
    return out


# ----------------------------------------------------------------------------- density


def density(centres: Tensor, sigmas: Tensor, amplitudes: Tensor, points: Tensor,
            chunk: int = 65536) -> Tensor:
    """The mixture's density at points, plain PyTorch (differentiable; the reference).

    Args:
        centres: [N, 3]; sigmas: [N]; amplitudes: [N]; points: [P, 3] (one dtype).

    Returns:
        [P] sum_j A_j (2 pi s_j^2)^(-3/2) exp(-|p - c_j|^2 / (2 s_j^2)).
    """
    norm = amplitudes * (2 * math.pi * sigmas ** 2) ** -1.5           # [N]
    inv = 0.5 / sigmas ** 2                                            # [N]
    out = []
    cc = centres.pow(2).sum(1)                                         # [N]
    for a in range(0, points.shape[0], chunk):
        p = points[a:a + chunk]
        # |p - c|^2 = |p|^2 + |c|^2 - 2 p.c: one matrix product, no [p, N, 3] tensor.
        d2 = (p.pow(2).sum(1, keepdim=True) + cc - 2.0 * p @ centres.T).clamp_min(0)  # [p, N]
        out.append(torch.exp(-d2 * inv) @ norm)
    return torch.cat(out) if out else points.new_zeros(0)


def render(mixture: Mixture, like: DensityMap) -> DensityMap:
    """The mixture's density on a map's grid (a new DensityMap, float32)."""
    D, H, W = like.data.shape
    zz, yy, xx = np.meshgrid(np.arange(D), np.arange(H), np.arange(W), indexing="ij")
    xyz = like.origin + np.stack([xx, yy, zz], -1).reshape(-1, 3) * like.voxel_size
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    rho = density(t(mixture.centres), t(mixture.sigmas), t(mixture.amplitudes), t(xyz), 16384)
    return like.copy_with(rho.reshape(D, H, W).numpy().astype(np.float32))


# ----------------------------------------------------------------------------- files


def _as_out_path(path, force: bool) -> Path:
    p = Path(path)
    if p.exists() and not p.is_file():
        raise DifffitInputError(f"{p}: a folder (or another non-file) is in the mixture "
                                f"file's place; choose another name")
    refuse_existing(p, force)
    if not p.parent.is_dir():
        raise DifffitInputError(f"{p}: folder {p.parent} does not exist")
    return p


def write_mixture(mixture: Mixture, path, force: bool = False) -> Path:
    """Write a mixture as JSON (``.json``: every number, full precision) or as a PDB of
    pseudo-atoms (``.pdb``: one HETATM ``GMM`` per Gaussian, B = 8 pi^2 sigma^2,
    occupancy = A / max |A|, the scale and resolution in REMARK lines), atomically;
    never over an existing file unless ``force``."""
    return write_mixtures([(mixture, path)], force)[0]


def write_mixtures(items: Sequence[tuple[Mixture, str | Path]], force: bool = False
                   ) -> list[Path]:
    """Write several mixtures (e.g. a mixture and its coarser levels) all or none: every
    path is checked and every file's text made (a Gaussian that does not fit the PDB
    columns raises here) before any is written; the files go to temporary names in their
    folders and are renamed into place only once all of them are written.

    Args:
        items: (mixture, path) pairs, each written as :func:`write_mixture` does.
        force: replace existing files (otherwise an existing one is refused, naming it).

    Returns:
        The paths written, in order.

    Raises:
        DifffitInputError: a bad suffix or folder, or a mixture a PDB file cannot hold
            (naming the file); nothing is written then.
        FileExistsError: a file exists and ``force`` is False; nothing is written.
        OSError: a file cannot be written; none of them is left behind.
    """
    paths = [_as_out_path(p, force) for _, p in items]
    seen = [p.resolve() for p in paths]
    if len(set(seen)) < len(seen):
        raise DifffitInputError(f"{paths[0]}: two mixtures would be written to one file "
                                f"({', '.join(str(p) for p in paths)})")
    texts = [_mixture_text(m, p) for (m, _), p in zip(items, paths)]
    temps: list[str] = []
    try:
        for p, text in zip(paths, texts):
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
            temps.append(tmp)
            os.chmod(tmp, umask_mode())
            with os.fdopen(fd, "wb") as fh:
                fh.write(text.encode())
        placed: list[Path] = []
        try:
            for p, tmp in zip(paths, temps):
                existed = p.exists()
                os.replace(tmp, p)
                if not existed:
                    placed.append(p)
        except BaseException:
            for p in placed:  # the renames are all or none, as far as it lies with us
                p.unlink(missing_ok=True)
            raise
    finally:
        for tmp in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return paths


def _mixture_text(mixture: Mixture, p: Path) -> str:
    """The file ``p`` of a mixture (JSON or PDB by its suffix), checked: a Gaussian that
    does not fit the PDB columns raises, naming the file and the Gaussian."""
    name = p.name.lower()
    if name.endswith(".json"):
        doc = {"format": _FORMAT, "name": mixture.name, "source": mixture.source,
               "resolution": mixture.resolution, "n": len(mixture), "info": mixture.info,
               "centres": mixture.centres.tolist(), "sigmas": mixture.sigmas.tolist(),
               "amplitudes": mixture.amplitudes.tolist()}
        return json.dumps(jsonable(doc), indent=1) + "\n"
    if not name.endswith(".pdb"):
        raise DifffitInputError(f"{p}: a mixture is written as .json or .pdb")
    if len(mixture) > 99999:
        raise DifffitInputError(f"{p}: {len(mixture)} Gaussians do not fit a PDB file; "
                                f"write .json")
    scale = float(np.abs(mixture.amplitudes).max()) or 1.0
    res = "none" if mixture.resolution is None else f"{mixture.resolution:.6g}"
    lines = [f"REMARK   1 DIFFFIT GAUSSIAN MIXTURE {mixture.name[:40]}",
             f"REMARK   1 SOURCE {mixture.source} RESOLUTION {res} N {len(mixture)}",
             f"REMARK   1 AMPLITUDE_SCALE {scale:.10g}",
             "REMARK   1 OCCUPANCY = AMPLITUDE / SCALE; B = 8 PI^2 SIGMA^2"]
    for j, (c, s, a) in enumerate(zip(mixture.centres, mixture.sigmas, mixture.amplitudes)):
        b = 8 * math.pi ** 2 * s ** 2
        if not (-999.99 <= a / scale <= 999.99 and b < 9999.9 and np.abs(c).max() < 9999):
            why = (f"width {s:.3g} A gives B = {b:.6g}, above the column's 9999.9"
                   if b >= 9999.9 else "its centre or amplitude overflows the columns")
            raise DifffitInputError(f"{p}: Gaussian {j + 1} of {len(mixture)} does not fit "
                                    f"PDB columns ({why}); write .json")
        lines.append(f"HETATM{(j + 1) % 100000:5d}  G   GMM G{(j + 1) % 10000:4d}    "
                     f"{c[0]:8.3f}{c[1]:8.3f}{c[2]:8.3f}{a / scale:6.2f}{b:6.1f}"
                     f"           C")
    lines.append("END")
    return "\n".join(lines) + "\n"


def read_mixture(path) -> Mixture:
    """Read a mixture written by :func:`write_mixture` (.json or .pdb).

    Raises:
        DifffitInputError: a missing file, or one that holds no mixture (naming it).
    """
    p = Path(path)
    if not p.is_file():
        raise DifffitInputError(f"{p}: mixture file does not exist")
    text = p.read_text(errors="replace")
    if p.name.lower().endswith(".json"):
        try:
            doc = json.loads(text)
            if doc.get("format") != _FORMAT:
                raise ValueError(f"format is {doc.get('format')!r}, not {_FORMAT}")
            return Mixture(doc["centres"], doc["sigmas"], doc["amplitudes"], doc["name"],
                           doc["source"], doc["resolution"], doc.get("info") or {})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DifffitInputError(f"{p}: not a difffit mixture ({exc})") from None
    scale, res, name, source = 1.0, None, p.stem, "structure"
    C, S, A = [], [], []
    for line in text.splitlines():
        f = line.split()
        if line.startswith("REMARK   1 AMPLITUDE_SCALE"):
            scale = float(f[3])
        elif line.startswith("REMARK   1 SOURCE"):
            source = f[3]
            res = None if f[5] == "none" else float(f[5])
        elif line.startswith("REMARK   1 DIFFFIT GAUSSIAN MIXTURE") and len(f) > 5:
            name = line[36:].strip()
        elif line.startswith(("HETATM", "ATOM  ")):
            try:
                C.append([float(line[30:38]), float(line[38:46]), float(line[46:54])])
                A.append(float(line[54:60]) * scale)
                S.append(math.sqrt(max(float(line[60:66]), 1e-6) / (8 * math.pi ** 2)))
            except ValueError:
                raise DifffitInputError(f"{p}: unreadable atom line {line!r}") from None
    if not C:
        raise DifffitInputError(f"{p}: holds no pseudo-atom")
    return Mixture(C, S, A, name, source, res, {"read_from": str(p)})
