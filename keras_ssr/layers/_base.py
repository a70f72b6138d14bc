"""What every keras_ssr layer shares: argument handling and precision."""

from __future__ import annotations

import keras

from keras_ssr import _checks
from keras_ssr._serialization import register  # noqa: F401 (re-exported)

#: The original's BatchNormalization settings (tf.keras defaults).
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3


def full_precision_policy(policy):
    """``policy`` itself, or ``"float32"`` when it computes in 16 bits.

    Used for the sub-layers that compute the singularity-strength map, whose
    logarithms and slopes need float32, as Keras' BatchNormalization does.
    """
    if policy.compute_dtype in ("float16", "bfloat16"):
        return keras.dtype_policies.DTypePolicy("float32")
    return policy


class MapLayer(keras.layers.Layer):
    """Base of the layers that read a ``(batch, *spatial, channels)`` map.

    Resolves and checks ``data_format`` once, checks the input shape in
    :meth:`check_input_shape`, and fixes an ``InputSpec`` after ``build``.
    Subclasses set ``ranks`` to the input ranks they accept and
    ``config_keys`` to the arguments their config saves.
    """

    ranks: tuple[int, ...] = (3, 4, 5)
    #: Constructor arguments that ``get_config`` saves (beyond Keras' own and
    #: ``data_format``), each read from the attribute of the same name.
    config_keys: tuple[str, ...] = ()

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = _checks.standardize_data_format(data_format)
        self.channel_axis = -1 if self.data_format == "channels_last" else 1

    def sublayer(self, cls, *args, name: str, **kwargs):
        """A ``cls(*args, **kwargs)`` sub-layer named ``name``, in this layer's
        ``data_format`` and in float32 (or wider) under 16-bit policies."""
        return cls(
            *args,
            data_format=self.data_format,
            name=name,
            dtype=full_precision_policy(self.dtype_policy),
            **kwargs,
        )

    def check_input_shape(self, input_shape) -> int:
        """Checks rank and channel count; returns the number of channels."""
        _, channels = _checks.check_shape(
            type(self).__name__, input_shape, self.ranks, self.data_format
        )
        return channels

    def lock_input_spec(self, input_shape, channels: int) -> None:
        axis = len(input_shape) - 1 if self.data_format == "channels_last" else 1
        self.input_spec = keras.layers.InputSpec(
            ndim=len(input_shape), axes={axis: channels}
        )

    def spatial_axes(self, ndim: int) -> tuple[int, ...]:
        if self.data_format == "channels_last":
            return tuple(range(1, ndim - 1))
        return tuple(range(2, ndim))

    def check_inputs(self, inputs) -> None:
        _checks.check_float("inputs", inputs)

    def compute_output_spec(self, inputs, *args, **kwargs):
        # Functional models take this path instead of `call`: check here too.
        self.check_inputs(inputs)
        return super().compute_output_spec(inputs, *args, **kwargs)

    def get_config(self):
        config = super().get_config()
        config["data_format"] = self.data_format
        config.update({key: getattr(self, key) for key in self.config_keys})
        return config
