"""How close a simulated map is to an experimental one on the same grid: ChimeraX-style
correlation and correlation about the mean (over the simulated map's 95 % envelope), Pearson
over the whole box, and 3D SSIM of the min-max normalised maps."""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..simulate import enclosing_level


def _gauss_window(sigma: float = 1.5, radius: int = 5) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _blur3(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of [1, 1, D, H, W], valid part only."""
    k = w.numel()
    v = F.conv3d(v, w.view(1, 1, k, 1, 1))
    v = F.conv3d(v, w.view(1, 1, 1, k, 1))
    return F.conv3d(v, w.view(1, 1, 1, 1, k))


def ssim3d(a: np.ndarray, b: np.ndarray, sigma: float = 1.5, radius: int = 5) -> float:
    """Mean 3D SSIM (Gaussian window sigma 1.5 voxels, 11 wide, data range 1, the usual
    constants K1 = 0.01, K2 = 0.03) of two [D, H, W] maps, each with negative values set
    to 0 and then min-max normalised (so that both maps' solvent sits near 0)."""
    def prep(x):
        x = torch.as_tensor(np.asarray(x, dtype=np.float64)).clamp_min(0.0)
        lo, hi = x.min(), x.max()
        x = (x - lo) / (hi - lo) if hi > lo else x * 0
        return x[None, None]
    x, y = prep(a), prep(b)
    if min(x.shape[2:]) < 2 * radius + 1:
        radius = max(1, (min(x.shape[2:]) - 1) // 2)
    w = _gauss_window(sigma, radius)
    mx, my = _blur3(x, w), _blur3(y, w)
    sxx = _blur3(x * x, w) - mx * mx
    syy = _blur3(y * y, w) - my * my
    sxy = _blur3(x * y, w) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())


def map_scores(sim: np.ndarray, exp: np.ndarray) -> dict[str, float]:
    """Scores of a simulated map against the experimental one, both [D, H, W] on one grid.

    Returns:
        "correlation" and "cam": ChimeraX's correlation (about zero) and correlation about
        the mean over the voxels inside the simulated map's contour enclosing 95 % of its
        density (fitmap / measure correlation with the simulated map first);
        "pearson": over every voxel; "ssim": :func:`ssim3d`.
    """
    s = np.clip(np.asarray(sim, dtype=np.float64), 0.0, None)
    e = np.asarray(exp, dtype=np.float64)
    keep = s >= enclosing_level(s) if s.max() > 0 else np.ones(s.shape, dtype=bool)
    sv, ev = s[keep], e[keep]
    corr = float(sv @ ev / max(np.sqrt((sv @ sv) * (ev @ ev)), 1e-30))
    sc, ec = sv - sv.mean(), ev - ev.mean()
    cam = float(sc @ ec / max(np.sqrt((sc @ sc) * (ec @ ec)), 1e-30))
    pear = float(np.corrcoef(s.ravel(), e.ravel())[0, 1]) if s.std() > 0 else 0.0
    return {"correlation": corr, "cam": cam, "pearson": pear, "ssim": ssim3d(s, e)}
