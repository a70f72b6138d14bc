"""The follow-up's layers: the layer contract and bad input, on every backend."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_ssr
from keras_ssr import ops as ssr_ops
from keras_ssr import testing as kt

SCSE = keras_ssr.SpatialSqueezeExcite
SRM = keras_ssr.StyleBasedRecalibration
FCA = keras_ssr.FrequencyChannelAttention
MONO = keras_ssr.MonofractalRecalibration
WLSS = keras_ssr.WeightedLocalSingularityStrength
HIST = keras_ssr.SoftHistogram
MULTI = keras_ssr.MultifractalRecalibration

CF = {"data_format": "channels_first"}
# [layer class, constructor arguments, input shape]
LAYER_CASES = [
    (SCSE, {"r": 2}, (2, 6, 6, 4)),
    (SCSE, {"r": 2, "combine": "add", **CF}, (2, 4, 5, 6)),
    (SRM, {}, (2, 6, 6, 4)),
    (SRM, {"style_weights": "per_channel", **CF}, (2, 3, 6, 5)),
    (FCA, {"r": 2, "low_freq": 2}, (2, 6, 6, 8)),
    (FCA, {"r": 2, "low_freq": 2, "basis": "dct", **CF}, (2, 8, 6, 4)),
    (MONO, {"r": 2, "max_scale": 2}, (2, 6, 6, 4)),
    (WLSS, {"max_scale": 2}, (2, 6, 6, 3)),
    (WLSS, {"max_scale": 2, "scaling": "sample", **CF}, (2, 3, 6, 5)),
    (HIST, {"num_anchors": 4}, (2, 5, 5, 3)),
    (HIST, {"num_anchors": 3, "per_channel": True, **CF}, (2, 3, 4, 4)),
    (MULTI, {"max_scale": 2, "k": 4, "per_channel": False}, (2, 6, 6, 3)),
    (
        MULTI,
        {"max_scale": 2, "k": 3, "per_channel": True, "scaling": "sample", **CF},
        (2, 3, 6, 5),
    ),
]
IDS = [f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(LAYER_CASES)]
# Saving, fitting and mixed precision (the slow checks) on the first case of
# every class: its other cases differ in arguments the config check covers.
FIRST = [
    case
    for i, case in enumerate(LAYER_CASES)
    if case[0] not in [c for c, _, _ in LAYER_CASES[:i]]
]
FIRST_IDS = [c.__name__ for c, _, _ in FIRST]


@pytest.mark.parametrize("cls, kwargs, shape", LAYER_CASES, ids=IDS)
def test_config_build_and_call(cls, kwargs, shape):
    kt.check_config_round_trip(cls, kwargs)
    kt.check_build(cls, shape, kwargs)
    # SoftHistogram adds a last axis of one membership per anchor.
    out = (*shape, kwargs["num_anchors"]) if cls is HIST else shape
    kt.check_symbolic_and_eager(cls, shape, kwargs, expected_output_shape=out)


@pytest.mark.parametrize("cls, kwargs, shape", FIRST, ids=FIRST_IDS)
def test_save_and_reload(cls, kwargs, shape, tmp_path):
    kt.check_save_and_reload(cls, shape, kwargs, tmp_path)


@pytest.mark.parametrize("cls, kwargs, shape", FIRST, ids=FIRST_IDS)
def test_fit_step(cls, kwargs, shape):
    kt.check_fit_step(cls, shape, kwargs)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("cls, kwargs, shape", FIRST, ids=FIRST_IDS)
def test_mixed_precision(cls, kwargs, shape, policy, training):
    kt.check_mixed_precision(cls, shape, kwargs, policy, training)


def test_follow_up_names():
    assert keras_ssr.SoftHistogramLayer is HIST
    assert issubclass(MONO, keras_ssr.SingularityStrengthRecalibration)
    for cls in (SCSE, SRM, FCA, MONO, WLSS, HIST, MULTI):
        name = f"keras_ssr>{cls.__name__}"
        assert keras.saving.get_registered_object(name) is cls
        assert getattr(keras_ssr.layers, cls.__name__) is cls


def test_follow_up_defaults():
    assert SCSE(2).combine == "max"
    assert SRM().style_weights == "shared"
    fca = FCA()
    assert (fca.r, fca.low_freq, fca.basis) == (2, 4, "transposed_dct")
    assert MULTI(3, 8).per_channel is False
    assert HIST(8).per_channel is False


def test_the_fca_basis_former_name_still_loads():
    """``basis="followup"`` named the transposed DCT-II basis: accepted, with
    a DeprecationWarning, as the same basis, in configs saved with it too."""
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 4)).astype("float32")
    fca = FCA(2, 2)
    config = {**fca.get_config(), "basis": "followup"}
    with pytest.warns(DeprecationWarning, match="transposed_dct"):
        old = FCA.from_config(config)
    assert old.basis == "transposed_dct"
    old.build(x.shape)
    fca.build(x.shape)
    old.set_weights(fca.get_weights())
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(old(x)), keras.ops.convert_to_numpy(fca(x))
    )
    with pytest.warns(DeprecationWarning):
        np.testing.assert_array_equal(
            ssr_ops.cosine_bases(5, 2, "followup"), ssr_ops.cosine_bases(5, 2)
        )


@pytest.mark.parametrize(
    "cls, kwargs, shape",
    [
        (SRM, {"style_weights": "per_channel"}, (2, 5, 5, 3)),
        (HIST, {"num_anchors": 4, "per_channel": True}, (2, 5, 5, 3)),
        (MULTI, {"max_scale": 2, "k": 4, "per_channel": True}, (2, 5, 5, 3)),
        (SCSE, {"r": 1}, (2, 5, 5, 3)),
    ],
)
def test_weight_shapes(cls, kwargs, shape):
    layer = cls(**kwargs)
    layer.build(shape)
    got = {k: tuple(v.shape) for k, v in layer.semantic_variables().items()}
    channels = shape[-1]
    if cls is SRM:
        assert got["style.kernel"] == (2, channels)
    elif cls is HIST:
        assert got["anchors"] == got["widths"] == (channels, 4)
    elif cls is MULTI:
        assert got["histogram.anchors"] == (channels, 4)
        assert got["alpha.ols.weights"] == (2,)
    else:
        assert got["spatial.kernel"] == (1, 1, channels, 1)


# -- bad input --------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, argument, value",
    [
        (lambda: SCSE(r=0), "r", 0),
        (lambda: SCSE(r=2.0), "r", 2.0),
        (lambda: SCSE(r=2, combine="mean"), "combine", "mean"),
        (lambda: SCSE(r=2, data_format="NHWC"), "data_format", "NHWC"),
        (lambda: SRM(style_weights="paper"), "style_weights", "paper"),
        (lambda: SRM(data_format="channels_middle"), "data_format", "channels_middle"),
        (lambda: FCA(r=0), "r", 0),
        (lambda: FCA(low_freq=0), "low_freq", 0),
        (lambda: FCA(low_freq="4"), "low_freq", "4"),
        (lambda: FCA(basis="dct2"), "basis", "dct2"),
        (lambda: FCA(data_format=3), "data_format", 3),
        (lambda: MONO(r=2, max_scale=1), "max_scale", 1),
        (lambda: MONO(r=2, max_scale=2, scaling="global"), "scaling", "global"),
        (lambda: WLSS(max_scale=1), "max_scale", 1),
        (lambda: WLSS(max_scale=17), "max_scale", 17),
        (lambda: WLSS(max_scale=3.0), "max_scale", 3.0),
        (lambda: WLSS(3, scaling=None), "scaling", None),
        (lambda: WLSS(3, data_format="NCHW"), "data_format", "NCHW"),
        (lambda: HIST(num_anchors=1), "num_anchors", 1),
        (lambda: HIST(num_anchors="8"), "num_anchors", "8"),
        (lambda: HIST(8, per_channel="yes"), "per_channel", "yes"),
        (lambda: HIST(8, data_format="last"), "data_format", "last"),
        (lambda: MULTI(3, k=1), "k", 1),
        (lambda: MULTI(3, k=2.5), "k", 2.5),
        (lambda: MULTI(1, k=8), "max_scale", 1),
        (lambda: MULTI(3, 8, per_channel=1), "per_channel", 1),
        (lambda: MULTI(3, 8, scaling="image"), "scaling", "image"),
        (lambda: MULTI(3, 8, data_format="first"), "data_format", "first"),
    ],
)
def test_bad_constructor_arguments(make, argument, value):
    kt.check_bad_argument(make, argument, value)


def _all_layers():
    return [
        SCSE(r=2),
        SRM(),
        FCA(r=2, low_freq=2),
        MONO(r=2, max_scale=2),
        WLSS(max_scale=2),
        HIST(num_anchors=4),
        MULTI(max_scale=2, k=4),
    ]


@pytest.mark.parametrize("layer", _all_layers(), ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("shape", [(2, 8), (1, 2, 2, 2, 2, 8)])
def test_wrong_rank(layer, shape):
    kt.check_bad_argument(lambda: layer(np.ones(shape, "float32")), "input_shape")


@pytest.mark.parametrize("layer", _all_layers(), ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("dtype", ["int32", "bool"])
def test_non_float_input(layer, dtype):
    x = keras.ops.convert_to_tensor(np.ones((1, 8, 8, 8), dtype=dtype))
    kt.check_bad_argument(lambda: layer(x), "inputs.dtype", error=TypeError)


def test_non_float_symbolic_input():
    kt.check_bad_argument(
        lambda: MULTI(2, 4)(keras.Input((8, 8, 4), dtype="int32")),
        "inputs.dtype",
        error=TypeError,
    )


@pytest.mark.parametrize(
    "channels, low_freq, shape",
    [(6, 2, (1, 8, 8)), (12, 2, (1, 4, 4, 4)), (12, 4, (1, 8, 8))],
)
def test_fca_channels_not_divisible(channels, low_freq, shape):
    x = np.ones((*shape, channels), "float32")
    error = kt.check_bad_argument(lambda: FCA(r=2, low_freq=low_freq)(x), "low_freq")
    assert f"channels={channels}" in str(error)


def test_fca_needs_static_spatial_sizes():
    kt.check_bad_argument(
        lambda: FCA(r=2, low_freq=2).build((None, None, 8, 8)), "input_shape"
    )


@pytest.mark.parametrize(
    "make", [lambda: SCSE(r=9), lambda: FCA(r=9, low_freq=1), lambda: MONO(9, 2)]
)
def test_r_leaving_no_hidden_unit(make):
    x = np.ones((1, 4, 4, 8), "float32")
    kt.check_bad_argument(lambda: make()(x), "r", 9)


def test_channel_count_change_after_build():
    layer = MULTI(2, 4)
    layer(np.ones((1, 8, 8, 4), "float32"))
    with pytest.raises(ValueError):
        layer(np.ones((1, 8, 8, 6), "float32"))
