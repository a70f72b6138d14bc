"""Xu et al.'s learnable measures (NeurIPS 2021); their singularity map,
:func:`keras_ssr.ops.learnable_singularity_strength`, is in
:mod:`keras_ssr.ops.singularity` with the other strengths."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from keras import ops as kops

from keras_ssr import _checks
from keras_ssr.ops._utils import _as_float_tensor, _check_input

__all__ = [
    "gaussian_kernel",
    "learnable_measures",
]


def gaussian_kernel(size: int, sigma: float | None = None) -> np.ndarray:
    """The original's Gaussian initial kernel for a learnable measure.

    An outer product of ``exp(-t**2 / (2 sigma**2))`` with itself, normalised
    to sum 1, ``sigma = size / 2`` by default. Like the original, the ``t``
    grid runs evenly from ``trunc(-(size - 1) / 2)`` to ``trunc((size - 1) /
    2)``: centred for odd sizes, but for even sizes it is not (``size=4``:
    -1, -1/3, 1/3, 1; ``size=2``: 0, 0, a flat kernel). Reproduced so that
    training starts where the original's does.

    Returns:
        float32 array of shape ``(size, size)``.
    """
    size = _checks.check_int("size", size, 1)
    if sigma is None:
        sigma = size / 2
    sigma = _checks.check_real("sigma", sigma, 0.0, open_minimum=True)
    half = math.trunc((size - 1) / 2)
    grid = np.linspace(-half, half, size, dtype=np.float64)
    profile = np.exp(-0.5 * grid**2 / sigma**2)
    kernel = np.outer(profile, profile)
    return (kernel / kernel.sum()).astype(np.float32)


def _measure_window(kernels: Sequence, dtype):
    """All kernels as one ``(K, K, 1, S)`` filter bank, ``K = len(kernels)``.

    Kernel ``s`` (times ``s**2``) is zero-embedded in the ``K x K`` window
    at offset ``(K - 1)//2 - (s - 1)//2``, so that one "SAME"-aligned
    convolution of side ``K`` gives every scale's own "SAME" response.
    """
    largest = len(kernels)
    window = []
    for size, kernel in enumerate(kernels, start=1):
        offset = (largest - 1) // 2 - (size - 1) // 2
        pad = [(offset, largest - size - offset)] * 2
        window.append(kops.pad(kops.cast(kernel, dtype) * float(size**2), pad))
    return kops.expand_dims(kops.stack(window, axis=-1), 2)


def _as_kernels(kernels) -> list:
    """``kernels`` (a list or tuple) as a list of floating-point tensors."""
    if isinstance(kernels, (str, bytes)) or not isinstance(kernels, Sequence):
        raise TypeError(
            "`kernels` must be a list or tuple of 2-D kernels. "
            f"Received: kernels of type {type(kernels).__name__}"
        )
    return [_as_float_tensor(f"kernels[{i}]", k) for i, k in enumerate(kernels)]


def learnable_measures(x, kernels: Sequence, data_format: str = "channels_last"):
    """Xu et al.'s data-driven measures of a 2-D map.

    For ``s = 1 .. len(kernels)``: ``relu(conv_s(x) * s**2) + 1``, where
    ``conv_s`` applies the ``s x s`` kernel ``kernels[s - 1]`` to every
    channel separately ("SAME" zero padding, cross-correlation as in
    ``keras.ops.conv``).

    Args:
        x: floating-point tensor ``(batch, height, width, channels)`` or
            ``(batch, channels, height, width)`` with a known channel count
            (or a NumPy array or nested list of floats). An empty batch gives
            an empty result.
        kernels: a list or tuple of the ``s x s`` kernels, ``s = 1, 2, ...``,
            in that order (floating-point tensors, arrays or nested lists).
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Returns:
        Tensor ``x.shape + (len(kernels),)``, every entry >= 1.
    """
    data_format = _checks.standardize_data_format(data_format)
    x = _as_float_tensor("x", x)
    _check_input(x, data_format, min_rank=4)
    if len(x.shape) != 4:
        raise ValueError(
            "`x` must be a batch of 2-D maps (rank 4). "
            f"Received: x.shape={tuple(x.shape)}"
        )
    kernels = _as_kernels(kernels)
    if len(kernels) < 1:
        raise ValueError("`kernels` must hold at least one kernel. Received: []")
    for size, kernel in enumerate(kernels, start=1):
        if tuple(kernel.shape) != (size, size):
            raise ValueError(
                f"kernels[{size - 1}] must have shape ({size}, {size}). "
                f"Received: shape={tuple(kernel.shape)}"
            )
    # Channels folded into the batch and the scales stacked as the outputs of
    # one regular convolution: XLA's depthwise convolution with a broadcast
    # kernel is ~4x slower (forward and backward) on CPU.
    largest = len(kernels)
    if data_format == "channels_last":
        x = kops.transpose(x, (0, 3, 1, 2))
    shape = kops.shape(x)
    # No -1 in the shape: it is ambiguous for an empty batch (torch refuses).
    folded = kops.reshape(x, (shape[0] * shape[1], shape[2], shape[3], 1))
    before, after = (largest - 1) // 2, largest // 2
    folded = kops.pad(folded, [(0, 0), (before, after), (before, after), (0, 0)])
    responses = kops.conv(
        folded, _measure_window(kernels, x.dtype), padding="valid"
    )  # (batch * channels, height, width, scales)
    responses = kops.reshape(
        responses, (shape[0], shape[1], shape[2], shape[3], largest)
    )
    if data_format == "channels_last":
        responses = kops.transpose(responses, (0, 2, 3, 1, 4))
    return kops.relu(responses) + 1.0
