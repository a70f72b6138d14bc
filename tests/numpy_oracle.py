"""Independent NumPy (float64) versions of the maths, written from the
definitions: box sums as explicit window sums, the slope as the textbook
centred least-squares formula. Slow and obvious on purpose."""

from __future__ import annotations

import itertools
import math

import numpy as np


def spatial_axes(ndim: int, data_format: str) -> tuple[int, ...]:
    if data_format == "channels_last":
        return tuple(range(1, ndim - 1))
    return tuple(range(2, ndim))


def box_sum(x, size: int, axes) -> np.ndarray:
    """Sum over the box of side ``size`` at every cell, TF "SAME" padding."""
    x = np.asarray(x, dtype=np.float64)
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    pad = [(0, 0)] * x.ndim
    for axis in axes:
        pad[axis] = (before, after)
    padded = np.pad(x, pad)
    out = np.zeros_like(x)
    for offsets in itertools.product(range(size), repeat=len(axes)):
        index = [slice(None)] * x.ndim
        for axis, offset in zip(axes, offsets):
            index[axis] = slice(offset, offset + x.shape[axis])
        out += padded[tuple(index)]
    return out


def min_max(x, scaling="batch", data_format="channels_last", lo=1.0, hi=256.0):
    x = np.asarray(x, dtype=np.float64)
    axes = spatial_axes(x.ndim, data_format)
    if scaling == "batch":
        axes = (0, *axes)
    mn = x.min(axis=axes, keepdims=True)
    mx = x.max(axis=axes, keepdims=True)
    return lo + (x - mn) / np.clip(mx - mn, 1e-7, 1e9) * (hi - lo)


def slope(measures, scales) -> np.ndarray:
    """Centred OLS slope of log(m + 1e-7) on log(scales), last axis."""
    log_m = np.log(np.asarray(measures, dtype=np.float64) + 1e-7)
    log_s = np.log(np.asarray(scales, dtype=np.float64))
    dm = log_m - log_m.mean(axis=-1, keepdims=True)
    ds = log_s - log_s.mean()
    return (dm * ds).sum(axis=-1) / (ds**2).sum()


def singularity_strength(x, max_scale, scaling="batch", data_format="channels_last"):
    scaled = min_max(x, scaling, data_format)
    axes = spatial_axes(scaled.ndim, data_format)
    sizes = [2**j for j in range(1, max_scale + 1)]
    measures = np.stack([box_sum(scaled, k, axes) for k in sizes], axis=-1)
    return slope(measures, sizes)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def weighted_singularity_strength(x, logits, max_scale, scaling="batch"):
    """The follow-up's weighted slope, channels last: with ``s = sigmoid(logits)``,
    ``sum_j s_j (L_j - mean L)(l_j - mean l) / sum_j s_j (l_j - mean l)**2``
    (unweighted means), ``L_j = log(box sum + 1e-7)``, ``l_j = log(2**j)``."""
    scaled = min_max(x, scaling)
    axes = spatial_axes(scaled.ndim, "channels_last")
    sides = [2**j for j in range(1, max_scale + 1)]
    big = np.stack([np.log(box_sum(scaled, k, axes) + 1e-7) for k in sides], -1)
    small = np.log(np.asarray(sides, dtype=np.float64))
    s = sigmoid(logits)
    dl = small - small.mean()
    dm = big - big.mean(axis=-1, keepdims=True)
    return (s * dm * dl).sum(axis=-1) / (s * dl**2).sum()


def soft_histogram(x, anchors, widths):
    """``softmax_k(-relu(w) * (x - a_k)**2)`` on a new last axis; one row of
    anchors, or one per channel (channels last)."""
    x = np.asarray(x, dtype=np.float64)[..., None]
    logits = -np.maximum(widths, 0.0) * (x - anchors) ** 2
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def style(x):
    """SRM's per-sample, per-channel spatial mean and ``sqrt(var + 1e-12)``,
    biased variance, channels last: two ``(batch, channels)`` arrays."""
    flat = np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1, x.shape[-1])
    return flat.mean(axis=1), np.sqrt(flat.var(axis=1) + 1e-12)


def batch_norm(z, gamma, beta, axis=-1, epsilon=1e-3):
    """Training-mode batch normalisation: moments over every axis but ``axis``."""
    z = np.asarray(z, dtype=np.float64)
    axes = tuple(a for a in range(z.ndim) if a != axis % z.ndim)
    shape = [1] * z.ndim
    shape[axis] = z.shape[axis]
    mean = z.mean(axis=axes, keepdims=True)
    variance = ((z - mean) ** 2).mean(axis=axes, keepdims=True)
    scale = np.reshape(gamma, shape) / np.sqrt(variance + epsilon)
    return (z - mean) * scale + np.reshape(beta, shape)


def shared_conv2d(x, kernel, data_format="channels_last") -> np.ndarray:
    """Cross-correlation of every channel with one square kernel, SAME."""
    x = np.asarray(x, dtype=np.float64)
    if data_format == "channels_first":
        x = np.moveaxis(x, 1, -1)
    kernel = np.asarray(kernel, dtype=np.float64)
    size = kernel.shape[0]
    before = (size - 1) // 2
    padded = np.pad(
        x, ((0, 0), (before, size - 1 - before), (before, size - 1 - before), (0, 0))
    )
    out = np.zeros_like(x)
    for i, j in itertools.product(range(size), repeat=2):
        out += kernel[i, j] * padded[:, i : i + x.shape[1], j : j + x.shape[2], :]
    if data_format == "channels_first":
        out = np.moveaxis(out, -1, 1)
    return out


def learnable_measures(x, kernels, data_format="channels_last") -> np.ndarray:
    measures = [
        np.maximum(shared_conv2d(x, k, data_format) * s**2, 0.0) + 1.0
        for s, k in enumerate(kernels, start=1)
    ]
    return np.stack(measures, axis=-1)


def gaussian_kernel(size: int) -> np.ndarray:
    """The original's grid: ``size`` points from trunc(-(s-1)/2) to trunc((s-1)/2)."""
    start, stop = math.trunc(-(size - 1) / 2), math.trunc((size - 1) / 2)
    step = 0.0 if size == 1 else (stop - start) / (size - 1)
    grid = np.array([start + i * step for i in range(size)])
    sigma = size / 2
    g = np.exp(-(grid**2) / (2 * sigma**2))
    k = np.outer(g, g)
    return k / k.sum()
