"""keras_ssr.porting.tensorbundle: TF2 checkpoints read without TensorFlow.

Checked against TensorFlow's own reader (where installed) on the original's
checkpoint and on one TensorFlow writes here with every supported dtype, and
against bundles assembled in this file from the format's specification
(LevelDB table, protobuf wire format), which also exercise prefix-compressed
keys, several data blocks and the features the reader declines.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from keras_ssr import porting
from keras_ssr.porting import tensorbundle
from tests import fixtures as fx
from tests import weight_files as wf

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
    wf.write_bundle(tmp_path / "w", _TENSORS, per_block=per_block)
    read = porting.read_checkpoint_weights(tmp_path / "w")
    assert sorted(read) == sorted(_TENSORS)
    for key, value in _TENSORS.items():
        assert read[key].dtype == value.dtype and read[key].shape == value.shape
        np.testing.assert_array_equal(read[key], value, err_msg=key)


@pytest.mark.skipif(not HAS_TF, reason="needs TensorFlow as the reference reader")
def test_tensorflow_reads_the_bundles_built_here(tmp_path):
    wf.write_bundle(tmp_path / "w", _TENSORS, per_block=3)
    _assert_same(_tensorflow_reads(tmp_path / "w"), _TENSORS)


def _full_slice(key, entry):
    """Marks ``layer/kernel`` partitioned: one slice covering it all."""
    if key.startswith("layer/kernel"):
        extents = b"".join(wf.field(1, wf.field(2, d)) for d in entry["shape"])
        entry["extra"] = wf.field(7, extents)


def test_what_the_reader_leaves_to_tensorflow(tmp_path):
    # Checked first, then declined: TensorFlow reads these.
    big_endian = wf.field(1, 1) + wf.field(2, 1)
    for bundle, match in [
        ({"header": big_endian}, "big-endian"),
        ({"edit": _full_slice}, "partitioned"),
    ]:
        wf.write_bundle(tmp_path / "w", _TENSORS, **bundle)
        with pytest.raises(tensorbundle.UnsupportedCheckpoint, match=match):
            tensorbundle.bundle_arrays(str(tmp_path / "w"))


def _refused(prefix, file, match):
    with pytest.raises(ValueError, match=match) as info:
        porting.read_checkpoint_weights(prefix)
    assert repr(str(file)) in str(info.value)


def test_what_the_reader_refuses_without_tensorflow(tmp_path, monkeypatch):
    # Compressed blocks cannot be checked before TensorFlow would read them.
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # TensorFlow is not asked
    wf.write_bundle(tmp_path / "w", _TENSORS, compression=1)
    _refused(tmp_path / "w", tmp_path / "w.index", r"compressed \(Snappy\)")

    # A partitioned variable whose slice leaves its shape.
    def outside(key, entry):
        _full_slice(key, entry)
        if key.startswith("layer/kernel"):
            entry["extra"] = wf.field(7, wf.field(1, wf.field(1, 2)) * 2)

    wf.write_bundle(tmp_path / "w", _TENSORS, edit=outside)
    _refused(tmp_path / "w", tmp_path / "w.index", r"layer/kernel.*slice \[2, \+3\)")


@pytest.mark.skipif(not HAS_TF, reason="the fallback reads with TensorFlow")
def test_a_partitioned_variable_tensorflow_writes(tmp_path):
    import tensorflow as tf

    full = np.arange(12, dtype="float32").reshape(4, 3)
    prefix = str(tmp_path / "sliced")
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=["v", "v", "w"],
        shape_and_slices=["4 3 0,2:-", "4 3 2,2:-", ""],
        tensors=[full[:2], full[2:], np.float64(0.5)],
    )
    with pytest.raises(tensorbundle.UnsupportedCheckpoint, match="partitioned"):
        tensorbundle.bundle_arrays(prefix)
    read = porting.read_checkpoint_weights(prefix)
    assert sorted(read) == ["v", "w"]
    np.testing.assert_array_equal(read["v"], full)


@pytest.mark.skipif(not HAS_TF, reason="the fallback reads with TensorFlow")
def test_fallback_to_tensorflow(monkeypatch):
    def unsupported(prefix):
        raise tensorbundle.UnsupportedCheckpoint("compressed SSTable block")

    expected = porting.read_checkpoint_weights(TF_FORMAT)
    monkeypatch.setattr(tensorbundle, "bundle_arrays", unsupported)
    _assert_same(porting.read_checkpoint_weights(TF_FORMAT), expected)


def test_needing_tensorflow_without_it(monkeypatch):
    def unsupported(prefix):
        raise tensorbundle.UnsupportedCheckpoint("a big-endian bundle")

    monkeypatch.setattr(tensorbundle, "bundle_arrays", unsupported)
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import fails
    with pytest.raises(ImportError, match="big-endian bundle.*tensorflow"):
        porting.read_checkpoint_weights(TF_FORMAT)


def test_no_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="No TensorFlow checkpoint"):
        porting.read_checkpoint_weights(tmp_path)
