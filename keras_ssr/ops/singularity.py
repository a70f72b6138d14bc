"""Min-max scaling, dyadic box sums, the least-squares slope, and the
singularity-strength map with its hand-written gradient.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence

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
from keras_ssr.ops.reductions import accurate_sum

#: Added to every measure before the logarithm (``keras.backend.epsilon()``
#: of the original).
EPSILON = 1e-7
#: Bounds of the min-max scaled map: ``[1, 256]``, so every measure is >= 1.
MINIMUM_VALUE = 1.0
MAXIMUM_VALUE = 256.0
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


def _slope(measures: Iterable, weights: np.ndarray):
    slope = None
    for measure, weight in zip(measures, weights, strict=True):
        term = kops.log(measure + EPSILON) * float(weight)
        slope = term if slope is None else slope + term
    return slope


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
    strength = _strength_with_gradient(max_scale, scaling, spatial, synchronized)
    return strength(_float32_or_wider(x))


def _box_sums_adjoint(terms: Sequence, spatial_axes: Sequence[int]):
    """``sum_j B_j^T v_j`` for ``terms = [v_1 .. v_J]``, ``B_j``: box of side ``2**j``.

    The adjoint of a "SAME" box sum of side ``k`` (``(k-1)//2`` cells before,
    ``k//2`` after) is the box sum with the mirrored alignment (``k//2``
    before, ``(k-1)//2`` after), which doubles like the forward one. Horner
    over the scales::

        sum_j B_j^T v_j = D_1(v_1 + D_2(v_2 + D_4(v_3 + ... D_(K/2)(v_J))))

    with ``D_s(a) = a[:-s] + a[s:]`` per spatial axis and ``v_j`` zero-padded
    by ``(2**(j-1), 2**(j-1) - 1)``: slices and additions only, like the
    forward pass (autodiff of the forward slices would scatter into padded
    zeros instead, ~7x slower on TensorFlow without XLA).
    """
    total = None
    for j in range(len(terms), 0, -1):
        half = 2 ** (j - 1)
        padding = [(0, 0)] * len(terms[j - 1].shape)
        for axis in spatial_axes:
            padding[axis] = (half, half - 1)
        term = kops.pad(terms[j - 1], padding)
        total = term if total is None else _double(total, 2**j, spatial_axes) + term
    return _double(total, 1, spatial_axes)


@functools.cache
def _strength_with_gradient(
    max_scale: int, scaling: str, spatial: tuple[int, ...], synchronized: bool = False
):
    """Min-max scaling, box sums, log and slope as one op with a hand-written
    gradient (``keras.ops.custom_gradient``, every backend).

    Forward: ``s = 1 + (x - lo) / d * 255`` with ``d = clip(hi - lo)``,
    ``alpha = sum_j w_j log(B_j s + eps)``. Backward, for the upstream ``u``:
    ``v_j = w_j u / (B_j s + eps)``, ``g = sum_j B_j^T v_j``
    (:func:`_box_sums_adjoint`), and the chain rule through ``lo``/``hi``,
    whose gradients are shared equally among tied extrema (as TensorFlow's
    ``reduce_min``/``reduce_max``). The two per-channel sums that chain rule
    needs come from adjoint identities, ``sum_p g_p = sum_j <v_j, B_j 1>``
    and ``sum_p g_p (s_p - 1) = sum_j <v_j, B_j s> - sum_p g_p``, so that
    ``g`` has a single, elementwise consumer. Only the scaled map is kept
    for the backward pass; the box sums are recomputed there (additions).

    ``synchronized``: ``lo``/``hi`` are all-reduced (min, max) over replicas,
    and so are the per-channel sums and tie counts of the backward pass
    (:func:`keras_ssr.distributed.reducer`; no-ops on one device).
    """
    weights = [float(w) for w in ols_weights(dyadic_scales(max_scale))]
    span = MAXIMUM_VALUE - MINIMUM_VALUE
    low, high = DENOMINATOR_RANGE

    @kops.custom_gradient
    def strength(x):
        axes = spatial if scaling == "sample" else (0, *spatial)
        reduce = distributed.reducer(synchronized)
        lo = reduce(kops.min(x, axis=axes, keepdims=True), "min")
        hi = reduce(kops.max(x, axis=axes, keepdims=True), "max")
        raw = hi - lo
        d = kops.clip(raw, low, high)
        scaled = MINIMUM_VALUE + (x - lo) / d * span
        alpha = _slope(_iter_box_sums(scaled, max_scale, spatial), weights)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            upstream = kops.cast(upstream, scaled.dtype)
            measures = list(_iter_box_sums(scaled, max_scale, spatial))
            dims = kops.shape(x)  # holds tensors for dynamic axes (exported graphs)
            ones = kops.ones(
                tuple(dims[a] if a in spatial else 1 for a in range(len(dims))),
                dtype=scaled.dtype,
            )
            counts = _iter_box_sums(ones, max_scale, spatial)
            terms = [upstream * (w / (m + EPSILON)) for w, m in zip(weights, measures)]
            total = None  # sum_p g_p
            moment = None  # sum_p g_p * s_p
            for v, m, c in zip(terms, measures, counts):
                a = accurate_sum(v * c, axes, keepdims=True)
                b = accurate_sum(v * m, axes, keepdims=True)
                total = a if total is None else total + a
                moment = b if moment is None else moment + b
            total = reduce(total, "sum")
            moment = reduce(moment, "sum") - MINIMUM_VALUE * total  # sum g_p (s_p - 1)
            inside = kops.cast(kops.logical_and(raw >= low, raw <= high), scaled.dtype)
            grad_lo = (moment * inside - total * span) / d
            grad_hi = -moment * inside / d
            at_lo = kops.cast(kops.equal(x, lo), scaled.dtype)
            at_hi = kops.cast(kops.equal(x, hi), scaled.dtype)
            ties_lo = reduce(kops.sum(at_lo, axis=axes, keepdims=True), "sum")
            ties_hi = reduce(kops.sum(at_hi, axis=axes, keepdims=True), "sum")
            return (
                _box_sums_adjoint(terms, spatial) * (span / d)
                + at_lo * (grad_lo / ties_lo)
                + at_hi * (grad_hi / ties_hi)
            )

        return alpha, grad

    return strength
