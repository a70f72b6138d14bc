"""Reductions and batch normalisation written for float32 accuracy.

Long float32 reductions and ``E[x**2] - E[x]**2`` variances cancel on the
narrow, off-centre maps of singularity strengths; these helpers avoid both.
"""

from __future__ import annotations

from collections.abc import Sequence

from keras import ops as kops

from keras_ssr import _checks, distributed
from keras_ssr.ops._utils import _as_float_tensor, _check_axes


def accurate_sum(x, axis: int | Sequence[int] | None, keepdims: bool = False):
    """``sum(x, axis)`` reduced one axis at a time, last axis first.

    TensorFlow's CPU kernels add a float32 reduction over many axes as one
    long run: at (4, 112, 112, 16) a per-channel mean is off by ~1e-4
    relative, which the singularity map's batch normalisation and pooling
    turn into 1e-3 errors of SSR's gradients. Reducing axis by axis bounds
    the error by the axis lengths (a few hundred terms) on every backend.

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


def _axis_sum(x, axes: tuple[int, ...], keepdims: bool):
    """:func:`accurate_sum` of a checked tensor over sorted, checked axes."""
    for a in reversed(axes):
        x = kops.sum(x, axis=a, keepdims=True)
    if not keepdims:
        x = kops.squeeze(x, axis=axes) if axes else x
    return x


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


def _axis_mean(x, axes: tuple[int, ...], keepdims: bool):
    """:func:`accurate_mean` of a checked tensor over checked, non-empty axes."""
    if any(x.shape[a] is None for a in axes):  # dynamic axes (export, tracing)
        shape = kops.shape(x)
        count = 1
        for a in axes:
            count = count * shape[a]
        return _axis_sum(x, axes, keepdims) / kops.cast(count, x.dtype)
    count = 1
    for a in axes:
        count *= x.shape[a]
    # not float(count): that would pin torch.export's symbolic sizes
    return _axis_sum(x, axes, keepdims) / count


def centered_moments(x, axes: int | Sequence[int] | None, synchronized: bool = True):
    """Mean and (biased) variance over ``axes``, both kept as size-1 axes.

    The variance is the mean square of ``x - mean``, never
    ``E[x**2] - E[x]**2``, which cancels catastrophically in float32 for the
    narrow, off-centre distributions of singularity-strength maps. The mean
    is corrected by the mean of ``x - m``, with ``m`` a first mean (held
    constant for the gradient: it cancels out): its rounding then scales
    with the spread of ``x``, not with its offset, even where a compiler
    merges :func:`accurate_sum`'s per-axis sums into one long float32 run
    (XLA under ``jit`` does; JAX 0.4.30's CPU code adds that run in order,
    which made SSR's ``gamma`` gradient 10x less accurate). With
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
            return distributed.replica_sum(_axis_sum(t, checked, True)) / count
    else:
        _check_nonempty(x, checked, axes)

        def mean_of(t):
            return _axis_mean(t, checked, True)

    first = kops.stop_gradient(mean_of(x))
    mean = first + mean_of(x - first)
    return mean, mean_of(kops.square(x - mean))


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
