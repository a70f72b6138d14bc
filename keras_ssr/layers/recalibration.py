"""The follow-up's non-fractal recalibration layers: scSE, SRM and FCA.

Class names and arguments are those of the authors' follow-up
(``miguelmartins/multifractal-recalibration``), so that its code ports.
Where the follow-up departs from the paper it implements, its behaviour is
the default and the paper's is an option (see ``docs/recalibration.md``).
"""

from __future__ import annotations

from keras import ops

from keras_ssr import _checks, distributed
from keras_ssr import ops as ssr_ops
from keras_ssr.layers._base import Recalibration, register
from keras_ssr.layers.attention import ChannelGate, SqueezeExcite
from keras_ssr.layers.normalization import add_scaled, bn_variables, map_batch_norm
from keras_ssr.ops.recalibration import BASES, RENAMED_BASES

__all__ = [
    "FrequencyChannelAttention",
    "SpatialSqueezeExcite",
    "StyleBasedRecalibration",
]

COMBINES = ("max", "add")
STYLE_WEIGHTS = ("shared", "per_channel")


@register
class SpatialSqueezeExcite(ChannelGate):
    """scSE: concurrent channel and spatial squeeze-and-excitation.

    Two branches on the same input ``x``:

    - channel (cSE, as :class:`SqueezeExcite`):
      ``x * sigmoid(W2 relu(W1 mean(x) + b1) + b2)``;
    - spatial (sSE): ``x * sigmoid(conv_1x1(x))``, one ``1 x 1``
      convolution from the channels to a single map (``spatial.kernel`` of
      shape ``(1, ..., 1, channels, 1)``, ``spatial.bias`` of shape ``(1,)``);

    combined by an elementwise maximum (``combine="max"``, the follow-up's
    code) or by their sum (``combine="add"``, Roy et al.'s paper and
    segmentation_models.pytorch).

    Args:
        r: reduction ratio of the channel branch; ``channels // r >= 1``.
        combine: ``"max"`` (default, the follow-up) or ``"add"`` (the paper).
        data_format: ``"channels_last"`` or ``"channels_first"``; ``None``
            takes ``keras.config.image_data_format()``.
        **kwargs: base ``Layer`` arguments.

    Call arguments:
        inputs: floating-point tensor with 1 to 3 spatial axes.
        return_gates: also return the gates, ``(outputs, (channel,
            spatial))``: the channel branch's ``(batch, 1, .., 1, channels)``
            and the spatial branch's ``(batch, *spatial, 1)`` (channels
            first: ``(batch, channels, 1, .., 1)`` and ``(batch, 1,
            *spatial)``), with ``outputs == max(x * channel, x * spatial)``
            (``combine="max"``) or their sum (``"add"``).

    Input shape:
        ``(batch, *spatial, channels)`` or ``(batch, channels, *spatial)``,
        1 to 3 spatial axes.

    Output shape:
        Same as the input.

    Raises:
        ValueError: for ``r < 1`` or above the channel count, an unknown
            ``combine`` or ``data_format``, or an input of the wrong rank.
        TypeError: for a non-integer ``r`` or non-float inputs.

    Example:
        >>> SpatialSqueezeExcite(r=2)(keras.random.uniform((2, 8, 8, 4))).shape
        (2, 8, 8, 4)

    References:
        Roy et al., "Recalibrating Fully Convolutional Networks with Spatial
        and Channel 'Squeeze and Excitation' Blocks", IEEE TMI 2019.
    """

    descriptor = SqueezeExcite.descriptor
    config_keys = (*ChannelGate.config_keys, "combine")

    def __init__(self, r, combine="max", data_format=None, **kwargs):
        super().__init__(r=r, data_format=data_format, **kwargs)
        self.combine = _checks.check_choice("combine", combine, COMBINES)
        self.spatial_kernel = None
        self.spatial_bias = None

    def build_descriptor(self, input_shape):
        channels = input_shape[self.channel_axis]
        rank = len(input_shape) - 2
        self.spatial_kernel = self.add_weight(
            name="spatial_kernel",
            shape=(1,) * rank + (channels, 1),
            initializer="glorot_uniform",
        )
        self.spatial_bias = self.add_weight(
            name="spatial_bias", shape=(1,), initializer="zeros"
        )

    def compute_gates(self, inputs, training=None):
        """``(channel gates, spatial gates)``: the channel branch's, shaped to
        broadcast (:class:`ChannelGate`), and ``sigmoid(conv_1x1(x))``, one
        channel, ``(batch, *spatial, 1)`` (channels first: ``(batch, 1,
        *spatial)``)."""
        channel = super().compute_gates(inputs, training)
        size = self.spatial_kernel.shape[-2]
        kernel = ops.reshape(self.spatial_kernel, (size, 1))
        first = self.data_format == "channels_first"
        x = ops.moveaxis(inputs, 1, -1) if first else inputs
        logits = ops.matmul(x, ops.cast(kernel, x.dtype))
        spatial = ops.sigmoid(logits + ops.cast(self.spatial_bias, x.dtype))
        return channel, ops.moveaxis(spatial, -1, 1) if first else spatial

    def apply_gates(self, inputs, gates):
        channel, spatial = inputs * gates[0], inputs * gates[1]
        if self.combine == "add":
            return channel + spatial
        # As the original's reduce_max over a stack: ties share the gradient.
        return ops.max(ops.stack([channel, spatial], axis=-1), axis=-1)

    def compute_gates_shape(self, input_shape):
        spatial = list(input_shape)
        spatial[self.channel_axis] = 1
        return super().compute_gates_shape(input_shape), tuple(spatial)

    def gates(self, inputs, training=None):
        """Deprecated: ``layer(x, return_gates=True)[1][0]``. The channel
        branch's gates, ``(batch, channels)``."""
        gates = self.deprecated_inspection("gates", inputs, training)
        return self.squeezed_channel_gates(gates[0])

    def spatial_gates(self, inputs):
        """Deprecated: ``layer(x, return_gates=True)[1][1]``. The spatial gates
        ``sigmoid(conv_1x1(x))``, one channel, in (0, 1)."""
        return self.deprecated_inspection("spatial_gates", inputs)[1]

    def semantic_variables(self) -> dict:
        names = super().semantic_variables()
        names["spatial.kernel"] = self.spatial_kernel
        names["spatial.bias"] = self.spatial_bias
        return names


@register
class StyleBasedRecalibration(Recalibration):
    """SRM: channels gated by their style (mean and standard deviation).

    Per channel ``c``: the spatial mean ``m_c`` and ``s_c = sqrt(var_c +
    1e-12)`` (biased variance) of each sample
    (:func:`keras_ssr.ops.style_pool`), combined as
    ``z_c = k_0 m_c + k_1 s_c``, batch-normalised over the channels
    (momentum 0.99, epsilon 1e-3), and ``x * sigmoid(BN(z))``.

    Args:
        style_weights: ``"shared"`` (default, the follow-up's code): one
            ``(2, 1)`` ``style.kernel`` for all channels, Glorot-uniform
            initialised like the follow-up's ``Dense(1)``;
            ``"per_channel"`` (the SRM paper's channel-wise fully connected
            layer): a ``(2, channels)`` kernel, zero-initialised as in the
            SRM authors' code.
        data_format: ``"channels_last"`` or ``"channels_first"``.
        synchronized: under data parallelism (``tf.distribute``,
            ``torch.distributed``), whether the batch normalisation's
            moments over the styles are taken over the global batch (the
            default; what one device computes) or per replica (``False``:
            the follow-up's code under ``MirroredStrategy``). See
            :mod:`keras_ssr.distributed`.
        **kwargs: base ``Layer`` arguments.

    Call arguments:
        inputs: floating-point tensor with 1, 2 or 3 spatial axes.
        training: whether the batch normalisation uses batch statistics.
        return_gates: also return the channel gates, ``(outputs, gates)``,
            the gates ``(batch, 1, .., 1, channels)`` (channels first:
            ``(batch, channels, 1, .., 1)``) with ``outputs == x * gates``.

    Input shape:
        ``(batch, *spatial, channels)`` or ``(batch, channels, *spatial)``.

    Output shape:
        Same as the input.

    Raises:
        ValueError: for an unknown ``style_weights`` or ``data_format``, or
            an input of the wrong rank.
        TypeError: for a non-bool ``synchronized`` or non-float inputs.

    Example:
        >>> StyleBasedRecalibration()(keras.random.uniform((2, 8, 8, 4))).shape
        (2, 8, 8, 4)

    References:
        Lee et al., "SRM: A Style-based Recalibration Module for
        Convolutional Neural Networks", ICCV 2019.
    """

    config_keys = ("style_weights", "synchronized")

    def __init__(
        self, style_weights="shared", data_format=None, synchronized=True, **kwargs
    ):
        super().__init__(data_format=data_format, **kwargs)
        self.style_weights = _checks.check_choice(
            "style_weights", style_weights, STYLE_WEIGHTS
        )
        self.synchronized = _checks.check_bool("synchronized", synchronized)
        self.kernel = None
        self.bn = map_batch_norm(self, axis=-1)

    def build(self, input_shape):
        channels = self.check_input_shape(input_shape)
        shared = self.style_weights == "shared"
        self.kernel = self.add_weight(
            name="style_kernel",
            shape=(2, 1) if shared else (2, channels),
            initializer="glorot_uniform" if shared else "zeros",
            autocast=False,
        )
        self.bn.build((input_shape[0], channels))
        self.lock_input_spec(input_shape, channels)

    def compute_gates(self, inputs, training=None):
        """The channel gates ``sigmoid(BN(z))``, shaped to broadcast."""
        gates = self._style_gates(inputs, training)
        return self.channel_gates(ops.cast(gates, inputs.dtype), len(inputs.shape))

    def gates(self, inputs, training=None):
        """Deprecated: ``layer(x, return_gates=True)[1]``, whose gates broadcast
        against ``x``. The channel gates ``sigmoid(BN(z))``, ``(batch,
        channels)``."""
        gates = self.deprecated_inspection("gates", inputs, training)
        return self.squeezed_channel_gates(gates)

    def _style_gates(self, inputs, training):
        """``sigmoid(BN(z))``, ``(batch, channels)``."""
        mean, std = ssr_ops.style_pool(inputs, self.data_format)
        styles = ops.stack([mean, std], axis=1)  # (batch, 2, channels)
        kernel = ops.expand_dims(ops.cast(self.kernel, mean.dtype), 0)  # (1, 2, C|1)
        # An empty batch has no batch statistics: the moving ones, unchanged
        # (as keras_ssr's BatchNormalization does).
        empty = mean.shape[0] == 0 and not distributed.spans_replicas(
            (0,), self.synchronized
        )
        if not (training and self.bn.trainable) or empty:
            return ops.sigmoid(self.bn(ops.sum(styles * kernel, axis=1)))
        # Batch statistics: the normalised style does not change when every
        # channel's style is shifted, so normalise the style of the centred
        # statistics. Its gradient w.r.t. the kernel is then a sum of small,
        # centred terms; from m and s themselves (s is nearly the same for
        # every sample) float32 loses ~1e-4 of it to cancellation. The
        # centres are the batch means, over the global batch when the BN's
        # moments are (every replica must shift by the same amount); as the
        # output does not depend on them, they carry no gradient.
        fixed = ops.stop_gradient(styles)
        if distributed.spans_replicas((0,), self.synchronized):
            centre = ssr_ops.centered_moments(fixed, axes=(0,), synchronized=True)[0]
        else:
            centre = ssr_ops.accurate_mean(fixed, 0, keepdims=True)
        style = ops.sum((styles - centre) * kernel, axis=1)
        gates = ops.sigmoid(self.bn(style, training=True))
        # The moving mean must follow the uncentred style's batch mean.
        shift = ops.reshape(ops.sum(centre * ops.stop_gradient(kernel), axis=1), (-1,))
        add_scaled(self.bn.moving_mean, shift, 1.0 - self.bn.momentum)
        return gates

    def semantic_variables(self) -> dict:
        names = {"style.kernel": self.kernel}
        names.update(bn_variables(self.bn))
        return names


@register
class FrequencyChannelAttention(ChannelGate):
    """FCA (FcaNet): channels gated by low-frequency cosine components.

    The channels are split into ``low_freq**d`` contiguous groups (``d`` the
    number of spatial axes); group ``g`` is weighted by its separable cosine
    basis and summed over space (:func:`keras_ssr.ops.frequency_pool`),
    giving one value per channel, which drives the Squeeze-and-Excitation
    MLP: ``x * sigmoid(W2 relu(W1 freq(x) + b1) + b2)``.

    Only the ``low_freq`` one-dimensional bases of every axis are computed,
    for any static map size (the follow-up's code needs a square map and
    builds an ``H x H x C x C`` array); on square 2-D maps the result is the
    follow-up's exactly.

    Args:
        r: reduction ratio; ``channels // r >= 1``.
        low_freq: frequencies per spatial axis; the channel count must be
            divisible by ``low_freq**d``.
        basis: ``"transposed_dct"`` (default, the follow-up's code:
            ``cos(pi i (u + 1/2) / H)``, the transposed DCT-II matrix:
            position and frequency swapped, so its lowest basis is not
            constant; ``"followup"``, its former name, is still accepted) or
            ``"dct"`` (FcaNet's DCT-II, ``cos(pi u (i + 1/2) / H)``, whose
            lowest basis is constant: group 0 sees ``H * W`` times the
            average pooling).
        data_format: ``"channels_last"`` or ``"channels_first"``.
        **kwargs: base ``Layer`` arguments.

    Call arguments:
        inputs: floating-point tensor with 1 to 3 spatial axes.
        return_gates: also return the channel gates, ``(outputs, gates)``,
            the gates ``(batch, 1, .., 1, channels)`` (channels first:
            ``(batch, channels, 1, .., 1)``) with ``outputs == x * gates``.

    Input shape:
        ``(batch, *spatial, channels)`` or ``(batch, channels, *spatial)``
        with 1 to 3 spatial axes of static size.

    Output shape:
        Same as the input.

    Raises:
        ValueError: for ``low_freq < 1``, a channel count not divisible by
            ``low_freq**d``, unknown spatial sizes, an unknown ``basis`` or
            ``data_format``, ``r`` out of range, or a wrong rank.
        TypeError: for non-integer ``r``/``low_freq`` or non-float inputs.

    Example:
        >>> layer = FrequencyChannelAttention(r=2, low_freq=2)
        >>> layer(keras.random.uniform((2, 8, 8, 8))).shape
        (2, 8, 8, 8)

    References:
        Qin et al., "FcaNet: Frequency Channel Attention Networks",
        ICCV 2021.
    """

    config_keys = (*ChannelGate.config_keys, "low_freq", "basis")

    def __init__(
        self, r=2, low_freq=4, basis="transposed_dct", data_format=None, **kwargs
    ):
        super().__init__(r=r, data_format=data_format, **kwargs)
        self.low_freq = _checks.check_int("low_freq", low_freq, 1)
        self.basis = _checks.check_choice("basis", basis, BASES, RENAMED_BASES)

    def build_descriptor(self, input_shape):
        spatial = [input_shape[a] for a in self.spatial_axes(len(input_shape))]
        if any(size is None for size in spatial):
            raise ValueError(
                "FrequencyChannelAttention needs static spatial sizes to build "
                f"its cosine bases. Received: input_shape={tuple(input_shape)}"
            )
        ssr_ops.frequency_groups(
            input_shape[self.channel_axis], self.low_freq, len(spatial)
        )

    def descriptor(self, inputs, training=None):
        return ssr_ops.frequency_pool(
            inputs, self.low_freq, self.basis, self.data_format
        )
