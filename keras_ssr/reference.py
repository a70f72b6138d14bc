"""Moving numbers between keras_ssr and the original TF 2.14 implementation.

The original's weights are addressed by *semantic names*, the ones used in
the recorded reference cases (``tests/data/reference_tf214/manifest.json``):

=================================  =========================================
layer                              names
=================================  =========================================
``SqueezeExcite``                  ``squeeze.kernel``, ``squeeze.bias``,
                                   ``excite.kernel``, ``excite.bias``
``LocalSingularityStrength``       ``bn.gamma``, ``bn.beta``,
                                   ``bn.moving_mean``, ``bn.moving_variance``
``SingularityStrengthRecalibration`` the SE names and ``alpha.bn.*``
``LearnableMeasure``               ``measure.kernel_1`` .. ``measure.kernel_N``
``LocalSingularityStrengthXu``     ``measure.kernel_*`` and (``with_bn``)
                                   ``bn.*``
=================================  =========================================

Kernels have the original's layout: Dense kernels ``(in, out)``, measure
kernels ``(s, s)``.

Whole models: :func:`load_weights` puts the weights of the original's
``get_unet`` / ``get_ssr_unet`` models, from the ``.h5`` file or TF
checkpoint its ``model.save_weights`` wrote or from a dict of its variable
names, into a :mod:`keras_ssr.models` U-Net, by name. :func:`read_h5_weights`
and :func:`read_checkpoint_weights` read those files without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

import keras
import numpy as np

__all__ = [
    "get_layer_weights",
    "layer_weight_names",
    "load_weights",
    "read_checkpoint_weights",
    "read_h5_weights",
    "set_layer_weights",
]


def _variables(layer) -> dict:
    if not hasattr(layer, "semantic_variables"):
        raise TypeError(
            "`layer` must be a keras_ssr layer with reference weight names. "
            f"Received: layer={layer!r} (of type {type(layer).__name__})"
        )
    if not layer.built:
        raise ValueError(
            f"`layer` must be built before its weights are set: call it once "
            f"or call layer.build(input_shape). Received: layer={layer.name!r}"
        )
    return layer.semantic_variables()


def layer_weight_names(layer) -> dict[str, tuple[int, ...]]:
    """The semantic weight names of a built layer, with their shapes."""
    return {name: tuple(v.shape) for name, v in _variables(layer).items()}


def get_layer_weights(layer) -> dict[str, np.ndarray]:
    """The weights of a built layer as NumPy arrays, by semantic name."""
    return {
        name: keras.ops.convert_to_numpy(v.value)
        for name, v in _variables(layer).items()
    }


def set_layer_weights(layer, arrays: Mapping[str, np.ndarray]) -> None:
    """Assigns the original's weights to a built keras_ssr layer, by name.

    Args:
        layer: a built keras_ssr layer.
        arrays: a mapping from every semantic name of the layer (see the
            module docstring, or :func:`layer_weight_names`) to an array of
            the original's shape.

    Raises:
        ValueError: listing unknown names, missing names and wrong shapes,
            all at once; nothing is assigned then.
        TypeError: if ``layer`` is not a keras_ssr layer.
    """
    variables = _variables(layer)
    arrays = {name: np.asarray(value) for name, value in arrays.items()}
    unknown = sorted(set(arrays) - set(variables))
    missing = sorted(set(variables) - set(arrays))
    wrong = sorted(
        f"{name}: expected {tuple(variables[name].shape)}, "
        f"received {arrays[name].shape}"
        for name in set(arrays) & set(variables)
        if tuple(arrays[name].shape) != tuple(variables[name].shape)
    )
    problems = []
    if unknown:
        problems.append(f"unknown names {unknown}")
    if missing:
        problems.append(f"missing names {missing}")
    if wrong:
        problems.append(f"wrong shapes [{'; '.join(wrong)}]")
    if problems:
        raise ValueError(
            f"Cannot set the weights of {type(layer).__name__} "
            f"{layer.name!r}: {', '.join(problems)}. Expected names: "
            f"{sorted(variables)}"
        )
    for name, variable in variables.items():
        variable.assign(arrays[name].astype(variable.dtype))


# ==========================================================================
# Whole models: importing the original's U-Net / SSR-U-Net weights
# ==========================================================================
#
# Everything is converted to *slots*, "<keras_ssr layer name>/<weight>":
# "encoder_0_conv_1/kernel", "bottleneck_bn_0/moving_mean",
# "decoder_1_conv_0/bias", "encoder_0_attention/alpha.bn.gamma",
# "head/kernel". The original's constant box-sum kernels become
# "encoder_{i}_attention/alpha.box_{j}.kernel" / ".bias" (checked, not
# stored: keras_ssr computes box sums without weights).

_BOX_SLOT = re.compile(r"^(encoder_\d+_attention)/alpha\.box_(\d+)\.(kernel|bias)$")
_CONV_VARIABLES = ("kernel", "bias")
_BN_VARIABLES = ("gamma", "beta", "moving_mean", "moving_variance")
_DENSE_SLOTS = ("squeeze", "excite")


@dataclasses.dataclass(frozen=True)
class _SourceWeight:
    origin: str  # the name (or checkpoint key) in the source
    slot: str  # where it goes in a keras_ssr U-Net
    value: np.ndarray


def _scope_number(pattern: str, scope: str) -> int | None:
    """``N`` for ``pattern_N``, 0 for ``pattern``, None if no match."""
    match = re.fullmatch(rf"{pattern}(?:_(\d+))?", scope)
    if match is None:
        return None
    return int(match.group(1) or 0)


def _ranks(numbers) -> dict[int, int]:
    """Rank of each (distinct) number in ascending order."""
    return {n: i for i, n in enumerate(sorted(set(numbers)))}


def _unplaceable(origin: str, why: str) -> ValueError:
    return ValueError(
        f"Cannot place the source's weight {origin!r}: {why}. The source must hold "
        "the weights of the original's get_unet/get_ssr_unet model."
    )


def _block_prefixes(kind: str, numbers: list[int]) -> dict[int, str]:
    """keras_ssr layer prefixes of the original's blocks, by scope number.

    Contracting blocks in creation order are the encoder levels then the
    bottleneck; expanding blocks run from the deepest decoder level to 0;
    attention blocks belong to the encoder levels in order.
    """
    ranks = _ranks(numbers)
    count = len(ranks)
    prefixes = {}
    for number, rank in ranks.items():
        if kind == "contracting":
            prefixes[number] = "bottleneck" if rank == count - 1 else f"encoder_{rank}"
        elif kind == "expanding":
            prefixes[number] = f"decoder_{count - 1 - rank}"
        else:
            prefixes[number] = f"encoder_{rank}_attention"
    return prefixes


_TOP_SCOPES = (
    ("contracting", "contracting_layer"),
    ("expanding", "upsample_expanding_layer"),
    ("ssr", "singularity_strength_recalibration"),
    ("se", "squeeze_excite"),
)


def _top_scope(scope: str) -> tuple[str | None, int | None]:
    for kind, pattern in _TOP_SCOPES:
        number = _scope_number(pattern, scope)
        if number is not None:
            return kind, number
    return None, None


def _parse_variable_names(weights: Mapping[str, np.ndarray]) -> list[_SourceWeight]:
    """Slots of weights named as the original's variables.

    ``contracting_layer_1/conv2d_3/kernel:0``: the top scope gives the block
    kind and (by ascending suffix) its index; inside a block the first and
    second conv (BN) are told apart by ascending suffix too.
    """
    parsed = []  # (origin, block kind, scope number, path parts, value)
    for origin, value in weights.items():
        if not isinstance(origin, str):
            raise TypeError(
                "`source` must map the original's variable names (strings) to "
                f"arrays. Received a key {origin!r} (of type {type(origin).__name__})"
            )
        parts = re.sub(r":\d+$", "", origin).split("/")
        kind, number = _top_scope(parts[0])
        if kind is None:
            number = _scope_number("conv2d", parts[0])
            kind = "head"
            if number is None or len(parts) != 2:
                raise _unplaceable(
                    origin,
                    f"unknown scope {parts[0]!r} (expected contracting_layer, "
                    "upsample_expanding_layer, singularity_strength_recalibration, "
                    "squeeze_excite or the head conv2d_N)",
                )
        parsed.append((origin, kind, number, parts, np.asarray(value)))

    heads = sorted({number for _, kind, number, _, _ in parsed if kind == "head"})
    if len(heads) > 1:
        first = next(o for o, k, n, _, _ in parsed if k == "head" and n == heads[1])
        raise _unplaceable(origin=first, why="more than one top-level conv2d (head)")
    prefixes = {
        kind: _block_prefixes(
            "attention" if kind in ("ssr", "se") else kind,
            [n for _, k, n, _, _ in parsed if k == kind],
        )
        for kind in ("contracting", "expanding", "ssr", "se")
    }
    # Attention blocks of both kinds share the encoder levels.
    attention_numbers = [(k, n) for _, k, n, _, _ in parsed if k in ("ssr", "se")]
    if len({k for k, _ in attention_numbers}) > 1:
        first = next(o for o, k, _, _, _ in parsed if k == "se")
        raise _unplaceable(first, "the source mixes SSR and SE attention blocks")

    # Suffix numbers of sub-scopes, per block.
    sub_numbers: dict[tuple, list[int]] = {}
    for _, kind, number, parts, _ in parsed:
        for depth, part in enumerate(parts[1:-1], start=1):
            for sub in ("conv2d", "batch_normalization", "dense", "depthwise_conv2d"):
                n = _scope_number(sub, part)
                if n is not None:
                    sub_numbers.setdefault((kind, number, depth, sub), []).append(n)
    sub_ranks = {key: _ranks(numbers) for key, numbers in sub_numbers.items()}

    def rank(kind, number, depth, sub, part):
        return sub_ranks[(kind, number, depth, sub)][_scope_number(sub, part)]

    result = []
    for origin, kind, number, parts, value in parsed:
        variable = parts[-1]
        if kind == "head":
            if variable not in _CONV_VARIABLES:
                raise _unplaceable(origin, f"unknown head variable {variable!r}")
            slot = f"head/{variable}"
        elif kind in ("contracting", "expanding"):
            prefix = prefixes[kind][number]
            if len(parts) != 3:
                raise _unplaceable(origin, "expected <block>/<layer>/<variable>")
            if _scope_number("conv2d", parts[1]) is not None:
                sub, names, short = "conv2d", _CONV_VARIABLES, "conv"
            elif _scope_number("batch_normalization", parts[1]) is not None:
                sub, names, short = "batch_normalization", _BN_VARIABLES, "bn"
            else:
                why = f"unknown layer {parts[1]!r} in a conv block"
                raise _unplaceable(origin, why)
            index = rank(kind, number, 1, sub, parts[1])
            if index > 1 or variable not in names:
                raise _unplaceable(
                    origin,
                    f"a conv block has two {sub} layers with variables {names}",
                )
            slot = f"{prefix}_{short}_{index}/{variable}"
        else:
            prefix = prefixes[kind][number]
            slot = None
            if len(parts) == 3 and _scope_number("dense", parts[1]) is not None:
                index = rank(kind, number, 1, "dense", parts[1])
                if index < 2 and variable in _CONV_VARIABLES:
                    slot = f"{prefix}/{_DENSE_SLOTS[index]}.{variable}"
            elif (
                kind == "ssr"
                and len(parts) == 4
                and _scope_number("local_singularity_strength", parts[1]) is not None
            ):
                if _scope_number("batch_normalization", parts[2]) is not None:
                    if variable in _BN_VARIABLES:
                        slot = f"{prefix}/alpha.bn.{variable}"
                elif _scope_number("depthwise_conv2d", parts[2]) is not None:
                    scale = rank(kind, number, 2, "depthwise_conv2d", parts[2]) + 1
                    if variable in ("depthwise_kernel", "bias"):
                        short = "kernel" if variable == "depthwise_kernel" else "bias"
                        slot = f"{prefix}/alpha.box_{scale}.{short}"
            if slot is None:
                raise _unplaceable(origin, "unknown variable of an attention block")
        result.append(_SourceWeight(origin, slot, value))
    return result


_CHECKPOINT_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def _parse_checkpoint_keys(weights: Mapping[str, np.ndarray]) -> list[_SourceWeight]:
    """Slots of the original's TF-format checkpoint entries.

    The checkpoint stores object-graph paths: ``layer_with_weights-K`` is the
    model's K-th layer that has weights (in the original's creation order:
    encoder block, its attention, ..., bottleneck, decoder blocks, head),
    followed by the attribute path inside it (``conv1``, ``bn2``,
    ``alpha_layer/bn``, ``alpha_layer/conv_list/J``, ``w1``, ``w2``,
    ``kernel``). Keys outside ``layer_with_weights-*`` (the object graph,
    the optimizer and its slots, the save counter) are ignored.
    """
    groups: dict[int, list[tuple[str, list[str], np.ndarray]]] = {}
    for key, value in weights.items():
        match = re.fullmatch(r"layer_with_weights-(\d+)/(.+)", key)
        if match is None or not key.endswith(_CHECKPOINT_SUFFIX):
            continue
        if ".OPTIMIZER_SLOT" in key:
            continue
        path = match.group(2)[: -len(_CHECKPOINT_SUFFIX)].split("/")
        groups.setdefault(int(match.group(1)), []).append((key, path, value))
    if not groups:
        raise ValueError(
            "The checkpoint holds no layer_with_weights-* variables: it is not the "
            "original's model.save_weights(..., save_format='tf') output."
        )

    kinds = {}
    for k, entries in groups.items():
        firsts = {path[0] for _, path, _ in entries}
        if {"conv1", "conv2"} <= firsts <= {"conv1", "conv2", "bn1", "bn2"}:
            kinds[k] = "block"
        elif "alpha_layer" in firsts and firsts <= {"alpha_layer", "w1", "w2"}:
            kinds[k] = "ssr"
        elif firsts == {"w1", "w2"}:
            kinds[k] = "se"
        elif firsts == {"kernel", "bias"}:
            kinds[k] = "head"
        else:
            raise _unplaceable(
                entries[0][0], f"unknown layer with attributes {sorted(firsts)}"
            )
    blocks = [k for k in sorted(groups) if kinds[k] == "block"]
    attentions = [k for k in sorted(groups) if kinds[k] in ("ssr", "se")]
    heads = [k for k in sorted(groups) if kinds[k] == "head"]
    if len({kinds[k] for k in attentions}) > 1:
        first = next(k for k in attentions if kinds[k] == "se")
        raise _unplaceable(groups[first][0][0], "the source mixes SSR and SE blocks")
    if len(heads) > 1:
        raise _unplaceable(groups[heads[1]][0][0], "more than one head convolution")
    if len(blocks) % 2 == 0:
        raise _unplaceable(
            groups[blocks[-1]][0][0] if blocks else groups[heads[0]][0][0],
            f"a U-Net has an odd number of conv blocks; the source has {len(blocks)}",
        )
    contracting = (len(blocks) + 1) // 2
    prefixes = {}
    for rank, k in enumerate(blocks):
        if rank < contracting - 1:
            prefixes[k] = f"encoder_{rank}"
        elif rank == contracting - 1:
            prefixes[k] = "bottleneck"
        else:
            prefixes[k] = f"decoder_{len(blocks) - 1 - rank}"
    for rank, k in enumerate(attentions):
        prefixes[k] = f"encoder_{rank}_attention"

    sub_layers = {"conv1": "conv_0", "conv2": "conv_1", "bn1": "bn_0", "bn2": "bn_1"}
    result = []
    for k in sorted(groups):
        for key, path, value in groups[k]:
            slot = None
            if kinds[k] == "head" and len(path) == 1:
                slot = f"head/{path[0]}"
            elif kinds[k] == "block" and len(path) == 2:
                names = _CONV_VARIABLES if path[0].startswith("conv") else _BN_VARIABLES
                if path[1] in names:
                    slot = f"{prefixes[k]}_{sub_layers[path[0]]}/{path[1]}"
            elif path[0] in ("w1", "w2") and len(path) == 2:
                if path[1] in _CONV_VARIABLES:
                    dense = "excite" if path[0] == "w2" else "squeeze"
                    slot = f"{prefixes[k]}/{dense}.{path[1]}"
            elif path[:2] == ["alpha_layer", "bn"] and len(path) == 3:
                if path[2] in _BN_VARIABLES:
                    slot = f"{prefixes[k]}/alpha.bn.{path[2]}"
            elif path[:2] == ["alpha_layer", "conv_list"] and len(path) == 4:
                if path[2].isdigit() and path[3] in ("depthwise_kernel", "bias"):
                    short = "kernel" if path[3] == "depthwise_kernel" else "bias"
                    slot = f"{prefixes[k]}/alpha.box_{int(path[2]) + 1}.{short}"
            if slot is None:
                raise _unplaceable(key, "unknown variable path")
            result.append(_SourceWeight(key, slot, np.asarray(value)))
    return result


# --------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------


def _h5_strings(attrs, name: str) -> list[str]:
    """A string-list attribute, possibly chunked (``name0``, ``name1``...)."""
    if name in attrs:
        values = list(attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in attrs:
            values.extend(attrs[f"{name}{chunk}"])
            chunk += 1
        if not chunk:
            raise KeyError(name)
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def read_h5_weights(path) -> dict[str, np.ndarray]:
    """The weights of a Keras 2 HDF5 file, by variable name, in file order.

    Reads what ``tf.keras`` 2.x ``model.save_weights("x.h5")`` (or
    ``model.save("x.h5")``) writes, with ``h5py`` (a Keras dependency), so
    it works on every backend without TensorFlow.

    Args:
        path: the ``.h5`` file.

    Returns:
        ``{"contracting_layer/conv2d/kernel:0": array, ...}``.

    Raises:
        ValueError: if the file is not HDF5 or not in the Keras 2 layout.

    Example:
        >>> names = list(read_h5_weights("ssr_unet.h5"))
    """
    import h5py

    path = os.fspath(path)
    if not h5py.is_hdf5(path):
        raise ValueError(f"Not an HDF5 file. Received: source={path!r}")
    weights = {}
    with h5py.File(path, "r") as file:
        group = file["model_weights"] if "model_weights" in file else file
        try:
            layer_names = _h5_strings(group.attrs, "layer_names")
        except KeyError:
            raise ValueError(
                "The HDF5 file has no 'layer_names' attribute: it is not a Keras 2 "
                "(tf.keras <= 2.15) weights file. A Keras 3 '.weights.h5' file "
                f"loads with model.load_weights. Received: source={path!r}"
            ) from None
        for layer_name in layer_names:
            layer_group = group[layer_name]
            for weight_name in _h5_strings(layer_group.attrs, "weight_names"):
                weights[weight_name] = np.asarray(layer_group[weight_name])
    return weights


class _UnsupportedCheckpoint(Exception):
    """A checkpoint feature the pure-Python reader does not handle."""


# TensorFlow DataType enum values -> NumPy dtypes (little-endian).
_TF_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 6: "i1", 9: "<i8", 10: "?",
              19: "<f2"}  # fmt: skip
_TF_STRING = 7


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise _UnsupportedCheckpoint("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _proto_fields(data: bytes):
    """``(field number, wire type, value)`` of a serialised protobuf."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise _UnsupportedCheckpoint(f"protobuf wire type {wire}")
        yield number, wire, value


def _sstable_block(data: bytes, offset: int, size: int):
    """The ``(key, value)`` entries of one uncompressed SSTable block."""
    if offset + size + 5 > len(data):
        raise _UnsupportedCheckpoint("block outside the file")
    if data[offset + size] != 0:
        raise _UnsupportedCheckpoint("compressed SSTable block")
    block = data[offset : offset + size]
    restarts = int.from_bytes(block[-4:], "little")
    end = size - 4 - 4 * restarts
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + length]
        pos += length


def _sstable(data: bytes):
    """All ``(key, value)`` entries of a LevelDB-format table (TF's .index)."""
    if len(data) < 48 or data[-8:] != bytes.fromhex("57fb808b247547db"):
        raise _UnsupportedCheckpoint("not an SSTable")
    footer = data[-48:]
    _, pos = _varint(footer, 0)  # metaindex offset
    _, pos = _varint(footer, pos)  # metaindex size
    index_offset, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    for _, handle in _sstable_block(data, index_offset, index_size):
        offset, pos = _varint(handle, 0)
        size, _ = _varint(handle, pos)
        yield from _sstable_block(data, offset, size)


def _read_checkpoint_python(prefix: str) -> dict[str, np.ndarray]:
    """Reads a TF2 checkpoint (TensorBundle) without TensorFlow."""
    with open(prefix + ".index", "rb") as file:
        index = file.read()
    header, entries = None, {}
    for key, value in _sstable(index):
        if key == b"":
            header = {n: v for n, _, v in _proto_fields(value)}
        else:
            entries[key.decode("utf8")] = value
    if header is None:
        raise _UnsupportedCheckpoint("no bundle header")
    if header.get(2, 0) != 0:
        raise _UnsupportedCheckpoint("big-endian bundle")
    shards = header.get(1, 1)
    data = {}
    result = {}
    for key, value in entries.items():
        fields = list(_proto_fields(value))
        entry = {n: v for n, _, v in fields}
        if 7 in entry:
            raise _UnsupportedCheckpoint("partitioned (sliced) variable")
        dtype = entry.get(1, 0)
        if dtype == _TF_STRING:
            continue
        if dtype not in _TF_DTYPES:
            raise _UnsupportedCheckpoint(f"dtype enum {dtype}")
        shape = []
        for n, _, dim in _proto_fields(entry.get(2, b"")):
            if n == 2:
                shape.append({m: v for m, _, v in _proto_fields(dim)}.get(1, 0))
        shard = entry.get(3, 0)
        if shard not in data:
            with open(f"{prefix}.data-{shard:05d}-of-{shards:05d}", "rb") as file:
                data[shard] = file.read()
        offset, size = entry.get(4, 0), entry.get(5, 0)
        itemsize = np.dtype(_TF_DTYPES[dtype]).itemsize
        if size != itemsize * int(np.prod(shape, dtype=np.int64)):
            raise _UnsupportedCheckpoint(f"size of {key}")
        array = np.frombuffer(
            data[shard][offset : offset + size], dtype=_TF_DTYPES[dtype]
        )
        result[key] = array.reshape(shape).astype(array.dtype.newbyteorder("="))
    return result


def _checkpoint_prefix(path: str) -> str | None:
    """The TF checkpoint prefix that ``path`` names, or None."""
    if os.path.isdir(path):
        state = os.path.join(path, "checkpoint")
        if os.path.isfile(state):
            with open(state, encoding="utf8") as file:
                text = file.read()
            match = re.search(r'^model_checkpoint_path:\s*"(.*)"', text, re.M)
            if match:
                prefix = match.group(1)
                return prefix if os.path.isabs(prefix) else os.path.join(path, prefix)
        indexes = [f for f in os.listdir(path) if f.endswith(".index")]
        if len(indexes) == 1:
            return os.path.join(path, indexes[0][: -len(".index")])
        return None
    if path.endswith(".index") and os.path.isfile(path):
        return path[: -len(".index")]
    if os.path.isfile(path + ".index"):
        return path
    return None


def read_checkpoint_weights(prefix) -> dict[str, np.ndarray]:
    """The variables of a TF2 checkpoint, by checkpoint key.

    Reads the TensorBundle files that ``tf.keras`` ``model.save_weights(
    "dir/weights")`` (TF format) writes: ``weights.index`` and
    ``weights.data-*``. Plain (uncompressed, unpartitioned, little-endian)
    bundles, which is what Keras writes, are read in pure Python on every
    backend; anything else falls back to ``tf.train.load_checkpoint``.

    Args:
        prefix: the checkpoint prefix (``".../weights"``), its ``.index``
            file, or the directory holding a ``checkpoint`` state file.

    Returns:
        ``{"layer_with_weights-0/conv1/kernel/.ATTRIBUTES/VARIABLE_VALUE":
        array, ...}`` (string entries such as the object graph left out).

    Raises:
        ValueError: if no checkpoint is found at ``prefix``.
        ImportError: if the bundle needs TensorFlow and it is not installed.

    Example:
        >>> keys = read_checkpoint_weights("ssr_unet_tf_format/weights")
    """
    path = os.fspath(prefix)
    found = _checkpoint_prefix(path)
    if found is None:
        raise ValueError(
            "No TensorFlow checkpoint found: expected a prefix with a '.index' file "
            f"next to it, or a directory holding one. Received: source={path!r}"
        )
    try:
        return _read_checkpoint_python(found)
    except _UnsupportedCheckpoint as error:
        reason = str(error)
    try:
        import tensorflow as tf
    except ImportError:
        raise ImportError(
            f"The checkpoint {found!r} uses a feature ({reason}) that only "
            "TensorFlow reads: install tensorflow, or save the original model with "
            "model.save_weights('weights.h5') and load that file instead."
        ) from None
    reader = tf.train.load_checkpoint(found)
    result = {}
    for key, dtype in reader.get_variable_to_dtype_map().items():
        if dtype != tf.string:
            result[key] = np.asarray(reader.get_tensor(key))
    return result


def _read_source(source) -> list[_SourceWeight]:
    if isinstance(source, Mapping):
        return _parse_variable_names(source)
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
            return _parse_variable_names(read_h5_weights(path))
        raise ValueError(
            "`source` is a file but not an HDF5 (.h5) weights file; for a TF "
            f"checkpoint pass its prefix (without '.index'). Received: source={path!r}"
        )
    if _checkpoint_prefix(path) is not None:
        return _parse_checkpoint_keys(read_checkpoint_weights(path))
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
            names = _CONV_VARIABLES if block.group(2) == "conv" else _BN_VARIABLES
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
                    "no reference weight names; load_weights supports SqueezeExcite "
                    "and SingularityStrengthRecalibration."
                )
            for name, variable in _variables(layer).items():
                slots[f"{layer.name}/{name}"] = variable
        elif layer.name == "head":
            for name in _CONV_VARIABLES:
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


def _check_box_sum(weight: _SourceWeight, match, attention: dict) -> tuple:
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

    placed: dict[str, _SourceWeight] = {}
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
