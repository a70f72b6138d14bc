"""Helpers shared by the test modules: one place for each."""

from __future__ import annotations

import keras
import numpy as np
import pytest

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
