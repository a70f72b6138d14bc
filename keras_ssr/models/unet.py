"""The original's U-Net (2-D and 3-D) with an optional attention layer."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import keras

from keras_ssr import _checks
from keras_ssr.layers._base import BN_EPSILON, BN_MOMENTUM
from keras_ssr.layers.normalization import BatchNormalization
from keras_ssr.layers.upsampling import TrilinearUpSampling3D
from keras_ssr.models.insertion import _has_parameter, wide_reduction_ratio
from keras_ssr.models.registry import (
    PER_LAYER_OPTION,
    AttentionFactory,
    _make_attention,
    _resolve_attention,
)

__all__ = [
    "build_unet",
    "get_ssr_unet",
    "get_unet",
]


def _check_input_shape(input_shape, data_format: str, levels: int) -> tuple:
    shape = _checks.check_int_sequence(
        "input_shape", input_shape, 1, allow_none=True,
        what="positive integers or None",
    )  # fmt: skip
    if len(shape) not in (3, 4):
        raise ValueError(
            "`input_shape` must have 3 entries (2-D images) or 4 (volumes), the "
            f"batch axis excluded. Received: input_shape={input_shape!r}"
        )
    batched = (None, *shape)
    channels = batched[_checks.channel_axis(data_format, len(batched))]
    spatial = [batched[a] for a in _checks.spatial_axes(data_format, len(batched))]
    if channels is None:
        raise ValueError(
            f"`input_shape` needs a known channel dimension (data_format="
            f"{data_format!r}). Received: input_shape={input_shape!r}"
        )
    factor = 2 ** (levels - 1)
    for size in spatial:
        if size is not None and size % factor:
            raise ValueError(
                f"Every spatial size in `input_shape` must be divisible by "
                f"2**(levels - 1) = {factor} for {levels} levels (data_format="
                f"{data_format!r}). Received: input_shape={input_shape!r}"
            )
    return shape


def _check_bn_options(with_bn, synchronized_bn, bn_momentum, bn_epsilon) -> tuple:
    """The blocks' BN options, checked; a warning for those set without
    ``with_bn``, where there is no BN for them to set."""
    with_bn = _checks.check_bool("with_bn", with_bn)
    synchronized_bn = _checks.check_bool("synchronized_bn", synchronized_bn)
    bn_momentum = _checks.check_real("bn_momentum", bn_momentum, 0.0, 1.0)
    bn_epsilon = _checks.check_real("bn_epsilon", bn_epsilon, 0.0, open_minimum=True)
    given = {
        "synchronized_bn": (synchronized_bn, False),
        "bn_momentum": (bn_momentum, BN_MOMENTUM),
        "bn_epsilon": (bn_epsilon, BN_EPSILON),
    }
    unused = {k: v for k, (v, default) in given.items() if v != default}
    if not with_bn and unused:
        warnings.warn(
            f"{', '.join(f'`{k}`' for k in unused)} set the U-Net blocks' "
            "BatchNormalization, which with_bn=False leaves out: ignored (the "
            "attention layers have their own). Received: with_bn=False, "
            + ", ".join(f"{k}={v!r}" for k, v in unused.items()),
            UserWarning,
            stacklevel=3,
        )
    return with_bn, synchronized_bn, bn_momentum, bn_epsilon


def warn_ignored(builder: str, name: str, value, used, why: str) -> None:
    """Warns that the named builder ``get_{builder}`` ignores its argument
    ``name`` (kept for the authors' signature) when it is given ``value``,
    which differs from ``used``, what the model gets."""
    if value != used:
        warnings.warn(
            f"get_{builder}() ignores `{name}`: {why}. Received: {name}={value!r}",
            UserWarning,
            stacklevel=3,
        )


class _Parts:
    """The U-Net's building blocks for one rank and data format, shared by
    the plain U-Net and the encoder U-Net."""

    def __init__(
        self,
        spatial_rank,
        data_format,
        with_bn,
        synchronized_bn,
        bn_momentum,
        bn_epsilon,
    ):
        self.spatial_rank = spatial_rank
        self.data_format = data_format
        self.channel_axis = _checks.channel_axis(data_format)
        self.with_bn = with_bn
        self.synchronized_bn = synchronized_bn
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        if spatial_rank == 2:
            self.conv, self.pool = keras.layers.Conv2D, keras.layers.MaxPooling2D
        else:
            self.conv, self.pool = keras.layers.Conv3D, keras.layers.MaxPooling3D

    def upsample(self, name: str):
        if self.spatial_rank == 2:
            return keras.layers.UpSampling2D(
                2, data_format=self.data_format, interpolation="bilinear", name=name
            )
        return TrilinearUpSampling3D(data_format=self.data_format, name=name)

    def concat(self, level: int):
        return keras.layers.Concatenate(
            axis=self.channel_axis, name=f"decoder_{level}_concat"
        )

    def block(self, x, filters: int, prefix: str):
        for j in range(2):
            x = self.conv(
                filters,
                3,
                padding="same",
                data_format=self.data_format,
                kernel_initializer="he_normal",
                name=f"{prefix}_conv_{j}",
            )(x)
            if self.with_bn:
                x = self.batch_norm(f"{prefix}_bn_{j}")(x)
            x = keras.layers.ReLU(name=f"{prefix}_relu_{j}")(x)
        return x

    def batch_norm(self, name: str) -> keras.layers.BatchNormalization:
        """A block's BN: Keras' own, the original's layer (what any Keras
        loads, with each backend's own arithmetic: the convolutions' outputs
        are not the narrow, off-centre maps keras_ssr's centred arithmetic is
        for), or, with ``synchronized_bn``, keras_ssr's, whose moments are
        global under data parallelism on every backend."""
        kwargs = dict(
            axis=self.channel_axis,
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            name=name,
        )
        if self.synchronized_bn:
            return BatchNormalization(synchronized=True, **kwargs)
        return keras.layers.BatchNormalization(**kwargs)

    def head(self, x, n_classes: int):
        out_channels = 1 if n_classes <= 2 else n_classes
        x = self.conv(out_channels, 1, data_format=self.data_format, name="head")(x)
        if out_channels == 1:
            final = keras.layers.Activation(
                "sigmoid", name="head_activation", dtype="float32"
            )
        else:
            final = keras.layers.Softmax(
                axis=self.channel_axis, name="head_activation", dtype="float32"
            )
        return final(x)


def build_unet(
    channels_per_level: Sequence[int] | None = None,
    input_shape: Sequence[int | None] | None = None,
    n_classes: int = 2,
    with_bn: bool = True,
    attention: str | AttentionFactory | None = None,
    attention_kwargs: Mapping[str, Any] | None = None,
    data_format: str | None = None,
    name: str | None = None,
    synchronized_bn: bool = False,
    bn_momentum: float = BN_MOMENTUM,
    bn_epsilon: float = BN_EPSILON,
    *,
    encoder: str | keras.Model | None = None,
    encoder_weights: str | None = None,
    encoder_kwargs: Mapping[str, Any] | None = None,
    skips: Sequence[str] | None = None,
    decoder_attention: str | AttentionFactory | None = None,
    decoder_attention_kwargs: Mapping[str, Any] | None = None,
) -> keras.Model:
    """A U-Net, optionally with channel attention after each encoder block.

    Without ``encoder``, the original's U-Net (below). With ``encoder``, a
    U-Net decoder on a standard encoder (see "Encoder U-Net").

    The original's architecture: for each level but the last, an encoder
    block (two 3x3 "same" convolutions with bias and He-normal
    initialisation, each followed by BatchNormalization (momentum 0.99,
    epsilon 1e-3) when ``with_bn``, then ReLU), the attention layer, the skip
    connection, and 2x2 max-pooling; a bottleneck block of
    ``channels_per_level[-1]`` filters; for each level, from the deepest,
    2x bilinear upsampling, concatenation ``[upsampled, skip]`` and a block
    of that level's filters; a 1x1 convolution to one sigmoid channel when
    ``n_classes <= 2``, else ``n_classes`` softmax channels. A 4-entry
    ``input_shape`` builds the volumetric variant (Conv3D, MaxPooling3D,
    :class:`~keras_ssr.layers.TrilinearUpSampling3D`). See the module
    docstring for the layer names.

    Encoder U-Net: the encoder's features at strides 2, 4, 8, 16 (those it
    has) are the skips, its output (stride 32 for keras.applications) the
    deepest feature. For each level ``i`` from the deepest, a decoder block
    upsamples 2x (bilinear; trilinear in 3-D), concatenates the skip of
    stride ``2**i`` if there is one (``decoder_{i}_concat``), applies
    ``decoder_attention`` there (``decoder_{i}_attention``, as
    segmentation_models.pytorch's ``decoder_attention_type``), and runs two
    3x3 convolutions (``decoder_{i}_conv_{j}``, BN, ReLU); the head is the
    plain U-Net's. The model is one flat functional graph: the encoder's
    layers, then the decoder's. Skips come from the encoder's
    ``pyramid_outputs`` (keras-hub), the table of known keras.applications
    layer names (:data:`keras_ssr.models.encoders.ENCODERS`), the stride
    rule (:func:`stage_layers`), or ``skips``. ``attention`` goes into the
    encoder through :func:`insert_attention`, after each skip layer and the
    output. Inserted and decoder attention layers take
    :func:`wide_reduction_ratio` of their channels as ``r`` unless their
    kwargs set ``r``. Input channels other than 3 with pretrained
    ``encoder_weights`` adapt the first convolution
    (:func:`adapt_input_channels`).

    Args:
        channels_per_level: filters per level, at least 2 positive integers;
            the last is the bottleneck's. ``None``: ``(32, 64, 128, 256)``.
            With ``encoder``: the decoder's filters from full resolution
            (level 0) to the level below the deepest feature, one per 2x
            upsampling (5 for stride 32); ``None``: ``16 * 2**i`` at level
            ``i`` (segmentation_models.pytorch's ``(256, 128, 64, 32, 16)``).
        input_shape: the input shape without the batch axis, in
            ``data_format`` order: ``(height, width, channels)`` or
            ``(depth, height, width, channels)`` for channels last. Spatial
            sizes may be ``None``; known ones must be divisible by
            ``2 ** (len(channels_per_level) - 1)`` (by the deepest stride
            with an encoder). ``None``: ``(224, 224, 3)``, or a model
            encoder's input shape.
        n_classes: number of classes, at least 1.
        with_bn: whether each convolution is followed by BatchNormalization.
        attention: ``None``/``"none"``, a registered name (``"se"``:
            :class:`~keras_ssr.layers.SqueezeExcite`, ``"ssr"``:
            :class:`~keras_ssr.layers.SingularityStrengthRecalibration`,
            ``"ssr_xu"``: :class:`~keras_ssr.layers.
            SingularityStrengthRecalibrationXu`, 2-D only; see
            :func:`register_attention`), a layer class, or a callable
            returning a new layer. Classes and callables receive
            ``attention_kwargs`` and, when their signature accepts them,
            ``data_format`` and ``name``.
        attention_kwargs: keyword arguments of the attention layer; for a
            registered name they override its defaults (``{"r": 2}`` for
            ``"se"`` and ``"ssr_xu"``, ``{"r": 2, "max_scale": 3}`` for
            ``"ssr"``).
        data_format: ``"channels_last"`` or ``"channels_first"``; ``None``
            takes ``keras.config.image_data_format()``.
        name: the model's name (default ``"unet"``).
        synchronized_bn: whether the blocks' BatchNormalization takes its
            training moments over the global batch under data parallelism
            (:class:`keras_ssr.layers.BatchNormalization` with
            ``synchronized=True``: all-reduces under ``tf.distribute`` and
            ``torch.distributed``; JAX's ``keras.distribution`` is global
            anyway). ``False`` (the original) builds Keras' own
            ``BatchNormalization``, per replica. The attention layers' own
            statistics are global unless built with ``synchronized=False``.
        bn_momentum: momentum of the blocks' BatchNormalization moving
            statistics, in ``[0, 1]`` (the original's 0.99; a short training
            run wants less, e.g. 0.9). The attention layers keep their own.
        bn_epsilon: the blocks' BatchNormalization epsilon, ``> 0`` (the
            original's 1e-3).
        encoder: ``None`` (the original's U-Net), a keras.applications name
            (:func:`encoder_names`: ``"resnet50"``, ``"mobilenetv2"``,
            ``"efficientnetb0"``, ``"convnexttiny"``, ...), or a built
            functional or Sequential ``keras.Model`` (a keras-hub backbone,
            your own 2-D or 3-D encoder), whose layers the U-Net then shares
            unless ``attention`` is inserted (which copies them).
        encoder_weights: passed to the keras.applications constructor:
            ``None`` (random), ``"imagenet"`` (downloaded by Keras) or a
            weights file path.
        encoder_kwargs: further arguments of the keras.applications
            constructor (``{"alpha": 0.35}`` for MobileNetV2, ...).
        skips: the encoder layers whose outputs are the skips, by name
            (strides from their shapes); ``None`` finds them.
        decoder_attention: like ``attention``, after each skip concatenation
            of the encoder U-Net's decoder.
        decoder_attention_kwargs: its keyword arguments.

    Returns:
        A functional ``keras.Model`` mapping a batch of inputs
        to per-pixel (per-voxel) class probabilities.

    Raises:
        ValueError: for fewer than 2 levels, non-positive filters or sizes,
            spatial sizes not divisible by ``2 ** (levels - 1)``, an unknown
            attention name, ``n_classes < 1``, an unknown ``data_format``, or
            an attention that does not support the input's dimensionality.
        TypeError: for arguments of the wrong type.

    Example:
        >>> model = build_unet((4, 8, 16), (32, 32, 3), attention="ssr")
        >>> model(keras.random.uniform((2, 32, 32, 3))).shape
        (2, 32, 32, 1)
        >>> model = build_unet(input_shape=(32, 32, 1), encoder="mobilenetv2",
        ...                    attention="ssr", decoder_attention="scse",
        ...                    encoder_kwargs={"alpha": 0.35})
        >>> model.get_layer("block_1_expand_relu_attention").r  # 48 channels
        6
        >>> model.output.shape
        (None, 32, 32, 1)
    """
    if encoder is not None:
        return _build_encoder_unet(
            channels_per_level,
            input_shape,
            n_classes,
            with_bn,
            attention,
            attention_kwargs,
            data_format,
            name,
            synchronized_bn,
            bn_momentum,
            bn_epsilon,
            encoder,
            encoder_weights,
            encoder_kwargs,
            skips,
            decoder_attention,
            decoder_attention_kwargs,
        )
    extra = {
        "encoder_weights": encoder_weights,
        "encoder_kwargs": encoder_kwargs,
        "skips": skips,
        "decoder_attention": decoder_attention,
        "decoder_attention_kwargs": decoder_attention_kwargs,
    }
    given = sorted(k for k, v in extra.items() if v is not None)
    if given:
        raise ValueError(
            f"{given} need an `encoder`. Received: encoder=None, "
            + ", ".join(f"{k}={extra[k]!r}" for k in given)
        )
    if channels_per_level is None:
        channels_per_level = (32, 64, 128, 256)
    if input_shape is None:
        input_shape = (224, 224, 3)
    channels = _checks.check_int_sequence(
        "channels_per_level", channels_per_level, 1, min_length=2,
        what="positive integers (encoder levels and the bottleneck)",
    )  # fmt: skip
    data_format = _checks.standardize_data_format(data_format)
    shape = _check_input_shape(input_shape, data_format, len(channels))
    n_classes = _checks.check_int("n_classes", n_classes, 1)
    with_bn, synchronized_bn, bn_momentum, bn_epsilon = _check_bn_options(
        with_bn, synchronized_bn, bn_momentum, bn_epsilon
    )
    if name is not None and not isinstance(name, str):
        raise TypeError(f"`name` must be a string or None. Received: name={name!r}")
    factory, kwargs = _resolve_attention(attention, attention_kwargs)

    parts = _Parts(
        len(shape) - 1, data_format, with_bn, synchronized_bn, bn_momentum, bn_epsilon
    )
    inputs = keras.Input(shape=shape, name="input")
    x = inputs
    skips = []
    for level, filters in enumerate(channels[:-1]):
        x = parts.block(x, filters, f"encoder_{level}")
        if factory is not None:
            layer = _make_attention(
                factory,
                kwargs,
                f"encoder_{level}_attention",
                data_format,
                parts.spatial_rank,
                attention,
            )
            x = layer(x)
        skips.append(x)
        x = parts.pool(2, data_format=data_format, name=f"encoder_{level}_pool")(x)
    x = parts.block(x, channels[-1], "bottleneck")
    for level in reversed(range(len(channels) - 1)):
        x = parts.upsample(f"decoder_{level}_upsample")(x)
        x = parts.concat(level)([x, skips[level]])
        x = parts.block(x, channels[level], f"decoder_{level}")
    outputs = parts.head(x, n_classes)
    return keras.Model(inputs, outputs, name=name or "unet")


#: The keyword-only options the original's and the follow-up's named
#: builders pass on to :func:`build_unet`, with their defaults there.
BUILDER_OPTIONS = {
    "data_format": "channels_last",
    "synchronized_bn": False,
    "bn_momentum": BN_MOMENTUM,
    "bn_epsilon": BN_EPSILON,
}

#: The Args entries every named builder shares, put in its docstring where it
#: says ``{shared args}``.
_SHARED_ARGS = """input_shape: ``(height, width, channels)`` (4 entries for volumes),
            in ``data_format`` order.
        n_classes: one sigmoid output channel when ``<= 2``, else softmax.
        with_bn: BatchNormalization after every convolution of the U-Net.
        **options: keyword-only, passed on to :func:`~keras_ssr.models.build_unet`:
            ``data_format`` (``"channels_last"``, as the authors' code),
            ``synchronized_bn`` (global BN moments under data parallelism,
            default ``False``), ``bn_momentum`` and ``bn_epsilon`` (the
            blocks' BatchNormalization, default 0.99 and 1e-3)."""


def named_builder(builder):
    """Completes a named builder's docstring with the shared Args entries."""
    builder.__doc__ = builder.__doc__.replace("{shared args}", _SHARED_ARGS)
    return builder


def build_named_unet(
    builder: str,
    attention: str | None,
    attention_kwargs: Mapping[str, Any],
    unet_args: tuple,
    options: Mapping[str, Any],
) -> keras.Model:
    """:func:`build_unet` for the named builder ``builder`` (its model's name).

    ``unet_args`` are its ``(channels_per_level, input_shape, n_classes,
    with_bn)``; ``options`` its keyword-only :data:`BUILDER_OPTIONS`.
    """
    unknown = sorted(set(options) - set(BUILDER_OPTIONS))
    if unknown:
        raise TypeError(
            f"get_{builder}() got unexpected keyword arguments {unknown}; its "
            f"options are {sorted(BUILDER_OPTIONS)}."
        )
    channels_per_level, input_shape, n_classes, with_bn = unet_args
    return build_unet(
        channels_per_level,
        input_shape=input_shape,
        n_classes=n_classes,
        with_bn=with_bn,
        attention=attention,
        attention_kwargs=attention_kwargs,
        name=builder,
        **{**BUILDER_OPTIONS, **options},
    )


@named_builder
def get_unet(
    channels_per_level: Sequence[int],
    input_shape: Sequence[int | None] = (224, 224, 3),
    n_classes: int = 2,
    with_bn: bool = True,
    **options,
) -> keras.Model:
    """The original's ``get_unet``: a plain U-Net (see :func:`build_unet`).

    Args:
        channels_per_level: filters per level, the last the bottleneck's.
        {shared args}

    Returns:
        A functional ``keras.Model`` named ``"unet"``.

    Raises:
        ValueError, TypeError: as :func:`build_unet`.

    Example:
        >>> get_unet([4, 8, 16], input_shape=[32, 32, 3]).count_params()
        7857
    """
    args = (channels_per_level, input_shape, n_classes, with_bn)
    return build_named_unet("unet", None, {}, args, options)


@named_builder
def get_ssr_unet(
    channels_per_level: Sequence[int],
    r: int = 2,
    max_scale: int = 3,
    input_shape: Sequence[int | None] = (224, 224, 3),
    n_classes: int = 2,
    with_bn: bool = True,
    **options,
) -> keras.Model:
    """The original's ``get_ssr_unet``: SSR after every encoder block.

    ``with_bn`` concerns the U-Net's convolutions: the SSR's own
    normalisation is always there.

    Args:
        channels_per_level: filters per level, the last the bottleneck's.
        r: reduction ratio of the SSR excitation MLP.
        max_scale: number of dyadic box-sum scales of the SSR.
        {shared args}

    Returns:
        A functional ``keras.Model`` named ``"ssr_unet"``.

    Raises:
        ValueError, TypeError: as :func:`build_unet` and
            :class:`~keras_ssr.layers.SingularityStrengthRecalibration`.

    Example:
        >>> model = get_ssr_unet([4, 8, 16], input_shape=[32, 32, 3])
        >>> model.get_layer("encoder_0_attention").max_scale
        3
    """
    args = (channels_per_level, input_shape, n_classes, with_bn)
    kwargs = {"r": r, "max_scale": max_scale}
    return build_named_unet("ssr_unet", "ssr", kwargs, args, options)


def _build_encoder_unet(
    channels_per_level,
    input_shape,
    n_classes,
    with_bn,
    attention,
    attention_kwargs,
    data_format,
    name,
    synchronized_bn,
    bn_momentum,
    bn_epsilon,
    encoder,
    encoder_weights,
    encoder_kwargs,
    skips,
    decoder_attention,
    decoder_attention_kwargs,
) -> keras.Model:
    """:func:`build_unet` with an ``encoder``: a U-Net decoder on it."""
    from keras_ssr.models import encoders

    if isinstance(encoder, keras.Model) and data_format is None:
        data_format = encoders.data_format_of(encoder)
    data_format = _checks.standardize_data_format(data_format)
    n_classes = _checks.check_int("n_classes", n_classes, 1)
    with_bn, synchronized_bn, bn_momentum, bn_epsilon = _check_bn_options(
        with_bn, synchronized_bn, bn_momentum, bn_epsilon
    )
    if name is not None and not isinstance(name, str):
        raise TypeError(f"`name` must be a string or None. Received: name={name!r}")
    if input_shape is not None:
        input_shape = _check_input_shape(input_shape, data_format, 1)
    elif not isinstance(encoder, keras.Model):
        input_shape = (224, 224, 3) if data_format == "channels_last" else (3, 224, 224)
    # Validate the attention arguments before building anything large.
    _resolve_attention(attention, attention_kwargs)
    decoder_factory, decoder_kwargs = _resolve_attention(
        decoder_attention, decoder_attention_kwargs
    )
    key = encoder.strip().lower() if isinstance(encoder, str) else None
    model = encoders.build_encoder(
        encoder, input_shape, data_format, encoder_weights, encoder_kwargs
    )
    model, x, skip_features, deepest = encoders.encoder_features(
        model,
        key,
        skips,
        data_format,
        None if _resolve_attention(attention, None)[0] is None else attention,
        attention_kwargs,
    )
    levels = int(deepest).bit_length() - 1
    if channels_per_level is None:
        channels_per_level = tuple(16 * 2**i for i in range(levels))
    channels = _checks.check_int_sequence(
        "channels_per_level", channels_per_level, 1, length=levels,
        what=f"positive integers (one per decoder level: {levels} for an "
        f"encoder of stride {deepest})",
    )  # fmt: skip
    inputs = model.inputs[0]
    _check_input_shape(tuple(inputs.shape[1:]), data_format, levels + 1)
    parts = _Parts(
        len(inputs.shape) - 2,
        data_format,
        with_bn,
        synchronized_bn,
        bn_momentum,
        bn_epsilon,
    )
    user_r = PER_LAYER_OPTION in (decoder_attention_kwargs or {})
    for level in reversed(range(levels)):
        x = parts.upsample(f"decoder_{level}_upsample")(x)
        skip = skip_features.get(2**level)
        if skip is not None:
            x = parts.concat(level)([x, skip])
            if decoder_factory is not None:
                kwargs = dict(decoder_kwargs)
                if not user_r and _has_parameter(decoder_factory, PER_LAYER_OPTION):
                    width = x.shape[parts.channel_axis]
                    kwargs[PER_LAYER_OPTION] = wide_reduction_ratio(width)
                x = _make_attention(
                    decoder_factory,
                    kwargs,
                    f"decoder_{level}_attention",
                    data_format,
                    parts.spatial_rank,
                    decoder_attention,
                )(x)
        x = parts.block(x, channels[level], f"decoder_{level}")
    outputs = parts.head(x, n_classes)
    return keras.Model(inputs, outputs, name=name or f"{model.name}_unet")
