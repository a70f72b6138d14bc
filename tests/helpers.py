"""Helpers shared by the test modules: one place for each."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests import fixtures as fx

BACKEND = keras.backend.backend()


def to_numpy(x) -> np.ndarray:
    """A backend tensor (or variable value) as a NumPy array."""
    return keras.ops.convert_to_numpy(x)


def _nchw_conv_supported() -> bool:
    """TensorFlow's CPU Conv2D kernel has no NCHW layout (Keras 3.15 calls it)."""
    if BACKEND != "tensorflow":
        return True
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


#: For tests of channels-first models: Keras' own Conv2D fails there on TF CPU.
requires_nchw_conv = pytest.mark.skipif(
    not _nchw_conv_supported(),
    reason="TensorFlow's CPU Conv2D kernel supports NHWC only",
)


def random_weights(layer, rng):
    """Random values for every semantic weight (positive variances)."""
    weights = {}
    for name, v in layer.semantic_variables().items():
        if "moving_variance" in name:
            weights[name] = rng.uniform(0.5, 2.0, size=v.shape)
        elif name.endswith("widths"):
            weights[name] = rng.uniform(-0.5, 2.0, size=v.shape)
        else:
            weights[name] = rng.normal(size=v.shape)
        v.assign(weights[name].astype(v.dtype))
    return weights


# --------------------------------------------------------------------------
# Recorded model cases (tests/fixtures.py and tests/fixtures_mfr.py)
# --------------------------------------------------------------------------


def model_case(fixtures, name: str) -> tuple[dict, dict, dict]:
    """The manifest entry, the arrays, and the weights by their recorded names,
    of model case ``name`` of a fixture set (``fixtures`` or ``fixtures_mfr``)."""
    case, arrays = fixtures.load(name)
    weights = {
        weight: arrays[f"weight_{i:03d}"]
        for i, weight in enumerate(case["weight_names"])
    }
    return case, arrays, weights


def _followup_unets() -> dict:
    from keras_ssr import layers

    return {
        "monofractal_unet": layers.MonofractalRecalibration,
        "se_unet": layers.SqueezeExcite,
        "sc_encoder_unet": layers.SpatialSqueezeExcite,
        "srm_encoder_unet": layers.StyleBasedRecalibration,
        "fca_encoder_unet": layers.FrequencyChannelAttention,
        "multifractal_unet": layers.MultifractalRecalibration,
    }


#: The follow-up's six U-Nets (built by ``models.get_<name>``) and the
#: attention layer each puts in its encoder.
FOLLOWUP_UNETS = _followup_unets()


#: The original's cases name their model; the follow-up's name its builder.
_ORIGINAL_BUILDERS = {"unet": "get_unet", "ssr_unet": "get_ssr_unet"}


def build_model(case: dict, **overrides) -> keras.Model:
    """The model of a recorded case, built by its builder from its kwargs."""
    from keras_ssr import models

    builder = case.get("builder") or _ORIGINAL_BUILDERS[case["model"]]
    return getattr(models, builder)(**{**case["kwargs"], **overrides})


def weights_snapshot(model) -> list[np.ndarray]:
    """Copies of every weight's value, in ``model.weights`` order."""
    return [np.copy(to_numpy(v.value)) for v in model.weights]


def assert_load_fails(model, source, match, error=ValueError) -> None:
    """``porting.load_weights(model, source)`` raises ``error`` matching
    ``match`` and assigns nothing."""
    from keras_ssr import porting

    before = weights_snapshot(model)
    with pytest.raises(error, match=match):
        porting.load_weights(model, source)
    for old, variable in zip(before, model.weights):
        np.testing.assert_array_equal(old, to_numpy(variable.value), err_msg="assigned")


def assert_checkpoint_moved_once(fixtures, name, source, moved, moved_as_saved=None):
    """Loads checkpoint ``source`` into the model of recorded case ``name``,
    and checks every weight against a model loaded from the recorded weights
    and called once in training mode (the files were saved after such a
    call: their moving statistics are the recorded ones moved once).

    ``moved`` is the number of moving statistics; ``moved_as_saved(fresh,
    before, batch)`` gives the weights the saving code would hold, by path,
    from the fresh model (and its weights ``before`` the call); by default
    the fresh model's own. Returns the loaded model, the fresh model and the
    case's arrays.
    """
    from keras_ssr import porting

    case, arrays, weights = model_case(fixtures, name)
    model = build_model(case)
    mapping = porting.load_weights(model, source)
    assert len(mapping) == len(model.weights)
    fresh = build_model(case)
    porting.load_weights(fresh, weights)
    before = {v.path: to_numpy(v.value).astype(np.float64) for v in fresh.weights}
    fresh(arrays["x"], training=True)
    if moved_as_saved is None:
        expected = {v.path: to_numpy(v.value) for v in fresh.weights}
    else:
        expected = moved_as_saved(fresh, before, len(arrays["x"]))
    count = 0
    for theirs, mine in zip(model.weights, fresh.weights):
        fx.assert_agrees(to_numpy(theirs.value), expected[mine.path], mine.path)
        count += "moving_" in mine.path
    assert count == moved
    return model, fresh, arrays


def hub_resnet_backbone(size: int):
    """A small keras-hub ResNet backbone for ``size`` x ``size`` RGB images
    (skips the test without keras-hub)."""
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 64, 64],
        stackwise_num_blocks=[1, 1, 1],
        stackwise_num_strides=[1, 2, 2],
        block_type="basic_block",
        image_shape=(size, size, 3),
    )


def tiny_segmenter():
    """Four 8 x 8 RGB images, random binary masks and an uncompiled one-conv
    sigmoid segmenter: enough for one training step."""
    rng = np.random.default_rng(0)
    x = rng.random((4, 8, 8, 3)).astype(np.float32)
    y = (rng.random((4, 8, 8, 1)) > 0.5).astype(np.float32)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid"),
        ]
    )
    return model, x, y
