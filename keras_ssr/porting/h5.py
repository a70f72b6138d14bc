"""Reads the HDF5 weight files of ``tf.keras`` 2 (the original's ``.h5``).

Uses ``h5py`` (a Keras dependency), so it works on every backend without
TensorFlow.
"""

from __future__ import annotations

import os

import numpy as np


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
        ImportError: if ``h5py`` is not installed.

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
