"""How masks and images are interpreted: per file or sample, or refused.

One test per finding of issue 10 ("data, decided once for the whole dataset
with no warning"), each failing on the old whole-dataset rules, then the
rules of :func:`keras_ssr.data.interpret_mask` one by one.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from keras_ssr.data import interpret_mask, load_image_mask_folders, load_isic2018

Image = pytest.importorskip("PIL.Image")


@pytest.fixture(autouse=True)
def _clean_keras_state():
    """NumPy-only tests: skip conftest's per-test ``clear_session``."""
    yield


def disc(size, radius, centre=None):
    """A boolean disc: the foreground that every encoding below stores."""
    cy, cx = centre or (size // 2, size // 2)
    rows, cols = np.mgrid[:size, :size]
    return (rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2


def write_folder(root, masks, size=16):
    """One gray image per mask; ``masks`` maps a stem to a PIL image."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for stem, mask in masks.items():
        Image.fromarray(np.full((size, size), 90, np.uint8)).save(
            root / "images" / f"{stem}.png"
        )
        mask.save(root / "masks" / f"{stem}.png")
    return root / "images", root / "masks"


def load(folders, **kwargs):
    kwargs.setdefault("data_format", "channels_last")
    return load_image_mask_folders(*folders, None, **kwargs)


# --------------------------------------------------------------------------
# The findings


def test_one_zero_one_mask_among_zero_255_masks(tmp_path, capsys):
    foreground = disc(16, 5)
    assert foreground.sum() == 81
    masks = {
        f"a{i}": Image.fromarray(disc(16, 3 + i).astype(np.uint8) * 255)
        for i in range(3)
    }
    masks["b"] = Image.fromarray(foreground.astype(np.uint8))  # 0/1 labels
    _, y = load(write_folder(tmp_path, masks))
    assert int(y[3].sum()) == 81  # was 0: divided by 255 with the others
    for i in range(3):
        np.testing.assert_array_equal(y[i, ..., 0], disc(16, 3 + i))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].endswith("4 masks: 3 0/255, 1 0/1")


def test_colour_masks(tmp_path):
    foreground = disc(16, 3)
    assert foreground.sum() == 29
    red = np.zeros((16, 16, 3), np.uint8)
    red[foreground] = (255, 0, 0)  # grayscale luminance 76: was read as empty
    dark_green = np.zeros((16, 16, 4), np.uint8)
    dark_green[..., 3] = 255
    dark_green[foreground, 1] = 60
    folders = write_folder(
        tmp_path,
        {"red": Image.fromarray(red), "green": Image.fromarray(dark_green, "RGBA")},
    )
    _, y = load(folders)
    for i in range(2):
        assert int(y[i].sum()) == 29
        np.testing.assert_array_equal(y[i, ..., 0], foreground)
    # With a threshold, the largest channel must reach it.
    _, y = load(folders, mask_threshold=100)
    assert [int(y[i].sum()) for i in range(2)] == [0, 29]  # green, red


def test_palette_masks(tmp_path):
    first, second = disc(16, 3, (4, 4)), disc(16, 3, (11, 11))
    indices = np.zeros((16, 16), np.uint8)
    indices[first], indices[second] = 1, 15  # VOC-style labels
    mask = Image.fromarray(indices, "P")
    # Index 0 is white here: the index is the label, not the colour.
    mask.putpalette([255, 255, 255] + [0, 0, 0] * 14 + [200, 0, 0] + [0] * 720)
    _, y = load(write_folder(tmp_path, {"voc": mask}))
    np.testing.assert_array_equal(y[0, ..., 0], first | second)


def test_mask_of_another_size_is_an_error_unless_resized(tmp_path, capsys):
    foreground = disc(8, 2)
    folders = write_folder(
        tmp_path, {"s": Image.fromarray(foreground.astype(np.uint8) * 255)}
    )
    with pytest.raises(ValueError, match=r"s.png' is 8x8 but its image .*16x16"):
        load(folders)
    with pytest.raises(ValueError, match=r"s.png' is 8x8 but its image"):
        load_image_mask_folders(*folders, (4, 4))  # target_size resizes both
    _, y = load(folders, resize_masks=True)
    np.testing.assert_array_equal(y[0, ..., 0], np.kron(foreground, np.ones((2, 2))))


def test_label_masks_are_refused_naming_file_and_values(tmp_path):
    labels = np.zeros((16, 16), np.uint8)
    labels[disc(16, 3)], labels[:2] = 1, 2
    folders = write_folder(tmp_path, {"three": Image.fromarray(labels)})
    with pytest.raises(ValueError, match=r"three.png' holds the values \{0, 1, 2\}"):
        load(folders)
    _, y = load(folders, mask_threshold=1)  # every non-zero label is foreground
    np.testing.assert_array_equal(y[0, ..., 0], labels > 0)


def write_isic(tmp_path, x, y):
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path / "x.npy", tmp_path / "y.npy"


def unit_images(n=24, seed=0):
    return np.random.default_rng(seed).random((n, 3, 8, 8)).astype(np.float32)


def test_isic_one_pixel_at_1_5_is_refused_not_a_divide_by_255(tmp_path):
    x = unit_images()
    x[7, 1, 2, 3] = 1.5  # was: every image divided by 255, max 0.0059
    y = np.zeros((24, 1, 8, 8), np.uint8)
    paths = write_isic(tmp_path, x, y)
    with pytest.raises(ValueError, match=r"Sample 7 of '.*x.npy' .* the value 1.5"):
        load_isic2018(*paths, data_format="channels_first")
    xs, _ = load_isic2018(*paths, data_format="channels_first", image_max=255)
    np.testing.assert_array_equal(xs, x / np.float32(255))  # declared: divided
    # Without the outlier the images are kept as they are.
    x[7, 1, 2, 3] = 1.0
    xs, _ = load_isic2018(*write_isic(tmp_path, x, y), data_format="channels_first")
    np.testing.assert_array_equal(xs, x)


def test_isic_one_255_sample_among_unit_images_is_named(tmp_path):
    x = unit_images()
    x[3] *= 255
    paths = write_isic(tmp_path, x, np.zeros((24, 1, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"Sample 3 of .*1 of 24 samples"):
        load_isic2018(*paths)


def test_isic_labels_0_1_2_are_refused(tmp_path):
    y = np.zeros((4, 1, 8, 8), np.uint8)
    y[:, 0, 2:5, 2:5], y[2, 0, 0, :3] = 1, 2  # was: every mask emptied
    paths = write_isic(tmp_path, unit_images(4), y)
    with pytest.raises(ValueError, match=r"sample 2 of '.*y.npy'.*\{0, 1, 2\}"):
        load_isic2018(*paths)


def test_isic_one_zero_255_sample_among_zero_one_samples(tmp_path, capsys):
    rng = np.random.default_rng(1)
    truth = rng.random((24, 1, 8, 8)) > 0.5
    y = truth.astype(np.uint8)
    y[5] *= 255  # was: every other sample emptied (divided by 255)
    paths = write_isic(tmp_path, unit_images(), y)
    _, ys = load_isic2018(*paths, data_format="channels_first")
    np.testing.assert_array_equal(ys, truth.astype(np.float32))
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        "load_isic2018: 24 images, 0..1 (float32); 24 masks: 23 0/1, 1 0/255"
    ]


def test_isic_uint8_images_are_8_bit_whatever_their_maximum(tmp_path):
    x = np.ones((2, 8, 8, 3), np.uint8)  # dark, but 8-bit: divided by 255
    paths = write_isic(tmp_path, x, np.zeros((2, 8, 8), bool))
    xs, ys = load_isic2018(*paths, data_format="channels_last", verbose=False)
    np.testing.assert_array_equal(xs, np.full(x.shape, np.float32(1) / np.float32(255)))
    assert not ys.any()


# --------------------------------------------------------------------------
# The rules one by one


@pytest.mark.parametrize(
    "values, encoding",
    [
        (np.array([[0, 255], [255, 0]], np.uint8), "0/255"),
        (np.array([[0, 1], [1, 0]], np.uint8), "0/1"),
        (np.array([[0.0, 1.0], [1.0, 0.0]]), "0/1"),
        (np.array([[False, True], [True, False]]), "boolean"),
        (np.array([[0, 255], [255, 0]], np.uint16), "0/255"),
    ],
)
def test_two_value_encodings(values, encoding):
    mask, found = interpret_mask(values)
    assert found == encoding and mask.dtype == np.float32
    np.testing.assert_array_equal(mask, [[0, 1], [1, 0]])
    # A threshold applies to gray levels only, never to these encodings.
    mask, _ = interpret_mask(values, mask_threshold=200)
    np.testing.assert_array_equal(mask, [[0, 1], [1, 0]])


def test_empty_and_full_masks():
    assert interpret_mask(np.zeros((3, 3)))[1] == "empty"
    assert interpret_mask(np.full((3, 3), 255))[1] == "0/255"


def test_gray_levels_of_a_jpeg_or_a_bilinear_resize():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 256, (16, 16))
    mask, encoding = interpret_mask(values)
    assert encoding == "gray levels >= 127.5"
    np.testing.assert_array_equal(mask, values >= 128)
    soft, _ = interpret_mask(values, binarize=False)
    np.testing.assert_allclose(soft, values / 255, rtol=1e-6)
    unit = rng.random((16, 16))  # a resized 0/1 mask
    mask, encoding = interpret_mask(unit)
    assert encoding == "gray levels >= 0.5"
    np.testing.assert_array_equal(mask, unit >= 0.5)


def test_gray_levels_that_never_reach_the_threshold_are_refused():
    values = np.arange(100).reshape(10, 10)  # many values, all under 127.5
    with pytest.raises(ValueError, match="none reaches the gray-level threshold"):
        interpret_mask(values, name="'dim.png'")
    mask, _ = interpret_mask(values, mask_threshold=50)
    np.testing.assert_array_equal(mask, values >= 50)


@pytest.mark.parametrize(
    "value, text",
    [(-1.0, r"outside \[0, 255\].*min -1"), (300, "max 300"), (np.nan, "NaN")],
)
def test_values_no_rule_reads(value, text):
    values = np.zeros((4, 4))
    values[1, 1] = value
    with pytest.raises(ValueError, match="'odd.png' holds " + ".*" + text):
        interpret_mask(values, name="'odd.png'")


def test_lossy_colour_masks_default_to_128():
    noisy = np.zeros((4, 4, 3), np.uint8)
    noisy[0, 0] = (3, 1, 0)  # JPEG noise in the background
    noisy[2, 2] = (250, 2, 4)
    mask, encoding = interpret_mask(noisy, lossy=True)
    assert encoding == "colour >= 128"
    assert mask.sum() == 1 and mask[2, 2] == 1
    assert interpret_mask(noisy)[0].sum() == 2  # lossless: non-zero


@pytest.mark.parametrize("threshold", [0, -1, 256, np.nan, True, "128"])
def test_bad_mask_threshold(threshold):
    with pytest.raises(ValueError, match=re.escape(f"mask_threshold={threshold!r}")):
        interpret_mask(np.zeros((2, 2)), mask_threshold=threshold)


def test_sixteen_bit_images_are_refused(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.full((4, 4), 4000, np.uint16)).save(tmp_path / "images/a.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "masks/a.png")
    with pytest.raises(ValueError, match=r"a.png' is not an 8-bit image"):
        load_image_mask_folders(tmp_path / "images", tmp_path / "masks", None)


def test_bilevel_mode_1_files(tmp_path):
    foreground = disc(16, 4)
    folders = write_folder(tmp_path, {"b": Image.fromarray(foreground).convert("1")})
    _, y = load(folders)
    np.testing.assert_array_equal(y[0, ..., 0], foreground)
