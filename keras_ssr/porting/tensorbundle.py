"""Reads TensorFlow 2 checkpoints (TensorBundle) without TensorFlow.

A checkpoint ``prefix`` is two kinds of file. ``prefix.index`` is an
SSTable (LevelDB's table format: prefix-compressed key/value blocks, an
index block and a 48-byte footer ending in a magic number) whose empty key
holds the bundle header and whose other keys are tensor names mapped to a
serialised ``BundleEntryProto`` (dtype, shape, shard, offset, size).
``prefix.data-SSSSS-of-NNNNN`` holds the raw little-endian tensor bytes.
This module reads the protobuf wire format, the SSTable and the bundle in a
few dozen lines of Python: plain (uncompressed, unpartitioned,
little-endian) bundles, which is what Keras writes. Anything else raises
:class:`UnsupportedCheckpoint`, and :func:`read_checkpoint_weights` then
falls back to ``tf.train.load_checkpoint``.
"""

from __future__ import annotations

import os
import re

import numpy as np


class UnsupportedCheckpoint(Exception):
    """A checkpoint feature the pure-Python reader does not handle."""


# TensorFlow DataType enum values -> NumPy dtypes (little-endian).
_TF_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 6: "i1", 9: "<i8", 10: "?",
              19: "<f2"}  # fmt: skip
_TF_STRING = 7


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise UnsupportedCheckpoint("truncated varint")
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
            raise UnsupportedCheckpoint(f"protobuf wire type {wire}")
        yield number, wire, value


def _sstable_block(data: bytes, offset: int, size: int):
    """The ``(key, value)`` entries of one uncompressed SSTable block."""
    if offset + size + 5 > len(data):
        raise UnsupportedCheckpoint("block outside the file")
    if data[offset + size] != 0:
        raise UnsupportedCheckpoint("compressed SSTable block")
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
        raise UnsupportedCheckpoint("not an SSTable")
    footer = data[-48:]
    _, pos = _varint(footer, 0)  # metaindex offset
    _, pos = _varint(footer, pos)  # metaindex size
    index_offset, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    for _, handle in _sstable_block(data, index_offset, index_size):
        offset, pos = _varint(handle, 0)
        size, _ = _varint(handle, pos)
        yield from _sstable_block(data, offset, size)


def read_tensor_bundle(prefix: str) -> dict[str, np.ndarray]:
    """The tensors of a plain TensorBundle checkpoint, by key, in pure Python.

    The header (``BundleHeaderProto``) gives the number of shards (field 1)
    and the endianness (field 2, 0 = little). Each ``BundleEntryProto``
    gives the dtype enum (1), the shape (2, a ``TensorShapeProto`` whose
    ``dim`` entries, field 2, carry their ``size`` in field 1), the shard
    (3), the offset (4) and size (5) in its data file; field 7 marks a
    partitioned variable. String tensors (the object graph) are left out.

    Args:
        prefix: the checkpoint prefix (``".../weights"``).

    Raises:
        UnsupportedCheckpoint: for what Keras does not write (compressed
            blocks, big-endian bundles, partitioned variables, other dtypes).
        OSError: if a file is missing.
    """
    with open(prefix + ".index", "rb") as file:
        index = file.read()
    header, entries = None, {}
    for key, value in _sstable(index):
        if key == b"":
            header = {n: v for n, _, v in _proto_fields(value)}
        else:
            entries[key.decode("utf8")] = value
    if header is None:
        raise UnsupportedCheckpoint("no bundle header")
    if header.get(2, 0) != 0:
        raise UnsupportedCheckpoint("big-endian bundle")
    shards = header.get(1, 1)
    data = {}
    result = {}
    for key, value in entries.items():
        fields = list(_proto_fields(value))
        entry = {n: v for n, _, v in fields}
        if 7 in entry:
            raise UnsupportedCheckpoint("partitioned (sliced) variable")
        dtype = entry.get(1, 0)
        if dtype == _TF_STRING:
            continue
        if dtype not in _TF_DTYPES:
            raise UnsupportedCheckpoint(f"dtype enum {dtype}")
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
            raise UnsupportedCheckpoint(f"size of {key}")
        array = np.frombuffer(
            data[shard][offset : offset + size], dtype=_TF_DTYPES[dtype]
        )
        result[key] = array.reshape(shape).astype(array.dtype.newbyteorder("="))
    return result


def checkpoint_prefix(path: str) -> str | None:
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
    found = checkpoint_prefix(path)
    if found is None:
        raise ValueError(
            "No TensorFlow checkpoint found: expected a prefix with a '.index' file "
            f"next to it, or a directory holding one. Received: source={path!r}"
        )
    try:
        return read_tensor_bundle(found)
    except UnsupportedCheckpoint as error:
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
