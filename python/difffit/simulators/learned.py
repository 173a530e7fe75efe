"""The learned simulator: a molmap at 2 A on the target grid, min-max normalised to
[0, 1], turned into an experimental-like map by a trained :class:`NestedUNet3d`, in
overlapping cubes; checkpoints in difffit's own format.

The generator is trained on experimental maps min-max normalised from their solvent level
(:func:`difffit.simulators.training.solvent_normalised`). Consumers of a simulated map
(zero-out's "fraction of the peak", the 95 % envelope) need solvent at exactly 0, so the
simulator subtracts what is left of a solvent level in its output and clips at 0.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import DifffitInputError
from ..files import atomic_write
from ..simulate import SIGMA_FACTOR, splat_atoms
from .base import Simulator
from .unet import Discriminator3d, NestedUNet3d, infer_cubes, infer_whole

FORMAT = "difffit-simulator-checkpoint"
VERSION = 1
DEFAULT_CONFIG = {"channels": [4, 8, 16], "disc_channels": [8, 16, 32], "cube": 16,
                  "input_resolution": 2.0, "infer_cube": 48, "infer_margin": 8,
                  "voxel_size": 1.0, "residual": True, "base_factor": 0.0, "target_scale": 1.0}
# residual: the generator adds its output to its input blurred to a molmap at
# base_factor x the requested resolution (a factor fitted to the training maps; 0, or a
# resolution at or below the input's: the input itself, so that an untrained generator
# returns the molmap); target_scale: the least-squares factor from the
# blurred input to the training targets, which were divided by it (recorded, not applied:
# every consumer is scale-free). Older checkpoints lack them and load with these defaults.


def minmax(a):
    """Min-max normalisation to [0, 1] (a constant map gives zeros); numpy or torch."""
    lo, hi = a.min(), a.max()
    return (a - lo) / (hi - lo) if float(hi - lo) > 0 else a * 0


def molmap_input(coords: np.ndarray, atomic_numbers: np.ndarray, origin, voxel_size,
                 shape_zyx, input_resolution: float = 2.0) -> np.ndarray:
    """[nz, ny, nx] float32: the generator's input, a molmap at ``input_resolution`` on the
    grid, min-max normalised."""
    return minmax(splat_atoms(coords, atomic_numbers, input_resolution, origin, voxel_size,
                              shape_zyx))


def save_checkpoint(path, generator: NestedUNet3d, config: dict, *, discriminator=None,
                    optimizers: dict | None = None, epoch: int = 0, history=None,
                    extra: dict | None = None) -> Path:
    """Write a checkpoint atomically: format tag, config, the networks' weights, optimiser
    states, epoch and validation history (plain types and tensors only, so that loading
    needs no pickled code)."""
    import io

    doc = {"format": FORMAT, "version": VERSION, "config": dict(config), "epoch": int(epoch),
           "history": list(history or []), "generator": generator.state_dict(),
           "extra": dict(extra or {})}
    if discriminator is not None:
        doc["discriminator"] = discriminator.state_dict()
    for k, opt in (optimizers or {}).items():
        doc[f"opt_{k}"] = opt.state_dict()
    buf = io.BytesIO()
    torch.save(doc, buf)
    p = Path(path)
    atomic_write(p, buf.getvalue())
    return p


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (weights only: no code is
    unpickled). Raises DifffitInputError naming the file when it is not one."""
    p = Path(path)
    if not p.is_file():
        raise DifffitInputError(f"{p}: simulator checkpoint not found")
    try:
        doc = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input
        raise DifffitInputError(f"{p}: not a difffit simulator checkpoint ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DifffitInputError(f"{p}: not a difffit simulator checkpoint (no '{FORMAT}' tag; "
                                f"write one with difffit train-simulator)")
    if int(doc.get("version", 0)) > VERSION:
        raise DifffitInputError(f"{p}: checkpoint version {doc['version']} is newer than "
                                f"this difffit reads ({VERSION}); upgrade difffit")
    return doc


def build_generator(config: dict) -> NestedUNet3d:
    c = {**DEFAULT_CONFIG, **config}
    return NestedUNet3d(c["channels"], residual=bool(c["residual"]))


def base_sigma(config: dict, resolution: float | None, voxel_size: float) -> float:
    """The base blur (voxels) that takes the molmap input (at ``input_resolution``) to a
    molmap at ``base_factor`` x ``resolution``; 0 when that is not coarser."""
    c = {**DEFAULT_CONFIG, **config}
    if not resolution or float(c["base_factor"]) <= 0:
        return 0.0
    r, r0 = float(c["base_factor"]) * float(resolution), float(c["input_resolution"])
    return SIGMA_FACTOR * math.sqrt(r * r - r0 * r0) / float(voxel_size) if r > r0 else 0.0


def build_discriminator(config: dict) -> Discriminator3d:
    return Discriminator3d(config.get("disc_channels", DEFAULT_CONFIG["disc_channels"]))


class LearnedSimulator(Simulator):
    """A trained generator applied to molmap-at-2-A inputs; the resolution sets only the
    residual's base blur (a molmap at the checkpoint's ``base_factor`` x resolution; none
    when the factor is 0, as in checkpoints from before the factor)."""

    name = "learned"

    def __init__(self, generator: NestedUNet3d, config: dict | None = None,
                 checkpoint: str | None = None, sha256: str | None = None,
                 device: str = "cpu", whole: bool = False):
        self.config = {**DEFAULT_CONFIG, **(config or {})}
        self.device = torch.device(device)
        self.generator = generator.to(self.device).eval()
        self.checkpoint, self.sha256 = checkpoint, sha256
        self.whole = whole   # reference path: the whole map at once
        self._solvent = None

    @classmethod
    def load(cls, path, device: str = "cpu", whole: bool = False) -> "LearnedSimulator":
        doc = load_checkpoint(path)
        config = {**DEFAULT_CONFIG, **doc["config"]}
        gen = build_generator(config)
        try:
            gen.load_state_dict(doc["generator"])
        except (RuntimeError, KeyError) as e:
            raise DifffitInputError(f"{path}: generator weights do not match the checkpoint's "
                                    f"architecture ({e})") from None
        sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return cls(gen, config, checkpoint=str(path), sha256=sha, device=device, whole=whole)

    def describe(self) -> dict:
        return {"simulator": self.name, "checkpoint": self.checkpoint,
                "checkpoint_sha256": self.sha256,
                "input_resolution": self.config["input_resolution"],
                "channels": list(self.config["channels"]),
                "base_factor": float(self.config["base_factor"])}

    def spacing(self, resolution: float, voxel_size: float | None = None) -> float:
        """The target's voxel size, else the training maps' median voxel size."""
        return float(voxel_size) if voxel_size else float(self.config["voxel_size"])

    def solvent_level(self) -> float:
        """The network's output in the middle of an empty cube: its solvent level."""
        if self._solvent is None:
            c = int(self.config["infer_cube"])
            zero = torch.zeros(c, c, c, device=self.device)
            self._solvent = float(infer_whole(self.generator, zero)[c // 2, c // 2, c // 2])
        return self._solvent

    def normalised(self, x: np.ndarray, voxel_size=None, resolution=None) -> np.ndarray:
        """[nz, ny, nx] generator output (min-max normalised scale) for an input [nz, ny, nx]
        on a grid of ``voxel_size`` A (default: the training maps'), for a map of
        ``resolution`` A (sets the residual's base blur; None: no blur)."""
        vs = float(np.mean(voxel_size)) if voxel_size is not None else float(self.config["voxel_size"])
        self.generator.base_sigma = base_sigma(self.config, resolution, vs)
        v = torch.as_tensor(np.asarray(x, dtype=np.float32), device=self.device)
        if self.whole:
            y = infer_whole(self.generator, v, int(self.config["infer_margin"]))
        else:
            y = infer_cubes(self.generator, v, int(self.config["infer_cube"]),
                            int(self.config["infer_margin"]))
        return y.cpu().numpy()

    def grid_values(self, coords: np.ndarray, atomic_numbers: np.ndarray, resolution: float,
                    origin: Sequence[float], voxel_size: Sequence[float],
                    shape_zyx: Sequence[int]) -> np.ndarray:
        x = molmap_input(coords, atomic_numbers, origin, voxel_size, shape_zyx,
                         float(self.config["input_resolution"]))
        y = self.normalised(x, voxel_size, resolution)
        # The solvent level: the output's median away from the atoms (a molmap at 8 A under
        # 1 % of its peak: about 5 A from any atom), else the net's output for an empty
        # input. A floor left under the whole box would swell the 95 % envelope and every
        # "fraction of the peak".
        wide = splat_atoms(coords, atomic_numbers, 8.0, origin, voxel_size, shape_zyx)
        far = wide < 0.01 * max(float(wide.max()), 1e-30)
        level = float(np.median(y[far])) if far.sum() > 0.05 * far.size else self.solvent_level()
        return np.clip(y - level, 0.0, None).astype(np.float32)
