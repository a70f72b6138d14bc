"""Reads the HDF5 weight files of ``tf.keras`` 2 (the original's ``.h5``).

Uses ``h5py`` (a Keras dependency), so it works on every backend without
TensorFlow. The datasets are listed by shape and dtype first (HDF5 metadata)
and read on demand, so that :func:`~keras_ssr.porting.load_weights` checks
every shape against the model before it reads any data. The HDF5 structures
themselves are parsed by the HDF5 library; its errors are reported as a
``ValueError`` naming the file (and the dataset).
"""

from __future__ import annotations

import functools
import os

import numpy as np

from keras_ssr.porting._source import StoredArray, WeightFileError

__all__ = [
    "h5_arrays",
    "read_h5_weights",
]

# What h5py raises for a damaged file: HDF5 errors are OSError, RuntimeError
# or KeyError (a missing object); malformed attributes give TypeError or
# ValueError (a UnicodeDecodeError among them).
_H5_ERRORS = (OSError, RuntimeError, KeyError, TypeError, ValueError)


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


def _damaged(path: str, what: str) -> WeightFileError:
    return WeightFileError(f"The HDF5 file {path!r} is damaged or inconsistent: {what}")


def _read(path: str, weight: str, name: str, stored: tuple) -> np.ndarray:
    """The dataset ``name`` of ``path``, if it still is what was listed."""
    import h5py

    try:
        with h5py.File(path, "r") as file:
            dataset = file[name]
            if (dataset.shape, dataset.dtype) != stored:
                raise _damaged(path, f"{weight!r} changed since it was listed")
            # A contiguous dataset must store all the bytes its shape claims
            # (a dataset never written stores none and reads as fill values).
            stored_bytes = dataset.id.get_storage_size()
            if dataset.chunks is None and stored_bytes < dataset.nbytes:
                raise _damaged(
                    path,
                    f"{weight!r} of shape {dataset.shape} stores {stored_bytes} of "
                    f"its {dataset.nbytes} bytes",
                )
            return np.asarray(dataset[()])
    except WeightFileError:
        raise
    except _H5_ERRORS as error:
        raise _damaged(path, f"cannot read {weight!r} ({error})") from None


def h5_arrays(path) -> dict[str, StoredArray]:
    """The weights of a Keras 2 HDF5 file, by variable name, in file order,
    listed by shape and dtype and read on demand.

    Raises:
        ValueError: if the file is not HDF5, not in the Keras 2 layout, or
            damaged (naming the file and, where there is one, the weight).
    """
    import h5py

    path = os.fspath(path)
    if not h5py.is_hdf5(path):
        raise ValueError(f"Not an HDF5 file. Received: source={path!r}")
    arrays = {}
    try:
        with h5py.File(path, "r") as file:
            group = file["model_weights"] if "model_weights" in file else file
            try:
                layer_names = _h5_strings(group.attrs, "layer_names")
            except KeyError:
                raise WeightFileError(
                    "The HDF5 file has no 'layer_names' attribute: it is not a Keras "
                    "2 (tf.keras <= 2.15) weights file. A Keras 3 '.weights.h5' "
                    f"file loads with model.load_weights. Received: source={path!r}"
                ) from None
            for layer_name in layer_names:
                layer_group = group.get(layer_name)
                if not isinstance(layer_group, h5py.Group):
                    raise _damaged(path, f"the layer {layer_name!r} is not a group")
                for weight in _h5_strings(layer_group.attrs, "weight_names"):
                    dataset = layer_group.get(weight)
                    if not isinstance(dataset, h5py.Dataset):
                        raise _damaged(path, f"the weight {weight!r} is not a dataset")
                    if dataset.shape is None:
                        raise _damaged(path, f"the weight {weight!r} has no shape")
                    stored = (dataset.shape, dataset.dtype)
                    read = functools.partial(_read, path, weight, dataset.name, stored)
                    arrays[weight] = StoredArray(dataset.shape, dataset.dtype, read)
    except WeightFileError:
        raise
    except _H5_ERRORS as error:
        raise _damaged(path, str(error)) from None
    return arrays


def read_h5_weights(path) -> dict[str, np.ndarray]:
    """The weights of a Keras 2 HDF5 file, by variable name, in file order.

    Reads what ``tf.keras`` 2.x ``model.save_weights("x.h5")`` (or
    ``model.save("x.h5")``) writes, with ``h5py`` (a Keras dependency), so
    it works on every backend without TensorFlow. A dataset that stores
    fewer bytes than its shape claims is refused before it is read.

    Args:
        path: the ``.h5`` file.

    Returns:
        ``{"contracting_layer/conv2d/kernel:0": array, ...}``.

    Raises:
        ValueError: if the file is not HDF5, not in the Keras 2 layout, or
            damaged (naming the file and, where there is one, the weight).
        ImportError: if ``h5py`` is not installed.

    Example:
        >>> names = list(read_h5_weights("ssr_unet.h5"))
    """
    return {name: stored.read() for name, stored in h5_arrays(path).items()}
