"""Every recorded case of the original TF 2.14 code, on the current backend.

The rule is the fixtures' (tests/data/reference_tf214/README.md):
``max|actual - expected| <= 1e-4 * max(1, max|expected|)``, per channel for
input gradients, finiteness only for a constant channel's input gradient.
Checked: inference and training outputs, gradients w.r.t. the input and
every trainable weight, and BatchNormalization moving statistics after the
training call.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_ssr
from keras_ssr import ops as ssr_ops
from keras_ssr import porting
from tests import fixtures as fx
from tests.gradients import vjp

LAYER_CASES = sorted(name for name, case in fx.CASES.items() if "layer" in case)


def _build(case, arrays):
    layer = getattr(keras_ssr, case["layer"])(**case["kwargs"])
    layer.build(arrays["x"].shape)
    names = porting.layer_weight_names(layer)
    porting.set_layer_weights(layer, {name: arrays[name] for name in names})
    return layer


def test_every_layer_case_is_covered():
    kinds = {fx.CASES[name]["layer"] for name in LAYER_CASES}
    assert kinds == {
        "SqueezeExcite",
        "LocalSingularityStrength",
        "SingularityStrengthRecalibration",
        "LearnableMeasure",
        "LocalSingularityStrengthXu",
    }


@pytest.mark.parametrize("name", LAYER_CASES)
def test_layer_case(name):
    case, arrays = fx.load(name)
    layer = _build(case, arrays)
    x = arrays["x"]

    if "y_inference" in arrays:
        y = keras.ops.convert_to_numpy(layer(x, training=False))
        fx.assert_agrees(y, arrays["y_inference"], f"{name}: y_inference")

    y, grad_x, grads = vjp(layer, x, arrays["cotangent"], training=True)
    expected_y = arrays["y_training"] if "y_training" in arrays else arrays["y"]
    fx.assert_agrees(y, expected_y, f"{name}: y_training")
    fx.assert_agrees_per_channel(
        grad_x, arrays["grad_x"], f"{name}: grad_x", fx.constant_channels(case)
    )

    by_path = {v.path: n for n, v in layer.semantic_variables().items()}
    assert len(grads) == len(layer.trainable_variables) > 0
    for path, grad in grads.items():
        weight = by_path[path]
        fx.assert_agrees(grad, arrays[f"grad.{weight}"], f"{name}: grad.{weight}")
    expected_grads = {k for k in arrays if k.startswith("grad.")}
    assert expected_grads == {f"grad.{by_path[p]}" for p in grads}

    after = {k: v for k, v in arrays.items() if k.startswith("after_training_call.")}
    now = porting.get_layer_weights(layer)
    prefix = "alpha." if "alpha.bn.gamma" in now else ""
    for key, expected in after.items():
        weight = prefix + key.removeprefix("after_training_call.")
        fx.assert_agrees(now[weight], expected, f"{name}: {key}")


@pytest.mark.parametrize("name", fx.names("sample_min_max_scaling"))
def test_min_max_scaling_case(name):
    case, arrays = fx.load(name)
    kwargs = case["kwargs"]
    y = ssr_ops.min_max_scale(
        keras.ops.convert_to_tensor(arrays["x"]),
        minimum_value=kwargs["minimum_value"],
        maximum_value=kwargs["maximum_value"],
    )
    fx.assert_agrees(keras.ops.convert_to_numpy(y), arrays["y"], name)


@pytest.mark.parametrize(
    "name", fx.names("OrdinaryLeastSquares") + fx.names("OrdinaryLeastSquares_")
)
def test_ols_slope_case(name):
    case, arrays = fx.load(name)
    max_scale = case["kwargs"]["max_scale"]
    if case["op"] == "OrdinaryLeastSquares":
        scales = ssr_ops.dyadic_scales(max_scale)
    else:
        scales = range(1, max_scale + 1)
    y = ssr_ops.ols_slope(keras.ops.convert_to_tensor(arrays["measures"]), scales)
    fx.assert_agrees(keras.ops.convert_to_numpy(y), arrays["y"], name)


@pytest.mark.parametrize("name", fx.names("LearnableMeasure"))
def test_gaussian_initialiser_matches_the_original(name):
    _, arrays = fx.load(name)
    layer = keras_ssr.LearnableMeasure(len([k for k in arrays if "init_kernel" in k]))
    layer.build(arrays["x"].shape)
    for kernel in layer.kernels:
        size = kernel.shape[0]
        expected = arrays[f"measure.init_kernel_{size}"]
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(kernel.value), expected, rtol=1e-6, atol=1e-7
        )


def test_semantic_names_match_the_fixtures():
    """Our names are exactly the fixtures' weight names, case by case."""
    for name in LAYER_CASES:
        case, arrays = fx.load(name)
        layer = getattr(keras_ssr, case["layer"])(**case["kwargs"])
        layer.build(arrays["x"].shape)
        expected = {
            k
            for k in arrays
            if not k.startswith(("grad", "after_", "y", "x", "cotangent"))
            and "init_kernel" not in k
        }
        assert set(porting.layer_weight_names(layer)) == expected, name
