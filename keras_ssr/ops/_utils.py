"""Private helpers shared by the ops modules: input checks, dtype widening,
slicing, and JAX compilation of eager calls."""

from __future__ import annotations

import functools

import keras
from keras import ops as kops

from keras_ssr import _checks


def _check_input(x, data_format: str, min_rank: int = 3) -> tuple[int, ...]:
    """Checks dtype and rank; returns the spatial axes of ``x``."""
    _checks.check_float("x", x)
    ndim = len(x.shape)
    if ndim < min_rank:
        raise ValueError(
            f"`x` must have a batch axis, a channel axis and at least one "
            f"spatial axis. Received: x.shape={tuple(x.shape)}"
        )
    if data_format == "channels_last":
        return tuple(range(1, ndim - 1))
    return tuple(range(2, ndim))


def _float32_or_wider(x):
    dtype = _checks.wide_float(x.dtype)
    return kops.cast(x, dtype)


def _compiled_on_jax(fn):
    """Runs ``fn(x, *static)`` as one XLA program on the JAX backend.

    Called eagerly, JAX compiles every primitive separately for every new
    shape (each box-sum slice is its own program): about 1 s for a first
    call of :func:`singularity_strength`, against 0.1 s jitted. Inside an
    outer ``jax.jit``/``grad`` the wrapper is a nested jit, which XLA
    inlines. Symbolic ``KerasTensor`` inputs and other backends call ``fn``
    directly. Every argument after ``x`` must be hashable and static.
    """
    if keras.backend.backend() != "jax":
        return fn
    import inspect

    import jax

    arity = len(inspect.signature(fn).parameters)
    jitted = jax.jit(fn, static_argnums=tuple(range(1, arity)))

    @functools.wraps(fn)
    def call(x, *static):
        if isinstance(x, keras.KerasTensor):
            return fn(x, *static)
        return jitted(x, *static)

    return call


def _slice(x, axis: int, start: int | None, stop: int | None):
    index = [slice(None)] * len(x.shape)
    index[axis] = slice(start, stop)
    return x[tuple(index)]
