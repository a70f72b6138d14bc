"""Every recorded case of the authors' TF 2.14 code, on the current backend.

Two fixture sets: the SSR paper's (``tests/data/reference_tf214``,
:mod:`tests.fixtures`) and the follow-up's (``tests/data/reference_mfr_tf214``,
:mod:`tests.fixtures_mfr`), whose layer cases also hold a float64 twin
``f64.<key>`` of each expected array. The rule is the fixtures' (their
READMEs): ``max|actual - expected| <= 1e-4 * max(1, max|expected|)``, against
the recorded array or its float64 twin where one is recorded, per channel for
input gradients, finiteness only for a constant channel's input gradient.
Checked for every layer case: inference and training outputs, gradients
w.r.t. the input and every trainable weight, and BatchNormalization moving
statistics after the training call. The SSR paper's op cases (min-max
scaling, the OLS slope, the Gaussian initialiser) follow.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

import keras_ssr
from keras_ssr import ops as ssr_ops
from keras_ssr import porting
from tests import fixtures as fx
from tests import fixtures_mfr as mfr
from tests.gradients import vjp
from tests.helpers import to_numpy

#: Layer case name -> the fixture module that holds it (names are unique).
LAYER_SETS = {
    name: fixtures
    for fixtures in (fx, mfr)
    for name, case in fixtures.CASES.items()
    if "layer" in case
}
LAYER_CASES = sorted(LAYER_SETS)
AFTER = "after_training_call."


@dataclasses.dataclass(frozen=True)
class LayerCase:
    """A recorded layer case, named one way whichever set records it.

    ``expected`` maps ``y_inference`` (where recorded), ``y_training``,
    ``grad_x``, ``grad.<weight>`` and ``after_training_call.<weight>`` to the
    recorded arrays, ``twins`` the same keys to their float64 twins where
    recorded; ``weights`` maps every semantic weight name to its value.
    """

    name: str
    layer: str
    kwargs: dict
    x: np.ndarray
    cotangent: np.ndarray
    weights: dict
    expected: dict
    twins: dict
    constant_channels: tuple

    def build(self) -> keras.layers.Layer:
        layer = getattr(keras_ssr, self.layer)(**self.kwargs)
        layer.build(self.x.shape)
        return layer


def load_layer_case(name: str) -> LayerCase:
    case, arrays = LAYER_SETS[name].load(name)
    twins = {k.removeprefix("f64."): v for k, v in arrays.items() if "f64." in k}
    arrays = {k: v for k, v in arrays.items() if "f64." not in k}
    if "y" in arrays:  # LearnableMeasure: one output, no training mode
        arrays["y_training"] = arrays.pop("y")
    outputs = ("y_inference", "y_training", "grad_x", "grad.", AFTER)
    weights = {
        k: v
        for k, v in arrays.items()
        if not k.startswith((*outputs, "x", "cotangent")) and "init_kernel" not in k
    }
    expected = {k: v for k, v in arrays.items() if k.startswith(outputs)}
    for key in [k for k in expected if k.startswith(AFTER)]:
        # The SSR paper's recalibration records its BN as ``bn.*``, which is
        # ``alpha.bn.*`` in our (and the follow-up's) naming.
        if key.removeprefix(AFTER) not in weights:
            expected[AFTER + "alpha." + key.removeprefix(AFTER)] = expected.pop(key)
    return LayerCase(
        name=name,
        layer=case["layer"],
        kwargs=case["kwargs"],
        x=arrays["x"],
        cotangent=arrays["cotangent"],
        weights=weights,
        expected=expected,
        twins=twins,
        constant_channels=(0,)
        if case.get("input_kind") == "with_constant_channel"
        else (),
    )


def test_every_layer_case_is_covered():
    kinds = {LAYER_SETS[name].CASES[name]["layer"] for name in LAYER_CASES}
    assert kinds == {
        # The SSR paper's.
        "SqueezeExcite",
        "LocalSingularityStrength",
        "SingularityStrengthRecalibration",
        "LearnableMeasure",
        "LocalSingularityStrengthXu",
        # The follow-up's.
        "SpatialSqueezeExcite",
        "StyleBasedRecalibration",
        "FrequencyChannelAttention",
        "MonofractalRecalibration",
        "WeightedLocalSingularityStrength",
        "SoftHistogram",
        "MultifractalRecalibration",
    }


@pytest.mark.parametrize("name", LAYER_CASES)
def test_semantic_names_match_the_fixtures(name):
    """Our names and shapes are exactly the fixtures' weights, case by case."""
    case = load_layer_case(name)
    expected = {k: v.shape for k, v in case.weights.items()}
    assert porting.layer_weight_names(case.build()) == expected


@pytest.mark.parametrize("name", LAYER_CASES)
def test_layer_case(name):
    case = load_layer_case(name)
    layer = case.build()
    porting.set_layer_weights(layer, case.weights)

    def check(actual, key):
        fx.assert_agrees(
            actual, case.expected[key], f"{name}: {key}", twin=case.twins.get(key)
        )

    if "y_inference" in case.expected:
        check(to_numpy(layer(case.x, training=False)), "y_inference")

    y, grad_x, grads = vjp(layer, case.x, case.cotangent, training=True)
    check(y, "y_training")
    fx.assert_agrees_per_channel(
        grad_x,
        case.expected["grad_x"],
        f"{name}: grad_x",
        case.constant_channels,
        twin=case.twins.get("grad_x"),
    )

    by_path = {v.path: n for n, v in layer.semantic_variables().items()}
    assert len(grads) == len(layer.trainable_variables) > 0
    assert {f"grad.{by_path[p]}" for p in grads} == {
        k for k in case.expected if k.startswith("grad.")
    }
    for path, grad in grads.items():
        check(grad, f"grad.{by_path[path]}")

    now = porting.get_layer_weights(layer)
    after = [k for k in case.expected if k.startswith(AFTER)]
    assert bool(after) == any("moving_mean" in weight for weight in now)
    for key in after:
        check(now[key.removeprefix(AFTER)], key)


@pytest.mark.parametrize("name", fx.names("sample_min_max_scaling"))
def test_min_max_scaling_case(name):
    case, arrays = fx.load(name)
    kwargs = case["kwargs"]
    y = ssr_ops.min_max_scale(
        keras.ops.convert_to_tensor(arrays["x"]),
        minimum_value=kwargs["minimum_value"],
        maximum_value=kwargs["maximum_value"],
    )
    fx.assert_agrees(to_numpy(y), arrays["y"], name)


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
    fx.assert_agrees(to_numpy(y), arrays["y"], name)


@pytest.mark.parametrize("name", fx.names("LearnableMeasure"))
def test_gaussian_initialiser_matches_the_original(name):
    _, arrays = fx.load(name)
    layer = keras_ssr.LearnableMeasure(len([k for k in arrays if "init_kernel" in k]))
    layer.build(arrays["x"].shape)
    for kernel in layer.kernels:
        size = kernel.shape[0]
        expected = arrays[f"measure.init_kernel_{size}"]
        np.testing.assert_allclose(
            to_numpy(kernel.value), expected, rtol=1e-6, atol=1e-7
        )
