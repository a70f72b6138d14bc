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

import distributed_worker as worker
import keras
import numpy as np
import numpy_oracle as oracle
import pytest

from keras_ssr import distributed, layers, models
from keras_ssr.layers.normalization import CenteredBatchNormalization

BACKEND = keras.backend.backend()
WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
#: Two replicas against one device, layers alone in float64. Keras' own
#: BatchNormalization (``sbn`` on one device) rounds like float32.
LAYER_RTOL = {"sbn": 1e-6}
LAYER_RTOL_DEFAULT = 1e-9
BN_EPSILON = 1e-3


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
        for name in ("lss", "lss_xu", "ssr", "ssr_xu", "cbn", "sbn")
        for quantity in ("out", "grad_x", "grad_w", "state")
    ]


@pytest.mark.parametrize("name,quantity", _layer_cases())
def test_layer_on_two_replicas_equals_one_device(runs, name, quantity):
    if BACKEND == "jax" and name not in worker.JAX_CASES:
        pytest.skip(f"{name} runs inside the SSR layers on JAX")
    ref = runs[name]["ref"][quantity]
    got = runs[name]["sync"][quantity]
    assert len(got) == len(ref) > 0
    rtol = LAYER_RTOL.get(name, LAYER_RTOL_DEFAULT)
    for i, (g, r) in enumerate(zip(got, ref)):
        assert g.shape == r.shape
        assert _relative_error(g, r) <= rtol, (name, quantity, i)


def _bn(x, gamma, beta, axes=(0, 1, 2)):
    mean = x.mean(axis=axes, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(variance + BN_EPSILON) * gamma + beta


def _maps(name, x):
    """The map that ``name``'s batch normalisation reads, in NumPy."""
    if name == "lss":
        return oracle.singularity_strength(x, 3, "batch")
    return np.asarray(x, np.float64)


@pytest.mark.parametrize("name", ["lss", "cbn"])
def test_one_device_equals_numpy_over_the_global_batch(runs, name):
    if name not in runs:
        pytest.skip(f"{name} runs inside the SSR layers on JAX")
    x = worker.global_batch()
    gamma, beta = runs[name]["init"]["weights"][:2]
    want = _bn(_maps(name, x), gamma, beta)
    assert _relative_error(runs[name]["ref"]["out"][0], want) <= 1e-9


@pytest.mark.skipif(
    BACKEND == "jax", reason="JAX's SPMD statistics are global: no per-replica mode"
)
@pytest.mark.parametrize("name", ["lss", "cbn"])
def test_unsynchronized_layer_uses_per_replica_statistics(runs, name):
    x = worker.global_batch()
    gamma, beta = runs[name]["init"]["weights"][:2]
    got = runs[name]["local"]["out"][0]
    want = np.concatenate(
        [_bn(_maps(name, part), gamma, beta) for part in worker.halves(x)]
    )
    assert _relative_error(got, want) <= 1e-9
    # The replicas' ranges differ: per-replica statistics are not the global ones.
    assert _relative_error(got, runs[name]["ref"]["out"][0]) > 1e-2


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
        lambda s: CenteredBatchNormalization(synchronized=s),
    ],
)
def test_synchronized_is_in_the_config(factory):
    layer = factory(False)
    config = layer.get_config()
    assert config["synchronized"] is False
    assert type(layer).from_config(config).synchronized is False
    assert factory(True).synchronized is True
    with pytest.raises(TypeError, match="synchronized"):
        factory("yes")


def test_synchronized_bn_unet_on_one_device_is_the_plain_unet():
    kwargs = {"channels_per_level": (2, 4), "input_shape": (8, 8, 3)}
    plain = models.build_unet(**kwargs)
    synced = models.build_unet(synchronized_bn=True, **kwargs)
    kinds = {type(layer) for layer in synced.layers}
    assert distributed.SynchronizedBatchNormalization in kinds
    assert keras.layers.BatchNormalization not in kinds
    synced.set_weights(plain.get_weights())
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype("float32")
    # Training mode: the batch moments (inference reads the same moving ones).
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(synced(x, training=True)),
        keras.ops.convert_to_numpy(plain(x, training=True)),
        rtol=1e-6,
        atol=1e-6,
    )
    # Saved without a backend-specific ``synchronized`` entry.
    bn = synced.get_layer("encoder_0_bn_0")
    assert "synchronized" not in bn.get_config()
    restored = keras.Model.from_config(synced.get_config())
    assert isinstance(
        restored.get_layer("encoder_0_bn_0"), distributed.SynchronizedBatchNormalization
    )
    with pytest.raises(TypeError, match="synchronized_bn"):
        models.build_unet(synchronized_bn=1, **kwargs)
    for builder in (models.get_unet, models.get_ssr_unet):
        model = builder([2, 4], input_shape=[8, 8, 3], synchronized_bn=True)
        assert isinstance(
            model.get_layer("encoder_0_bn_0"),
            distributed.SynchronizedBatchNormalization,
        )
