"""Weight files that cannot hurt: damaged and inconsistent files are refused.

Each probe damages a copy of a recorded weight file of model_ssr_unet_2 (the
original's TF 2.14 ``.h5`` file, or its TF checkpoint rebuilt from the
format's specification; two probes use the follow-up's multifractal U-Net)
and loads it into a U-Net of that architecture. It
must raise a ValueError naming the file, and the variable where there is
one, and leave every weight of the model as it was. The probes that claim
huge arrays must keep the loader's allocations within 1 MiB (the model's
32 KB of weights and the readers' bookkeeping) where reading the claim
would take 1.6 GB or 160 GB; the one that used to abort the process inside
TensorFlow (``Check failed: size >= 0``) runs in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc

import h5py
import keras
import numpy as np
import pytest

from keras_ssr import models, porting
from tests import fixtures as fx
from tests import fixtures_mfr as mfr
from tests import weight_files as wf

CHECKPOINTS = fx.DATA / "checkpoints"
H5 = CHECKPOINTS / "ssr_unet.h5"
TF_FORMAT = CHECKPOINTS / "ssr_unet_tf_format" / "weights"
KWARGS = fx.CASES["model_ssr_unet_2"]["kwargs"]
#: The head's bias, the last weight in either file's order.
H5_BIAS = "conv2d_10/bias:0"
KEY_BIAS = "layer_with_weights-7/bias/.ATTRIBUTES/VARIABLE_VALUE"
#: The loader's allocations: the model's 32 KB of weights and bookkeeping.
BOUND = 1 << 20


@pytest.fixture(scope="module")
def model():
    return models.get_ssr_unet(**KWARGS)


@pytest.fixture(scope="module")
def tensors():
    """The recorded checkpoint's variables, to rebuild it with damage."""
    return porting.read_checkpoint_weights(TF_FORMAT)


def _weights(model):
    return [np.copy(keras.ops.convert_to_numpy(v.value)) for v in model.weights]


def _refused(model, source, *names, match=None) -> int:
    """``load_weights`` raises a ValueError naming ``names`` and assigns
    nothing; returns the peak of the bytes allocated meanwhile."""
    before = _weights(model)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match) as info:
            porting.load_weights(model, source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    for name in names:
        assert str(name) in str(info.value), (name, str(info.value))
    for old, new, variable in zip(before, _weights(model), model.weights):
        np.testing.assert_array_equal(old, new, err_msg=f"{variable.path} assigned")
    return peak


# --------------------------------------------------------------------------
# The controls: the copies load when they are not damaged
# --------------------------------------------------------------------------


def test_undamaged_copies_load(tmp_path, tensors):
    expected = models.get_ssr_unet(**KWARGS)
    porting.load_weights(expected, H5)
    with h5py.File(H5) as file:
        bias = file[f"conv2d_10/{H5_BIAS}"][()]
    for source in [
        wf.h5_with(H5, tmp_path / "copy.h5", H5_BIAS, data=bias),
        wf.write_bundle(tmp_path / "w", tensors).parent / "w",
    ]:
        loaded = models.get_ssr_unet(**KWARGS)
        porting.load_weights(loaded, source)
        for old, new in zip(_weights(expected), _weights(loaded)):
            np.testing.assert_array_equal(old, new)


# --------------------------------------------------------------------------
# .h5 files
# --------------------------------------------------------------------------


@pytest.mark.parametrize("claim", [(20000, 20000), (200000, 200000)])
def test_h5_huge_claim(tmp_path, model, claim):
    # A 130 KB file whose bias claims 1.6 GB / 160 GB (never written, so
    # reading it would allocate the claim and fill it with zeros).
    path = wf.h5_with(H5, tmp_path / "w.h5", H5_BIAS, shape=claim, dtype="f4")
    assert os.path.getsize(path) < 200_000
    peak = _refused(model, path, path, H5_BIAS, "'head/bias' expects (1,)")
    assert peak < BOUND
    # The reader alone refuses it too, before reading.
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"stores 0 of its \d+ bytes") as info:
            porting.read_h5_weights(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value) and H5_BIAS in str(info.value)
    assert peak < BOUND


def test_h5_weight_never_written(tmp_path, model):
    path = wf.h5_with(H5, tmp_path / "w.h5", H5_BIAS, shape=(1,), dtype="f4")
    _refused(model, path, path, H5_BIAS, match="stores 0 of its 4 bytes")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.array([3], "int32"), "dtype int32"),
        (np.array([1 + 2j], "complex64"), "dtype complex64"),
        (np.array(["0.5"], dtype=h5py.string_dtype()), "dtype object"),
        (np.array([np.nan], "float32"), "1 NaN or infinite value"),
        (np.array([-np.inf], "float32"), "1 NaN or infinite value"),
        (np.array([1e300], "float64"), "as float32"),  # beyond float32
    ],
    ids=["int32", "complex64", "string", "nan", "inf", "float64-overflow"],
)
def test_h5_weight_values(tmp_path, model, value, match):
    # The head's bias comes last in the file: every other weight is fine.
    path = wf.h5_with(H5, tmp_path / "w.h5", H5_BIAS, data=value)
    _refused(model, path, path, H5_BIAS, match=match)


def test_h5_structure(tmp_path, model):
    path = wf.h5_with(H5, tmp_path / "missing.h5", H5_BIAS)
    _refused(model, path, path, H5_BIAS, match="is not a dataset")
    half = tmp_path / "truncated.h5"
    half.write_bytes(H5.read_bytes()[: os.path.getsize(H5) // 2])
    _refused(model, half, half, match="damaged")
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    _refused(model, empty, empty, match="not an HDF5")


# --------------------------------------------------------------------------
# TF checkpoints
# --------------------------------------------------------------------------


def _edit(key, **fields):
    def edit(k, entry):
        if k == key:
            entry.update(fields)

    return edit


_INDEX = "w.index"
_DATA = "w.data-00000-of-00001"

#: (edit of the entries, the file named, what the message says)
_ENTRY_DAMAGE = {
    "dim-overflow": (_edit(KEY_BIAS, shape=[2**32] * 3), _INDEX, "more elements"),
    "size-mismatch": (_edit(KEY_BIAS, size=8), _INDEX, r"8 bytes .* \(4 expected\)"),
    "negative-offset": (_edit(KEY_BIAS, offset=-4), _INDEX, "byte range"),
    "offset-beyond": (_edit(KEY_BIAS, offset=10**6), _DATA, "of a file of"),
    "huge-claim": (
        _edit(KEY_BIAS, shape=[20000, 20000], size=1_600_000_000),
        _DATA,
        "of a file of",
    ),
    "shard": (_edit(KEY_BIAS, shard=3), _INDEX, "shard 3 of a bundle of 1"),
    "dtype-unknown": (_edit(KEY_BIAS, dtype=99), _INDEX, r"enum 99"),
    "garbage-entry": (lambda k, e: b"\x08\xff" if k == KEY_BIAS else None, _INDEX,
                      "varint"),
    "slice-outside": (
        _edit(KEY_BIAS, extra=wf.field(7, wf.field(1, wf.field(1, 5)))),
        _INDEX,
        "outside",
    ),
}  # fmt: skip


@pytest.mark.parametrize("damage", sorted(_ENTRY_DAMAGE))
def test_checkpoint_entries(tmp_path, model, tensors, damage):
    edit, file, match = _ENTRY_DAMAGE[damage]
    wf.write_bundle(tmp_path / "w", tensors, edit=edit)
    peak = _refused(model, tmp_path / "w", tmp_path / file, KEY_BIAS, match=match)
    assert peak < BOUND


def test_checkpoint_huge_claim_within_its_file(tmp_path, model, tensors):
    # A consistent 1.6 GB claim in a (sparse) 1.6 GB data file: the shape
    # check against the model refuses it before anything is read.
    end = sum(t.nbytes for t in tensors.values())
    edit = _edit(KEY_BIAS, shape=[20000, 20000], size=1_600_000_000, offset=end)
    data = wf.write_bundle(tmp_path / "w", tensors, edit=edit)
    os.truncate(data, end + 1_600_000_000)
    peak = _refused(model, tmp_path / "w", tmp_path / "w", KEY_BIAS, match="(1,)")
    assert peak < BOUND


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.array([3], "int32"), "dtype int32"),
        (np.array([1 + 2j], "complex64"), "dtype complex64"),
        (np.array([np.nan], "float32"), "NaN or infinite"),
        (np.array([np.inf], "float32"), "NaN or infinite"),
    ],
    ids=["int32", "complex64", "nan", "inf"],
)
def test_checkpoint_values(tmp_path, model, tensors, value, match):
    wf.write_bundle(tmp_path / "w", {**tensors, KEY_BIAS: value})
    _refused(model, tmp_path / "w", tmp_path / "w", KEY_BIAS, match=match)


def test_checkpoint_string_weight(tmp_path, model, tensors):
    # Four bytes of a float32 read as a string tensor of one element.
    wf.write_bundle(tmp_path / "w", tensors, edit=_edit(KEY_BIAS, dtype=7))
    _refused(model, tmp_path / "w", tmp_path / "w", KEY_BIAS, match="dtype object")


def _damage_index(index: bytes) -> dict[str, bytes]:
    magic = bytearray(index)
    magic[-1] ^= 1
    footer = bytearray(index)
    footer[-48:-8] = (wf.varint(0) * 2 + wf.varint(10**6) + wf.varint(9)).ljust(40)
    restarts = bytearray(index)
    at = len(index) - 48 - 5 - 4  # the index block's restart count
    restarts[at : at + 4] = (2**30).to_bytes(4, "little")
    return {
        "empty": b"",
        "truncated": index[: len(index) // 2],
        "magic": bytes(magic),
        "footer": bytes(footer),
        "restarts": bytes(restarts),
    }


_INDEX_DAMAGE = ["empty", "truncated", "magic", "footer", "restarts"]


@pytest.mark.parametrize("damage", _INDEX_DAMAGE)
def test_checkpoint_index(tmp_path, model, tensors, damage):
    wf.write_bundle(tmp_path / "w", tensors)
    index = tmp_path / _INDEX
    index.write_bytes(_damage_index(index.read_bytes())[damage])
    _refused(model, tmp_path / "w", index, match="damaged")


def test_checkpoint_header_and_order(tmp_path, model, tensors):
    header = wf.field(1, 0)  # no shards
    wf.write_bundle(tmp_path / "w", tensors, header=header)
    _refused(model, tmp_path / "w", tmp_path / _INDEX, match=r"\(shards, endianness\)")
    wf.write_bundle(tmp_path / "w", tensors, order=lambda t: sorted(t, reverse=True))
    _refused(model, tmp_path / "w", tmp_path / _INDEX, match="out of order")


@pytest.mark.parametrize("cut", ["zero-bytes", "truncated"])
def test_checkpoint_data_file(tmp_path, model, tensors, cut):
    data = wf.write_bundle(tmp_path / "w", tensors)
    size = 0 if cut == "zero-bytes" else os.path.getsize(data) // 2
    os.truncate(data, size)
    key = "layer_with_weights-"
    _refused(model, tmp_path / "w", data, key, match=f"file of {size}")


def test_checkpoint_data_file_missing(tmp_path, model, tensors):
    data = wf.write_bundle(tmp_path / "w", tensors)
    data.unlink()
    before = _weights(model)
    with pytest.raises(FileNotFoundError, match=str(data)):
        porting.load_weights(model, tmp_path / "w")
    for old, new in zip(before, _weights(model)):
        np.testing.assert_array_equal(old, new)


_NEGATIVE_DIM = """
import json
import sys

import keras
import numpy as np

from keras_ssr import models, porting

model = models.get_ssr_unet(**json.loads(sys.argv[2]))
before = [np.copy(keras.ops.convert_to_numpy(v.value)) for v in model.weights]
try:
    porting.load_weights(model, sys.argv[1])
finally:
    for old, v in zip(before, model.weights):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(v.value))
"""


def test_negative_dimension_in_a_subprocess(tmp_path, tensors):
    # TensorFlow's reader aborts the process on it (SIGABRT); ours raises.
    wf.write_bundle(tmp_path / "w", tensors, edit=_edit(KEY_BIAS, shape=[-1]))
    process = subprocess.run(
        [sys.executable, "-c", _NEGATIVE_DIM, str(tmp_path / "w"), json.dumps(KWARGS)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 1, (process.returncode, process.stderr[-3000:])
    last = process.stderr.strip().splitlines()[-1]
    assert "WeightFileError: " in last, last
    assert str(tmp_path / _INDEX) in last and KEY_BIAS in last
    assert "negative dimension" in last


# --------------------------------------------------------------------------
# The follow-up's files: a weight of an attention layer
# --------------------------------------------------------------------------

MFR = mfr.DATA / "checkpoints"
#: The soft-histogram widths of the second multifractal recalibration.
MFR_WIDTHS = {
    "h5": "multifractal_recalibration_1/soft_histogram_layer_1/membership_weights:0",
    "tf": "layer_with_weights-3/soft_histogram/membership_weights/.ATTRIBUTES/"
    "VARIABLE_VALUE",
}


@pytest.mark.parametrize("kind", ["h5", "tf"])
def test_followup_attention_weight(tmp_path, kind):
    case = mfr.CASES["model_multifractal_unet_5"]
    model = getattr(models, case["builder"])(**case["kwargs"])
    name = MFR_WIDTHS[kind]
    if kind == "h5":
        value = np.full((1, 16), np.nan, "float32")
        source = wf.h5_with(MFR / "multifractal_unet.h5", tmp_path / "w.h5", name,
                            data=value)  # fmt: skip
        match = "16 NaN or infinite"
    else:
        recorded = porting.read_checkpoint_weights(MFR / "multifractal_unet_tf_format")
        value = np.ones((1, 16), "complex64")
        wf.write_bundle(tmp_path / "w", {**recorded, name: value})
        source, match = tmp_path / "w", "dtype complex64"
    _refused(model, source, source, name, match=match)


# --------------------------------------------------------------------------
# Dicts
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.array([3], "int32"), "dtype int32"),
        (np.array(["x"]), "dtype <U1"),
        ([[1.0], [2.0, 3.0]], "not an array"),
        (np.array([np.nan], "float32"), "NaN or infinite"),
    ],
    ids=["int32", "string", "ragged", "nan"],
)
def test_dict_values(model, value, match):
    _, arrays = fx.load("model_ssr_unet_2")
    names = fx.CASES["model_ssr_unet_2"]["weight_names"]
    weights = {name: arrays[f"weight_{i:03d}"] for i, name in enumerate(names)}
    assert list(weights)[-1] == H5_BIAS
    _refused(model, {**weights, H5_BIAS: value}, H5_BIAS, match=match)
