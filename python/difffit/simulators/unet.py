"""The learned simulator's networks in plain PyTorch: a 3D nested U-Net (U-Net++)
generator and a 3D convolutional discriminator.

Generator: encoder blocks X[i, 0] (two 3x3x3 convolutions, max-pooling by 2 between depths),
decoder nodes X[i, j] fed by every earlier node of their depth (dense skips) and the
trilinear up-sampling (factor 2) of X[i + 1, j - 1]; a 1x1x1 head on X[0, L - 1]. The head
adds to a base (a residual): the input itself, or the input blurred by a Gaussian of
``base_sigma`` voxels (set per map from its resolution and the blur factor fitted to the
training maps, see :func:`difffit.simulators.training.fit_base_factor`), or a ``base``
given to :meth:`forward` (training passes each cube's own, made on the clean input). The head starts at zero, so an untrained
network returns its base exactly (its input, a molmap, when ``base_sigma`` is 0) and
training learns only corrections. ``residual=False`` drops the base (the plain U-Net++ of
the paper, for converted weights). No normalisation layers:
the output at a voxel then depends only on its neighbourhood, which is what lets whole maps
be put together from overlapping cubes.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.1),
                         nn.Conv3d(c_out, c_out, 3, padding=1), nn.LeakyReLU(0.1))


class NestedUNet3d(nn.Module):
    """U-Net++ on [B, 1, D, H, W] -> [B, 1, D, H, W]; D, H, W divisible by
    ``2 ** (len(channels) - 1)`` (:attr:`multiple`)."""

    def __init__(self, channels: Sequence[int] = (8, 16, 32), residual: bool = True,
                 base_sigma: float = 0.0):
        super().__init__()
        self.channels = [int(c) for c in channels]
        self.residual = bool(residual)
        self.base_sigma = float(base_sigma)   # voxels; not a weight: set per target grid
        L = len(self.channels)
        if L < 2 or min(self.channels) < 1:
            raise ValueError(f"channels must list at least two positive widths, got {channels}")
        self.multiple = 2 ** (L - 1)
        nodes = {}
        for i, c in enumerate(self.channels):
            nodes[f"{i}_0"] = _block(1 if i == 0 else self.channels[i - 1], c)
        for j in range(1, L):
            for i in range(L - j):
                c_in = self.channels[i] * j + self.channels[i + 1]
                nodes[f"{i}_{j}"] = _block(c_in, self.channels[i])
        self.nodes = nn.ModuleDict(nodes)
        self.head = nn.Conv3d(self.channels[0], 1, 1)
        nn.init.zeros_(self.head.weight)   # start as the identity (the residual's input)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor, base: Tensor | None = None) -> Tensor:
        L = len(self.channels)
        if any(s % self.multiple for s in x.shape[2:]):
            raise ValueError(f"input size {tuple(x.shape[2:])} must be divisible by {self.multiple}")
        X: dict[tuple[int, int], Tensor] = {(0, 0): self.nodes["0_0"](x)}
        for i in range(1, L):
            X[(i, 0)] = self.nodes[f"{i}_0"](F.max_pool3d(X[(i - 1, 0)], 2, 2))
        for j in range(1, L):
            for i in range(L - j):
                up = F.interpolate(X[(i + 1, j - 1)], scale_factor=2, mode="trilinear",
                                   align_corners=False)
                X[(i, j)] = self.nodes[f"{i}_{j}"](torch.cat([X[(i, k)] for k in range(j)] + [up], 1))
        out = self.head(X[(0, L - 1)])
        if not self.residual:
            return out
        return out + (self.base(x) if base is None else base)

    def base(self, x: Tensor) -> Tensor:
        """What the head adds to: ``x`` blurred by ``base_sigma`` voxels (zeros outside)."""
        return gaussian_blur(x, self.base_sigma) if self.base_sigma > 0 else x


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Isotropic Gaussian blur (``sigma`` voxels, 3 sigma wide) of [B, 1, D, H, W], zeros
    beyond the edges (as the zero padding of cube and whole-map inference)."""
    r = max(1, int(math.ceil(3.0 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    w = w / w.sum()
    k = w.numel()
    x = F.conv3d(x, w.view(1, 1, k, 1, 1), padding=(r, 0, 0))
    x = F.conv3d(x, w.view(1, 1, 1, k, 1), padding=(0, r, 0))
    return F.conv3d(x, w.view(1, 1, 1, 1, k), padding=(0, 0, r))


class Discriminator3d(nn.Module):
    """[B, 1, D, H, W] cube -> [B] logit (real experimental cube vs generated)."""

    def __init__(self, channels: Sequence[int] = (8, 16, 32)):
        super().__init__()
        layers, c_in = [], 1
        for c in channels:
            layers += [nn.Conv3d(c_in, int(c), 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c_in = int(c)
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(c_in, 1)

    def forward(self, x: Tensor, base: Tensor | None = None) -> Tensor:
        return self.out(self.features(x).mean(dim=(2, 3, 4))).squeeze(1)


def infer_whole(net: NestedUNet3d, volume: Tensor, pad: int = 0) -> Tensor:
    """Reference inference: the network on the whole volume [D, H, W] at once, set in zeros
    ``pad`` voxels wide on every side (a multiple of ``net.multiple``; :func:`infer_cubes`
    with margin ``pad`` sees the map's surroundings so) and up to a multiple of
    ``net.multiple``. Returns [D, H, W]."""
    m = net.multiple
    if pad % m:
        raise ValueError(f"pad ({pad}) must be a multiple of {m}")
    D, H, W = volume.shape
    hi = [pad + (-s) % m for s in (D, H, W)]
    x = F.pad(volume[None, None], (pad, hi[2], pad, hi[1], pad, hi[0]))
    with torch.no_grad():
        return net(x)[0, 0, pad:pad + D, pad:pad + H, pad:pad + W]


def infer_cubes(net: NestedUNet3d, volume: Tensor, cube: int = 32, margin: int = 8,
                batch: int = 4) -> Tensor:
    """The network on a volume [D, H, W] in overlapping cubes, with bounded memory: each
    cube of ``cube`` voxels keeps its core (``margin`` voxels in from each face) and the
    cores tile the volume. Cube corners sit on multiples of ``net.multiple`` so that the
    pooling grid of every cube is the one whole-map inference uses; the result differs from
    ``infer_whole(net, volume, pad=margin)`` only by what lies more than ``margin`` voxels
    from a cube's core (cut off instead of seen). Returns [D, H, W]."""
    m = net.multiple
    if cube % m or margin % m or cube - 2 * margin < m:
        raise ValueError(f"cube ({cube}) and margin ({margin}) must be multiples of {m} "
                         f"with cube - 2 margin >= {m}")
    core = cube - 2 * margin
    D, H, W = volume.shape
    n = [-(-s // core) for s in (D, H, W)]
    # The volume sits at offset ``margin`` in a zero-padded frame that holds every cube.
    big = torch.zeros([k * core + 2 * margin for k in n], dtype=volume.dtype,
                      device=volume.device)
    big[margin:margin + D, margin:margin + H, margin:margin + W] = volume
    # The residual's base (a blur) on the whole volume at once: exact however wide the blur.
    bbig = None
    if net.residual and net.base_sigma > 0:
        with torch.no_grad():
            bbig = net.base(big[None, None])[0, 0]
    out = torch.zeros([k * core for k in n], dtype=volume.dtype, device=volume.device)
    starts = [(a * core, b * core, c * core) for a in range(n[0]) for b in range(n[1])
              for c in range(n[2])]
    with torch.no_grad():
        for k in range(0, len(starts), batch):
            part = starts[k:k + batch]
            x = torch.stack([big[a:a + cube, b:b + cube, c:c + cube] for a, b, c in part])
            base = None if bbig is None else torch.stack(
                [bbig[a:a + cube, b:b + cube, c:c + cube] for a, b, c in part])[:, None]
            y = net(x[:, None], base)[:, 0, margin:margin + core, margin:margin + core,
                                   margin:margin + core]
            for (a, b, c), v in zip(part, y):
                out[a:a + core, b:b + core, c:c + core] = v
    return out[:D, :H, :W]
