"""Reductions and batch normalisation written for float32 accuracy.

Long float32 reductions and ``E[x**2] - E[x]**2`` variances cancel on the
narrow, off-centre maps of singularity strengths; these helpers avoid both.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import keras
from keras import ops as kops

from keras_ssr import _checks, distributed
from keras_ssr.ops._utils import _as_float_tensor, _check_axes

__all__ = [
    "accurate_mean",
    "accurate_sum",
    "batch_normalize",
    "centered_moments",
]

#: Longest run of terms one TensorFlow reduction adds (see :func:`accurate_sum`).
RUN_LENGTH = 1024


def accurate_sum(x, axis: int | Sequence[int] | None, keepdims: bool = False):
    """``sum(x, axis)`` in runs of at most :data:`RUN_LENGTH` terms on TensorFlow.

    TensorFlow's CPU kernels add a float32 reduction over many axes as one
    long run: at (4, 112, 112, 16) a per-channel mean is off by ~1e-4
    relative, which the singularity map's batch normalisation and pooling
    turn into 1e-3 errors of SSR's gradients. On TensorFlow the axes are
    therefore reduced in groups, from the back, each adding at most
    ``RUN_LENGTH`` terms (an axis longer than that, or of unknown length,
    alone): the error is bounded by the group lengths. PyTorch's and XLA's
    kernels add in a tree (cascaded) order already: one reduction there.

    Args:
        x: floating-point tensor, NumPy array or (nested) list of floats.
        axis: an axis, a sequence of axes, or ``None`` for all. Each must
            lie in ``[-rank, rank)``; none may repeat.
        keepdims: keep the reduced axes with size 1.

    Raises:
        TypeError: for non-float ``x`` or non-integer axes.
        ValueError: for an axis out of range or repeated.
    """
    x = _as_float_tensor("x", x)
    return _axis_sum(x, _check_axes(axis, len(x.shape), x.shape), keepdims)


def _groups(shape, axes: tuple[int, ...], strict: bool = False):
    """The reductions of :func:`accurate_sum`, in order: groups of ``axes``.

    On TensorFlow, the axes from the back, merged while their run stays
    within :data:`RUN_LENGTH` (an axis of unknown length alone); with
    ``strict`` the last axis alone first. The moments of a normalisation
    take the strict order: SRM's kernel gradient, ill-conditioned by its
    batch norm over a batch of two, moved from 9e-5 to 1.3e-4 off float64
    when a 16 x 16 mean ran as one sequence.
    """
    if keras.backend.backend() != "tensorflow" or len(axes) < 2:
        return [axes] if axes else []
    groups, group, run = [], [], 1
    if strict:
        groups, axes = [(axes[-1],)], axes[:-1]
    for a in reversed(axes):
        size = shape[a]
        if group and (size is None or run is None or run * size > RUN_LENGTH):
            groups.append(tuple(sorted(group)))
            group, run = [], 1
        group.append(a)
        run = None if size is None or run is None else run * size
    groups.append(tuple(sorted(group)))
    return groups


def _axis_sum(x, axes: tuple[int, ...], keepdims: bool, strict: bool = False):
    """:func:`accurate_sum` of a checked tensor over sorted, checked axes."""
    for group in _groups(x.shape, axes, strict):
        x = kops.sum(x, axis=group, keepdims=True)
    if not keepdims:
        x = kops.squeeze(x, axis=axes) if axes else x
    return x


def _sums(tensors: Sequence, axes: Sequence[int]) -> list:
    """:func:`accurate_sum` of each of ``tensors`` (of one shape) over
    ``axes``, kept as size-1 axes. Three or more are stacked and reduced at
    once where every op is a kernel launch (TensorFlow graphs, PyTorch
    eager); XLA would write the stack out, so JAX reduces each."""
    axes = tuple(sorted(axes))
    if len(tensors) < 3 or keras.backend.backend() == "jax":
        return [_axis_sum(t, axes, True) for t in tensors]
    stacked = _axis_sum(kops.stack(tensors, axis=0), _shifted(axes), True)
    return list(kops.unstack(stacked, axis=0))


def _recomputed_sums(values, count: int, axes: Sequence[int]) -> list:
    """:func:`_sums` of the ``count`` tensors that ``values`` (a
    :class:`~keras_ssr.ops._utils._Recomputed`) evaluates to: stacked once
    where every op is a launch, each from its own evaluation under XLA (JAX),
    so that each reduction reads the chain's inputs rather than a tensor
    another kernel wrote."""
    axes = tuple(sorted(axes))
    if keras.backend.backend() != "jax":
        return _sums(values(), axes)
    return [
        _axis_sum(values.then(lambda v, i=i: v[i])(), axes, True) for i in range(count)
    ]


def accurate_mean(x, axis: int | Sequence[int] | None, keepdims: bool = False):
    """``mean(x, axis)`` with :func:`accurate_sum`'s axis-by-axis reduction.

    Takes what :func:`accurate_sum` takes.

    Raises:
        ValueError: as :func:`accurate_sum`, and for a reduction over an
            axis known to be empty (the mean of nothing is undefined; NumPy
            returns NaN).
    """
    x = _as_float_tensor("x", x)
    axes = _check_axes(axis, len(x.shape), x.shape)
    _check_nonempty(x, axes, axis)
    return _axis_mean(x, axes, keepdims)


def _check_nonempty(x, axes: tuple[int, ...], axis) -> None:
    if any(x.shape[a] == 0 for a in axes):
        raise ValueError(
            "The mean over an empty axis is undefined. "
            f"Received: x.shape={tuple(x.shape)}, axis={axis!r}"
        )


def _axis_mean(x, axes: tuple[int, ...], keepdims: bool, strict: bool = False):
    """:func:`accurate_mean` of a checked tensor over checked, non-empty axes:
    the mean of the means of :func:`accurate_sum`'s groups (Keras 3.15's
    ``mean`` computes float64 in float32 on torch and JAX: float64 takes
    the sum and a division)."""
    if _checks.wide_float(x.dtype) == "float64":
        return _axis_sum(x, axes, keepdims, strict) / _count(x, axes)
    for group in _groups(x.shape, axes, strict):
        x = kops.mean(x, axis=group, keepdims=True)
    if not keepdims:
        x = kops.squeeze(x, axis=axes) if axes else x
    return x


def centered_moments(x, axes: int | Sequence[int] | None, synchronized: bool = True):
    """Mean and (biased) variance over ``axes``, both kept as size-1 axes.

    The variance is the mean square of ``x - mean``, never
    ``E[x**2] - E[x]**2``, which cancels catastrophically in float32 for the
    narrow, off-centre distributions of singularity-strength maps. The mean
    is corrected by the mean of ``x - m``, with ``m`` a first mean (held
    constant for the gradient: it cancels out): its rounding then scales
    with the spread of ``x``, not with its offset. A map of spread 1e-3 at
    2.0 has a float32 mean off by ~1e-3 of its spread, whose backward pass
    no longer sums to zero (an SSR-Xu fixture's measure gradient: 2e-4 off
    float64 uncorrected, 9e-5 corrected); XLA merges reductions into one
    long float32 run under ``jit``, which JAX 0.4.30's CPU code adds in
    order (SSR's ``gamma`` gradient 10x less accurate). With
    ``synchronized`` and ``axes`` holding the batch axis, under data
    parallelism every pass is summed over all replicas
    (:func:`keras_ssr.distributed.replica_sum`): the global batch's moments.

    Takes and raises what :func:`accurate_mean` does.
    """
    x = _as_float_tensor("x", x)
    checked = _check_axes(axes, len(x.shape), x.shape)
    if distributed.spans_replicas(checked, synchronized):
        count = distributed.batch_count(x, checked)

        def mean_of(t):
            return distributed.replica_sum(_axis_sum(t, checked, True, True)) / count
    else:
        _check_nonempty(x, checked, axes)

        def mean_of(t):
            return _axis_mean(t, checked, True, True)

    first = kops.stop_gradient(mean_of(x))
    mean = first + mean_of(x - first)
    return mean, mean_of(kops.square(x - mean))


def _train_normalize(x, axes, epsilon, scale=None, offset=None):
    """Batch normalisation with the batch's own moments over ``axes`` (one
    device), and its gradient written out.

    Returns ``(y, mean, variance)`` with ``y = (x - mean) * scale /
    sqrt(variance + epsilon) + offset``, the moments those of
    :func:`centered_moments`. The gradient with respect to ``x`` is the
    whole of it (through ``mean`` and ``variance`` too), ``a (dy - (sum dy
    + c r**2 sum dy c) / N)`` with ``c = x - mean``, ``r = 1 / sqrt(variance
    + epsilon)``, ``a = scale r``: a few launches where autodiff takes
    dozens. ``mean`` and ``variance`` carry no gradient (they feed the
    moving averages).
    """
    mean, centred, variance = _moments(kops.stop_gradient(x), axes)
    inv = kops.rsqrt(variance + epsilon)
    normalize = _normalize_with_gradient(
        tuple(axes), scale is not None, offset is not None
    )
    params = [p for p in (scale, offset) if p is not None]
    return normalize(x, centred, inv, *params), mean, variance


def _moments(x, axes):
    """``(mean, x - mean, variance)`` of :func:`centered_moments` (checked
    ``x``, one device)."""
    axes = tuple(sorted(axes))
    mean = _axis_mean(x, axes, True, True)
    mean = mean + _axis_mean(x - mean, axes, True, True)  # see centered_moments
    centred = x - mean
    return mean, centred, _axis_mean(kops.square(centred), axes, True, True)


@functools.cache
def _normalize_with_gradient(axes: tuple[int, ...], scaled: bool, shifted: bool):
    """``c * inv * scale + offset`` with the batch-norm gradient for ``x``
    (``c = x - mean`` and ``inv``, the moments' functions, take none)."""

    @kops.custom_gradient
    def normalize(x, c, inv, *params):
        a = inv * params[0] if scaled else inv
        y = c * a
        if shifted:
            y = y + params[-1]

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            dy = upstream
            total, moment = _sums([dy, dy * c], axes)
            d_scale = moment * inv
            dx = a * dy - (total + c * (d_scale * inv)) * (a / _count(c, axes))
            grads = [dx, None, None]
            if scaled:
                grads.append(d_scale)
            if shifted:
                grads.append(total)
            return tuple(grads)

        return y, grad

    return normalize


def _train_pool_normalize(x, spatial, epsilon, scale=None, offset=None):
    """The spatial mean of :func:`_train_normalize`'s ``y``, ``(batch, 1..,
    channels)``, without forming ``y``.

    Batch normalisation is affine per channel, so the mean of the normalised
    map is the normalised mean, ``p = (m - mean) a + offset`` with ``m`` the
    spatial means of ``x``; its gradient is ``dx = (a / S) (dp - mean_b dp)
    - (a r**2 / S) mean_b(dp (m - mean)) c`` for ``S`` spatial entries per
    sample: per-sample and per-channel factors and one pass over ``c``.
    Returns ``(p, mean, variance)`` as :func:`_train_normalize`. The batch
    axis is 0; ``spatial`` are the other reduced axes.
    """
    x_ = kops.stop_gradient(x)
    spatial = tuple(sorted(spatial))
    means = _axis_mean(x_, spatial, True, True)
    mean = _axis_mean(means, (0,), True)
    mean = mean + _axis_mean(x_ - mean, (0, *spatial), True, True)  # see above
    centred = x_ - mean
    variance = _axis_mean(kops.square(centred), (0, *spatial), True, True)
    inv = kops.rsqrt(variance + epsilon)
    pool = _pool_normalize_with_gradient(spatial, scale is not None, offset is not None)
    params = [p for p in (scale, offset) if p is not None]
    # The deviations of the spatial means from centred values: ``means -
    # mean`` cancels where the mean is large against the means' spread (an
    # SSR fixture's gamma gradient 1.0e-4 off at JAX 0.4.30, whose CPU adds
    # a reduction in order).
    deviation = _axis_mean(centred, spatial, True, True)
    return pool(x, centred, deviation, inv, *params), mean, variance


@functools.cache
def _pool_normalize_with_gradient(spatial: tuple[int, ...], scaled, shifted):
    """``(m - mean) a + offset`` with the gradient of :func:`_train_pool_normalize`."""

    @kops.custom_gradient
    def pool(x, c, deviation, inv, *params):
        a = inv * params[0] if scaled else inv
        p = deviation * a
        if shifted:
            p = p + params[-1]

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            dp = upstream
            total = kops.sum(dp, axis=0, keepdims=True)
            moment = kops.sum(dp * deviation, axis=0, keepdims=True)
            per_entry = a / _count(c, (0, *spatial))  # a / (B S)
            batch = _count(dp, (0,))  # a tensor when the batch is dynamic
            dx = (
                per_entry * (dp * batch - total)
                - (per_entry * kops.square(inv) * moment) * c
            )
            grads = [dx, None, None, None]
            if scaled:
                grads.append(moment * inv)
            if shifted:
                grads.append(total)
            return tuple(grads)

        return p, grad

    return pool


def _shifted(axes: Sequence[int]) -> tuple[int, ...]:
    return tuple(a + 1 for a in axes)


def _count(x, axes: Sequence[int], tensor: bool = False):
    """The number of entries of ``x`` along ``axes``: a tensor of ``x``'s
    dtype if dynamic or ``tensor``, else an int."""
    if any(x.shape[a] is None for a in axes):
        shape = kops.shape(x)
        count = 1
        for a in axes:
            count = count * shape[a]
        return kops.cast(count, x.dtype)
    count = math.prod(x.shape[a] for a in axes)
    return kops.convert_to_tensor(count, x.dtype) if tensor else count


def batch_normalize(x, mean, variance, scale=None, offset=None, epsilon=1e-3):
    """``(x - mean) * scale / sqrt(variance + epsilon) + offset``, centred first.

    All arguments broadcast against ``x``. Subtracting the mean before
    scaling (rather than ``x * inv + (offset - mean * inv)``, as Keras'
    backends do) keeps the gradient with respect to ``scale``, a sum of
    ``upstream * (x - mean)``, free of cancellation.

    Args:
        x, mean, variance, scale, offset: floating-point tensors, NumPy
            arrays, lists or Python floats (``scale`` and ``offset`` may be
            ``None``).
        epsilon: a non-negative real number.

    Returns:
        A tensor of ``x``'s dtype (the other arguments are cast to it).

    Raises:
        TypeError: for a non-float array argument or a non-real ``epsilon``.
        ValueError: for a negative or non-finite ``epsilon``.
    """
    epsilon = _checks.check_real("epsilon", epsilon, 0.0)
    x = _as_float_tensor("x", x)

    def like_x(name, value):
        return kops.cast(_as_float_tensor(name, value), x.dtype)

    inv = kops.rsqrt(like_x("variance", variance) + epsilon)
    if scale is not None:
        inv = inv * like_x("scale", scale)
    y = (x - like_x("mean", mean)) * inv
    return y if offset is None else y + like_x("offset", offset)
