"""Every recorded layer case of the follow-up's TF 2.14 code, on this backend.

The rule is the fixtures' (tests/data/reference_mfr_tf214/README.md):
``max|actual - expected| <= 1e-4 * max(1, max|expected|)`` against the
recorded array or its independent float64 twin (``f64.*``), per channel for
input gradients, finiteness only for a constant channel's input gradient.
Checked: inference and training outputs, gradients w.r.t. the input and
every trainable weight, and BatchNormalization moving statistics after the
training call.
"""

from __future__ import annotations

import keras
import pytest

import keras_ssr
from tests import fixtures_mfr as fx
from tests.gradients import vjp


def build(case, arrays):
    layer = getattr(keras_ssr, case["layer"])(**case["kwargs"])
    layer.build(arrays["x"].shape)
    variables = layer.semantic_variables()
    for name, variable in variables.items():
        variable.assign(arrays[name])
    return layer, variables


def test_every_family_layer_is_covered():
    kinds = {fx.CASES[name]["layer"] for name in fx.LAYER_CASES}
    assert kinds == {
        "SpatialSqueezeExcite",
        "StyleBasedRecalibration",
        "FrequencyChannelAttention",
        "MonofractalRecalibration",
        "WeightedLocalSingularityStrength",
        "SoftHistogram",
        "MultifractalRecalibration",
    }


@pytest.mark.parametrize("name", fx.LAYER_CASES)
def test_semantic_names_match_the_fixtures(name):
    case, arrays = fx.load(name)
    layer = getattr(keras_ssr, case["layer"])(**case["kwargs"])
    layer.build(arrays["x"].shape)
    expected = {
        k: v.shape
        for k, v in arrays.items()
        if not k.startswith(("grad", "after_", "y_", "f64."))
        and k not in ("x", "cotangent")
    }
    got = {k: tuple(v.shape) for k, v in layer.semantic_variables().items()}
    assert got == expected


@pytest.mark.parametrize("name", fx.LAYER_CASES)
def test_layer_case(name):
    case, arrays = fx.load(name)
    layer, variables = build(case, arrays)
    x = arrays["x"]

    y = keras.ops.convert_to_numpy(layer(x, training=False))
    fx.assert_agrees(y, arrays, "y_inference", f"{name}: y_inference")

    y, grad_x, grads = vjp(layer, x, arrays["cotangent"], training=True)
    fx.assert_agrees(y, arrays, "y_training", f"{name}: y_training")
    fx.assert_agrees_per_channel(
        grad_x, arrays, "grad_x", f"{name}: grad_x", fx.constant_channels(case)
    )

    by_path = {v.path: n for n, v in variables.items()}
    assert {f"grad.{by_path[p]}" for p in grads} == {
        k for k in arrays if k.startswith("grad.")
    }
    for path, grad in grads.items():
        key = f"grad.{by_path[path]}"
        fx.assert_agrees(grad, arrays, key, f"{name}: {key}")

    after = [k for k in arrays if k.startswith("after_training_call.")]
    assert bool(after) == any("moving_mean" in n for n in variables)
    for key in after:
        weight = key.removeprefix("after_training_call.")
        now = keras.ops.convert_to_numpy(variables[weight].value)
        fx.assert_agrees(now, arrays, key, f"{name}: {key}")
