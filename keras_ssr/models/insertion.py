"""Attention in any Keras model: :func:`insert_attention`.

The rewrite goes through ``keras.models.clone_model`` with both a
``clone_function`` and a ``call_function``, and avoids its traps (Keras
3.15): every layer is copied *and its weights copied across* (the default
``clone_function`` re-initialises them), or shared on purpose; nested models
(Sequential or Functional) are rewritten by this module itself, so that
anchors inside them are found and Sequential models, which ``call_function``
refuses, are rebuilt as Sequential; a model with ``pyramid_outputs`` (a
keras-hub ``FeaturePyramidBackbone``) comes back as a
:class:`FeaturePyramidModel` that keeps them, rather than as a bare
``Functional``.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras

from keras_ssr import _checks
from keras_ssr._serialization import register
from keras_ssr.models.registry import (
    PER_LAYER_OPTION,
    AttentionFactory,
    _make_attention,
    _resolve_attention,
)

__all__ = [
    "FeaturePyramidModel",
    "insert_attention",
    "stage_layers",
    "wide_reduction_ratio",
]

#: Ranks of a spatial feature map: batch, 1 to 3 spatial axes, channels.
SPATIAL_RANKS = (3, 4, 5)
STAGES = "stages"
#: timm's squeeze-and-excitation ratio (``rd_ratio=1/16``) ...
WIDE_R = 16
#: ... keeping at least this many hidden units (timm's ``rd_divisor``).
MIN_HIDDEN = 8
_LISTED = 12  # candidates named in an error message


def wide_reduction_ratio(channels: int) -> int:
    """The reduction ratio :func:`insert_attention` gives a layer's ``r``.

    ``r = max(1, min(16, channels // 8))``: timm's 1/16 for wide feature maps
    (ResNet50's 2048 channels get 128 hidden units), but never fewer than 8
    hidden units, so narrow maps (64 channels: ``r=8``) keep an excitation
    MLP that can still tell channels apart. The registry's ``r=2`` suits the
    papers' U-Net widths (16 to 256 channels); on ResNet50's stages it would
    add about 5.6 M parameters, ``r=16`` adds about 0.7 M.

    Args:
        channels: the channel count of the feature map, at least 1.

    Returns:
        The integer ratio, between 1 and 16.

    Example:
        >>> [wide_reduction_ratio(c) for c in (16, 64, 256, 2048)]
        [2, 8, 16, 16]
    """
    channels = _checks.check_int("channels", channels, 1)
    return max(1, min(WIDE_R, channels // MIN_HIDDEN))


@register
class FeaturePyramidModel(keras.Model):
    """A functional model that keeps a ``pyramid_outputs`` dict.

    What :func:`insert_attention` returns for a model with
    ``pyramid_outputs`` (keras-hub's ``FeaturePyramidBackbone``): the same
    inputs and outputs, and ``pyramid_outputs`` pointing into the new graph
    (after the inserted layers), which is all that keras-hub's consumers
    (``DeepLabV3Backbone``, ``RetinaNetBackbone``) and :func:`build_unet`
    read. It saves to and loads from ``.keras`` files with keras_ssr alone.
    It is not a keras-hub ``Backbone``: ``save_to_preset``/``from_preset``
    are not there, because a Backbone's config is its constructor's
    arguments, which cannot describe inserted layers.

    Args:
        *args: ``inputs`` and ``outputs``, as for a functional ``keras.Model``.
        pyramid_layers: ``{level: layer name}``; ``pyramid_outputs[level]`` is
            that layer's output in this model.
        **kwargs: the functional model's other arguments (``name``, ...).
    """

    def __init__(self, *args, pyramid_layers=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.pyramid_layers = dict(pyramid_layers or {})
        self._pyramid = None

    @property
    def pyramid_outputs(self) -> dict:
        """``{level: KerasTensor}``, as keras-hub's ``FeaturePyramidBackbone``."""
        if self._pyramid is None:
            return {k: self.get_layer(v).output for k, v in self.pyramid_layers.items()}
        return dict(self._pyramid)

    def get_config(self):
        config = super().get_config()
        config["pyramid_layers"] = dict(self.pyramid_layers)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        pyramid_layers = config.pop("pyramid_layers", {})
        model = super().from_config(config, custom_objects=custom_objects)
        model.pyramid_layers = dict(pyramid_layers)
        return model


# --- reading a model ------------------------------------------------------------


def _output(layer):
    """The layer's (first) output KerasTensor; ``None`` for several or none."""
    try:
        output = layer.output
    except (AttributeError, ValueError, RuntimeError):
        return None
    return output if isinstance(output, keras.KerasTensor) else None


def _is_spatial(layer) -> bool:
    output = _output(layer)
    return output is not None and len(output.shape) in SPATIAL_RANKS


def _is_graph_model(model) -> bool:
    return isinstance(model, keras.Sequential) or (
        isinstance(model, keras.Model)
        and getattr(model, "_nodes_by_depth", None) is not None
    )


def _flatten(model) -> list:
    """Every layer of ``model``, nested models and their layers, in call order."""
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        layers.append(layer)
        if _is_graph_model(layer):
            layers.extend(_flatten(layer))
    return layers


def _data_formats(model) -> dict[int, str]:
    """``{id(layer): data_format}``: the layer's own, else the nearest
    preceding layer's that has one, else the nearest following one's, else
    ``keras.config.image_data_format()``."""
    layers = _flatten(model)
    known = [getattr(layer, "data_format", None) for layer in layers]
    known = [f if f in _checks.DATA_FORMATS else None for f in known]
    following = next((f for f in known if f), keras.config.image_data_format())
    formats, current = {}, None
    for layer, fmt in zip(layers, known):
        current = fmt or current
        formats[id(layer)] = current or following
    return formats


def _spatial(shape, data_format: str) -> tuple:
    """The spatial sizes of a (batched) ``shape``."""
    return tuple(shape[a] for a in _checks.spatial_axes(data_format, len(shape)))


def _stride(input_spatial, output_spatial):
    """The power-of-two stride ``s`` with ``output == ceil(input / s)`` on
    every spatial axis, or ``None``."""
    if len(input_spatial) != len(output_spatial) or not output_spatial:
        return None
    if any(d is None for d in (*input_spatial, *output_spatial)):
        return None
    strides = set()
    for size, out in zip(input_spatial, output_spatial):
        if out < 1:
            return None
        stride = 2 ** round(math.log2(max(size / out, 1e-9)))
        if stride < 1 or math.ceil(size / stride) != out:
            return None
        strides.add(stride)
    return strides.pop() if len(strides) == 1 else None


def stage_layers(model: keras.Model, data_format: str | None = None) -> dict:
    """The last layer at each stride of ``model``: ``{stride: layer}``.

    The rule behind ``after="stages"`` and :func:`build_unet`'s skips: among
    ``model``'s own layers (a nested model counts as one layer), in call
    order, the last one whose output is a feature map ``2**k`` times smaller
    than the input on every spatial axis (``ceil`` division, so "same"
    padding on odd sizes counts; padding layers, which change the size by a
    pixel, do not), and no smaller than the model's output if that is a
    feature map (a squeeze-and-excitation branch's pooled 1x1 map is no
    stage). A stride counts only if some layer at it has trainable
    weights, which leaves out preprocessing (``Rescaling``,
    ``Normalization``) at the input's resolution. For keras.applications'
    ResNet50 these are ``conv1_relu`` (stride 2) and ``conv{2..5}_block*_out``;
    for MobileNetV2 and EfficientNet, the expansion activations before each
    strided depthwise convolution, as segmentation_models uses; for ConvNeXt,
    each stage's last block (its stem has stride 4).

    Args:
        model: a functional or Sequential model with one input of known
            spatial size.
        data_format: of the input; ``None`` takes the model's (its first
            layer with a ``data_format``).

    Returns:
        ``{stride: layer}`` in increasing stride order.

    Raises:
        ValueError: if the model has several inputs or an unknown spatial
            size.
    """
    inputs = list(model.inputs)
    if len(inputs) != 1:
        raise ValueError(
            "The stride rule needs a model with one input; name the layers "
            f"instead. Received: a model with {len(inputs)} inputs"
        )
    formats = _data_formats(model)
    if data_format is None:
        data_format = next(iter(formats.values()), keras.config.image_data_format())
    input_spatial = _spatial(inputs[0].shape, data_format)
    if any(size is None for size in input_spatial):
        raise ValueError(
            "The stride rule needs the input's spatial size: build the model "
            "for a fixed input size, or name the layers. Received: input shape "
            f"{tuple(inputs[0].shape)}"
        )
    last, weighted = {}, set()
    for layer in model.layers:
        output = _output(layer)
        if output is None or len(output.shape) != len(inputs[0].shape):
            continue
        stride = _stride(input_spatial, _spatial(output.shape, data_format))
        if stride is None:
            continue
        last[stride] = layer
        if layer.trainable_weights:
            weighted.add(stride)
    # A squeeze-and-excitation branch's pooled (1x1) map is no stage: no
    # stride beyond the output's counts when the output is a feature map.
    deepest = max(
        (s for s, layer in last.items() if layer is model.layers[-1]), default=None
    )
    return {
        s: last[s]
        for s in sorted(last)
        if s in weighted and (deepest is None or s <= deepest)
    }


def _pyramid(model) -> dict | None:
    pyramid = getattr(model, "pyramid_outputs", None)
    if isinstance(pyramid, Mapping) and pyramid:
        return dict(pyramid)
    return None


def _producer(model, tensor):
    for layer in model.layers:
        if _output(layer) is tensor:
            return layer
    raise ValueError(
        f"No layer of {model.name!r} produces its pyramid output {tensor!r}; "
        "name the layers instead of after='stages'."
    )


def _candidates(layers, near: str | None = None) -> str:
    names = [layer.name for layer in layers if _is_spatial(layer)]
    close = difflib.get_close_matches(near, names, n=_LISTED) if near else []
    shown = close or names[:_LISTED]
    more = "" if len(shown) == len(names) else f", ... ({len(names)} in all)"
    label = "closest layers with a spatial output" if close else "layers with a "
    label = label if close else label + "spatial output"
    return f"{label}: {shown}{more}"


def _select(model, after, layers) -> list:
    """The anchor layers ``after`` names, in call order, each spatial."""
    if isinstance(after, str) and after == STAGES:
        pyramid = _pyramid(model)
        if pyramid is not None:
            return [_producer(model, t) for t in pyramid.values()]
        return list(stage_layers(model).values())
    if isinstance(after, str):
        try:
            pattern = re.compile(after)
        except re.error as error:
            raise ValueError(
                f"`after` is not a valid regular expression ({error}). "
                f"Received: after={after!r}"
            ) from None
        chosen = [layer for layer in layers if pattern.fullmatch(layer.name)]
        if not chosen:
            raise ValueError(
                f"`after` matches no layer name (a string other than 'stages' "
                f"is a regular expression, matched in full). "
                f"{_candidates(layers, after)}. Received: after={after!r}"
            )
    elif callable(after):
        chosen = [layer for layer in layers if after(layer)]
        if not chosen:
            raise ValueError(
                "`after` returned True for no layer. "
                f"{_candidates(layers)}. Received: after={after!r}"
            )
    elif isinstance(after, Sequence) and all(isinstance(n, str) for n in after):
        if not after:
            raise ValueError("`after` must name at least one layer. Received: after=[]")
        by_name = {}
        for layer in layers:
            by_name.setdefault(layer.name, []).append(layer)
        for name in after:
            if name not in by_name:
                raise ValueError(
                    f"No layer is named {name!r}. {_candidates(layers, name)}. "
                    f"Received: after={list(after)!r}"
                )
        wanted = set(after)
        chosen = [layer for layer in layers if layer.name in wanted]
    else:
        raise TypeError(
            "`after` must be 'stages', a regular expression, a list of layer "
            "names or a callable taking a layer. Received: "
            f"after={after!r} (of type {type(after).__name__})"
        )
    flat = [layer for layer in chosen if not _is_spatial(layer)]
    if flat:
        output = _output(flat[0])
        shape = None if output is None else tuple(output.shape)
        raise ValueError(
            f"Layer {flat[0].name!r} has no spatial output (output shape "
            f"{shape}): channel attention needs a (batch, *spatial, channels) "
            f"map. {_candidates(layers, flat[0].name)}. Received: after={after!r}"
        )
    return chosen


# --- rewriting ------------------------------------------------------------------


def _has_parameter(factory, name: str) -> bool:
    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


class _Rewriter:
    """One insertion: the attention to make, the anchors, and the bookkeeping
    of copies (whose weights are set once the new graph exists)."""

    def __init__(self, factory, kwargs, user_kwargs, anchors, formats, share, spec):
        self.factory = factory
        self.kwargs = kwargs
        self.auto_r = PER_LAYER_OPTION not in user_kwargs and _has_parameter(
            factory, PER_LAYER_OPTION
        )
        self.anchors = {id(layer) for layer in anchors}
        self.formats = formats
        self.share = share
        self.spec = spec  # the user's `attention`, for error messages
        self.copies = []  # (original, copy) pairs of plain layers
        self.inserted = {}  # anchor name -> inserted layer name
        self.attention_layers = []
        self.used_names = set()

    def attention_for(self, anchor, output):
        data_format = self.formats.get(id(anchor), keras.config.image_data_format())
        kwargs = dict(self.kwargs)
        if self.auto_r:
            channels = output.shape[_checks.channel_axis(data_format)]
            kwargs[PER_LAYER_OPTION] = wide_reduction_ratio(channels)
        name = f"{anchor.name}_attention"
        suffix = 0
        while name in self.used_names:
            suffix += 1
            name = f"{anchor.name}_attention_{suffix}"
        self.used_names.add(name)
        layer = _make_attention(
            self.factory,
            kwargs,
            name,
            data_format,
            len(output.shape) - 2,
            self.spec,
            dtype=anchor.dtype_policy,
        )
        self.inserted.setdefault(anchor.name, layer.name)
        self.attention_layers.append(layer)
        return layer

    def layer(self, layer, sources):
        """The new model's counterpart of ``layer``; ``sources`` maps it back."""
        if _is_graph_model(layer):
            new = self.model(layer)
        elif self.share or not isinstance(layer, keras.layers.Layer):
            new = layer
        else:
            new = layer.__class__.from_config(layer.get_config())
            self.copies.append((layer, new))
        sources[id(new)] = layer
        return new

    def model(self, model, extra_outputs=()):
        """``model`` rewritten; ``extra_outputs`` (tensors of its graph) are
        appended to the new model's outputs, rewritten."""
        if isinstance(model, keras.Sequential):
            return self._sequential(model)
        sources = {}

        def call(op, *args, **kwargs):
            outputs = op(*args, **kwargs)
            source = sources.get(id(op), op)
            if id(source) in self.anchors:
                outputs = self.attention_for(source, outputs)(outputs)
            return outputs

        base = model
        if extra_outputs:
            base = keras.Model(model.inputs, [*model.outputs, *extra_outputs])
        return keras.models.clone_model(
            base,
            clone_function=lambda layer: self.layer(layer, sources),
            call_function=call,
        )

    def _sequential(self, model):
        inputs = getattr(model, "inputs", None)
        if not inputs:
            raise ValueError(
                f"The Sequential model {model.name!r} is not built: give it an "
                "input shape (keras.Input as its first layer) or call it once."
            )
        layers = [keras.Input(batch_shape=inputs[0].shape, dtype=inputs[0].dtype)]
        sources = {}
        for layer in model.layers:
            layers.append(self.layer(layer, sources))
            if id(layer) in self.anchors:
                layers.append(self.attention_for(layer, _output(layer)))
        return keras.Sequential(layers, name=model.name, trainable=model.trainable)

    def copy_weights(self):
        for original, copy in self.copies:
            copy.set_weights(original.get_weights())
            copy.trainable = original.trainable


def _insert(model, attention, after, attention_kwargs, share_layers, name):
    """:func:`insert_attention`, also returning ``{anchor name: attention
    layer name}``."""
    if not isinstance(model, keras.Model) or not _is_graph_model(model):
        raise TypeError(
            "`model` must be a functional or Sequential keras.Model (a "
            "subclassed model's graph cannot be rewritten). Received: "
            f"model={model!r} (of type {type(model).__name__})"
        )
    share_layers = _checks.check_bool("share_layers", share_layers)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"`name` must be a string or None. Received: name={name!r}")
    factory, kwargs = _resolve_attention(attention, attention_kwargs)
    if factory is None:
        raise ValueError(
            "`attention` must name, or be, an attention layer to insert. "
            f"Received: attention={attention!r}"
        )
    layers = _flatten(model)
    anchors = _select(model, after, layers)
    rewriter = _Rewriter(
        factory,
        kwargs,
        dict(attention_kwargs or {}),
        anchors,
        _data_formats(model),
        share_layers,
        attention,
    )
    rewriter.used_names = {layer.name for layer in layers}
    pyramid = _pyramid(model)
    if pyramid is not None and not isinstance(model, keras.Sequential):
        clone = rewriter.model(model, tuple(pyramid.values()))
        n = len(model.outputs)
        outputs = clone.outputs[:n]
        levels = {}
        for key, tensor, new in zip(pyramid, pyramid.values(), clone.outputs[n:]):
            source = _producer(model, tensor).name
            levels[key] = (rewriter.inserted.get(source, source), new)
        new_model = FeaturePyramidModel(
            clone.inputs[0] if len(clone.inputs) == 1 else clone.inputs,
            outputs[0] if n == 1 else outputs,
            pyramid_layers={k: v[0] for k, v in levels.items()},
            name=name or model.name,
        )
        new_model._pyramid = {k: v[1] for k, v in levels.items()}
    else:
        new_model = rewriter.model(model)
        if name is not None:
            new_model.name = name
    rewriter.copy_weights()
    return new_model, dict(rewriter.inserted)


def insert_attention(
    model: keras.Model,
    attention: str | AttentionFactory,
    after: str | Sequence[str] | Callable[[keras.layers.Layer], bool] = STAGES,
    *,
    attention_kwargs: Mapping[str, Any] | None = None,
    share_layers: bool = False,
    name: str | None = None,
) -> keras.Model:
    """A new model: ``model`` with an attention layer after chosen layers.

    Each chosen (anchor) layer's output goes through a new attention layer,
    named ``{anchor}_attention``, before whatever read it; the model's
    outputs, if an anchor made them, too. Works on functional and Sequential
    models, and inside nested ones (ConvNeXt's stem and downsampling blocks
    are Sequential models inside a functional one). ``model`` itself is not
    changed.

    Each inserted layer takes the ``dtype_policy`` of its anchor (so a
    ``mixed_float16`` model gets ``mixed_float16`` attention) and the
    ``data_format`` of the nearest layer that states one, not the global
    settings. Unless ``attention_kwargs`` sets ``r``, an attention with an
    ``r`` argument gets :func:`wide_reduction_ratio` of its anchor's channels
    (timm's 1/16, at least 8 hidden units), not the registry's ``r=2``.

    Weights: with ``share_layers=False`` (the default) every layer is a copy
    holding a copy of the original's weights (equal array-wise); training one
    model leaves the other as it was. With ``share_layers=True`` the new
    model calls ``model``'s own layer objects, which then belong to both
    models and share their variables (no memory for a second copy; training
    one trains the other). A shared layer's ``.output`` still points into
    ``model``'s graph (it is its first call): read intermediate outputs of
    the new model from the new model's layers, or use copies.

    Placement: ``after`` picks where the attention goes, so "after a
    residual block's add" is ``after=r"conv\\d_block\\d+_out"`` on
    keras.applications' ResNet50 (each block's output, after its add and
    ReLU), and SE-ResNet's placement, on the residual branch before the add,
    is ``after=r"conv\\d_block\\d+_3_bn"`` (the branch's last layer). See
    docs/attention_in_your_model.md.

    Args:
        model: a functional or Sequential ``keras.Model``, built (with an
            input shape).
        attention: a registered name (:func:`attention_names`), a layer class,
            or a callable returning a new layer; it receives
            ``attention_kwargs`` and, where its signature takes them,
            ``data_format``, ``name`` and ``dtype``.
        after: the anchors. ``"stages"``: the last layer at each stride
            (:func:`stage_layers`), or the layers giving ``pyramid_outputs``
            for a keras-hub ``FeaturePyramidBackbone``; any other string: a
            regular expression that must match a layer's whole name; a list of
            layer names; or a callable ``layer -> bool``. Layers inside nested
            models are matched too. Every anchor needs a single spatial output
            (rank 3 to 5).
        attention_kwargs: keyword arguments of the attention layer, over the
            registry's defaults (``name`` and ``data_format`` are set here).
        share_layers: share ``model``'s layer objects instead of copying them.
        name: the new model's name; ``None`` keeps ``model``'s.

    Returns:
        A functional or Sequential ``keras.Model`` (a :class:`
        FeaturePyramidModel` when ``model`` has ``pyramid_outputs``), compiled
        as ``model`` was.

    Raises:
        TypeError: for a subclassed model or arguments of the wrong type.
        ValueError: for an ``after`` that matches no layer or a layer with no
            spatial output (the message lists candidates), no attention, an
            unbuilt Sequential model, or an attention that does not support
            the anchor's rank.

    Example:
        >>> base = keras.Sequential([
        ...     keras.Input((16, 16, 3)),
        ...     keras.layers.Conv2D(32, 3, strides=2, name="conv"),
        ...     keras.layers.GlobalAveragePooling2D(name="pool"),
        ... ])
        >>> model = insert_attention(base, "se", after=["conv"])
        >>> [layer.name for layer in model.layers]
        ['conv', 'conv_attention', 'pool']
        >>> model.get_layer("conv_attention").r
        4
    """
    return _insert(model, attention, after, attention_kwargs, share_layers, name)[0]
