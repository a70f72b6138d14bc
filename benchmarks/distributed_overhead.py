"""What synchronised batch statistics cost per training step, two replicas.

Trains an SSR-U-Net data-parallel on two replicas, alternately with
``synchronized=True`` + ``synchronized_bn=True`` (global statistics: the
all-reduces of :mod:`keras_ssr.distributed`) and with both off (per-replica
statistics, no extra all-reduce), and reports the ratio of their median step
times per round, with its spread over rounds::

    python benchmarks/distributed_overhead.py tensorflow  # 2 logical CPUs
    torchrun --standalone --nnodes=1 --nproc-per-node=2 \\
        benchmarks/distributed_overhead.py torch          # 2 gloo ranks

JAX is not measured: under ``keras.distribution`` both settings compile to
the same global SPMD program. Options: ``--rounds``, ``--steps``,
``--batch`` (global), ``--size`` (image side).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

REPLICAS = 2
CHANNELS = (8, 16, 32)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine", choices=("tensorflow", "torch"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    return parser.parse_args(argv)


def make_model(synchronized: bool, size: int):
    from keras_ssr.models import build_unet

    return build_unet(
        CHANNELS,
        input_shape=(size, size, 3),
        attention="ssr",
        attention_kwargs={"r": 2, "max_scale": 3, "synchronized": synchronized},
        synchronized_bn=synchronized,
    )


def data(batch: int, size: int):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch, size, size, 3)).astype("float32")
    x[batch // 2 :] = 3.0 + 5.0 * x[batch // 2 :]
    y = (rng.uniform(size=(batch, size, size, 1)) > 0.5).astype("float32")
    return x, y


def tensorflow_times(args):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS
    )
    import keras

    strategy = tf.distribute.MirroredStrategy([f"/cpu:{r}" for r in range(REPLICAS)])

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    x, y = data(args.batch, args.size)
    xs = np.concatenate([x] * args.steps)
    ys = np.concatenate([y] * args.steps)
    models = {}
    for synchronized in (True, False):
        with strategy.scope():
            model = make_model(synchronized, args.size)
            model.compile(optimizer="sgd", loss="binary_crossentropy")
        models[synchronized] = model
    rounds = {True: [], False: []}
    for r in range(args.rounds + 1):  # round 0 traces and warms up
        for synchronized, model in models.items():
            timer = StepTimer()
            timer.times = []
            model.fit(
                xs, ys, batch_size=args.batch, epochs=1, verbose=0, callbacks=[timer]
            )
            if r:
                rounds[synchronized].append(statistics.median(timer.times[1:]))
    return rounds


def torch_times(args):
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    import keras

    x, y = data(args.batch, args.size)
    local = slice(rank * args.batch // REPLICAS, (rank + 1) * args.batch // REPLICAS)
    x, y = torch.tensor(x[local]), torch.tensor(y[local])
    models = {s: make_model(s, args.size) for s in (True, False)}
    optimizers = {}
    for s, model in models.items():
        optimizers[s] = keras.optimizers.SGD()
        optimizers[s].build(model.trainable_variables)

    def step(model, optimizer):
        model.zero_grad()
        pred = model(x, training=True)
        loss = keras.ops.mean(keras.losses.binary_crossentropy(y, pred)) / REPLICAS
        loss.backward()
        grads = [v.value.grad for v in model.trainable_variables]
        for g in grads:
            dist.all_reduce(g)
        optimizer.apply(grads, model.trainable_variables)

    rounds = {True: [], False: []}
    for r in range(args.rounds + 1):
        for s, model in models.items():
            times = []
            for _ in range(args.steps):
                dist.barrier()
                start = time.perf_counter()
                step(model, optimizers[s])
                times.append(time.perf_counter() - start)
            if r:
                rounds[s].append(statistics.median(times))
    dist.destroy_process_group()
    return rounds if rank == 0 else None


def main(argv=None):
    args = parse(argv)
    os.environ["KERAS_BACKEND"] = args.engine
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    rounds = (tensorflow_times if args.engine == "tensorflow" else torch_times)(args)
    if rounds is None:
        return
    ratios = [s / u for s, u in zip(rounds[True], rounds[False])]
    print(
        f"{args.engine}: {REPLICAS} replicas, global batch {args.batch}, "
        f"{args.size}x{args.size}, channels {CHANNELS}, {args.rounds} rounds "
        f"of {args.steps} steps"
    )
    for synchronized, label in ((True, "synchronized"), (False, "per replica")):
        median = statistics.median(rounds[synchronized]) * 1e3
        print(f"  step, {label}: median {median:.1f} ms")
    print(
        f"  ratio synchronized / per replica: median {statistics.median(ratios):.3f}, "
        f"min {min(ratios):.3f}, max {max(ratios):.3f}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
