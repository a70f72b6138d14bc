"""Weight files built by the tests, valid or damaged on purpose.

TensorBundle checkpoints are assembled from the format's specification
(LevelDB table, protobuf wire format, masked CRC-32C checksums, so that
TensorFlow reads them too), with a hook to change any entry's fields;
``.h5`` files are copies of recorded ones with one dataset replaced.
"""

from __future__ import annotations

import shutil
import struct

import h5py
import numpy as np

#: TensorFlow DataType enum of the NumPy dtypes written here.
DTYPES = {"float32": 1, "float64": 2, "int32": 3, "complex64": 8, "int64": 9,
          "float16": 19}  # fmt: skip


def varint(n: int) -> bytes:
    """A protobuf varint; a negative int64 as its 10-byte two's complement."""
    n &= 2**64 - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, value) -> bytes:
    """A protobuf field: varint (wire 0) for ints, length-delimited (2) for bytes."""
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    return varint(number << 3 | 2) + varint(len(value)) + value


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        for _ in range(8):
            n = (n >> 1) ^ (0x82F63B78 if n & 1 else 0)
        table.append(n)
    return table


_CRC32C = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """LevelDB's masked CRC-32C (Castagnoli), as TensorFlow checks it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def block(entries, restart_interval=2, compression=0) -> bytes:
    """A LevelDB block: prefix-compressed entries, restart points, trailer."""
    out, restarts, previous = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval:
            while shared < min(len(key), len(previous)) and (
                key[shared] == previous[shared]
            ):
                shared += 1
        else:
            restarts.append(len(out))
        out += varint(shared) + varint(len(key) - shared) + varint(len(value))
        out += key[shared:] + value
        previous = key
    for offset in restarts:
        out += struct.pack("<I", offset)
    out += struct.pack("<I", len(restarts))
    out += bytes([compression])
    return bytes(out) + struct.pack("<I", masked_crc32c(out))  # type, checksum


def entry_bytes(entry: dict) -> bytes:
    """A ``BundleEntryProto`` from ``{dtype, shape, shard, offset, size, crc,
    extra}``."""
    shape = b"".join(field(2, field(1, d)) for d in entry["shape"])
    out = field(1, entry["dtype"]) + field(2, shape)
    if entry.get("shard"):
        out += field(3, entry["shard"])
    out += field(4, entry["offset"]) + field(5, entry["size"])
    out += varint(6 << 3 | 5) + struct.pack("<I", entry["crc"])  # fixed32
    return out + entry["extra"]


def write_bundle(
    prefix,
    tensors,
    *,
    per_block=2,
    header=None,
    edit=None,
    compression=0,
    order=sorted,
):
    """``prefix.index`` / ``.data-00000-of-00001`` holding ``tensors``.

    ``edit(key, entry)`` may change an entry's fields (a dict: ``dtype``,
    ``shape``, ``shard``, ``offset``, ``size``, ``crc``, ``extra`` bytes
    appended) or
    return the raw bytes of the entry instead. Returns the data file's path.
    """
    data, entries = bytearray(), []
    for key in order(tensors):
        array = np.asarray(tensors[key])
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        entry = {
            "dtype": DTYPES[array.dtype.name],
            "shape": list(array.shape),
            "offset": len(data),
            "size": len(raw),
            "crc": masked_crc32c(raw),
            "extra": b"",
        }
        if edit is not None:
            entry = edit(key, entry) or entry
        value = entry if isinstance(entry, bytes) else entry_bytes(entry)
        entries.append((key.encode(), value))
        data += raw
    header = field(1, 1) + field(3, field(1, 1)) if header is None else header
    rows = [(b"", header), *entries]
    index, handles = bytearray(), []
    for start in range(0, len(rows), per_block):
        chunk = rows[start : start + per_block]
        data_block = block(chunk, compression=compression)
        handles.append((chunk[-1][0], varint(len(index)) + varint(len(data_block) - 5)))
        index += data_block
    index_block = block(handles, restart_interval=1)
    index_handle = varint(len(index)) + varint(len(index_block) - 5)
    index += index_block
    footer = (varint(0) + varint(0) + index_handle).ljust(40, b"\0")
    index += footer + bytes.fromhex("57fb808b247547db")
    (prefix.parent / (prefix.name + ".index")).write_bytes(bytes(index))
    data_file = prefix.parent / (prefix.name + ".data-00000-of-00001")
    data_file.write_bytes(bytes(data))
    return data_file


def h5_with(source, path, weight: str, **dataset):
    """A copy of the Keras 2 ``.h5`` file ``source`` whose dataset ``weight``
    is replaced by ``h5py.create_dataset(**dataset)`` (or removed if none)."""
    shutil.copyfile(source, path)
    with h5py.File(path, "r+") as file:
        name = f"{weight.split('/')[0]}/{weight}"
        del file[name]
        if dataset:
            file.create_dataset(name, **dataset)
    return path
