"""U-Net and SSR-U-Net builders (2-D and 3-D), in Keras 3.

:func:`build_unet` builds the original's U-Net as a functional
``keras.Model``, with an optional channel-attention layer after every encoder
block (Squeeze-and-Excitation, SSR, Xu et al.'s SSR, or your own).
:func:`get_unet` and :func:`get_ssr_unet` keep the original's builder
signatures. Layer names are fixed and readable, so that
:func:`keras_ssr.reference.load_weights` can place the original's weights:

=============================  ==============================================
layer                          role
=============================  ==============================================
``encoder_{i}_conv_{j}``       ``j``-th 3x3 conv of encoder level ``i``
``encoder_{i}_bn_{j}``         its BatchNormalization (``with_bn=True``)
``encoder_{i}_relu_{j}``       its ReLU
``encoder_{i}_attention``      attention after the block (before the skip)
``encoder_{i}_pool``           2x2 max-pooling
``bottleneck_conv_{j}``, ...   the block of the deepest level
``decoder_{i}_upsample``       2x bilinear (trilinear) upsampling
``decoder_{i}_concat``         ``[upsampled, skip of encoder_{i}]``
``decoder_{i}_conv_{j}``, ...  the block of decoder level ``i``
``head``                       1x1 conv to the class scores
``head_activation``            sigmoid (1 channel) or softmax, in float32
=============================  ==============================================

Level ``i`` counts from the full-resolution level ``0``; decoder level ``i``
has ``channels_per_level[i]`` filters and runs after decoder level ``i + 1``.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
from keras import ops

from keras_ssr import _checks
from keras_ssr._serialization import register
from keras_ssr.layers import (
    SingularityStrengthRecalibration,
    SingularityStrengthRecalibrationXu,
    SqueezeExcite,
)

__all__ = [
    "TrilinearUpSampling3D",
    "attention_names",
    "build_unet",
    "get_attention",
    "get_ssr_unet",
    "get_unet",
    "register_attention",
]

#: The original's BatchNormalization settings (tf.keras defaults).
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3

AttentionFactory = Callable[..., keras.layers.Layer]


# --------------------------------------------------------------------------
# Attention registry
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _AttentionEntry:
    factory: AttentionFactory
    defaults: dict[str, Any] = field(default_factory=dict)


_ATTENTION: dict[str, _AttentionEntry] = {}
_NO_ATTENTION = "none"


def register_attention(
    name: str,
    factory: AttentionFactory,
    defaults: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> None:
    """Makes an attention layer available to :func:`build_unet` by name.

    Args:
        name: the registry key (case-insensitive); ``"none"`` is reserved.
        factory: a layer class or a callable returning a new
            ``keras.layers.Layer`` each time it is called. It receives the
            attention keyword arguments, plus ``data_format`` and ``name``
            when its signature accepts them.
        defaults: keyword arguments used when ``build_unet`` gets no
            ``attention_kwargs`` for them (``attention_kwargs`` overrides).
        overwrite: allow replacing an existing entry.

    Raises:
        TypeError: if ``name`` is not a string, ``factory`` is not callable
            or ``defaults`` is not a mapping.
        ValueError: if ``name`` is empty, ``"none"``, or already registered
            and ``overwrite`` is false.

    Example:
        >>> register_attention("se4", SqueezeExcite, {"r": 4})
        >>> model = build_unet((4, 8, 16), (32, 32, 3), attention="se4")
    """
    if not isinstance(name, str):
        raise TypeError(
            f"`name` must be a string. Received: name={name!r} "
            f"(of type {type(name).__name__})"
        )
    key = name.strip().lower()
    if not key or key == _NO_ATTENTION:
        raise ValueError(
            "`name` must be a non-empty name other than 'none'. "
            f"Received: name={name!r}"
        )
    if not callable(factory):
        raise TypeError(
            "`factory` must be a layer class or a callable returning a layer. "
            f"Received: factory={factory!r}"
        )
    if defaults is not None and not isinstance(defaults, Mapping):
        raise TypeError(
            f"`defaults` must be a mapping or None. Received: defaults={defaults!r}"
        )
    if key in _ATTENTION and not overwrite:
        raise ValueError(
            f"An attention named {key!r} is already registered; pass "
            f"overwrite=True to replace it. Received: name={name!r}"
        )
    _ATTENTION[key] = _AttentionEntry(factory, dict(defaults or {}))


def attention_names() -> list[str]:
    """The registered attention names, ``"none"`` included, sorted."""
    return sorted([_NO_ATTENTION, *_ATTENTION])


def get_attention(name: str | None) -> AttentionFactory | None:
    """The factory registered under ``name``; ``None`` for no attention.

    Args:
        name: a registered name (case-insensitive), ``"none"`` or ``None``.

    Returns:
        The layer class or callable, or ``None`` for ``None``/``"none"``.

    Raises:
        ValueError: for an unknown name, listing the known ones.

    Example:
        >>> get_attention("ssr") is SingularityStrengthRecalibration
        True
    """
    return _lookup(name, "name")[0]


def _lookup(name, argument: str) -> tuple[AttentionFactory | None, dict]:
    if name is None:
        return None, {}
    if not isinstance(name, str):
        raise TypeError(
            f"`{argument}` must be a string or None. Received: {argument}={name!r}"
        )
    key = name.strip().lower()
    if key == _NO_ATTENTION:
        return None, {}
    if key not in _ATTENTION:
        raise ValueError(
            f"Unknown attention {name!r}. Known names: {attention_names()}; or pass "
            f"a layer class or a callable returning a layer. "
            f"Received: {argument}={name!r}"
        )
    entry = _ATTENTION[key]
    return entry.factory, dict(entry.defaults)


register_attention("se", SqueezeExcite, {"r": 2})
register_attention("ssr", SingularityStrengthRecalibration, {"r": 2, "max_scale": 3})
register_attention("ssr_xu", SingularityStrengthRecalibrationXu, {"r": 2})


def _accepts(factory, parameter: str) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return parameter in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
    )


def _resolve_attention(attention, attention_kwargs):
    """``(factory or None, keyword arguments)`` from the builder's arguments."""
    if attention_kwargs is not None and not isinstance(attention_kwargs, Mapping):
        raise TypeError(
            "`attention_kwargs` must be a mapping or None. "
            f"Received: attention_kwargs={attention_kwargs!r}"
        )
    for reserved in ("name", "data_format"):
        if attention_kwargs and reserved in attention_kwargs:
            raise ValueError(
                f"`attention_kwargs` must not set {reserved!r}: the builder sets "
                "it for every level. "
                f"Received: attention_kwargs={dict(attention_kwargs)!r}"
            )
    if attention is None or isinstance(attention, str):
        factory, kwargs = _lookup(attention, "attention")
    elif isinstance(attention, keras.layers.Layer):
        raise TypeError(
            "`attention` must be a name, a layer class or a callable returning a new "
            "layer: a layer instance cannot serve several levels. "
            f"Received: attention={attention!r}"
        )
    elif callable(attention):
        factory, kwargs = attention, {}
    else:
        raise TypeError(
            "`attention` must be None, a registered name, a layer class or a "
            f"callable returning a layer. Received: attention={attention!r}"
        )
    if factory is None:
        if attention_kwargs:
            raise ValueError(
                "`attention_kwargs` was given but there is no attention. "
                f"Received: attention={attention!r}, "
                f"attention_kwargs={dict(attention_kwargs)!r}"
            )
        return None, {}
    kwargs.update(attention_kwargs or {})
    return factory, kwargs


def _make_attention(factory, kwargs, name, data_format, spatial_rank, attention):
    call_kwargs = dict(kwargs)
    if _accepts(factory, "data_format"):
        call_kwargs["data_format"] = data_format
    if _accepts(factory, "name"):
        call_kwargs["name"] = name
    layer = factory(**call_kwargs)
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(
            "`attention` must build a keras.layers.Layer; it returned "
            f"{layer!r} (of type {type(layer).__name__}). "
            f"Received: attention={attention!r}"
        )
    ranks = getattr(layer, "ranks", None)
    if ranks is not None and spatial_rank + 2 not in ranks:
        supported = sorted(r - 2 for r in ranks)
        raise ValueError(
            f"{type(layer).__name__} supports {supported}-D inputs only, not "
            f"{spatial_rank}-D ones. Received: attention={attention!r} with a "
            f"{spatial_rank}-D input_shape"
        )
    return layer


# --------------------------------------------------------------------------
# 3-D upsampling
# --------------------------------------------------------------------------


def _linear_upsample_2x(x, axis: int):
    """Doubles ``axis`` by linear interpolation at half-pixel centres.

    Output ``2i`` is ``0.75 x[i] + 0.25 x[i - 1]`` and output ``2i + 1`` is
    ``0.75 x[i] + 0.25 x[i + 1]``, with the edges repeated: what
    ``tf.image.resize(..., "bilinear")`` and ``torch`` (``align_corners=
    False``) give along one axis for a factor of 2.
    """
    ndim = len(x.shape)
    axis = axis % ndim

    def part(start, stop):
        index = [slice(None)] * ndim
        index[axis] = slice(start, stop)
        return x[tuple(index)]

    previous = ops.concatenate([part(0, 1), part(0, -1)], axis=axis)
    following = ops.concatenate([part(1, None), part(-1, None)], axis=axis)
    even = 0.75 * x + 0.25 * previous
    odd = 0.75 * x + 0.25 * following
    both = ops.stack([even, odd], axis=axis + 1)
    dims = list(both.shape)
    if sum(d is None for d in dims) <= 1:
        shape = [-1 if d is None else d for d in dims]
        shape[axis : axis + 2] = [-1 if dims[axis] is None else 2 * dims[axis]]
    else:
        dynamic = ops.shape(both)
        shape = [*dynamic[:axis], dynamic[axis] * 2, *dynamic[axis + 2 :]]
    return ops.reshape(both, shape)


@register
class TrilinearUpSampling3D(keras.layers.Layer):
    """2x trilinear upsampling of a volume (half-pixel centres, edge clamp).

    The 3-D counterpart of ``keras.layers.UpSampling2D(2, interpolation=
    "bilinear")``, which ``keras.layers.UpSampling3D`` (nearest only) lacks:
    each spatial axis is doubled by linear interpolation, output ``2i``
    taking ``0.75 x[i] + 0.25 x[i - 1]`` and ``2i + 1`` taking ``0.75 x[i] +
    0.25 x[i + 1]``, the first and last entries repeated at the borders.

    Args:
        data_format: ``"channels_last"`` or ``"channels_first"``; ``None``
            takes ``keras.config.image_data_format()``.
        **kwargs: base ``Layer`` arguments.

    Input shape:
        ``(batch, depth, height, width, channels)`` (or channels first).

    Output shape:
        Every spatial size doubled.

    Raises:
        ValueError: for an unknown ``data_format`` or an input not of rank 5.

    Example:
        >>> TrilinearUpSampling3D()(keras.ops.ones((1, 2, 3, 4, 5))).shape
        (1, 4, 6, 8, 5)
    """

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = _checks.standardize_data_format(data_format)
        self.input_spec = keras.layers.InputSpec(ndim=5)

    def _spatial_axes(self) -> tuple[int, int, int]:
        return (1, 2, 3) if self.data_format == "channels_last" else (2, 3, 4)

    def call(self, inputs):
        x = inputs
        for axis in self._spatial_axes():
            x = _linear_upsample_2x(x, axis)
        return x

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        for axis in self._spatial_axes():
            shape[axis] = None if shape[axis] is None else 2 * shape[axis]
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config["data_format"] = self.data_format
        return config


# --------------------------------------------------------------------------
# The U-Net
# --------------------------------------------------------------------------


def _check_channels_per_level(channels_per_level) -> tuple[int, ...]:
    if isinstance(channels_per_level, (str, bytes)) or not isinstance(
        channels_per_level, Sequence
    ):
        raise TypeError(
            "`channels_per_level` must be a sequence of positive integers. "
            f"Received: channels_per_level={channels_per_level!r}"
        )
    if len(channels_per_level) < 2:
        raise ValueError(
            "`channels_per_level` needs at least 2 levels (one encoder level and "
            f"the bottleneck). Received: channels_per_level={channels_per_level!r}"
        )
    for value in channels_per_level:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(
                "`channels_per_level` must hold integers. "
                f"Received: channels_per_level={channels_per_level!r}"
            )
        if value < 1:
            raise ValueError(
                "`channels_per_level` must hold positive integers. "
                f"Received: channels_per_level={channels_per_level!r}"
            )
    return tuple(int(v) for v in channels_per_level)


def _check_input_shape(input_shape, data_format: str, levels: int) -> tuple:
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(
            "`input_shape` must be a sequence such as (height, width, channels). "
            f"Received: input_shape={input_shape!r}"
        )
    if len(input_shape) not in (3, 4):
        raise ValueError(
            "`input_shape` must have 3 entries (2-D images) or 4 (volumes), the "
            f"batch axis excluded. Received: input_shape={input_shape!r}"
        )
    for value in input_shape:
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(
                "`input_shape` entries must be integers or None. "
                f"Received: input_shape={input_shape!r}"
            )
        if value < 1:
            raise ValueError(
                "`input_shape` entries must be positive. "
                f"Received: input_shape={input_shape!r}"
            )
    shape = tuple(None if v is None else int(v) for v in input_shape)
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


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool. Received: {name}={value!r}")
    return value


def build_unet(
    channels_per_level: Sequence[int] = (32, 64, 128, 256),
    input_shape: Sequence[int | None] = (224, 224, 3),
    n_classes: int = 2,
    with_bn: bool = True,
    attention: str | AttentionFactory | None = None,
    attention_kwargs: Mapping[str, Any] | None = None,
    data_format: str | None = None,
    name: str | None = None,
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
    channels = _check_channels_per_level(channels_per_level)
    data_format = _checks.standardize_data_format(data_format)
    shape = _check_input_shape(input_shape, data_format, len(channels))
    n_classes = _checks.check_int("n_classes", n_classes, 1)
    with_bn = _check_bool("with_bn", with_bn)
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
                x = keras.layers.BatchNormalization(
                    axis=channel_axis,
                    momentum=BN_MOMENTUM,
                    epsilon=BN_EPSILON,
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


def get_unet(
    channels_per_level: Sequence[int],
    input_shape: Sequence[int | None] = (224, 224, 3),
    n_classes: int = 2,
    with_bn: bool = True,
    *,
    data_format: str = "channels_last",
) -> keras.Model:
    """The original's ``get_unet``: a plain U-Net (see :func:`build_unet`).

    Args:
        channels_per_level: filters per level, the last the bottleneck's.
        input_shape: ``(height, width, channels)`` (channels last, as in the
            original, unless ``data_format`` says otherwise).
        n_classes: one sigmoid output channel when ``<= 2``, else softmax.
        with_bn: BatchNormalization after every convolution.
        data_format: keyword-only; the original is channels last.

    Returns:
        A functional ``keras.Model`` named ``"unet"``.

    Raises:
        ValueError, TypeError: as :func:`build_unet`.

    Example:
        >>> get_unet([4, 8, 16], input_shape=[32, 32, 3]).count_params()
        7857
    """
    return build_unet(
        channels_per_level,
        input_shape=input_shape,
        n_classes=n_classes,
        with_bn=with_bn,
        data_format=data_format,
        name="unet",
    )


def get_ssr_unet(
    channels_per_level: Sequence[int],
    r: int = 2,
    max_scale: int = 3,
    input_shape: Sequence[int | None] = (224, 224, 3),
    n_classes: int = 2,
    with_bn: bool = True,
    *,
    data_format: str = "channels_last",
) -> keras.Model:
    """The original's ``get_ssr_unet``: SSR after every encoder block.

    Args:
        channels_per_level: filters per level, the last the bottleneck's.
        r: reduction ratio of the SSR excitation MLP.
        max_scale: number of dyadic box-sum scales of the SSR.
        input_shape: ``(height, width, channels)`` (channels last, as in the
            original, unless ``data_format`` says otherwise).
        n_classes: one sigmoid output channel when ``<= 2``, else softmax.
        with_bn: BatchNormalization after every convolution of the U-Net
            (the SSR's own normalisation is always there).
        data_format: keyword-only; the original is channels last.

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
    return build_unet(
        channels_per_level,
        input_shape=input_shape,
        n_classes=n_classes,
        with_bn=with_bn,
        attention="ssr",
        attention_kwargs={"r": r, "max_scale": max_scale},
        data_format=data_format,
        name="ssr_unet",
    )
