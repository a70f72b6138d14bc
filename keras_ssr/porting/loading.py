"""Loading the original's weights into a keras_ssr U-Net: :func:`load_weights`.

The source (an ``.h5`` file, a TF checkpoint or a dict of variable names)
is listed by name, shape and dtype (:mod:`~keras_ssr.porting.h5`,
:mod:`~keras_ssr.porting.tensorbundle`) and parsed into slots
(:mod:`~keras_ssr.porting.keras_names`,
:mod:`~keras_ssr.porting.checkpoint_keys`); the model's side is its layers'
names and its attention layers' semantic variables
(:mod:`~keras_ssr.porting.names`). The steps, each finished before the next
begins: names, shapes and dtypes checked against the model (nothing read);
every array read, converted and checked finite; only then anything
assigned.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

import keras
import numpy as np

from keras_ssr.porting._source import (
    SourceWeight,
    StoredArray,
    WeightFileError,
    as_weight,
    check_float_dtype,
)
from keras_ssr.porting.checkpoint_keys import parse_checkpoint_keys
from keras_ssr.porting.h5 import h5_arrays
from keras_ssr.porting.keras_names import parse_variable_names
from keras_ssr.porting.names import semantic_variables, set_layer_weights
from keras_ssr.porting.scopes import BN_VARIABLES, CONV_VARIABLES
from keras_ssr.porting.tensorbundle import checkpoint_arrays, checkpoint_prefix

__all__ = [
    "load_weights",
]

_BOX_SLOT = re.compile(r"^(encoder_\d+_attention)/alpha\.box_(\d+)\.(kernel|bias)$")


def _in_memory(source: Mapping) -> dict:
    arrays = {}
    for name, value in source.items():
        try:
            arrays[name] = StoredArray.in_memory(np.asarray(value))
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"`source`'s value for {name!r} is not an array ({error})."
            ) from None
    return arrays


def _open_source(source) -> tuple[dict, Callable, str | None]:
    """``(arrays by name, the parser of the names, the file)``; nothing read."""
    if isinstance(source, Mapping):
        return _in_memory(source), parse_variable_names, None
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "`source` must be a path (a Keras 2 .h5 weights file or a TF checkpoint "
            "prefix) or a dict of the original's variable names to arrays. "
            f"Received: source={source!r} (of type {type(source).__name__})"
        )
    path = os.fspath(source)
    if os.path.isfile(path) and not path.endswith(".index"):
        import h5py

        if h5py.is_hdf5(path):
            return h5_arrays(path), parse_variable_names, path
        raise ValueError(
            "`source` is a file but not an HDF5 (.h5) weights file; for a TF "
            f"checkpoint pass its prefix (without '.index'). Received: source={path!r}"
        )
    prefix = checkpoint_prefix(path)
    if prefix is not None:
        return checkpoint_arrays(prefix), parse_checkpoint_keys, prefix
    raise ValueError(
        "`source` names neither an .h5 weights file nor a TF checkpoint "
        f"(prefix with a '.index' file, or its directory). Received: source={path!r}"
    )


# --------------------------------------------------------------------------
# The model side and the assignment
# --------------------------------------------------------------------------

_MODEL_BLOCK_LAYER = re.compile(r"^(encoder_\d+|bottleneck|decoder_\d+)_(conv|bn)_\d+$")
_MODEL_ATTENTION_LAYER = re.compile(r"^encoder_\d+_attention$")


def _model_slots(model) -> tuple[dict, dict]:
    """``({slot: variable}, {attention layer name: layer})`` of a U-Net."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a keras.Model built by keras_ssr.models. "
            f"Received: model={model!r} (of type {type(model).__name__})"
        )
    slots, attention = {}, {}
    for layer in model.layers:
        block = _MODEL_BLOCK_LAYER.match(layer.name)
        if block is not None:
            names = CONV_VARIABLES if block.group(2) == "conv" else BN_VARIABLES
            for name in names:
                variable = getattr(layer, name, None)
                if variable is not None:
                    slots[f"{layer.name}/{name}"] = variable
        elif _MODEL_ATTENTION_LAYER.match(layer.name):
            attention[layer.name] = layer
            if not layer.weights:
                continue
            if not hasattr(layer, "semantic_variables"):
                raise ValueError(
                    f"The attention layer {layer.name!r} ({type(layer).__name__}) has "
                    "no semantic_variables() method, so its weights have no names "
                    "to load by (see keras_ssr.porting.names.SemanticLayer)."
                )
            for name, variable in semantic_variables(layer).items():
                slots[f"{layer.name}/{name}"] = variable
        elif layer.name == "head":
            for name in CONV_VARIABLES:
                if getattr(layer, name, None) is not None:
                    slots[f"head/{name}"] = getattr(layer, name)
    if not slots:
        raise ValueError(
            "`model` has no layers named like a keras_ssr U-Net (encoder_0_conv_0, "
            "..., head): build it with keras_ssr.models.build_unet, get_unet or "
            f"get_ssr_unet. Received: model={model.name!r}"
        )
    return slots, attention


def _describe(layer) -> str:
    return f"{layer.name!r} is a {type(layer).__name__}"


def _check_box_sum(weight: SourceWeight, match, attention: dict) -> tuple:
    layer_name, scale, part = match.group(1), int(match.group(2)), match.group(3)
    layer = attention.get(layer_name)
    if layer is None:
        raise ValueError(
            f"The source's weight {weight.origin!r} belongs to an SSR attention at "
            f"{layer_name!r}, but the model has no attention layer there."
        )
    alpha = getattr(layer, "alpha", None)
    max_scale = getattr(layer, "max_scale", None)
    if max_scale is None or alpha is None or not hasattr(alpha, "bn"):
        raise ValueError(
            f"The source's weight {weight.origin!r} is a box-sum kernel of an SSR "
            f"attention, but the model's layer {_describe(layer)}."
        )
    if scale > max_scale:
        raise ValueError(
            f"The source's weight {weight.origin!r} is the box-sum kernel of scale "
            f"{scale} (side {2**scale}), but the model's {layer_name!r} has "
            f"max_scale={max_scale}."
        )
    channels = int(alpha.bn.gamma.shape[0])
    side = 2**scale
    if part == "kernel":
        expected_shape, expected_value = (side, side, channels, 1), 1.0
    else:
        expected_shape, expected_value = (channels,), 0.0
    if tuple(weight.value.shape) != expected_shape:
        raise ValueError(
            f"The source's weight {weight.origin!r} (box-sum {part} of scale "
            f"{scale}) has shape {tuple(weight.value.shape)}; expected "
            f"{expected_shape} for {layer_name!r}."
        )
    return layer_name, scale, part, expected_value


def _check_slot(weight: SourceWeight, placed: dict, slots: dict, attention: dict):
    """Checks that ``weight`` has a free slot of its shape in the model."""
    if weight.slot in placed:
        raise ValueError(
            f"The source's weights {placed[weight.slot].origin!r} and "
            f"{weight.origin!r} both map to the model's {weight.slot!r}."
        )
    if weight.slot not in slots:
        layer_name = weight.slot.split("/")[0]
        layer = attention.get(layer_name)
        if layer_name in attention or layer_name.startswith("encoder_"):
            hint = (
                f" (the model's layer {_describe(layer)})"
                if layer is not None
                else f" (the model has no layer {layer_name!r})"
            )
        else:
            hint = ""
        raise ValueError(
            f"The source's weight {weight.origin!r} maps to {weight.slot!r}, "
            f"which the model does not have{hint}: the architectures differ."
        )
    expected = tuple(slots[weight.slot].shape)
    if tuple(weight.value.shape) != expected:
        raise ValueError(
            f"The source's weight {weight.origin!r} has shape "
            f"{tuple(weight.value.shape)}; the model's {weight.slot!r} expects "
            f"{expected}: the architectures differ."
        )


def _place(weights: list[SourceWeight], slots: dict, attention: dict) -> tuple:
    """Checks names, shapes and dtypes, reading nothing.

    Returns ``({slot: weight}, [(box-sum weight, part, constant value)])``.
    """
    placed: dict[str, SourceWeight] = {}
    boxes, found = [], {}
    for weight in weights:
        box = _BOX_SLOT.match(weight.slot)
        if box is not None:
            layer_name, scale, part, value = _check_box_sum(weight, box, attention)
            found.setdefault(layer_name, set()).add((scale, part))
            boxes.append((weight, part, value))
        else:
            _check_slot(weight, placed, slots, attention)
            placed[weight.slot] = weight
        check_float_dtype(f"The source's weight {weight.origin!r}", weight.value.dtype)
    for slot, variable in slots.items():
        if slot not in placed:
            raise ValueError(
                f"The model's weight {slot!r} (shape {tuple(variable.shape)}) has no "
                "counterpart in the source: the architectures differ."
            )
    for layer_name, present in found.items():
        max_scale = attention[layer_name].max_scale
        wanted = {(s, p) for s in range(1, max_scale + 1) for p in ("kernel", "bias")}
        if present != wanted:
            scale, part = min(wanted - present)
            raise ValueError(
                f"The source has box-sum kernels for {layer_name!r} but lacks the "
                f"box-sum {part} of scale {scale}: the model's max_scale is "
                f"{max_scale}."
            )
    return placed, boxes


def _read_checked(placed: dict, boxes: list, slots: dict) -> dict[str, np.ndarray]:
    """``{slot: array}``: every weight read, converted to its variable's dtype
    and checked finite; every box-sum kernel read and checked constant."""
    values = {}
    for slot, weight in placed.items():
        what = f"The source's weight {weight.origin!r} (the model's {slot!r})"
        values[slot] = as_weight(what, weight.value.read(), slots[slot].dtype)
    for weight, part, expected in boxes:
        if not np.all(weight.value.read() == expected):
            raise ValueError(
                f"The source's weight {weight.origin!r} must be the constant box-sum "
                f"{part} (all {expected:g}); it is not, so the source was not "
                "made by the original's LocalSingularityStrength."
            )
    return values


def load_weights(model, source) -> dict[str, str]:
    """Loads weights saved by the original TF 2.14 code into a keras_ssr U-Net.

    ``model`` is a U-Net from :mod:`keras_ssr.models` (``get_unet``,
    ``get_ssr_unet`` or ``build_unet`` with ``attention`` ``None``,
    ``"se"`` or ``"ssr"``, any backend, any ``data_format``) with the same
    architecture as the original model. Weights are placed by **name**, never
    by position:

    - top scope ``contracting_layer[_N]``: encoder levels then bottleneck, in
      ascending ``N``; ``upsample_expanding_layer[_N]``: decoder levels from
      the deepest; ``singularity_strength_recalibration[_N]`` /
      ``squeeze_excite[_N]``: the attention of encoder level 0, 1, ...; the
      top-level ``conv2d_N``: the head;
    - inside a block, first/second ``conv2d_N`` and ``batch_normalization_N``
      by ascending ``N``; inside an attention block ``dense`` / ``dense_1``
      (ascending) are ``squeeze`` / ``excite``, and ``local_singularity_
      strength/batch_normalization`` is ``alpha.bn``;
    - the TF checkpoint's object-graph keys (``layer_with_weights-K/conv1/
      kernel/.ATTRIBUTES/VARIABLE_VALUE``, ``.../alpha_layer/bn/gamma/...``,
      ``.../w1/kernel/...``) follow the model's layer order: conv blocks
      (encoder levels, bottleneck, decoder levels from the deepest), each
      encoder block's attention, and the head.

    The original's constant box-sum kernels (``.../depthwise_conv2d[_k]/
    depthwise_kernel`` and ``bias``) are checked (all ones of shape
    ``(2**k, 2**k, C, 1)``, zero bias, every scale up to the model's
    ``max_scale``) but not stored: keras_ssr computes box sums without
    weights.

    All or nothing, and never more memory than the model: every name, shape
    and dtype is checked against the model from the file's metadata before
    any data is read (so a file claiming a huge array is refused without
    reading it); then every array is read, converted to its variable's
    dtype and checked finite; only then is anything assigned. If anything
    fails, no weight of the model has changed. Weights must be
    floating-point and finite: integer, boolean, complex and string weights,
    NaN and infinities (also float64 values beyond float32) are refused by
    name. The readers check every dimension, offset and size a file claims
    before using it, so a damaged or inconsistent file raises an error
    naming it rather than crashing the process.

    Args:
        model: a keras_ssr U-Net (layers ``encoder_0_conv_0``, ...,
            ``head``).
        source: one of
            - the path of the ``.h5`` file written by the original's
              ``model.save_weights("x.h5")`` (or ``model.save("x.h5")``),
              read with ``h5py``;
            - the original's TF checkpoint: the prefix passed to
              ``model.save_weights("dir/weights")`` (TF format), its
              ``.index`` file or its directory; read in pure Python (falls
              back to TensorFlow for partitioned or big-endian bundles,
              once their index has been checked);
            - a mapping from the original's variable names
              (``"contracting_layer_1/conv2d_3/kernel:0"``, ...) to arrays.

    Returns:
        ``{source name: keras_ssr variable path}`` of every weight stored
        (box-sum kernels, checked only, are not listed).

    Raises:
        ValueError: naming the first weight that does not fit (a source
            weight with no place in the model, a wrong shape, a wrong
            box-sum kernel, SE vs SSR, a model weight missing from the
            source, a weight that is not floating-point or not finite) and
            what was expected, and the file; or naming the file, and the
            weight where there is one, for a damaged or inconsistent file (a
            truncated or malformed file or index, a negative or overflowing
            dimension, a size that does not match the shape, a byte range
            beyond the data file, a dataset that stores less than it
            claims). Nothing is assigned then. Also for a ``source`` path
            that is neither format.
        TypeError: for a ``model`` that is not a ``keras.Model`` or a
            ``source`` of another type.
        OSError: for a TF checkpoint whose data file is missing.
        ImportError: for a TF checkpoint that needs TensorFlow (a
            partitioned or big-endian one) when it is not installed.

    Example:
        >>> model = keras_ssr.models.get_ssr_unet([4, 8, 16], input_shape=[32, 32, 3])
        >>> mapping = load_weights(model, "checkpoints/ssr_unet.h5")
        >>> mapping["contracting_layer/conv2d/kernel:0"]
        'encoder_0_conv_0/kernel'
    """
    slots, attention = _model_slots(model)
    arrays, parse, path = _open_source(source)
    try:
        placed, boxes = _place(parse(arrays), slots, attention)
        values = _read_checked(placed, boxes, slots)
    except WeightFileError:
        raise  # names the file already
    except ValueError as error:
        if path is None:
            raise
        raise ValueError(f"{error} Source: {path!r}.") from None

    # Everything is read and checked: only now is anything assigned.
    per_layer: dict[str, dict[str, np.ndarray]] = {}
    for slot, value in values.items():
        layer_name, name = slot.split("/", 1)
        if layer_name in attention:
            per_layer.setdefault(layer_name, {})[name] = value
        else:
            slots[slot].assign(value)
    for layer_name, layer_values in per_layer.items():
        set_layer_weights(attention[layer_name], layer_values)
    return {weight.origin: slot for slot, weight in placed.items()}
