"""keras_ssr.reference.load_weights: the original's weights in keras_ssr U-Nets.

The expected outputs are the original's (TF 2.14) recorded ones, under the
fixtures' rule ``max|a - e| <= 1e-4 * max(1, max|e|)``. The checkpoint files
hold model_ssr_unet_2's weights as the original saved them after its
training-mode call (so with its BN moving statistics moved once).
"""

from __future__ import annotations

import importlib.util
import re
import sys

import fixtures as fx
import keras
import numpy as np
import pytest
from conftest import requires_nchw_conv

from keras_ssr import models, reference

CHECKPOINTS = fx.DATA / "checkpoints"
H5 = CHECKPOINTS / "ssr_unet.h5"
TF_FORMAT = CHECKPOINTS / "ssr_unet_tf_format"
HAS_TF = importlib.util.find_spec("tensorflow") is not None
MODEL_CASES = ["model_unet_0", "model_unet_1", "model_ssr_unet_2", "model_ssr_unet_3"]


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _case(name):
    """The manifest entry, the arrays, and the weights by original name."""
    case, arrays = fx.load(name)
    weights = {
        weight: arrays[f"weight_{i:03d}"]
        for i, weight in enumerate(case["weight_names"])
    }
    return case, arrays, weights


def _model(case, **overrides):
    kwargs = {**case["kwargs"], **overrides}
    build = models.get_unet if case["model"] == "unet" else models.get_ssr_unet
    return build(**kwargs)


def _snapshot(model):
    return [np.copy(_numpy(v.value)) for v in model.weights]


# --------------------------------------------------------------------------
# Parity with the original's recorded outputs
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_CASES)
def test_recorded_model(name):
    case, arrays, weights = _case(name)
    model = _model(case)
    mapping = reference.load_weights(model, weights)
    stored = [n for n in weights if "depthwise_conv2d" not in n]
    assert sorted(mapping) == sorted(stored)
    assert len(set(mapping.values())) == len(model.weights)

    y = _numpy(model(arrays["x"], training=False))
    fx.assert_agrees(y, arrays["y_inference"], f"{name}: y_inference")
    y = _numpy(model(arrays["x"], training=True))
    fx.assert_agrees(y, arrays["y_training"], f"{name}: y_training")


def test_mapping_by_name():
    _, _, weights = _case("model_ssr_unet_2")
    model = models.get_ssr_unet([4, 8, 16], input_shape=[32, 32, 3])
    mapping = reference.load_weights(model, weights)
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
    attention = reference.get_layer_weights(model.get_layer("encoder_1_attention"))
    np.testing.assert_array_equal(
        attention["squeeze.kernel"],
        weights["singularity_strength_recalibration_1/dense/kernel:0"],
    )


_VARIABLES = {"kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance"}


def _shift_suffixes(name: str, shift: int) -> str:
    """``scope_N`` -> ``scope_{N + shift}`` (``scope`` -> ``scope_shift``)."""
    path, _, tail = name.partition(":")
    parts = []
    for part in path.split("/"):
        if part not in _VARIABLES | {"depthwise_kernel"}:
            base, number = re.fullmatch(r"(.*?)(?:_(\d+))?", part).groups()
            part = f"{base}_{int(number or 0) + shift}"
        parts.append(part)
    return "/".join(parts) + (":" + tail if tail else "")


def test_names_not_positions_decide():
    # Same weights with every scope renumbered (as in a session that built
    # other models first) and in reversed order.
    case, arrays, weights = _case("model_ssr_unet_2")
    renamed = {_shift_suffixes(n, 7): w for n, w in reversed(weights.items())}
    assert "contracting_layer_8/conv2d_10/kernel:0" in renamed
    assert "conv2d_17/bias:0" in renamed
    model = _model(case)
    reference.load_weights(model, renamed)
    y = _numpy(model(arrays["x"], training=False))
    fx.assert_agrees(y, arrays["y_inference"], "renamed: y_inference")


# --------------------------------------------------------------------------
# The original's checkpoint files
# --------------------------------------------------------------------------


@pytest.mark.parametrize("source", [H5, TF_FORMAT / "weights"], ids=["h5", "tf"])
def test_checkpoint_files(source):
    case, arrays, weights = _case("model_ssr_unet_2")
    model = _model(case)
    mapping = reference.load_weights(model, source)
    assert len(mapping) == len(model.weights)

    # The files were saved after the original's training-mode call: their
    # moving statistics are the recorded ones moved once, which a model
    # loaded from the recorded weights reproduces with its own training call.
    fresh = _model(case)
    reference.load_weights(fresh, weights)
    fresh(arrays["x"], training=True)
    moved = 0
    for theirs, mine in zip(model.weights, fresh.weights):
        fx.assert_agrees(_numpy(theirs.value), _numpy(mine.value), mine.path)
        moved += "moving_" in mine.path
    assert moved == 2 * 12  # 10 conv-block BNs and 2 SSR BNs
    loaded = _numpy(model(arrays["x"], training=False))
    expected = _numpy(fresh(arrays["x"], training=False))
    fx.assert_agrees(loaded, expected, "y_inference after the training call")

    # Batch statistics: the moving ones do not enter.
    y = _numpy(model(arrays["x"], training=True))
    fx.assert_agrees(y, arrays["y_training"], "y_training")


@pytest.mark.parametrize(
    "source",
    [str(H5), str(TF_FORMAT / "weights"), TF_FORMAT, TF_FORMAT / "weights.index"],
    ids=["h5-str", "tf-prefix-str", "tf-directory", "tf-index"],
)
def test_checkpoint_path_forms(source):
    case = fx.CASES["model_ssr_unet_2"]
    expected = _snapshot(_load_fresh(case, H5))
    for old, new in zip(expected, _snapshot(_load_fresh(case, source))):
        np.testing.assert_array_equal(old, new)


def _load_fresh(case, source):
    model = _model(case)
    reference.load_weights(model, source)
    return model


def test_readers():
    case = fx.CASES["model_ssr_unet_2"]
    h5 = reference.read_h5_weights(H5)
    assert list(h5) == case["weight_names"]
    _, _, weights = _case("model_ssr_unet_2")
    # The recorded weights less the moving statistics moved by the call.
    for name, value in h5.items():
        if "moving_" not in name:
            np.testing.assert_array_equal(value, weights[name], err_msg=name)
    checkpoint = reference.read_checkpoint_weights(TF_FORMAT / "weights")
    assert len(checkpoint) == len(h5)
    key = "layer_with_weights-3/alpha_layer/bn/gamma/.ATTRIBUTES/VARIABLE_VALUE"
    name = (
        "singularity_strength_recalibration_1/local_singularity_strength_1/"
        "batch_normalization_5/gamma:0"
    )
    np.testing.assert_array_equal(checkpoint[key], h5[name])


@pytest.mark.skipif(not HAS_TF, reason="needs TensorFlow as the reference reader")
def test_checkpoint_reader_equals_tensorflow():
    import tensorflow as tf

    ours = reference.read_checkpoint_weights(TF_FORMAT / "weights")
    reader = tf.train.load_checkpoint(str(TF_FORMAT / "weights"))
    theirs = {
        key: reader.get_tensor(key)
        for key, dtype in reader.get_variable_to_dtype_map().items()
        if dtype != tf.string
    }
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype, key
        np.testing.assert_array_equal(ours[key], value, err_msg=key)


@pytest.mark.skipif(not HAS_TF, reason="the fallback reads with TensorFlow")
def test_checkpoint_fallback_to_tensorflow(monkeypatch):
    def unsupported(prefix):
        raise reference._UnsupportedCheckpoint("compressed SSTable block")

    expected = reference.read_checkpoint_weights(TF_FORMAT)
    monkeypatch.setattr(reference, "_read_checkpoint_python", unsupported)
    fallback = reference.read_checkpoint_weights(TF_FORMAT)
    assert sorted(fallback) == sorted(expected)


def test_checkpoint_needing_tensorflow_without_it(monkeypatch):
    def unsupported(prefix):
        raise reference._UnsupportedCheckpoint("compressed SSTable block")

    monkeypatch.setattr(reference, "_read_checkpoint_python", unsupported)
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import fails
    with pytest.raises(ImportError, match="compressed SSTable block.*tensorflow"):
        reference.read_checkpoint_weights(TF_FORMAT)


# --------------------------------------------------------------------------
# Other layouts the names allow
# --------------------------------------------------------------------------


@requires_nchw_conv
def test_channels_first_model():
    case, arrays, weights = _case("model_ssr_unet_2")
    model = models.get_ssr_unet(
        [4, 8, 16], input_shape=[3, 32, 32], data_format="channels_first"
    )
    reference.load_weights(model, weights)
    y = _numpy(model(np.transpose(arrays["x"], (0, 3, 1, 2)), training=False))
    fx.assert_agrees(np.transpose(y, (0, 2, 3, 1)), arrays["y_inference"], "NCHW")


def test_squeeze_excite_model():
    # An SE U-Net saved by the original's SqueezeExcite: the SSR names less
    # the singularity-strength layer, under squeeze_excite scopes.
    _, _, weights = _case("model_ssr_unet_2")
    se = {
        n.replace("singularity_strength_recalibration", "squeeze_excite"): w
        for n, w in weights.items()
        if "local_singularity_strength" not in n
    }
    model = models.build_unet((4, 8, 16), (32, 32, 3), attention="se")
    mapping = reference.load_weights(model, se)
    assert mapping["squeeze_excite_1/dense_1/kernel:0"] == (
        "encoder_1_attention/excite.kernel"
    )
    gate = reference.get_layer_weights(model.get_layer("encoder_1_attention"))
    np.testing.assert_array_equal(
        gate["excite.kernel"], se["squeeze_excite_1/dense_1/kernel:0"]
    )


# --------------------------------------------------------------------------
# Mismatches: a ValueError naming the first weight that does not fit, and
# nothing assigned
# --------------------------------------------------------------------------


def _fails(model, source, match, error=ValueError):
    before = _snapshot(model)
    with pytest.raises(error, match=match):
        reference.load_weights(model, source)
    for old, variable in zip(before, model.weights):
        np.testing.assert_array_equal(old, _numpy(variable.value), err_msg="assigned")


def test_ssr_weights_into_plain_unet():
    case, _, weights = _case("model_ssr_unet_2")
    model = _model(fx.CASES["model_unet_0"])
    first = (
        "singularity_strength_recalibration/local_singularity_strength/"
        "batch_normalization_2/gamma:0"
    )
    _fails(model, weights, re.escape(first) + ".*no layer 'encoder_0_attention'")


def test_plain_weights_into_ssr_unet():
    _, _, weights = _case("model_unet_0")
    model = _model(fx.CASES["model_ssr_unet_2"])
    _fails(model, weights, r"'encoder_0_attention/squeeze.kernel' \(shape \(4, 2\)\)")


def test_ssr_weights_into_se_unet():
    _, _, weights = _case("model_ssr_unet_2")
    model = models.build_unet((4, 8, 16), (32, 32, 3), attention="se")
    _fails(model, weights, "batch_normalization_2/gamma:0.*is a SqueezeExcite")


def test_bn_weights_into_unet_without_bn():
    _, _, weights = _case("model_unet_0")
    model = _model(fx.CASES["model_unet_1"])
    _fails(model, weights, "contracting_layer/batch_normalization/gamma:0")
    _, _, weights = _case("model_unet_1")
    model = _model(fx.CASES["model_unet_0"])
    _fails(model, weights, "'encoder_0_bn_0/gamma' .* no counterpart")


def test_wrong_shape():
    case, _, weights = _case("model_ssr_unet_2")
    model = _model(case, n_classes=3)
    _fails(
        model, weights, r"'conv2d_10/kernel:0' has shape \(1, 1, 4, 1\).*\(1, 1, 4, 3\)"
    )
    model = _model(case, channels_per_level=[4, 8, 32])
    _fails(model, weights, r"contracting_layer_2/conv2d_4/kernel:0.*\(3, 3, 8, 32\)")


def test_missing_and_unknown_weights():
    case, _, weights = _case("model_ssr_unet_2")
    model = _model(case)
    partial = {n: w for n, w in weights.items() if n != "conv2d_10/bias:0"}
    _fails(model, partial, "'head/bias'")
    _fails(model, {**weights, "dense_3/kernel:0": np.ones(2)}, "'dense_3/kernel:0'")
    extra = {**weights, "contracting_layer/conv2d_99/kernel:0": np.ones(2)}
    _fails(model, extra, "conv2d_99/kernel:0.*two conv2d")
    _fails(model, {**weights, "conv2d_11/kernel:0": np.ones(2)}, "conv2d_11")


def test_box_sum_kernels_are_checked():
    case, _, weights = _case("model_ssr_unet_2")
    model = _model(case)
    name = (
        "singularity_strength_recalibration_1/local_singularity_strength_1/"
        "depthwise_conv2d_1/depthwise_kernel:0"
    )
    wrong = dict(weights)
    wrong[name] = weights[name].copy()
    wrong[name][1, 2, 3, 0] = 0.5
    _fails(model, wrong, re.escape(name) + ".*all 1")
    wrong[name] = np.ones((4, 4, 4, 1), "float32")
    _fails(model, wrong, re.escape(name) + r".*\(4, 4, 4, 1\).*\(4, 4, 8, 1\)")
    bias = name.replace("depthwise_kernel", "bias")
    wrong = {**weights, bias: np.full(8, 0.1, "float32")}
    _fails(model, wrong, re.escape(bias) + ".*all 0")


def test_max_scale_mismatch():
    case, _, weights = _case("model_ssr_unet_2")
    _fails(_model(case, max_scale=2), weights, "depthwise_conv2d_2.*max_scale=2")
    _fails(_model(case, max_scale=4), weights, "lacks the box-sum bias of scale 4")


def test_source_errors(tmp_path):
    case, _, weights = _case("model_ssr_unet_2")
    model = _model(case)
    _fails(model, 42, "source=42", TypeError)
    _fails(model, {1: np.ones(2)}, "key 1", TypeError)
    _fails(model, tmp_path / "nothing", "neither an .h5")
    text = tmp_path / "weights.txt"
    text.write_text("not weights")
    _fails(model, text, "not an HDF5")
    _fails(model, {"model/layer/kernel:0": np.ones(2)}, "unknown scope 'model'")

    import h5py

    keras3 = tmp_path / "model.weights.h5"
    with h5py.File(keras3, "w") as file:
        file.create_group("layers")
    _fails(model, keras3, "not a Keras 2")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="No TensorFlow checkpoint"):
        reference.read_checkpoint_weights(empty)


def test_model_errors():
    _, _, weights = _case("model_ssr_unet_2")
    with pytest.raises(TypeError, match="keras.Model"):
        reference.load_weights("model", weights)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="build it with keras_ssr.models"):
        reference.load_weights(other, weights)


def _write_keras2_h5(path, weights, *, full_model: bool, chunk: int | None):
    """A Keras 2 HDF5 layout written by hand (h5py), from names and arrays."""
    import h5py

    layers = {}
    for name, value in weights.items():
        layers.setdefault(name.split("/")[0], {})[name] = value

    def strings(values):
        return np.array([v.encode("utf8") for v in values])

    def put(attrs, key, values):
        if chunk is None:
            attrs[key] = strings(values)
        else:  # long lists are split into key0, key1, ... by Keras 2
            for i in range(0, max(len(values), 1), chunk):
                attrs[f"{key}{i // chunk}"] = strings(values[i : i + chunk])

    with h5py.File(path, "w") as file:
        root = file.create_group("model_weights") if full_model else file
        put(root.attrs, "layer_names", list(layers))
        for layer, named in layers.items():
            group = root.create_group(layer)
            put(group.attrs, "weight_names", list(named))
            for name, value in named.items():
                group.create_dataset(name, data=value)


@pytest.mark.parametrize(("full_model", "chunk"), [(False, None), (True, 3)])
def test_keras2_h5_layouts(tmp_path, full_model, chunk):
    case, arrays, weights = _case("model_unet_1")
    path = tmp_path / "unet.h5"
    _write_keras2_h5(path, weights, full_model=full_model, chunk=chunk)
    read = reference.read_h5_weights(path)
    assert list(read) == list(weights)
    model = _model(case)
    reference.load_weights(model, path)
    y = _numpy(model(arrays["x"], training=False))
    fx.assert_agrees(y, arrays["y_inference"], "y_inference")
