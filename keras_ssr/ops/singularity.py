"""The singularity strengths, in one place: min-max scaling, dyadic box
sums, the least-squares slope and the singularity-strength map (the SSR
paper's), the weighted strength with learnable weights per scale (the
follow-up's Mono and Multi), Xu et al.'s strength with learnable measures,
and the maps' hand-written gradients.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

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
    _slice,
)
from keras_ssr.ops.measures import _as_kernels, learnable_measures
from keras_ssr.ops.reductions import _axis_mean, _sums

__all__ = [
    "DENOMINATOR_RANGE",
    "EPSILON",
    "MAXIMUM_VALUE",
    "MAX_SCALE_LIMIT",
    "MINIMUM_VALUE",
    "box_sums",
    "dyadic_scales",
    "learnable_singularity_strength",
    "min_max_scale",
    "ols_slope",
    "ols_weights",
    "singularity_strength",
    "weighted_ols_coefficients",
    "weighted_ols_slope",
    "weighted_singularity_strength",
]

#: Added to every measure before the logarithm (``keras.backend.epsilon()``
#: of the original).
EPSILON = 1e-7
#: Bounds of the min-max scaled map: ``[1, 256]``, so every measure is >= 1.
MINIMUM_VALUE = 1.0
MAXIMUM_VALUE = 256.0
SPAN = MAXIMUM_VALUE - MINIMUM_VALUE
#: The scaling denominator ``max - min`` is clipped to this range.
DENOMINATOR_RANGE = (1e-7, 1e9)
#: Largest ``max_scale`` accepted: boxes up to 65536 cells a side.
MAX_SCALE_LIMIT = _checks.MAX_SCALE_LIMIT


# --------------------------------------------------------------------------
# Min-max scaling


def min_max_scale(
    x,
    scaling: str = "batch",
    data_format: str = "channels_last",
    minimum_value: float = MINIMUM_VALUE,
    maximum_value: float = MAXIMUM_VALUE,
    synchronized: bool = True,
):
    """Scales every channel linearly onto ``[minimum_value, maximum_value]``.

    ``minimum_value + (x - min) / clip(max - min, 1e-7, 1e9) *
    (maximum_value - minimum_value)``, with ``min`` and ``max`` taken per
    channel.

    Args:
        x: floating-point tensor ``(batch, *spatial, channels)`` or
            ``(batch, channels, *spatial)``, or a NumPy array or nested list
            of floats of that shape. An empty ``x`` gives an empty result.
        scaling: ``"batch"`` takes ``min``/``max`` over the batch and the
            spatial axes together, as the original does (one sample's output
            then depends on the rest of its batch); ``"sample"`` takes them
            over the spatial axes of each sample alone.
        data_format: ``"channels_last"`` or ``"channels_first"``.
        minimum_value, maximum_value: the target range (finite reals).
        synchronized: with ``scaling="batch"`` under data parallelism,
            whether ``min``/``max`` are taken over the global batch (all
            replicas, :mod:`keras_ssr.distributed`) rather than each
            replica's own.

    Returns:
        A tensor of the shape and dtype of ``x``.

    Raises:
        TypeError: if ``x`` is not floating point.
        ValueError: for an unknown ``scaling`` or ``data_format``, a rank
            below 3, or a non-finite bound.
    """
    scaling = _checks.check_scaling(scaling)
    data_format = _checks.standardize_data_format(data_format)
    minimum_value = _checks.check_real("minimum_value", minimum_value)
    maximum_value = _checks.check_real("maximum_value", maximum_value)
    x = _as_float_tensor("x", x)
    spatial = _check_input(x, data_format)
    axes = spatial if scaling == "sample" else (0, *spatial)
    if _is_empty(x) and not distributed.spans_replicas(axes, synchronized):
        return x + minimum_value  # no extrema to take, nothing to scale
    lo = distributed.batch_min(x, axes, keepdims=True, synchronized=synchronized)
    hi = distributed.batch_max(x, axes, keepdims=True, synchronized=synchronized)
    denominator = kops.clip(hi - lo, *DENOMINATOR_RANGE)
    return minimum_value + (x - lo) / denominator * (maximum_value - minimum_value)


# --------------------------------------------------------------------------
# Box sums


def dyadic_scales(max_scale: int) -> list[int]:
    """The box sides ``[2, 4, ..., 2**max_scale]``.

    Raises:
        TypeError: unless ``max_scale`` is an integer.
        ValueError: unless ``1 <= max_scale <= 16``.
    """
    max_scale = _checks.check_int("max_scale", max_scale, 1, MAX_SCALE_LIMIT)
    return [2**j for j in range(1, max_scale + 1)]


def _double(a, shift: int, spatial_axes: Sequence[int]):
    """``a[:-shift] + a[shift:]`` along every spatial axis."""
    for axis in spatial_axes:
        a = _slice(a, axis, None, -shift) + _slice(a, axis, shift, None)
    return a


def _iter_box_sums(x, max_scale: int, spatial_axes: Sequence[int]) -> Iterator:
    """Yields the box sums of sides ``2, 4, ..., 2**max_scale``.

    ``x`` is zero-padded once by ``K/2 - 1`` before and ``K/2`` after each
    spatial axis (``K = 2**max_scale``). On that padded support the box sum
    of side ``2k`` is ``S_k[:-k] + S_k[k:]`` along every spatial axis (the
    box of side ``k = 1`` is ``x`` itself), and the sum of side ``k`` for
    the original grid is its centre crop, ``(K - k) / 2`` cells from both
    ends. Only additions of exact partial sums: no
    cancellation, no cumulative-sum drift.
    """
    full = 2**max_scale
    padding = [(0, 0)] * len(x.shape)
    for axis in spatial_axes:
        padding[axis] = (full // 2 - 1, full // 2)
    sums = kops.pad(x, padding)
    size = 1
    for _ in range(max_scale):
        sums = _double(sums, size, spatial_axes)
        size *= 2
        crop = (full - size) // 2
        out = sums
        if crop:
            for axis in spatial_axes:
                out = _slice(out, axis, crop, -crop)
        yield out


def box_sums(x, max_scale: int, data_format: str = "channels_last"):
    """Box sums of sides ``2, 4, ..., 2**max_scale``, stacked on a new last axis.

    Equal to a depthwise convolution of ``x`` with all-ones kernels of those
    sides, "SAME" zero padding (``(k - 1) // 2`` before, ``k // 2`` after),
    as the original computes its measures, but in ``max_scale * d``
    additions for ``d`` spatial axes.

    Args:
        x: floating-point tensor with 1, 2 or 3 spatial axes (or a NumPy
            array or nested list of floats).
        max_scale: number of scales, ``1 <= max_scale <= 16``.
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Returns:
        Tensor of shape ``x.shape + (max_scale,)`` in the dtype of ``x``.
    """
    max_scale = _checks.check_int("max_scale", max_scale, 1, MAX_SCALE_LIMIT)
    data_format = _checks.standardize_data_format(data_format)
    x = _as_float_tensor("x", x)
    spatial = _check_input(x, data_format)
    return kops.stack(list(_iter_box_sums(x, max_scale, spatial)), axis=-1)


# --------------------------------------------------------------------------
# Least-squares slope


def ols_weights(scales: Sequence[float]) -> np.ndarray:
    """Weights ``w`` with ``slope = sum_j w_j * log(measure_j)``.

    ``w_j = (l_j - mean(l)) / sum_i (l_i - mean(l))**2`` with
    ``l = log(scales)``, computed in float64. Since ``sum_j w_j = 0`` the
    mean log-measure needs no subtracting.

    Args:
        scales: a sequence (list, NumPy array, tensor) of positive, finite
            real numbers.

    Raises:
        TypeError: for scales that are not real numbers.
        ValueError: for fewer than two distinct positive, finite scales (the
            slope is undefined; the original returns NaN).
    """
    scales = _check_scales(scales)
    logs = np.log(scales)
    centred = logs - logs.mean()
    return centred / float(np.sum(centred**2))


def ols_slope(measures, scales: Sequence[float]):
    """Least-squares slope of ``log(measures + 1e-7)`` against ``log(scales)``.

    Args:
        measures: positive floating-point tensor (or NumPy array, or nested
            list of floats) whose last axis runs over the scales.
        scales: the scale of each entry of that axis, e.g.
            :func:`dyadic_scales` (the original's ``OrdinaryLeastSquares``) or
            ``range(1, n + 1)`` (its ``OrdinaryLeastSquares_``).

    Returns:
        ``measures`` without its last axis, computed in float32 at least.
    """
    weights = ols_weights(scales)
    measures = _as_float_tensor("measures", measures)
    if len(measures.shape) < 1:
        raise ValueError(
            "`measures` must have an axis of scales. "
            f"Received: measures.shape={tuple(measures.shape)}"
        )
    if measures.shape[-1] is not None and measures.shape[-1] != len(weights):
        raise ValueError(
            f"The last axis of `measures` must have one entry per scale "
            f"({len(weights)}). Received: measures.shape={tuple(measures.shape)}"
        )
    measures = _float32_or_wider(measures)
    log_measures = kops.log(measures + EPSILON)
    weights = kops.convert_to_tensor(weights, dtype=measures.dtype)
    return kops.sum(log_measures * weights, axis=-1)


# --------------------------------------------------------------------------
# Singularity strength


def singularity_strength(
    x,
    max_scale: int,
    scaling: str = "batch",
    data_format: str = "channels_last",
    synchronized: bool = True,
):
    """The local singularity strength (Hölder exponent) of every pixel.

    Min-max scaling onto ``[1, 256]`` (:func:`min_max_scale`), box sums of
    sides ``2 .. 2**max_scale`` (:func:`box_sums`), then the slope of
    ``log(sum + 1e-7)`` against ``log(side)`` (:func:`ols_slope`). The map
    does not change when a channel is multiplied by a positive factor or
    shifted.

    Args:
        x: floating-point tensor with 1, 2 or 3 spatial axes (or a NumPy
            array or nested list of floats). An empty ``x`` gives an empty
            map.
        max_scale: number of dyadic scales, ``2 <= max_scale <= 16``
            (``1`` leaves one point to fit a line through: the original
            returns NaN; it is rejected here).
        scaling: ``"batch"`` (the original) or ``"sample"``.
        data_format: ``"channels_last"`` or ``"channels_first"``.
        synchronized: with ``scaling="batch"`` under data parallelism,
            whether the min-max bounds are global (:func:`min_max_scale`).

    Returns:
        Tensor of the shape of ``x``, float32 (float64 for float64 input).
    """
    max_scale = _checks.check_int("max_scale", max_scale, 2, MAX_SCALE_LIMIT)
    data_format = _checks.standardize_data_format(data_format)
    scaling = _checks.check_scaling(scaling)
    x = _as_float_tensor("x", x)
    spatial = _check_input(x, data_format)
    synchronized = bool(synchronized) and scaling == "batch"
    if _is_empty(x) and not distributed.spans_replicas((0, *spatial), synchronized):
        return _float32_or_wider(x)  # no extrema, no slope: the empty map
    return _singularity_strength(x, max_scale, scaling, data_format, synchronized)


@_compiled_on_jax
def _singularity_strength(
    x, max_scale: int, scaling: str, data_format: str, synchronized: bool
):
    spatial = _check_input(x, data_format)
    x = _float32_or_wider(x)
    strength = _strength_with_gradient(
        max_scale,
        scaling,
        spatial,
        data_format,
        synchronized,
        keras.backend.standardize_dtype(x.dtype),
    )
    return strength(x)


# --------------------------------------------------------------------------
# The weighted singularity strength (the follow-up's Mono and Multi)


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
# Xu et al.'s singularity strength with learnable measures


def learnable_singularity_strength(
    x,
    kernels: Sequence,
    scaling: str = "batch",
    data_format: str = "channels_last",
    synchronized: bool = True,
):
    """Xu et al.'s singularity strength with learnable measures.

    Min-max scaling onto ``[1, 256]``, :func:`learnable_measures`, then the
    slope of ``log(measure + 1e-7)`` against ``log(s)``, ``s = 1 ..
    len(kernels)``; in float32 at least. ``synchronized``: global min-max
    bounds under data parallelism (:func:`min_max_scale`).

    Takes what :func:`learnable_measures` takes.

    Raises:
        ValueError: for fewer than two kernels (no slope to fit).
    """
    kernels = _as_kernels(kernels)
    if len(kernels) < 2:
        raise ValueError(
            "`kernels` must hold at least two kernels (scales 1 and 2) to fit "
            f"a slope. Received: {len(kernels)} kernel(s)"
        )
    x = _float32_or_wider(_as_float_tensor("x", x))
    x = min_max_scale(x, scaling, data_format, synchronized=synchronized)
    measures = learnable_measures(x, kernels, data_format)
    return ols_slope(measures, range(1, len(kernels) + 1))


# --------------------------------------------------------------------------
# The map as one op: min-max scaling, box measures, log-ratios


def _slope_pairs(max_scale: int) -> list[tuple[float, int, int]]:
    """``(w, big, small)``: ``sum_j w_j log m_j`` as ``sum w log(m_big / m_small)``.

    The dyadic log-scales ``j log 2`` are evenly spaced, so the OLS weights
    are antisymmetric, ``w_j = -w_(J+1-j)``, and the middle scale of an odd
    ``J`` has weight zero: ``J // 2`` log-ratios of box sizes ``2**big``
    and ``2**small`` carry the whole slope (``max_scale=3``: one, of the
    8-box over the 2-box).
    """
    weights = ols_weights(dyadic_scales(max_scale))
    return [
        (float(weights[max_scale - 1 - i]), max_scale - i, i + 1)
        for i in range(max_scale // 2)
    ]


def _crop(x, spatial_axes: Sequence[int], start: int, length_less: int):
    """``x[start : size - length_less]`` along every spatial axis, one slice."""
    if not start and not length_less:
        return x
    index = [slice(None)] * len(x.shape)
    for axis in spatial_axes:
        index[axis] = slice(start, -length_less if length_less else None)
    return x[tuple(index)]


def _pad(x, spatial_axes: Sequence[int], before: int, after: int, value=0.0):
    padding = [(0, 0)] * len(x.shape)
    for axis in spatial_axes:
        padding[axis] = (before, after)
    return kops.pad(x, padding, constant_values=value)


def _pools(dtype, rank: int) -> bool:
    """Whether box measures are averages by pooling (one op per box) or sums
    by doubling (slices and additions). Slices are views in torch, where the
    doubling launches no more kernels and its CPU pooling is slow; elsewhere
    every slice is a copy (TensorFlow) or a stencil to fuse (XLA), and a
    pooling window is read once, except in TensorFlow's float64 3-D pooling,
    which has no CPU kernel."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return rank < 3 or _checks.wide_float(dtype) != "float64"
    return backend != "torch"


class _Boxes:
    """The box measures of the scaled map ``s = 1 + 255 t`` for the sides
    ``2**j`` the slope needs, divided by 255 (``t = (x - lo) / d``).

    ``t`` is padded by ``k/2 - 1`` cells before and ``k/2`` after each
    spatial axis with ``-1/255``, so that ``s`` is zero outside the map, as
    the "SAME" zero padding of the original's convolutions. The measure of
    side ``k`` is then either the box average ``A_k(s) = 255 avg_k(t') + 1``
    (pooling, one pad per box) or the box sum ``B_k(s) = 255 sum_k(t') +
    k**d`` (doubling, from one pad of ``K = 2**max_scale``); ``eps`` is
    added as ``eps / k**d`` or ``eps``. The ratio of two measures differs
    between the two by ``(k/k')**d``: the slope by the constant
    :attr:`offset` (``d``, or 0).
    """

    def __init__(self, max_scale, spatial, data_format, sides, dtype):
        self.spatial = spatial
        self.data_format = data_format
        self.full = 2**max_scale
        self.sides = sorted(sides)
        self.rank = len(spatial)
        self.pools = _pools(dtype, self.rank)
        self.offset = float(self.rank) if self.pools else 0.0

    def shift(self, k: int) -> float:
        """``m_k = box(t') + shift(k)``: ``(1 + eps/k**d) / span`` or
        ``(k**d + eps) / span``."""
        if self.pools:
            return (1.0 + EPSILON / k**self.rank) / SPAN
        return (float(k**self.rank) + EPSILON) / SPAN

    def measures(self, t) -> dict:
        if self.pools:
            out = {}
            for k in self.sides:  # each its own pad: XLA fuses it into the pool
                padded = _pad(t, self.spatial, k // 2 - 1, k // 2, -1.0 / SPAN)
                pooled = kops.average_pool(
                    padded, (k,) * self.rank, 1, "valid", self.data_format
                )
                out[k] = pooled + self.shift(k)
            return out
        padded = _pad(t, self.spatial, self.full // 2 - 1, self.full // 2, -1.0 / SPAN)
        out, size = {}, 1
        sums = padded
        while size < self.sides[-1]:
            sums = _double(sums, size, self.spatial)
            size *= 2
            if size in self.sides:
                crop = (self.full - size) // 2
                out[size] = _crop(sums, self.spatial, crop, crop) + self.shift(size)
        return out

    def adjoint(self, terms: dict):
        """``sum_k B_k^T g_k`` (``terms``: side -> ``g_k``), on ``t``'s grid.

        The adjoint of a "SAME" box of side ``k`` (``k/2 - 1`` cells before,
        ``k/2`` after) is the box with the mirrored alignment (``k/2``
        before, ``k/2 - 1`` after): pooling a padded ``g_k``, or Horner over
        the doublings, ``D_1(g_2 + D_2(g_4 + D_4(g_8 ...)))`` with
        ``D_s(a) = a[:-s] + a[s:]`` (slices and additions only; autodiff of
        the forward slices would scatter into zeros).
        """
        total = None
        # the positive terms first: no negation
        order = sorted(self.sides, key=lambda k: (-terms[k][0], -k))
        if self.pools:
            for k in order:
                sign, g = terms[k]
                g = _pad(g, self.spatial, k // 2, k // 2 - 1)
                g = kops.average_pool(g, (k,) * self.rank, 1, "valid", self.data_format)
                total = _signed_sum(total, sign, g)
            return total
        for k in sorted(self.sides, reverse=True):
            sign, g = terms[k]
            total = _signed_sum(total, sign, _pad(g, self.spatial, k // 2, k // 2 - 1))
            smaller = max((s for s in self.sides if s < k), default=1)
            while k > smaller:
                k //= 2
                total = _double(total, k, self.spatial)
        return total


def _signed_sum(total, sign: int, term):
    if total is None:
        return term if sign > 0 else -term
    return total + term if sign > 0 else total - term


class _Scaling:
    """Min-max scaling inside a hand-written gradient: ``t = (x - lo) / d``
    with ``d = clip(hi - lo)`` (the scaled map is ``1 + 255 t``), and the
    chain rule back through ``lo`` and ``hi``.

    The extrema's gradients are shared equally among tied entries (as
    TensorFlow's ``reduce_min``/``reduce_max``). The four per-channel sums
    that chain rule needs (``sum dt``, ``sum dt t`` and the two tie counts)
    are taken together (:func:`keras_ssr.ops.reductions._sums`).
    ``synchronized``: ``lo``/``hi`` are all-reduced (min, max) over
    replicas, and so are those sums (:func:`keras_ssr.distributed.reducer`;
    no-ops on one device).
    """

    def __init__(self, x, axes, synchronized):
        self.x, self.axes = x, axes
        self.reduce = distributed.reducer(synchronized)
        self.lo = self.reduce(kops.min(x, axis=axes, keepdims=True), "min")
        self.hi = self.reduce(kops.max(x, axis=axes, keepdims=True), "max")
        self.raw = self.hi - self.lo
        self.d = kops.clip(self.raw, *DENOMINATOR_RANGE)
        self.t = (x - self.lo) / self.d

    def backward(self, dt, factor=1.0):
        """``dx`` for ``factor * dt``, the gradient with respect to ``t``."""
        x, t = self.x, self.t
        at_lo = kops.equal(x, self.lo)
        at_hi = kops.equal(x, self.hi)
        dtype = keras.backend.standardize_dtype(t.dtype)
        minus_one, zero = (np.asarray(v, dtype) for v in (-1.0, 0.0))
        sums = _sums(
            [dt, dt * t, kops.cast(at_lo, t.dtype), kops.where(at_hi, minus_one, zero)],
            self.axes,
        )
        total, moment, ties_lo, minus_ties_hi = (self.reduce(v, "sum") for v in sums)
        # dt/dlo = -1/d + t/d and dt/dhi = -t/d where d is not clipped: the
        # extrema's shares, times d (divided out with it at the end).
        moment = kops.where(self.raw == self.d, moment, 0.0)
        share_lo = (moment - total) / ties_lo
        share_hi = moment / minus_ties_hi
        extrema = kops.where(at_lo, share_lo, kops.where(at_hi, share_hi, 0.0))
        divisor = self.d if factor == 1.0 else self.d * (1.0 / factor)
        return (dt + extrema) / divisor


@functools.cache
def _strength_with_gradient(
    max_scale: int,
    scaling: str,
    spatial: tuple[int, ...],
    data_format: str,
    synchronized: bool = False,
    dtype: str = "float32",
):
    """Min-max scaling, box measures, log and slope as one op with a
    hand-written gradient (``keras.ops.custom_gradient``, every backend).

    Forward: :class:`_Scaling`'s ``t``, the measures ``m_k`` of
    :class:`_Boxes`, and ``alpha = sum w log(m_big / m_small) + offset``
    (:func:`_slope_pairs`). Backward, for the upstream ``u``: ``g_k = +-w u
    / m_k``, ``dt = sum_k B_k^T g_k`` (:meth:`_Boxes.adjoint`), then
    :meth:`_Scaling.backward`. Only ``x``, ``t`` and the measures are kept
    for the backward pass.
    """
    pairs = _slope_pairs(max_scale)
    boxes = _Boxes(
        max_scale,
        spatial,
        data_format,
        {2**j for _, big, small in pairs for j in (big, small)},
        dtype,
    )
    axes = spatial if scaling == "sample" else (0, *spatial)
    first = pairs[0][0]

    @kops.custom_gradient
    def strength(x):
        scaled = _Scaling(x, axes, synchronized)
        measures = boxes.measures(scaled.t)
        alpha = None
        for w, big, small in pairs:
            term = kops.log(measures[2**big] / measures[2**small]) * w
            alpha = term if alpha is None else alpha + term
        if boxes.offset:
            alpha = alpha + boxes.offset

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            upstream = kops.cast(upstream, x.dtype)
            terms = {}  # the gradient / w_1
            for w, big, small in pairs:
                u = upstream if w == first else upstream * (w / first)
                terms[2**big] = (1, u / measures[2**big])
                terms[2**small] = (-1, u / measures[2**small])
            return scaled.backward(boxes.adjoint(terms), first)

        return alpha, grad

    return strength


@functools.cache
def _weighted_strength_with_gradient(
    max_scale: int,
    scaling: str,
    spatial: tuple[int, ...],
    data_format: str,
    synchronized: bool,
    dtype: str,
):
    """The follow-up's weighted slope as one op with a hand-written gradient.

    ``alpha = sum_j c_j log m_j`` for coefficients ``c`` summing to zero
    (:func:`keras_ssr.ops.weighted_ols_coefficients`), evaluated as
    ``sum_(j>1) c_j log(m_j / m_1)``: the log-ratios to the smallest box,
    whose terms are small (as the centred logs of
    :func:`keras_ssr.ops.weighted_ols_slope`). Its gradient with respect to
    ``c_j`` is the sum of ``u log(m_j / m_1)`` (that of ``c_1`` zero: any
    constant added to them all is lost through ``sum c = 0``).
    """
    boxes = _Boxes(
        max_scale, spatial, data_format, set(dyadic_scales(max_scale)), dtype
    )
    sides = dyadic_scales(max_scale)
    # log(m_j / m_1) of box sums = that of the measures + d log(k_j / k_1)
    offsets = np.asarray([boxes.offset * np.log(k / sides[0]) for k in sides], dtype)
    axes = spatial if scaling == "sample" else (0, *spatial)

    @kops.custom_gradient
    def strength(x, coefficients):
        scaled = _Scaling(x, axes, synchronized)
        measures = boxes.measures(scaled.t)
        logs = [kops.log(measures[k] / measures[sides[0]]) for k in sides[1:]]
        c = kops.unstack(coefficients)
        alpha = None
        for log, c_j in zip(logs, c[1:]):
            alpha = log * c_j if alpha is None else alpha + log * c_j
        if boxes.offset:
            alpha = alpha + kops.sum(coefficients * kops.convert_to_tensor(offsets))

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            u = kops.cast(upstream, x.dtype)
            terms = {k: (1, u * c_j / measures[k]) for k, c_j in zip(sides, c)}
            dx = scaled.backward(boxes.adjoint(terms))
            every = tuple(range(len(x.shape)))
            products = [u * log for log in logs]
            if boxes.offset:
                products.append(u)
            sums = [kops.reshape(v, (1,)) for v in _sums(products, every)]
            dc = kops.pad(kops.concatenate(sums[: len(logs)]), [(1, 0)])
            if boxes.offset:
                dc = dc + sums[-1] * kops.convert_to_tensor(offsets)
            return dx, dc

        return alpha, grad

    return strength
