"""Channel attention: Squeeze-and-Excitation and SSR."""

from __future__ import annotations

import keras
from keras import ops

from keras_ssr import _checks
from keras_ssr import ops as ssr_ops
from keras_ssr.layers._base import Recalibration, register
from keras_ssr.layers.singularity import (
    LocalSingularityStrength,
    LocalSingularityStrengthXu,
    NormalizedMap,
)

__all__ = [
    "ChannelGate",
    "MapGate",
    "SingularityStrengthRecalibration",
    "SingularityStrengthRecalibrationXu",
    "SqueezeExcite",
]


class ChannelGate(Recalibration):
    """Base of the excitation-style channel attention layers.

    A per-channel descriptor ``d`` of shape ``(batch, channels)`` (from
    :meth:`descriptor`) drives ``g = sigmoid(W2 relu(W1 d + b1) + b2)``, with
    ``W1`` of shape ``(channels, channels // r)`` (the ``squeeze`` Dense) and
    ``W2`` of shape ``(channels // r, channels)`` (the ``excite`` Dense); the
    output is the input with every channel multiplied by its gate. Works on
    1-D, 2-D and 3-D inputs in either data format. ``layer(x,
    return_gates=True)`` returns ``(outputs, gates)``, the gates shaped
    ``(batch, 1, .., 1, channels)`` (channels first: ``(batch, channels, 1,
    .., 1)``), ``outputs == x * gates`` (see
    :class:`~keras_ssr.layers.Recalibration`).
    """

    config_keys = ("r",)

    def __init__(self, r, data_format=None, **kwargs):
        super().__init__(data_format=data_format, **kwargs)
        self.r = _checks.check_int("r", r, 1)
        self.squeeze = None
        self.excite = None

    def build(self, input_shape):
        channels = self.check_input_shape(input_shape)
        units = channels // self.r
        if units < 1:
            raise ValueError(
                f"`r` must leave at least one hidden unit: {channels} channels "
                f"// r={self.r} is {units}. Use r <= {channels}. "
                f"Received: r={self.r}, input_shape={tuple(input_shape)}"
            )
        self.squeeze = keras.layers.Dense(
            units, activation="relu", name="squeeze", dtype=self.dtype_policy
        )
        self.excite = keras.layers.Dense(
            channels, activation="sigmoid", name="excite", dtype=self.dtype_policy
        )
        self.squeeze.build((None, channels))
        self.excite.build((None, units))
        self.build_descriptor(input_shape)
        self.lock_input_spec(input_shape, channels)

    def build_descriptor(self, input_shape):
        """Builds the weights of :meth:`descriptor`, if any."""

    def descriptor(self, inputs, training=None):
        """The ``(batch, channels)`` statistic that drives the gates."""
        raise NotImplementedError

    def compute_gates(self, inputs, training=None):
        gates = self.excite(self.squeeze(self.descriptor(inputs, training)))
        return self.channel_gates(ops.cast(gates, inputs.dtype), len(inputs.shape))

    def gates(self, inputs, training=None):
        """Deprecated: ``layer(x, return_gates=True)[1]``, whose gates broadcast
        against ``x``. The channel gates, ``(batch, channels)``, each in
        ``(0, 1)``."""
        gates = self.deprecated_inspection("gates", inputs, training)
        return self.squeezed_channel_gates(gates)

    def semantic_variables(self) -> dict:
        return {
            "squeeze.kernel": self.squeeze.kernel,
            "squeeze.bias": self.squeeze.bias,
            "excite.kernel": self.excite.kernel,
            "excite.bias": self.excite.bias,
        }


@register
class SqueezeExcite(ChannelGate):
    """Squeeze-and-Excitation: channels gated by their global average.

    ``x * sigmoid(W2 relu(W1 mean(x) + b1) + b2)``, the mean taken over the
    spatial axes (computed in float32 under mixed precision).

    Args:
        r: reduction ratio; the hidden layer has ``channels // r >= 1`` units.
        data_format: ``"channels_last"`` or ``"channels_first"``; ``None``
            takes ``keras.config.image_data_format()``.
        **kwargs: base ``Layer`` arguments.

    Call arguments:
        inputs: floating-point tensor with 1, 2 or 3 spatial axes.
        return_gates: also return the channel gates, ``(outputs, gates)``,
            the gates ``(batch, 1, .., 1, channels)`` (channels first:
            ``(batch, channels, 1, .., 1)``) with ``outputs == x * gates``.

    Input shape:
        ``(batch, *spatial, channels)`` or ``(batch, channels, *spatial)``.

    Output shape:
        Same as the input.

    Raises:
        ValueError: for ``r < 1``, an ``r`` above the channel count, an
            unknown ``data_format`` or an input of the wrong rank.
        TypeError: for a non-integer ``r`` or non-float inputs.

    Example:
        >>> SqueezeExcite(r=2)(keras.random.uniform((2, 16, 16, 8))).shape
        (2, 16, 16, 8)

    References:
        Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018.
    """

    def descriptor(self, inputs, training=None):
        pooled = ops.cast(inputs, _checks.wide_float(inputs.dtype))
        return ssr_ops.accurate_mean(pooled, self.spatial_axes(len(inputs.shape)))


class MapGate(ChannelGate):
    """A :class:`ChannelGate` driven by the spatial mean of a map sub-layer.

    Every ``MapGate`` has ``alpha``: the sub-layer that computes the map
    (the singularity strength, batch-normalised) whose spatial mean drives
    the gates; ``layer.alpha(x, training=False)`` reads it, in ``x``'s
    shape. :func:`keras_ssr.plot.singularity_maps` draws it for these
    layers (SSR, SSR-Xu, Monofractal). Subclasses set ``self.alpha`` (a
    :class:`~keras_ssr.layers.singularity.NormalizedMap`) in ``__init__``;
    its weights are named ``alpha.<name>``.
    """

    #: The map sub-layer (set by subclasses).
    alpha: NormalizedMap

    def build_descriptor(self, input_shape):
        self.alpha.build(input_shape)

    def descriptor(self, inputs, training=None):
        return self.alpha.pooled(inputs, training=training)

    def semantic_variables(self) -> dict:
        names = super().semantic_variables()
        for name, variable in self.alpha.semantic_variables().items():
            names["alpha." + name] = variable
        return names


@register
class SingularityStrengthRecalibration(MapGate):
    """SSR: channels gated by the average of their singularity-strength map.

    :class:`LocalSingularityStrength` (the ``alpha`` sub-layer: min-max
    scaling, dyadic box sums, log-log slope, batch normalisation) is
    averaged over the spatial axes and drives the Squeeze-and-Excitation MLP
    whose sigmoid gates rescale the input channels::

        x * sigmoid(W2 relu(W1 mean(BN(alpha(x))) + b1) + b2)

    Args:
        r: reduction ratio; the hidden layer has ``channels // r >= 1`` units.
        max_scale: number of dyadic scales ``2 .. 2**max_scale``, in
            ``[2, 16]``.
        data_format: ``"channels_last"`` or ``"channels_first"``.
        scaling: ``"batch"`` (the original: min-max bounds over the batch)
            or ``"sample"`` (per sample, so each output depends on its own
            sample only).
        synchronized: under data parallelism, whether ``alpha``'s batch
            statistics (min-max bounds, BN moments) are global (default)
            or per replica; see :class:`LocalSingularityStrength`.
        **kwargs: base ``Layer`` arguments.

    Call arguments:
        inputs: floating-point tensor with 1, 2 or 3 spatial axes.
        training: whether the batch normalisation of ``alpha`` uses batch
            statistics.
        return_gates: also return the channel gates, ``(outputs, gates)``,
            the gates ``(batch, 1, .., 1, channels)`` (channels first:
            ``(batch, channels, 1, .., 1)``) with ``outputs == x * gates``.

    Input shape:
        ``(batch, *spatial, channels)`` or ``(batch, channels, *spatial)``.

    Output shape:
        Same as the input.

    Raises:
        ValueError / TypeError: as :class:`SqueezeExcite` and
            :class:`LocalSingularityStrength`.

    Example:
        >>> ssr = SingularityStrengthRecalibration(r=2, max_scale=3)
        >>> ssr(keras.random.uniform((2, 32, 32, 8))).shape
        (2, 32, 32, 8)
        >>> y, gates = ssr(keras.random.uniform((2, 32, 32, 8)), return_gates=True)
        >>> gates.shape
        (2, 1, 1, 8)

    References:
        Martins et al., "Singularity Strength Recalibration of Fully
        Convolutional Neural Networks for Biomedical Imaging".
    """

    config_keys = ("r", "max_scale", "scaling", "synchronized")

    def __init__(
        self,
        r,
        max_scale,
        data_format=None,
        scaling="batch",
        synchronized=True,
        **kwargs,
    ):
        super().__init__(r=r, data_format=data_format, **kwargs)
        self.alpha = self.sublayer(
            LocalSingularityStrength,
            max_scale,
            scaling=scaling,
            synchronized=synchronized,
            name="alpha",
        )
        self.max_scale = self.alpha.max_scale
        self.scaling = self.alpha.scaling
        self.synchronized = self.alpha.synchronized


@register
class SingularityStrengthRecalibrationXu(MapGate):
    """SSR driven by Xu et al.'s learnable singularity strength (2-D only).

    As :class:`SingularityStrengthRecalibration`, with the ``alpha``
    sub-layer a :class:`~keras_ssr.layers.LocalSingularityStrengthXu`
    (learnable measures of sides ``1 .. local_scale``) instead of the fixed
    dyadic box sums. Not part of the original code; the model registry
    offers it as ``"ssr_xu"``.

    Args:
        r: reduction ratio; the hidden layer has ``channels // r >= 1`` units.
        local_scale: number of learnable measures, at least 2.
        with_bn: whether the map is batch-normalised before pooling.
        data_format: ``"channels_last"`` or ``"channels_first"``.
        scaling: ``"batch"`` or ``"sample"`` min-max bounds.
        synchronized: under data parallelism, whether ``alpha``'s batch
            statistics are global (default) or per replica.
        **kwargs: base ``Layer`` arguments.

    Call arguments:
        inputs: floating-point tensor ``(batch, height, width, channels)``
            (or channels first).
        training: whether the batch normalisation of ``alpha`` uses batch
            statistics.
        return_gates: also return the channel gates, as
            :class:`SingularityStrengthRecalibration`.

    Input shape:
        ``(batch, height, width, channels)`` or channels first.

    Output shape:
        Same as the input.

    Example:
        >>> layer = SingularityStrengthRecalibrationXu(r=2, local_scale=4)
        >>> layer(keras.random.uniform((2, 16, 16, 8))).shape
        (2, 16, 16, 8)
    """

    config_keys = ("r", "local_scale", "with_bn", "scaling", "synchronized")

    ranks = (4,)

    def __init__(
        self,
        r,
        local_scale=6,
        with_bn=True,
        data_format=None,
        scaling="batch",
        synchronized=True,
        **kwargs,
    ):
        super().__init__(r=r, data_format=data_format, **kwargs)
        self.alpha = self.sublayer(
            LocalSingularityStrengthXu,
            local_scale,
            with_bn=with_bn,
            scaling=scaling,
            synchronized=synchronized,
            name="alpha",
        )
        self.local_scale = self.alpha.local_scale
        self.with_bn = self.alpha.with_bn
        self.scaling = self.alpha.scaling
        self.synchronized = self.alpha.synchronized
