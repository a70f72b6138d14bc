"""The maths of the follow-up's recalibration family, in ``keras.ops``.

Martins et al.'s "Multifractal Recalibration of Neural Networks for Medical
Imaging Segmentation" compares SSR with style (SRM), frequency (FCA) and
multifractal gates. The layers in :mod:`keras_ssr.layers.recalibration` and
:mod:`keras_ssr.layers.multifractal` compose these functions:

- :func:`weighted_ols_slope` / :func:`weighted_singularity_strength`: the
  singularity strength with learnable, sigmoid-squashed weights per scale;
- :func:`soft_histogram`: a softmax soft assignment of every entry to ``K``
  learnable anchors;
- :func:`cosine_bases` / :func:`frequency_pool`: FcaNet's multi-spectral
  pooling, computed from separable one-dimensional bases;
- :func:`style_pool`: SRM's per-channel mean and standard deviation.

Every function works on one, two or three spatial axes, in either
``data_format``, and computes in float32 at least whatever the input dtype.
"""

from __future__ import annotations

import itertools
import math

import keras
import numpy as np
from keras import ops as kops

from keras_ssr import _checks, distributed
from keras_ssr.ops._utils import (
    _as_float_tensor,
    _check_input,
    _check_scales,
    _compiled_on_jax,
    _float32_or_wider,
    _is_empty,
)
from keras_ssr.ops.reductions import _axis_mean, _axis_sum, centered_moments
from keras_ssr.ops.singularity import (
    EPSILON,
    MAX_SCALE_LIMIT,
    _weighted_strength_with_gradient,
    dyadic_scales,
)

#: Added to the variance before SRM's square root (the follow-up's value).
STYLE_EPSILON = 1e-12
#: The two cosine bases FCA can use (see :func:`cosine_bases`).
BASES = ("transposed_dct", "dct")
#: Former names of :data:`BASES`, still accepted (deprecated).
RENAMED_BASES = {"followup": "transposed_dct"}
#: :func:`frequency_pool` weights the map by one table of the separable bases'
#: products up to this many entries (a constant of 16 MiB), and axis by axis
#: beyond.
FULL_TABLE_ENTRIES = 2**22

__all__ = [
    "BASES",
    "STYLE_EPSILON",
    "cosine_bases",
    "frequency_groups",
    "frequency_pool",
    "soft_histogram",
    "style_pool",
    "weighted_ols_coefficients",
    "weighted_ols_slope",
    "weighted_singularity_strength",
]


# --------------------------------------------------------------------------
# Weighted slope


def weighted_ols_coefficients(weights, scales):
    """Coefficients ``c`` with ``slope = sum_j c_j * log(measure_j)``.

    The follow-up's weighted slope is

    .. math::

        \\hat\\alpha = \\frac{\\sum_j s_j (L_j - \\bar L)(l_j - \\bar l)}
                             {\\sum_j s_j (l_j - \\bar l)^2},
        \\qquad s_j = \\sigma(w_j),\\ l_j = \\log k_j,

    with **unweighted** means ``bar L``, ``bar l`` (so it is not weighted
    least squares unless all ``s_j`` are equal, when it is the ordinary
    slope). It is linear in the log-measures ``L``:
    ``c_j = (s_j d_j - mean_i(s_i d_i)) / sum_i s_i d_i**2`` with
    ``d = l - mean(l)``.

    Args:
        weights: tensor of shape ``(len(scales),)``, the raw (pre-sigmoid)
            weight of every scale.
        scales: the box sides ``k_j``, at least two distinct positive values.

    Returns:
        Tensor of shape ``(len(scales),)`` in the dtype of ``weights``
        (float32 at least); differentiable with respect to ``weights``.
    """
    scales = _check_scales(scales)
    centred = np.log(scales) - np.log(scales).mean()
    weights = _float32_or_wider(_as_float_tensor("weights", weights))
    if tuple(weights.shape) != (scales.size,):
        raise ValueError(
            f"`weights` must have shape ({scales.size},), one per scale. "
            f"Received: weights.shape={tuple(weights.shape)}"
        )
    dtype = keras.backend.standardize_dtype(weights.dtype)
    d, d2 = (kops.convert_to_tensor(v.astype(dtype)) for v in (centred, centred**2))
    s = kops.sigmoid(weights)
    numerator = s * d - _axis_mean(s * d, (0,), False)
    return numerator / kops.sum(s * d2)


def weighted_ols_slope(measures, weights, scales):
    """The follow-up's weighted slope of ``log(measures + 1e-7)`` on ``log(scales)``.

    See :func:`weighted_ols_coefficients` for the formula. With all
    ``weights`` equal it is :func:`keras_ssr.ops.ols_slope`.

    Args:
        measures: positive tensor whose last axis runs over the scales.
        weights: ``(len(scales),)`` raw weights (the ``ols.weights``).
        scales: the scale of each entry of the last axis.

    Returns:
        ``measures`` without its last axis, float32 at least.
    """
    measures = _as_float_tensor("measures", measures)
    if len(measures.shape) < 1 or (
        measures.shape[-1] is not None and measures.shape[-1] != len(scales)
    ):
        raise ValueError(
            f"The last axis of `measures` must have one entry per scale "
            f"({len(scales)}). Received: measures.shape={tuple(measures.shape)}"
        )
    measures = _float32_or_wider(measures)
    coefficients = kops.cast(weighted_ols_coefficients(weights, scales), measures.dtype)
    # The coefficients sum to zero, so centring the log-measures over the
    # scales changes nothing but shrinks the terms of the weights' gradient
    # (a long sum over every pixel) and with them its float32 rounding.
    logs = kops.log(measures + EPSILON)
    logs = logs - kops.mean(logs, axis=-1, keepdims=True)
    return kops.sum(logs * coefficients, axis=-1)


def weighted_singularity_strength(
    x,
    weights,
    max_scale: int,
    scaling: str = "batch",
    data_format: str = "channels_last",
    synchronized: bool = True,
):
    """The singularity strength with learnable weights per scale.

    Min-max scaling onto ``[1, 256]`` (:func:`keras_ssr.ops.min_max_scale`),
    box sums of sides ``2 .. 2**max_scale``
    (:func:`keras_ssr.ops.box_sums`), then :func:`weighted_ols_slope`.

    Args:
        x: floating-point tensor with 1, 2 or 3 spatial axes.
        weights: ``(max_scale,)`` raw weights, one per scale.
        max_scale: number of dyadic scales, ``2 <= max_scale <= 16``.
        scaling: ``"batch"`` (the follow-up: bounds over the whole batch) or
            ``"sample"`` (per sample).
        data_format: ``"channels_last"`` or ``"channels_first"``.
        synchronized: with ``scaling="batch"`` under data parallelism,
            whether the min-max bounds are taken over the global batch (all
            replicas, :mod:`keras_ssr.distributed`) rather than each
            replica's own (see :func:`keras_ssr.ops.min_max_scale`).

    Returns:
        Tensor of the shape of ``x``, float32 (float64 for float64 input).

    Raises:
        TypeError: for non-float ``x`` or ``weights``, a non-integer
            ``max_scale`` or a non-bool ``synchronized``.
        ValueError: for ``max_scale`` outside ``[2, 16]``, an unknown
            ``scaling`` or ``data_format``, or an input of the wrong rank.
    """
    max_scale = _checks.check_int("max_scale", max_scale, 2, MAX_SCALE_LIMIT)
    scaling = _checks.check_scaling(scaling)
    data_format = _checks.standardize_data_format(data_format)
    synchronized = _checks.check_bool("synchronized", synchronized)
    x = _as_float_tensor("x", x)
    spatial = _check_input(x, data_format)
    x = _float32_or_wider(x)
    weights = kops.cast(_as_float_tensor("weights", weights), x.dtype)
    coefficients = weighted_ols_coefficients(weights, dyadic_scales(max_scale))
    axes = (0, *spatial) if scaling == "batch" else spatial
    if _is_empty(x) and not distributed.spans_replicas(axes, synchronized):
        return x  # no extrema, no slope: the empty map
    return _weighted_strength(
        x, coefficients, max_scale, scaling, data_format, synchronized
    )


@_compiled_on_jax(tensors=2)
def _weighted_strength(x, coefficients, max_scale, scaling, data_format, synchronized):
    spatial = _check_input(x, data_format)
    strength = _weighted_strength_with_gradient(
        max_scale,
        scaling,
        spatial,
        data_format,
        bool(synchronized) and scaling == "batch",
        keras.backend.standardize_dtype(x.dtype),
    )
    return strength(x, kops.cast(coefficients, x.dtype))


# --------------------------------------------------------------------------
# Soft histogram


def soft_histogram(x, anchors, widths, data_format: str = "channels_last"):
    """Soft assignment of every entry to ``K`` anchors (a soft histogram).

    For an entry ``a`` of channel ``c`` and anchor ``k``:
    ``softmax_k(-relu(widths[c', k]) * (a - anchors[c', k])**2)``, where
    ``c' = c`` when ``anchors`` has one row per channel and ``c' = 0`` when
    it has a single row shared by all channels. Sums to 1 over ``k``.

    Args:
        x: floating-point tensor ``(batch, *spatial, channels)`` or
            ``(batch, channels, *spatial)``, any number of spatial axes.
        anchors, widths: ``(A, K)`` tensors, ``A`` = 1 or the channel count.
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Returns:
        Tensor ``x.shape + (K,)``, float32 at least.
    """
    data_format = _checks.standardize_data_format(data_format)
    x = _float32_or_wider(_as_float_tensor("x", x))
    anchors = kops.cast(_as_float_tensor("anchors", anchors), x.dtype)
    widths = kops.cast(_as_float_tensor("widths", widths), x.dtype)
    if len(anchors.shape) != 2 or tuple(anchors.shape) != tuple(widths.shape):
        raise ValueError(
            "`anchors` and `widths` must both have shape (A, K). Received: "
            f"anchors.shape={tuple(anchors.shape)}, widths.shape={tuple(widths.shape)}"
        )
    ndim = len(x.shape)
    if data_format == "channels_first" and anchors.shape[0] != 1 and ndim > 2:
        # Put the anchors' row axis on the channel axis (1) of x[..., None].
        shape = (anchors.shape[0],) + (1,) * (ndim - 2) + (anchors.shape[1],)
        anchors = kops.reshape(anchors, shape)
        widths = kops.reshape(widths, shape)
    distance = kops.square(kops.expand_dims(x, -1) - anchors)
    logits = -kops.relu(widths) * distance
    # The softmax runs on a (entries, K) matrix: TensorFlow's oneDNN CPU
    # kernel (on by default on Intel CPUs) refuses inputs of rank above 5,
    # which a 3-D map's (batch, d, h, w, c, K) is.
    shape = kops.shape(logits)
    flat = kops.reshape(logits, (-1, anchors.shape[-1]))
    return kops.reshape(kops.softmax(flat, axis=-1), shape)


# --------------------------------------------------------------------------
# Cosine bases and frequency pooling


def cosine_bases(size: int, low_freq: int, basis: str = "transposed_dct") -> np.ndarray:
    """The one-dimensional cosine bases of FCA, ``(low_freq, size)``, float64.

    Row ``u`` at position ``i``:

    - ``"transposed_dct"`` (the follow-up's code; formerly ``"followup"``):
      ``cos(pi * i * (u + 1/2) / size)``, the first rows of the transposed
      DCT-II matrix: position and frequency are swapped, so row 0 is not
      constant;
    - ``"dct"`` (FcaNet's DCT-II, Qin et al. 2021):
      ``cos(pi * u * (i + 1/2) / size)``; row 0 is all ones.

    A 2-D basis is the outer product of two rows, ``b_uv(i, j) =
    B_H[u, i] * B_W[v, j]``, so only ``low_freq`` rows per axis are needed.
    """
    size = _checks.check_int("size", size, 1)
    low_freq = _checks.check_int("low_freq", low_freq, 1)
    basis = _checks.check_choice("basis", basis, BASES, RENAMED_BASES)
    u = np.arange(low_freq, dtype=np.float64)[:, None]
    i = np.arange(size, dtype=np.float64)[None, :]
    if basis == "transposed_dct":
        return np.cos(np.pi * i * (u + 0.5) / size)
    return np.cos(np.pi * u * (i + 0.5) / size)


def frequency_groups(channels: int, low_freq: int, rank: int) -> np.ndarray:
    """The frequency of every channel on every spatial axis, ``(rank, channels)``.

    Channels are split into ``low_freq**rank`` contiguous groups of equal
    size; group ``g`` has the frequencies of ``g``'s base-``low_freq``
    digits, most significant first (in 2-D: ``g = u * low_freq + v``, the
    follow-up's order).
    """
    groups = low_freq**rank
    if channels % groups:
        raise ValueError(
            f"The channel count must be divisible by low_freq**{rank} = {groups}. "
            f"Received: channels={channels}, low_freq={low_freq}"
        )
    per_group = channels // groups
    digits = np.array(list(itertools.product(range(low_freq), repeat=rank)))
    return np.repeat(digits, per_group, axis=0).T


def frequency_pool(
    x,
    low_freq: int,
    basis: str = "transposed_dct",
    data_format: str = "channels_last",
):
    """FCA's multi-spectral pooling: one frequency component per channel.

    Channel ``c`` in group ``g`` (see :func:`frequency_groups`) gives
    ``sum_p b_g(p) x_c(p)`` over the spatial positions ``p``, with ``b_g``
    the separable cosine basis of :func:`cosine_bases`. Computed axis by
    axis: the input is weighted by one ``(size, channels)`` table and
    summed over one spatial axis at a time, so nothing larger than ``x`` is
    ever formed (the follow-up's code builds an ``H x H x C x C`` array).
    On square 2-D maps this equals the follow-up's result exactly; it also
    takes non-square, 1-D and 3-D maps (``low_freq**d`` groups in ``d``-D).

    Args:
        x: floating-point tensor with 1, 2 or 3 spatial axes of static size
            and ``channels`` divisible by ``low_freq**d``.
        low_freq: number of frequencies per spatial axis, at least 1.
        basis: ``"transposed_dct"`` or ``"dct"`` (:func:`cosine_bases`).
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Returns:
        Tensor ``(batch, channels)``, float32 at least.
    """
    data_format = _checks.standardize_data_format(data_format)
    low_freq = _checks.check_int("low_freq", low_freq, 1)
    basis = _checks.check_choice("basis", basis, BASES, RENAMED_BASES)
    x = _as_float_tensor("x", x)
    spatial = _check_input(x, data_format)
    sizes = [x.shape[a] for a in spatial]
    if any(size is None for size in sizes):
        raise ValueError(
            "frequency_pool needs static spatial sizes to build its bases. "
            f"Received: x.shape={tuple(x.shape)}"
        )
    channels = x.shape[_checks.channel_axis(data_format, len(x.shape))]
    freqs = frequency_groups(channels, low_freq, len(spatial))
    y = _float32_or_wider(x)
    tables = [cosine_bases(n, low_freq, basis)[f] for n, f in zip(sizes, freqs)]
    if math.prod(sizes) * len(freqs[0]) <= FULL_TABLE_ENTRIES:
        # One weighted sum: the product of the axes' tables, (C, *sizes).
        table = tables[0]
        for t in tables[1:]:
            table = table[..., None] * t.reshape(
                t.shape[:1] + (1,) * (table.ndim - 1) + t.shape[1:]
            )
        if data_format == "channels_last":
            table = np.moveaxis(table, 0, -1)
        table = kops.convert_to_tensor(table[None], dtype=y.dtype)
        return _axis_sum(y * table, spatial, False)
    # Axis by axis, the last spatial axis first so the others keep their places.
    for k in reversed(range(len(spatial))):
        table = tables[k]  # (C, size)
        ndim = len(y.shape)
        axis = spatial[k]
        channel = _checks.channel_axis(data_format, ndim)
        shape = [1] * ndim
        shape[axis] = sizes[k]
        shape[channel] = table.shape[0]
        order = (1, 0) if axis < channel else (0, 1)
        table = np.transpose(table, order).reshape(shape)
        y = kops.sum(y * kops.convert_to_tensor(table, dtype=y.dtype), axis=axis)
    return y


# --------------------------------------------------------------------------
# Style pooling


def style_pool(x, data_format: str = "channels_last"):
    """SRM's style statistics: per-channel spatial mean and standard deviation.

    ``mean_c`` and ``sqrt(var_c + 1e-12)`` with the biased variance, both
    over the spatial axes of each sample (two passes, axis by axis, so that
    float32 does not cancel).

    Returns:
        ``(mean, std)``, two ``(batch, channels)`` tensors, float32 at least.
    """
    data_format = _checks.standardize_data_format(data_format)
    x = _as_float_tensor("x", x)
    spatial = _check_input(x, data_format)
    x = _float32_or_wider(x)
    mean, variance = centered_moments(x, spatial)
    mean = kops.squeeze(mean, axis=spatial)
    variance = kops.squeeze(variance, axis=spatial)
    return mean, kops.sqrt(variance + STYLE_EPSILON)
