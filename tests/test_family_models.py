"""The follow-up's U-Nets: builders, registry names and weight import.

The six ``model_*`` cases hold the follow-up's (TF 2.14) weights in its
``model.weights`` order with its variable names, an input and the recorded
inference and training-mode outputs; ``checkpoints/`` holds
``model_multifractal_unet_5`` as its ``model.save_weights`` wrote it, after
the training-mode call (its BN moving statistics moved once). Everything is
checked under the fixtures' rule ``max|a - e| <= 1e-4 * max(1, max|e|)``.
"""

from __future__ import annotations

import re
import warnings

import keras
import numpy as np
import pytest

from keras_ssr import layers, models, porting
from keras_ssr.porting import family as family_scopes
from tests import fixtures as fx
from tests import fixtures_mfr as mfr
from tests.helpers import (
    assert_checkpoint_moved_once,
    assert_load_fails,
    build_model,
    model_case,
    requires_nchw_conv,
    to_numpy,
)

CHECKPOINTS = mfr.DATA / "checkpoints"
H5 = CHECKPOINTS / "multifractal_unet.h5"
TF_FORMAT = CHECKPOINTS / "multifractal_unet_tf_format"
MODEL_CASES = sorted(name for name, case in mfr.CASES.items() if "model" in case)
ATTENTION = {
    "monofractal_unet": layers.MonofractalRecalibration,
    "se_unet": layers.SqueezeExcite,
    "sc_encoder_unet": layers.SpatialSqueezeExcite,
    "srm_encoder_unet": layers.StyleBasedRecalibration,
    "fca_encoder_unet": layers.FrequencyChannelAttention,
    "multifractal_unet": layers.MultifractalRecalibration,
}


# --------------------------------------------------------------------------
# Parity with the follow-up's recorded outputs
# --------------------------------------------------------------------------


def test_every_builder_has_a_case():
    assert sorted(mfr.CASES[n]["model"] for n in MODEL_CASES) == sorted(ATTENTION)


@pytest.mark.parametrize("name", MODEL_CASES)
def test_recorded_model(name):
    case, arrays, weights = model_case(mfr, name)
    model = build_model(case)
    assert model.name == case["model"]
    attention = model.get_layer("encoder_0_attention")
    assert type(attention) is ATTENTION[case["model"]]
    mapping = porting.load_weights(model, weights)
    stored = [n for n in weights if "depthwise_conv2d" not in n]
    assert sorted(mapping) == sorted(stored)
    assert len(set(mapping.values())) == len(model.weights)

    y = to_numpy(model(arrays["x"], training=False))
    fx.assert_agrees(y, arrays["y_inference"], f"{name}: y_inference")
    y = to_numpy(model(arrays["x"], training=True))
    fx.assert_agrees(y, arrays["y_training"], f"{name}: y_training")


# (source name, keras_ssr slot) pairs, one model per attention kind.
MAPPED = {
    "model_monofractal_unet_0": [
        (
            "monofractal_recalibration_1/dense/kernel:0",
            "encoder_1_attention/squeeze.kernel",
        ),
        (
            "monofractal_recalibration/local_singularity_strength/"
            "batch_normalization_2/moving_variance:0",
            "encoder_0_attention/alpha.bn.moving_variance",
        ),
    ],
    "model_sc_encoder_unet_2": [
        ("spatial_squeeze_excite/dense_1/bias:0", "encoder_0_attention/excite.bias"),
        (
            "spatial_squeeze_excite_1/conv2d/kernel:0",
            "encoder_1_attention/spatial.kernel",
        ),
        ("conv2d_10/kernel:0", "head/kernel"),
    ],
    "model_srm_encoder_unet_3": [
        (
            "style_based_recalibration_1/dense/kernel:0",
            "encoder_1_attention/style.kernel",
        ),
        (
            "style_based_recalibration/batch_normalization_2/gamma:0",
            "encoder_0_attention/bn.gamma",
        ),
    ],
    "model_fca_encoder_unet_4": [
        (
            "frequency_channel_attention/dense/bias:0",
            "encoder_0_attention/squeeze.bias",
        ),
        (
            "frequency_channel_attention_1/dense_1/kernel:0",
            "encoder_1_attention/excite.kernel",
        ),
    ],
    "model_multifractal_unet_5": [
        (
            "multifractal_recalibration/weighted_local_singularity_strength/"
            "weighted_ordinary_least_squares/weights_ols:0",
            "encoder_0_attention/alpha.ols.weights",
        ),
        (
            "multifractal_recalibration_1/weighted_local_singularity_strength_1/"
            "batch_normalization_6/beta:0",
            "encoder_1_attention/alpha.bn.beta",
        ),
        (
            "multifractal_recalibration_1/soft_histogram_layer_1/anchor_tensor:0",
            "encoder_1_attention/histogram.anchors",
        ),
        (
            "multifractal_recalibration/soft_histogram_layer/membership_weights:0",
            "encoder_0_attention/histogram.widths",
        ),
        (
            "multifractal_recalibration/soft_histogram_layer/"
            "batch_normalization_3/moving_mean:0",
            "encoder_0_attention/histogram.bn.moving_mean",
        ),
    ],
}


@pytest.mark.parametrize("name", sorted(MAPPED))
def test_mapping_by_name(name):
    case, _, weights = model_case(mfr, name)
    model = build_model(case)
    mapping = porting.load_weights(model, weights)
    for origin, slot in MAPPED[name]:
        assert mapping[origin] == slot
        layer_name, semantic = slot.split("/")
        if layer_name.endswith("_attention"):
            stored = porting.get_layer_weights(model.get_layer(layer_name))[semantic]
            np.testing.assert_array_equal(stored, weights[origin])


_VARIABLES = {"kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance"}
_UNNUMBERED = _VARIABLES | {"depthwise_kernel", "weights_ols", "anchor_tensor"}
_UNNUMBERED |= {"membership_weights"}


def _shift_suffixes(name: str, shift: int) -> str:
    """``scope_N`` -> ``scope_{N + shift}`` (``scope`` -> ``scope_shift``)."""
    path, _, tail = name.partition(":")
    parts = []
    for part in path.split("/"):
        if part not in _UNNUMBERED:
            base, number = re.fullmatch(r"(.*?)(?:_(\d+))?", part).groups()
            part = f"{base}_{int(number or 0) + shift}"
        parts.append(part)
    return "/".join(parts) + (":" + tail if tail else "")


@pytest.mark.parametrize(
    "name", ["model_sc_encoder_unet_2", "model_multifractal_unet_5"]
)
def test_names_not_positions_decide(name):
    # Every scope renumbered (a session that built other models first), and
    # the weights in reversed order.
    case, arrays, weights = model_case(mfr, name)
    renamed = {_shift_suffixes(n, 5): w for n, w in reversed(weights.items())}
    assert "conv2d_15/bias:0" in renamed
    model = build_model(case)
    porting.load_weights(model, renamed)
    y = to_numpy(model(arrays["x"], training=False))
    fx.assert_agrees(y, arrays["y_inference"], f"{name} renamed: y_inference")


@requires_nchw_conv
def test_channels_first_multifractal_model():
    case, arrays, weights = model_case(mfr, "model_multifractal_unet_5")
    kwargs = dict(case["kwargs"])
    height, width, channels = kwargs.pop("input_shape")
    model = models.get_multifractal_unet(
        **kwargs, input_shape=(channels, height, width), data_format="channels_first"
    )
    porting.load_weights(model, weights)
    x = np.transpose(arrays["x"], (0, 3, 1, 2))
    y = np.transpose(to_numpy(model(x, training=False)), (0, 2, 3, 1))
    fx.assert_agrees(y, arrays["y_inference"], "channels_first: y_inference")


# --------------------------------------------------------------------------
# The follow-up's checkpoint files
# --------------------------------------------------------------------------


def _count_per_channel(model, path: str, batch: int) -> int | None:
    """Entries per channel a moving variance of ``path`` was computed over,
    when tf.keras 2 used its fused (4-D) batch norm there; else None."""
    layer_name = path.split("/")[0]
    if "/histogram/" in path:
        return None  # a 5-D (..., C, K) input: tf.keras' non-fused kernel
    height, width = model.get_layer(layer_name).input.shape[1:3]
    return batch * height * width


def _moved_as_tf_keras(fresh, before, batch):
    """The fresh model's moving statistics as tf.keras 2.14 moves them.

    Its fused batch norm (4-D inputs) averages the Bessel-corrected batch
    variance ``n / (n - 1) * var`` into the moving variance, where Keras 3
    uses ``var``: ``0.99 * v0 + 0.01 * var`` becomes that plus
    ``0.01 * var / (n - 1)``.
    """
    expected = {}
    for variable in fresh.weights:
        value = to_numpy(variable.value).astype(np.float64)
        n = _count_per_channel(fresh, variable.path, batch)
        if "moving_variance" in variable.path and n is not None:
            batch_variance = (value - 0.99 * before[variable.path]) / 0.01
            value = value + 0.01 * batch_variance / (n - 1)
        expected[variable.path] = value
    return expected


@pytest.mark.parametrize(
    "source", [H5, TF_FORMAT / "weights", TF_FORMAT], ids=["h5", "tf", "tf-dir"]
)
def test_checkpoint_files(source):
    # Saved after the follow-up's training-mode call (up to tf.keras' Bessel
    # correction, see _moved_as_tf_keras).
    model, _, arrays = assert_checkpoint_moved_once(
        mfr,
        "model_multifractal_unet_5",
        source,
        moved=2 * (10 + 2 * 2),  # 10 conv-block BNs, 2 per recalibration
        moved_as_saved=_moved_as_tf_keras,
    )
    # Batch statistics: the moving ones do not enter.
    y = to_numpy(model(arrays["x"], training=True))
    fx.assert_agrees(y, arrays["y_training"], "y_training")


def test_checkpoint_readers_agree():
    case, _, weights = model_case(mfr, "model_multifractal_unet_5")
    h5 = porting.read_h5_weights(H5)
    assert list(h5) == case["weight_names"]
    for name, value in h5.items():
        if "moving_" not in name:
            np.testing.assert_array_equal(value, weights[name], err_msg=name)
    checkpoint = porting.read_checkpoint_weights(TF_FORMAT / "weights")
    key = "layer_with_weights-3/soft_histogram/anchor_tensor/.ATTRIBUTES/VARIABLE_VALUE"
    name = "multifractal_recalibration_1/soft_histogram_layer_1/anchor_tensor:0"
    np.testing.assert_array_equal(checkpoint[key], h5[name])


# --------------------------------------------------------------------------
# Mismatches are refused, naming the weight
# --------------------------------------------------------------------------


def test_multifractal_weights_into_an_ssr_unet():
    case, _, weights = model_case(mfr, "model_multifractal_unet_5")
    kwargs = {k: case["kwargs"][k] for k in ("channels_per_level", "input_shape")}
    assert_load_fails(
        models.get_monofractal_unet(**kwargs), weights, "multifractal_recalibration"
    )
    assert_load_fails(
        models.get_monofractal_unet(**kwargs), H5, "multifractal_recalibration"
    )


def test_scse_weights_into_an_se_unet():
    case, _, weights = model_case(mfr, "model_sc_encoder_unet_2")
    model = models.get_se_unet(**case["kwargs"])
    assert_load_fails(model, weights, "spatial")


def test_se_weights_into_an_scse_unet():
    case, _, weights = model_case(mfr, "model_se_unet_1")
    model = models.get_sc_encoder_unet(**case["kwargs"])
    assert_load_fails(model, weights, "spatial")


def test_per_channel_histogram_shape_mismatch():
    case, _, weights = model_case(mfr, "model_multifractal_unet_5")
    model = build_model(case, per_channel=True)
    assert_load_fails(model, weights, "anchor_tensor")


def test_mixed_kinds_are_refused():
    _, _, srm = model_case(mfr, "model_srm_encoder_unet_3")
    _, _, fca = model_case(mfr, "model_fca_encoder_unet_4")
    mixed = {**{k: v for k, v in srm.items() if "style_based_recalibration_1" not in k}}
    mixed.update(
        {k: v for k, v in fca.items() if k.startswith("frequency_channel_attention_1")}
    )
    case = mfr.CASES["model_srm_encoder_unet_3"]
    with pytest.raises(ValueError, match="mixes attention blocks"):
        porting.load_weights(build_model(case), mixed)


def test_scopes_are_registered():
    kinds = {scope.kind for scope in porting.attention_scopes()}
    assert {s.kind for s in family_scopes.FAMILY_SCOPES} <= kinds
    assert {"mono", "scse", "srm", "fca", "multifractal", "se", "ssr"} <= kinds


# --------------------------------------------------------------------------
# Builders and registry names
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attention,kind",
    [
        ("mono", layers.MonofractalRecalibration),
        ("multifractal", layers.MultifractalRecalibration),
        ("scse", layers.SpatialSqueezeExcite),
        ("srm", layers.StyleBasedRecalibration),
        ("fca", layers.FrequencyChannelAttention),
    ],
)
def test_registry_names(attention, kind):
    assert attention in models.attention_names()
    assert models.get_attention(attention) is kind
    model = models.build_unet((16, 32), (16, 16, 3), attention=attention)
    assert type(model.get_layer("encoder_0_attention")) is kind
    assert tuple(model.output.shape) == (None, 16, 16, 1)


def test_builder_defaults_follow_the_followup():
    shape = {"input_shape": (16, 16, 3)}
    mono = models.get_monofractal_unet([16, 32], **shape).get_layer(
        "encoder_0_attention"
    )
    assert (mono.r, mono.max_scale) == (2, 3)
    multi = models.get_multifractal_unet([16, 32], **shape).get_layer(
        "encoder_0_attention"
    )
    assert (multi.max_scale, multi.k, multi.per_channel) == (3, 16, False)
    scse = models.get_sc_encoder_unet([16, 32], **shape).get_layer(
        "encoder_0_attention"
    )
    assert (scse.r, scse.combine) == (2, "max")
    srm = models.get_srm_encoder_unet([16, 32], **shape).get_layer(
        "encoder_0_attention"
    )
    assert srm.style_weights == "shared"
    fca = models.get_fca_encoder_unet([16, 32], **shape).get_layer(
        "encoder_0_attention"
    )
    assert (fca.r, fca.low_freq, fca.basis) == (2, 4, "transposed_dct")


def test_arguments_the_followup_ignores_warn():
    # Its FCA is always built with r=2; its SE and SRM U-Nets take r /
    # max_scale and do not use them. Another value than the used one warns,
    # naming the argument; the default does not.
    shape = {"input_shape": (16, 16, 3)}
    with pytest.warns(UserWarning, match=r"ignores `r`.*attention_kwargs.*r=8"):
        fca = models.get_fca_encoder_unet([16, 32], r=8, **shape)
    assert fca.get_layer("encoder_0_attention").r == 2
    with pytest.warns(UserWarning, match="ignores `max_scale`.*max_scale=9"):
        se = models.get_se_unet([16, 32], 4, 9, **shape)
    assert se.get_layer("encoder_0_attention").r == 4
    with pytest.warns(UserWarning, match="ignores") as caught:
        srm = models.get_srm_encoder_unet([16, 32], 7, 9, **shape)
    assert sorted(str(w.message).split("`")[1] for w in caught) == ["max_scale", "r"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the defaults, and what is used: silent
        plain = models.get_srm_encoder_unet([16, 32], **shape)
        models.get_fca_encoder_unet([16, 32], r=2, **shape)
        models.get_se_unet([16, 32], 4, 3, **shape)
    assert srm.count_params() == plain.count_params()


def test_bn_options_without_bn_warn():
    arguments = {"channels_per_level": [2, 4], "input_shape": (8, 8, 3)}
    with pytest.warns(UserWarning, match="`bn_momentum`.*with_bn=False"):
        model = models.build_unet(with_bn=False, bn_momentum=0.9, **arguments)
    assert not [layer for layer in model.layers if "_bn_" in layer.name]
    with pytest.warns(UserWarning, match="`synchronized_bn`, `bn_epsilon`"):
        models.get_unet(
            with_bn=False, synchronized_bn=True, bn_epsilon=1e-5, **arguments
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        models.get_ssr_unet(with_bn=False, **arguments)
        models.build_unet(bn_momentum=0.9, **arguments)


def test_paper_options_reach_the_layers():
    shape = {"input_shape": (16, 16, 3)}
    scse = models.get_sc_encoder_unet([16, 32], combine="add", **shape)
    assert scse.get_layer("encoder_0_attention").combine == "add"
    srm = models.get_srm_encoder_unet([16, 32], style_weights="per_channel", **shape)
    assert srm.get_layer("encoder_0_attention").style_weights == "per_channel"
    fca = models.get_fca_encoder_unet([16, 32], basis="dct", **shape)
    assert fca.get_layer("encoder_0_attention").basis == "dct"
    multi = models.get_multifractal_unet([16, 32], scaling="sample", **shape)
    assert multi.get_layer("encoder_0_attention").scaling == "sample"


def test_volumetric_multifractal_unet():
    model = models.get_multifractal_unet(
        [2, 4], max_scale=2, k=2, input_shape=(4, 4, 4, 1)
    )
    assert model.get_layer("encoder_0_attention").k == 2
    assert tuple(model.output.shape) == (None, 4, 4, 4, 1)
    if keras.backend.backend() == "jax":
        return  # eager JAX compiles every 3-D op: the layer tests call them
    x = np.random.default_rng(0).random((1, 4, 4, 4, 1)).astype(np.float32)
    y = to_numpy(model(x))
    assert y.shape == (1, 4, 4, 4, 1) and np.all((y > 0) & (y < 1))


def test_keras_file_round_trip(tmp_path):
    case, arrays, weights = model_case(mfr, "model_multifractal_unet_5")
    model = build_model(case)
    porting.load_weights(model, weights)
    path = tmp_path / "multifractal_unet.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    x = arrays["x"]
    np.testing.assert_allclose(
        to_numpy(again(x, training=False)),
        to_numpy(model(x, training=False)),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "builder,kwargs,match",
    [
        ("get_fca_encoder_unet", {"low_freq": 3}, "low_freq|channels"),
        ("get_multifractal_unet", {"k": 1}, "k="),
        ("get_sc_encoder_unet", {"combine": "sum"}, "combine="),
        ("get_monofractal_unet", {"max_scale": 0}, "max_scale="),
        ("get_se_unet", {"channels_per_level": [8]}, "channels_per_level="),
    ],
)
def test_bad_arguments(builder, kwargs, match):
    arguments = {"channels_per_level": [16, 32], "input_shape": (16, 16, 3)}
    with pytest.raises(ValueError, match=match):
        getattr(models, builder)(**{**arguments, **kwargs})


@pytest.mark.parametrize(
    "builder", [f"get_{name}" for name in sorted(ATTENTION)] + ["get_unet"]
)
def test_builders_pass_the_unet_options_on(builder):
    arguments = {"channels_per_level": [16, 32], "input_shape": (16, 16, 3)}
    model = getattr(models, builder)(
        **arguments, synchronized_bn=True, bn_momentum=0.9, bn_epsilon=1e-5
    )
    bn = model.get_layer("encoder_0_bn_0")
    assert isinstance(bn, layers.BatchNormalization) and bn.synchronized
    assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)
    assert model.name == builder.removeprefix("get_")
    assert "{shared args}" not in getattr(models, builder).__doc__
    with pytest.raises(TypeError, match="synchronised_bn"):
        getattr(models, builder)(**arguments, synchronised_bn=True)
