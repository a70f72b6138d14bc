"""Every layer: config, saving, fit, mixed precision, ranks, bad input."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_ssr
from keras_ssr import porting
from keras_ssr import testing as kt
from tests import numpy_oracle as oracle
from tests.helpers import to_numpy

SE = keras_ssr.SqueezeExcite
LSS = keras_ssr.LocalSingularityStrength
SSR = keras_ssr.SingularityStrengthRecalibration
LM = keras_ssr.LearnableMeasure
XU = keras_ssr.LocalSingularityStrengthXu
SSRXU = keras_ssr.SingularityStrengthRecalibrationXu

# [layer class, constructor arguments, input shape]
LAYER_CASES = [
    (SE, {"r": 2}, (2, 8, 8, 4)),
    (SE, {"r": 4, "data_format": "channels_first"}, (2, 8, 6, 6)),
    (LSS, {"max_scale": 3}, (2, 12, 12, 3)),
    (LSS, {"max_scale": 2, "scaling": "sample"}, (2, 9, 7, 2)),
    (SSR, {"r": 2, "max_scale": 3}, (2, 12, 12, 4)),
    (SSR, {"r": 2, "max_scale": 2, "data_format": "channels_first"}, (2, 4, 10, 10)),
    (LM, {"max_scale": 3}, (2, 8, 8, 3)),
    (XU, {"local_scale": 3}, (2, 8, 8, 3)),
    (XU, {"local_scale": 4, "with_bn": False, "scaling": "sample"}, (2, 8, 8, 2)),
    (SSRXU, {"r": 2, "local_scale": 3}, (2, 8, 8, 4)),
]
IDS = [f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(LAYER_CASES)]


@pytest.mark.parametrize("cls, kwargs, shape", LAYER_CASES, ids=IDS)
def test_config_round_trip(cls, kwargs, shape):
    kt.check_config_round_trip(cls, kwargs)


@pytest.mark.parametrize("cls, kwargs, shape", LAYER_CASES, ids=IDS)
def test_build_symbolic_and_eager(cls, kwargs, shape):
    kt.check_build(cls, shape, kwargs)
    # LearnableMeasure adds a last axis of one measure per scale.
    out = (*shape, kwargs["max_scale"]) if cls is LM else shape
    kt.check_symbolic_and_eager(cls, shape, kwargs, expected_output_shape=out)


@pytest.mark.parametrize("cls, kwargs, shape", LAYER_CASES, ids=IDS)
def test_save_and_reload(cls, kwargs, shape, tmp_path):
    kt.check_save_and_reload(cls, shape, kwargs, tmp_path)


@pytest.mark.parametrize("cls, kwargs, shape", LAYER_CASES, ids=IDS)
def test_fit_step(cls, kwargs, shape):
    kt.check_fit_step(cls, shape, kwargs)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("cls, kwargs, shape", LAYER_CASES, ids=IDS)
def test_mixed_precision(cls, kwargs, shape, policy, training):
    if cls is LM and training:
        pytest.skip("LearnableMeasure has no training mode")
    kt.check_mixed_precision(cls, shape, kwargs, policy, training)


def _trainable_names(layer):
    return {v.path.split("/")[-2] + "/" + v.name for v in layer.trainable_variables}


@pytest.mark.parametrize(
    "make",
    [
        lambda: XU(local_scale=3, trainable_measures=False),
        lambda: XU(3, False),  # the original's positional order
        lambda: XU(local_scale=3, trainable=False),  # the original's keyword
    ],
)
def test_xu_measure_flag_freezes_only_the_measure(make):
    layer = make()
    layer.build((2, 8, 8, 2))
    assert layer.trainable and not layer.measure.trainable
    assert _trainable_names(layer) == {"bn/gamma", "bn/beta"}
    config = layer.get_config()
    assert config["trainable_measures"] is False and config["trainable"] is True
    clone = XU.from_config(config)
    clone.build((2, 8, 8, 2))
    assert _trainable_names(clone) == {"bn/gamma", "bn/beta"}


def test_xu_keras_trainable_keeps_its_meaning():
    layer = XU(local_scale=3, trainable_measures=True, trainable=False)
    layer.build((2, 8, 8, 2))
    assert layer.trainable_variables == [] and layer.measure.trainable
    config = layer.get_config()
    assert (config["trainable"], config["trainable_measures"]) == (False, True)
    clone = XU.from_config(config)
    clone.build((2, 8, 8, 2))
    assert clone.trainable_variables == []
    layer = XU(local_scale=3)
    layer.build((2, 8, 8, 2))
    layer.trainable = False  # frozen after building, as Keras users do
    clone = XU.from_config(layer.get_config())
    clone.build((2, 8, 8, 2))
    assert clone.trainable_variables == []


def test_xu_config_saved_before_trainable_measures_still_loads():
    # What get_config wrote when `trainable` held the measure flag.
    old = {
        "name": "xu",
        "trainable": False,
        "dtype": "float32",
        "data_format": "channels_last",
        "local_scale": 3,
        "with_bn": True,
        "scaling": "batch",
    }
    layer = XU.from_config(old)
    layer.build((2, 8, 8, 2))
    assert layer.trainable and not layer.trainable_measures
    assert _trainable_names(layer) == {"bn/gamma", "bn/beta"}


def test_xu_measure_flag_must_be_a_bool():
    kt.check_bad_argument(lambda: XU(3, trainable_measures=1), "trainable_measures", 1)
    kt.check_bad_argument(lambda: XU(3, trainable="no"), "trainable", "no")


# -- ranks and data formats -----------------------------------------------------


def _to_first(x):
    return np.moveaxis(x, -1, 1)


@pytest.mark.parametrize("shape", [(2, 11, 4), (2, 9, 7, 4), (2, 5, 6, 7, 4)])
@pytest.mark.parametrize(
    "cls, kwargs",
    [(SE, {"r": 2}), (LSS, {"max_scale": 3}), (SSR, {"r": 2, "max_scale": 3})],
)
def test_channels_first_equals_channels_last(cls, kwargs, shape):
    x = kt.random_input(shape)
    last = cls(**kwargs, data_format="channels_last")
    first = cls(**kwargs, data_format="channels_first")
    last.build(shape)
    first.build(_to_first(x).shape)
    porting.set_layer_weights(first, porting.get_layer_weights(last))
    for training in (False, True):
        a = to_numpy(last(x, training=training))
        b = to_numpy(first(_to_first(x), training=training))
        np.testing.assert_allclose(_to_first(a), b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 11, 3), (2, 9, 7, 3), (2, 5, 6, 7, 3)])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_local_singularity_strength_equals_brute_force(shape, data_format):
    """Inference with unit BN statistics is the raw map / sqrt(1 + eps)."""
    x = kt.random_input(shape)
    if data_format == "channels_first":
        x = _to_first(x)
    layer = LSS(max_scale=3, data_format=data_format)
    got = to_numpy(layer(x, training=False))
    want = oracle.singularity_strength(x, 3, "batch", data_format) / np.sqrt(1 + 1e-3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("shape", [(3, 10, 4), (3, 6, 5, 4), (2, 4, 5, 6, 4)])
def test_squeeze_excite_equals_numpy(shape):
    x = kt.random_input(shape)
    layer = SE(r=2)
    y = to_numpy(layer(x))
    w = porting.get_layer_weights(layer)
    pooled = x.reshape(shape[0], -1, shape[-1]).mean(axis=1)
    hidden = np.maximum(pooled @ w["squeeze.kernel"] + w["squeeze.bias"], 0)
    gates = 1 / (1 + np.exp(-(hidden @ w["excite.kernel"] + w["excite.bias"])))
    want = x * gates.reshape((shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],))
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


# -- bad input --------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, error, argument, value",
    [
        (lambda: LSS(max_scale=1), ValueError, "max_scale", 1),
        (lambda: SSR(r=2, max_scale=1), ValueError, "max_scale", 1),
        (lambda: SSR(r=2, max_scale=3.0), TypeError, "max_scale", 3.0),
        (lambda: SE(r=0), ValueError, "r", 0),
        (lambda: SE(r="2"), TypeError, "r", "2"),
        (lambda: SE(r=2, data_format="NCHW"), ValueError, "data_format", "NCHW"),
        (lambda: LSS(3, data_format="nhwc"), ValueError, "data_format", "nhwc"),
        (lambda: LSS(3, scaling="global"), ValueError, "scaling", "global"),
        (lambda: SSR(2, 3, scaling=None), ValueError, "scaling", None),
        (lambda: LM(max_scale=0), ValueError, "max_scale", 0),
        (lambda: XU(local_scale=1), ValueError, "local_scale", 1),
        (lambda: XU(local_scale=3, with_bn="yes"), TypeError, "with_bn", "yes"),
        (lambda: SSRXU(r=2, local_scale=1), ValueError, "local_scale", 1),
    ],
)
def test_bad_constructor_arguments(make, error, argument, value):
    kt.check_bad_argument(make, argument, value, error=error)


@pytest.mark.parametrize(
    "layer, shape",
    [
        (SE(r=2), (2, 4)),
        (SE(r=2), (1, 2, 2, 2, 2, 4)),
        (LSS(max_scale=2), (8, 4)),
        (SSR(r=2, max_scale=2), (1, 2, 3, 4, 5, 6)),
        (LM(max_scale=2), (2, 8, 4)),
        (XU(local_scale=2), (2, 4, 4, 4, 4)),
        (SSRXU(r=2, local_scale=2), (2, 8, 4)),
    ],
)
def test_wrong_rank(layer, shape):
    with pytest.raises(ValueError, match="input_shape"):
        layer(np.ones(shape, "float32"))


def test_unknown_channels():
    with pytest.raises(ValueError, match="known channel dimension"):
        SE(r=2, data_format="channels_first").build((None, None, 8, 8))


@pytest.mark.parametrize("r, channels", [(5, 4), (9, 8), (3, 2)])
def test_r_leaving_no_hidden_unit(r, channels):
    with pytest.raises(ValueError, match=f"r={r}"):
        SE(r=r)(np.ones((1, 4, 4, channels), "float32"))
    with pytest.raises(ValueError, match=f"r={r}"):
        SSR(r=r, max_scale=2)(np.ones((1, 4, 4, channels), "float32"))


@pytest.mark.parametrize(
    "layer",
    [SE(r=2), LSS(max_scale=2), SSR(r=2, max_scale=2), LM(2), XU(2), SSRXU(2, 2)],
    ids=lambda layer: type(layer).__name__,
)
@pytest.mark.parametrize("dtype", ["int32", "uint8", "bool"])
def test_non_float_input(layer, dtype):
    x = keras.ops.convert_to_tensor(np.ones((1, 8, 8, 4), dtype=dtype))
    error = kt.check_bad_argument(lambda: layer(x), "inputs.dtype", error=TypeError)
    assert f"inputs.dtype={dtype}" in str(error)


def test_non_float_symbolic_input():
    with pytest.raises(TypeError, match="inputs.dtype=int32"):
        SSR(r=2, max_scale=2)(keras.Input((8, 8, 4), dtype="int32"))


def test_channel_count_change_after_build():
    layer = SSR(r=2, max_scale=2)
    layer(np.ones((1, 8, 8, 4), "float32"))
    with pytest.raises(ValueError):
        layer(np.ones((1, 8, 8, 6), "float32"))
