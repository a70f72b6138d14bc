"""The original's U-Net (2-D and 3-D) with an optional attention layer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras

from keras_ssr import _checks
from keras_ssr.distributed import SynchronizedBatchNormalization
from keras_ssr.layers._base import BN_EPSILON, BN_MOMENTUM
from keras_ssr.models.registry import (
    AttentionFactory,
    _make_attention,
    _resolve_attention,
)
from keras_ssr.models.upsampling import TrilinearUpSampling3D


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
    channels = shape[-1] if data_format == "channels_last" else shape[0]
    spatial = shape[:-1] if data_format == "channels_last" else shape[1:]
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


def build_unet(
    channels_per_level: Sequence[int] = (32, 64, 128, 256),
    input_shape: Sequence[int | None] = (224, 224, 3),
    n_classes: int = 2,
    with_bn: bool = True,
    attention: str | AttentionFactory | None = None,
    attention_kwargs: Mapping[str, Any] | None = None,
    data_format: str | None = None,
    name: str | None = None,
    synchronized_bn: bool = False,
    bn_momentum: float = BN_MOMENTUM,
    bn_epsilon: float = BN_EPSILON,
) -> keras.Model:
    """A U-Net, optionally with channel attention after each encoder block.

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
    :class:`TrilinearUpSampling3D`). See the module docstring for the layer
    names.

    Args:
        channels_per_level: filters per level, at least 2 positive integers;
            the last is the bottleneck's.
        input_shape: the input shape without the batch axis, in
            ``data_format`` order: ``(height, width, channels)`` or
            ``(depth, height, width, channels)`` for channels last. Spatial
            sizes may be ``None``; known ones must be divisible by
            ``2 ** (len(channels_per_level) - 1)``.
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
            (:class:`keras_ssr.distributed.SynchronizedBatchNormalization`:
            Keras' ``synchronized=True`` on TensorFlow, keras_ssr's
            all-reduce under ``torch.distributed``; JAX's
            ``keras.distribution`` is global anyway). ``False`` (the
            original) takes them per replica. The attention layers' own
            statistics are global unless built with ``synchronized=False``.
        bn_momentum: momentum of the blocks' BatchNormalization moving
            statistics, in ``[0, 1]`` (the original's 0.99; a short training
            run wants less, e.g. 0.9). The attention layers keep their own.
        bn_epsilon: the blocks' BatchNormalization epsilon, ``> 0`` (the
            original's 1e-3).

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
    """
    channels = _checks.check_int_sequence(
        "channels_per_level", channels_per_level, 1, min_length=2,
        what="positive integers (encoder levels and the bottleneck)",
    )  # fmt: skip
    data_format = _checks.standardize_data_format(data_format)
    shape = _check_input_shape(input_shape, data_format, len(channels))
    n_classes = _checks.check_int("n_classes", n_classes, 1)
    with_bn = _checks.check_bool("with_bn", with_bn)
    synchronized_bn = _checks.check_bool("synchronized_bn", synchronized_bn)
    bn_momentum = _checks.check_real("bn_momentum", bn_momentum, 0.0, 1.0)
    bn_epsilon = _checks.check_real("bn_epsilon", bn_epsilon, 0.0, open_minimum=True)
    batch_norm = (
        SynchronizedBatchNormalization
        if synchronized_bn
        else keras.layers.BatchNormalization
    )
    if name is not None and not isinstance(name, str):
        raise TypeError(f"`name` must be a string or None. Received: name={name!r}")
    factory, kwargs = _resolve_attention(attention, attention_kwargs)

    spatial_rank = len(shape) - 1
    channel_axis = -1 if data_format == "channels_last" else 1
    if spatial_rank == 2:
        conv, pool = keras.layers.Conv2D, keras.layers.MaxPooling2D

        def upsample(layer_name):
            return keras.layers.UpSampling2D(
                2, data_format=data_format, interpolation="bilinear", name=layer_name
            )
    else:
        conv, pool = keras.layers.Conv3D, keras.layers.MaxPooling3D

        def upsample(layer_name):
            return TrilinearUpSampling3D(data_format=data_format, name=layer_name)

    def block(x, filters: int, prefix: str):
        for j in range(2):
            x = conv(
                filters,
                3,
                padding="same",
                data_format=data_format,
                kernel_initializer="he_normal",
                name=f"{prefix}_conv_{j}",
            )(x)
            if with_bn:
                x = batch_norm(
                    axis=channel_axis,
                    momentum=bn_momentum,
                    epsilon=bn_epsilon,
                    name=f"{prefix}_bn_{j}",
                )(x)
            x = keras.layers.ReLU(name=f"{prefix}_relu_{j}")(x)
        return x

    inputs = keras.Input(shape=shape, name="input")
    x = inputs
    skips = []
    for level, filters in enumerate(channels[:-1]):
        x = block(x, filters, f"encoder_{level}")
        if factory is not None:
            layer = _make_attention(
                factory,
                kwargs,
                f"encoder_{level}_attention",
                data_format,
                spatial_rank,
                attention,
            )
            x = layer(x)
        skips.append(x)
        x = pool(2, data_format=data_format, name=f"encoder_{level}_pool")(x)
    x = block(x, channels[-1], "bottleneck")
    for level in reversed(range(len(channels) - 1)):
        x = upsample(f"decoder_{level}_upsample")(x)
        x = keras.layers.Concatenate(axis=channel_axis, name=f"decoder_{level}_concat")(
            [x, skips[level]]
        )
        x = block(x, channels[level], f"decoder_{level}")
    out_channels = 1 if n_classes <= 2 else n_classes
    x = conv(out_channels, 1, data_format=data_format, name="head")(x)
    if out_channels == 1:
        final = keras.layers.Activation(
            "sigmoid", name="head_activation", dtype="float32"
        )
    else:
        final = keras.layers.Softmax(
            axis=channel_axis, name="head_activation", dtype="float32"
        )
    outputs = final(x)
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
