"""ISIC 2018 loader: .npy arrays written here, every layout and scale."""

from __future__ import annotations

import numpy as np
import pytest

from keras_ssr.data import load_isic2018


@pytest.fixture(autouse=True)
def _clean_keras_state():
    """NumPy-only tests: skip conftest's per-test ``clear_session``."""
    yield


# ------------------------------------------------------------------- ISIC


def isic_arrays(n=3, h=6, w=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, h, w, 3)).astype(np.uint8)
    y = (rng.random((n, h, w, 1)) > 0.5).astype(np.uint8) * 255
    return x, y


def write(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array)
    return path


@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_isic_layouts_agree(tmp_path, dtype):
    x, y = isic_arrays()
    x, y = x.astype(dtype), y.astype(dtype)
    cf = (
        write(tmp_path, "xf.npy", x.transpose(0, 3, 1, 2)),
        write(tmp_path, "yf.npy", y.transpose(0, 3, 1, 2)),
    )
    cl = (write(tmp_path, "xl.npy", x), write(tmp_path, "yl.npy", y))
    flat = (cl[0], write(tmp_path, "y3.npy", y[..., 0]))
    expected_x = x.astype(np.float32) / np.float32(255)
    expected_y = (y > 0).astype(np.float32)
    for paths in (cf, cl, flat):
        xs, ys = load_isic2018(*paths, data_format="channels_last")
        assert xs.dtype == np.float32 and ys.dtype == np.float32
        np.testing.assert_array_equal(xs, expected_x)
        np.testing.assert_array_equal(ys, expected_y)
        xs, ys = load_isic2018(*paths, data_format="channels_first")
        np.testing.assert_array_equal(xs, expected_x.transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(ys, expected_y.transpose(0, 3, 1, 2))


def test_isic_unscaled_like_the_original(tmp_path):
    x, y = isic_arrays(n=70)  # more than one conversion chunk
    paths = (
        write(tmp_path, "x.npy", x.transpose(0, 3, 1, 2)),
        write(tmp_path, "y.npy", y.transpose(0, 3, 1, 2)),
    )
    xs, ys = load_isic2018(*paths, scale="none", data_format="channels_last")
    np.testing.assert_array_equal(xs, x.astype(np.float32))
    np.testing.assert_array_equal(ys, y.astype(np.float32))


def test_isic_unit_scale_of_unit_data_and_soft_masks(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.random((2, 4, 4, 3)).astype(np.float32)  # already in [0, 1]
    y = rng.integers(0, 256, (2, 4, 4)).astype(np.float32)  # interpolated masks
    xs, ys = load_isic2018(
        write(tmp_path, "x.npy", x),
        write(tmp_path, "y.npy", y),
        data_format="channels_last",
    )
    np.testing.assert_array_equal(xs, x)
    np.testing.assert_array_equal(ys[..., 0], (y / 255 >= 0.5).astype(np.float32))


def test_isic_default_data_format_is_keras(tmp_path):
    import keras

    x, y = isic_arrays()
    xs, _ = load_isic2018(write(tmp_path, "x.npy", x), write(tmp_path, "y.npy", y))
    expected = (3, 6, 5, 3)
    if keras.config.image_data_format() == "channels_first":
        expected = (3, 3, 6, 5)
    assert xs.shape == expected


def test_isic_errors(tmp_path):
    x, y = isic_arrays()
    xp = write(tmp_path, "X_tr.npy", x)
    yp = write(tmp_path, "Y_tr.npy", y)
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_isic2018(tmp_path / "missing.npy", yp)
    # Count mismatch: both files and shapes are named.
    short = write(tmp_path, "Y_short.npy", y[:2])
    with pytest.raises(ValueError) as info:
        load_isic2018(xp, short)
    message = str(info.value)
    assert "X_tr.npy" in message and "Y_short.npy" in message
    assert "(3, 6, 5, 3)" in message and "(2, 6, 5, 1)" in message
    # Size mismatch.
    wide = write(tmp_path, "Y_wide.npy", np.zeros((3, 6, 7, 1)))
    with pytest.raises(ValueError, match=r"Y_wide.npy' has shape \(3, 6, 7, 1\)"):
        load_isic2018(xp, wide)
    # Layouts that cannot be told apart, or are not images.
    for name, shape in (
        ("ambiguous", (2, 3, 5, 3)),
        ("gray", (2, 6, 5, 1)),
        ("flat", (2, 6, 5)),
    ):
        bad = write(tmp_path, f"{name}.npy", np.zeros(shape))
        with pytest.raises(ValueError, match=rf"{name}.npy' has shape"):
            load_isic2018(bad, yp)
    # Values a unit scaling cannot interpret.
    for name, bad_value in (("neg", -1.0), ("big", 300.0), ("nan", np.nan)):
        values = x.astype(np.float32)
        values[1, 2, 3, 0] = bad_value
        bad = write(tmp_path, f"{name}.npy", values)
        with pytest.raises(ValueError, match=rf"{name}.npy.*\[0, 255\]"):
            load_isic2018(bad, yp)
        load_isic2018(bad, yp, scale="none")  # raw values pass through
    # Not an array file.
    text = tmp_path / "text.npy"
    text.write_text("hello")
    with pytest.raises(ValueError, match="text.npy"):
        load_isic2018(text, yp)
    objects = write(tmp_path, "objects.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="objects.npy"):
        load_isic2018(objects, yp)
    with pytest.raises(ValueError, match="scale='raw'"):
        load_isic2018(xp, yp, scale="raw")
