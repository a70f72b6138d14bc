"""A small ``run_layer_test`` in the spirit of Keras' own test helper.

For one layer class, constructor arguments and input shape it checks:
config round trip (Python and JSON), build from a shape, a symbolic call on
a KerasTensor, an eager call, saving a model that holds the layer to
``.keras`` and reloading it, one ``fit`` step (XLA-compiled on TensorFlow and
JAX, eager on torch), and mixed precision against float32.
"""

from __future__ import annotations

import json

import keras
import numpy as np

from keras_ssr import reference

BACKEND = keras.backend.backend()


def _np(t):
    return keras.ops.convert_to_numpy(t)


def random_input(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def check_config_round_trip(cls, kwargs):
    layer = cls(**kwargs)
    config = layer.get_config()
    for key, value in kwargs.items():
        assert config[key] == value, f"get_config lost {key}"
    clone = cls.from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert type(restored) is cls
    assert restored.get_config() == config


def check_symbolic_and_eager(cls, kwargs, input_shape):
    layer = cls(**kwargs)
    symbolic = layer(keras.Input(batch_shape=input_shape))
    expected_shape = tuple(layer.compute_output_shape(input_shape))
    assert tuple(symbolic.shape) == expected_shape
    eager = layer(random_input(input_shape))
    assert tuple(eager.shape) == expected_shape
    assert np.all(np.isfinite(_np(eager)))


def check_build_from_shape(cls, kwargs, input_shape):
    layer = cls(**kwargs)
    layer.build(input_shape)
    assert layer.built and len(layer.weights) > 0
    reference.layer_weight_names(layer)  # every weight is named


def _model(cls, kwargs, input_shape):
    inputs = keras.Input(shape=input_shape[1:])
    return keras.Model(inputs, cls(**kwargs)(inputs))


def check_save_and_reload(cls, kwargs, input_shape, tmp_path):
    model = _model(cls, kwargs, input_shape)
    x = random_input(input_shape, seed=1)
    # Move BN statistics and weights away from their initial values first.
    model(x, training=True)
    for v in model.trainable_variables:
        noise = 0.01 * np.random.default_rng(2).normal(size=v.shape)
        v.assign((_np(v.value) + noise).astype(v.dtype))
    before = _np(model(x, training=False))
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    after = _np(reloaded(x, training=False))
    np.testing.assert_array_equal(after, before)
    inner = reloaded.layers[-1]
    assert type(inner) is cls
    assert inner.get_config() == model.layers[-1].get_config()


def check_fit_step(cls, kwargs, input_shape):
    model = _model(cls, kwargs, input_shape)
    x = random_input(input_shape, seed=3)
    y = np.zeros(model.output_shape[:0] + tuple(model(x).shape), "float32")
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="mse",
        jit_compile=BACKEND in ("tensorflow", "jax"),
    )
    before = [_np(v.value).copy() for v in model.trainable_variables]
    history = model.fit(x, y, batch_size=input_shape[0], epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [_np(v.value) for v in model.trainable_variables]
    assert any(not np.array_equal(a, b) for a, b in zip(after, before)), "no update"


def check_mixed_precision(cls, kwargs, input_shape, policy, training=False):
    x = random_input(input_shape, seed=4)
    reference_layer = cls(**kwargs)
    reference_layer.build(input_shape)
    expected = _np(reference_layer(x, training=training))
    weights = reference.get_layer_weights(reference_layer)

    layer = cls(**kwargs, dtype=policy)
    layer.build(input_shape)
    reference.set_layer_weights(layer, weights)
    out = layer(x, training=training)
    assert keras.backend.standardize_dtype(out.dtype) == policy.removeprefix("mixed_")
    out = _np(keras.ops.cast(out, "float32"))
    assert np.all(np.isfinite(out)), f"non-finite under {policy}"
    error = np.max(np.abs(out - expected)) / np.max(np.abs(expected))
    assert error <= 2e-2, f"{policy}: relative error {error:.3g}"
    return error
