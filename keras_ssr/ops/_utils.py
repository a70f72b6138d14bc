"""Private helpers shared by the ops modules: input conversion and checks,
dtype widening, slicing, and JAX compilation of eager calls."""

from __future__ import annotations

import functools
import itertools
import numbers

import keras
import numpy as np
from keras import ops as kops

from keras_ssr import _checks


def _dtype_name(dtype) -> str:
    try:
        return keras.backend.standardize_dtype(dtype)
    except (TypeError, ValueError):  # strings, objects: no Keras dtype
        return str(dtype)


def _is_float_name(name: str) -> bool:
    try:
        return keras.backend.is_float_dtype(name)
    except ValueError:  # no Keras dtype at all
        return False


def _as_float_tensor(name: str, x):
    r"""``x`` as a floating-point tensor of the current backend.

    Backend tensors and symbolic ``KerasTensor``\ s pass through unchanged;
    ``keras.Variable``\ s, NumPy arrays, Python lists and scalars go through
    ``keras.ops.convert_to_tensor``. NumPy arrays keep their dtype where the
    backend has it (float64 becomes float32 on JAX without
    ``jax_enable_x64``); Python floats become ``keras.config.floatx()``.

    Raises:
        TypeError: unless the values are floating point (a list of Python
            ints is refused like an int tensor: write ``1.0``, not ``1``).
        ValueError: for a ragged list, which is no array.
    """
    if isinstance(x, keras.KerasTensor) or kops.is_tensor(x):
        _checks.check_float(name, x)
        return x
    if not isinstance(x, keras.Variable):
        try:
            dtype = np.asarray(x).dtype
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"`{name}` must be a tensor, an array or a (nested) list of "
                f"numbers of equal lengths. Received: {name} of type "
                f"{type(x).__name__} ({error})"
            ) from None
        if not _is_float_name(_dtype_name(dtype)):
            raise TypeError(
                f"`{name}` must be floating point. Received: {name}.dtype="
                f"{_dtype_name(dtype)} (a {type(x).__name__})"
            )
    x = kops.convert_to_tensor(x)
    _checks.check_float(name, x)
    return x


def _check_scales(scales) -> np.ndarray:
    """``scales`` as a float64 vector of at least two positive, finite values,
    not all equal (list, NumPy array or tensor); a clear error otherwise."""
    if kops.is_tensor(scales):
        scales = kops.convert_to_numpy(scales)
    try:
        scales = np.asarray(scales, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"`scales` must be a sequence of real numbers. Received: scales={scales!r}"
        ) from None
    if (
        scales.ndim != 1
        or scales.size < 2
        or not np.all(np.isfinite(scales))
        or np.any(scales <= 0)
    ):
        raise ValueError(
            "`scales` must hold at least two positive, finite scales. "
            f"Received: scales={scales.tolist()}"
        )
    if np.all(scales == scales[0]):
        raise ValueError(
            "`scales` must not all be equal: the slope is undefined. "
            f"Received: scales={scales.tolist()}"
        )
    return scales


def _check_axes(axis, ndim: int, shape) -> tuple[int, ...]:
    """``axis`` (``None``, an int or a sequence of ints) as sorted,
    non-negative axes of a rank-``ndim`` tensor; duplicates and axes outside
    ``[-ndim, ndim)`` are errors (no wrapping)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else axis
    try:
        axes = tuple(axes)
    except TypeError:
        raise TypeError(
            f"`axis` must be an int or a sequence of ints. Received: axis={axis!r}"
        ) from None
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, numbers.Integral):
            raise TypeError(
                f"`axis` must hold ints. Received: axis={axis!r} (holding "
                f"{type(a).__name__})"
            )
        if not -ndim <= a < ndim:
            raise ValueError(
                f"`axis` must hold axes in [{-ndim}, {ndim}) for an input of "
                f"rank {ndim}. Received: axis={axis!r}, x.shape={tuple(shape)}"
            )
    normalized = [int(a) % ndim for a in axes]
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"`axis` must not repeat an axis. Received: axis={axis!r}")
    return tuple(sorted(normalized))


def _is_empty(x) -> bool:
    """Whether ``x`` is known to hold no element (a zero-sized axis)."""
    return any(d == 0 for d in x.shape)


def _check_input(x, data_format: str, min_rank: int = 3) -> tuple[int, ...]:
    """Checks dtype and rank; returns the spatial axes of ``x``."""
    _checks.check_float("x", x)
    ndim = len(x.shape)
    if ndim < min_rank:
        raise ValueError(
            f"`x` must have a batch axis, a channel axis and at least one "
            f"spatial axis. Received: x.shape={tuple(x.shape)}"
        )
    return _checks.spatial_axes(data_format, ndim)


def _float32_or_wider(x):
    dtype = _checks.wide_float(x.dtype)
    return kops.cast(x, dtype)


def _compiled_on_jax(fn=None, *, tensors: int = 1):
    """Runs ``fn(*tensors, *static)`` as one XLA program on the JAX backend.

    Called eagerly, JAX compiles every primitive separately for every new
    shape (each box-sum slice is its own program): about 1 s for a first
    call of :func:`singularity_strength`, against 0.1 s jitted. Inside an
    outer ``jax.jit``/``grad`` the wrapper is a nested jit, which XLA
    inlines. Symbolic ``KerasTensor`` inputs and other backends call ``fn``
    directly. The first ``tensors`` arguments are arrays; every one after
    them must be hashable and static.
    """
    if fn is None:
        return functools.partial(_compiled_on_jax, tensors=tensors)
    if keras.backend.backend() != "jax":
        return fn
    import inspect

    import jax

    arity = len(inspect.signature(fn).parameters)
    jitted = jax.jit(fn, static_argnums=tuple(range(tensors, arity)))

    @functools.wraps(fn)
    def call(*args):
        if any(isinstance(a, keras.KerasTensor) for a in args[:tensors]):
            return fn(*args)
        return jitted(*args)

    return call


def _slice(x, axis: int, start: int | None, stop: int | None):
    index = [slice(None)] * len(x.shape)
    index[axis] = slice(start, stop)
    return x[tuple(index)]


class _Recomputed:
    """``fn(*inputs)`` (or ``fn(parent(), *inputs)``), evaluated where it is read.

    On JAX every call evaluates the chain of ``fn``s afresh, from all its
    inputs passed through one ``jax.lax.optimization_barrier``: XLA then
    neither merges the evaluations (CSE) nor shares their intermediates
    between kernels, and fuses each evaluation, whole, into the one kernel
    that reads it (its CPU library fusions take no value that another kernel
    reads too), so that large intermediates are recomputed rather than
    written and read back. Elsewhere, where every op is a kernel launch,
    each ``fn`` runs once and its value is reused. The barrier is a
    compiler hint and no maths: the values are the same on every backend.
    Call each evaluation once, for one consumer.
    """

    def __init__(self, fn, *inputs, parent=None):
        self._fn, self._inputs, self._parent, self._value = fn, inputs, parent, None
        self._turns = itertools.count()

    def _root(self) -> _Recomputed:
        return self if self._parent is None else self._parent._root()

    def then(self, fn, *inputs) -> _Recomputed:
        """``fn(self(), *inputs)``, evaluated as ``self``."""
        return _Recomputed(fn, *inputs, parent=self)

    def _leaves(self) -> tuple:
        up = self._parent._leaves() if self._parent is not None else ()
        return (*up, self._inputs)

    def _evaluate(self, leaves):
        *up, own = leaves
        if self._parent is None:
            return self._fn(*own)
        return self._fn(self._parent._evaluate(up), *own)

    def __call__(self):
        if keras.backend.backend() == "jax":
            import jax

            # XLA merges (CSE) barriers of the same operands in the same order
            # (it drops unused ones first): each evaluation of a chain passes
            # its leaves rotated by one more place.
            flat, tree = jax.tree_util.tree_flatten(self._leaves())
            turn = next(self._root()._turns) % len(flat)
            flat = flat[turn:] + flat[:turn]
            flat = list(_barrier(flat))
            flat = flat[-turn:] + flat[:-turn] if turn else flat
            return self._evaluate(jax.tree_util.tree_unflatten(tree, flat))
        if self._value is None:
            parent = () if self._parent is None else (self._parent(),)
            self._value = self._fn(*parent, *self._inputs)
        return self._value


def _written(x):
    """``x``, which XLA (JAX) writes out whole for its readers rather than
    merging the reduction that makes it into theirs (a sum of a sum is one
    reduction of the larger tensor, which then has two readers). Other
    backends: ``x`` itself."""
    if keras.backend.backend() != "jax":
        return x
    return _barrier(x)


def _barrier(values):
    """``jax.lax.optimization_barrier(values)``, a compiler hint (no maths);
    ``values`` themselves on a JAX without it (JAX 0.4.30, the floor, has
    none public): the same results, with more traffic."""
    import jax

    barrier = getattr(jax.lax, "optimization_barrier", None)
    return values if barrier is None else barrier(values)
