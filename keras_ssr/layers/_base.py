"""What every keras_ssr layer shares: argument handling and precision."""

from __future__ import annotations

import warnings

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
        self.channel_axis = _checks.channel_axis(self.data_format)

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
        axis = _checks.channel_axis(self.data_format, len(input_shape))
        self.input_spec = keras.layers.InputSpec(
            ndim=len(input_shape), axes={axis: channels}
        )

    def spatial_axes(self, ndim: int) -> tuple[int, ...]:
        """The spatial axes of a rank-``ndim`` map in this layer's format."""
        return _checks.spatial_axes(self.data_format, ndim)

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


class Recalibration(MapLayer):
    """Base of the layers that recalibrate a map by gates computed from it.

    ``layer(x, training=None, return_gates=False)`` returns the recalibrated
    map; with ``return_gates=True``, as Keras' ``MultiHeadAttention`` with
    ``return_attention_scores``, the pair ``(outputs, gates)``: the gates the
    layer applied, in the output's dtype, shaped to broadcast against ``x``
    (:meth:`compute_gates_shape`). Channel gates are ``(batch, 1, .., 1,
    channels)`` (``(batch, channels, 1, .., 1)`` channels first) with
    ``outputs == x * gates``; per-pixel gates have ``x``'s shape.

    Subclasses compute the gates in :meth:`compute_gates`, apply them in
    :meth:`apply_gates` and give their shape in :meth:`compute_gates_shape`.
    """

    def compute_gates(self, inputs, training=None):
        """The gates of ``inputs`` (a tensor of the call's dtype), as
        :meth:`compute_gates_shape` shapes them."""
        raise NotImplementedError

    def apply_gates(self, inputs, gates):
        """The recalibrated map; the default multiplies ``inputs`` by ``gates``."""
        return inputs * gates

    def compute_gates_shape(self, input_shape):
        """The gates' shape for ``input_shape``; the default, channel gates:
        every spatial size 1."""
        shape = list(input_shape)
        for axis in self.spatial_axes(len(shape)):
            shape[axis] = 1
        return tuple(shape)

    def channel_gates(self, gates, ndim: int):
        """``(batch, channels)`` gates with a size-1 axis for each spatial
        axis of a rank-``ndim`` map, so that they broadcast against it."""
        for axis in self.spatial_axes(ndim):
            gates = keras.ops.expand_dims(gates, axis)
        return gates

    def call(self, inputs, training=None, return_gates=False):
        _checks.check_bool("return_gates", return_gates)
        inputs = keras.ops.convert_to_tensor(inputs)
        self.check_inputs(inputs)
        gates = self.compute_gates(inputs, training)
        outputs = self.apply_gates(inputs, gates)
        return (outputs, gates) if return_gates else outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, inputs, training=None, return_gates=False):
        outputs = super().compute_output_spec(inputs, training=training)
        if not _checks.check_bool("return_gates", return_gates):
            return outputs
        shapes = self.compute_gates_shape(tuple(inputs.shape))
        if shapes and isinstance(shapes[0], tuple):  # several gates
            gates = tuple(keras.KerasTensor(s, dtype=outputs.dtype) for s in shapes)
        else:
            gates = keras.KerasTensor(shapes, dtype=outputs.dtype)
        return outputs, gates

    def deprecated_inspection(self, name: str, inputs, training=None):
        """The gates of ``inputs`` for a deprecated inspection method ``name``
        (through ``__call__``, with ``return_gates=True``), after a
        ``DeprecationWarning``."""
        warnings.warn(
            f"{type(self).__name__}.{name}() is deprecated: call the layer with "
            "`return_gates=True` (`outputs, gates = layer(x, return_gates=True)`), "
            "whose gates broadcast against the input.",
            DeprecationWarning,
            stacklevel=3,
        )
        return self(inputs, training=training, return_gates=True)[1]

    def squeezed_channel_gates(self, gates):
        """Channel gates as :meth:`channel_gates` shapes them, back to
        ``(batch, channels)``: what the deprecated ``gates()`` returned."""
        return keras.ops.squeeze(gates, axis=self.spatial_axes(len(gates.shape)))
