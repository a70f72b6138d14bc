"""Runs keras_ssr's layers and an SSR-U-Net data-parallel on two replicas and
on one device, and writes both to an ``.npz`` for ``test_distributed.py``.

Each engine needs a fresh process (devices are fixed before the backend
starts)::

    python tests/distributed_worker.py tensorflow OUT.npz  # 2 logical CPUs
    python tests/distributed_worker.py jax OUT.npz         # 2 host devices
    torchrun --standalone --nnodes=1 --nproc-per-node=2 \\
        tests/distributed_worker.py torch OUT.npz          # 2 gloo ranks

Keys: ``{case}/{variant}/{quantity}/{index}``, ``variant`` one of ``ref``
(one device), ``sync`` (two replicas, ``synchronized=True``) and ``local``
(two replicas, ``synchronized=False``); ``quantity`` one of ``out``,
``grad_x`` (the input gradient), ``grad_w`` (weight gradients summed over
replicas), ``state`` (non-trainable weights after the call) and, for the
U-Net, ``weights`` (every weight after three SGD steps). Replica ``r`` holds
samples ``2r, 2r + 1`` of the global batch of 4.
"""

from __future__ import annotations

import os
import sys

import numpy as np

REPLICAS = 2
BATCH = 4
SHAPE = (16, 16, 4)
UNET_SHAPE = (16, 16, 3)
STEPS = 3
LEARNING_RATE = 0.05
#: The layers alone run in float64, where two replicas and one device agree
#: to rounding; the U-Net trains in float32, as users train it.
LAYER_DTYPE = "float64"
#: JAX compiles each layer twice (one device, sharded): only the composite
#: SSR and multifractal layers (which hold the singularity layers, the soft
#: histogram and their BN), SRM and the BN.
JAX_CASES = ("ssr", "ssr_xu", "bn", "srm", "multifractal")
#: The follow-up family's layers.
FAMILY_CASES = ("wlss", "histogram", "srm", "multifractal")
#: Set by ``before`` on the command line: also train the U-Net with
#: ``synchronized=False`` (per-replica statistics), for docs/distributed.md.
BEFORE = False


def configure(engine: str) -> None:
    """The environment ``engine`` needs, set before Keras is imported."""
    os.environ["KERAS_BACKEND"] = engine
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if engine == "jax":
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={REPLICAS}"
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ["JAX_ENABLE_X64"] = "1"


def global_batch(shape=(BATCH, *SHAPE), seed=0, dtype=LAYER_DTYPE) -> np.ndarray:
    """Replica 0 sees values in [0, 1], replica 1 in [3, 8]; the maximum of
    channel 0 (9.0) and the minimum of channel 1 (-1.0) are each tied across
    the two replicas."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, shape).astype(dtype)
    x[BATCH // 2 :] = 3.0 + 5.0 * x[BATCH // 2 :]
    x[0, 1, 1, 0] = x[3, 5, 7, 0] = 9.0
    x[1, 2, 2, 1] = x[2, 3, 3, 1] = -1.0
    return x


def unet_batch():
    x = global_batch((BATCH, *UNET_SHAPE), seed=1, dtype="float32")
    rng = np.random.default_rng(2)
    y = (rng.uniform(size=(BATCH, *UNET_SHAPE[:2], 1)) > 0.5).astype(np.float32)
    return x, y


def layer_cases():
    """``name -> (factory(synchronized), variants)``."""
    from keras_ssr import layers

    both = ("sync", "local")
    kw = {"dtype": LAYER_DTYPE}
    return {
        "lss": (
            lambda s: layers.LocalSingularityStrength(3, synchronized=s, **kw),
            both,
        ),
        "lss_xu": (
            lambda s: layers.LocalSingularityStrengthXu(3, synchronized=s, **kw),
            ("sync",),
        ),
        "ssr": (
            lambda s: layers.SingularityStrengthRecalibration(
                2, 3, synchronized=s, **kw
            ),
            ("sync",),
        ),
        "ssr_xu": (
            lambda s: layers.SingularityStrengthRecalibrationXu(
                2, 3, synchronized=s, **kw
            ),
            ("sync",),
        ),
        "bn": (lambda s: layers.BatchNormalization(synchronized=s, **kw), both),
        "wlss": (
            lambda s: layers.WeightedLocalSingularityStrength(3, synchronized=s, **kw),
            both,
        ),
        "histogram": (lambda s: layers.SoftHistogram(4, synchronized=s, **kw), both),
        "srm": (
            lambda s: layers.StyleBasedRecalibration(synchronized=s, **kw),
            both,
        ),
        "multifractal": (
            lambda s: layers.MultifractalRecalibration(3, 4, synchronized=s, **kw),
            both,
        ),
    }


def make_unet(synchronized: bool):
    from keras_ssr.models import build_unet

    return build_unet(
        (4, 8),
        input_shape=UNET_SHAPE,
        attention="ssr",
        attention_kwargs={"r": 2, "max_scale": 3, "synchronized": synchronized},
        synchronized_bn=synchronized,
        name="ssr_unet",
    )


def initial_layer(factory, seed: int = 0):
    """A built layer with non-trivial weights (BN's gamma/beta perturbed)."""
    import keras

    keras.utils.set_random_seed(seed)
    layer = factory(True)
    layer.build((BATCH, *SHAPE))
    rng = np.random.default_rng(seed + 10)
    weights = [
        w + rng.normal(0.0, 0.1, w.shape).astype(w.dtype) if w.ndim == 1 else w
        for w in layer.get_weights()
    ]
    return weights


def output_shape(factory) -> tuple[int, ...]:
    """The output shape of ``factory``'s layer on the global batch."""
    return tuple(factory(True).compute_output_shape((BATCH, *SHAPE)))


def cotangent(shape) -> np.ndarray:
    return np.random.default_rng(3).normal(size=shape).astype(LAYER_DTYPE)


def record(results, prefix, out, grad_x, grad_w, state):
    results[f"{prefix}/out/0"] = np.asarray(out)
    results[f"{prefix}/grad_x/0"] = np.asarray(grad_x)
    for i, g in enumerate(grad_w):
        results[f"{prefix}/grad_w/{i}"] = np.asarray(g)
    for i, s in enumerate(state):
        results[f"{prefix}/state/{i}"] = np.asarray(s)


def record_weights(results, prefix, weights):
    for i, w in enumerate(weights):
        results[f"{prefix}/weights/{i}"] = np.asarray(w)


def halves(a):
    n = len(a) // REPLICAS
    return [a[r * n : (r + 1) * n] for r in range(REPLICAS)]


# --------------------------------------------------------------------------
# TensorFlow: MirroredStrategy over two logical CPU devices


def run_tensorflow(results):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS
    )
    import keras

    strategy = tf.distribute.MirroredStrategy([f"/cpu:{r}" for r in range(REPLICAS)])
    one = tf.distribute.get_strategy()  # the default: one device

    def distribute(strategy, *arrays):
        if strategy is one:
            return [tf.constant(a) for a in arrays]
        parts = [halves(a) for a in arrays]
        return [
            strategy.experimental_distribute_values_from_function(
                lambda ctx, p=p: tf.constant(p[ctx.replica_id_in_sync_group])
            )
            for p in parts
        ]

    def gather(strategy, value):
        if strategy is one:
            return value.numpy()
        return np.concatenate(
            [v.numpy() for v in strategy.experimental_local_results(value)]
        )

    def total(strategy, value):
        if strategy is one:
            return value.numpy()
        return sum(v.numpy() for v in strategy.experimental_local_results(value))

    x = global_batch()
    for name, (factory, variants) in layer_cases().items():
        weights = initial_layer(factory)
        record_weights(results, f"{name}/init", weights)
        cot = cotangent(output_shape(factory))
        for variant, strat, sync in [("ref", one, True)] + [
            (v, strategy, v == "sync") for v in variants
        ]:
            with strat.scope():
                layer = factory(sync)
                layer.build((BATCH, *SHAPE))
                layer.set_weights(weights)

            @tf.function
            def step(xr, cr, layer=layer):
                with tf.GradientTape() as tape:
                    tape.watch(xr)
                    y = layer(xr, training=True)
                    loss = tf.reduce_sum(y * cr)
                variables = [v.value for v in layer.trainable_variables]
                grad_x, grad_w = tape.gradient(loss, [xr, variables])
                return y, grad_x, grad_w

            y, gx, gw = strat.run(step, args=tuple(distribute(strat, x, cot)))
            record(
                results,
                f"{name}/{variant}",
                gather(strat, y),
                gather(strat, gx),
                [total(strat, g) for g in gw],
                [v.numpy() for v in layer.non_trainable_variables],
            )

    ux, uy = unet_batch()
    keras.utils.set_random_seed(0)
    initial = make_unet(True).get_weights()
    for variant, strat, sync in [
        ("ref", one, True),
        ("sync", strategy, True),
        ("local", strategy, False),
    ][: 3 if BEFORE else 2]:
        with strat.scope():
            model = make_unet(sync)
            model.set_weights(initial)
            model.compile(
                optimizer=keras.optimizers.SGD(LEARNING_RATE),
                loss="binary_crossentropy",
                jit_compile=False,
            )
        repeated = [np.concatenate([a] * STEPS) for a in (ux, uy)]
        model.fit(*repeated, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        record_weights(results, f"unet/{variant}", model.get_weights())


# --------------------------------------------------------------------------
# JAX: keras.distribution over two host devices


def run_jax(results):
    import jax
    import keras
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.devices()
    assert len(devices) == REPLICAS, devices
    mesh = Mesh(np.array(devices), ("batch",))
    sharded = NamedSharding(mesh, PartitionSpec("batch"))

    x = global_batch()
    for name, (factory, _) in layer_cases().items():
        if name not in JAX_CASES:
            continue
        weights = initial_layer(factory)
        record_weights(results, f"{name}/init", weights)
        cot = cotangent(output_shape(factory))
        layer = factory(True)
        layer.build((BATCH, *SHAPE))
        layer.set_weights(weights)
        trainable = [v.value for v in layer.trainable_variables]
        state = [v.value for v in layer.non_trainable_variables]

        def loss(trainable, xs, cs, state=state, layer=layer):
            y, new_state = layer.stateless_call(trainable, state, xs, training=True)
            return jax.numpy.sum(y * cs), (y, new_state)

        grad = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))
        for variant, place in [
            ("ref", lambda a: jax.device_put(a, devices[0])),
            ("sync", lambda a: jax.device_put(a, sharded)),
        ]:
            xs, cs = place(x), place(cot)
            if variant == "sync":
                assert len(xs.sharding.device_set) == REPLICAS
            (gw, gx), (y, new_state) = grad(trainable, xs, cs)
            record(results, f"{name}/{variant}", y, gx, gw, new_state)

    ux, uy = unet_batch()
    keras.utils.set_random_seed(0)
    initial = make_unet(True).get_weights()
    for variant, distribution in [
        ("ref", None),
        ("sync", keras.distribution.DataParallel(devices=devices)),
        ("local", keras.distribution.DataParallel(devices=devices)),
    ][: 3 if BEFORE else 2]:
        keras.distribution.set_distribution(distribution)
        model = make_unet(variant != "local")
        model.set_weights(initial)
        model.compile(
            optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="binary_crossentropy"
        )
        repeated = [np.concatenate([a] * STEPS) for a in (ux, uy)]
        model.fit(*repeated, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        record_weights(results, f"unet/{variant}", model.get_weights())
    keras.distribution.set_distribution(None)


# --------------------------------------------------------------------------
# PyTorch: two gloo processes (torchrun)


def run_torch(results):
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    assert dist.get_world_size() == REPLICAS
    import keras

    from keras_ssr import distributed

    def gathered(t):
        parts = [torch.empty_like(t) for _ in range(REPLICAS)]
        dist.all_gather(parts, t.detach().contiguous())
        return torch.cat(parts).numpy()

    def summed(t):
        t = t.detach().clone()
        dist.all_reduce(t)
        return t.numpy()

    def layer_step(layer, xs, cs):
        xs = torch.tensor(xs, requires_grad=True)
        y = layer(xs, training=True)
        (y * torch.tensor(cs)).sum().backward()
        grad_w = [v.value.grad for v in layer.trainable_variables]
        state = [v.numpy() for v in layer.non_trainable_variables]
        return y, xs.grad, grad_w, state

    x = global_batch()
    mine = slice(rank * BATCH // REPLICAS, (rank + 1) * BATCH // REPLICAS)
    for name, (factory, variants) in layer_cases().items():
        weights = initial_layer(factory)
        record_weights(results, f"{name}/init", weights)
        cot = cotangent(output_shape(factory))
        if rank == 0:
            with distributed.local_statistics():
                layer = factory(True)
                layer.build((BATCH, *SHAPE))
                layer.set_weights(weights)
                y, gx, gw, state = layer_step(layer, x, cot)
                record(
                    results,
                    f"{name}/ref",
                    y.detach().numpy(),
                    gx.numpy(),
                    [g.numpy() for g in gw],
                    state,
                )
        for variant in variants:
            layer = factory(variant == "sync")
            layer.build((BATCH, *SHAPE))
            layer.set_weights(weights)
            y, gx, gw, state = layer_step(layer, x[mine], cot[mine])
            record(
                results,
                f"{name}/{variant}",
                gathered(y),
                gathered(gx),
                [summed(g) for g in gw],
                state,
            )

    ux, uy = unet_batch()
    keras.utils.set_random_seed(0)
    initial = make_unet(True).get_weights()

    def train(model, xs, ys, fraction):
        optimizer = keras.optimizers.SGD(LEARNING_RATE)
        optimizer.build(model.trainable_variables)
        for _ in range(STEPS):
            model.zero_grad()
            pred = model(torch.tensor(xs), training=True)
            loss = keras.ops.mean(keras.losses.binary_crossentropy(ys, pred))
            (loss * fraction).backward()
            grads = [v.value.grad for v in model.trainable_variables]
            if fraction != 1.0:
                for g in grads:
                    dist.all_reduce(g)
            optimizer.apply(grads, model.trainable_variables)
        return model.get_weights()

    if rank == 0:
        with distributed.local_statistics():
            model = make_unet(True)
            model.set_weights(initial)
            record_weights(results, "unet/ref", train(model, ux, uy, 1.0))
    for variant in ("sync", "local")[: 2 if BEFORE else 1]:
        model = make_unet(variant == "sync")
        model.set_weights(initial)
        weights = train(model, ux[mine], uy[mine], 1.0 / REPLICAS)
        record_weights(results, f"unet/{variant}", weights)
    dist.barrier()
    dist.destroy_process_group()
    return rank


def main(argv):
    global BEFORE
    engine, out = argv[1], argv[2]
    BEFORE = argv[3:4] == ["before"]
    configure(engine)
    results = {}
    if engine == "tensorflow":
        run_tensorflow(results)
    elif engine == "jax":
        run_jax(results)
    elif engine == "torch":
        if run_torch(results) != 0:
            return
    else:
        raise SystemExit(f"unknown engine {engine!r}")
    np.savez(out, **results)


if __name__ == "__main__":
    main(sys.argv)
