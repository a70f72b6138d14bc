"""Reads TensorFlow 2 checkpoints (TensorBundle) without TensorFlow.

A checkpoint ``prefix`` is two kinds of file. ``prefix.index`` is an
SSTable (LevelDB's table format: prefix-compressed key/value blocks, an
index block and a 48-byte footer ending in a magic number) whose empty key
holds the bundle header and whose other keys are tensor names mapped to a
serialised ``BundleEntryProto`` (dtype, shape, shard, offset, size).
``prefix.data-SSSSS-of-NNNNN`` holds the raw little-endian tensor bytes.
This module reads the protobuf wire format, the SSTable and the bundle in
pure Python.

Every length, offset, dimension and size the files claim is checked before
it is used, for every entry of the index: a damaged or inconsistent
checkpoint raises a ``ValueError`` naming the file (and the tensor), and
never reaches TensorFlow, whose reader aborts the process on some of them
(``Check failed: size >= 0`` for a dimension of -1). Tensors are listed by
shape and dtype first and read on demand, each from its own byte range.

What the reader does not implement (big-endian bundles, partitioned
variables, dtypes NumPy lacks such as bfloat16) raises
:class:`UnsupportedCheckpoint` once the whole index has passed those
checks, and :func:`read_checkpoint_weights` then falls back to
``tf.train.load_checkpoint``. Compressed index blocks are refused: they
cannot be checked without decompressing them, and TensorFlow has not
written them since 1.2.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re

import numpy as np

from keras_ssr.porting._source import StoredArray, WeightFileError

__all__ = [
    "UnsupportedCheckpoint",
    "bundle_arrays",
    "checkpoint_arrays",
    "checkpoint_prefix",
    "read_checkpoint_weights",
]


class UnsupportedCheckpoint(Exception):
    """A checkpoint feature the pure-Python reader does not implement."""


class _Malformed(Exception):
    """A structural fault of the index; the caller names the file."""


_MAGIC = bytes.fromhex("57fb808b247547db")
_INT64 = 2**63
_MAX_RANK = 254  # TensorFlow's TensorShape limit

# TensorFlow DataType enum -> the NumPy dtype read (little-endian).
_NUMPY_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 8: "<c8",
                 9: "<i8", 10: "?", 17: "<u2", 18: "<c16", 19: "<f2", 22: "<u4",
                 23: "<u8"}  # fmt: skip
# Bytes per element of the fixed-size dtypes left to TensorFlow: bfloat16,
# quantised, float8, int4/uint4, int2/uint2, float4.
_OTHER_ITEMSIZES = {14: 2, 11: 1, 12: 1, 13: 4, 15: 2, 16: 2, 24: 1, 25: 1, 26: 1,
                    27: 1, 28: 1, 29: 1, 30: 1, 31: 1, 32: 1, 33: 1}  # fmt: skip
# Variable-size dtypes (at least one byte per element): string, resource, variant.
_VARIABLE_DTYPES = {7: "string", 20: "resource", 21: "variant"}
_STRING = 7


# --------------------------------------------------------------------------
# Protobuf wire format and SSTable
# --------------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if pos >= len(data):
            raise _Malformed("a varint runs past the end of its record")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >= 2**64:
                break
            return result, pos
    raise _Malformed("a varint longer than 64 bits")


def _int64(value: int) -> int:
    """A varint field read as protobuf's (two's complement) int64."""
    return value - 2**64 if value >= _INT64 else value


def _fields(data: bytes) -> dict[int, list]:
    """``{field number: [(wire type, value), ...]}`` of a serialised protobuf."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire in (1, 2, 5):
            if wire == 2:
                length, pos = _varint(data, pos)
            else:
                length = 8 if wire == 1 else 4
            if pos + length > len(data):
                raise _Malformed(f"protobuf field {number} runs past its record")
            value, pos = data[pos : pos + length], pos + length
        else:
            raise _Malformed(f"protobuf field {number} has wire type {wire}")
        fields.setdefault(number, []).append((wire, value))
    return fields


def _scalar(fields: dict, number: int, default: int = 0) -> int:
    """The (last) int64 varint of field ``number``."""
    if number not in fields:
        return default
    wire, value = fields[number][-1]
    if wire != 0:
        raise _Malformed(f"protobuf field {number} is not an integer")
    return _int64(value)


def _messages(fields: dict, number: int) -> list[bytes]:
    """The length-delimited values of the (repeated) field ``number``."""
    values = []
    for wire, value in fields.get(number, []):
        if wire != 2:
            raise _Malformed(f"protobuf field {number} is not a message")
        values.append(value)
    return values


def _block(data: bytes, offset: int, size: int):
    """The ``(key, value)`` entries of one SSTable block."""
    if offset + size + 5 > len(data):
        raise _Malformed(
            f"a block at byte {offset} ({size} bytes and a 5-byte trailer) runs "
            f"past the end of the file ({len(data)} bytes)"
        )
    kind = data[offset + size]
    if kind == 1:
        raise _Malformed(
            "its blocks are compressed (Snappy), which TensorFlow has not written "
            "since 1.2 and which this reader does not read, so it cannot check "
            "them before TensorFlow would; re-save the checkpoint"
        )
    if kind != 0:
        raise _Malformed(f"a block of unknown compression type {kind}")
    block = data[offset : offset + size]
    if size < 4:
        raise _Malformed("a block shorter than its restart count")
    end = size - 4 - 4 * int.from_bytes(block[-4:], "little")
    if end < 0:
        raise _Malformed("a block whose restart points exceed it")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + length > end:
            raise _Malformed("a block entry runs past its block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + length]
        pos += length


def _sstable(data: bytes):
    """All ``(key, value)`` entries of a LevelDB-format table, in key order."""
    if len(data) < 48 or data[-8:] != _MAGIC:
        raise _Malformed(
            f"no SSTable footer ({len(data)} bytes, expected at least 48 ending "
            "in the table magic number)"
        )
    footer = data[-48:-8]
    _, pos = _varint(footer, 0)  # metaindex offset
    _, pos = _varint(footer, pos)  # metaindex size
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    previous = None
    for _, handle in _block(data, index_offset, index_size):
        offset, pos = _varint(handle, 0)
        size, _ = _varint(handle, pos)
        for key, value in _block(data, offset, size):
            if previous is not None and key <= previous:
                raise _Malformed("keys out of order")
            previous = key
            yield key, value


# --------------------------------------------------------------------------
# The bundle
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Entry:
    dtype: int  # TensorFlow DataType enum
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    sliced: bool


def _shape(data: bytes) -> tuple[int, ...]:
    """A ``TensorShapeProto``: ``dim`` (2) entries with ``size`` (1)."""
    fields = _fields(data)
    if _scalar(fields, 3):
        raise _Malformed("the shape has unknown rank")
    dims = _messages(fields, 2)
    if len(dims) > _MAX_RANK:
        raise _Malformed(f"the shape has {len(dims)} dimensions (at most {_MAX_RANK})")
    shape = tuple(_scalar(_fields(dim), 1) for dim in dims)
    if any(d < 0 for d in shape):
        raise _Malformed(f"the shape {shape} has a negative dimension")
    if int(np.prod(shape, dtype=object)) >= _INT64:
        raise _Malformed(f"the shape {shape} has more elements than an int64 counts")
    return shape


def _check_slices(slices: list[bytes], shape: tuple[int, ...]) -> None:
    """``TensorSliceProto`` extents (1: start, 2: length) within ``shape``."""
    for data in slices:
        extents = _messages(_fields(data), 1)
        if len(extents) != len(shape):
            raise _Malformed(f"a slice of rank {len(extents)} of a shape {shape}")
        for extent, dim in zip(extents, shape):
            fields = _fields(extent)
            start, length = _scalar(fields, 1), _scalar(fields, 2, dim)
            if not (0 <= start and 0 <= length and start + length <= dim):
                raise _Malformed(f"a slice [{start}, +{length}) outside {shape}")


def _entry(value: bytes, num_shards: int) -> _Entry:
    """A ``BundleEntryProto``, checked: dtype (1), shape (2), shard (3),
    offset (4), size (5), slices (7)."""
    fields = _fields(value)
    dtype = _scalar(fields, 1)
    shapes = _messages(fields, 2)
    shape = _shape(shapes[-1] if shapes else b"")
    shard, offset, size = (_scalar(fields, n) for n in (3, 4, 5))
    slices = _messages(fields, 7)
    _check_slices(slices, shape)
    if not 0 <= shard < num_shards:
        raise _Malformed(f"shard {shard} of a bundle of {num_shards}")
    if offset < 0 or size < 0 or offset + size >= _INT64:
        raise _Malformed(f"a byte range [{offset}, +{size})")
    if dtype in _NUMPY_DTYPES:
        itemsize = np.dtype(_NUMPY_DTYPES[dtype]).itemsize
    elif dtype in _OTHER_ITEMSIZES or dtype in _VARIABLE_DTYPES:
        itemsize = _OTHER_ITEMSIZES.get(dtype)
    else:
        raise _Malformed(f"a dtype (enum {dtype}) this reader does not know")
    count = int(np.prod(shape, dtype=object))
    if slices:
        pass  # the data are in the slices' own entries, checked as any entry
    elif itemsize is None:
        if size < count:  # at least one byte (a length) per element
            raise _Malformed(f"{size} bytes for {count} {_VARIABLE_DTYPES[dtype]}s")
    elif size != count * itemsize:
        raise _Malformed(
            f"{size} bytes for the {count} element(s) of shape {shape} "
            f"({count * itemsize} expected)"
        )
    return _Entry(dtype, shape, shard, offset, size, bool(slices))


def _name(key: bytes) -> str:
    """A key for messages (slices of partitioned variables have binary keys)."""
    return key.decode("utf8", "backslashreplace")


def _data_file(prefix: str, shard: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


def _damaged(file: str, what: str) -> WeightFileError:
    return WeightFileError(
        f"The checkpoint file {file!r} is damaged or not a TensorFlow checkpoint: "
        f"{what}."
    )


def _read_entry(file: str, key: str, entry: _Entry) -> np.ndarray:
    """The tensor at ``entry``'s byte range of its data file."""
    with open(file, "rb") as stream:
        stream.seek(entry.offset)
        raw = stream.read(entry.size)
    if len(raw) != entry.size:
        raise _damaged(
            file, f"it ends before the {entry.size} bytes of {key!r} at {entry.offset}"
        )
    array = np.frombuffer(raw, dtype=_NUMPY_DTYPES[entry.dtype])
    return array.reshape(entry.shape).astype(array.dtype.newbyteorder("="))


def _unreadable(file: str, key: str) -> np.ndarray:
    raise ValueError(f"{key!r} of {file!r} is a string tensor, which is not read.")


def bundle_arrays(prefix: str) -> dict[str, StoredArray]:
    """The tensors of a plain TensorBundle checkpoint, by key, unread.

    The header (``BundleHeaderProto``) gives the number of shards (field 1)
    and the endianness (field 2, 0 = little). Every entry is checked
    (:func:`_entry`) and so is every byte range against the size of its
    data file, before anything is returned or handed to TensorFlow. String
    entries are listed with dtype ``object`` and cannot be read.

    Args:
        prefix: the checkpoint prefix (``".../weights"``).

    Raises:
        ValueError: naming the file (and the tensor), for a damaged or
            inconsistent index or data file.
        UnsupportedCheckpoint: once all of the above is checked, for what
            Keras does not write (big-endian bundles, partitioned variables,
            dtypes NumPy lacks).
        OSError: if a file is missing.
    """
    index_file = prefix + ".index"
    with open(index_file, "rb") as file:
        index = file.read()
    header, entries = None, {}
    try:
        for key, value in _sstable(index):
            if header is None:
                if key != b"":
                    raise _Malformed("no bundle header (the empty key) first")
                fields = _fields(value)
                header = (_scalar(fields, 1, 1), _scalar(fields, 2))
                if header[0] < 1 or header[1] not in (0, 1):
                    raise _Malformed(f"a header of (shards, endianness) {header}")
                continue
            try:
                entries[key] = _entry(value, header[0])
            except _Malformed as error:
                raise _Malformed(f"the entry of {_name(key)!r}: {error}") from None
        if header is None:
            raise _Malformed("no bundle header")
    except _Malformed as error:
        raise _damaged(index_file, str(error)) from None
    num_shards, endianness = header

    sizes: dict[int, int] = {}
    arrays, unsupported = {}, []
    for raw_key, entry in entries.items():
        file = _data_file(prefix, entry.shard, num_shards)
        if entry.shard not in sizes:
            sizes[entry.shard] = os.path.getsize(file)
        if entry.offset + entry.size > sizes[entry.shard]:
            raise _damaged(
                file,
                f"{_name(raw_key)!r} lies at bytes [{entry.offset}, "
                f"{entry.offset + entry.size}) of a file of {sizes[entry.shard]}",
            )
        if entry.sliced:
            unsupported.append("partitioned (sliced) variables")
        elif entry.dtype not in _NUMPY_DTYPES and entry.dtype != _STRING:
            unsupported.append(f"the dtype enum {entry.dtype}")
        if raw_key.startswith(b"\0"):
            continue  # a slice of a partitioned variable (binary key)
        try:
            key = raw_key.decode("utf8")
        except UnicodeDecodeError:
            raise _damaged(index_file, f"the key {raw_key!r} is not UTF-8") from None
        if entry.dtype == _STRING:
            arrays[key] = StoredArray(
                entry.shape, np.dtype(object), functools.partial(_unreadable, file, key)
            )
        elif entry.dtype in _NUMPY_DTYPES:
            dtype = np.dtype(_NUMPY_DTYPES[entry.dtype]).newbyteorder("=")
            read = functools.partial(_read_entry, file, key, entry)
            arrays[key] = StoredArray(entry.shape, dtype, read)
    if endianness:
        unsupported.append("a big-endian bundle")
    if unsupported:
        raise UnsupportedCheckpoint(unsupported[0])
    return arrays


def checkpoint_prefix(path: str) -> str | None:
    """The TF checkpoint prefix that ``path`` names, or None."""
    if os.path.isdir(path):
        state = os.path.join(path, "checkpoint")
        if os.path.isfile(state):
            with open(state, encoding="utf8", errors="replace") as file:
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


def _tensorflow_read(reader, prefix: str, key: str) -> np.ndarray:
    import tensorflow as tf

    try:
        return np.asarray(reader.get_tensor(key))
    except tf.errors.OpError as error:
        raise WeightFileError(
            f"TensorFlow cannot read {key!r} from the checkpoint {prefix!r}: "
            f"{error.message}"
        ) from None


def _tensorflow_arrays(prefix: str, reason: str) -> dict[str, StoredArray]:
    """The fallback: ``tf.train.load_checkpoint``, for a checked bundle."""
    try:
        import tensorflow as tf
    except ImportError:
        raise ImportError(
            f"The checkpoint {prefix!r} uses a feature ({reason}) that only "
            "TensorFlow reads: install tensorflow, or save the original model with "
            "model.save_weights('weights.h5') and load that file instead."
        ) from None
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
        dtypes = reader.get_variable_to_dtype_map()
    except tf.errors.OpError as error:
        raise WeightFileError(
            f"TensorFlow cannot read the checkpoint {prefix!r}: {error.message}"
        ) from None
    return {
        key: StoredArray(
            tuple(shapes[key]),
            np.dtype(object if dtype == tf.string else dtype.as_numpy_dtype),
            functools.partial(_tensorflow_read, reader, prefix, key),
        )
        for key, dtype in dtypes.items()
    }


def checkpoint_arrays(prefix: str) -> dict[str, StoredArray]:
    """The tensors of the checkpoint at ``prefix``, unread: in pure Python,
    or through TensorFlow for what :func:`bundle_arrays` does not implement."""
    try:
        return bundle_arrays(prefix)
    except UnsupportedCheckpoint as error:
        return _tensorflow_arrays(prefix, str(error))


def read_checkpoint_weights(prefix) -> dict[str, np.ndarray]:
    """The variables of a TF2 checkpoint, by checkpoint key.

    Reads the TensorBundle files that ``tf.keras`` ``model.save_weights(
    "dir/weights")`` (TF format) writes: ``weights.index`` and
    ``weights.data-*``. Plain (unpartitioned, little-endian) bundles, which
    is what Keras writes, are read in pure Python on every backend; anything
    else falls back to ``tf.train.load_checkpoint``, but only once every
    entry of the index has been checked. Each shape, offset and size is
    checked against the dtype and the data file before anything is read, so
    nothing larger than the files is allocated.

    Args:
        prefix: the checkpoint prefix (``".../weights"``), its ``.index``
            file, or the directory holding a ``checkpoint`` state file.

    Returns:
        ``{"layer_with_weights-0/conv1/kernel/.ATTRIBUTES/VARIABLE_VALUE":
        array, ...}`` (string entries such as the object graph left out).

    Raises:
        ValueError: if no checkpoint is found at ``prefix``, or naming the
            file (and the tensor) for a damaged or inconsistent checkpoint:
            a truncated or malformed index, a negative or overflowing
            dimension, a size that does not match the shape, a byte range
            beyond the data file, a compressed index.
        ImportError: if the bundle needs TensorFlow and it is not installed.
        OSError: if the index or a data file is missing.

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
    return {
        key: stored.read()
        for key, stored in checkpoint_arrays(found).items()
        if stored.dtype != object
    }
