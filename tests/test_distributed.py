"""Data parallelism on two replicas computes what one device computes.

The session's backend runs ``distributed_worker.py`` once, on its own engine:
TensorFlow's ``MirroredStrategy`` over two logical CPU devices, JAX's
``keras.distribution`` over two host devices, or two ``torchrun`` processes
over gloo. The replicas' halves of the global batch differ in range and
share tied extrema, so that per-replica statistics would show. The layers
alone run in float64 and must agree with one device to rounding, and with
a NumPy computation; an SSR-U-Net with BN trains three SGD steps in float32.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

from keras_ssr import distributed, layers, models
from tests import distributed_worker as worker
from tests import numpy_oracle as oracle

BACKEND = keras.backend.backend()
WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
#: Two replicas against one device, layers alone in float64.
LAYER_RTOL = 1e-9
#: The layers checked against NumPy, on one device and with ``synchronized=False``.
NUMPY_CASES = ("lss", "bn", *worker.FAMILY_CASES)


def _load(path) -> dict:
    """``{case: {variant: {quantity: [arrays]}}}`` from the worker's keys."""
    runs = collections.defaultdict(
        lambda: collections.defaultdict(lambda: collections.defaultdict(dict))
    )
    with np.load(path) as data:
        for key in data.files:
            case, variant, quantity, index = key.split("/")
            runs[case][variant][quantity][int(index)] = data[key]
    return {
        case: {
            variant: {q: [v[i] for i in sorted(v)] for q, v in quantities.items()}
            for variant, quantities in variants.items()
        }
        for case, variants in runs.items()
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed") / "runs.npz"
    if BACKEND == "torch":
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nnodes=1",
            f"--nproc-per-node={worker.REPLICAS}",
            WORKER,
            "torch",
            str(out),
        ]
    else:
        command = [sys.executable, WORKER, BACKEND, str(out)]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=1800, env=env
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return _load(out)


def _relative_error(got, want) -> float:
    scale = float(np.max(np.abs(want)))
    return float(np.max(np.abs(got - want))) / (scale if scale > 0 else 1.0)


def _layer_cases():
    return [
        (name, quantity)
        for name in worker.layer_cases()
        for quantity in ("out", "grad_x", "grad_w", "state")
    ]


@pytest.mark.parametrize("name,quantity", _layer_cases())
def test_layer_on_two_replicas_equals_one_device(runs, name, quantity):
    if BACKEND == "jax" and name not in worker.JAX_CASES:
        pytest.skip(f"{name} runs inside the SSR layers on JAX")
    ref = runs[name]["ref"][quantity]
    got = runs[name]["sync"][quantity]
    assert len(got) == len(ref) > 0
    for i, (g, r) in enumerate(zip(got, ref)):
        assert g.shape == r.shape
        assert _relative_error(g, r) <= LAYER_RTOL, (name, quantity, i)


def _semantic_weights(runs, name) -> dict:
    """``name``'s initial weights in the runs (float64), by semantic name."""
    factory, _ = worker.layer_cases()[name]
    with warnings.catch_warnings():  # only for the names: JAX may lack float64
        warnings.simplefilter("ignore", UserWarning)
        layer = factory(True)
        layer.build((worker.BATCH, *worker.SHAPE))
    if hasattr(layer, "semantic_variables"):
        variables = layer.semantic_variables()
    else:  # a batch normalisation alone
        variables = {"bn." + v.name: v for v in layer.weights}
    index = {id(v): i for i, v in enumerate(layer.weights)}
    init = runs[name]["init"]["weights"]
    assert len(init) == len(index)
    return {k: init[index[id(v)]] for k, v in variables.items()}


def _numpy_layer(name, x, w):
    """``name``'s training-mode output on the batch ``x``, in NumPy float64."""

    def bn(z, prefix="", axis=-1):
        return oracle.batch_norm(z, w[prefix + "bn.gamma"], w[prefix + "bn.beta"], axis)

    def wlss(x, prefix=""):
        alpha = oracle.weighted_singularity_strength(x, w[prefix + "ols.weights"], 3)
        return bn(alpha, prefix)

    def histogram(x, prefix=""):
        h = oracle.soft_histogram(x, w[prefix + "anchors"], w[prefix + "widths"])
        return bn(h, prefix)

    x = np.asarray(x, np.float64)
    if name == "lss":
        return bn(oracle.singularity_strength(x, 3, "batch"))
    if name == "bn":
        return bn(x)
    if name == "wlss":
        return wlss(x)
    if name == "histogram":
        return histogram(x)
    if name == "srm":
        mean, std = oracle.style(x)
        k = w["style.kernel"]
        gates = oracle.sigmoid(bn(mean * k[0] + std * k[1]))
        return x * gates[:, None, None, :]
    assert name == "multifractal", name
    counts = histogram(wlss(x, "alpha."), "histogram.")
    return x + oracle.sigmoid(np.maximum(counts, 0.0).sum(axis=-1))


@pytest.mark.parametrize("name", NUMPY_CASES)
def test_one_device_equals_numpy_over_the_global_batch(runs, name):
    if name not in runs:
        pytest.skip(f"{name} runs inside the composite layers on JAX")
    want = _numpy_layer(name, worker.global_batch(), _semantic_weights(runs, name))
    assert _relative_error(runs[name]["ref"]["out"][0], want) <= 1e-9


@pytest.mark.skipif(
    BACKEND == "jax", reason="JAX's SPMD statistics are global: no per-replica mode"
)
@pytest.mark.parametrize("name", NUMPY_CASES)
def test_unsynchronized_layer_uses_per_replica_statistics(runs, name):
    w = _semantic_weights(runs, name)
    got = runs[name]["local"]["out"][0]
    want = np.concatenate(
        [_numpy_layer(name, part, w) for part in worker.halves(worker.global_batch())]
    )
    assert _relative_error(got, want) <= 1e-9
    # The replicas' ranges differ: per-replica statistics are not the global ones.
    assert _relative_error(got, runs[name]["ref"]["out"][0]) > 1e-3


def test_ssr_unet_trained_on_two_replicas_equals_one_device(runs):
    ref = runs["unet"]["ref"]["weights"]
    got = runs["unet"]["sync"]["weights"]
    assert len(got) == len(ref)
    # Weights and every BatchNormalization's moving statistics.
    assert len(ref) == len(
        models.build_unet((4, 8), (16, 16, 3), attention="ssr").weights
    )
    for i, (g, r) in enumerate(zip(got, ref)):
        # 1e-5 of the tensor's largest entry; 1e-7 absolute for the conv
        # biases ahead of BN, whose gradient is zero up to rounding.
        assert np.max(np.abs(g - r)) <= 1e-5 * np.max(np.abs(r)) + 1e-7, i


# --------------------------------------------------------------------------
# One process, no engine


def test_one_device_does_not_all_reduce():
    assert distributed.num_replicas() == 1
    x = keras.ops.convert_to_tensor(np.arange(6.0, dtype="float32").reshape(2, 3))
    for op in distributed.REDUCTIONS:
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(distributed.all_reduce(x, op)),
            np.arange(6.0).reshape(2, 3),
        )
    got = distributed.batch_min(x, axis=0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), [0.0, 1.0, 2.0])
    with distributed.local_statistics():
        assert distributed.num_replicas() == 1
        assert not distributed.spans_replicas((0, 1))


def test_all_reduce_rejects_an_unknown_op():
    with pytest.raises(ValueError, match="op"):
        distributed.all_reduce(keras.ops.ones((2,)), "mean")


@pytest.mark.parametrize(
    "factory",
    [
        lambda s: layers.LocalSingularityStrength(3, synchronized=s),
        lambda s: layers.LocalSingularityStrengthXu(3, synchronized=s),
        lambda s: layers.SingularityStrengthRecalibration(2, 3, synchronized=s),
        lambda s: layers.SingularityStrengthRecalibrationXu(2, 3, synchronized=s),
        lambda s: layers.BatchNormalization(synchronized=s),
        lambda s: layers.WeightedLocalSingularityStrength(3, synchronized=s),
        lambda s: layers.SoftHistogram(4, synchronized=s),
        lambda s: layers.StyleBasedRecalibration(synchronized=s),
        lambda s: layers.MultifractalRecalibration(3, 4, synchronized=s),
    ],
)
def test_synchronized_is_in_the_config(factory):
    layer = factory(False)
    config = layer.get_config()
    assert config["synchronized"] is False
    restored = type(layer).from_config(config)
    assert restored.synchronized is False
    assert factory(True).synchronized is True
    # Every sub-layer taking batch statistics (BN, the singularity maps)
    # follows the argument.
    for value, built in ((False, restored), (True, factory(True))):
        inner = [sub for sub in built._flatten_layers() if hasattr(sub, "synchronized")]
        assert inner and all(sub.synchronized is value for sub in inner)
    with pytest.raises(TypeError, match="synchronized"):
        factory("yes")


def test_synchronized_bn_unet_on_one_device_is_the_plain_unet():
    kwargs = {"channels_per_level": (2, 4), "input_shape": (8, 8, 3)}
    plain = models.build_unet(**kwargs)
    synced = models.build_unet(synchronized_bn=True, **kwargs)
    bns = [layer for layer in synced.layers if "_bn_" in layer.name]
    assert bns and all(
        type(bn) is layers.BatchNormalization and bn.synchronized for bn in bns
    )
    # The plain U-Net keeps Keras' own, the original's layer.
    assert all(
        type(layer) is keras.layers.BatchNormalization
        for layer in plain.layers
        if "_bn_" in layer.name
    )
    synced.set_weights(plain.get_weights())
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype("float32")
    # Training mode: the batch moments (inference reads the same moving ones).
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(synced(x, training=True)),
        keras.ops.convert_to_numpy(plain(x, training=True)),
        rtol=1e-6,
        atol=1e-6,
    )
    # Saved with ``synchronized``, which keras_ssr's class takes on every
    # backend (Keras' own takes it on TensorFlow only).
    bn = synced.get_layer("encoder_0_bn_0")
    assert bn.get_config()["synchronized"] is True
    restored = keras.Model.from_config(synced.get_config())
    assert restored.get_layer("encoder_0_bn_0").synchronized is True
    with pytest.raises(TypeError, match="synchronized_bn"):
        models.build_unet(synchronized_bn=1, **kwargs)
    for builder in (models.get_unet, models.get_ssr_unet):
        model = builder([2, 4], input_shape=[8, 8, 3], synchronized_bn=True)
        bn = model.get_layer("encoder_0_bn_0")
        assert isinstance(bn, layers.BatchNormalization) and bn.synchronized
