"""Dataset loaders: small image folders and .npy files written here."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from keras_ssr import data
from keras_ssr.data import load_image_mask_folders, load_kvasir_seg

Image = pytest.importorskip("PIL.Image")


@pytest.fixture(autouse=True)
def _clean_keras_state():
    """Overrides conftest's fixture: these NumPy-only tests leave no Keras state,
    and its per-test ``clear_session`` (a full garbage collection) would cost
    more than the tests themselves."""
    yield


def save(path, array):
    """Writes a uint8 array (H, W) or (H, W, 3) with Pillow; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def make_pair(root, stem, image, mask, image_ext=".png", mask_ext=".png"):
    save(root / "images" / f"{stem}{image_ext}", image)
    save(root / "masks" / f"{stem}{mask_ext}", mask)


def nearest(array, height, width):
    """Nearest-neighbour resampling at pixel centres: src = floor((i + .5) * s)."""
    rows = np.floor((np.arange(height) + 0.5) * array.shape[0] / height).astype(int)
    cols = np.floor((np.arange(width) + 0.5) * array.shape[1] / width).astype(int)
    return array[np.ix_(rows, cols)]


def block_mask(height, width, seed):
    rng = np.random.default_rng(seed)
    coarse = rng.random((height // 4, width // 4)) > 0.5
    return np.kron(coarse, np.ones((4, 4))).astype(np.uint8) * 255


# -------------------------------------------------------------- image folders


def test_constant_colours_and_nearest_masks(tmp_path):
    colours = {"b": (10, 200, 77), "a": (255, 0, 128), "c": (3, 4, 5)}
    masks = {stem: block_mask(24, 20, i) for i, stem in enumerate(colours)}
    for stem, colour in colours.items():
        make_pair(tmp_path, stem, np.full((24, 20, 3), colour), masks[stem])
    x, y, names = load_image_mask_folders(
        tmp_path / "images",
        tmp_path / "masks",
        (10, 7),
        data_format="channels_last",
        return_names=True,
    )
    assert names == ["a.png", "b.png", "c.png"]
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert x.shape == (3, 10, 7, 3) and y.shape == (3, 10, 7, 1)
    for i, stem in enumerate(["a", "b", "c"]):
        expected = np.array(colours[stem], np.float32) / np.float32(255)
        np.testing.assert_array_equal(x[i], np.broadcast_to(expected, (10, 7, 3)))
        expected_mask = nearest(masks[stem], 10, 7)[..., None] / 255
        np.testing.assert_array_equal(y[i], expected_mask)
    assert set(np.unique(y)) <= {0.0, 1.0}


def test_bilinear_upsampling_of_a_ramp(tmp_path):
    # A horizontal ramp doubled in width: Pillow's bilinear is linear
    # interpolation at pixel centres, clamped at the edges.
    ramp = np.tile(np.arange(0, 240, 30, dtype=np.uint8), (4, 1))  # 4 x 8
    make_pair(tmp_path, "r", np.stack([ramp] * 3, axis=-1), np.zeros((4, 8)))
    x, _ = load_image_mask_folders(
        tmp_path / "images", tmp_path / "masks", (4, 16), data_format="channels_last"
    )
    centres = (np.arange(16) + 0.5) * 8 / 16 - 0.5
    expected = np.interp(centres, np.arange(8), ramp[0].astype(float)) / 255
    for channel in range(3):
        np.testing.assert_allclose(
            x[0, :, :, channel], np.tile(expected, (4, 1)), atol=0.5 / 255 + 1e-6
        )


def test_channels_first_is_the_transpose(tmp_path):
    rng = np.random.default_rng(1)
    for stem in ("p", "q"):
        make_pair(
            tmp_path, stem, rng.integers(0, 256, (12, 12, 3)), block_mask(12, 12, 3)
        )
    args = (tmp_path / "images", tmp_path / "masks", (6, 5))
    x_last, y_last = load_image_mask_folders(*args, data_format="channels_last")
    x_first, y_first = load_image_mask_folders(*args, data_format="channels_first")
    assert x_first.shape == (2, 3, 6, 5) and y_first.shape == (2, 1, 6, 5)
    np.testing.assert_array_equal(x_first, x_last.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(y_first, y_last.transpose(0, 3, 1, 2))


def test_gray_level_masks_thresholded_or_kept(tmp_path):
    # Few distinct values: refused as a label image unless a threshold is given.
    values = np.array([[0, 3, 127, 128], [200, 250, 255, 0]], np.uint8)
    make_pair(tmp_path, "m", np.zeros((2, 4, 3)), values)
    args = (tmp_path / "images", tmp_path / "masks", None)
    with pytest.raises(ValueError, match=r"m.png.*\{0, 3, 127, 128, 200, 250, 255\}"):
        load_image_mask_folders(*args, data_format="channels_last")
    _, kept = load_image_mask_folders(
        *args, binarize_masks=False, mask_threshold=128, data_format="channels_last"
    )
    np.testing.assert_array_equal(kept[0, ..., 0], values.astype(np.float32) / 255)
    _, binary = load_image_mask_folders(
        *args, mask_threshold=128, data_format="channels_last"
    )
    np.testing.assert_array_equal(binary[0, ..., 0], (values >= 128).astype(float))
    _, nonzero = load_image_mask_folders(
        *args, mask_threshold=1, data_format="channels_last"
    )
    np.testing.assert_array_equal(nonzero[0, ..., 0], (values > 0).astype(float))


def test_zero_one_label_masks_are_not_divided(tmp_path):
    labels = np.array([[0, 1], [1, 0]], np.uint8)
    make_pair(tmp_path, "l", np.zeros((2, 2, 3)), labels)
    for binarize in (True, False):
        _, y = load_image_mask_folders(
            tmp_path / "images",
            tmp_path / "masks",
            None,
            binarize_masks=binarize,
            data_format="channels_last",
        )
        np.testing.assert_array_equal(y[0, ..., 0], labels.astype(np.float32))


def test_pairs_by_stem_across_extensions_and_ignores_other_files(tmp_path):
    save(tmp_path / "images" / "k2.JPG", np.full((8, 8, 3), 40))
    save(tmp_path / "images" / "k1.bmp", np.full((8, 8, 3), 90))
    save(tmp_path / "masks" / "k1.png", np.full((8, 8), 255))
    save(tmp_path / "masks" / "k2.tif", np.zeros((8, 8)))
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    (tmp_path / "images" / ".hidden.png").write_bytes(b"junk")
    x, y, names = load_image_mask_folders(
        tmp_path / "images",
        tmp_path / "masks",
        (8, 8),
        return_names=True,
        data_format="channels_last",
    )
    assert names == ["k1.bmp", "k2.JPG"]
    np.testing.assert_allclose(x[0], 90 / 255, atol=1e-7)
    np.testing.assert_allclose(x[1], 40 / 255, atol=3 / 255)  # JPEG
    np.testing.assert_array_equal(y[:, ..., 0].mean(axis=(1, 2)), [1.0, 0.0])


def test_grayscale_images_become_rgb(tmp_path):
    make_pair(tmp_path, "g", np.full((5, 5), 51), np.zeros((5, 5)))
    x, _ = load_image_mask_folders(
        tmp_path / "images", tmp_path / "masks", None, data_format="channels_last"
    )
    # Both operands float32: NumPy 1.x makes np.float32(51) / 255 a float64.
    np.testing.assert_array_equal(
        x, np.full((1, 5, 5, 3), np.float32(51) / np.float32(255))
    )


def test_kvasir_layout_with_jpegs(tmp_path):
    root = tmp_path / "Kvasir-SEG"
    masks = {}
    for i, stem in enumerate(["cju2", "cju1", "cju3"]):
        masks[stem] = block_mask(32, 40, i)
        make_pair(root, stem, np.full((32, 40, 3), 60 * i), masks[stem], ".jpg", ".jpg")
    x, y, names = load_kvasir_seg(
        root, (16, 20), data_format="channels_last", return_names=True
    )
    assert names == ["cju1.jpg", "cju2.jpg", "cju3.jpg"]
    assert x.shape == (3, 16, 20, 3) and y.shape == (3, 16, 20, 1)
    for i, stem in enumerate(["cju1", "cju2", "cju3"]):
        shade = 60 * ["cju2", "cju1", "cju3"].index(stem)
        np.testing.assert_allclose(x[i], shade / 255, atol=3 / 255)
        # JPEG noise is thresholded away: exact {0, 1}, the block pattern.
        np.testing.assert_array_equal(y[i, ..., 0], nearest(masks[stem], 16, 20) / 255)
    _, y_raw = load_kvasir_seg(
        root, (16, 20), binarize_masks=False, data_format="channels_last"
    )
    assert np.all((y_raw >= 0) & (y_raw <= 1))
    np.testing.assert_array_equal(y_raw >= 0.5, y == 1)
    with pytest.raises(TypeError, match="binarise_masks"):
        load_kvasir_seg(root, (16, 20), binarise_masks=False)


def test_keeps_size_when_target_size_is_none(tmp_path):
    make_pair(tmp_path, "a", np.zeros((6, 9, 3)), np.zeros((6, 9)))
    x, y = load_image_mask_folders(
        tmp_path / "images", tmp_path / "masks", None, data_format="channels_last"
    )
    assert x.shape == (1, 6, 9, 3) and y.shape == (1, 6, 9, 1)


# ------------------------------------------------------------ folder errors


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_image_mask_folders(tmp_path / "nowhere", tmp_path, (4, 4))
    with pytest.raises(FileNotFoundError, match="no-kvasir"):
        load_kvasir_seg(tmp_path / "no-kvasir")
    (tmp_path / "empty").mkdir()
    save(tmp_path / "full" / "a.png", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="empty.*holds no image files"):
        load_image_mask_folders(tmp_path / "empty", tmp_path / "full", (4, 4))
    with pytest.raises(ValueError, match="masks folder .*empty"):
        load_image_mask_folders(tmp_path / "full", tmp_path / "empty", (4, 4))
    (tmp_path / "kvasir" / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="masks"):
        load_kvasir_seg(tmp_path / "kvasir")
    with pytest.raises(NotADirectoryError, match="a.png"):
        load_image_mask_folders(tmp_path / "full" / "a.png", tmp_path / "full")


def test_unmatched_names_are_listed(tmp_path):
    for stem in ("a", "b", "c"):
        save(tmp_path / "images" / f"{stem}.png", np.zeros((4, 4)))
    for stem in ("a", "d"):
        save(tmp_path / "masks" / f"{stem}.png", np.zeros((4, 4)))
    with pytest.raises(ValueError) as info:
        load_image_mask_folders(tmp_path / "images", tmp_path / "masks", (4, 4))
    message = str(info.value)
    assert "2 image(s)" in message and "'b.png', 'c.png'" in message
    assert "1 mask(s)" in message and "'d.png'" in message


def test_duplicate_stems(tmp_path):
    save(tmp_path / "images" / "a.png", np.zeros((4, 4)))
    save(tmp_path / "images" / "a.jpg", np.zeros((4, 4)))
    save(tmp_path / "masks" / "a.png", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="'a.jpg' and 'a.png'"):
        load_image_mask_folders(tmp_path / "images", tmp_path / "masks", (4, 4))


@pytest.mark.parametrize(
    "content", [b"this is not an image", b"\x89PNG\r\n\x1a\n truncated"]
)
def test_unreadable_image_is_named(tmp_path, content):
    make_pair(tmp_path, "good", np.zeros((4, 4, 3)), np.zeros((4, 4)))
    save(tmp_path / "masks" / "bad.png", np.zeros((4, 4)))
    (tmp_path / "images" / "bad.png").write_bytes(content)
    with pytest.raises(ValueError, match="bad.png"):
        load_image_mask_folders(tmp_path / "images", tmp_path / "masks", (4, 4))


def test_truncated_jpeg_is_named(tmp_path):
    make_pair(
        tmp_path,
        "t",
        np.random.default_rng(0).integers(0, 255, (64, 64, 3)),
        np.zeros((4, 4)),
        image_ext=".jpg",
    )
    path = tmp_path / "images" / "t.jpg"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match="t.jpg"):
        load_image_mask_folders(tmp_path / "images", tmp_path / "masks", (4, 4))


def test_sizes_must_agree_without_target_size(tmp_path):
    make_pair(tmp_path, "a", np.zeros((4, 4, 3)), np.zeros((4, 4)))
    make_pair(tmp_path, "b", np.zeros((5, 4, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"b.png' is 5x4 .*a.png' is 4x4"):
        load_image_mask_folders(tmp_path / "images", tmp_path / "masks", None)
    x, _ = load_image_mask_folders(tmp_path / "images", tmp_path / "masks", (3, 3))
    assert x.shape[0] == 2


@pytest.mark.parametrize(
    "target_size", [(0, 5), (5,), "224", (2.5, 3), (True, 4), 224, (4, -1, 3)]
)
def test_bad_target_size(tmp_path, target_size):
    make_pair(tmp_path, "a", np.zeros((4, 4, 3)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=re.escape(f"target_size={target_size!r}")):
        load_image_mask_folders(tmp_path / "images", tmp_path / "masks", target_size)


def test_bad_data_format(tmp_path):
    with pytest.raises(ValueError, match="data_format='nhwc'"):
        load_image_mask_folders(tmp_path, tmp_path, (4, 4), data_format="nhwc")


def test_missing_pillow_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"pip install keras-ssr\[data\]"):
        load_image_mask_folders(tmp_path, tmp_path, (4, 4))


def test_public_names():
    assert set(data.__all__) == {
        "BUSI_CLASSES",
        "IMAGE_EXTENSIONS",
        "ISIC_SCALES",
        "MAX_LABELS",
        "busi_splits",
        "interpret_mask",
        "load_busi",
        "load_image_mask_folders",
        "load_isic2018",
        "load_kvasir_seg",
    }
