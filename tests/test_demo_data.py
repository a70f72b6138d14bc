"""Built-in demo data: values, the regularity contrast, determinism, errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_ssr import ops as ssr_ops
from keras_ssr.demo import data as datasets
from tests import numpy_oracle as oracle


def _erode(mask: np.ndarray, margin: int) -> np.ndarray:
    """Pixels whose whole (2 margin + 1)-square lies in ``mask``."""
    padded = np.pad(mask, margin, constant_values=False)
    out = np.ones_like(mask)
    side = mask.shape[0]
    for dy in range(2 * margin + 1):
        for dx in range(2 * margin + 1):
            out &= padded[dy : dy + side, dx : dx + side]
    return out


def _interiors(mask: np.ndarray, margin: int = 4):
    """Object and background pixels at least ``margin`` from any border."""
    return _erode(mask, margin), _erode(~mask, margin)


@pytest.fixture(scope="module")
def textures():
    return datasets.make_texture_dataset(n=12, size=64, seed=3)


# --------------------------------------------------------------------------
# Texture set


def test_texture_shapes_dtypes_and_ranges(textures):
    images, masks = textures
    assert images.shape == (12, 64, 64, 1) and masks.shape == (12, 64, 64, 1)
    assert images.dtype == np.float32 and masks.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert set(np.unique(masks)) == {0.0, 1.0}
    coverage = masks.mean(axis=(1, 2, 3))
    assert np.all(coverage > 0.02) and np.all(coverage < 0.8)


def test_object_and_background_share_mean_and_variance(textures):
    images, masks = textures
    for image, mask in zip(images[..., 0], masks[..., 0] > 0.5):
        inside, outside = image[mask], image[~mask]
        assert abs(inside.mean() - 0.5) < 1e-3 and abs(outside.mean() - 0.5) < 1e-3
        assert abs(inside.std() - 0.12) < 1e-3 and abs(outside.std() - 0.12) < 1e-3


def test_intensity_histograms_match(textures):
    # Both regions are Gaussian with the same moments: pooled quantiles agree.
    images, masks = textures
    mask = masks > 0.5
    levels = [5, 25, 50, 75, 95]
    inside = np.percentile(images[mask], levels)
    outside = np.percentile(images[~mask], levels)
    np.testing.assert_allclose(inside, outside, atol=0.01)


def test_regions_differ_in_regularity(textures):
    # Increment variance at lag 1, relative to the variance: a smooth
    # (H = 0.5) texture varies little between neighbours, a rough one
    # (H = -0.5) nearly as much as between distant pixels.
    images, masks = textures
    for image, mask in zip(images[..., 0].astype(np.float64), masks[..., 0] > 0.5):
        inner, outer = _interiors(mask)
        pairs_in = inner[1:] & inner[:-1]
        pairs_out = outer[1:] & outer[:-1]
        increments = (image[1:] - image[:-1]) ** 2
        smooth = increments[pairs_in].mean() / image[mask].var()
        rough = increments[pairs_out].mean() / image[~mask].var()
        assert rough > 2.5 * smooth


def test_singularity_strength_differs_between_regions(textures):
    # The singularity-strength map of keras_ssr.ops is itself rougher on the
    # rough background than inside the smooth objects.
    images, masks = textures
    alpha = keras.ops.convert_to_numpy(
        ssr_ops.singularity_strength(images, max_scale=3, scaling="sample")
    )
    np.testing.assert_allclose(
        alpha[:2],
        oracle.singularity_strength(images[:2], 3, "sample"),
        atol=1e-4,
    )
    ratios = []
    for a, mask in zip(alpha[..., 0], masks[..., 0] > 0.5):
        inner, outer = _interiors(mask)
        steps = np.abs(a[1:] - a[:-1])
        inside = steps[inner[1:] & inner[:-1]].mean()
        outside = steps[outer[1:] & outer[:-1]].mean()
        ratios.append(outside / inside)
    # Every image, and by a wide margin on average (about 2.3 over 72 images
    # of 6 seeds, the smallest 1.15).
    assert min(ratios) > 1.0
    assert np.mean(ratios) > 1.6


@pytest.mark.parametrize("hurst", [-1.0, -0.5, 0.0, 0.5, 1.0])
def test_fractional_field_spectrum(hurst):
    # Radial power spectrum ~ |k| ** -(2 H + 2): fit the log-log slope.
    field = datasets.fractional_field(128, hurst, np.random.default_rng(1))
    assert abs(field.mean()) < 1e-12 and abs(field.std() - 1.0) < 1e-12
    power = np.abs(np.fft.fft2(field)) ** 2
    freq = np.fft.fftfreq(128)
    radius = np.hypot(freq[:, None], freq[None, :])
    band = (radius > 0.02) & (radius < 0.4)
    slope = np.polyfit(np.log(radius[band]), np.log(power[band]), 1)[0]
    assert slope == pytest.approx(-(2 * hurst + 2), abs=0.15)


def test_texture_determinism():
    a = datasets.make_texture_dataset(n=5, size=32, seed=7)
    b = datasets.make_texture_dataset(n=5, size=32, seed=7)
    c = datasets.make_texture_dataset(n=5, size=32, seed=8)
    prefix = datasets.make_texture_dataset(n=2, size=32, seed=7)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0][:2], prefix[0])
    assert not np.array_equal(a[0], c[0])


def test_custom_exponents_and_moments():
    images, masks = datasets.make_texture_dataset(
        n=2,
        size=32,
        seed=0,
        object_hurst=-1.0,
        background_hurst=1.0,
        mean=0.3,
        std=0.05,
    )
    for image, mask in zip(images[..., 0], masks[..., 0] > 0.5):
        assert image[mask].mean() == pytest.approx(0.3, abs=1e-5)
        assert image[~mask].std() == pytest.approx(0.05, abs=1e-5)


def test_random_blob_mask():
    mask = datasets.random_blob_mask(48, np.random.default_rng(0), blobs=2)
    assert mask.dtype == bool and mask.shape == (48, 48)
    assert 0 < mask.sum() < mask.size


@pytest.mark.parametrize(
    "kwargs, error, text",
    [
        ({"n": 0}, ValueError, "n=0"),
        ({"n": 2.0}, TypeError, "n=2.0"),
        ({"n": True}, TypeError, "n=True"),
        ({"size": 8}, ValueError, "size=8"),
        ({"size": "64"}, TypeError, "size='64'"),
        ({"seed": -1}, ValueError, "seed=-1"),
        ({"seed": None}, TypeError, "seed=None"),
        ({"object_hurst": 2.0}, ValueError, "object_hurst=2.0"),
        ({"background_hurst": float("nan")}, ValueError, "background_hurst=nan"),
        ({"object_hurst": "0.5"}, TypeError, "object_hurst='0.5'"),
        ({"object_hurst": 0.1, "background_hurst": 0.1}, ValueError, "must differ"),
        ({"mean": 1.0}, ValueError, "mean=1.0"),
        ({"mean": 0}, ValueError, "mean=0"),
        ({"std": 0.0}, ValueError, "std=0.0"),
        ({"std": 0.6}, ValueError, "std=0.6"),
    ],
)
def test_texture_bad_arguments(kwargs, error, text):
    with pytest.raises(error, match="Received") as info:
        datasets.make_texture_dataset(**{"n": 2, "size": 16, **kwargs})
    assert text in str(info.value)


def test_field_and_blob_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="rng=0"):
        datasets.fractional_field(16, 0.5, 0)
    with pytest.raises(ValueError, match="hurst=-1.5"):
        datasets.fractional_field(16, -1.5, rng)
    with pytest.raises(ValueError, match="size=1"):
        datasets.fractional_field(1, 0.5, rng)
    with pytest.raises(ValueError, match="blobs=0"):
        datasets.random_blob_mask(16, rng, blobs=0)


# --------------------------------------------------------------------------
# Immunohistochemistry patches


@pytest.fixture(scope="module")
def skimage():
    return pytest.importorskip("skimage")


def test_ihc_patches_split(skimage):
    train = datasets.load_ihc_patches(64, split="train")
    test = datasets.load_ihc_patches(64, split="test")
    every = datasets.load_ihc_patches(64)
    # 16 blocks of 128 px, 3 x 3 patches of 64 px at stride 32 in each.
    assert train[0].shape == (12 * 9, 64, 64, 3)
    assert test[0].shape == (4 * 9, 64, 64, 3)
    assert every[0].shape == (16 * 9, 64, 64, 3)
    for images, masks in (train, test):
        assert images.dtype == np.float32 and masks.dtype == np.float32
        assert images.min() >= 0.0 and images.max() <= 1.0
        assert set(np.unique(masks)) == {0.0, 1.0}
    # The first patch of the slide is its top-left corner, block (0, 0).
    slide = skimage.data.immunohistochemistry()
    np.testing.assert_allclose(every[0][0], slide[:64, :64] / 255.0, atol=1e-6)
    # The first test patch is the top-left corner of block (0, 3).
    np.testing.assert_allclose(test[0][0], slide[:64, 384:448] / 255.0, atol=1e-6)


def test_ihc_mask_selects_the_dab_stain(skimage):
    from scipy import ndimage

    slide = skimage.data.immunohistochemistry()
    mask = datasets.ihc_mask(slide)
    assert mask.shape == slide.shape[:2] and mask.dtype == bool
    assert 0.3 < mask.mean() < 0.7
    dab = skimage.color.rgb2hed(slide)[..., 2]
    # Brown (DAB) optical density is far higher inside the mask.
    assert np.median(dab[mask]) > 3 * np.median(dab[~mask])
    # No speck below the minimum size survives.
    labels, count = ndimage.label(mask)
    assert np.bincount(labels.ravel())[1:].min() >= 64


def test_ihc_scale(skimage):
    images, masks = datasets.load_ihc_patches(32, split="test", scale=0.5, stride=32)
    assert images.shape == (4 * 4, 32, 32, 3) and masks.shape == (16, 32, 32, 1)
    assert set(np.unique(masks)) <= {0.0, 1.0}


def test_ihc_bad_arguments(skimage):
    with pytest.raises(ValueError, match="split='val'"):
        datasets.load_ihc_patches(64, split="val")
    with pytest.raises(ValueError, match="size=256"):
        datasets.load_ihc_patches(256)
    with pytest.raises(ValueError, match="size=4"):
        datasets.load_ihc_patches(4)
    with pytest.raises(ValueError, match="scale=0.0"):
        datasets.load_ihc_patches(32, scale=0.0)
    with pytest.raises(ValueError, match="stride=0"):
        datasets.load_ihc_patches(32, stride=0)
    with pytest.raises(ValueError, match=r"image.shape=\(8, 8\)"):
        datasets.ihc_mask(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="sigma=-1.0"):
        datasets.ihc_mask(np.zeros((8, 8, 3)), sigma=-1.0)
