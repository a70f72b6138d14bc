"""keras_ssr.porting.names: weights by the original's semantic names."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_ssr
from keras_ssr import porting


def _built(layer, shape=(2, 8, 8, 4)):
    layer.build(shape)
    return layer


def test_round_trip_of_every_weight():
    layer = _built(keras_ssr.SingularityStrengthRecalibration(r=2, max_scale=3))
    rng = np.random.default_rng(0)
    arrays = {
        n: rng.normal(size=s).astype("float32")
        for n, s in porting.layer_weight_names(layer).items()
    }
    porting.set_layer_weights(layer, arrays)
    got = porting.get_layer_weights(layer)
    assert set(got) == set(arrays)
    for name in arrays:
        np.testing.assert_array_equal(got[name], arrays[name])
    # and the names address the right variables
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer.squeeze.kernel.value), arrays["squeeze.kernel"]
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer.alpha.bn.moving_variance.value),
        arrays["alpha.bn.moving_variance"],
    )


def test_names_per_layer():
    names = porting.layer_weight_names(_built(keras_ssr.SqueezeExcite(r=2)))
    assert names == {
        "squeeze.kernel": (4, 2),
        "squeeze.bias": (2,),
        "excite.kernel": (2, 4),
        "excite.bias": (4,),
    }
    names = porting.layer_weight_names(_built(keras_ssr.LearnableMeasure(3)))
    assert names == {
        "measure.kernel_1": (1, 1),
        "measure.kernel_2": (2, 2),
        "measure.kernel_3": (3, 3),
    }
    names = porting.layer_weight_names(
        _built(keras_ssr.LocalSingularityStrengthXu(2, with_bn=False))
    )
    assert set(names) == {"measure.kernel_1", "measure.kernel_2"}


def _arrays(layer):
    return {
        n: np.zeros(s, "float32") for n, s in porting.layer_weight_names(layer).items()
    }


def test_unknown_missing_and_wrong_shapes_are_listed_together():
    layer = _built(keras_ssr.SqueezeExcite(r=2))
    arrays = _arrays(layer)
    del arrays["excite.bias"]
    arrays["squeeze.kernel"] = np.zeros((3, 3), "float32")
    arrays["bn.gamma"] = np.zeros(4, "float32")
    before = porting.get_layer_weights(layer)
    with pytest.raises(ValueError) as info:
        porting.set_layer_weights(layer, arrays)
    message = str(info.value)
    assert "unknown names ['bn.gamma']" in message
    assert "missing names ['excite.bias']" in message
    assert "squeeze.kernel: expected (4, 2), received (3, 3)" in message
    after = porting.get_layer_weights(layer)
    for name in before:  # nothing was assigned
        np.testing.assert_array_equal(before[name], after[name])


def test_unbuilt_layer():
    with pytest.raises(ValueError, match="must be built"):
        porting.set_layer_weights(keras_ssr.SqueezeExcite(r=2), {})


def test_not_a_keras_ssr_layer():
    with pytest.raises(TypeError, match="Dense"):
        porting.set_layer_weights(keras.layers.Dense(2), {})
