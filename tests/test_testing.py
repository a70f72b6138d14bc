"""keras_ssr.testing: the contract holds for a sound layer, fails for broken ones."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from keras_ssr import models
from keras_ssr import testing as kt

PACKAGE = "keras_ssr_test_testing"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ContrastGate(keras.layers.Layer):
    """A user's attention: channels gated by their spatial standard deviation."""

    def __init__(self, scale=1.0, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(scale, (int, float)) or scale <= 0:
            raise ValueError(f"`scale` must be positive. Received: scale={scale!r}")
        self.scale = float(scale)
        self.data_format = data_format

    def build(self, input_shape):
        channels = input_shape[-1]
        self.w = self.add_weight(shape=(channels,), initializer="ones", name="w")
        self.b = self.add_weight(shape=(channels,), initializer="zeros", name="b")

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        spread = ops.std(x, axis=tuple(range(1, len(x.shape) - 1)), keepdims=True)
        w, b = ops.cast(self.w, "float32"), ops.cast(self.b, "float32")
        gates = ops.sigmoid(self.scale * spread * w + b)
        return inputs * ops.cast(gates, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "scale": self.scale,
            "data_format": self.data_format,
        }


def test_a_registered_user_attention_passes_the_contract(attention_registry):
    """What docs/testing.md shows: register a layer, then check it."""
    models.register_attention("contrast", ContrastGate, {"scale": 2.0})
    errors = kt.check_layer(
        ContrastGate, (2, 6, 6, 3), {"scale": 2.0}, expected_output_shape=(2, 6, 6, 3)
    )
    assert sorted(errors) == ["mixed_bfloat16/inference", "mixed_float16/inference"]
    assert all(0 <= e <= kt.MIXED_PRECISION_TOLERANCE for e in errors.values())
    model = models.build_unet((4, 8), (8, 8, 3), attention="contrast")
    assert isinstance(model.get_layer("encoder_0_attention"), ContrastGate)
    kt.check_bad_argument(lambda: ContrastGate(scale=-1), "scale", -1)


def test_training_modes_are_checked_when_call_takes_training():
    import keras_ssr

    errors = kt.check_layer(
        keras_ssr.LocalSingularityStrength,
        (2, 8, 8, 2),
        {"max_scale": 2},
        checks=("mixed_precision",),
        policies=("mixed_bfloat16",),
    )
    assert sorted(errors) == ["mixed_bfloat16/inference", "mixed_bfloat16/training"]


def test_unknown_check():
    with pytest.raises(ValueError, match="checks=\\('speed',\\)"):
        kt.check_layer(ContrastGate, (2, 4, 4, 2), checks=("speed",))


def test_the_call_check_needs_the_expected_shape():
    kt.check_bad_argument(
        lambda: kt.check_layer(ContrastGate, (2, 4, 4, 2)),
        "expected_output_shape",
        None,
        error=ValueError,
    )


def test_factory_must_make_a_layer():
    with pytest.raises(TypeError, match="layer_factory"):
        kt.check_build(lambda: "not a layer", (2, 4, 4, 2))


# -- each check fails for a layer that breaks its part of the contract --------------


class ForgetsScale(ContrastGate):
    def get_config(self):
        config = super().get_config()
        del config["scale"]
        return config


class Unregistered(keras.layers.Layer):
    def call(self, inputs):
        return inputs


@keras.saving.register_keras_serializable(package=PACKAGE)
class WrongShape(ContrastGate):
    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)


class WrongCall(ContrastGate):
    """Promises the input's shape, returns one channel."""

    def call(self, inputs):
        return super().call(inputs)[..., :1]


class ConsistentlyWrong(WrongCall, WrongShape):
    """Promises the one channel it returns: it agrees with itself, not with
    the caller."""


@keras.saving.register_keras_serializable(package=PACKAGE)
class UnsavedState(ContrastGate):
    """Holds a random factor outside its weights, so a reload changes it."""

    def build(self, input_shape):
        super().build(input_shape)
        self.factor = float(np.random.default_rng().uniform(1, 2))

    def call(self, inputs):
        return super().call(inputs) * self.factor


@keras.saving.register_keras_serializable(package=PACKAGE)
class Frozen(ContrastGate):
    """Trainable weights whose gradient is zero."""

    def call(self, inputs):
        return inputs + 0.0 * ops.cast(self.w + self.b, inputs.dtype)


@keras.saving.register_keras_serializable(package=PACKAGE)
class AlwaysFloat32(ContrastGate):
    def call(self, inputs):
        return ops.cast(super().call(inputs), "float32")


@keras.saving.register_keras_serializable(package=PACKAGE)
class Overflows(ContrastGate):
    """exp(12 x) overflows float16 (max 65504) where float32 does not."""

    def call(self, inputs):
        return ops.exp(12.0 * ops.abs(inputs)) * ops.cast(self.w, inputs.dtype)


class HalfNamed(ContrastGate):
    def semantic_variables(self):
        return {"gate.w": self.w}


@pytest.mark.parametrize(
    "check, layer, message",
    [
        (kt.check_config_round_trip, ForgetsScale, "lost the argument 'scale'"),
        (kt.check_config_round_trip, Unregistered, "register"),
        (kt.check_build, HalfNamed, "unnamed: .*b"),
        (
            kt.check_symbolic_and_eager,
            WrongShape,
            r"compute_output_shape .* != expected",
        ),
        (
            kt.check_symbolic_and_eager,
            WrongCall,
            r"eager output shape .* != expected",
        ),
        (kt.check_symbolic_and_eager, ConsistentlyWrong, r"1\) != expected"),
        (kt.check_save_and_reload, UnsavedState, "outputs after reload"),
        (kt.check_fit_step, Frozen, "left every trainable weight"),
        (kt.check_mixed_precision, AlwaysFloat32, "returned float32, not float16"),
        (kt.check_mixed_precision, Overflows, "non-finite values under mixed_float16"),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_a_broken_layer_fails(check, layer, message):
    shape = (2, 4, 4, 2)
    with pytest.raises(AssertionError, match=message):
        if check is kt.check_config_round_trip:
            check(layer, {"scale": 3.0} if layer is ForgetsScale else {})
        elif check is kt.check_symbolic_and_eager:
            check(layer, shape, expected_output_shape=shape)
        else:
            check(layer, shape)


def test_mixed_precision_tolerance_is_applied():
    error = kt.check_mixed_precision(ContrastGate, (2, 4, 4, 2), policy="mixed_float16")
    assert 0 < error
    with pytest.raises(AssertionError, match="relative error"):
        kt.check_mixed_precision(
            ContrastGate, (2, 4, 4, 2), policy="mixed_float16", tolerance=error / 2
        )


def test_bad_argument_checks():
    def quiet():
        return None

    def vague():
        raise ValueError("bad value")

    def clear():
        raise ValueError("`ratio` must be >= 1. Received: ratio=0")

    with pytest.raises(AssertionError, match="no ValueError or TypeError"):
        kt.check_bad_argument(quiet, "ratio", 0)
    with pytest.raises(AssertionError, match="does not say 'ratio=0'"):
        kt.check_bad_argument(vague, "ratio", 0)
    with pytest.raises(AssertionError, match="does not say 'ratio=1'"):
        kt.check_bad_argument(clear, "ratio", 1)
    assert isinstance(kt.check_bad_argument(clear, "ratio", 0), ValueError)
    with pytest.raises(ValueError, match="ratio=0"):  # another type propagates
        kt.check_bad_argument(clear, "ratio", 0, error=TypeError)
