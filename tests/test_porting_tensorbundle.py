"""keras_ssr.porting.tensorbundle: TF2 checkpoints read without TensorFlow.

Checked against TensorFlow's own reader (where installed) on the original's
checkpoint and on one TensorFlow writes here with every supported dtype, and
against bundles assembled in this file from the format's specification
(LevelDB table, protobuf wire format), which also exercise prefix-compressed
keys, several data blocks and the features the reader declines.
"""

from __future__ import annotations

import importlib.util
import struct
import sys

import fixtures as fx
import numpy as np
import pytest

from keras_ssr import porting
from keras_ssr.porting import tensorbundle

TF_FORMAT = fx.DATA / "checkpoints" / "ssr_unet_tf_format"
HAS_TF = importlib.util.find_spec("tensorflow") is not None


def test_the_originals_checkpoint_equals_its_h5_file():
    checkpoint = porting.read_checkpoint_weights(TF_FORMAT / "weights")
    h5 = porting.read_h5_weights(fx.DATA / "checkpoints" / "ssr_unet.h5")
    assert len(checkpoint) == len(h5)
    key = "layer_with_weights-3/alpha_layer/bn/gamma/.ATTRIBUTES/VARIABLE_VALUE"
    name = (
        "singularity_strength_recalibration_1/local_singularity_strength_1/"
        "batch_normalization_5/gamma:0"
    )
    np.testing.assert_array_equal(checkpoint[key], h5[name])


def _tensorflow_reads(prefix):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    return {
        key: reader.get_tensor(key)
        for key, dtype in reader.get_variable_to_dtype_map().items()
        if dtype != tf.string
    }


def _assert_same(ours, theirs):
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype, key
        np.testing.assert_array_equal(ours[key], value, err_msg=key)


@pytest.mark.skipif(not HAS_TF, reason="needs TensorFlow as the reference reader")
def test_the_originals_checkpoint_equals_tensorflow():
    ours = porting.read_checkpoint_weights(TF_FORMAT / "weights")
    _assert_same(ours, _tensorflow_reads(TF_FORMAT / "weights"))


@pytest.mark.skipif(not HAS_TF, reason="needs TensorFlow to write the checkpoint")
def test_every_dtype_tensorflow_writes(tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    values = {
        "f32": rng.normal(size=(3, 4)).astype("float32"),
        "f64": rng.normal(size=(2, 1, 3)).astype("float64"),
        "f16": rng.normal(size=(5,)).astype("float16"),
        "i32": rng.integers(-9, 9, size=(2, 2)).astype("int32"),
        "i64": rng.integers(-(2**40), 2**40, size=(3,)).astype("int64"),
        "u8": rng.integers(0, 255, size=(4,)).astype("uint8"),
        "i8": rng.integers(-100, 100, size=(4,)).astype("int8"),
        "flag": np.array([True, False, True]),
        "scalar": np.float32(2.5),
        "empty": np.zeros((0, 3), "float32"),
    }
    checkpoint = tf.train.Checkpoint(**{k: tf.Variable(v) for k, v in values.items()})
    prefix = checkpoint.write(str(tmp_path / "ckpt"))
    ours = porting.read_checkpoint_weights(prefix)
    _assert_same(ours, _tensorflow_reads(prefix))
    for name, value in values.items():
        got = ours[f"{name}/.ATTRIBUTES/VARIABLE_VALUE"]
        np.testing.assert_array_equal(got, value, err_msg=name)
        assert got.dtype == value.dtype and got.shape == np.shape(value)


# -- bundles assembled from the specification ------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value) -> bytes:
    """A protobuf field: varint (wire 0) for ints, length-delimited (2) for bytes."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _block(entries, restart_interval=2, compression=0) -> bytes:
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
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value))
        out += key[shared:] + value
        previous = key
    for offset in restarts:
        out += struct.pack("<I", offset)
    out += struct.pack("<I", len(restarts))
    return bytes(out) + bytes([compression]) + b"\0\0\0\0"  # type, (unchecked) crc


_DTYPES = {"float32": 1, "float64": 2, "int32": 3, "int64": 9, "float16": 19}


def _write_bundle(prefix, tensors, *, per_block=2, header=None, entry_extra=b""):
    """``prefix.index`` / ``.data-00000-of-00001`` holding ``tensors``."""
    data, entries = bytearray(), []
    for key in sorted(tensors):
        array = np.asarray(tensors[key])
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        shape = b"".join(_field(2, _field(1, d)) for d in array.shape)
        entry = _field(1, _DTYPES[array.dtype.name]) + _field(2, shape)
        entry += _field(4, len(data)) + _field(5, len(raw)) + entry_extra
        entries.append((key.encode(), entry))
        data += raw
    header = _field(1, 1) + _field(3, _field(1, 1)) if header is None else header
    rows = [(b"", header), *entries]
    index, handles = bytearray(), []
    for start in range(0, len(rows), per_block):
        chunk = rows[start : start + per_block]
        block = _block(chunk)
        handles.append((chunk[-1][0], _varint(len(index)) + _varint(len(block) - 5)))
        index += block
    index_block = _block(handles, restart_interval=1)
    index_handle = _varint(len(index)) + _varint(len(index_block) - 5)
    index += index_block
    footer = (_varint(0) + _varint(0) + index_handle).ljust(40, b"\0")
    index += footer + bytes.fromhex("57fb808b247547db")
    (prefix.parent / (prefix.name + ".index")).write_bytes(bytes(index))
    (prefix.parent / (prefix.name + ".data-00000-of-00001")).write_bytes(bytes(data))


_TENSORS = {
    "layer/kernel/.ATTRIBUTES/VARIABLE_VALUE": np.arange(12.0, dtype="float32").reshape(
        3, 4
    ),
    "layer/bias/.ATTRIBUTES/VARIABLE_VALUE": np.array([-1.5, 2**-20], "float64"),
    "layer/count/.ATTRIBUTES/VARIABLE_VALUE": np.array(2**40 + 3, "int64"),
    "layer_2/a_long_name_sharing_a_prefix": np.array([[7, -8]], "int32"),
    "layer_2/a_long_name_sharing_b": np.array([0.5, 65504], "float16"),
}


@pytest.mark.parametrize("per_block", [1, 2, 10])
def test_a_bundle_built_from_the_specification(tmp_path, per_block):
    _write_bundle(tmp_path / "w", _TENSORS, per_block=per_block)
    read = porting.read_checkpoint_weights(tmp_path / "w")
    assert sorted(read) == sorted(_TENSORS)
    for key, value in _TENSORS.items():
        assert read[key].dtype == value.dtype and read[key].shape == value.shape
        np.testing.assert_array_equal(read[key], value, err_msg=key)


def _reader_declines(tmp_path, match, **bundle):
    _write_bundle(tmp_path / "w", _TENSORS, **bundle)
    with pytest.raises(tensorbundle.UnsupportedCheckpoint, match=match):
        tensorbundle.read_tensor_bundle(str(tmp_path / "w"))


def test_what_the_reader_declines(tmp_path):
    _reader_declines(tmp_path, "big-endian", header=_field(1, 1) + _field(2, 1))
    _reader_declines(tmp_path, "partitioned", entry_extra=_field(7, b"\x0a\x00"))
    _write_bundle(tmp_path / "w", _TENSORS)
    index = tmp_path / "w.index"
    raw = bytearray(index.read_bytes())
    raw[-1] ^= 1  # the magic number
    index.write_bytes(bytes(raw))
    with pytest.raises(tensorbundle.UnsupportedCheckpoint, match="not an SSTable"):
        tensorbundle.read_tensor_bundle(str(tmp_path / "w"))


def test_compressed_block_is_declined(tmp_path, monkeypatch):
    real = _block
    monkeypatch.setitem(
        globals(), "_block", lambda e, restart_interval=2: real(e, restart_interval, 1)
    )
    _reader_declines(tmp_path, "compressed SSTable block")


@pytest.mark.skipif(not HAS_TF, reason="the fallback reads with TensorFlow")
def test_fallback_to_tensorflow(monkeypatch):
    def unsupported(prefix):
        raise tensorbundle.UnsupportedCheckpoint("compressed SSTable block")

    expected = porting.read_checkpoint_weights(TF_FORMAT)
    monkeypatch.setattr(tensorbundle, "read_tensor_bundle", unsupported)
    _assert_same(porting.read_checkpoint_weights(TF_FORMAT), expected)


def test_needing_tensorflow_without_it(monkeypatch):
    def unsupported(prefix):
        raise tensorbundle.UnsupportedCheckpoint("compressed SSTable block")

    monkeypatch.setattr(tensorbundle, "read_tensor_bundle", unsupported)
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import fails
    with pytest.raises(ImportError, match="compressed SSTable block.*tensorflow"):
        porting.read_checkpoint_weights(TF_FORMAT)


def test_no_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="No TensorFlow checkpoint"):
        porting.read_checkpoint_weights(tmp_path)
