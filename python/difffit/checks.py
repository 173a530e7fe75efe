"""Plausibility checks: is the fit about to run (or just run) able to mean anything?

A fit with a wrong voxel size, a resolution in the wrong unit, a contour below the map's
minimum or a model that belongs to another map runs to the end and ranks placements all
the same; nothing in the scores says they are meaningless. These checks say it, before
and after the search, each naming the fix in the caller's spelling
(:func:`difffit.errors.opt`):

* :func:`check_map`: resolution against voxel size and box; contour against the map's
  values.
* :func:`check_structures`: each model against the map's box and against the density
  enclosed at the contour. A voxel size off by a constant factor scales the density's
  size and shape evenly, so when the model's principal extents and the density's differ by
  one common factor that factor is the voxel-size correction, and the message gives it.
* :func:`check_memory`: the memory a step needs against what the machine has.
* :func:`check_separation`: after the search, whether each model's best placement stands
  out from the search's other starts and from placements at random.

Every check returns :class:`Finding` objects; :func:`report` raises the errors (one
:class:`DifffitInputError` naming them all) and issues the warnings as
:class:`DifffitWarning`. The workflows call :func:`before_search` and :func:`after_search`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import DifffitInputError, opt, warn
from .starts import starts_per_structure
from .structures import simulation_mask

__all__ = ["Finding", "report", "check_map", "check_structures", "check_memory",
           "fit_memory", "before_search", "after_search", "check_separation",
           "available_memory"]

# Model size against the map's box (radii of gyration): above these the model cannot lie
# in the box (error) or mostly cannot (warning).
BOX_ERROR, BOX_WARNING = 4.0, 1.5
# Model size against the density above the contour (radii of gyration). On the shared
# data sets the right model gives 0.83-1.06; a voxel size wrong by 1.38 gives 1.34.
DENSITY_LARGER, DENSITY_SMALLER = 1.2, 0.7
# The principal extents of model and density agree in ratio within this (smallest /
# largest of the three ratios): a uniform scale, i.e. a voxel size off by that factor.
UNIFORM = 0.85
MIN_FIT_ATOMS, FEW_FIT_ATOMS = 3, 12
# After the search: the best placement's cam against the search's starts (robust
# deviations above their median) and against placements at random (standard deviations).
N_RANDOM, MIN_ABOVE_STARTS, MIN_ABOVE_RANDOM = 200, 3.0, 8.0


@dataclass
class Finding:
    """One result of a check: ``level`` "error" (the result could not mean anything)
    or "warning" (it may not), and a message naming the fix."""

    level: str
    message: str


def report(findings: Sequence[Finding]) -> None:
    """Issue the warnings (:class:`DifffitWarning`), then raise the errors, if any.

    Raises:
        DifffitInputError: every error's message, one per line.
    """
    for f in findings:
        if f.level == "warning":
            warn(f.message, stacklevel=3)
    errors = [f.message for f in findings if f.level == "error"]
    if errors:
        raise DifffitInputError("\n".join(errors) if len(errors) > 1 else errors[0])


# ------------------------------------------------------------------------- memory


def available_memory() -> int | None:
    """Bytes of memory this process can still take (the smaller of the machine's available
    memory and a cgroup limit), or None when unknown."""
    found = []
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except OSError:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    for path, used in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                       ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                        "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(path) as fh:
                limit = fh.read().strip()
            if limit.isdigit() and int(limit) < 1 << 60:
                with open(used) as fh:
                    found.append(int(limit) - int(fh.read().strip()))
                break
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def _size(nbytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 1e3:.0f} kB"


def check_memory(nbytes: float, what: str, fix: str = "") -> None:
    """Refuse a step that needs more memory than there is, before it allocates.

    Args:
        nbytes: the estimate.
        what: the step, e.g. ``"fitting: pyramid of a 512^3 map"``.
        fix: what to change, appended to the message.

    Raises:
        DifffitInputError: naming the size needed and the size available.
    """
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise DifffitInputError(f"{what} needs about {_size(nbytes)} of memory, more than the "
                                f"{_size(avail)} available" + (f"; {fix}" if fix else ""))


def fit_memory(dmap, structures, params, extra_levels: int = 0) -> Finding | None:
    """The memory a fit takes (the map's pyramid and float64 copies, the recorded poses of
    every start) against what is available. ``extra_levels``: the coarse stage's
    (difffit.coarse.extra_levels_bound): its pyramid has that many more levels, and it
    keeps one summed volume per level shift (at most extra + 1 of them)."""
    n_vox = float(np.prod(dmap.data.shape))
    extra = int(extra_levels)
    grid = n_vox * (4 * (params.n_levels + 4 + (2 * extra + 1 if extra else 0)) + 3 * 8)
    starts = float(len(structures)) * starts_per_structure(params)
    records = (params.n_iters // params.record_every + 2) * starts * 8 * 4
    try:
        check_memory(grid + records,
                     f"fitting {len(structures)} structure(s) with {int(starts)} starts into "
                     f"a {' x '.join(map(str, dmap.shape_xyz))} map",
                     f"use fewer starts ({opt('n_rotations')}, {opt('n_positions')}) or a "
                     f"smaller map")
    except DifffitInputError as exc:
        return Finding("error", str(exc))
    return None


# ---------------------------------------------------------------------------- map


def check_map(dmap, resolution: float, threshold: float) -> list[Finding]:
    """The resolution against the voxel size and the box; the contour against the map's
    values."""
    out = []
    at = f"{dmap.path}: " if getattr(dmap, "path", None) else ""  # the file the finding is about
    vs = dmap.voxel_size
    box = np.array(dmap.shape_xyz, dtype=np.float64) * vs
    box_text = " x ".join(f"{b:.3g}" for b in box)
    if resolution > box.max():
        out.append(Finding(
            "error",
            f"{at}resolution {resolution:g} A is coarser than the map's whole box ({box_text} A, "
            f"voxel size {_vs(vs)} A): simulated maps would be featureless blobs and every "
            f"score meaningless. Give the resolution in Angstrom ({opt('resolution')}), and "
            f"check the voxel size ({opt('voxel_size')})"))
    elif resolution > box.min() / 2:
        out.append(Finding(
            "warning",
            f"{at}resolution {resolution:g} A is coarse for the map's box ({box_text} A): check "
            f"{opt('resolution')} (in Angstrom) and the voxel size ({opt('voxel_size')})"))
    if resolution < 2 * vs.max() * 0.999:
        out.append(Finding(
            "warning",
            f"{at}resolution {resolution:g} A is finer than the map can hold: with voxels of "
            f"{_vs(vs)} A the finest is {2 * vs.max():.3g} A (2 x voxel size). Check "
            f"{opt('resolution')} and the map's voxel size ({opt('voxel_size')})"))

    lo, hi = float(dmap.data.min()), float(dmap.data.max())
    values = f"the map's values run from {lo:.4g} to {hi:.4g}"
    if threshold >= hi:
        out.append(Finding(
            "error", f"{at}threshold {threshold:.4g} is at or above the map's maximum: no voxel is "
                     f"inside the contour ({values}); lower {opt('threshold')}"))
    elif threshold < lo:
        out.append(Finding(
            "error", f"{at}threshold {threshold:.4g} is below the map's minimum: every voxel is "
                     f"inside the contour, so there is no envelope to fit into and every atom "
                     f"counts as inside ({values}); raise {opt('threshold')}"))
    else:
        inside = float(np.count_nonzero(dmap.data > threshold)) / dmap.data.size
        if inside > 0.5:
            out.append(Finding(
                "warning", f"{at}{100 * inside:.0f} % of the map's box is above the contour "
                           f"{threshold:.4g} ({values}): a molecule rarely fills its box; "
                           f"is {opt('threshold')} too low?"))
    return out


def _vs(vs: np.ndarray) -> str:
    return f"{vs[0]:.4g}" if np.allclose(vs, vs[0]) else ",".join(f"{v:.4g}" for v in vs)


# --------------------------------------------------------------------- structures


def _extents(xyz: np.ndarray) -> tuple[np.ndarray, float]:
    """(principal extents [3], largest first: the standard deviations along the principal
    axes; radius of gyration) of points [N, 3]."""
    d = xyz - xyz.mean(0)
    ev = np.sort(np.clip(np.linalg.eigvalsh(d.T @ d / max(len(d), 1)), 0, None))[::-1]
    return np.sqrt(ev), float(np.sqrt(ev.sum()))


def density_extents(dmap, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """Principal extents and radius of gyration (Angstrom) of the map's voxels in
    ``mask`` [nz, ny, nx] (the density above the contour, dust removed)."""
    zyx = np.argwhere(mask)
    return _extents(zyx[:, ::-1] * dmap.voxel_size)


def check_structures(dmap, structures, mask: np.ndarray, threshold: float) -> list[Finding]:
    """Each model against the fit it is asked for: enough fitted atoms, a size the box can
    hold, a size the density at the contour can hold (and a voxel size that agrees)."""
    out = []
    vs = dmap.voxel_size
    box = np.array(dmap.shape_xyz, dtype=np.float64) * vs
    box_rg = float(np.sqrt((box ** 2).sum() / 12.0))  # of a uniform box
    box_text = " x ".join(f"{b:.3g}" for b in box)
    dens_ext, dens_rg = density_extents(dmap, mask) if mask.any() else (None, 0.0)
    for s in structures:
        fit_xyz = s.fit_coords
        sv = np.linalg.svd(fit_xyz - fit_xyz.mean(0), compute_uv=False) if len(fit_xyz) else []
        if len(fit_xyz) < MIN_FIT_ATOMS or sv[1] < 0.1:
            out.append(Finding(
                "error", f"{s.name}: {len(fit_xyz)} fitted atom(s)"
                         f"{' on one line' if len(fit_xyz) >= MIN_FIT_ATOMS else ''}: a rigid "
                         f"fit needs at least {MIN_FIT_ATOMS} atoms not on a line (the rotation "
                         f"is undetermined otherwise); choose more atoms ({opt('selection')}) "
                         f"or a larger model"))
            continue
        if len(fit_xyz) < FEW_FIT_ATOMS:
            out.append(Finding(
                "warning", f"{s.name}: only {len(fit_xyz)} fitted atoms: the placement is "
                           f"poorly determined and its scores say little"))
        body = s.coords[simulation_mask(s)]  # what its simulated map is made of: no waters
        ext, rg = _extents(body if len(body) >= MIN_FIT_ATOMS else s.coords)
        ratio = rg / box_rg
        box_finding = None
        if ratio > BOX_WARNING:
            level = "error" if ratio > BOX_ERROR else "warning"
            box_finding = Finding(
                level, f"{s.name}: the model (radius of gyration {rg:.1f} A) is {ratio:.1f} "
                       f"times the size of the map's box ({box_text} A, voxel size {_vs(vs)} "
                       f"A): " + ("at most a small part of it can lie in the map. "
                                  if level == "error" else
                                  "much of it lies outside the map in any placement. ")
                       + f"Is it the model of this map, and is the voxel size right "
                         f"({opt('voxel_size')})?")
        found = _against_density(s.name, ext, rg, dens_ext, dens_rg, vs, threshold)
        # The density's finding says more than the box's warning (not than its error).
        if box_finding is not None and (found is None or box_finding.level == "error"):
            out.append(box_finding)
        if found is not None:
            out.append(found)
    return out


def _against_density(name, ext, rg, dens_ext, dens_rg, vs, threshold) -> Finding | None:
    """The model's size and shape against the density's: a voxel size off by a factor,
    or a model too large for the density."""
    if dens_ext is None or dens_rg <= 0:
        return None
    size = rg / dens_rg
    per_axis = ext / np.maximum(dens_ext, 1e-9)
    if per_axis.min() / per_axis.max() >= UNIFORM and not (
            DENSITY_SMALLER <= size <= DENSITY_LARGER):
        factor = float(np.exp(np.log(per_axis).mean()))  # geometric mean of the three
        new = [float(f"{v:.3g}") for v in vs * factor]
        new = new[0] if np.allclose(new, new[0]) else tuple(new)
        return Finding(
            "warning",
            f"{name}: the model's size is {factor:.2f} times the size of the density above "
            f"the contour {threshold:.4g}, by the same factor along all three axes, as when "
            f"the map's voxel size ({_vs(vs)} A) is off by that factor"
            + (f"; or the contour is too high ({opt('threshold')})" if factor > 1 else
               "; or the map holds several copies of the model")
            + f". If the voxel size is wrong, fit again with {opt('voxel_size', new)}")
    if size > BOX_WARNING:
        return Finding(
            "warning", f"{name}: the model (radius of gyration {rg:.1f} A) is {size:.1f} times "
                       f"the size of the density above the contour {threshold:.4g} (radius of "
                       f"gyration {dens_rg:.1f} A): most of it cannot lie in density. Is it "
                       f"the model of this density, and is the contour ({opt('threshold')}) "
                       f"right?")
    return None


# ------------------------------------------------------------------ the workflows


def before_search(dmap, structures, resolution: float, threshold: float, params,
                  extra_levels: int = 0) -> list[Finding]:
    """Every check that can be made before a fit: map, structures, memory
    (``extra_levels``: see :func:`fit_memory`)."""
    from .preprocess import remove_dust

    out = check_map(dmap, resolution, threshold)
    mem = fit_memory(dmap, structures, params, extra_levels)
    if mem is not None:
        out.append(mem)
    if any(f.level == "error" for f in out) or not structures:
        return out
    mask = remove_dust(dmap.data > threshold, params.dust_min_size)
    return out + check_structures(dmap, structures, mask, threshold)


def check_separation(names: Sequence[str], best: Sequence[float],
                     starts: Sequence[np.ndarray], random: Sequence[np.ndarray]
                     ) -> list[Finding]:
    """Each structure's best cam against the search's other starts and random placements.

    A placement the search found is separated from chance when it stands out from both
    backgrounds: from the best poses of all starts (robustly: median and scaled median
    absolute deviation, so that starts which converged on the answer do not hide it), and
    from placements at random (mean and standard deviation). On the shared data sets a
    right model stands 3.8-50 robust deviations above its starts and 6.6-90 deviations
    above random placements (a model among many copies of itself, in a low-resolution
    filament map, is the lowest of both); the phage model under its wrong voxel size and
    a decoy too large for its density stand 1.7-2.8 and 5.3-5.9.

    Args:
        names: [M] structure names.
        best: [M] the cam of each structure's best placement.
        starts: [M] arrays, the cam of every start's best pose.
        random: [M] arrays, the cam of placements at random (a random rotation, centred
            on a random voxel inside the contour).
    """
    out = []
    for name, b, st, rnd in zip(names, best, starts, random):
        st = np.asarray(st, dtype=np.float64)
        st = st[np.isfinite(st)]
        rnd = np.asarray(rnd, dtype=np.float64)
        rnd = rnd[np.isfinite(rnd)]
        if st.size < 10 or rnd.size < 10 or not np.isfinite(b):
            continue
        med = float(np.median(st))
        mad = 1.4826 * float(np.median(np.abs(st - med)))
        z_starts = (b - med) / mad if mad > 0 else np.inf
        mean, sd = float(rnd.mean()), float(rnd.std())
        z_random = (b - mean) / sd if sd > 0 else np.inf
        if z_starts < MIN_ABOVE_STARTS and z_random < MIN_ABOVE_RANDOM:
            out.append(Finding(
                "warning", f"{name}: the best placement (cam {b:.3f}) does not stand out: it "
                           f"is {z_starts:.1f} deviations above the median of the search's "
                           f"{st.size} starts ({med:.3f}) and {z_random:.1f} above placements "
                           f"at random ({mean:.3f} +- {sd:.3f}), where a right model stands "
                           f"far above both. Either the fit has not found this model in "
                           f"the map (check that it belongs to this map, the voxel size "
                           f"({opt('voxel_size')}), {opt('resolution')} and "
                           f"{opt('threshold')}), or the map does not fix its pose (a small "
                           f"model in low-resolution density): treat the placement as "
                           f"ambiguous"))
    return out


def after_search(placements, structures, start_cam, mol_idx, metrics, pyramid, seed: int
                 ) -> list[Finding]:
    """:func:`check_separation` of a fit's placements.

    Args:
        placements: the fit's placements (``metrics["cam"]``, ``structure_index``).
        structures: [M] the fitted structures.
        start_cam, mol_idx: [S] cam of every start's best pose and the start's structure.
        metrics: the fit's :class:`difffit.metrics.Metrics`, which scores ``N_RANDOM``
            random placements of every structure.
        pyramid: the fit's pyramid (random centres are drawn from its contour mask).
        seed: the fit's seed (the random placements follow it).
    """
    import torch

    from .preprocess import envelope_positions
    from .rotations import uniform_rotations

    M = len(structures)
    quat = uniform_rotations(N_RANDOM, seed=seed + 7919).repeat(M, 1)
    trans = envelope_positions(pyramid, N_RANDOM, seed=seed + 7919).repeat(M, 1)
    mol = torch.arange(M).repeat_interleave(N_RANDOM)
    rnd = metrics(quat.double(), trans.double(), mol)["cam"].cpu().numpy().reshape(M, N_RANDOM)
    best = [-np.inf] * M
    for p in placements:
        best[p.structure_index] = max(best[p.structure_index], float(p.metrics.get("cam", np.nan)))
    start_cam = np.asarray(start_cam.cpu() if hasattr(start_cam, "cpu") else start_cam)
    mol_idx = np.asarray(mol_idx.cpu() if hasattr(mol_idx, "cpu") else mol_idx)
    return check_separation([s.name for s in structures], best,
                            [start_cam[mol_idx == i] for i in range(M)], list(rnd))
