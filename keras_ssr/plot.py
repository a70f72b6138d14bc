"""Feature maps and their singularity-strength maps, for any 2-D Keras model.

:func:`singularity_maps` draws the figure of the SSR paper: the input image
and its mask, then, for each depth of the network, a few feature maps (top
row) above their local singularity-strength (Hölder exponent) maps (bottom
row), and, for layers that gate every pixel (Multifractal recalibration),
their gates (third row). :func:`depth_features` finds and computes the
feature maps it shows.

matplotlib is optional (``pip install keras-ssr[plot]``); it is imported
only when a figure is drawn, and only its object-oriented API with the Agg
canvas is used: no pyplot state, no window, any matplotlib backend setting.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from keras_ssr import _checks
from keras_ssr import ops as ssr_ops
from keras_ssr.layers import (
    LocalSingularityStrength,
    MapGate,
    MultifractalRecalibration,
)

__all__ = ["DepthFeatures", "depth_features", "singularity_maps"]

ALPHA_SOURCES = ("ops", "model")
DEFAULT_MAX_SCALE = 3


@dataclass
class DepthFeatures:
    """The feature map of one depth of a network, for one image.

    Attributes:
        name: the layer whose input (SSR layers) or output it is.
        features: float32 array ``(height, width, channels)``.
        ssr_layer: the SSR layer that reads this map, if any.
        gate_layer: the per-pixel gate layer (Multifractal recalibration)
            that reads this map, if any.
    """

    name: str
    features: np.ndarray
    ssr_layer: keras.layers.Layer | None = None
    gate_layer: keras.layers.Layer | None = None


def import_matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "Drawing singularity maps needs matplotlib. Install it with: "
            "pip install keras-ssr[plot]"
        ) from error
    return Figure, FigureCanvasAgg


def _ssr_layers(model: keras.Model) -> list:
    """Layers whose channel gates come from a singularity-strength map
    (:class:`~keras_ssr.layers.MapGate`: its ``alpha`` sub-layer), in order."""
    return [layer for layer in model.layers if isinstance(layer, MapGate)]


def _gate_layers(model: keras.Model) -> list:
    """Layers with per-pixel gates (Multifractal recalibration), in order."""
    return [
        layer for layer in model.layers if isinstance(layer, MultifractalRecalibration)
    ]


def _encoder_outputs(model: keras.Model, data_format: str) -> list:
    """``(name, tensor)`` of the last layer at each resolution, going down.

    Layers are visited in the model's (topological) order; the descent ends
    at the first layer whose resolution grows again (a decoder). If there
    is one, the deepest level (the bottleneck) is dropped, so a U-Net gives
    the outputs of its encoder blocks.
    """
    levels: list[list] = []
    ascended = False
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            output = layer.output
        except (AttributeError, ValueError):
            continue
        shape = getattr(output, "shape", None)
        if shape is None or len(shape) != 4:
            continue
        height = shape[_checks.spatial_axes(data_format, 4)[0]]
        if height is None:
            continue
        if not levels or height < levels[-1][0]:
            levels.append([height, layer.name, output])
        elif height == levels[-1][0]:
            levels[-1][1:] = [layer.name, output]
        else:
            ascended = True
            break
    if ascended and len(levels) > 1:
        levels = levels[:-1]
    return [(name, tensor) for _, name, tensor in levels]


def _as_batch(image, model: keras.Model) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 3:
        array = array[None]
    expected = tuple(model.inputs[0].shape[1:]) if model.inputs else None
    if array.ndim != 4 or array.shape[0] != 1:
        raise ValueError(
            "`image` must be one 2-D image, (height, width, channels) or "
            f"(1, height, width, channels) in the model's data format. "
            f"Received: image.shape={np.shape(image)}"
        )
    if expected is not None and len(expected) == 3:
        for got, want in zip(array.shape[1:], expected):
            if want is not None and got != want:
                raise ValueError(
                    f"`image` does not fit the model's input shape {expected}. "
                    f"Received: image.shape={np.shape(image)}"
                )
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(
            f"`image` must hold numbers. Received: image.dtype={array.dtype}"
        )
    return array.astype(np.float32)


def _check_model(model) -> keras.Model:
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a keras.Model. Received: model={model!r} "
            f"(of type {type(model).__name__})"
        )
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            "`model` must be a functional or Sequential keras.Model with known "
            f"inputs (a subclassed model has no graph to read). Received: "
            f"model={model.name!r}"
        )
    if len(inputs[0].shape) != 4:
        raise ValueError(
            "`model` must take 2-D images, inputs of rank 4. Received: model "
            f"with input shape {tuple(inputs[0].shape)}"
        )
    return model


def depth_features(
    model: keras.Model,
    image,
    *,
    layer_names: Sequence[str] | None = None,
    data_format: str | None = None,
) -> list[DepthFeatures]:
    """The feature maps of ``image`` at each depth of ``model``.

    Which maps: with ``layer_names``, the outputs of those layers; else, if
    the model has SSR layers (any :class:`~keras_ssr.layers.MapGate`, whose
    ``alpha`` sub-layer is a singularity-strength map, e.g. an SSR-U-Net),
    the *inputs* of those layers, which are the maps whose singularity
    strength the SSR computes; else the inputs of its per-pixel gate layers
    (:class:`~keras_ssr.layers.MultifractalRecalibration`); else the output
    of the last layer at each resolution while the resolution decreases,
    the deepest level (bottleneck) excluded when the network then upsamples
    again (for a U-Net: each encoder block).

    Args:
        model: a functional or Sequential ``keras.Model`` on 2-D images.
        image: one image, ``(height, width, channels)`` or with a batch axis
            of 1, in the model's data format.
        layer_names: explicit layers whose outputs to show, in order.
        data_format: ``"channels_last"`` or ``"channels_first"`` of the
            model; ``None`` takes ``keras.config.image_data_format()``.

    Returns:
        One :class:`DepthFeatures` per depth, features channels-last.

    Raises:
        TypeError: if ``model`` is not a ``keras.Model`` or ``image`` is not
            numeric.
        ValueError: for a model without a readable graph or 2-D input, an
            ``image`` of the wrong shape, an unknown layer name, or no
            feature map found.

    Example:
        >>> from keras_ssr.models import get_ssr_unet
        >>> model = get_ssr_unet([4, 8, 16], input_shape=[32, 32, 1])
        >>> [d.name for d in depth_features(model, np.zeros((32, 32, 1)))]
        ['encoder_0_attention', 'encoder_1_attention']
    """
    model = _check_model(model)
    data_format = _checks.standardize_data_format(data_format)
    batch = _as_batch(image, model)
    sources: list[tuple[str, object, object, object]] = []
    if layer_names is not None:
        if isinstance(layer_names, str) or not isinstance(layer_names, Sequence):
            raise TypeError(
                "`layer_names` must be a sequence of layer names. "
                f"Received: layer_names={layer_names!r}"
            )
        known = {layer.name: layer for layer in model.layers}
        for name in layer_names:
            if name not in known:
                raise ValueError(
                    f"`layer_names` holds {name!r}, which is not a layer of "
                    f"{model.name!r}. Received: layer_names={list(layer_names)!r}"
                )
            sources.append((name, known[name].output, None, None))
    else:
        ssr, gated = _ssr_layers(model), _gate_layers(model)
        if ssr:
            sources = [(layer.name, layer.input, layer, None) for layer in ssr]
        elif gated:
            sources = [(layer.name, layer.input, None, layer) for layer in gated]
        else:
            sources = [
                (name, tensor, None, None)
                for name, tensor in _encoder_outputs(model, data_format)
            ]
    for name, tensor, _, _ in sources:
        if len(tensor.shape) != 4:
            raise ValueError(
                f"Layer {name!r} gives a map of shape {tuple(tensor.shape)}, not "
                "(batch, height, width, channels)."
            )
    if not sources:
        raise ValueError(
            f"Found no 2-D feature maps in {model.name!r}; pass `layer_names`."
        )
    extractor = keras.Model(model.inputs[0], [source[1] for source in sources])
    outputs = extractor(keras.ops.convert_to_tensor(batch), training=False)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    result = []
    for (name, _, ssr_layer, gate_layer), output in zip(sources, outputs, strict=True):
        features = keras.ops.convert_to_numpy(output)[0].astype(np.float32)
        if data_format == "channels_first":
            features = np.moveaxis(features, 0, -1)
        result.append(DepthFeatures(name, features, ssr_layer, gate_layer))
    return result


def _pick_channels(features: np.ndarray, count: int) -> list[int]:
    """The ``count`` channels of largest spatial standard deviation."""
    spread = features.reshape(-1, features.shape[-1]).std(axis=0)
    order = np.argsort(-spread, kind="stable")
    return sorted(int(c) for c in order[: min(count, features.shape[-1])])


def _in_layer_format(features: np.ndarray, layer):
    """``features`` (channels last) as a batch of one in ``layer``'s format."""
    if layer.data_format == "channels_first":
        return keras.ops.convert_to_tensor(np.moveaxis(features, -1, 0)[None])
    return keras.ops.convert_to_tensor(features[None])


def _to_channels_last(tensor, layer) -> np.ndarray:
    array = keras.ops.convert_to_numpy(tensor)[0]
    return np.moveaxis(array, 0, -1) if layer.data_format == "channels_first" else array


def _gate_maps(depth: DepthFeatures, picked: list[int]) -> np.ndarray:
    """The per-pixel gates of ``depth.gate_layer`` (inference mode)."""
    layer = depth.gate_layer
    x = _in_layer_format(depth.features, layer)
    _, gates = layer(x, training=False, return_gates=True)
    return _to_channels_last(gates, layer)[..., picked]


def _alpha_maps(
    depth: DepthFeatures, picked: list[int], source: str, max_scale: int | None
) -> np.ndarray:
    if source == "model":
        layer = depth.ssr_layer
        alpha = layer.alpha(_in_layer_format(depth.features, layer), training=False)
        return _to_channels_last(alpha, layer)[..., picked]
    if max_scale is None:
        max_scale = _layer_max_scale(depth.ssr_layer or depth.gate_layer)
    x = keras.ops.convert_to_tensor(depth.features[None][..., picked])
    alpha = ssr_ops.singularity_strength(
        x, max_scale, scaling="sample", data_format="channels_last"
    )
    return keras.ops.convert_to_numpy(alpha)[0]


def _layer_max_scale(layer) -> int:
    """The dyadic scales of ``layer``'s singularity map (its ``alpha``: a
    :class:`~keras_ssr.layers.LocalSingularityStrength` or a subclass), else
    :data:`DEFAULT_MAX_SCALE` (Xu's learnable measures, no layer)."""
    alpha = None if layer is None else layer.alpha
    if isinstance(alpha, LocalSingularityStrength):
        return alpha.max_scale
    return DEFAULT_MAX_SCALE


def display_image(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    if image.shape[-1] == 3:
        shown = image
    else:
        shown = image[..., 0]
    lo, hi = float(np.min(shown)), float(np.max(shown))
    if lo < 0.0 or hi > 1.0:
        shown = (shown - lo) / (hi - lo) if hi > lo else np.zeros_like(shown)
    return shown, (None if shown.ndim == 3 else "gray")


def _colour_bar(figure, image, axis, values: np.ndarray) -> None:
    """A colour bar beside ``axis`` for ``image``, the map of ``values``.

    It ends in a triangle on each side where finite values lie beyond the
    image's colour range (the clipped percentiles of a singularity map).
    """
    lo, hi = image.get_clim()
    finite = values[np.isfinite(values)]
    below, above = bool(np.any(finite < lo)), bool(np.any(finite > hi))
    extend = {(True, True): "both", (True, False): "min", (False, True): "max"}
    bar = figure.colorbar(
        image,
        ax=axis,
        fraction=0.046,
        pad=0.03,
        extend=extend.get((below, above), "neither"),
    )
    # Few labels, each with the digits that tell it from the next (gates
    # may span 0.586-0.588), written out: an offset such as "+5.86e-1" above
    # the bar would run into the neighbouring panel.
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    bar.locator = MaxNLocator(nbins=4)
    bar.formatter = ScalarFormatter(useOffset=False)
    if finite.size and np.ptp(finite) <= 1e-6 * max(1.0, abs(lo)):
        value = float(np.median(finite))  # a constant map: its one value
        bar.set_ticks([value], labels=[f"{value:.4g}"])
    bar.ax.tick_params(labelsize=6)


def singularity_maps(
    model: keras.Model,
    image,
    mask=None,
    *,
    channels_per_depth: int = 2,
    max_scale: int | None = None,
    alpha: str = "ops",
    layer_names: Sequence[str] | None = None,
    data_format: str | None = None,
    cmap: str = "inferno",
    title: str | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = 120,
):
    """Draws feature maps per depth and their singularity-strength maps.

    The figure has two rows (three for a model with per-pixel gates). The
    first column shows the input image (top) and ``mask`` (below; the
    model's thresholded prediction when ``mask`` is ``None``). Then, for
    each depth found by :func:`depth_features`, ``channels_per_depth``
    columns: the feature maps of the channels with the largest spatial
    standard deviation (top) and their local singularity strength (below),
    computed by
    :func:`keras_ssr.ops.singularity_strength` (per-sample scaling) or, with
    ``alpha="model"``, by the SSR layer's own ``alpha`` sub-layer (batch
    normalised, inference mode). Each map has its own colour scale, drawn as
    a colour bar beside it, so that its values can be read off; the
    singularity maps (and gates) are clipped to their 1st-99th percentiles
    so that border pixels do not wash out the rest, and their colour bars
    end in a triangle where values lie beyond. For a model with per-pixel gate
    layers (:class:`~keras_ssr.layers.MultifractalRecalibration`), whose
    inputs are then the maps shown, a third row shows each channel's gates
    ``sigmoid(sum_k relu(h_k))`` in inference mode (the layer adds them to its
    input). Works for any functional or Sequential 2-D model, with or
    without attention layers.

    Args:
        model: a functional or Sequential ``keras.Model`` on 2-D images.
        image: one image ``(height, width, channels)`` (or with a batch axis
            of 1) in the model's data format, as the model takes it.
        mask: optional ground truth ``(height, width)`` or
            ``(height, width, 1)``.
        channels_per_depth: feature maps shown per depth, ``>= 1``.
        max_scale: dyadic scales of the singularity strength, ``2 .. 16``;
            ``None`` takes the SSR layer's own, else 3.
        alpha: ``"ops"`` or ``"model"`` (needs SSR layers).
        layer_names: explicit layers to show instead of the automatic choice.
        data_format: the model's data format; ``None`` takes
            ``keras.config.image_data_format()``.
        cmap: matplotlib colour map of the feature and singularity maps.
        title: optional figure title.
        path: if given, the figure is saved there as PNG (folders created).
        dpi: resolution of the saved PNG, ``>= 10``.

    Returns:
        The ``matplotlib.figure.Figure``. Its first ``rows * (1 + depths *
        channels_per_depth)`` axes are the panels, row by row (fewer where a
        depth has fewer channels), then one colour-bar axis per map panel
        (every panel but the input and the mask).

    Raises:
        ImportError: if matplotlib is not installed.
        TypeError / ValueError: for bad arguments (see
            :func:`depth_features`), naming the argument.

    Example:
        >>> from keras_ssr.models import get_ssr_unet
        >>> model = get_ssr_unet([4, 8, 16], input_shape=[32, 32, 1])
        >>> figure = singularity_maps(model, np.random.rand(32, 32, 1))
        >>> len(figure.axes)  # 2 x 5 panels, 8 of them maps with a colour bar
        18
    """
    channels_per_depth = _checks.check_int("channels_per_depth", channels_per_depth, 1)
    if max_scale is not None:
        max_scale = _checks.check_int(
            "max_scale", max_scale, 2, ssr_ops.MAX_SCALE_LIMIT
        )
    source = _checks.check_choice("alpha", alpha, ALPHA_SOURCES)
    _checks.check_int("dpi", dpi, 10)
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`path` must be a file path (str or os.PathLike) or None. "
            f"Received: path={path!r}"
        )
    if title is not None and not isinstance(title, str):
        raise TypeError(f"`title` must be a string or None. Received: title={title!r}")
    model = _check_model(model)
    data_format = _checks.standardize_data_format(data_format)
    batch = _as_batch(image, model)
    shown_input = (
        batch[0] if data_format == "channels_last" else np.moveaxis(batch[0], 0, -1)
    )
    height, width = shown_input.shape[:2]
    if mask is not None:
        mask = np.asarray(mask)
        if mask.ndim == 3 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        if mask.shape != (height, width):
            raise ValueError(
                f"`mask` must have shape ({height}, {width}) or ({height}, "
                f"{width}, 1), like the image. Received: mask.shape="
                f"{np.shape(mask)}"
            )
    depths = depth_features(
        model, batch, layer_names=layer_names, data_format=data_format
    )
    if source == "model" and any(d.ssr_layer is None for d in depths):
        raise ValueError(
            "`alpha='model'` needs SSR layers at every depth shown, and "
            f"{model.name!r} has none there (or `layer_names` was given). "
            f"Received: alpha={alpha!r}"
        )
    if mask is None:
        prediction = keras.ops.convert_to_numpy(model(batch, training=False))[0]
        if data_format == "channels_first":
            prediction = np.moveaxis(prediction, 0, -1)
        if prediction.shape[-1] == 1:
            bottom, bottom_title = prediction[..., 0] >= 0.5, "prediction"
        else:
            bottom, bottom_title = np.argmax(prediction, axis=-1), "prediction"
    else:
        bottom, bottom_title = mask, "mask"

    panels = []
    for index, depth in enumerate(depths, start=1):
        picked = _pick_channels(depth.features, channels_per_depth)
        alphas = _alpha_maps(depth, picked, source, max_scale)
        gates = None if depth.gate_layer is None else _gate_maps(depth, picked)
        for k, channel in enumerate(picked):
            panels.append(
                (
                    f"depth {index} ({depth.name})\nchannel {channel}",
                    depth.features[..., channel],
                    alphas[..., k],
                    None if gates is None else gates[..., k],
                )
            )
    rows = 3 if any(panel[3] is not None for panel in panels) else 2

    Figure, FigureCanvasAgg = import_matplotlib()
    columns = 1 + len(panels)
    figure = Figure(
        figsize=(2.4 * columns, 2.4 * rows + (0.3 if title else 0.0)),
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, columns, squeeze=False)
    shown, input_cmap = display_image(shown_input)
    grid[0, 0].imshow(shown, cmap=input_cmap, interpolation="nearest")
    grid[0, 0].set_title("input", fontsize=8)
    grid[1, 0].imshow(bottom, cmap="gray", interpolation="nearest")
    grid[1, 0].set_title(bottom_title, fontsize=8)
    for column, (label, features, alpha_map, gate_map) in enumerate(panels, start=1):
        shown = grid[0, column].imshow(features, cmap=cmap, interpolation="nearest")
        _colour_bar(figure, shown, grid[0, column], features)
        grid[0, column].set_title(label, fontsize=7)
        lower = [(alpha_map, "singularity strength"), (gate_map, "per-pixel gate")]
        for row, (values, name) in enumerate(lower[: rows - 1], start=1):
            if values is None:
                grid[row, column].set_axis_off()
                continue
            finite = values[np.isfinite(values)]
            lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
            shown = grid[row, column].imshow(
                values,
                cmap=cmap,
                vmin=lo,
                vmax=max(hi, lo + 1e-6),
                interpolation="nearest",
            )
            _colour_bar(figure, shown, grid[row, column], values)
            grid[row, column].set_title(name, fontsize=7)
    if rows == 3:
        grid[2, 0].set_axis_off()
    for axis in grid.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    if title:
        figure.suptitle(title, fontsize=10)
    if path is not None:
        path = os.fspath(path)
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        figure.savefig(path, dpi=dpi, format="png")
    return figure
