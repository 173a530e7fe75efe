"""Pictures of a fit: the map around a placement, projected along x, y and z, with the
placed model's CA trace drawn in.

What a biologist looks at first is whether the chain lies in the density. Each view is
an inline SVG: the map's projection (the sum of its positive values along the axis over
the placed models' box, widened by a margin) as an embedded PNG, grey on black, and each
model's CA trace (P for nucleic acids) as coloured polylines, broken where consecutive CA
atoms lie more than 4.5 A apart (chain breaks, gaps). The PNG is written here with zlib
(:func:`png_rgb`): no imaging dependency, and the report stays one file.
"""
from __future__ import annotations

import base64
import struct
import zlib
from typing import Sequence

import numpy as np

from ..maps import DensityMap
from .blocks import _esc

__all__ = ["png_rgb", "projection_views", "placed_trace", "picture_section", "TRACE_COLOURS"]

_AXES = ("x", "y", "z")
# Per view: the axis projected along, then the image's horizontal and vertical axes.
_VIEWS = ((2, 0, 1), (1, 0, 2), (0, 1, 2))
_GAP = 4.5  # A: consecutive trace atoms further apart are not joined
# Trace colours, bright enough on the dark projections.
TRACE_COLOURS = ("#ffb000", "#56b4e9", "#ff6f61", "#8fe38f", "#e07bd0", "#ffffff", "#f0e442",
                 "#00d0c0")


def png_rgb(img: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of ``img`` [h, w, 3] (uint8; row 0 at the top)."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    h, w, _ = img.shape

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    raw = np.hstack([np.zeros((h, 1), np.uint8), img.reshape(h, w * 3)]).tobytes()  # filter 0
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def placed_trace(structure, rotation, translation) -> list[np.ndarray]:
    """The CA (or P) trace of ``structure`` moved by x -> R x + t, as runs [n, 3] of atoms
    of one chain with no gap over 4.5 A."""
    from ..structures import trace_mask

    mask = trace_mask(structure)
    xyz = structure.coords[mask] @ np.asarray(rotation).T + np.asarray(translation)
    chains = structure.chain_ids[mask]
    runs = []
    for c in dict.fromkeys(chains.tolist()):
        p = xyz[chains == c]
        if len(p) == 0:
            continue
        cut = np.nonzero(np.linalg.norm(np.diff(p, axis=0), axis=1) > _GAP)[0] + 1
        runs += [r for r in np.split(p, cut) if len(r)]
    return runs


def _box(dmap: DensityMap, runs: Sequence[np.ndarray], margin: float):
    """Voxel index ranges [lo, hi] (x, y, z) of the traces' box widened by ``margin``."""
    pts = np.vstack(runs)
    lo = np.floor(dmap.world_to_index(pts.min(0) - margin)).astype(int)
    hi = np.ceil(dmap.world_to_index(pts.max(0) + margin)).astype(int)
    n = np.array(dmap.shape_xyz)
    return np.clip(lo, 0, n - 1), np.clip(hi, 0, n - 1)


def projection_views(dmap: DensityMap, models: Sequence[tuple[str, list[np.ndarray]]],
                     caption: str = "", margin: float = 8.0, size: int = 220) -> str:
    """Three inline SVGs (along z, y and x) of the map around the models, traces drawn in.

    Args:
        dmap: the map.
        models: (label, trace runs of :func:`placed_trace`) per model, drawn in the
            palette's colours in this order.
        caption: text under the three views (escaped).
        margin: Angstrom of map shown around the models' box.
        size: the longer side of each view, in px.

    Returns:
        ``<figure class="views">`` holding the three SVGs and a caption naming the colours;
        a note when no model has a trace atom inside the map's box.
    """
    runs_all = [r for _, runs in models for r in runs]
    if not runs_all:
        return '<p class="note">No trace atoms to draw.</p>'
    lo, hi = _box(dmap, runs_all, margin)
    if (hi <= lo).any():
        return '<p class="note">The placed models lie outside the map\'s box.</p>'
    sub = np.clip(dmap.data[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1], 0, None)
    sub = sub.astype(np.float64)
    edge0 = dmap.origin + (lo - 0.5) * dmap.voxel_size      # world xyz of the box's corner
    extent = (hi - lo + 1) * dmap.voxel_size                 # world size of the box
    svgs = []
    for along, u, v in _VIEWS:
        proj = sub.sum(axis=2 - along)          # data is [z, y, x]: axis 2 - a is world a
        # The remaining array axes are world axes in decreasing order (z, y, x minus one):
        # transpose so rows follow v and columns follow u.
        img = proj if (2 - v) < (2 - u) else proj.T
        top = np.percentile(img, 99.5) or 1.0
        grey = (255 * np.clip(img / top, 0, 1) ** 0.8).astype(np.uint8)[::-1]  # v up
        rgb = np.repeat(grey[..., None], 3, axis=2)
        scale = size / max(extent[u], extent[v])
        w, h = extent[u] * scale, extent[v] * scale
        href = "data:image/png;base64," + base64.b64encode(png_rgb(rgb)).decode("ascii")
        parts = [f'<svg class="view" style="margin:0 10px 4px 0;vertical-align:top" '
                 f'xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" '
                 f'height="{h + 18:.0f}" viewBox="0 0 {w:.1f} {h + 18:.1f}" role="img">',
                 f"<title>map projected along {_AXES[along]}</title>",
                 f'<image class="density" x="0" y="0" width="{w:.1f}" height="{h:.1f}" '
                 f'preserveAspectRatio="none" style="image-rendering:pixelated" href="{href}"/>']
        for k, (label, runs) in enumerate(models):
            colour = TRACE_COLOURS[k % len(TRACE_COLOURS)]
            for r in runs:
                px = (r[:, u] - edge0[u]) * scale
                py = h - (r[:, v] - edge0[v]) * scale
                pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py))
                parts.append(f'<polyline class="trace" points="{pts}" fill="none" '
                             f'stroke="{colour}" stroke-width="1.6" stroke-linejoin="round">'
                             f"<title>{_esc(label)}</title></polyline>")
        parts.append(f'<text x="4" y="{h + 13:.1f}" font-size="11">along {_AXES[along]} '
                     f"({_AXES[u]} right, {_AXES[v]} up)</text></svg>")
        svgs.append("".join(parts))
    key = ", ".join(f'<span style="color:{TRACE_COLOURS[k % len(TRACE_COLOURS)]}">&#9632;</span> '
                    f"{_esc(label)}" for k, (label, _) in enumerate(models))
    text = (f"{_esc(caption)} " if caption else "") + (
        f"Map summed along each axis over the models' box ({margin:g} Å margin); "
        f"CA trace: {key}.")
    return (f'<figure class="views">{"".join(svgs)}<figcaption>{text}</figcaption></figure>')


def picture_section(dmap: DensityMap, threshold: float, models: Sequence[tuple[str, object]],
                    view3d: bool = True, caption: str = "") -> str:
    """The views of placed models (Structures already in their placed pose): the map along
    three axes with their traces, and with ``view3d`` the interactive Mol* view
    (:func:`difffit.report.molstar.molstar_view`; the report's writer must then also call
    :func:`difffit.report.molstar.write_assets`)."""
    if not models:
        return '<p class="note">Nothing placed: no picture.</p>'
    out = [projection_views(dmap, [(label, placed_trace(s, np.eye(3), np.zeros(3)))
                                   for label, s in models], caption=caption)]
    if view3d:
        from .molstar import molstar_view

        out.append(molstar_view(dmap, threshold, models))
    return "\n".join(out)
