"""Batch statistics over the global batch of a data-parallel step.

SSR's batch-wide min-max scaling (``scaling="batch"``) and the batch
normalisation of its singularity maps take statistics over the batch axis.
Under data parallelism each replica holds a slice of the batch; computed
locally those statistics are per-replica, and a model trained on ``n``
devices is not the model trained on one. The functions here take them over
the global batch instead, with the matching gradients, on each backend's
own engine:

- **TensorFlow** (``tf.distribute``: ``MirroredStrategy``,
  ``MultiWorkerMirroredStrategy``, ...): all-reduces in the replica context
  (``tf.distribute.get_replica_context()``). TensorFlow's ``ReduceOp`` has
  no minimum or maximum, so those gather one value per replica
  (``all_gather``) and reduce the gathered tensor.
- **PyTorch** (an initialised ``torch.distributed`` process group with more
  than one rank, e.g. under ``torchrun``): ``torch.distributed.all_reduce``
  with ``SUM``, ``MIN`` and ``MAX`` over the default group.
- **JAX** (``keras.distribution``, ``jax.distributed``): nothing to do.
  Keras' JAX trainer compiles one SPMD program over the global, sharded
  batch, so ``keras.ops.min`` and ``keras.ops.sum`` over the batch axis are
  already global.

Outside those contexts (one device, a TensorFlow cross-replica context, a
single-rank process group, or inside :func:`local_statistics`) every
function here reduces locally and adds nothing to the graph.

Gradients: the all-reduce of a sum passes back the sum of every replica's
upstream gradient. The gradient of a global minimum (maximum) goes only to
the entries, on whichever replicas hold them, equal to it, shared equally
among all such ties across replicas, as ``keras.ops.min`` shares it on one
device. Each replica then holds the gradient of the global loss with
respect to its own inputs, and the usual all-reduce of weight gradients
gives exactly the one-device gradient.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import keras
from keras import ops as kops

from keras_ssr import _checks

__all__ = [
    "REDUCTIONS",
    "all_reduce",
    "batch_count",
    "batch_max",
    "batch_min",
    "local_statistics",
    "num_replicas",
    "reducer",
    "replica_sum",
    "spans_replicas",
]

#: The reductions :func:`all_reduce` understands.
REDUCTIONS = ("sum", "min", "max")

_state = threading.local()


@contextlib.contextmanager
def local_statistics() -> Iterator[None]:
    """Within this context keras_ssr's batch statistics are per replica.

    For a computation that only some replicas run, e.g. validation on rank
    0 of a ``torch.distributed`` job, where an all-reduce would wait for
    ranks that never join it. Under TensorFlow the switch acts when a
    function is traced; under JAX statistics are global regardless.

    Example:
        >>> with keras_ssr.distributed.local_statistics():
        ...     y = model(x_rank0_only, training=False)  # doctest: +SKIP
    """
    previous = getattr(_state, "local", False)
    _state.local = True
    try:
        yield
    finally:
        _state.local = previous


def _tf_replica_context():
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


def _torch_world_size() -> int:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


def num_replicas() -> int:
    """How many replicas keras_ssr's batch statistics are all-reduced over.

    ``tf.distribute``'s replicas in sync (in a replica context), the
    ``torch.distributed`` world size, and 1 otherwise: on one device, inside
    :func:`local_statistics`, and under JAX, whose SPMD programs see the
    global batch without an explicit all-reduce.
    """
    if getattr(_state, "local", False):
        return 1
    backend = keras.backend.backend()
    if backend == "tensorflow":
        context = _tf_replica_context()
        return 1 if context is None else int(context.num_replicas_in_sync)
    if backend == "torch":
        return _torch_world_size()
    return 1


def spans_replicas(axis: Sequence[int], synchronized: bool = True) -> bool:
    """Whether a reduction over ``axis`` must be all-reduced across replicas.

    True when ``synchronized``, ``axis`` includes the batch axis 0 and
    :func:`num_replicas` is above 1.
    """
    return bool(synchronized) and 0 in tuple(axis) and num_replicas() > 1


def all_reduce(x, op: str = "sum"):
    """``op`` (``"sum"``, ``"min"`` or ``"max"``) of ``x`` over all replicas.

    Not differentiable: for values that a hand-written gradient uses (see
    :func:`replica_sum`, :func:`batch_min` and :func:`batch_max` for
    differentiable ones). Every replica must call it, with tensors of the
    same shape, in the same order. Returns ``x`` itself when
    :func:`num_replicas` is 1.

    Raises:
        ValueError: for an unknown ``op``.
    """
    return reducer()(x, op)


def reducer(synchronized: bool = True):
    """:func:`all_reduce` as decided now, for a gradient computed later.

    Returns ``f(x, op)``: the all-reduce when ``synchronized`` and
    :func:`num_replicas` is above 1 at the time of this call, else the
    identity. A hand-written gradient uses the ``f`` its forward pass got,
    so that forward and backward agree even when the backward pass runs
    outside :func:`local_statistics` or on another thread.
    """
    if synchronized and num_replicas() > 1:
        return _all_reduce
    return _identity


def _identity(x, op: str = "sum"):
    _checks.check_choice("op", op, REDUCTIONS)
    return x


def _all_reduce(x, op: str = "sum"):
    op = _checks.check_choice("op", op, REDUCTIONS)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        context = _tf_replica_context()
        x = tf.stop_gradient(x)
        if op == "sum":
            return context.all_reduce(tf.distribute.ReduceOp.SUM, x)
        gathered = context.all_gather(tf.expand_dims(x, 0), axis=0)
        reduce = tf.reduce_min if op == "min" else tf.reduce_max
        return reduce(gathered, axis=0)
    import torch
    import torch.distributed as dist

    ops = {
        "sum": dist.ReduceOp.SUM,
        "min": dist.ReduceOp.MIN,
        "max": dist.ReduceOp.MAX,
    }
    with torch.no_grad():
        y = x.detach().clone()
        dist.all_reduce(y, op=ops[op])
    return y


def replica_sum(x):
    """The sum of ``x`` over replicas, differentiable.

    The gradient with respect to each replica's ``x`` is the sum of all
    replicas' upstream gradients. ``x`` itself when :func:`num_replicas` is 1.
    """
    if num_replicas() <= 1:
        return x

    @kops.custom_gradient
    def total(x):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return _all_reduce(upstream, "sum")

        return _all_reduce(x, "sum"), grad

    return total(x)


def _normalize_axes(x, axis) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(len(x.shape)))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(sorted({a % len(x.shape) for a in axis}))


def _extremum(x, axis, keepdims: bool, synchronized: bool, op: str):
    reduce = kops.min if op == "min" else kops.max
    axes = _normalize_axes(x, axis)
    if not spans_replicas(axes, synchronized):
        return reduce(x, axis=axes, keepdims=keepdims)

    @kops.custom_gradient
    def extremum(x):
        value = _all_reduce(reduce(x, axis=axes, keepdims=True), op)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            upstream = _all_reduce(kops.cast(upstream, x.dtype), "sum")
            hit = kops.cast(kops.equal(x, value), x.dtype)
            ties = _all_reduce(kops.sum(hit, axis=axes, keepdims=True), "sum")
            return hit * (upstream / ties)

        return value, grad

    value = extremum(x)
    return value if keepdims else kops.squeeze(value, axis=axes)


def batch_min(x, axis=None, keepdims: bool = False, synchronized: bool = True):
    """``keras.ops.min(x, axis, keepdims)``, over the global batch.

    When ``axis`` includes the batch axis 0, ``synchronized`` is true and
    there are several replicas (:func:`spans_replicas`), the minimum is
    taken over every replica's batch; its gradient goes to the entries equal
    to it, shared equally among all ties on all replicas. Otherwise it is
    ``keras.ops.min``.
    """
    return _extremum(x, axis, keepdims, synchronized, "min")


def batch_max(x, axis=None, keepdims: bool = False, synchronized: bool = True):
    """``keras.ops.max(x, axis, keepdims)``, over the global batch.

    As :func:`batch_min`.
    """
    return _extremum(x, axis, keepdims, synchronized, "max")


def batch_count(x, axis: Sequence[int]):
    """The number of entries of ``x`` along ``axis``, over all replicas.

    A float tensor of ``x``'s dtype, kept as size-1 axes; replicas may hold
    batches of different sizes.
    """
    axes = _normalize_axes(x, axis)
    shape = kops.shape(x)
    count = kops.cast(1, x.dtype)
    for a in axes:
        count = count * kops.cast(shape[a], x.dtype)
    count = kops.reshape(count, [1] * len(x.shape))
    return _all_reduce(count, "sum") if spans_replicas(axes) else count


def __getattr__(name: str):
    # PEP 562: the deprecated class, now a subclass of
    # keras_ssr.layers.BatchNormalization (which imports this module).
    if name == "SynchronizedBatchNormalization":
        from keras_ssr.layers.normalization import SynchronizedBatchNormalization

        return SynchronizedBatchNormalization
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
