"""Inspection the Keras way: ``layer(x, return_gates=True)`` on every
recalibration layer, eager and symbolic, and the deprecated methods it
replaces."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_ssr import layers
from tests.helpers import to_numpy

RNG = np.random.default_rng(3)

#: (factory, how the gates recalibrate the input): ``"multiply"``,
#: ``"add"`` (per-pixel gates) or ``"max"`` (scSE's two branches).
CASES = {
    "se": (lambda f: layers.SqueezeExcite(2, data_format=f), "multiply"),
    "ssr": (
        lambda f: layers.SingularityStrengthRecalibration(2, 2, data_format=f),
        "multiply",
    ),
    "mono": (
        lambda f: layers.MonofractalRecalibration(2, 2, data_format=f),
        "multiply",
    ),
    "ssr_xu": (
        lambda f: layers.SingularityStrengthRecalibrationXu(2, 3, data_format=f),
        "multiply",
    ),
    "srm": (lambda f: layers.StyleBasedRecalibration(data_format=f), "multiply"),
    "fca": (
        lambda f: layers.FrequencyChannelAttention(2, 2, data_format=f),
        "multiply",
    ),
    "scse": (lambda f: layers.SpatialSqueezeExcite(2, data_format=f), "max"),
    "multifractal": (
        lambda f: layers.MultifractalRecalibration(2, 3, data_format=f),
        "add",
    ),
}
SHAPE = (2, 6, 6, 4)


def _input(data_format):
    x = RNG.uniform(-0.1, 0.1, SHAPE).astype("float32")
    return x if data_format == "channels_last" else np.moveaxis(x, -1, 1)


def _channel_gate_shape(x, data_format):
    if data_format == "channels_last":
        return (x.shape[0], 1, 1, x.shape[-1])
    return (x.shape[0], x.shape[1], 1, 1)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_return_gates_gives_the_gates_the_layer_applied(name, data_format):
    make, kind = CASES[name]
    layer = make(data_format)
    x = _input(data_format)
    for training in (False, True):
        y, gates = layer(x, training=training, return_gates=True)
        y = to_numpy(y)
        if kind == "max":
            channel, spatial = (to_numpy(g) for g in gates)
            pixel = list(x.shape)
            pixel[1 if data_format == "channels_first" else -1] = 1
            assert spatial.shape == tuple(pixel)
            want = np.maximum(x * channel, x * spatial)
        else:
            channel = to_numpy(gates)
            want = x * channel if kind == "multiply" else x + channel
        if kind == "add":
            assert channel.shape == x.shape  # one gate per pixel and channel
        else:
            assert channel.shape == _channel_gate_shape(x, data_format)
        np.testing.assert_array_equal(y, want)
        for g in gates if kind == "max" else (gates,):
            g = to_numpy(g)
            assert np.all(g > 0.0) and np.all(g < 1.0)
    # Inference reads the moving statistics only: the same output either way.
    np.testing.assert_array_equal(
        to_numpy(layer(x)), to_numpy(layer(x, return_gates=True)[0])
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_return_gates_in_a_functional_model(name):
    layer = CASES[name][0]("channels_last")
    inputs = keras.Input(SHAPE[1:])
    outputs, gates = layer(inputs, return_gates=True)
    model = keras.Model(inputs, {"outputs": outputs, "gates": gates})
    x = _input("channels_last")
    got = model(x)
    want_y, want_gates = layer(x, return_gates=True)

    def shapes(structure, batch):
        return keras.tree.map_structure(
            lambda t: (batch, *tuple(t.shape)[1:]), structure
        )

    assert shapes(gates, None) == shapes(want_gates, None)
    assert shapes(got["gates"], SHAPE[0]) == shapes(want_gates, SHAPE[0])
    np.testing.assert_array_equal(to_numpy(got["outputs"]), to_numpy(want_y))


def test_return_gates_must_be_a_bool():
    layer = layers.SqueezeExcite(2)
    with pytest.raises(TypeError, match="return_gates"):
        layer(_input("channels_last"), return_gates="yes")


@pytest.mark.parametrize("name", ["se", "srm", "scse", "multifractal"])
def test_the_deprecated_gates_methods_warn_and_keep_their_shapes(name):
    make, kind = CASES[name]
    layer = make("channels_last")
    x = _input("channels_last")
    _, gates = layer(x, return_gates=True)
    with pytest.warns(DeprecationWarning, match="return_gates"):
        old = to_numpy(layer.gates(x))
    if kind == "add":
        np.testing.assert_array_equal(old, to_numpy(gates))
        return
    channel = gates[0] if kind == "max" else gates
    assert old.shape == (SHAPE[0], SHAPE[-1])
    np.testing.assert_array_equal(old, to_numpy(channel)[:, 0, 0, :])
    if kind == "max":
        with pytest.warns(DeprecationWarning, match="return_gates"):
            spatial = to_numpy(layer.spatial_gates(x))
        np.testing.assert_array_equal(spatial, to_numpy(gates[1]))


def test_the_deprecated_methods_build_through_call():
    """Unbuilt, the deprecated methods build the layer as a call does."""
    x = _input("channels_last")
    layer = layers.SpatialSqueezeExcite(2)
    with pytest.warns(DeprecationWarning):
        assert tuple(layer.spatial_gates(x).shape) == (*SHAPE[:-1], 1)
    assert layer.built and layer.input_spec is not None
    histogram = layers.SoftHistogram(4)
    with pytest.warns(DeprecationWarning, match="soft_histogram"):
        h = to_numpy(histogram.histogram(x))
    assert histogram.built
    np.testing.assert_allclose(h.sum(-1), 1.0, atol=1e-5)
