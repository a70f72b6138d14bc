"""Reductions and batch normalisation written for float32 accuracy.

Long float32 reductions and ``E[x**2] - E[x]**2`` variances cancel on the
narrow, off-centre maps of singularity strengths; these helpers avoid both.
"""

from __future__ import annotations

from collections.abc import Sequence

from keras import ops as kops

from keras_ssr import distributed


def accurate_sum(x, axis: Sequence[int], keepdims: bool = False):
    """``sum(x, axis)`` reduced one axis at a time, last axis first.

    TensorFlow's CPU kernels add a float32 reduction over many axes as one
    long run: at (4, 112, 112, 16) a per-channel mean is off by ~1e-4
    relative, which the singularity map's batch normalisation and pooling
    turn into 1e-3 errors of SSR's gradients. Reducing axis by axis bounds
    the error by the axis lengths (a few hundred terms) on every backend.
    """
    axes = sorted({a % len(x.shape) for a in axis}, reverse=True)
    for a in axes:
        x = kops.sum(x, axis=a, keepdims=True)
    if not keepdims:
        x = kops.squeeze(x, axis=tuple(axes)) if axes else x
    return x


def accurate_mean(x, axis: Sequence[int], keepdims: bool = False):
    """``mean(x, axis)`` with :func:`accurate_sum`'s axis-by-axis reduction."""
    if any(x.shape[a] is None for a in axis):  # dynamic axes (export, tracing)
        shape = kops.shape(x)
        count = 1
        for a in axis:
            count = count * shape[a]
        return accurate_sum(x, axis, keepdims) / kops.cast(count, x.dtype)
    count = 1
    for a in axis:
        count *= x.shape[a]
    # not float(count): that would pin torch.export's symbolic sizes
    return accurate_sum(x, axis, keepdims) / count


def centered_moments(x, axes: Sequence[int], synchronized: bool = True):
    """Mean and (biased) variance over ``axes``, both kept as size-1 axes.

    Two passes: the variance is the mean square of ``x - mean``, never
    ``E[x**2] - E[x]**2``, which cancels catastrophically in float32 for the
    narrow, off-centre distributions of singularity-strength maps. With
    ``synchronized`` and ``axes`` holding the batch axis, under data
    parallelism both passes are summed over all replicas
    (:func:`keras_ssr.distributed.replica_sum`): the global batch's moments.
    """
    if distributed.spans_replicas(axes, synchronized):
        count = distributed.batch_count(x, axes)
        mean = distributed.replica_sum(accurate_sum(x, axes, keepdims=True)) / count
        squares = accurate_sum(kops.square(x - mean), axes, keepdims=True)
        return mean, distributed.replica_sum(squares) / count
    mean = accurate_mean(x, axes, keepdims=True)
    variance = accurate_mean(kops.square(x - mean), axes, keepdims=True)
    return mean, variance


def batch_normalize(x, mean, variance, scale=None, offset=None, epsilon=1e-3):
    """``(x - mean) * scale / sqrt(variance + epsilon) + offset``, centred first.

    All arguments broadcast against ``x``. Subtracting the mean before
    scaling (rather than ``x * inv + (offset - mean * inv)``, as Keras'
    backends do) keeps the gradient with respect to ``scale``, a sum of
    ``upstream * (x - mean)``, free of cancellation.
    """
    inv = kops.rsqrt(variance + epsilon)
    if scale is not None:
        inv = inv * scale
    y = (x - mean) * inv
    return y if offset is None else y + offset
