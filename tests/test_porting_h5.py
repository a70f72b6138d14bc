"""keras_ssr.porting.h5: the original's Keras 2 HDF5 files, without TensorFlow."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest

from keras_ssr import models, porting
from tests import fixtures as fx

H5 = fx.DATA / "checkpoints" / "ssr_unet.h5"


def _weights(name):
    case, arrays = fx.load(name)
    return (
        case,
        arrays,
        {
            weight: arrays[f"weight_{i:03d}"]
            for i, weight in enumerate(case["weight_names"])
        },
    )


def test_the_originals_file():
    case, _, weights = _weights("model_ssr_unet_2")
    h5 = porting.read_h5_weights(H5)
    assert list(h5) == case["weight_names"]  # in file order
    # The recorded weights less the moving statistics moved by the call.
    for name, value in h5.items():
        if "moving_" not in name:
            np.testing.assert_array_equal(value, weights[name], err_msg=name)


def _write_keras2_h5(path, weights, *, full_model: bool, chunk: int | None):
    """A Keras 2 HDF5 layout written by hand (h5py), from names and arrays."""
    layers = {}
    for name, value in weights.items():
        layers.setdefault(name.split("/")[0], {})[name] = value

    def strings(values):
        return np.array([v.encode("utf8") for v in values])

    def put(attrs, key, values):
        if chunk is None:
            attrs[key] = strings(values)
        else:  # long lists are split into key0, key1, ... by Keras 2
            for i in range(0, max(len(values), 1), chunk):
                attrs[f"{key}{i // chunk}"] = strings(values[i : i + chunk])

    with h5py.File(path, "w") as file:
        root = file.create_group("model_weights") if full_model else file
        put(root.attrs, "layer_names", list(layers))
        for layer, named in layers.items():
            group = root.create_group(layer)
            put(group.attrs, "weight_names", list(named))
            for name, value in named.items():
                group.create_dataset(name, data=value)


@pytest.mark.parametrize(("full_model", "chunk"), [(False, None), (True, 3)])
def test_keras2_h5_layouts(tmp_path, full_model, chunk):
    case, arrays, weights = _weights("model_unet_1")
    path = tmp_path / "unet.h5"
    _write_keras2_h5(path, weights, full_model=full_model, chunk=chunk)
    read = porting.read_h5_weights(path)
    assert list(read) == list(weights)
    model = models.get_unet(**case["kwargs"])
    porting.load_weights(model, path)
    y = keras.ops.convert_to_numpy(model(arrays["x"], training=False))
    fx.assert_agrees(y, arrays["y_inference"], "y_inference")


def test_not_keras2(tmp_path):
    keras3 = tmp_path / "model.weights.h5"
    with h5py.File(keras3, "w") as file:
        file.create_group("layers")
    with pytest.raises(ValueError, match="not a Keras 2"):
        porting.read_h5_weights(keras3)
    text = tmp_path / "weights.txt"
    text.write_text("not weights")
    with pytest.raises(ValueError, match="Not an HDF5 file"):
        porting.read_h5_weights(text)
