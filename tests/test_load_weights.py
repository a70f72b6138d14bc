"""keras_ssr.porting.load_weights: the original's and the follow-up's weights
in keras_ssr U-Nets.

The ``model_*`` cases of both fixture sets hold the authors' (TF 2.14) weights
in their ``model.weights`` order with their variable names, an input and the
recorded inference and training-mode outputs; the expected outputs are those,
under the fixtures' rule ``max|a - e| <= 1e-4 * max(1, max|e|)``. The
checkpoint files hold model_ssr_unet_2's and model_multifractal_unet_5's
weights as ``model.save_weights`` wrote them after the training-mode call (so
with their BN moving statistics moved once).
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest

from keras_ssr import models, porting
from keras_ssr.porting import family as family_scopes
from keras_ssr.porting import scopes
from tests import fixtures as fx
from tests import fixtures_mfr as mfr
from tests.helpers import (
    FOLLOWUP_UNETS,
    assert_checkpoint_moved_once,
    assert_load_fails,
    build_model,
    model_case,
    requires_nchw_conv,
    to_numpy,
    weights_snapshot,
)

CHECKPOINTS = fx.DATA / "checkpoints"
H5 = CHECKPOINTS / "ssr_unet.h5"
TF_FORMAT = CHECKPOINTS / "ssr_unet_tf_format"
MODEL_CASES = ["model_unet_0", "model_unet_1", "model_ssr_unet_2", "model_ssr_unet_3"]
MFR_CHECKPOINTS = mfr.DATA / "checkpoints"
MFR_H5 = MFR_CHECKPOINTS / "multifractal_unet.h5"
MFR_TF_FORMAT = MFR_CHECKPOINTS / "multifractal_unet_tf_format"
MFR_MODEL_CASES = sorted(name for name, case in mfr.CASES.items() if "model" in case)


# --------------------------------------------------------------------------
# Parity with the original's recorded outputs
# --------------------------------------------------------------------------


def test_every_builder_has_a_case():
    assert sorted(mfr.CASES[n]["model"] for n in MFR_MODEL_CASES) == sorted(
        FOLLOWUP_UNETS
    )


@pytest.mark.parametrize(
    "fixtures, name",
    [(fx, name) for name in MODEL_CASES] + [(mfr, name) for name in MFR_MODEL_CASES],
    ids=MODEL_CASES + MFR_MODEL_CASES,
)
def test_recorded_model(fixtures, name):
    case, arrays, weights = model_case(fixtures, name)
    model = build_model(case)
    if fixtures is mfr:
        assert model.name == case["model"]
        attention = model.get_layer("encoder_0_attention")
        assert type(attention) is FOLLOWUP_UNETS[case["model"]]
    mapping = porting.load_weights(model, weights)
    stored = [n for n in weights if "depthwise_conv2d" not in n]
    assert sorted(mapping) == sorted(stored)
    assert len(set(mapping.values())) == len(model.weights)

    y = to_numpy(model(arrays["x"], training=False))
    fx.assert_agrees(y, arrays["y_inference"], f"{name}: y_inference")
    y = to_numpy(model(arrays["x"], training=True))
    fx.assert_agrees(y, arrays["y_training"], f"{name}: y_training")


def test_mapping_by_name():
    _, _, weights = model_case(fx, "model_ssr_unet_2")
    model = models.get_ssr_unet([4, 8, 16], input_shape=[32, 32, 3])
    mapping = porting.load_weights(model, weights)
    assert mapping["contracting_layer/conv2d/kernel:0"] == "encoder_0_conv_0/kernel"
    assert mapping["contracting_layer_1/conv2d_3/bias:0"] == "encoder_1_conv_1/bias"
    assert (
        mapping["contracting_layer_1/batch_normalization_4/moving_variance:0"]
        == "encoder_1_bn_1/moving_variance"
    )
    assert (
        mapping["contracting_layer_2/conv2d_4/kernel:0"] == "bottleneck_conv_0/kernel"
    )
    assert mapping["upsample_expanding_layer/conv2d_6/kernel:0"] == (
        "decoder_1_conv_0/kernel"
    )
    assert mapping["upsample_expanding_layer_1/batch_normalization_11/gamma:0"] == (
        "decoder_0_bn_1/gamma"
    )
    assert mapping["singularity_strength_recalibration_1/dense/kernel:0"] == (
        "encoder_1_attention/squeeze.kernel"
    )
    assert mapping["singularity_strength_recalibration/dense_1/bias:0"] == (
        "encoder_0_attention/excite.bias"
    )
    name = (
        "singularity_strength_recalibration_1/local_singularity_strength_1/"
        "batch_normalization_5/beta:0"
    )
    assert mapping[name] == "encoder_1_attention/alpha.bn.beta"
    assert mapping["conv2d_10/bias:0"] == "head/bias"
    attention = porting.get_layer_weights(model.get_layer("encoder_1_attention"))
    np.testing.assert_array_equal(
        attention["squeeze.kernel"],
        weights["singularity_strength_recalibration_1/dense/kernel:0"],
    )


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
    "fixtures, name, shift, shifted",
    [
        (
            fx,
            "model_ssr_unet_2",
            7,
            ["contracting_layer_8/conv2d_10/kernel:0", "conv2d_17/bias:0"],
        ),
        (mfr, "model_sc_encoder_unet_2", 5, ["conv2d_15/bias:0"]),
        (mfr, "model_multifractal_unet_5", 5, ["conv2d_15/bias:0"]),
    ],
    ids=["model_ssr_unet_2", "model_sc_encoder_unet_2", "model_multifractal_unet_5"],
)
def test_names_not_positions_decide(fixtures, name, shift, shifted):
    # Every scope renumbered (a session that built other models first), and
    # the weights in reversed order.
    case, arrays, weights = model_case(fixtures, name)
    renamed = {_shift_suffixes(n, shift): w for n, w in reversed(weights.items())}
    for renamed_name in shifted:
        assert renamed_name in renamed
    model = build_model(case)
    porting.load_weights(model, renamed)
    y = to_numpy(model(arrays["x"], training=False))
    fx.assert_agrees(y, arrays["y_inference"], f"{name} renamed: y_inference")


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
def test_mapping_by_name_per_attention_kind(name):
    case, _, weights = model_case(mfr, name)
    model = build_model(case)
    mapping = porting.load_weights(model, weights)
    for origin, slot in MAPPED[name]:
        assert mapping[origin] == slot
        layer_name, semantic = slot.split("/")
        if layer_name.endswith("_attention"):
            stored = porting.get_layer_weights(model.get_layer(layer_name))[semantic]
            np.testing.assert_array_equal(stored, weights[origin])


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
# The original's checkpoint files
# --------------------------------------------------------------------------


@pytest.mark.parametrize("source", [H5, TF_FORMAT / "weights"], ids=["h5", "tf"])
def test_checkpoint_files(source):
    # The files were saved after the original's training-mode call.
    model, fresh, arrays = assert_checkpoint_moved_once(
        fx,
        "model_ssr_unet_2",
        source,
        moved=2 * 12,  # 10 conv-block BNs, 2 SSR BNs
    )
    loaded = to_numpy(model(arrays["x"], training=False))
    expected = to_numpy(fresh(arrays["x"], training=False))
    fx.assert_agrees(loaded, expected, "y_inference after the training call")

    # Batch statistics: the moving ones do not enter.
    y = to_numpy(model(arrays["x"], training=True))
    fx.assert_agrees(y, arrays["y_training"], "y_training")


@pytest.mark.parametrize(
    "source",
    [str(H5), str(TF_FORMAT / "weights"), TF_FORMAT, TF_FORMAT / "weights.index"],
    ids=["h5-str", "tf-prefix-str", "tf-directory", "tf-index"],
)
def test_checkpoint_path_forms(source):
    case = fx.CASES["model_ssr_unet_2"]
    expected = weights_snapshot(_load_fresh(case, H5))
    for old, new in zip(expected, weights_snapshot(_load_fresh(case, source))):
        np.testing.assert_array_equal(old, new)


def _load_fresh(case, source):
    model = build_model(case)
    porting.load_weights(model, source)
    return model


@requires_nchw_conv
def test_channels_first_model():
    case, arrays, weights = model_case(fx, "model_ssr_unet_2")
    model = models.get_ssr_unet(
        [4, 8, 16], input_shape=[3, 32, 32], data_format="channels_first"
    )
    porting.load_weights(model, weights)
    y = to_numpy(model(np.transpose(arrays["x"], (0, 3, 1, 2)), training=False))
    fx.assert_agrees(np.transpose(y, (0, 2, 3, 1)), arrays["y_inference"], "NCHW")


def test_squeeze_excite_model():
    # An SE U-Net saved by the original's SqueezeExcite: the SSR names less
    # the singularity-strength layer, under squeeze_excite scopes.
    _, _, weights = model_case(fx, "model_ssr_unet_2")
    se = {
        n.replace("singularity_strength_recalibration", "squeeze_excite"): w
        for n, w in weights.items()
        if "local_singularity_strength" not in n
    }
    model = models.build_unet((4, 8, 16), (32, 32, 3), attention="se")
    mapping = porting.load_weights(model, se)
    assert mapping["squeeze_excite_1/dense_1/kernel:0"] == (
        "encoder_1_attention/excite.kernel"
    )
    gate = porting.get_layer_weights(model.get_layer("encoder_1_attention"))
    np.testing.assert_array_equal(
        gate["excite.kernel"], se["squeeze_excite_1/dense_1/kernel:0"]
    )


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
    "source",
    [MFR_H5, MFR_TF_FORMAT / "weights", MFR_TF_FORMAT],
    ids=["h5", "tf", "tf-dir"],
)
def test_multifractal_checkpoint_files(source):
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
    h5 = porting.read_h5_weights(MFR_H5)
    assert list(h5) == case["weight_names"]
    for name, value in h5.items():
        if "moving_" not in name:
            np.testing.assert_array_equal(value, weights[name], err_msg=name)
    checkpoint = porting.read_checkpoint_weights(MFR_TF_FORMAT / "weights")
    key = "layer_with_weights-3/soft_histogram/anchor_tensor/.ATTRIBUTES/VARIABLE_VALUE"
    name = "multifractal_recalibration_1/soft_histogram_layer_1/anchor_tensor:0"
    np.testing.assert_array_equal(checkpoint[key], h5[name])


# --------------------------------------------------------------------------
# Mismatches: a ValueError naming the first weight that does not fit, and
# nothing assigned
# --------------------------------------------------------------------------


def test_ssr_weights_into_plain_unet():
    case, _, weights = model_case(fx, "model_ssr_unet_2")
    model = build_model(fx.CASES["model_unet_0"])
    first = (
        "singularity_strength_recalibration/local_singularity_strength/"
        "batch_normalization_2/gamma:0"
    )
    assert_load_fails(
        model, weights, re.escape(first) + ".*no layer 'encoder_0_attention'"
    )


def test_plain_weights_into_ssr_unet():
    _, _, weights = model_case(fx, "model_unet_0")
    model = build_model(fx.CASES["model_ssr_unet_2"])
    assert_load_fails(
        model, weights, r"'encoder_0_attention/squeeze.kernel' \(shape \(4, 2\)\)"
    )


def test_ssr_weights_into_se_unet():
    _, _, weights = model_case(fx, "model_ssr_unet_2")
    model = models.build_unet((4, 8, 16), (32, 32, 3), attention="se")
    assert_load_fails(
        model, weights, "batch_normalization_2/gamma:0.*is a SqueezeExcite"
    )


def test_bn_weights_into_unet_without_bn():
    _, _, weights = model_case(fx, "model_unet_0")
    model = build_model(fx.CASES["model_unet_1"])
    assert_load_fails(model, weights, "contracting_layer/batch_normalization/gamma:0")
    _, _, weights = model_case(fx, "model_unet_1")
    model = build_model(fx.CASES["model_unet_0"])
    assert_load_fails(model, weights, "'encoder_0_bn_0/gamma' .* no counterpart")


def test_wrong_shape():
    case, _, weights = model_case(fx, "model_ssr_unet_2")
    model = build_model(case, n_classes=3)
    assert_load_fails(
        model, weights, r"'conv2d_10/kernel:0' has shape \(1, 1, 4, 1\).*\(1, 1, 4, 3\)"
    )
    model = build_model(case, channels_per_level=[4, 8, 32])
    assert_load_fails(
        model, weights, r"contracting_layer_2/conv2d_4/kernel:0.*\(3, 3, 8, 32\)"
    )


def test_missing_and_unknown_weights():
    case, _, weights = model_case(fx, "model_ssr_unet_2")
    model = build_model(case)
    partial = {n: w for n, w in weights.items() if n != "conv2d_10/bias:0"}
    assert_load_fails(model, partial, "'head/bias'")
    assert_load_fails(
        model, {**weights, "dense_3/kernel:0": np.ones(2)}, "'dense_3/kernel:0'"
    )
    extra = {**weights, "contracting_layer/conv2d_99/kernel:0": np.ones(2)}
    assert_load_fails(model, extra, "conv2d_99/kernel:0.*two conv2d")
    assert_load_fails(model, {**weights, "conv2d_11/kernel:0": np.ones(2)}, "conv2d_11")


def test_box_sum_kernels_are_checked():
    case, _, weights = model_case(fx, "model_ssr_unet_2")
    model = build_model(case)
    name = (
        "singularity_strength_recalibration_1/local_singularity_strength_1/"
        "depthwise_conv2d_1/depthwise_kernel:0"
    )
    wrong = dict(weights)
    wrong[name] = weights[name].copy()
    wrong[name][1, 2, 3, 0] = 0.5
    assert_load_fails(model, wrong, re.escape(name) + ".*all 1")
    wrong[name] = np.ones((4, 4, 4, 1), "float32")
    assert_load_fails(
        model, wrong, re.escape(name) + r".*\(4, 4, 4, 1\).*\(4, 4, 8, 1\)"
    )
    bias = name.replace("depthwise_kernel", "bias")
    wrong = {**weights, bias: np.full(8, 0.1, "float32")}
    assert_load_fails(model, wrong, re.escape(bias) + ".*all 0")


def test_max_scale_mismatch():
    case, _, weights = model_case(fx, "model_ssr_unet_2")
    assert_load_fails(
        build_model(case, max_scale=2), weights, "depthwise_conv2d_2.*max_scale=2"
    )
    assert_load_fails(
        build_model(case, max_scale=4), weights, "lacks the box-sum bias of scale 4"
    )


def test_source_errors(tmp_path):
    case, _, weights = model_case(fx, "model_ssr_unet_2")
    model = build_model(case)
    assert_load_fails(model, 42, "source=42", TypeError)
    assert_load_fails(model, {1: np.ones(2)}, "key 1", TypeError)
    assert_load_fails(model, tmp_path / "nothing", "neither an .h5")
    text = tmp_path / "weights.txt"
    text.write_text("not weights")
    assert_load_fails(model, text, "not an HDF5")
    assert_load_fails(
        model, {"model/layer/kernel:0": np.ones(2)}, "unknown scope 'model'"
    )

    import h5py

    keras3 = tmp_path / "model.weights.h5"
    with h5py.File(keras3, "w") as file:
        file.create_group("layers")
    assert_load_fails(model, keras3, "not a Keras 2")


def test_model_errors():
    _, _, weights = model_case(fx, "model_ssr_unet_2")
    with pytest.raises(TypeError, match="keras.Model"):
        porting.load_weights("model", weights)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="build it with keras_ssr.models"):
        porting.load_weights(other, weights)


# --------------------------------------------------------------------------
# Mismatches between the follow-up's attention kinds
# --------------------------------------------------------------------------


def test_multifractal_weights_into_an_ssr_unet():
    case, _, weights = model_case(mfr, "model_multifractal_unet_5")
    kwargs = {k: case["kwargs"][k] for k in ("channels_per_level", "input_shape")}
    assert_load_fails(
        models.get_monofractal_unet(**kwargs), weights, "multifractal_recalibration"
    )
    assert_load_fails(
        models.get_monofractal_unet(**kwargs), MFR_H5, "multifractal_recalibration"
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
# More attention kinds: the scope registry the parsers consult
# --------------------------------------------------------------------------


@pytest.fixture
def _scopes():
    saved = dict(scopes._SCOPES)
    yield
    scopes._SCOPES.clear()
    scopes._SCOPES.update(saved)


def _gate_name(path, rank):
    """A toy kind: ``fc_in`` / ``fc_out`` sub-scopes hold the two Dense layers."""
    if len(path) == 2 and path[1] in ("kernel", "bias"):
        dense = {"fc_in": "squeeze", "fc_out": "excite"}.get(path[0])
        return None if dense is None else f"{dense}.{path[1]}"
    return None


def test_a_registered_attention_scope_is_placed(_scopes):
    _, _, weights = model_case(fx, "model_ssr_unet_2")
    toy = {}
    for name, value in weights.items():
        if "local_singularity_strength" in name:
            continue
        name = name.replace("singularity_strength_recalibration", "toy_gate")
        name = re.sub(r"toy_gate(_\d+)?/dense/", r"toy_gate\1/fc_in/", name)
        name = re.sub(r"toy_gate(_\d+)?/dense_1/", r"toy_gate\1/fc_out/", name)
        toy[name] = value
    model = models.build_unet((4, 8, 16), (32, 32, 3), attention="se")
    with pytest.raises(ValueError, match="unknown scope 'toy_gate'"):
        porting.load_weights(model, toy)
    porting.register_attention_scope(
        porting.AttentionScope(
            kind="toy",
            scope="toy_gate",
            variable_name=_gate_name,
            checkpoint_attributes=lambda attributes: attributes == {"fc_in", "fc_out"},
            checkpoint_name=lambda path: None,
        )
    )
    assert "toy" in [s.kind for s in porting.attention_scopes()]
    mapping = porting.load_weights(model, toy)
    assert mapping["toy_gate_1/fc_out/kernel:0"] == "encoder_1_attention/excite.kernel"
    gate = porting.get_layer_weights(model.get_layer("encoder_1_attention"))
    np.testing.assert_array_equal(
        gate["excite.kernel"], toy["toy_gate_1/fc_out/kernel:0"]
    )
    mixed = {**toy, **{k: v for k, v in weights.items() if "dense" in k}}
    with pytest.raises(ValueError, match="mixes attention blocks of kinds"):
        porting.load_weights(model, mixed)


def test_register_attention_scope_errors(_scopes):
    with pytest.raises(TypeError, match="AttentionScope"):
        porting.register_attention_scope("ssr")
    with pytest.raises(ValueError, match="scope.kind='ssr'"):
        porting.register_attention_scope(porting.attention_scopes()[0])


def test_the_deprecated_reference_module():
    import keras_ssr.reference

    with pytest.warns(DeprecationWarning, match="keras_ssr.porting.load_weights"):
        assert keras_ssr.reference.load_weights is porting.load_weights
    with pytest.raises(AttributeError, match="_variables"):
        keras_ssr.reference._variables  # noqa: B018
