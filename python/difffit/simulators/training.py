"""Training the learned simulator from map/model pairs: the pairs file, the curation checks
(struc2mapGAN's rules, each reported with the reason a pair was dropped), cube sampling with
augmentation, and the adversarial + SmoothL1 training loop with resumable checkpoints.

A pairs file is CSV with a header: ``map``, ``model``, ``resolution`` (Angstrom) and,
optionally, ``voxel_size`` (overrides the map header) and ``split`` (``train`` or ``val``).
Relative paths are relative to the CSV's folder.
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import gemmi
import numpy as np
import torch
from torch.nn import functional as F

from ..errors import DifffitInputError
from ..maps import read_map
from ..simulate import splat_atoms
from ..structures import read_structure, simulation_mask
from ..simulate import enclosing_level
from .learned import (DEFAULT_CONFIG, base_sigma, build_discriminator, build_generator,
                      load_checkpoint, molmap_input, save_checkpoint)
from .unet import gaussian_blur
from .scores import map_scores
from ..progress import progress_bar

MIN_CORRELATION = 0.65   # struc2mapGAN's curation: simulated vs experimental correlation
MAX_UNMODELLED = 0.30    # strong density (mean + 2 sd) farther than the model's envelope
MAX_IDENTITY = 0.30      # one pair per sequence cluster at 30 % identity


@dataclass
class Pair:
    name: str
    map: Path
    model: Path
    resolution: float
    voxel_size: float | None = None
    split: str | None = None


@dataclass
class PairData:
    """A prepared pair: generator input x and target y ([D, H, W] float32 in [0, 1]), the
    voxel indices of the atoms [N, 3] (z, y, x) to centre cubes on, and the checks."""
    pair: Pair
    x: np.ndarray
    y: np.ndarray
    atom_voxels: np.ndarray
    checks: dict = field(default_factory=dict)
    sequence: list = field(default_factory=list)


def read_pairs(path) -> list[Pair]:
    """The pairs of a CSV file (see the module doc); every file checked to exist."""
    p = Path(path)
    if not p.is_file():
        raise DifffitInputError(f"{p}: pairs file not found")
    with open(p, newline="") as fh:
        rows = list(csv.DictReader(fh))
    need = {"map", "model", "resolution"}
    if not rows or not need <= set(rows[0]):
        raise DifffitInputError(f"{p}: a pairs CSV needs a header with columns map, model, "
                                f"resolution (optional: voxel_size, split) and one row per pair")
    pairs, names = [], set()
    for k, r in enumerate(rows, start=2):
        def path_of(col):
            q = Path(r[col].strip())
            q = q if q.is_absolute() else p.parent / q
            if not q.is_file():
                raise DifffitInputError(f"{p} line {k}: {col} file {q} not found")
            return q
        try:
            res = float(r["resolution"])
            vox = float(r["voxel_size"]) if (r.get("voxel_size") or "").strip() else None
        except ValueError:
            raise DifffitInputError(f"{p} line {k}: resolution and voxel_size must be "
                                    f"numbers, got {r['resolution']!r}, {r.get('voxel_size')!r}") from None
        if not (res > 0 and (vox is None or vox > 0)):
            raise DifffitInputError(f"{p} line {k}: resolution and voxel_size must be positive")
        split = (r.get("split") or "").strip().lower() or None
        if split not in (None, "train", "val"):
            raise DifffitInputError(f"{p} line {k}: split must be train or val, got {split!r}")
        m = path_of("map")
        name = m.name.split(".")[0]
        while name in names:
            name += "_"
        names.add(name)
        pairs.append(Pair(name, m, path_of("model"), res, vox, split))
    return pairs


def _sequence(structure) -> tuple[list[list[str]], float, float]:
    """Residue names of each polymer chain (over 20 residues), and the protein and
    nucleic-acid fractions of the residues."""
    chains, n_aa, n_na = [], 0, 0
    for ch in structure.gemmi_structure[0]:
        names = []
        for res in ch:
            info = gemmi.find_tabulated_residue(res.name)
            if info is None:
                continue
            if info.is_amino_acid():
                n_aa += 1
                names.append(res.name)
            elif info.is_nucleic_acid():
                n_na += 1
                names.append(res.name)
        if len(names) > 20:
            chains.append(names)
    n = max(n_aa + n_na, 1)
    return chains, n_aa / n, n_na / n


def sequence_identity(a: Sequence[Sequence[str]], b: Sequence[Sequence[str]]) -> float:
    """Highest identity between a chain of ``a`` and one of ``b``: identical residues of a
    global BLOSUM62 alignment (gemmi) over the shorter chain. Unrelated chains score about
    0.2-0.29 this way, homologues (haemoglobin alpha vs beta) 0.45."""
    scoring = gemmi.AlignmentScoring("b")
    best = 0.0
    for x in a:
        for y in b:
            r = gemmi.align_string_sequences(list(x), list(y), [], scoring)
            best = max(best, r.match_count / max(1, min(len(x), len(y))))
    return best


def solvent_normalised(e: np.ndarray, solvent: np.ndarray) -> np.ndarray:
    """[D, H, W] float32 training target: the experimental map min-max normalised with the
    solvent level (the median of the ``solvent`` voxels, away from the model; the whole
    map's median when there are none) as the minimum, values below it clipped to 0. The
    paper's plain min-max target puts solvent at a map-dependent level above 0, which the
    network must then guess; every consumer here wants solvent at 0."""
    level = float(np.median(e[solvent])) if solvent.any() else float(np.median(e))
    span = float(e.max()) - level
    return (np.clip(e - level, 0.0, None) / span if span > 0 else e * 0).astype(np.float32)


def prepare_pair(pair: Pair, input_resolution: float = DEFAULT_CONFIG["input_resolution"]
                 ) -> PairData:
    """Read a pair, make the generator's input (:func:`molmap_input`) and target
    (:func:`solvent_normalised`), and measure the checks:
    ``correlation`` (molmap at the map's resolution vs the map, ChimeraX-style),
    ``unmodelled`` (fraction of strong density, above mean + 2 sd, where the molmap is
    below 2 % of its peak), ``protein`` / ``nucleic`` fractions of the residues."""
    dmap = read_map(pair.map, voxel_size=pair.voxel_size)
    s = read_structure(pair.model)
    sel = simulation_mask(s)
    xyz, z = s.coords[sel], s.atomic_numbers[sel]
    shape = dmap.data.shape
    x = molmap_input(xyz, z, dmap.origin, dmap.voxel_size, shape, input_resolution)
    e = np.asarray(dmap.data, dtype=np.float32)
    at_res = splat_atoms(xyz, z, pair.resolution, dmap.origin, dmap.voxel_size, shape)
    y = solvent_normalised(e, at_res < 0.01 * at_res.max())
    strong = e >= e.mean() + 2.0 * e.std()
    unmodelled = float((at_res[strong] < 0.02 * at_res.max()).mean()) if strong.any() else 0.0
    idx = np.round((xyz - dmap.origin) / dmap.voxel_size).astype(np.int64)[:, ::-1]
    idx = idx[np.all((idx >= 0) & (idx < np.array(shape)), axis=1)]
    seq, f_aa, f_na = _sequence(s)
    checks = {"correlation": map_scores(at_res, e)["correlation"], "unmodelled": unmodelled,
              "protein": f_aa, "nucleic": f_na, "atoms_in_box": int(len(idx)),
              "shape_xyz": list(shape[::-1]), "voxel_size": float(np.mean(dmap.voxel_size))}
    return PairData(pair, x.astype(np.float32), y, idx, checks, seq)


def curate(data: Sequence[PairData], min_correlation: float = MIN_CORRELATION,
           max_unmodelled: float = MAX_UNMODELLED, max_identity: float = MAX_IDENTITY
           ) -> tuple[list[PairData], list[dict]]:
    """struc2mapGAN's curation as checks: (kept pairs, dropped [{name, reason}]).

    Dropped: correlation below ``min_correlation``; more than ``max_unmodelled`` of the
    strong density unmodelled; mixed protein and nucleic acid (over 5 % each); no atoms in
    the box; a sequence over ``max_identity`` identical to a pair kept before it."""
    kept, dropped = [], []
    for d in data:
        c, why = d.checks, None
        if c["atoms_in_box"] == 0:
            why = "no atom of the model lies in the map's box"
        elif c["correlation"] < min_correlation:
            why = (f"model-map correlation {c['correlation']:.3f} < {min_correlation:g} "
                   f"(lower the bar with --min-correlation)")
        elif c["unmodelled"] > max_unmodelled:
            why = (f"{100 * c['unmodelled']:.0f} % of the strong density is unmodelled "
                   f"(> {100 * max_unmodelled:.0f} %)")
        elif min(c["protein"], c["nucleic"]) > 0.05:
            why = "more than one molecule type (protein and nucleic acid)"
        else:
            for k in kept:
                ident = sequence_identity(d.sequence, k.sequence)
                if ident > max_identity:
                    why = (f"a chain {100 * ident:.0f} % identical to one of {k.pair.name} "
                           f"(one pair per {100 * max_identity:.0f} % identity cluster)")
                    break
        if why:
            dropped.append({"name": d.pair.name, "reason": why})
        else:
            kept.append(d)
    return kept, dropped


def _crop(a: np.ndarray, corner: np.ndarray, cube: int, fill: float) -> np.ndarray:
    """A cube of ``a`` at ``corner`` (z, y, x), ``fill`` beyond the edges."""
    out = np.full((cube,) * 3, fill, dtype=np.float32)
    lo = np.maximum(corner, 0)
    hi = np.minimum(corner + cube, a.shape)
    if np.all(hi > lo):
        dst = tuple(slice(l - c, h - c) for l, h, c in zip(lo, hi, corner))
        out[dst] = a[tuple(slice(l, h) for l, h in zip(lo, hi))]
    return out


def sample_cubes(data: Sequence[PairData], n: int, cube: int, rng: np.random.Generator,
                 on_atoms: float = 0.75, bases: Sequence[np.ndarray] | None = None):
    """n cubes (x, y, mask) [n, cube, cube, cube] float32: a random pair each, centred on a
    random atom (fraction ``on_atoms``) or anywhere in the box; mask 0 beyond the box. With
    ``bases`` (one map per pair: the residual's base), a fourth array of their cubes."""
    xs, ys, ms, bs = [], [], [], []
    for _ in range(n):
        k = rng.integers(len(data))
        d = data[k]
        shape = np.array(d.x.shape)
        if len(d.atom_voxels) and rng.random() < on_atoms:
            centre = d.atom_voxels[rng.integers(len(d.atom_voxels))]
        else:
            centre = rng.integers(0, shape)
        corner = centre - cube // 2
        xs.append(_crop(d.x, corner, cube, 0.0))
        ys.append(_crop(d.y, corner, cube, 0.0))
        ms.append(_crop(np.ones(d.x.shape, np.float32), corner, cube, 0.0))
        if bases is not None:
            bs.append(_crop(bases[k], corner, cube, 0.0))
    out = (np.stack(xs), np.stack(ys), np.stack(ms))
    return out + (np.stack(bs),) if bases is not None else out


def _envelope_correlation(sim: np.ndarray, exp: np.ndarray) -> float:
    """ChimeraX-style correlation (about zero) over ``sim``'s 95 % envelope."""
    keep = sim >= enclosing_level(sim) if sim.max() > 0 else np.ones(sim.shape, dtype=bool)
    a, b = sim[keep].astype(np.float64), exp[keep].astype(np.float64)
    return float(a @ b / max(np.sqrt((a @ a) * (b @ b)), 1e-30))


def pair_base(d: PairData, config: dict, factor: float | None = None) -> np.ndarray:
    """The residual's base for a pair: its input blurred to a molmap at ``factor`` (default
    the config's ``base_factor``) x the pair's resolution."""
    c = dict(config) if factor is None else {**config, "base_factor": factor}
    sig = base_sigma(c, d.pair.resolution, d.checks.get("voxel_size", 1.0))
    if sig <= 0:
        return d.x
    with torch.no_grad():
        return gaussian_blur(torch.from_numpy(d.x)[None, None], sig)[0, 0].numpy()


BASE_FACTORS = (0.0, 0.8, 1.0, 1.2, 1.4)


def fit_base_factor(data: Sequence[PairData], config: dict,
                    factors: Sequence[float] = BASE_FACTORS) -> tuple[float, float, dict]:
    """The residual's base, fitted to the training pairs only: the factor (of each map's
    resolution) whose blurred input has the best mean ChimeraX-style correlation with the
    targets (0: the 2 A input itself), and the least-squares scale from that base to the
    targets over all their voxels. Returns (factor, scale, {factor: mean correlation})."""
    scores = {}
    for f in factors:
        scores[float(f)] = float(np.mean([_envelope_correlation(pair_base(d, config, f), d.y)
                                          for d in data]))
    best = max(scores, key=scores.get)
    num = den = 0.0
    for d in data:
        b = pair_base(d, config, best).astype(np.float64)
        num += float((b * d.y).sum())
        den += float((b * b).sum())
    return best, (num / den if den > 0 else 1.0), scores


def _blur_axes(x: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """Gaussian blur of [B, 1, D, H, W] with one sigma (voxels) per axis (anisotropy)."""
    for axis, s in enumerate(sigmas):
        if s < 0.05:
            continue
        r = max(1, int(math.ceil(3 * s)))
        t = torch.arange(-r, r + 1, dtype=x.dtype)
        w = torch.exp(-0.5 * (t / s) ** 2)
        w = w / w.sum()
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = w.numel()
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r
        x = F.conv3d(F.pad(x, pad, mode="replicate"), w.view(shape))
    return x


def augment(x: torch.Tensor, y: torch.Tensor, m: torch.Tensor, rng: np.random.Generator,
            b: torch.Tensor | None = None):
    """The same random flips and axis order for x, y, mask [B, 1, D, H, W] (and the
    residual's base ``b``, returned fourth when given); then, on the input only, random
    anisotropic blur and Gaussian noise (the paper's augmentations)."""
    perm = [2 + int(a) for a in rng.permutation(3)]
    flips = [2 + a for a in range(3) if rng.random() < 0.5]
    ts = [t.permute(0, 1, *perm) for t in ((x, y, m) if b is None else (x, y, m, b))]
    if flips:
        ts = [t.flip(flips) for t in ts]
    x, y, m = ts[:3]
    rest = tuple(t.contiguous() for t in ts[3:])
    if rng.random() < 0.5:
        x = _blur_axes(x, rng.uniform(0.0, 1.0, 3).tolist())
    if rng.random() < 0.5:
        x = x + float(rng.uniform(0.0, 0.03)) * torch.randn_like(x)
    return (x.contiguous(), y.contiguous(), m.contiguous()) + rest


def masked_smooth_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                     beta: float = 0.1) -> torch.Tensor:
    loss = F.smooth_l1_loss(pred, target, reduction="none", beta=beta)
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def validation_loss(gen, cubes) -> float:
    """Mean masked SmoothL1 of the generator over fixed validation cubes (x, y, mask and,
    optionally, the residual's base)."""
    x, y, m, *b = (torch.from_numpy(a[:, None]) for a in cubes)
    gen.eval()
    with torch.no_grad():
        total = sum(float(masked_smooth_l1(gen(x[k:k + 8], b[0][k:k + 8] if b else None),
                                           y[k:k + 8], m[k:k + 8])) *
                    float(m[k:k + 8].sum()) for k in range(0, len(x), 8))
    gen.train()
    return total / max(float(m.sum()), 1.0)


def train(train_data: Sequence[PairData], val_data: Sequence[PairData], outdir, *,
          epochs: int = 20, steps: int = 20, batch: int = 4, lr: float = 1e-3,
          adv_weight: float = 0.01, config: dict | None = None, seed: int = 0,
          resume: bool = False, progress: bool = False, fit_base: bool = True,
          extra: dict | None = None, log: Callable[[str], None] | None = None) -> list[dict]:
    """Train the generator (SmoothL1 + ``adv_weight`` x adversarial) and the discriminator.

    First (``fit_base``) the residual's base is fitted to the training pairs
    (:func:`fit_base_factor`: a blur of the input to a molmap at a factor of each map's
    resolution, and the least-squares scale, which divides the targets so that they sit in
    the base's range); the untrained generator is that base exactly, and training learns
    corrections to it.

    Every epoch writes ``outdir/last.pt`` (everything needed to resume) and, when the
    validation loss improves, ``outdir/best.pt`` (the checkpoint to simulate with). The rng
    of epoch k is seeded with ``seed + k``, so a resumed run takes the same steps.

    Returns:
        The history: one dict per epoch (epoch 0: the untrained network, i.e. the base
        itself, which ``best.pt`` holds until an epoch beats it), with ``train_loss``,
        ``val_loss`` and ``seconds``.
    """
    if not train_data:
        raise DifffitInputError("no training pairs left after curation; see the dropped "
                                "pairs' reasons (or lower --min-correlation)")
    out = Path(outdir)
    config = {**DEFAULT_CONFIG, **(config or {})}
    # The voxel size the simulator uses on a box of its own (no target grid).
    config["voxel_size"] = float(np.median([d.checks["voxel_size"] for d in train_data]))
    if fit_base and not (resume and (out / "last.pt").is_file()):
        factor, scale, fit_scores = fit_base_factor(train_data, config)
        config.update(base_factor=factor, target_scale=scale)
        if log:
            log("residual base: molmap at " + (f"{factor:g} x the resolution" if factor else
                "2 A (the input)") + f", targets / {scale:.4f} (mean correlation of each "
                "factor with the training targets: " +
                ", ".join(f"{f:g}: {c:.3f}" for f, c in fit_scores.items()) + ")")
    cube = int(config["cube"])
    gen, disc = build_generator(config), build_discriminator(config)
    if cube % gen.multiple:
        raise DifffitInputError(f"cube size {cube} must be a multiple of {gen.multiple}")
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr * 0.5, betas=(0.5, 0.999))
    history, start = [], 1
    if resume and (out / "last.pt").is_file():
        doc = load_checkpoint(out / "last.pt")
        config = {**config, **doc["config"]}
        gen, disc = build_generator(config), build_discriminator(config)
        gen.load_state_dict(doc["generator"])
        disc.load_state_dict(doc["discriminator"])
        opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(disc.parameters(), lr=lr * 0.5, betas=(0.5, 0.999))
        opt_g.load_state_dict(doc["opt_g"])
        opt_d.load_state_dict(doc["opt_d"])
        history, start = list(doc["history"]), int(doc["epoch"]) + 1
    scale = float(config.get("target_scale", 1.0)) or 1.0
    bases = [pair_base(d, config) for d in train_data]
    vdata = val_data or train_data
    val = sample_cubes(vdata, 8 * max(1, len(vdata)), cube, np.random.default_rng(10_000 + seed),
                       bases=[pair_base(d, config) for d in vdata])
    val = (val[0], val[1] / scale, val[2], val[3])
    best = min((h["val_loss"] for h in history), default=math.inf)
    if not history:
        history.append({"epoch": 0, "train_loss": None, "val_loss": validation_loss(gen, val),
                        "seconds": 0.0})
        best = history[0]["val_loss"]
        save_checkpoint(out / "best.pt", gen, config=config, epoch=0, history=history,
                        extra=extra)
        if log:
            log(f"epoch 0 (the base, untrained): validation loss {history[0]['val_loss']:.5f}")
    bar = None
    if progress and start <= epochs:
        bar = progress_bar(total=(epochs - start + 1) * steps, desc="training", unit="step")
    bce = torch.nn.BCEWithLogitsLoss()
    for epoch in range(start, epochs + 1):
        t0 = time.perf_counter()
        torch.manual_seed(seed + epoch)
        rng = np.random.default_rng(seed + epoch)
        losses = []
        gen.train()
        for _ in range(steps):
            x, y, m, b = (torch.from_numpy(a[:, None])
                          for a in sample_cubes(train_data, batch, cube, rng, bases=bases))
            x, y, m, b = augment(x, y / scale, m, rng, b)
            fake = gen(x, b)
            if adv_weight > 0:
                opt_d.zero_grad()
                ones, zeros = torch.ones(len(x)), torch.zeros(len(x))
                d_loss = bce(disc(y * m), ones) + bce(disc(fake.detach() * m), zeros)
                d_loss.backward()
                opt_d.step()
            opt_g.zero_grad()
            loss = masked_smooth_l1(fake, y, m)
            total = loss + (adv_weight * bce(disc(fake * m), torch.ones(len(x)))
                            if adv_weight > 0 else 0.0)
            total.backward()
            opt_g.step()
            losses.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
        v = validation_loss(gen, val)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": v,
                        "seconds": time.perf_counter() - t0})
        ckpt = dict(config=config, discriminator=disc, optimizers={"g": opt_g, "d": opt_d},
                    epoch=epoch, history=history, extra=extra)
        if v < best:
            best = v
            save_checkpoint(out / "best.pt", gen, **ckpt)
        save_checkpoint(out / "last.pt", gen, **ckpt)
        if log and bar is None:
            log(f"epoch {epoch}: train loss {history[-1]['train_loss']:.5f}, validation loss {v:.5f}")
    if bar is not None:
        bar.close()
    if not (out / "best.pt").is_file():   # no epoch beat the input: keep the last one
        save_checkpoint(out / "best.pt", gen, config=config, epoch=history[-1]["epoch"],
                        history=history, extra=extra)
    return history
