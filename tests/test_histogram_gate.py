"""``keras_ssr.ops.histogram_gate``, the multifractal gate as one op with a
hand-written gradient, against a float64 NumPy oracle and the oracle's
central differences (an independent reference for every argument's
gradient, the batch moments' dependence included)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_ssr import ops as ssr_ops
from tests import numpy_oracle as oracle
from tests.gradients import vjp_function

SHAPE = (2, 3, 3, 2)
K = 4
EPSILON = 1e-3


def _inputs(per_channel: bool, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    rows = SHAPE[-1] if per_channel else 1
    return {
        "x": rng.uniform(-1.0, 1.0, SHAPE),
        "anchors": rng.uniform(-1.0, 1.0, (rows, K)),
        "widths": rng.uniform(0.5, 3.0, (rows, K)),
        "gamma": rng.uniform(0.5, 1.5, (K,)),
        "beta": rng.uniform(-0.5, 0.5, (K,)),
    }


def _oracle(moments, x, anchors, widths, gamma, beta):
    """``sigmoid(sum_k relu(BN_k(h_k)))`` in float64."""
    h = oracle.soft_histogram(x, anchors, widths)
    if moments is None:
        z = oracle.batch_norm(h, gamma, beta, epsilon=EPSILON)
    else:
        mean, variance = moments
        z = (h - mean) * gamma / np.sqrt(variance + EPSILON) + beta
    return oracle.sigmoid(np.maximum(z, 0.0).sum(axis=-1))


def _central_difference(f, values: dict, name: str, cotangent, step=1e-6):
    """The gradient of ``sum(f(**values) * cotangent)`` w.r.t. ``values[name]``."""
    grad = np.zeros_like(values[name])
    for index in np.ndindex(grad.shape):
        pair = []
        for sign in (1.0, -1.0):
            moved = {k: np.array(v, dtype=np.float64) for k, v in values.items()}
            moved[name][index] += sign * step
            pair.append(np.sum(f(**moved) * cotangent))
        grad[index] = (pair[0] - pair[1]) / (2 * step)
    return grad


def _relative(actual, expected) -> float:
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("batch_moments", [True, False])
def test_gate_and_every_gradient_against_the_float64_oracle(per_channel, batch_moments):
    values = _inputs(per_channel)
    moments = None
    if not batch_moments:  # moving statistics of plausible size
        h = oracle.soft_histogram(values["x"], values["anchors"], values["widths"])
        moments = (h.mean(axis=(0, 1, 2, 3)) + 0.05, h.var(axis=(0, 1, 2, 3)) * 1.5)
    cotangent = np.random.default_rng(1).normal(size=SHAPE)

    def reference(**v):
        return _oracle(moments, **v)

    expected = reference(**values)
    for name in values:

        def gate(t, name=name):
            args = {k: v.astype("float32") for k, v in values.items()}
            args[name] = t
            fixed_moments = (
                None if moments is None else tuple(m.astype("float32") for m in moments)
            )
            return ssr_ops.histogram_gate(
                args["x"],
                args["anchors"],
                args["widths"],
                args["gamma"],
                args["beta"],
                fixed_moments,
                EPSILON,
            )[0]

        y, grad = vjp_function(
            gate, values[name].astype("float32"), cotangent.astype("float32")
        )
        np.testing.assert_allclose(y, expected, rtol=0, atol=1e-6)
        want = _central_difference(reference, values, name, cotangent)
        assert _relative(grad, want) < 2e-5, (name, _relative(grad, want))


def test_batch_moments_are_those_of_the_histogram():
    values = _inputs(per_channel=False)
    x32 = {k: v.astype("float32") for k, v in values.items()}
    _, mean, variance = ssr_ops.histogram_gate(**x32, epsilon=EPSILON)
    h = oracle.soft_histogram(values["x"], values["anchors"], values["widths"])
    entries = (0, 1, 2, 3)
    mean, variance = (keras.ops.convert_to_numpy(m) for m in (mean, variance))
    np.testing.assert_allclose(mean, h.mean(axis=entries), atol=1e-6)
    np.testing.assert_allclose(variance, h.var(axis=entries), atol=1e-6)


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("gamma", np.ones(K + 1, "float32"), "`gamma` must have shape"),
        ("beta", np.ones((1, K), "float32"), "`beta` must have shape"),
    ],
)
def test_bad_parameter_shapes_are_named(name, value, match):
    args = {k: v.astype("float32") for k, v in _inputs(per_channel=False).items()}
    args[name] = value
    with pytest.raises(ValueError, match=match):
        ssr_ops.histogram_gate(**args)
