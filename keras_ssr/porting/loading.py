"""Loading the original's weights into a keras_ssr U-Net: :func:`load_weights`.

The source (an ``.h5`` file, a TF checkpoint or a dict of variable names)
is read (:mod:`~keras_ssr.porting.h5`, :mod:`~keras_ssr.porting.tensorbundle`)
and parsed into slots (:mod:`~keras_ssr.porting.keras_names`,
:mod:`~keras_ssr.porting.checkpoint_keys`); the model's side is its layers'
names and its attention layers' semantic variables
(:mod:`~keras_ssr.porting.names`). Everything is checked before anything is
assigned.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import keras
import numpy as np

from keras_ssr.porting._source import SourceWeight
from keras_ssr.porting.checkpoint_keys import parse_checkpoint_keys
from keras_ssr.porting.h5 import read_h5_weights
from keras_ssr.porting.keras_names import parse_variable_names
from keras_ssr.porting.names import semantic_variables, set_layer_weights
from keras_ssr.porting.scopes import BN_VARIABLES, CONV_VARIABLES
from keras_ssr.porting.tensorbundle import checkpoint_prefix, read_checkpoint_weights

_BOX_SLOT = re.compile(r"^(encoder_\d+_attention)/alpha\.box_(\d+)\.(kernel|bias)$")


def _read_source(source) -> list[SourceWeight]:
    if isinstance(source, Mapping):
        return parse_variable_names(source)
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
            return parse_variable_names(read_h5_weights(path))
        raise ValueError(
            "`source` is a file but not an HDF5 (.h5) weights file; for a TF "
            f"checkpoint pass its prefix (without '.index'). Received: source={path!r}"
        )
    if checkpoint_prefix(path) is not None:
        return parse_checkpoint_keys(read_checkpoint_weights(path))
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
    if not np.all(weight.value == expected_value):
        raise ValueError(
            f"The source's weight {weight.origin!r} must be the constant box-sum "
            f"{part} (all {expected_value:g}); it is not, so the source was not "
            "made by the original's LocalSingularityStrength."
        )
    return layer_name, scale, part


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
    weights. Everything is checked before anything is assigned.

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
              back to TensorFlow for bundles that need it);
            - a mapping from the original's variable names
              (``"contracting_layer_1/conv2d_3/kernel:0"``, ...) to arrays.

    Returns:
        ``{source name: keras_ssr variable path}`` of every weight stored
        (box-sum kernels, checked only, are not listed).

    Raises:
        ValueError: naming the first weight that does not fit (a source
            weight with no place in the model, a wrong shape, a wrong
            box-sum kernel, SE vs SSR, a model weight missing from the
            source) and what was expected; nothing is assigned then. Also
            for a ``source`` path that is neither format.
        TypeError: for a ``model`` that is not a ``keras.Model`` or a
            ``source`` of another type.
        ImportError: for a TF checkpoint that needs TensorFlow when it is not
            installed.

    Example:
        >>> model = keras_ssr.models.get_ssr_unet([4, 8, 16], input_shape=[32, 32, 3])
        >>> mapping = load_weights(model, "checkpoints/ssr_unet.h5")
        >>> mapping["contracting_layer/conv2d/kernel:0"]
        'encoder_0_conv_0/kernel'
    """
    slots, attention = _model_slots(model)
    weights = _read_source(source)

    placed: dict[str, SourceWeight] = {}
    boxes: dict[str, set] = {}
    for weight in weights:
        box = _BOX_SLOT.match(weight.slot)
        if box is not None:
            layer_name, scale, part = _check_box_sum(weight, box, attention)
            boxes.setdefault(layer_name, set()).add((scale, part))
            continue
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
        placed[weight.slot] = weight
    for slot, variable in slots.items():
        if slot not in placed:
            raise ValueError(
                f"The model's weight {slot!r} (shape {tuple(variable.shape)}) has no "
                "counterpart in the source: the architectures differ."
            )
    for layer_name, found in boxes.items():
        max_scale = attention[layer_name].max_scale
        wanted = {(s, p) for s in range(1, max_scale + 1) for p in ("kernel", "bias")}
        if found != wanted:
            scale, part = min(wanted - found)
            raise ValueError(
                f"The source has box-sum kernels for {layer_name!r} but lacks the "
                f"box-sum {part} of scale {scale}: the model's max_scale is "
                f"{max_scale}."
            )

    mapping = {}
    per_layer: dict[str, dict[str, np.ndarray]] = {}
    for slot, weight in placed.items():
        layer_name, name = slot.split("/", 1)
        if layer_name in attention:
            per_layer.setdefault(layer_name, {})[name] = weight.value
        else:
            variable = slots[slot]
            variable.assign(weight.value.astype(variable.dtype))
        mapping[weight.origin] = slot
    for layer_name, arrays in per_layer.items():
        set_layer_weights(attention[layer_name], arrays)
    return mapping
