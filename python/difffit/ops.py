"""difffit's compiled kernels as PyTorch operators.

Three ops, each a ``torch.library.custom_op`` with a fake (meta) implementation so that
``torch.compile`` can trace it:

* :func:`score` - the fitting objective. For every placement (quaternion, translation,
  molecule) the mean over the molecule's atoms of the channel-weighted trilinear sample of
  a multi-channel volume, differentiable with respect to the quaternion and translation.
  The kernel computes the analytic gradients in the same pass as the score, so the
  backward pass only scales them by the incoming gradient.
* :func:`point_stats` - sums that fit metrics need (overlap, correlation, ...), sampled at
  moved weighted points, without any per-point output.
* :func:`splat` - Gaussian splatting of atoms onto a grid (simulated maps).

All three accept torch tensors (CPU or CUDA) or numpy arrays (CPU; numpy in, numpy out).
Conventions are those of ``csrc/include/difffit/math.h`` and the README: world
coordinates in Angstrom (x, y, z); volumes ``[D, H, W, C]`` = (z, y, x, channel); voxel
centres on integer indices; border clamping outside the grid; quaternions (w, x, y, z),
normalised inside the op.

The ops are registered as ``torch.ops.difffit.score``, ``.point_stats`` and ``.splat``.
The public functions below call the same implementation directly when nothing needs the
dispatcher (no tracing, no tensor subclass; :func:`_direct`), with an equivalent
``torch.autograd.Function`` for the score's eager autograd.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ._ext import load
from .errors import DifffitInputError

# Columns of point_stats, in the kernels' order (csrc/include/difffit/math.h). NUM_STATS (their
# number) and MAX_CHANNELS (most channels of a volume) come from the compiled module on first
# use, so that importing this module does not need it.
STAT_NAMES = ("sum_w", "sum_ww", "sum_d", "sum_dd", "sum_wd", "n_inside")

_FLOATS = (torch.float32, torch.float64)

# Device codes of the compiled module (csrc/bindings.cpp). _CPU_POINTWISE runs the CUDA
# kernels' per-point code on the CPU, for tests only.
_CPU, _CUDA, _CPU_POINTWISE = 0, 1, 2


@functools.lru_cache(maxsize=None)
def _kernel_constants() -> tuple[int, int]:
    """(NUM_STATS, MAX_CHANNELS) as compiled into the kernels (kNumStats, kMaxChannels)."""
    info = load().build_info()
    num_stats, max_channels = int(info["num_stats"]), int(info["max_channels"])
    if num_stats != len(STAT_NAMES):
        raise RuntimeError(f"difffit's compiled kernels write {num_stats} point statistics but this "
                           f"difffit names {len(STAT_NAMES)}: rebuild the extension")
    return num_stats, max_channels


def __getattr__(name: str):
    if name == "NUM_STATS":
        return _kernel_constants()[0]
    if name == "MAX_CHANNELS":
        return _kernel_constants()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------
# Argument checks. Everything the kernels read is checked here: a wrong shape, dtype or
# device becomes a clear error instead of an out-of-bounds read.


def _check_tensor(name: str, t: Tensor, dtype, device, shape: Sequence[int | None]) -> None:
    if not isinstance(t, Tensor):
        raise DifffitInputError(f"{name} must be a torch.Tensor or numpy array, got {type(t).__name__}")
    if t.dtype != dtype:
        raise DifffitInputError(f"{name} must have dtype {dtype}, got {t.dtype}")
    if t.device != device:
        raise DifffitInputError(f"{name} is on {t.device} but the volume is on {device}; move all inputs to one device")
    if t.dim() != len(shape) or any(s is not None and s != n for s, n in zip(shape, t.shape)):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise DifffitInputError(f"{name} must have shape {want}, got {list(t.shape)}")
    if not t.is_contiguous():
        raise DifffitInputError(f"{name} must be contiguous (call .contiguous() first)")


def _check_frame(name: str, frame: Sequence[float]) -> None:
    if len(frame) != 6:
        raise DifffitInputError(f"{name}: origin and voxel_size must have 3 values each")
    if not all(math.isfinite(f) for f in frame):
        raise DifffitInputError(f"{name}: origin and voxel_size must be finite, got {list(frame)}")
    if min(frame[3:]) <= 0:
        raise DifffitInputError(f"{name}: voxel_size must be positive, got {list(frame[3:])}")


def _check_volume(volume: Tensor) -> None:
    if not isinstance(volume, Tensor):
        raise DifffitInputError(f"volume must be a torch.Tensor or numpy array, got {type(volume).__name__}")
    if volume.dtype not in _FLOATS:
        raise DifffitInputError(f"volume must be float32 or float64, got {volume.dtype}")
    if volume.dim() != 4 or min(volume.shape) < 1:
        raise DifffitInputError(f"volume must have shape [D, H, W, C] with every size >= 1, got {list(volume.shape)}")
    max_channels = _kernel_constants()[1]
    if volume.shape[3] > max_channels:
        raise DifffitInputError(f"volume has {volume.shape[3]} channels; at most {max_channels} are supported")
    if not volume.is_contiguous():
        raise DifffitInputError("volume must be contiguous [D, H, W, C] (channels last; call .contiguous())")
    if volume.device.type not in ("cpu", "cuda"):
        raise DifffitInputError(f"volume is on {volume.device}; difffit runs on cpu and cuda")


def _check_ragged(points: Tensor, offsets: Tensor, quat: Tensor, trans: Tensor, mol_idx: Tensor,
                  dtype, device, n_cols: int = 3) -> None:
    _check_tensor("points", points, dtype, device, (None, n_cols))
    _check_tensor("offsets", offsets, torch.int64, device, (None,))
    if offsets.numel() < 2:
        raise DifffitInputError("offsets must have at least 2 entries (one molecule): [M + 1]")
    P = quat.shape[0] if quat.dim() > 0 else 0
    _check_tensor("quat", quat, dtype, device, (P, 4))
    _check_tensor("trans", trans, dtype, device, (P, 3))
    _check_tensor("mol_idx", mol_idx, torch.int64, device, (P,))


def validate_ragged(points: Tensor, offsets: Tensor, mol_idx: Tensor) -> None:
    """Data checks of a ragged batch (these read values, so they synchronise a GPU).

    Raises DifffitInputError if the offsets are not a non-decreasing cover of the points, a
    molecule has no atoms, or a placement names a molecule that does not exist.
    """
    off = offsets.detach().cpu()
    counts = off[1:] - off[:-1]
    if int(off[0]) != 0 or int(off[-1]) != points.shape[0]:
        raise DifffitInputError(
            f"offsets must start at 0 and end at the number of points ({points.shape[0]}), "
            f"got {int(off[0])} .. {int(off[-1])}")
    if bool((counts < 0).any()):
        raise DifffitInputError("offsets must be non-decreasing")
    empty = torch.nonzero(counts == 0).flatten()
    if empty.numel():
        raise DifffitInputError(f"molecule {int(empty[0])} has no atoms (empty selection?): every molecule needs at least one atom")
    if mol_idx.numel():
        lo, hi = int(mol_idx.min()), int(mol_idx.max())
        if lo < 0 or hi >= counts.numel():
            raise DifffitInputError(f"mol_idx must lie in [0, {counts.numel() - 1}], got values in [{lo}, {hi}]")


def _frame(origin: Sequence[float], voxel_size: Sequence[float]) -> list[float]:
    frame = [float(v) for v in origin] + [float(v) for v in voxel_size]
    _check_frame("volume frame", frame)
    return frame


def _device_args(t: Tensor, pointwise: bool = False) -> tuple[int, int]:
    """(device code, stream address) for the compiled module. pointwise: on the CPU, run the
    CUDA kernels' per-point code instead of the CPU kernels (tests only)."""
    if t.device.type == "cuda":
        return _CUDA, torch.cuda.current_stream(t.device).cuda_stream
    return (_CPU_POINTWISE if pointwise else _CPU), 0


def _suffix(dtype) -> str:
    return "f64" if dtype == torch.float64 else "f32"


class _DeviceGuard:
    """Makes the tensor's CUDA device current during a kernel launch (no-op on the CPU)."""

    def __init__(self, t: Tensor):
        self._ctx = torch.cuda.device(t.device) if t.device.type == "cuda" else None

    def __enter__(self):
        if self._ctx is not None:
            self._ctx.__enter__()

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.__exit__(*exc)


# ----------------------------------------------------------------------------------------
# score


def _channel_sum(volume: Tensor, weights: Tensor) -> Tensor:
    """[D, H, W, C] volume, [C] weights -> [D, H, W, 1] weighted sum of the channels."""
    if volume.device.type != "cpu":
        return (volume @ weights).unsqueeze(-1).contiguous()
    out = torch.empty(volume.shape[:3] + (1,), dtype=volume.dtype)
    getattr(load(), "channel_sum_" + _suffix(volume.dtype))(
        volume.data_ptr(), out.numel(), volume.shape[3], weights.data_ptr(), out.data_ptr())
    return out


def _score_impl(volume: Tensor, weights: Tensor, frame: list[float], points: Tensor,
                offsets: Tensor, quat: Tensor, trans: Tensor,
                mol_idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return _run_score(volume, weights, frame, points, offsets, quat, trans, mol_idx)


def _run_score(volume, weights, frame, points, offsets, quat, trans, mol_idx,
               pointwise: bool = False, grads: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """_score_impl; pointwise as in _device_args. ``grads=False`` on the CPU: the score
    alone (the same values; the gradients returned are None)."""
    _check_volume(volume)
    dtype, device = volume.dtype, volume.device
    _check_tensor("weights", weights, dtype, device, (volume.shape[3],))
    _check_frame("score", frame)
    _check_ragged(points, offsets, quat, trans, mol_idx, dtype, device)
    P = quat.shape[0]
    n_mol = offsets.numel() - 1
    # Trilinear sampling is linear in the volume, so sampling sum_c w_c V_c equals
    # weighting the samples of each V_c. Summing the channels first is one pass over the
    # volume; it pays once the samples (counted without a device sync: P x mean atoms per
    # molecule) exceed voxels / 8 on a GPU (each sample reads 8 corners of every channel)
    # and voxels / 64 on the CPU, where the one-channel float32 kernel is also several
    # times faster per sample than the multi-channel one.
    ratio = 64 if volume.device.type == "cpu" else 8
    if volume.shape[3] > 1 and ratio * P * points.shape[0] >= n_mol * volume[..., 0].numel():
        volume = _channel_sum(volume, weights)
        weights = torch.ones(1, dtype=dtype, device=device)
    score = torch.empty(P, dtype=dtype, device=device)
    grads = grads or pointwise or device.type != "cpu"
    grad_q = torch.empty(P, 4, dtype=dtype, device=device) if grads else None
    grad_t = torch.empty(P, 3, dtype=dtype, device=device) if grads else None
    dev, stream = _device_args(volume, pointwise)
    with _DeviceGuard(volume):
        getattr(load(), "score_" + _suffix(dtype))(
            dev, volume.data_ptr(), list(volume.shape), frame[:3], frame[3:], weights.data_ptr(),
            points.data_ptr(), offsets.data_ptr(), offsets.numel() - 1, quat.data_ptr(),
            trans.data_ptr(), mol_idx.data_ptr(), P, score.data_ptr(),
            grad_q.data_ptr() if grads else 0, grad_t.data_ptr() if grads else 0, stream)
    return score, grad_q, grad_t


_score_op = torch.library.custom_op("difffit::score", _score_impl, mutates_args=())


@_score_op.register_fake
def _(volume, weights, frame, points, offsets, quat, trans, mol_idx):
    P = quat.shape[0]
    return quat.new_empty(P), quat.new_empty(P, 4), quat.new_empty(P, 3)


def _score_setup(ctx, inputs, output):
    _, grad_q, grad_t = output
    ctx.save_for_backward(grad_q, grad_t)
    ctx.mark_non_differentiable(grad_q, grad_t)


def _score_backward(ctx, g_score, _g_grad_q, _g_grad_t):
    # The forward pass already computed d score / d (q, t) per placement: scale them.
    grad_q, grad_t = ctx.saved_tensors
    g = g_score.unsqueeze(-1)
    return None, None, None, None, None, g * grad_q, g * grad_t, None


_score_op.register_autograd(_score_backward, setup_context=_score_setup)


# ----------------------------------------------------------------------------------------
# point statistics


def _stats_impl(volume: Tensor, frame: list[float], points: Tensor, point_weights: Tensor,
                offsets: Tensor, quat: Tensor, trans: Tensor, mol_idx: Tensor, channel: int,
                threshold: float) -> Tensor:
    return _run_stats(volume, frame, points, point_weights, offsets, quat, trans, mol_idx,
                      channel, threshold)


def _run_stats(volume, frame, points, point_weights, offsets, quat, trans, mol_idx, channel,
               threshold, pointwise: bool = False) -> Tensor:
    """_stats_impl; pointwise as in _device_args."""
    _check_volume(volume)
    dtype, device = volume.dtype, volume.device
    _check_frame("point_stats", frame)
    _check_ragged(points, offsets, quat, trans, mol_idx, dtype, device)
    _check_tensor("point_weights", point_weights, dtype, device, (points.shape[0],))
    if not 0 <= channel < volume.shape[3]:
        raise DifffitInputError(f"channel must lie in [0, {volume.shape[3] - 1}], got {channel}")
    P = quat.shape[0]
    stats = torch.empty(P, _kernel_constants()[0], dtype=dtype, device=device)
    dev, stream = _device_args(volume, pointwise)
    with _DeviceGuard(volume):
        getattr(load(), "stats_" + _suffix(dtype))(
            dev, volume.data_ptr(), list(volume.shape), frame[:3], frame[3:], channel,
            float(threshold), points.data_ptr(), point_weights.data_ptr(), offsets.data_ptr(),
            offsets.numel() - 1, quat.data_ptr(), trans.data_ptr(), mol_idx.data_ptr(), P,
            stats.data_ptr(), stream)
    return stats


_stats_op = torch.library.custom_op("difffit::point_stats", _stats_impl, mutates_args=())


@_stats_op.register_fake
def _(volume, frame, points, point_weights, offsets, quat, trans, mol_idx, channel, threshold):
    return quat.new_empty(quat.shape[0], _kernel_constants()[0])


# ----------------------------------------------------------------------------------------
# splatting


def _splat_impl(points: Tensor, amplitudes: Tensor, sigma: float, cutoff: float,
                shape: list[int], frame: list[float]) -> Tensor:
    if points.dtype not in _FLOATS:
        raise DifffitInputError(f"points must be float32 or float64, got {points.dtype}")
    dtype, device = points.dtype, points.device
    _check_tensor("points", points, dtype, device, (None, 3))
    _check_tensor("amplitudes", amplitudes, dtype, device, (points.shape[0],))
    _check_frame("splat", frame)
    if len(shape) != 3 or min(shape) < 1:
        raise DifffitInputError(f"shape must be 3 positive sizes (nz, ny, nx), got {list(shape)}")
    if not (sigma > 0 and cutoff > 0):
        raise DifffitInputError(f"sigma and cutoff must be positive, got {sigma}, {cutoff}")
    grid = torch.zeros(shape, dtype=dtype, device=device)
    dev, stream = _device_args(points)
    with _DeviceGuard(points):
        getattr(load(), "splat_" + _suffix(dtype))(
            dev, points.data_ptr(), amplitudes.data_ptr(), points.shape[0], float(sigma),
            float(cutoff), grid.data_ptr(), list(shape), frame[:3], frame[3:], stream)
    return grid


_splat_op = torch.library.custom_op("difffit::splat", _splat_impl, mutates_args=())


@_splat_op.register_fake
def _(points, amplitudes, sigma, cutoff, shape, frame):
    return points.new_empty(shape)


# ----------------------------------------------------------------------------------------
# Public API


def _direct(*tensors: Tensor) -> bool:
    """Whether a public function may call an op's implementation directly instead of going
    through the torch.library dispatcher: outside torch.compile / export tracing, and on
    plain tensors (no subclass, e.g. no FakeTensor). The result is the same; the direct call
    skips the dispatcher (tens of microseconds per call) and, on a process's first call,
    the import of torch._dynamo that the dispatcher triggers (about a second, which was
    most of a command-line fit). Tracing and tensor subclasses take the registered op.
    """
    return not torch.compiler.is_compiling() and all(type(t) is Tensor for t in tensors)


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _impl_or_op(impl, op, *tensors: Tensor):
    """The implementation where nothing needs the dispatcher or autograd, else the op."""
    return impl if _direct(*tensors) and not _needs_grad(*tensors) else op


class _ScoreFunction(torch.autograd.Function):
    """Eager autograd of the score, the same as the op's registered autograd (the forward
    keeps the analytic gradients, the backward scales them) without the dispatcher."""

    @staticmethod
    def forward(ctx, volume, weights, frame, points, offsets, quat, trans, mol_idx):
        score, grad_q, grad_t = _score_impl(volume, weights, frame, points, offsets, quat,
                                            trans, mol_idx)
        ctx.save_for_backward(grad_q, grad_t)
        return score

    @staticmethod
    def backward(ctx, g_score):
        return _score_backward(ctx, g_score, None, None)


def _to_torch(*arrays):
    """Converts numpy arrays to tensors; returns (tensors, whether any input was numpy)."""
    was_numpy = any(isinstance(a, np.ndarray) for a in arrays)
    out = [torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a for a in arrays]
    return out, was_numpy


def _out(t: Tensor, numpy: bool):
    return t.detach().cpu().numpy() if numpy else t


def score_with_grad(volume: Tensor, weights: Tensor, origin: Sequence[float],
                    voxel_size: Sequence[float], points: Tensor, offsets: Tensor, quat: Tensor,
                    trans: Tensor, mol_idx: Tensor, validate: bool = True):
    """Fused score and analytic gradients for a ragged batch of placements.

    Args:
        volume: [D, H, W, C] float32/float64, channels (pyramid levels) last.
        weights: [C] per-channel weights.
        origin, voxel_size: 3 floats each (x, y, z), Angstrom.
        points: [A, 3] centred atom coordinates of all molecules, concatenated.
        offsets: [M + 1] int64; molecule m owns points[offsets[m]:offsets[m + 1]].
        quat: [P, 4] (w, x, y, z), need not be normalised.
        trans: [P, 3] where each molecule's centroid lands.
        mol_idx: [P] int64 molecule of each placement.
        validate: check offsets and mol_idx values (synchronises a GPU; the fitter checks
            once and then passes False).

    Returns:
        (score [P], grad_q [P, 4], grad_t [P, 3]): score = (1/N) sum_i sum_c w_c V_c(R x_i + t),
        and its gradients with respect to quat (through the normalisation) and trans.
    """
    (volume, weights, points, offsets, quat, trans, mol_idx), numpy = _to_torch(
        volume, weights, points, offsets, quat, trans, mol_idx)
    if validate:
        validate_ragged(points, offsets, mol_idx)
    op = _impl_or_op(_score_impl, _score_op, volume, weights, points, quat, trans)
    s, gq, gt = op(volume, weights, _frame(origin, voxel_size), points, offsets, quat, trans, mol_idx)
    return _out(s, numpy), _out(gq, numpy), _out(gt, numpy)


def score(volume: Tensor, weights: Tensor, origin: Sequence[float], voxel_size: Sequence[float],
          points: Tensor, offsets: Tensor, quat: Tensor, trans: Tensor, mol_idx: Tensor,
          validate: bool = True) -> Tensor:
    """Mean weighted density per placement, differentiable with respect to quat and trans.

    Arguments as :func:`score_with_grad`. Returns score [P]. Gradients flow to ``quat`` and
    ``trans`` only (the volume, weights and points are constants of the fit).
    """
    (volume, weights, points, offsets, quat, trans, mol_idx), numpy = _to_torch(
        volume, weights, points, offsets, quat, trans, mol_idx)
    if validate:
        validate_ragged(points, offsets, mol_idx)
    args = (volume, weights, _frame(origin, voxel_size), points, offsets, quat, trans, mol_idx)
    tensors = (volume, weights, points, quat, trans)
    if not _direct(*tensors):
        s = _score_op(*args)[0]
    elif _needs_grad(*tensors):
        s = _ScoreFunction.apply(*args)
    else:  # no autograd: the kernel's score-only form where it has one
        s = _run_score(*args, grads=False)[0]
    return _out(s, numpy)


def point_stats(volume: Tensor, origin: Sequence[float], voxel_size: Sequence[float],
                points: Tensor, point_weights: Tensor, offsets: Tensor, quat: Tensor,
                trans: Tensor, mol_idx: Tensor, channel: int = 0, threshold: float = 0.0,
                validate: bool = True) -> Tensor:
    """Per-placement sums for fit metrics, sampled at moved weighted points.

    Args:
        volume: [D, H, W, C]; only ``channel`` is sampled.
        points: [A, 3] centred points (atoms, or grid points of a simulated map).
        point_weights: [A] weight w of each point (e.g. simulated density there).
        threshold: a sampled density d > threshold counts as inside the contour.
        Other arguments as :func:`score_with_grad`.

    Returns:
        [P, 6] columns ``STAT_NAMES``: sum w, sum w^2, sum d, sum d^2, sum w d, count(d > threshold).
    """
    (volume, points, point_weights, offsets, quat, trans, mol_idx), numpy = _to_torch(
        volume, points, point_weights, offsets, quat, trans, mol_idx)
    if validate:
        validate_ragged(points, offsets, mol_idx)
    op = _impl_or_op(_stats_impl, _stats_op, volume, points, point_weights, quat, trans)
    s = op(volume, _frame(origin, voxel_size), points, point_weights, offsets, quat, trans,
           mol_idx, int(channel), float(threshold))
    return _out(s, numpy)


def splat(points: Tensor, amplitudes: Tensor, sigma: float, cutoff: float,
          shape: Sequence[int], origin: Sequence[float], voxel_size: Sequence[float]) -> Tensor:
    """Sum of truncated Gaussians, amplitude * exp(-r^2 / (2 sigma^2)) for r <= cutoff * sigma.

    Args:
        points: [A, 3] world coordinates (Angstrom).
        amplitudes: [A] e.g. atomic numbers (ChimeraX molmap).
        sigma: Gaussian width in Angstrom (molmap: 0.225 x resolution).
        cutoff: truncation radius in units of sigma (molmap: 5).
        shape: (nz, ny, nx) of the output grid; origin, voxel_size: its frame (x, y, z).

    Returns:
        [nz, ny, nx] grid.
    """
    (points, amplitudes), numpy = _to_torch(points, amplitudes)
    op = _impl_or_op(_splat_impl, _splat_op, points, amplitudes)
    g = op(points, amplitudes, float(sigma), float(cutoff), [int(s) for s in shape],
           _frame(origin, voxel_size))
    return _out(g, numpy)


def envelopes(points: np.ndarray, amplitudes: np.ndarray, offsets: np.ndarray,
              grids: np.ndarray, frames: np.ndarray, sigma: float, cutoff: float,
              fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Envelopes of many structures at once, on the CPU: each structure's Gaussians (as
    :func:`splat`) on its own grid, clipped at 0, and the grid points at or above the
    level that encloses ``fraction`` of its density (molmap's display contour;
    :func:`difffit.simulate.molmap_envelope` is the one-structure reference).

    Args:
        points: [A, 3] float32 or float64, each structure's in its own frame;
            amplitudes: [A], same dtype.
        offsets: [M + 1] int64: structure m's points are offsets[m] .. offsets[m + 1].
        grids: [M, 7] float64: origin x, y, z, spacing, nx, ny, nz of each grid (in the
            structure's frame).
        frames: [M, 12] float64: the axes [3, 3] (as columns) row-major, then the origin
            [3], of each structure's frame: world = axes @ local + origin.

    Returns:
        (world coordinates [K, 3] float64, values [K], counts [M] int64), the
        structures' envelopes one after another.
    """
    dtype = np.float32 if np.asarray(points).dtype == np.float32 else np.float64
    pts = np.ascontiguousarray(points, dtype=dtype).reshape(-1, 3)
    amp = np.ascontiguousarray(amplitudes, dtype=dtype).reshape(-1)
    off = np.ascontiguousarray(offsets, dtype=np.int64).reshape(-1)
    g = np.ascontiguousarray(grids, dtype=np.float64).reshape(-1, 7)
    fr = np.ascontiguousarray(frames, dtype=np.float64).reshape(-1, 12)
    M = len(off) - 1
    if M < 0 or len(g) != M or len(fr) != M or len(amp) != len(pts) or off[-1] != len(pts):
        raise DifffitInputError(f"envelopes: {len(pts)} points, {len(amp)} amplitudes, "
                                f"{len(off)} offsets, {len(g)} grids and {len(fr)} frames "
                                f"do not agree")
    if np.any(g[:, 4:] != np.round(g[:, 4:])) or np.any(g[:, 4:] < 1) or np.any(g[:, 3] <= 0):
        raise DifffitInputError("envelopes: grid sizes must be positive whole numbers and "
                                "spacings positive")
    fn = getattr(load(), "envelopes_" + ("f32" if dtype == np.float32 else "f64"))
    return fn(pts.ctypes.data, amp.ctypes.data, off.ctypes.data, M, g.ctypes.data,
              fr.ctypes.data, float(sigma), float(cutoff), float(fraction))


def kmeans_steps(points: np.ndarray, offsets: np.ndarray, centres: np.ndarray,
                 centre_offsets: np.ndarray, iters: int) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd steps of k-means (unit weights) on many point sets at once, on the CPU,
    parallel over the sets (:func:`difffit.gmm.kmeans` with ``init`` is the one-set
    reference: the same steps, the same stop when no label changes, the same re-seeding
    of a centre left without points).

    Args:
        points: [A, 3]; offsets: [M + 1] int64: set m is points[offsets[m]:offsets[m + 1]].
        centres: [C, 3] starting centres; centre_offsets: [M + 1]: set m's centres
            (at least 1, at most its point count).
        iters: at most this many steps.

    Returns:
        (centres [C, 3] float64, labels [A] int64: each point's centre within its set).
    """
    pts = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    off = np.ascontiguousarray(offsets, dtype=np.int64).reshape(-1)
    c = np.array(centres, dtype=np.float64, order="C").reshape(-1, 3)
    c_off = np.ascontiguousarray(centre_offsets, dtype=np.int64).reshape(-1)
    if (len(off) != len(c_off) or len(off) == 0 or off[0] != 0 or c_off[0] != 0
            or off[-1] != len(pts) or c_off[-1] != len(c) or np.any(np.diff(off) < 0)
            or np.any(np.diff(c_off) < 0)):
        raise DifffitInputError(f"kmeans_steps: {len(pts)} points in {len(off) - 1} sets and "
                                f"{len(c)} centres in {len(c_off) - 1} sets do not agree")
    labels = np.zeros(len(pts), dtype=np.int64)
    load().kmeans(pts.ctypes.data, off.ctypes.data, len(off) - 1, c.ctypes.data,
                  c_off.ctypes.data, int(iters), labels.ctypes.data)
    return c, labels
