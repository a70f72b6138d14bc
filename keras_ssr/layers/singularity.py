"""Singularity-strength layers: the fixed dyadic one and Xu et al.'s."""

from __future__ import annotations

from keras import ops

from keras_ssr import _checks
from keras_ssr import ops as ssr_ops
from keras_ssr.initializers import GaussianKernel
from keras_ssr.layers._base import (
    MapLayer,
    register,
)
from keras_ssr.layers.normalization import bn_variables, map_batch_norm

__all__ = [
    "LearnableMeasure",
    "LocalSingularityStrength",
    "LocalSingularityStrengthXu",
    "NormalizedMap",
]


class NormalizedMap(MapLayer):
    """A map layer whose map (:meth:`map`) is batch-normalised by ``self.bn``
    (a :class:`~keras_ssr.layers.BatchNormalization`, or
    ``None`` for none). :meth:`pooled` gives the spatial mean of the output
    without forming the normalised map."""

    def map(self, inputs):
        """The map before the batch normalisation, float32 (or wider)."""
        raise NotImplementedError

    def call(self, inputs, training=None):
        self.check_inputs(inputs)
        alpha = self.map(inputs)
        if self.bn is not None:
            alpha = self.bn(alpha, training=training)
        return ops.cast(alpha, self.compute_dtype)

    def pooled(self, inputs, training=None):
        """``mean(self(inputs, training))`` over the spatial axes, ``(batch,
        channels)``: what :class:`~keras_ssr.layers.attention.MapGate`
        reads."""
        self.check_inputs(inputs)
        if not self.built:
            self.build(tuple(inputs.shape))
        alpha = self.map(inputs)
        spatial = self.spatial_axes(len(inputs.shape))
        if self.bn is None:
            pooled = ssr_ops.accurate_mean(alpha, spatial)
        else:
            pooled = self.bn.pooled(alpha, spatial, training=training)
        return ops.cast(pooled, self.compute_dtype)


@register
class LocalSingularityStrength(NormalizedMap):
    """Local singularity strength (Hölder exponent) map, batch-normalised.

    Per channel: min-max scale onto ``[1, 256]``, box sums ``mu_j`` of sides
    ``k_j = 2**j`` (``j = 1 .. max_scale``, "SAME" zero padding), then the
    least-squares slope of ``log(mu_j + 1e-7)`` against ``log(k_j)`` at every
    pixel (:func:`keras_ssr.ops.singularity_strength`), followed by
    ``BatchNormalization(momentum=0.99, epsilon=1e-3)``. The map is computed
    in float32 (or wider) under any dtype policy.

    Args:
        max_scale: number of dyadic scales, ``2 <= max_scale <= 16``. The
            original accepts 1 and returns NaN; it is rejected here.
        data_format: ``"channels_last"`` or ``"channels_first"``; ``None``
            takes ``keras.config.image_data_format()``.
        scaling: ``"batch"`` takes the min-max bounds over the whole batch
            (the original; one sample's output then depends on its batch
            mates); ``"sample"`` takes them per sample.
        synchronized: under data parallelism (``tf.distribute``,
            ``torch.distributed``), whether the min-max bounds of
            ``scaling="batch"`` and the batch-normalisation moments are
            taken over the global batch (the default; what one device
            computes) or per replica (``False``: the original under
            ``MirroredStrategy``). See :mod:`keras_ssr.distributed`.
        **kwargs: base ``Layer`` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: floating-point tensor with 1, 2 or 3 spatial axes.
        training: whether the batch normalisation uses batch statistics
            (and updates its moving ones).

    Input shape:
        ``(batch, *spatial, channels)`` for ``"channels_last"``,
        ``(batch, channels, *spatial)`` for ``"channels_first"``, with 1-3
        spatial axes.

    Output shape:
        Same as the input.

    Raises:
        ValueError: for ``max_scale`` outside ``[2, 16]``, an unknown
            ``data_format`` or ``scaling``, or an input of the wrong rank.
        TypeError: for a non-integer ``max_scale`` or non-float inputs.

    Example:
        >>> layer = LocalSingularityStrength(max_scale=3)
        >>> layer(keras.random.uniform((2, 32, 32, 8))).shape
        (2, 32, 32, 8)

    References:
        Martins et al., "Singularity Strength Recalibration of Fully
        Convolutional Neural Networks for Biomedical Imaging".
    """

    config_keys = ("max_scale", "scaling", "synchronized")

    def __init__(
        self,
        max_scale,
        data_format=None,
        scaling="batch",
        synchronized=True,
        **kwargs,
    ):
        super().__init__(data_format=data_format, **kwargs)
        self.max_scale = _checks.check_int(
            "max_scale", max_scale, 2, ssr_ops.MAX_SCALE_LIMIT
        )
        self.scaling = _checks.check_scaling(scaling)
        self.synchronized = _checks.check_bool("synchronized", synchronized)
        self.bn = map_batch_norm(self)

    def build(self, input_shape):
        channels = self.check_input_shape(input_shape)
        self.bn.build(input_shape)
        self.lock_input_spec(input_shape, channels)

    def map(self, inputs):
        return ssr_ops.singularity_strength(
            inputs, self.max_scale, self.scaling, self.data_format, self.synchronized
        )

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def semantic_variables(self) -> dict:
        """The layer's variables by semantic name (the original's weights)."""
        return bn_variables(self.bn)


@register
class LearnableMeasure(MapLayer):
    """Xu et al.'s data-driven measurement maps of a 2-D feature map.

    For ``s = 1 .. max_scale`` one ``s x s`` kernel (no bias), shared by all
    channels and applied to each separately with "SAME" zero padding, gives
    the measure ``relu(conv_s(x) * s**2) + 1``
    (:func:`keras_ssr.ops.learnable_measures`). Kernels start from the
    original's Gaussian (:class:`keras_ssr.initializers.GaussianKernel`,
    ``sigma = s / 2``, sum 1).

    Args:
        max_scale: number of measures (kernel sides ``1 .. max_scale``),
            at least 1.
        trainable: whether the kernels are trained.
        data_format: ``"channels_last"`` or ``"channels_first"``.
        **kwargs: base ``Layer`` arguments.

    Input shape:
        ``(batch, height, width, channels)`` or ``(batch, channels, height,
        width)``.

    Output shape:
        The input shape with a new last axis of ``max_scale`` measures.

    Example:
        >>> LearnableMeasure(3)(keras.random.uniform((2, 8, 8, 4))).shape
        (2, 8, 8, 4, 3)

    References:
        Xu et al., "Encoding spatial distribution of convolutional features
        for texture representation", NeurIPS 2021.
    """

    config_keys = ("max_scale",)

    ranks = (4,)

    def __init__(self, max_scale, trainable=True, data_format=None, **kwargs):
        super().__init__(data_format=data_format, trainable=trainable, **kwargs)
        self.max_scale = _checks.check_int("max_scale", max_scale, 1)
        self.kernels = []

    def build(self, input_shape):
        channels = self.check_input_shape(input_shape)
        self.kernels = [
            self.add_weight(
                name=f"kernel_{size}",
                shape=(size, size),
                initializer=GaussianKernel(sigma=size / 2),
                autocast=False,
            )
            for size in range(1, self.max_scale + 1)
        ]
        self.lock_input_spec(input_shape, channels)

    def call(self, inputs):
        self.check_inputs(inputs)
        dtype = _checks.wide_float(inputs.dtype)
        kernels = [ops.cast(kernel, dtype) for kernel in self.kernels]
        measures = ssr_ops.learnable_measures(
            ops.cast(inputs, dtype), kernels, self.data_format
        )
        return ops.cast(measures, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.max_scale)

    def semantic_variables(self) -> dict:
        return {f"measure.{v.name}": v for v in self.kernels}


@register
class LocalSingularityStrengthXu(NormalizedMap):
    """Singularity strength from Xu et al.'s learnable measures.

    Min-max scaling onto ``[1, 256]`` -> :class:`LearnableMeasure` with
    ``local_scale`` kernels -> least-squares slope against ``log(s)``,
    ``s = 1 .. local_scale`` -> optional ``BatchNormalization``
    (:func:`keras_ssr.ops.learnable_singularity_strength`). 2-D inputs only.

    Args:
        local_scale: number of learnable measures, at least 2 (one scale
            leaves no slope to fit).
        trainable_measures: whether the **measure kernels** are trained;
            the batch normalisation trains either way. The original calls
            this argument ``trainable`` (its second positional one, as
            here), and ``trainable=`` is accepted for it when
            ``trainable_measures`` is not given, so that the original's
            calls and configs saved before this argument existed mean what
            they meant. With ``trainable_measures`` given, ``trainable``
            has Keras' meaning (the whole layer), as in ``get_config``.
        with_bn: whether to batch-normalise the map (a ``bool``).
        data_format: ``"channels_last"`` or ``"channels_first"``.
        scaling: ``"batch"`` (the original) or ``"sample"``.
        synchronized: global (default) or per-replica batch statistics
            under data parallelism, as :class:`LocalSingularityStrength`.
        **kwargs: base ``Layer`` arguments.

    Call arguments:
        inputs: floating-point tensor ``(batch, height, width, channels)``
            (or channels first).
        training: whether the batch normalisation uses batch statistics.

    Output shape:
        Same as the input.

    Example:
        >>> layer = LocalSingularityStrengthXu(local_scale=4)
        >>> layer(keras.random.uniform((2, 16, 16, 3))).shape
        (2, 16, 16, 3)

    References:
        Xu et al., NeurIPS 2021; the authors' FENet code.
    """

    config_keys = (
        "local_scale",
        "trainable_measures",
        "with_bn",
        "scaling",
        "synchronized",
    )

    ranks = (4,)

    def __init__(
        self,
        local_scale,
        trainable_measures=None,
        with_bn=True,
        data_format=None,
        scaling="batch",
        synchronized=True,
        **kwargs,
    ):
        if trainable_measures is None:  # the original's `trainable=` alias
            flag = kwargs.pop("trainable", True)
            trainable_measures = _checks.check_bool("trainable", flag)
        self.trainable_measures = _checks.check_bool(
            "trainable_measures", trainable_measures
        )
        super().__init__(data_format=data_format, **kwargs)
        self.local_scale = _checks.check_int("local_scale", local_scale, 2)
        self.with_bn = _checks.check_bool("with_bn", with_bn)
        self.scaling = _checks.check_scaling(scaling)
        self.synchronized = _checks.check_bool("synchronized", synchronized)
        self.measure = self.sublayer(
            LearnableMeasure,
            self.local_scale,
            trainable=self.trainable_measures,
            name="measure",
        )
        self.bn = map_batch_norm(self) if with_bn else None

    def build(self, input_shape):
        channels = self.check_input_shape(input_shape)
        self.measure.build(input_shape)
        if self.bn is not None:
            self.bn.build(input_shape)
        self.lock_input_spec(input_shape, channels)

    def map(self, inputs):
        dtype = _checks.wide_float(inputs.dtype)
        kernels = [ops.cast(kernel, dtype) for kernel in self.measure.kernels]
        return ssr_ops.learnable_singularity_strength(
            inputs, kernels, self.scaling, self.data_format, self.synchronized
        )

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def semantic_variables(self) -> dict:
        names = self.measure.semantic_variables()
        if self.bn is not None:
            names.update(bn_variables(self.bn))
        return names
