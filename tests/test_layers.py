"""Every public layer: the layer contract, bad input, and each layer's own rules.

``CASES`` is the one table of layer cases, of both papers' layers and the
helpers (BatchNormalization, TrilinearUpSampling3D): every contract test
(config, build and calls with the expected output shape, saving, fitting,
mixed precision) is parametrised over it, and the bad-input tests over the
first case of each of its map layers.
"""

from __future__ import annotations

import inspect
import re
import warnings
from typing import NamedTuple

import keras
import numpy as np
import pytest

import keras_ssr
from keras_ssr import layers, porting
from keras_ssr import ops as ssr_ops
from keras_ssr import testing as kt
from tests import numpy_oracle as oracle
from tests.helpers import to_numpy

SE = keras_ssr.SqueezeExcite
LSS = keras_ssr.LocalSingularityStrength
SSR = keras_ssr.SingularityStrengthRecalibration
LM = keras_ssr.LearnableMeasure
XU = keras_ssr.LocalSingularityStrengthXu
SSRXU = keras_ssr.SingularityStrengthRecalibrationXu
SCSE = keras_ssr.SpatialSqueezeExcite
SRM = keras_ssr.StyleBasedRecalibration
FCA = keras_ssr.FrequencyChannelAttention
MONO = keras_ssr.MonofractalRecalibration
WLSS = keras_ssr.WeightedLocalSingularityStrength
HIST = keras_ssr.SoftHistogram
MULTI = keras_ssr.MultifractalRecalibration
BN = layers.BatchNormalization
UP3D = keras_ssr.TrilinearUpSampling3D

CF = {"data_format": "channels_first"}


class Case(NamedTuple):
    """A layer case: class, constructor arguments, input and output shapes.

    ``slow``: saving, fitting and mixed precision run on it too (the follow-up's
    second cases differ from their first in arguments the config check covers).
    """

    cls: type
    kwargs: dict
    shape: tuple
    output_shape: tuple
    slow: bool = True


CASES = [
    # The SSR paper's layers.
    Case(SE, {"r": 2}, (2, 8, 8, 4), (2, 8, 8, 4)),
    Case(SE, {"r": 4, **CF}, (2, 8, 6, 6), (2, 8, 6, 6)),
    Case(LSS, {"max_scale": 3}, (2, 12, 12, 3), (2, 12, 12, 3)),
    Case(LSS, {"max_scale": 2, "scaling": "sample"}, (2, 9, 7, 2), (2, 9, 7, 2)),
    Case(SSR, {"r": 2, "max_scale": 3}, (2, 12, 12, 4), (2, 12, 12, 4)),
    Case(SSR, {"r": 2, "max_scale": 2, **CF}, (2, 4, 10, 10), (2, 4, 10, 10)),
    # One measure per scale on a new last axis.
    Case(LM, {"max_scale": 3}, (2, 8, 8, 3), (2, 8, 8, 3, 3)),
    Case(XU, {"local_scale": 3}, (2, 8, 8, 3), (2, 8, 8, 3)),
    Case(
        XU,
        {"local_scale": 4, "with_bn": False, "scaling": "sample"},
        (2, 8, 8, 2),
        (2, 8, 8, 2),
    ),
    Case(SSRXU, {"r": 2, "local_scale": 3}, (2, 8, 8, 4), (2, 8, 8, 4)),
    # The follow-up's layers.
    Case(SCSE, {"r": 2}, (2, 6, 6, 4), (2, 6, 6, 4)),
    Case(SCSE, {"r": 2, "combine": "add", **CF}, (2, 4, 5, 6), (2, 4, 5, 6), False),
    Case(SRM, {}, (2, 6, 6, 4), (2, 6, 6, 4)),
    Case(
        SRM,
        {"style_weights": "per_channel", **CF},
        (2, 3, 6, 5),
        (2, 3, 6, 5),
        False,
    ),
    Case(FCA, {"r": 2, "low_freq": 2}, (2, 6, 6, 8), (2, 6, 6, 8)),
    Case(
        FCA,
        {"r": 2, "low_freq": 2, "basis": "dct", **CF},
        (2, 8, 6, 4),
        (2, 8, 6, 4),
        False,
    ),
    Case(MONO, {"r": 2, "max_scale": 2}, (2, 6, 6, 4), (2, 6, 6, 4)),
    Case(WLSS, {"max_scale": 2}, (2, 6, 6, 3), (2, 6, 6, 3)),
    Case(
        WLSS,
        {"max_scale": 2, "scaling": "sample", **CF},
        (2, 3, 6, 5),
        (2, 3, 6, 5),
        False,
    ),
    # One membership per anchor on a new last axis.
    Case(HIST, {"num_anchors": 4}, (2, 5, 5, 3), (2, 5, 5, 3, 4)),
    Case(
        HIST,
        {"num_anchors": 3, "per_channel": True, **CF},
        (2, 3, 4, 4),
        (2, 3, 4, 4, 3),
        False,
    ),
    Case(
        MULTI,
        {"max_scale": 2, "k": 4, "per_channel": False},
        (2, 6, 6, 3),
        (2, 6, 6, 3),
    ),
    Case(
        MULTI,
        {"max_scale": 2, "k": 3, "per_channel": True, "scaling": "sample", **CF},
        (2, 3, 6, 5),
        (2, 3, 6, 5),
        False,
    ),
    # The helpers the models use.
    Case(BN, {}, (2, 6, 6, 4), (2, 6, 6, 4)),
    Case(UP3D, {}, (2, 3, 4, 5, 2), (2, 6, 8, 10, 2)),
]


def _param(i, case):
    """``case`` with the id ``<class>-<n>``: the n-th case of its class."""
    n = [c.cls for c in CASES[:i]].count(case.cls)
    return pytest.param(case, id=f"{case.cls.__name__}-{n}")


ALL = [_param(i, case) for i, case in enumerate(CASES)]
SLOW = [param for param, case in zip(ALL, CASES) if case.slow]
#: The bad-input tests' layers: the first case of every map layer (the layers
#: that check their input, keras_ssr.layers.MapLayer).
MAP_LAYERS = [
    param
    for param, case in zip(ALL, CASES)
    if param.id.endswith("-0") and issubclass(case.cls, layers.MapLayer)
]
#: The original's Xu measures are 2-D convolutions: 2-D maps only.
ONLY_2D = (LM, XU, SSRXU)


def test_every_public_layer_has_cases():
    public = {
        obj
        for obj in (getattr(layers, name) for name in layers.__all__)
        if isinstance(obj, type) and issubclass(obj, keras.layers.Layer)
    }
    # The abstract bases: their subclasses are the layers.
    bases = {layers.MapLayer, layers.Recalibration, layers.ChannelGate, layers.MapGate}
    assert {case.cls for case in CASES} == public - bases
    # Every class's first case is in channels_last, which the bad-input tests use.
    assert all("data_format" not in param.values[0].kwargs for param in MAP_LAYERS)


# -- the layer contract ----------------------------------------------------------------


@pytest.mark.parametrize("case", ALL)
def test_config_round_trip(case):
    kt.check_config_round_trip(case.cls, case.kwargs)


@pytest.mark.parametrize("case", ALL)
def test_build_symbolic_and_eager(case):
    kt.check_build(case.cls, case.shape, case.kwargs)
    kt.check_symbolic_and_eager(
        case.cls, case.shape, case.kwargs, expected_output_shape=case.output_shape
    )


@pytest.mark.parametrize("case", SLOW)
def test_save_and_reload(case, tmp_path):
    kt.check_save_and_reload(case.cls, case.shape, case.kwargs, tmp_path)


@pytest.mark.parametrize("case", SLOW)
def test_fit_step(case):
    with warnings.catch_warnings():
        # TrilinearUpSampling3D has no weights: the check allows it, Keras warns.
        warnings.filterwarnings("ignore", "The model does not have any trainable")
        kt.check_fit_step(case.cls, case.shape, case.kwargs)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("case", SLOW)
def test_mixed_precision(case, policy, training):
    if training and "training" not in inspect.signature(case.cls.call).parameters:
        pytest.skip(f"{case.cls.__name__} has no training mode")
    kt.check_mixed_precision(case.cls, case.shape, case.kwargs, policy, training)


# -- each layer's own rules: the SSR paper's -------------------------------------------


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


# -- ranks and data formats ------------------------------------------------------------


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


# -- each layer's own rules: the follow-up's -------------------------------------------


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


# -- bad input -------------------------------------------------------------------------


def _call(make) -> str:
    """The call a ``lambda: Layer(...)`` makes, as its test id."""
    return re.search(r"lambda: (\w+\([^()]*\))", inspect.getsource(make)).group(1)


@pytest.mark.parametrize(
    "make, error, argument, value",
    [
        # The SSR paper's layers.
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
        # The follow-up's layers.
        (lambda: SCSE(r=0), ValueError, "r", 0),
        (lambda: SCSE(r=2.0), TypeError, "r", 2.0),
        (lambda: SCSE(r=2, combine="mean"), ValueError, "combine", "mean"),
        (lambda: SCSE(r=2, data_format="NHWC"), ValueError, "data_format", "NHWC"),
        (lambda: SRM(style_weights="paper"), ValueError, "style_weights", "paper"),
        (
            lambda: SRM(data_format="channels_middle"),
            ValueError,
            "data_format",
            "channels_middle",
        ),
        (lambda: FCA(r=0), ValueError, "r", 0),
        (lambda: FCA(low_freq=0), ValueError, "low_freq", 0),
        (lambda: FCA(low_freq="4"), TypeError, "low_freq", "4"),
        (lambda: FCA(basis="dct2"), ValueError, "basis", "dct2"),
        (lambda: FCA(data_format=3), ValueError, "data_format", 3),
        (lambda: MONO(r=2, max_scale=1), ValueError, "max_scale", 1),
        (lambda: MONO(2, 2, scaling="global"), ValueError, "scaling", "global"),
        (lambda: WLSS(max_scale=1), ValueError, "max_scale", 1),
        (lambda: WLSS(max_scale=17), ValueError, "max_scale", 17),
        (lambda: WLSS(max_scale=3.0), TypeError, "max_scale", 3.0),
        (lambda: WLSS(3, scaling=None), ValueError, "scaling", None),
        (lambda: WLSS(3, data_format="NCHW"), ValueError, "data_format", "NCHW"),
        (lambda: HIST(num_anchors=1), ValueError, "num_anchors", 1),
        (lambda: HIST(num_anchors="8"), TypeError, "num_anchors", "8"),
        (lambda: HIST(8, per_channel="yes"), TypeError, "per_channel", "yes"),
        (lambda: HIST(8, data_format="last"), ValueError, "data_format", "last"),
        (lambda: MULTI(3, k=1), ValueError, "k", 1),
        (lambda: MULTI(3, k=2.5), TypeError, "k", 2.5),
        (lambda: MULTI(1, k=8), ValueError, "max_scale", 1),
        (lambda: MULTI(3, 8, per_channel=1), TypeError, "per_channel", 1),
        (lambda: MULTI(3, 8, scaling="image"), ValueError, "scaling", "image"),
        (lambda: MULTI(3, 8, data_format="first"), ValueError, "data_format", "first"),
    ],
    ids=lambda v: _call(v) if callable(v) and not isinstance(v, type) else None,
)
def test_bad_constructor_arguments(make, error, argument, value):
    kt.check_bad_argument(make, argument, value, error=error)


def _wrong_ranks(cls):
    return (2, 3, 5, 6) if cls in ONLY_2D else (2, 6)


@pytest.mark.parametrize(
    "case, rank",
    [
        pytest.param(param.values[0], rank, id=f"{param.id}-rank{rank}")
        for param in MAP_LAYERS
        for rank in _wrong_ranks(param.values[0].cls)
    ],
)
def test_wrong_rank(case, rank):
    x = np.ones((2, *(4,) * (rank - 2), case.shape[-1]), "float32")
    layer = case.cls(**case.kwargs)
    kt.check_bad_argument(lambda: layer(x), "input_shape", error=ValueError)


def test_unknown_channels():
    with pytest.raises(ValueError, match="known channel dimension"):
        SE(r=2, data_format="channels_first").build((None, None, 8, 8))


@pytest.mark.parametrize("r, channels", [(5, 4), (9, 8), (3, 2)])
@pytest.mark.parametrize(
    "case", [param for param in MAP_LAYERS if "r" in param.values[0].kwargs]
)
def test_r_leaving_no_hidden_unit(case, r, channels):
    kwargs = {**case.kwargs, "r": r}
    if case.cls is FCA:
        kwargs["low_freq"] = 1  # channels need not be a multiple of low_freq**2
    x = np.ones((1, 8, 8, channels), "float32")
    kt.check_bad_argument(lambda: case.cls(**kwargs)(x), "r", r, error=ValueError)


@pytest.mark.parametrize("dtype", ["int32", "uint8", "bool"])
@pytest.mark.parametrize("case", MAP_LAYERS)
def test_non_float_input(case, dtype):
    x = keras.ops.convert_to_tensor(np.ones(case.shape, dtype=dtype))
    layer = case.cls(**case.kwargs)
    error = kt.check_bad_argument(lambda: layer(x), "inputs.dtype", error=TypeError)
    assert f"inputs.dtype={dtype}" in str(error)


@pytest.mark.parametrize("case", MAP_LAYERS)
def test_non_float_symbolic_input(case):
    x = keras.Input(case.shape[1:], dtype="int32")
    layer = case.cls(**case.kwargs)
    error = kt.check_bad_argument(lambda: layer(x), "inputs.dtype", error=TypeError)
    assert "inputs.dtype=int32" in str(error)


@pytest.mark.parametrize("case", MAP_LAYERS)
def test_channel_count_change_after_build(case):
    layer = case.cls(**case.kwargs)
    layer(np.ones(case.shape, "float32"))
    with pytest.raises(ValueError):
        layer(np.ones((*case.shape[:-1], case.shape[-1] * 2), "float32"))


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
