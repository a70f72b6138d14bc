"""The follow-up's fractal layers: mono- and multifractal recalibration.

``MonofractalRecalibration`` is SSR under the follow-up's name;
``MultifractalRecalibration`` gates every pixel by a soft histogram of
learnably weighted singularity strengths.
"""

from __future__ import annotations

import warnings

import keras
from keras import ops

from keras_ssr import _checks
from keras_ssr import ops as ssr_ops
from keras_ssr.layers._base import MapLayer, Recalibration, register
from keras_ssr.layers.attention import SingularityStrengthRecalibration
from keras_ssr.layers.normalization import bn_variables, map_batch_norm
from keras_ssr.layers.singularity import LocalSingularityStrength

__all__ = [
    "MonofractalRecalibration",
    "MultifractalRecalibration",
    "SoftHistogram",
    "SoftHistogramLayer",
    "WeightedLocalSingularityStrength",
]


def _prefixed(prefix: str, layer) -> dict:
    return {prefix + k: v for k, v in layer.semantic_variables().items()}


@register
class MonofractalRecalibration(SingularityStrengthRecalibration):
    """The follow-up's name for SSR (:class:`SingularityStrengthRecalibration`).

    Same arguments, weights (``alpha.bn.*``, ``squeeze.*``, ``excite.*``)
    and maths; registered under its own name so that configs saved with
    either name reload as that class.

    Example:
        >>> layer = MonofractalRecalibration(r=2, max_scale=3)
        >>> layer(keras.random.uniform((2, 16, 16, 4))).shape
        (2, 16, 16, 4)
    """


@register
class WeightedLocalSingularityStrength(LocalSingularityStrength):
    """Singularity strength with a learnable weight per scale, batch-normalised.

    Min-max scaling onto ``[1, 256]``, box sums of sides ``2 .. 2**max_scale``
    as in :class:`~keras_ssr.layers.LocalSingularityStrength`, then the
    follow-up's weighted slope
    ``sum_j s_j (L_j - mean L)(l_j - mean l) / sum_j s_j (l_j - mean l)**2``
    with ``s_j = sigmoid(ols.weights[j])``, ``L_j = log(measure_j + 1e-7)``,
    ``l_j = log(2**j)`` and unweighted means
    (:func:`keras_ssr.ops.weighted_singularity_strength`), followed by
    ``BatchNormalization(momentum=0.99, epsilon=1e-3)`` over the channels.
    Computed in float32 (or wider) under any dtype policy.

    Args:
        max_scale: number of dyadic scales, in ``[2, 16]`` (one scale leaves
            no slope: the follow-up returns NaN).
        data_format: ``"channels_last"`` or ``"channels_first"``.
        scaling: ``"batch"`` (the follow-up: min-max bounds over the batch)
            or ``"sample"`` (per sample).
        synchronized: global (default) or per-replica batch statistics
            (min-max bounds, BN moments) under data parallelism, as
            :class:`~keras_ssr.layers.LocalSingularityStrength`; ``False``
            is the follow-up's code under ``MirroredStrategy``.
        **kwargs: base ``Layer`` arguments.

    Call arguments:
        inputs: floating-point tensor with 1, 2 or 3 spatial axes.
        training: whether the batch normalisation uses batch statistics.

    Output shape:
        Same as the input.

    Raises:
        ValueError: for ``max_scale`` outside ``[2, 16]``, an unknown
            ``scaling`` or ``data_format``, or an input of the wrong rank.
        TypeError: for a non-integer ``max_scale``, a non-bool
            ``synchronized`` or non-float inputs.

    Example:
        >>> layer = WeightedLocalSingularityStrength(max_scale=3)
        >>> layer(keras.random.uniform((2, 16, 16, 4))).shape
        (2, 16, 16, 4)
    """

    def build(self, input_shape):
        self.check_input_shape(input_shape)
        self.ols_weights = self.add_weight(
            name="ols_weights",
            shape=(self.max_scale,),
            initializer="glorot_uniform",
            autocast=False,
        )
        super().build(input_shape)

    def map(self, inputs):
        return ssr_ops.weighted_singularity_strength(
            inputs,
            self.ols_weights,
            self.max_scale,
            self.scaling,
            self.data_format,
            self.synchronized,
        )

    def semantic_variables(self) -> dict:
        names = {"ols.weights": self.ols_weights}
        names.update(bn_variables(self.bn))
        return names


@register
class SoftHistogram(MapLayer):
    """A soft histogram: every entry softly assigned to ``K`` learnable anchors.

    For an entry ``a`` of channel ``c`` and anchor ``k``::

        softmax_k(-relu(widths[c', k]) * (a - anchors[c', k])**2)

    with ``c' = c`` (``per_channel=True``) or ``0`` (one row shared by all
    channels, the default), then ``BatchNormalization`` over the new ``K``
    axis (statistics over every other axis). Before that normalisation the
    ``K`` values of an entry are positive and sum to 1
    (:func:`keras_ssr.ops.soft_histogram`). ``anchors`` and ``widths`` start
    uniform in ``[-0.05, 0.05]``, as tf.keras' ``"uniform"`` initialiser of
    the follow-up. ``SoftHistogramLayer`` (the follow-up's name) is an alias.

    Args:
        num_anchors: number of anchors ``K``, at least 2.
        per_channel: one row of anchors and widths per channel (``True``) or
            one shared row (``False``).
        data_format: ``"channels_last"`` or ``"channels_first"`` (where the
            channel axis is, for ``per_channel``).
        synchronized: under data parallelism, whether the batch
            normalisation's moments are global (default) or per replica;
            see :class:`WeightedLocalSingularityStrength`.
        **kwargs: base ``Layer`` arguments.

    Call arguments:
        inputs: floating-point tensor with 1, 2 or 3 spatial axes.
        training: whether the batch normalisation uses batch statistics.

    Output shape:
        The input shape with a new last axis of size ``K``.

    Raises:
        ValueError: for ``num_anchors < 2``, an unknown ``data_format``, or
            an input of the wrong rank.
        TypeError: for a non-integer ``num_anchors``, a non-bool
            ``per_channel`` or ``synchronized``, or non-float inputs.

    Example:
        >>> SoftHistogram(num_anchors=8)(keras.random.uniform((2, 8, 8, 3))).shape
        (2, 8, 8, 3, 8)

    References:
        Xu et al., "Encoding spatial distribution of convolutional features
        for texture representation", NeurIPS 2021 (point grouping block).
    """

    config_keys = ("num_anchors", "per_channel", "synchronized")

    def __init__(
        self,
        num_anchors,
        per_channel=False,
        data_format=None,
        synchronized=True,
        **kwargs,
    ):
        super().__init__(data_format=data_format, **kwargs)
        self.num_anchors = _checks.check_int("num_anchors", num_anchors, 2)
        self.per_channel = _checks.check_bool("per_channel", per_channel)
        self.synchronized = _checks.check_bool("synchronized", synchronized)
        self.anchors = None
        self.widths = None
        self.bn = map_batch_norm(self, axis=-1)

    def build(self, input_shape):
        channels = self.check_input_shape(input_shape)
        shape = (channels if self.per_channel else 1, self.num_anchors)
        init = keras.initializers.RandomUniform(-0.05, 0.05)
        self.anchors = self.add_weight(
            name="anchors", shape=shape, initializer=init, autocast=False
        )
        self.widths = self.add_weight(
            name="widths", shape=shape, initializer=init, autocast=False
        )
        self.bn.build((*input_shape, self.num_anchors))
        self.lock_input_spec(input_shape, channels)

    def histogram(self, inputs):
        """Deprecated: ``keras_ssr.ops.soft_histogram(x, layer.anchors,
        layer.widths, layer.data_format)``. The soft assignments before the
        batch normalisation, float32 (builds the layer by calling it, in
        inference, if it is not built)."""
        warnings.warn(
            "SoftHistogram.histogram() is deprecated: use keras_ssr.ops."
            "soft_histogram(x, layer.anchors, layer.widths, layer.data_format).",
            DeprecationWarning,
            stacklevel=2,
        )
        if not self.built:
            self(inputs, training=False)
        return self._assignments(inputs)

    def _assignments(self, inputs):
        return ssr_ops.soft_histogram(
            inputs, self.anchors, self.widths, self.data_format
        )

    def call(self, inputs, training=None):
        self.check_inputs(inputs)
        histogram = self._assignments(inputs)
        return ops.cast(self.bn(histogram, training=training), self.compute_dtype)

    def _gate(self, inputs, training=None):
        """``sigmoid(sum_k relu(self(inputs, training)[..., k]))``, float32,
        for :class:`MultifractalRecalibration`, which builds this layer.

        The multifractal gate, input-shaped; the normalisation's moving
        statistics move as in a call. On JAX it is one op that recomputes
        the ``K`` maps of the histogram wherever they are read and never
        keeps them (:func:`keras_ssr.ops.histogram_gate`): XLA then moves a
        few maps of the input's size, not ``K`` times as many. Where every
        op is a kernel launch (TensorFlow graphs, torch eager) the layer's
        call, with the fused batch-norm kernels, launches fewer.
        """
        if keras.backend.backend() != "jax":
            counts = self(inputs, training=training)
            return ops.sigmoid(ops.sum(ops.relu(counts), axis=-1))
        bn = self.bn
        x = ops.cast(inputs, _checks.wide_float(inputs.dtype))
        batch = bn._batch_statistics(x, range(len(x.shape)), training)
        gate, mean, variance = ssr_ops.histogram_gate(
            x,
            self.anchors,
            self.widths,
            bn.gamma,
            bn.beta,
            None if batch else (bn.moving_mean, bn.moving_variance),
            bn.epsilon,
            self.data_format,
            self.synchronized,
        )
        if batch:
            bn.update_moving_statistics(mean, variance)
        return gate

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.num_anchors)

    def semantic_variables(self) -> dict:
        names = {"anchors": self.anchors, "widths": self.widths}
        names.update(bn_variables(self.bn))
        return names


#: The follow-up's name for :class:`SoftHistogram`.
SoftHistogramLayer = SoftHistogram


@register
class MultifractalRecalibration(Recalibration):
    """Multifractal recalibration: an additive, per-pixel gate.

    ``y = x + sigmoid(sum_k relu(h_k))`` with ``h`` the batch-normalised
    :class:`SoftHistogram` (``histogram``) of the
    :class:`WeightedLocalSingularityStrength` map (``alpha``) of ``x``. No
    pooling: every pixel of every channel gets its own gate, in ``(0, 1)``.

    Args:
        max_scale: number of dyadic scales of ``alpha``, in ``[2, 16]``.
        k: number of anchors of the soft histogram, at least 2.
        per_channel: whether the histogram has one row of anchors per
            channel.
        data_format: ``"channels_last"`` or ``"channels_first"``.
        scaling: ``"batch"`` (the follow-up) or ``"sample"`` min-max bounds.
        synchronized: under data parallelism, whether the batch statistics
            of ``alpha`` (min-max bounds, BN moments) and of ``histogram``
            (BN moments) are global (default) or per replica; see
            :class:`WeightedLocalSingularityStrength`.
        **kwargs: base ``Layer`` arguments.

    Call arguments:
        inputs: floating-point tensor with 1, 2 or 3 spatial axes.
        training: whether both batch normalisations use batch statistics.
        return_gates: also return the per-pixel gates, ``(outputs, gates)``,
            the gates of the input's shape, in ``[1/2, 1)``, with
            ``outputs == x + gates``. ``layer.alpha(x)`` reads the weighted
            singularity map, ``layer.histogram(layer.alpha(x))`` its
            normalised soft histogram.

    Output shape:
        Same as the input.

    Raises:
        ValueError / TypeError: as :class:`WeightedLocalSingularityStrength`
            and :class:`SoftHistogram`.

    Example:
        >>> layer = MultifractalRecalibration(max_scale=3, k=8, per_channel=False)
        >>> layer(keras.random.uniform((2, 16, 16, 4))).shape
        (2, 16, 16, 4)

    References:
        Martins et al., "Multifractal Recalibration of Neural Networks for
        Medical Imaging Segmentation".
    """

    config_keys = ("max_scale", "k", "per_channel", "scaling", "synchronized")

    def __init__(
        self,
        max_scale,
        k,
        per_channel=False,
        data_format=None,
        scaling="batch",
        synchronized=True,
        **kwargs,
    ):
        super().__init__(data_format=data_format, **kwargs)
        self.alpha = self.sublayer(
            WeightedLocalSingularityStrength,
            max_scale,
            scaling=scaling,
            synchronized=synchronized,
            name="alpha",
        )
        try:
            self.histogram = self.sublayer(
                SoftHistogram,
                k,
                per_channel=per_channel,
                synchronized=synchronized,
                name="histogram",
            )
        except (TypeError, ValueError) as error:
            raise type(error)(str(error).replace("num_anchors", "k")) from None
        self.max_scale = self.alpha.max_scale
        self.scaling = self.alpha.scaling
        self.synchronized = self.alpha.synchronized
        self.k = self.histogram.num_anchors
        self.per_channel = self.histogram.per_channel

    def build(self, input_shape):
        channels = self.check_input_shape(input_shape)
        self.alpha.build(input_shape)
        self.histogram.build(input_shape)
        self.lock_input_spec(input_shape, channels)

    def compute_gates(self, inputs, training=None):
        """The per-pixel gates ``sigmoid(sum_k relu(h_k))``, input-shaped."""
        alpha = self.alpha(inputs, training=training)
        return ops.cast(self.histogram._gate(alpha, training), inputs.dtype)

    def apply_gates(self, inputs, gates):
        return inputs + gates

    def compute_gates_shape(self, input_shape):
        return tuple(input_shape)

    def gates(self, inputs, training=None):
        """Deprecated: ``layer(x, return_gates=True)[1]``. The per-pixel gates
        ``sigmoid(sum_k relu(h_k))``, input-shaped."""
        return self.deprecated_inspection("gates", inputs, training)

    def semantic_variables(self) -> dict:
        names = _prefixed("alpha.", self.alpha)
        names.update(_prefixed("histogram.", self.histogram))
        return names
