"""keras_ssr's BatchNormalization: against NumPy, its fused kernels against its
``keras.ops`` path, its moving statistics in every scope, and the deprecated
names that saved models still use."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_ssr
from keras_ssr.layers import BatchNormalization
from keras_ssr.layers.normalization import CenteredBatchNormalization
from tests.gradients import vjp
from tests.helpers import to_numpy

BACKEND = keras.backend.backend()
RNG = np.random.default_rng(7)
EPSILON = 1e-3
MOMENTUM = 0.9


def _layer(shape, axis, fused, **kwargs):
    """A built layer with non-trivial weights and moving statistics, the same
    for every ``fused``."""
    layer = BatchNormalization(
        axis=axis, momentum=MOMENTUM, epsilon=EPSILON, fused=fused, **kwargs
    )
    layer.build(shape)
    rng = np.random.default_rng(1)
    channels = shape[axis]
    layer.gamma.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
    layer.beta.assign(rng.normal(size=channels).astype("float32"))
    layer.moving_mean.assign(rng.normal(2.0, 0.1, channels).astype("float32"))
    layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
    return layer


def _map(shape):
    """A narrow, off-centre map: a singularity strength's kind."""
    return RNG.normal(2.0, 0.05, shape).astype("float32")


def _moments(x, axis):
    axes = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
    x = x.astype(np.float64)
    return x.mean(axes), x.var(axes), axes


def _broadcast(v, x, axis):
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    return np.reshape(v, shape)


def _numpy_bn(layer, x, training):
    """Output and moving statistics after one call, in float64."""
    gamma, beta = (np.float64(to_numpy(v)) for v in (layer.gamma, layer.beta))
    moving = [
        np.float64(to_numpy(v)) for v in (layer.moving_mean, layer.moving_variance)
    ]
    axis = layer.axis
    if training:
        mean, variance, _ = _moments(x, axis)
        moving = [
            m * MOMENTUM + b * (1 - MOMENTUM) for m, b in zip(moving, (mean, variance))
        ]
    else:
        mean, variance = moving
    y = (x - _broadcast(mean, x, axis)) / np.sqrt(
        _broadcast(variance, x, axis) + EPSILON
    )
    return y * _broadcast(gamma, x, axis) + _broadcast(beta, x, axis), moving


CASES = [
    ((4, 7, 3), -1),
    ((3, 6, 5, 4), -1),
    ((3, 4, 6, 5), 1),
    ((2, 3, 4, 5, 3), -1),
]


def _relative(got, want):
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


#: float32 rounding, relative to the largest value: the map's entries (about
#: 2.0, spread 0.05) are rounded by 2**-23 * 2.0, which normalisation turns
#: into 5e-6 of a unit output; sums and orders add a few of those.
ROUNDING = 3e-5


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(
    "shape, axis", CASES, ids=[f"{len(s)}d-axis{a}" for s, a in CASES]
)
def test_fused_kernels_equal_the_keras_ops_path(shape, axis, training):
    """``fused=True`` (torch.native_batch_norm; TensorFlow's FusedBatchNormV3
    in inference) against ``fused=False``: outputs, the gradients of the input
    and of gamma and beta, and the moving statistics, within float32 rounding."""
    x = _map(shape)
    cotangent = RNG.normal(size=shape).astype("float32")
    results = {}
    for fused in (True, False):
        layer = _layer(shape, axis, fused)
        y, dx, grads = vjp(layer, x, cotangent, training=training)
        moving = [to_numpy(layer.moving_mean), to_numpy(layer.moving_variance)]
        results[fused] = (y, dx, *(grads[v.path] for v in layer.trainable_variables))
        results[fused] += tuple(moving)
    for got, want in zip(results[True], results[False]):
        assert _relative(got, want) < ROUNDING, _relative(got, want)
    # Both are batch normalisation: the output against NumPy, in float64.
    want, _ = _numpy_bn(_layer(shape, axis, False), x, training)
    assert _relative(results[True][0], want) < ROUNDING


@pytest.mark.parametrize("fused", [True, False])
def test_moving_statistics_follow_the_momentum_rule(fused):
    """Eagerly and, on TensorFlow, in a graph (the in-place update), the
    moving statistics move by ``1 - momentum`` towards the batch's biased
    moments; inference then normalises with them."""
    shape = (4, 5, 5, 3)
    x = _map(shape)
    layer = _layer(shape, -1, fused)
    reference = _layer(shape, -1, fused)
    call = layer.__call__
    if BACKEND == "tensorflow":
        import tensorflow as tf

        call = tf.function(lambda t, training: layer(t, training=training))
    for training in (True, True, False):
        want, moving = _numpy_bn(reference, x, training)
        for variable, value in zip(
            (reference.moving_mean, reference.moving_variance), moving
        ):
            variable.assign(value.astype("float32"))
        got = to_numpy(call(keras.ops.convert_to_tensor(x), training=training))
        assert _relative(got, want) < ROUNDING
        for variable, value in zip((layer.moving_mean, layer.moving_variance), moving):
            np.testing.assert_allclose(to_numpy(variable), value, rtol=1e-6)


def test_a_stateless_call_records_the_moving_statistics_and_changes_nothing():
    """Under ``stateless_call`` (a ``keras.StatelessScope``, as JAX's training)
    the update is returned, not made in place: neither the layer's variables
    nor the tensors passed in change."""
    shape = (4, 5, 5, 3)
    x = _map(shape)
    layer = _layer(shape, -1, True)
    before = [to_numpy(v).copy() for v in layer.non_trainable_variables]
    passed = [keras.ops.copy(v.value) for v in layer.non_trainable_variables]
    trainable = [v.value for v in layer.trainable_variables]
    _, updated = layer.stateless_call(trainable, passed, x, training=True)
    _, moving = _numpy_bn(layer, x, True)
    for variable, tensor, old in zip(layer.non_trainable_variables, passed, before):
        np.testing.assert_array_equal(to_numpy(variable), old)
        np.testing.assert_array_equal(to_numpy(tensor), old)
    for value, want in zip(updated, moving):
        np.testing.assert_allclose(to_numpy(value), want, rtol=1e-6)


@pytest.mark.parametrize("fused", [True, False])
def test_pooled_is_the_mean_of_the_normalised_map(fused):
    """``pooled`` (SSR's descriptor: the normalisation applied to the spatial
    means when no fused kernel runs) equals the spatial mean of the call, and
    moves the moving statistics alike."""
    shape = (3, 6, 5, 4)
    x = _map(shape)
    for training in (True, False):
        pooled, called = _layer(shape, -1, fused), _layer(shape, -1, fused)
        got = to_numpy(pooled.pooled(keras.ops.convert_to_tensor(x), (1, 2), training))
        want = to_numpy(called(x, training=training)).astype(np.float64).mean((1, 2))
        assert got.shape == (3, 4)
        assert _relative(got, want) < ROUNDING
        for a, b in zip(pooled.non_trainable_variables, called.non_trainable_variables):
            np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6)


def test_an_empty_training_batch_uses_and_keeps_the_moving_statistics():
    layer = _layer((0, 4, 4, 3), -1, True)
    before = [to_numpy(v).copy() for v in layer.non_trainable_variables]
    y = layer(np.zeros((0, 4, 4, 3), "float32"), training=True)
    assert tuple(y.shape) == (0, 4, 4, 3)
    for variable, old in zip(layer.non_trainable_variables, before):
        np.testing.assert_array_equal(to_numpy(variable), old)


def test_a_mask_takes_keras_own_masked_moments():
    shape = (2, 5, 3)
    x = _map(shape)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], bool)
    ours = _layer(shape, -1, True)
    theirs = keras.layers.BatchNormalization(momentum=MOMENTUM, epsilon=EPSILON)
    theirs.build(shape)
    theirs.set_weights(ours.get_weights())
    np.testing.assert_allclose(
        to_numpy(ours(x, training=True, mask=mask)),
        to_numpy(theirs(x, training=True, mask=mask)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_config_round_trip_and_arguments():
    layer = BatchNormalization(axis=1, synchronized=True, fused=False, momentum=0.5)
    config = layer.get_config()
    assert (config["synchronized"], config["fused"], config["axis"]) == (True, False, 1)
    restored = BatchNormalization.from_config(config)
    assert (restored.synchronized, restored.fused, restored.momentum) == (
        True,
        False,
        0.5,
    )
    # Keras' own class and default: per replica unless asked.
    assert isinstance(layer, keras.layers.BatchNormalization)
    assert BatchNormalization().synchronized is False
    assert keras_ssr.BatchNormalization is BatchNormalization
    for name in ("synchronized", "fused"):
        with pytest.raises(TypeError, match=name):
            BatchNormalization(**{name: "yes"})
    with pytest.raises(ValueError, match="renorm"):
        BatchNormalization(renorm=True)


#: Configs that keras_ssr 0.1.0 wrote for its two batch norms (keras 3.15):
#: ``SynchronizedBatchNormalization`` saved no ``synchronized`` entry.
_INITIALIZER = {"module": "keras.initializers", "config": {}, "registered_name": None}
_SAVED = {
    "SynchronizedBatchNormalization": {
        "module": "keras_ssr.distributed",
        "config": {"name": "encoder_0_bn_0", "axis": -1, "momentum": 0.9},
        "synchronized": True,
    },
    "CenteredBatchNormalization": {
        "module": "keras_ssr.layers.normalization",
        "config": {"name": "bn", "axis": -1, "momentum": 0.99, "synchronized": False},
        "synchronized": False,
    },
}


@pytest.mark.parametrize("name", sorted(_SAVED))
def test_the_deprecated_names_warn_and_load_what_they_saved(name):
    saved = _SAVED[name]
    config = {
        **saved["config"],
        "trainable": True,
        "epsilon": 1e-3,
        "center": True,
        "scale": True,
        "beta_initializer": {**_INITIALIZER, "class_name": "Zeros"},
        "gamma_initializer": {**_INITIALIZER, "class_name": "Ones"},
        "beta_regularizer": None,
        "renorm": False,
        "renorm_clipping": None,
        "renorm_momentum": 0.99,
    }
    entry = {
        "module": saved["module"],
        "class_name": name,
        "config": config,
        "registered_name": f"keras_ssr>{name}",
    }
    with pytest.warns(DeprecationWarning, match=name):
        layer = keras.saving.deserialize_keras_object(entry)
    assert type(layer).__name__ == name
    assert isinstance(layer, BatchNormalization)
    assert layer.synchronized is saved["synchronized"]
    assert layer.momentum == config["momentum"]
    # ... and compute what the new class computes.
    x = _map((3, 4, 4, 2))
    new = BatchNormalization(momentum=config["momentum"])
    np.testing.assert_array_equal(
        to_numpy(layer(x, training=True)), to_numpy(new(x, training=True))
    )


def test_the_deprecated_names_remain_importable():
    with pytest.warns(DeprecationWarning, match="BatchNormalization"):
        layer = keras_ssr.distributed.SynchronizedBatchNormalization()
    assert layer.synchronized is True
    with pytest.warns(DeprecationWarning, match="BatchNormalization"):
        assert CenteredBatchNormalization().synchronized is True
