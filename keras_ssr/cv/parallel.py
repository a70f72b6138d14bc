"""Training a fold data-parallel (``keras-ssr cv --distribute``).

:func:`replicate` picks the backend's own engine and returns a
:class:`Replication`, which the runner uses to build, compile, train and
score every fold:

- **TensorFlow**: ``tf.distribute.MirroredStrategy`` over the local GPUs
  (else over the logical CPU devices configured), or, when ``TF_CONFIG`` is
  set, ``tf.distribute.MultiWorkerMirroredStrategy`` over every worker's.
  The model is built and compiled in the strategy's scope; Keras' ``fit``
  splits each global batch across the replicas and sums their gradients
  (with several workers after :func:`_mend_multi_worker_fit`).
- **JAX**: ``keras.distribution.DataParallel`` over ``jax.devices()``, set
  for the fold's building and training only (all processes' devices after
  ``jax.distributed``, which ``keras.distribution.initialize()`` starts from
  the ``KERAS_DISTRIBUTION_*`` variables; each process then feeds its own
  share of every global batch). Keras compiles one SPMD program over the
  sharded global batch.
- **PyTorch**: Keras' torch ``fit`` has no data parallelism of its own, so
  under ``torchrun`` (``WORLD_SIZE`` above 1; the process group is
  initialised here when it is not yet) :func:`data_parallel_torch` gives the
  model a training step in which each rank computes its share of every
  global batch and the weight gradients are all-reduced before the
  optimiser's step; rank 0's initial weights are broadcast.

The semantics are the same everywhere. ``batch_size`` is the **global**
batch, split evenly across the replicas (it must be divisible by their
number), and the learning rate is unchanged, so a step computes the update
that one device computes on the same global batch: keras_ssr's batch
statistics are taken over the global batch (``synchronized_bn=True`` and the
attention layers' ``synchronized=True``, see :mod:`keras_ssr.distributed`)
and the loss is the mean over the global batch. A batch whose size the
replicas do not divide (the last one of an epoch) is given whole to every
replica (:class:`ReplicaBatches`): duplicates change neither a batch
statistic nor a mean, so the update is still one device's. Validation and
the held-out scores cover the whole set as without ``--distribute``.

Only the chief (TensorFlow's chief worker, JAX process 0, torch rank 0)
writes into the run folder; it tells the others which folds to train, in
one :meth:`Replication.broadcast`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

__all__ = [
    "ReplicaBatches",
    "Replication",
    "Validation",
    "data_parallel_torch",
    "replicate",
]

_TF_STRATEGIES: dict = {}  # created once per process (MultiWorkerMirrored must be)


class Replication:
    """How this process trains a fold: on one device, or data-parallel.

    Args:
        engine: the engine's name (``None``: one device).
        replicas: the number of replicas (devices, or torch ranks).
        processes: the number of processes taking part.
        chief: whether this process writes the run's files.
        strategy: TensorFlow's ``tf.distribute.Strategy``.
        distribution: JAX's ``keras.distribution.Distribution``.
    """

    def __init__(
        self,
        engine: str | None = None,
        replicas: int = 1,
        processes: int = 1,
        chief: bool = True,
        strategy=None,
        distribution=None,
    ):
        self.engine = engine
        self.replicas = int(replicas)
        self.processes = int(processes)
        self.chief = bool(chief)
        self.strategy = strategy
        self.distribution = distribution

    @property
    def active(self) -> bool:
        """Whether folds are trained on more than one replica."""
        return self.replicas > 1

    def __repr__(self) -> str:
        return (
            f"Replication(engine={self.engine!r}, replicas={self.replicas}, "
            f"processes={self.processes}, chief={self.chief})"
        )

    def building(self):
        """The context in which a fold's model is built and compiled
        (TensorFlow: the strategy's scope; JAX: the distribution)."""
        engine = self.strategy if self.strategy is not None else self.distribution
        return contextlib.nullcontext() if engine is None else engine.scope()

    def fitting(self):
        """The context of ``fit`` (JAX: the distribution; TensorFlow's model
        keeps the strategy it was built under)."""
        if self.distribution is None:
            return contextlib.nullcontext()
        return self.distribution.scope()

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """One device: no JAX distribution, keras_ssr's statistics local."""
        from keras_ssr.distributed import local_statistics

        previous = None
        if self.distribution is not None:
            from keras.distribution import distribution, set_distribution

            previous = distribution()
            set_distribution(None)
        try:
            with local_statistics():
                yield
        finally:
            if previous is not None:
                set_distribution(previous)

    @contextlib.contextmanager
    def scoring(self, model, twin) -> Iterator[Any]:
        """Yields the model that scores ``model``'s current weights.

        ``twin`` is a one-device copy of the architecture, compiled alike
        (``None`` when not :attr:`active`: ``model`` itself). Validation and
        the held-out scores run on it, over whole batches of any size, as
        without ``--distribute``: every engine's sharded evaluation needs
        batches that split (JAX) or splits them unevenly (TensorFlow).
        """
        if twin is None:
            yield model
            return
        with self.evaluation():
            twin.set_weights(model.get_weights())
            yield twin

    def prepare(self, model) -> None:
        """Readies a compiled model (torch: :func:`data_parallel_torch`;
        several TensorFlow workers: :func:`_mend_multi_worker_fit`)."""
        if self.engine == "torch.distributed":
            data_parallel_torch(model)
        if self.engine == "MultiWorkerMirroredStrategy":
            _mend_multi_worker_fit(model)

    def fit_data(self, data: dict[str, Any], config, seed: int) -> dict[str, Any]:
        """``model.fit``'s data arguments, as :class:`ReplicaBatches`.

        ``data`` is :func:`keras_ssr.cv.build.training_data`'s result. The
        arrays become a seeded :class:`~keras_ssr.cv.augment.FlipDataset`
        without flips (the order of ``shuffle`` is then keras_ssr's, as with
        ``augment="flips"``).
        """
        if not self.active:
            return data
        source = data.get("x")
        if not isinstance(source, keras.utils.PyDataset):
            from keras_ssr.cv.augment import FlipDataset

            source = FlipDataset(
                data["x"],
                data["y"],
                config.batch_size,
                seed=seed,
                data_format=config.data_format,
                shuffle=config.shuffle,
                flip=False,
            )
        process, processes = 0, 1
        if self.distribution is not None:  # JAX feeds each process its share
            import jax

            process, processes = jax.process_index(), jax.process_count()
        batches = ReplicaBatches(source, self.replicas, processes, process)
        return {"x": batches, "shuffle": False}  # the source orders the batches

    def broadcast(self, values) -> np.ndarray:
        """The chief's ``values`` (a 1-D array of integers) on every process.

        Every process must call it with an array of the same length (only
        the chief's entries count), as one collective. One process:
        ``values`` themselves.
        """
        values = np.asarray(values, dtype=np.int64)
        if self.processes <= 1:
            return values
        if not self.chief:
            values = np.zeros_like(values)
        if self.engine == "torch.distributed":
            import torch
            import torch.distributed as dist

            tensor = torch.from_numpy(values.copy())
            if dist.get_backend() == "nccl":
                tensor = tensor.cuda()
            dist.broadcast(tensor, src=0)
            return tensor.cpu().numpy()
        if self.distribution is not None:
            from jax.experimental import multihost_utils

            shared = multihost_utils.broadcast_one_to_all(values.astype(np.int32))
            return np.asarray(shared, dtype=np.int64)
        import tensorflow as tf

        def share():  # the first replica's values, zeros elsewhere, summed
            first = tf.distribute.get_replica_context().replica_id_in_sync_group == 0
            return tf.cast(first, tf.float64) * tf.constant(values, tf.float64)

        total = self.strategy.reduce(
            tf.distribute.ReduceOp.SUM, self.strategy.run(share), axis=None
        )
        return np.round(total.numpy()).astype(np.int64)


def _mend_multi_worker_fit(model) -> None:
    """Works around two defects of Keras 3's TensorFlow ``fit`` under
    ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585; a plain
    ``Dense`` model fails the same way):

    - before the first step ``fit`` builds the metrics from the first batch
      reduced with ``strategy.reduce``, which refuses the batch's ``(x, y)``
      tuple across workers (``Attempt to convert a value (PerReplica...``):
      they are built from the model's input and output shapes instead (only
      the shapes count);
    - every step's logs are reduced with ``strategy.reduce(..., axis=0)``,
      which refuses scalars (``Invalid reduction dimension 0 for input with 0
      dimensions``): the training step returns them as 1-element vectors,
      which that reduce averages over the replicas into scalars again.
    """
    import tensorflow as tf

    build, step = model._maybe_symbolic_build, model.train_step
    shapes = (model.inputs[0], model.outputs[0])
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: build(
        data_batch=shapes
    )
    model.train_step = lambda data: {
        name: tf.reshape(value, [1]) for name, value in step(data).items()
    }


class Validation(keras.callbacks.Callback):
    """Scores ``(x, y)`` at every epoch's end, like ``fit``'s ``validation_data``.

    The trained model's weights go into ``twin`` (see
    :meth:`Replication.scoring`), which evaluates the whole set on one
    device; ``val_<name>`` goes into the epoch's logs, seen by the callbacks
    after this one.

    Args:
        replication: the :class:`Replication`.
        twin: the one-device model.
        x, y: the validation set.
        batch_size: the evaluation batch.
    """

    def __init__(self, replication: Replication, twin, x, y, batch_size: int):
        super().__init__()
        self.replication, self.twin = replication, twin
        self.x, self.y, self.batch_size = x, y, batch_size

    def on_epoch_end(self, epoch, logs=None):
        with self.replication.scoring(self.model, self.twin) as scorer:
            scores = scorer.evaluate(
                self.x, self.y, batch_size=self.batch_size, verbose=0, return_dict=True
            )
        if logs is not None:
            logs.update({f"val_{name}": value for name, value in scores.items()})


class ReplicaBatches(keras.utils.PyDataset):
    """Global batches whose size the replicas divide.

    A batch of ``source`` whose size is not a multiple of ``replicas`` is
    repeated ``replicas`` times, so that every replica gets all of it. A
    repeated batch has the same minima, maxima, means and variances, and the
    same mean loss and gradient, so a data-parallel step on it is the
    one-device step (the epoch's logged training loss counts it
    ``replicas`` times). With several processes each gets its contiguous
    share of every batch (``processes`` must divide the repeated size,
    which it does when it divides ``replicas``).

    Args:
        source: a ``keras.utils.PyDataset`` of ``(x, y)`` global batches.
        replicas: the number of replicas.
        processes: the number of processes feeding the replicas.
        process: this process's index.

    Example:
        >>> from keras_ssr.cv.augment import FlipDataset
        >>> x = np.arange(5, dtype="float32").reshape(5, 1, 1, 1)
        >>> batches = FlipDataset(x, x, batch_size=2, flip=False)
        >>> [len(b[0]) for b in ReplicaBatches(batches, replicas=2)]
        [2, 2, 2]
        >>> ReplicaBatches(batches, replicas=2)[2][0].ravel().tolist()
        [4.0, 4.0]
    """

    def __init__(self, source, replicas: int, processes: int = 1, process: int = 0):
        super().__init__()
        from keras_ssr import _checks

        self.source = source
        self.replicas = _checks.check_int("replicas", replicas, 1)
        self.processes = _checks.check_int("processes", processes, 1)
        self.process = _checks.check_int("process", process, 0, self.processes - 1)
        if self.replicas % self.processes:
            raise ValueError(
                "`processes` must divide `replicas`. Received: "
                f"replicas={replicas}, processes={processes}"
            )

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        x, y = self.source[index][:2]
        if len(x) % self.replicas:
            x = np.concatenate([x] * self.replicas)
            y = np.concatenate([y] * self.replicas)
        if self.processes > 1:
            share = len(x) // self.processes
            part = slice(self.process * share, (self.process + 1) * share)
            x, y = x[part], y[part]
        return x, y

    def on_epoch_end(self) -> None:
        self.source.on_epoch_end()


# --------------------------------------------------------------------------
# PyTorch: a data-parallel training step under torch.distributed
# --------------------------------------------------------------------------


def _all_reduce_flat(tensors) -> None:
    """Sums ``tensors`` over the ranks in place, in one all-reduce."""
    import torch
    import torch.distributed as dist

    tensors = [t for t in tensors if t is not None]
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def _torch_train_step(model, loss_tracker, data):
    import torch
    import torch.distributed as dist

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    world, rank = dist.get_world_size(), dist.get_rank()
    size = int(x.shape[0])
    if size % world:
        raise ValueError(
            f"A data-parallel batch must split evenly over the {world} ranks "
            f"(see keras_ssr.cv.parallel.ReplicaBatches). Received: a batch of {size}"
        )
    share = slice(rank * (size // world), (rank + 1) * (size // world))
    x_part, y_part = x[share], y[share]
    weight_part = None if sample_weight is None else sample_weight[share]

    y_pred = model(x_part, training=True)
    model.zero_grad()
    # The mean over this rank's equal share: the global batch's mean loss is
    # the sum over ranks of loss / world, and so is its gradient.
    loss = (
        model.compute_loss(
            x=x_part, y=y_part, y_pred=y_pred, sample_weight=weight_part, training=True
        )
        / world
    )
    with torch.no_grad():
        total = loss.detach().clone().reshape(1)
        dist.all_reduce(total)
    loss_tracker.update_state(total[0], sample_weight=size)
    loss = model.optimizer.scale_loss(loss)
    weights = model.trainable_weights[:]
    if weights:
        loss.backward()
        gradients = [v.value.grad for v in weights]
        with torch.no_grad():
            _all_reduce_flat(gradients)
            model.optimizer.apply(gradients, weights)
    with torch.no_grad():  # metrics over the global batch
        parts = [torch.empty_like(y_pred) for _ in range(world)]
        dist.all_gather(parts, y_pred.detach().contiguous())
        y_pred = torch.cat(parts)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _local(step: Callable) -> Callable:
    from keras_ssr.distributed import local_statistics

    @functools.wraps(step)
    def run(data):
        with local_statistics():
            return step(data)

    return run


def data_parallel_torch(model) -> None:
    """Makes a compiled Keras model's ``fit`` data-parallel over ``torch.distributed``.

    Keras' ``fit`` on the torch backend trains on one device; this gives the
    model, on every rank of an initialised process group, a training step in
    which

    - each rank takes its equal, contiguous share of the global batch (every
      rank is fed the same global batches, e.g. the same seeded order; a
      batch must split evenly, see :class:`ReplicaBatches`),
    - keras_ssr's batch statistics are all-reduced (:mod:`keras_ssr.distributed`;
      build the model with ``synchronized_bn=True``),
    - the loss is the global batch's mean (each share's mean over the
      number of ranks) and the weight gradients are summed over the ranks
      in one all-reduce before the optimiser's step,
    - the logged loss and the metrics cover the global batch (the
      predictions are gathered).

    Evaluation and prediction run on every rank over the whole batch, with
    local statistics, as on one device. Rank 0's weights are broadcast to the
    others first. Call it after ``compile`` (and after loading weights),
    on every rank.

    Args:
        model: a compiled ``keras.Model`` on the torch backend.

    Raises:
        RuntimeError: if the backend is not torch or no process group is
            initialised.

    Example:
        >>> model.compile(optimizer="sgd", loss="binary_crossentropy")  # doctest: +SKIP
        >>> data_parallel_torch(model)  # doctest: +SKIP
        >>> model.fit(x, y, batch_size=16 * world_size)  # doctest: +SKIP
    """
    if keras.backend.backend() != "torch":
        raise RuntimeError(
            "data_parallel_torch needs the torch backend. Received: "
            f"KERAS_BACKEND={keras.backend.backend()!r}"
        )
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "data_parallel_torch needs an initialised torch.distributed process "
            "group (run under torchrun and call torch.distributed.init_process_group)."
        )
    with torch.no_grad():
        for variable in model.weights:
            dist.broadcast(variable.value.data, src=0)
    # Keras' own loss tracker, the compiled model's metric named "loss".
    tracker = next(m for m in model.metrics if m.name == "loss")
    model.train_step = functools.partial(_torch_train_step, model, tracker)
    model.test_step = _local(model.test_step)
    model.predict_step = _local(model.predict_step)


# --------------------------------------------------------------------------
# Choosing the engine
# --------------------------------------------------------------------------


def _tensorflow() -> Replication:
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        if "multi_worker" not in _TF_STRATEGIES:
            _TF_STRATEGIES["multi_worker"] = tf.distribute.MultiWorkerMirroredStrategy()
        strategy = _TF_STRATEGIES["multi_worker"]
        cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
        workers = sum(len(cluster.get(kind, ())) for kind in ("chief", "worker"))
        return Replication(
            "MultiWorkerMirroredStrategy",
            strategy.num_replicas_in_sync,
            max(workers, 1),
            strategy.extended.should_checkpoint,
            strategy=strategy,
        )
    devices = tuple(d.name for d in tf.config.list_logical_devices("GPU")) or tuple(
        d.name for d in tf.config.list_logical_devices("CPU")
    )
    if len(devices) <= 1:
        return Replication(replicas=1)
    if devices not in _TF_STRATEGIES:
        _TF_STRATEGIES[devices] = tf.distribute.MirroredStrategy(devices=list(devices))
    strategy = _TF_STRATEGIES[devices]
    return Replication(
        "MirroredStrategy", strategy.num_replicas_in_sync, strategy=strategy
    )


def _jax() -> Replication:
    if os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES") or os.environ.get(
        "KERAS_DISTRIBUTION_JOB_ADDRESSES"
    ):
        from jax._src import distributed as jax_distributed

        if jax_distributed.global_state.client is None:
            keras.distribution.initialize()
    import jax

    devices = jax.devices()
    if len(devices) <= 1:
        return Replication(replicas=1)
    if jax.process_count() > 1 and _keras_version() < (3, 11):
        raise RuntimeError(
            "--distribute over several JAX processes needs Keras 3.11 or later "
            "(earlier Keras' fit takes only a tf.data.Dataset across processes). "
            f"Received: Keras {keras.__version__}, {jax.process_count()} processes"
        )
    # Each process feeds its own share of every global batch (ReplicaBatches).
    distribution = keras.distribution.DataParallel(
        devices=devices, auto_shard_dataset=False
    )
    return Replication(
        "keras.distribution.DataParallel",
        len(devices),
        jax.process_count(),
        jax.process_index() == 0,
        distribution=distribution,
    )


def _keras_version() -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", keras.__version__).groups()
    return int(major), int(minor)


def _torch() -> Replication:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return Replication(replicas=1)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    world = dist.get_world_size()
    if world <= 1:
        return Replication(replicas=1)
    return Replication("torch.distributed", world, world, dist.get_rank() == 0)


_NO_ENGINE = {
    "tensorflow": "TensorFlow sees one device",
    "jax": "JAX sees one device",
    "torch": "torch trains one process on one device; run under torchrun "
    "(e.g. `torchrun --nproc-per-node=N -m keras_ssr cv --distribute ...`) "
    "for data parallelism",
}


def replicate(config, log: Callable[[str], Any] = print) -> Replication:
    """The :class:`Replication` of ``config`` (``distribute``) on this backend.

    With ``config.distribute`` off, or one device, a one-device
    :class:`Replication` (and, for the latter, a logged note).

    Raises:
        ValueError: if the replicas do not divide ``config.batch_size`` (the
            global batch); both are named.
        RuntimeError: for several JAX processes with Keras before 3.11.
    """
    if not config.distribute:
        return Replication()
    backend = keras.backend.backend()
    engines = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}
    replication = engines[backend]() if backend in engines else Replication()
    if not replication.active:
        why = _NO_ENGINE.get(backend, f"the {backend} backend has no engine here")
        log(f"--distribute: {why}; the folds train as without it.")
        return replication
    if config.batch_size % replication.replicas:
        raise ValueError(
            f"`batch_size` is the global batch of --distribute and must be "
            f"divisible by the {replication.replicas} replicas of "
            f"{replication.engine}. Received: batch_size={config.batch_size}, "
            f"replicas={replication.replicas}"
        )
    if replication.chief:
        log(
            f"--distribute: {replication.engine}, {replication.replicas} replicas "
            f"in {replication.processes} process(es); global batch "
            f"{config.batch_size} ({config.batch_size // replication.replicas} per "
            f"replica), learning rate {config.learning_rate:g} unchanged."
        )
    return replication
