"""Standard encoders for :func:`build_unet`: keras.applications by name,
their skip features, and input channels other than RGB."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from keras_ssr import _checks
from keras_ssr.models.insertion import (
    _data_formats,
    _insert,
    _output,
    _pyramid,
    _spatial,
    _stride,
    stage_layers,
)

__all__ = [
    "ENCODERS",
    "adapt_input_channels",
    "encoder_names",
    "encoder_options",
]

#: keras.applications encoders by name: the constructor, and (for the ones
#: tested here) the layers whose outputs are the skip features at strides 2,
#: 4, 8 and 16 (``None``: the encoder has no feature at that stride). These
#: are the names segmentation_models uses; the tests check that the stride
#: rule (:func:`stage_layers`) finds the same. The deepest feature is the
#: encoder's output (``include_top=False``). Encoders without a table entry
#: use the stride rule, which needs a static input size.
ENCODERS: dict[str, tuple[str, tuple | None]] = {
    "resnet50": (
        "ResNet50",
        ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out"),
    ),
    "resnet101": ("ResNet101", None),
    "resnet152": ("ResNet152", None),
    "mobilenetv2": (
        "MobileNetV2",
        (
            "block_1_expand_relu",
            "block_3_expand_relu",
            "block_6_expand_relu",
            "block_13_expand_relu",
        ),
    ),
    "efficientnetb0": (
        "EfficientNetB0",
        (
            "block2a_expand_activation",
            "block3a_expand_activation",
            "block4a_expand_activation",
            "block6a_expand_activation",
        ),
    ),
    **{f"efficientnetb{i}": (f"EfficientNetB{i}", None) for i in range(1, 8)},
    "convnexttiny": (
        "ConvNeXtTiny",
        (
            None,
            "convnext_tiny_stage_0_block_2_identity",
            "convnext_tiny_stage_1_block_2_identity",
            "convnext_tiny_stage_2_block_8_identity",
        ),
    ),
    "convnextsmall": ("ConvNeXtSmall", None),
    "convnextbase": ("ConvNeXtBase", None),
}
_TABLE_STRIDES = (2, 4, 8, 16)
#: The deepest stride of every named encoder (its output's).
ENCODER_STRIDE = 32
RGB = 3
#: Constructor arguments that :func:`build_unet` sets ...
SET_BY_BUILDER = ("include_top", "weights", "input_shape", "input_tensor")
#: ... and those an encoder U-Net has no use for: the classifier's, a pooled
#: (flat) output, and the model's name, which prefixes ConvNeXt's layer names
#: (the skips').
NOT_OPTIONS = ("pooling", "classes", "classifier_activation", "name")


def encoder_names() -> list[str]:
    """The encoder names :func:`build_unet` accepts (keras.applications)."""
    return sorted(ENCODERS)


def _encoder_key(encoder) -> str:
    key = encoder.strip().lower() if isinstance(encoder, str) else encoder
    if key not in ENCODERS:
        raise ValueError(
            f"Unknown encoder {encoder!r}. Known names: {encoder_names()}; or pass "
            f"a keras.Model. Received: encoder={encoder!r}"
        )
    return key


def encoder_options(
    encoder: str | None, options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The effective constructor options of a named encoder, checked.

    The options of an encoder are the keyword arguments of its
    keras.applications constructor but those :func:`build_unet` sets
    (``include_top``, ``weights``, ``input_shape``, ``input_tensor``) and
    those a U-Net has no use for (``pooling``, ``classes``,
    ``classifier_activation``, ``name``): MobileNetV2's ``alpha``,
    ConvNeXt's ``include_preprocessing``, none for ResNet and EfficientNet.
    Each takes its value from ``options``, else the constructor's default.
    A value must have its default's type (an integer is taken for a float);
    other bad values are the constructor's errors when the encoder is built.
    ``keras-ssr cv`` records this mapping in ``config.json``; passed as
    ``encoder_kwargs`` to :func:`build_unet` it builds the same encoder.

    Args:
        encoder: a name of :func:`encoder_names`; ``None`` (no encoder) has
            no options.
        options: the options to set (``None``: the defaults).

    Returns:
        Every option of the encoder and its value, in signature order.

    Raises:
        ValueError: for an unknown encoder name, an option the encoder does
            not take (its options are listed; those :func:`build_unet` sets
            are named as such), or options for no encoder.
        TypeError: if ``options`` is not a mapping of names, or a value is
            not of its default's type.

    Example:
        >>> encoder_options("mobilenetv2", {"alpha": 0.35})
        {'alpha': 0.35}
        >>> encoder_options("resnet50")
        {}
    """
    if options is not None and not (
        isinstance(options, Mapping) and all(isinstance(k, str) for k in options)
    ):
        raise TypeError(
            "The encoder options must be a mapping of option names to values or "
            f"None. Received: options={options!r}"
        )
    options = dict(options or {})
    if encoder is None:
        if options:
            raise ValueError(
                "There is no encoder, so there are no encoder options to set. "
                f"Received: options={options!r}"
            )
        return {}
    key = _encoder_key(encoder)
    constructor = getattr(keras.applications, ENCODERS[key][0])
    values = {
        p.name: p.default
        for p in inspect.signature(constructor).parameters.values()
        if p.default is not inspect.Parameter.empty
        and p.name not in SET_BY_BUILDER + NOT_OPTIONS
    }
    reserved = sorted(set(SET_BY_BUILDER) & set(options))
    if reserved:
        raise ValueError(
            f"The encoder options must not set {reserved}: build_unet sets them "
            f"(the weights are `encoder_weights`). Received: options={options!r}"
        )
    unknown = [k for k in options if k not in values]
    if unknown:
        raise ValueError(
            f"The encoder {key!r} (keras.applications.{ENCODERS[key][0]}) takes no "
            f"option {', '.join(map(repr, unknown))}; its options are "
            f"{', '.join(values) or 'none'}. Received: options={options!r}"
        )
    for name, value in options.items():
        values[name] = _typed(name, value, values[name])
    return values


def _typed(name: str, value, default):
    """``value`` checked against its default's type (int taken for float)."""
    if default is None:
        return value
    if isinstance(default, bool) or not isinstance(default, float):
        if type(value) is not type(default):
            raise TypeError(
                f"The encoder option `{name}` must be a {type(default).__name__}, "
                f"as its default {default!r}. Received: {name}={value!r}"
            )
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"The encoder option `{name}` must be a number. Received: {name}={value!r}"
        )
    return float(value)


def adapt_input_channels(kernel, in_channels: int, axis: int = -2) -> np.ndarray:
    """A first convolution's RGB kernel for ``in_channels`` input channels.

    segmentation_models.pytorch's rule (``patch_first_conv``): one channel
    takes the sum of the RGB kernels, so that a grey image ``g`` replicated
    as ``(g, g, g)`` gives the same response; any other count ``c`` takes
    the RGB kernels in turn (channel ``i`` gets ``kernel[i % 3]``), scaled by
    ``3 / c``, so that ``c / 3`` copies of an RGB image give the same
    response.

    Args:
        kernel: the pretrained kernel (a NumPy array or a tensor) with 3 entries
            along ``axis``.
        in_channels: the new number of input channels, at least 1.
        axis: the input-channel axis (``-2`` for Keras convolution kernels,
            ``(*window, in, out)``).

    Returns:
        A NumPy array of ``kernel``'s dtype with ``in_channels`` entries along
        ``axis``.

    Raises:
        ValueError: if ``kernel`` does not have 3 entries along ``axis`` or
            ``in_channels < 1``.

    Example:
        >>> kernel = np.ones((3, 3, 3, 8), "float32")
        >>> float(adapt_input_channels(kernel, 1)[0, 0, 0, 0])
        3.0
        >>> adapt_input_channels(kernel, 6).shape
        (3, 3, 6, 8)
    """
    kernel = np.asarray(keras.ops.convert_to_numpy(kernel))
    if isinstance(in_channels, bool) or not isinstance(in_channels, int | np.integer):
        raise TypeError(f"`in_channels` must be an integer. Received: {in_channels!r}")
    if in_channels < 1:
        raise ValueError(f"`in_channels` must be >= 1. Received: {in_channels}")
    if kernel.shape[axis] != RGB:
        raise ValueError(
            f"The kernel must have {RGB} input channels along axis {axis}. "
            f"Received: kernel of shape {kernel.shape}"
        )
    if in_channels == 1:
        return kernel.sum(axis=axis, keepdims=True)
    order = np.arange(in_channels) % RGB
    repeated = np.take(kernel, order, axis=axis) * (RGB / in_channels)
    return repeated.astype(kernel.dtype)


@contextlib.contextmanager
def _image_data_format(data_format: str):
    """keras.applications read the global setting: set it while they build."""
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format(data_format)
    try:
        yield
    finally:
        keras.config.set_image_data_format(previous)


def _transfer_rgb_weights(rgb: keras.Model, model: keras.Model, channels: int):
    """``rgb``'s weights into ``model``, the same encoder for ``channels``
    inputs: equal shapes are copied, the first convolution's kernel adapted
    (:func:`adapt_input_channels`), per-channel input statistics (a
    ``Normalization`` layer's RGB mean and variance) averaged."""
    if len(rgb.weights) != len(model.weights):
        raise ValueError(
            f"Cannot move the RGB weights of {rgb.name!r} to its {channels}-channel "
            "version: their layers differ."
        )
    adapted = False
    for source, target in zip(rgb.weights, model.weights):
        value = keras.ops.convert_to_numpy(source)
        old, new = tuple(source.shape), tuple(target.shape)
        if old == new:
            target.assign(value)
        elif old == (RGB,) and new == (channels,):
            target.assign(np.full(new, value.mean(), value.dtype))
        elif (
            not adapted
            and len(old) >= 3
            and old[-2] == RGB
            and new[-2] == channels
            and old[:-2] + old[-1:] == new[:-2] + new[-1:]
        ):
            target.assign(adapt_input_channels(value, channels))
            adapted = True
        else:
            raise ValueError(
                f"Cannot move weight {source.path!r} of shape {old} to "
                f"{channels} input channels (shape {new})."
            )


def _named_encoder(key, input_shape, data_format, weights, kwargs):
    constructor = getattr(keras.applications, ENCODERS[key][0])
    # The channel axis of the unbatched shape.
    channel_axis = _checks.channel_axis(data_format, len(input_shape) + 1) - 1
    channels = input_shape[channel_axis]
    with _image_data_format(data_format):
        if weights is None or channels == RGB:
            return constructor(
                include_top=False, weights=weights, input_shape=input_shape, **kwargs
            )
        rgb_shape = list(input_shape)
        rgb_shape[channel_axis] = RGB
        rgb = constructor(
            include_top=False, weights=weights, input_shape=tuple(rgb_shape), **kwargs
        )
        model = constructor(
            include_top=False, weights=None, input_shape=input_shape, **kwargs
        )
    _transfer_rgb_weights(rgb, model, channels)
    return model


def build_encoder(
    encoder,
    input_shape,
    data_format: str,
    weights=None,
    encoder_kwargs: Mapping[str, Any] | None = None,
) -> keras.Model:
    """The encoder model :func:`build_unet` decodes: by name, or as given."""
    if encoder_kwargs is not None and not isinstance(encoder_kwargs, Mapping):
        raise TypeError(
            "`encoder_kwargs` must be a mapping or None. "
            f"Received: encoder_kwargs={encoder_kwargs!r}"
        )
    kwargs = dict(encoder_kwargs or {})
    if isinstance(encoder, keras.Model):
        if weights is not None or kwargs:
            raise ValueError(
                "`encoder_weights` and `encoder_kwargs` are for an encoder "
                "given by name; a model encoder is used as it is. Received: "
                f"encoder_weights={weights!r}, encoder_kwargs={kwargs!r}"
            )
        if len(encoder.inputs) != 1:
            raise ValueError(
                "The encoder must have one input. Received: an encoder with "
                f"{len(encoder.inputs)} inputs"
            )
        if input_shape is not None and tuple(input_shape) != tuple(
            encoder.inputs[0].shape[1:]
        ):
            raise ValueError(
                "`input_shape` must be the encoder's input shape "
                f"{tuple(encoder.inputs[0].shape[1:])} (or None). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        return encoder
    if not isinstance(encoder, str):
        raise TypeError(
            "`encoder` must be None, an encoder name or a keras.Model. "
            f"Received: encoder={encoder!r} (of type {type(encoder).__name__})"
        )
    key = _encoder_key(encoder)
    try:
        kwargs = encoder_options(key, kwargs)
    except (ValueError, TypeError) as error:
        raise type(error)(f"`encoder_kwargs`: {error}") from None
    return _named_encoder(key, tuple(input_shape), data_format, weights, kwargs)


def _named(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        raise ValueError(
            f"The encoder {model.name!r} has no layer named {name!r}. "
            f"Received: skips including {name!r}"
        ) from None


def encoder_features(
    encoder: keras.Model,
    key: str | None,
    skips: Sequence[str] | None,
    data_format: str,
    attention,
    attention_kwargs,
):
    """``(encoder, deepest feature, {stride: skip feature}, deepest stride)``,
    with the attention inserted in the encoder after each of these features
    when ``attention`` is given."""
    pyramid = _pyramid(encoder) if skips is None else None
    if pyramid is not None:
        if attention is not None:
            encoder, _ = _insert(
                encoder, attention, "stages", attention_kwargs, False, None
            )
            pyramid = encoder.pyramid_outputs
        levels = {}
        for level, tensor in pyramid.items():
            if not (level[:1] == "P" and level[1:].isdigit()):
                raise ValueError(
                    "The encoder's pyramid_outputs must be keyed 'P<n>' (stride "
                    f"2**n). Received: key {level!r}"
                )
            levels[2 ** int(level[1:])] = tensor
        deepest = max(levels)
        return encoder, levels.pop(deepest), levels, deepest

    table = ENCODERS.get(key, (None, None))[1] if skips is None else None
    deepest_layer = encoder.layers[-1]
    outputs = encoder.outputs
    if len(outputs) != 1 or _output(deepest_layer) is not outputs[0]:
        raise ValueError(
            "The encoder must have one output, made by its last layer. Received: "
            f"{len(outputs)} outputs"
        )
    if table is not None:
        strides = {s: n for s, n in zip(_TABLE_STRIDES, table) if n is not None}
        deepest = ENCODER_STRIDE
    else:
        if skips is None:
            stages = stage_layers(encoder, data_format)
            if deepest_layer not in stages.values():
                raise ValueError(
                    "The encoder's output is not the last layer at its stride; "
                    "give `skips` by name."
                )
            layers = list(stages.values())[:-1]
        else:
            if isinstance(skips, str) or not all(isinstance(n, str) for n in skips):
                raise TypeError(
                    f"`skips` must be a list of layer names. Received: skips={skips!r}"
                )
            layers = [_named(encoder, n) for n in skips]
        size = _spatial(encoder.inputs[0].shape, data_format)
        strides = {}
        for layer in [*layers, deepest_layer]:
            stride = _stride(size, _spatial(_output(layer).shape, data_format))
            if stride is None:
                raise ValueError(
                    f"Layer {layer.name!r}'s output is not the input size divided "
                    "by a power of two (or the input size is unknown): give the "
                    "encoder a static input size divisible by its deepest stride. "
                    f"Received: input shape {tuple(encoder.inputs[0].shape)}"
                )
            strides[stride] = layer.name
        deepest = max(strides)
        if strides[deepest] != deepest_layer.name or len(strides) != len(layers) + 1:
            raise ValueError(
                "Each skip needs its own stride, smaller than the encoder "
                f"output's. Received: skips at strides {strides}"
            )
        strides.pop(deepest)
    anchors = [*strides.values(), deepest_layer.name]
    inserted = {}
    if attention is not None:
        encoder, inserted = _insert(
            encoder, attention, anchors, attention_kwargs, False, None
        )

    def feature(name):
        return _output(encoder.get_layer(inserted.get(name, name)))

    skips_by_stride = {s: feature(n) for s, n in strides.items()}
    return encoder, feature(deepest_layer.name), skips_by_stride, deepest


def data_format_of(encoder: keras.Model) -> str | None:
    """The data format of a given encoder (its layers'), or ``None``."""
    formats = set(_data_formats(encoder).values())
    return formats.pop() if len(formats) == 1 else None
