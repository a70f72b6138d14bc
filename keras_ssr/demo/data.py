"""Small built-in segmentation data sets that need no download.

Two sources, both deterministic:

* :func:`make_texture_dataset` -- synthetic *regularity* textures (NumPy
  only). Every image holds one or two blob-shaped objects filled with a
  fractional Gaussian field of one Hurst exponent on a background of
  another. Object and background pixels are renormalised, per image, to the
  same mean and standard deviation, and both are Gaussian, so their
  intensity histograms are the same: intensity alone cannot separate them,
  only the *local regularity* (Hölder exponent) of the texture can, which is
  what the singularity strength measures.
* :func:`load_ihc_patches` -- real biomedical images: the
  immunohistochemistry slide that scikit-image ships inside its wheel
  (``skimage.data.immunohistochemistry()``, colonic glands stained for the
  FHL2 protein with DAB, hematoxylin counterstain), with masks of the
  DAB-positive tissue made by a classical method (:func:`ihc_mask`: colour
  deconvolution, Gaussian smoothing, Otsu threshold, small morphological
  clean-up), tiled into patches with a spatially disjoint train/test split.

All images are float32 ``(N, H, W, C)`` in ``[0, 1]``; all masks are float32
``(N, H, W, 1)`` holding only 0 and 1.
"""

from __future__ import annotations

import numpy as np

from keras_ssr._checks import check_int, check_real

__all__ = [
    "DATASETS",
    "IHC_TEST_BLOCKS",
    "fractional_field",
    "ihc_mask",
    "load_demo_data",
    "load_ihc_patches",
    "make_texture_dataset",
    "random_blob_mask",
]

#: Names accepted by ``keras-ssr demo --dataset``.
DATASETS = ("textures", "ihc")

#: Hurst exponents accepted by :func:`fractional_field`.
HURST_RANGE = (-1.0, 1.5)

#: The IHC slide is cut into a 4 x 4 grid of blocks; patches never cross a
#: block, and these (row, column) blocks -- one per row and per column, so
#: glands, stroma and their borders all appear -- are held out for testing.
IHC_TEST_BLOCKS = ((0, 3), (1, 2), (2, 1), (3, 0))
IHC_GRID = 4


# --------------------------------------------------------------------------
# Argument checks


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            "`rng` must be a numpy.random.Generator, e.g. "
            f"numpy.random.default_rng(0). Received: rng={rng!r}"
        )
    return rng


# --------------------------------------------------------------------------
# Synthetic regularity textures


def fractional_field(size: int, hurst: float, rng: np.random.Generator) -> np.ndarray:
    """A periodic fractional Gaussian field by spectral synthesis.

    White Gaussian noise is filtered in the Fourier domain by
    ``|k| ** -(hurst + 1)`` (power spectrum ``|k| ** -(2 hurst + 2)``, the
    spectrum of a fractional Brownian surface of Hurst exponent ``hurst`` in
    two dimensions), the mean (``k = 0``) is removed and the result is
    scaled to unit standard deviation. ``hurst = -1`` gives white noise;
    ``0 < hurst < 1`` a fractional Brownian surface, Hölder-continuous of
    order ``hurst``; the larger ``hurst``, the smoother the field.

    Args:
        size: side of the square field, ``>= 2``.
        hurst: Hurst exponent in ``[-1, 1.5]``.
        rng: the NumPy ``Generator`` that draws the noise.

    Returns:
        float64 array ``(size, size)`` with mean 0 and standard deviation 1.

    Raises:
        TypeError: for a non-integer ``size``, a non-real ``hurst`` or an
            ``rng`` that is not a ``numpy.random.Generator``.
        ValueError: for ``size < 2`` or ``hurst`` outside ``[-1, 1.5]``.

    Example:
        >>> field = fractional_field(64, 0.7, np.random.default_rng(0))
        >>> field.shape, round(float(field.std()), 6)
        ((64, 64), 1.0)
    """
    size = check_int("size", size, 2)
    hurst = check_real("hurst", hurst, *HURST_RANGE)
    rng = _check_rng(rng)
    noise = rng.standard_normal((size, size))
    frequencies = np.fft.fftfreq(size)
    radius = np.hypot(frequencies[:, None], frequencies[None, :])
    radius[0, 0] = 1.0
    amplitude = radius ** -(hurst + 1.0)
    amplitude[0, 0] = 0.0
    field = np.real(np.fft.ifft2(np.fft.fft2(noise) * amplitude))
    field -= field.mean()
    return field / field.std()


def random_blob_mask(size: int, rng: np.random.Generator, blobs: int = 1) -> np.ndarray:
    """Boolean mask of ``blobs`` random star-shaped, lesion-like objects.

    Each blob is the region ``|p - c| < r(theta)`` around a centre ``c``
    drawn in the middle 40 % of the image, with a radius
    ``r(theta) = r0 (1 + sum_k a_k cos(k theta + phi_k))``, ``k = 2 .. 6``,
    ``r0`` between 15 % and 30 % of ``size`` and ``a_k`` below ``0.3 / k``,
    so the radius never falls below about half of ``r0``.

    Args:
        size: side of the square mask, ``>= 8``.
        rng: the NumPy ``Generator`` that draws the shapes.
        blobs: number of blobs, ``>= 1`` (they may overlap).

    Returns:
        bool array ``(size, size)``.

    Raises:
        TypeError / ValueError: for bad ``size``, ``rng`` or ``blobs``.
    """
    size = check_int("size", size, 8)
    blobs = check_int("blobs", blobs, 1)
    rng = _check_rng(rng)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    mask = np.zeros((size, size), dtype=bool)
    harmonics = np.arange(2, 7)
    for _ in range(blobs):
        centre = rng.uniform(0.3, 0.7, size=2) * size
        base = rng.uniform(0.15, 0.3) * size
        amplitudes = rng.uniform(0.0, 0.3, size=harmonics.size) / harmonics
        phases = rng.uniform(0.0, 2 * np.pi, size=harmonics.size)
        dy, dx = rows - centre[0], cols - centre[1]
        theta = np.arctan2(dy, dx)[..., None]
        radius = base * (
            1.0 + np.sum(amplitudes * np.cos(harmonics * theta + phases), axis=-1)
        )
        mask |= np.hypot(dy, dx) < radius
    return mask


def _standardize_region(values: np.ndarray) -> np.ndarray:
    centred = values - values.mean()
    spread = centred.std()
    return centred / spread if spread > 0 else centred


def make_texture_dataset(
    n: int = 256,
    size: int = 64,
    seed: int = 0,
    *,
    object_hurst: float = 0.5,
    background_hurst: float = -0.5,
    mean: float = 0.5,
    std: float = 0.12,
) -> tuple[np.ndarray, np.ndarray]:
    """Images whose objects differ from the background only in regularity.

    For each image: one or two blobs (:func:`random_blob_mask`) are filled
    with a fractional Gaussian field of Hurst exponent ``object_hurst`` and
    the rest with an independent field of exponent ``background_hurst``
    (:func:`fractional_field`). The object pixels and the background pixels
    are then each standardised and mapped to mean ``mean`` and standard
    deviation ``std`` (exactly, per image, before clipping to ``[0, 1]``,
    which touches fewer than 1 pixel in 10,000 at the defaults). Both fields
    are Gaussian, so the two regions have the same intensity distribution:
    a pixel's value says nothing about its class; the texture's local
    roughness does.

    Sample ``i`` is drawn from ``numpy.random.default_rng([seed, i])``, so
    the data depend on ``seed`` only and the first ``k`` images are the same
    for every ``n >= k``.

    Args:
        n: number of images, ``>= 1``.
        size: image side in pixels, ``>= 16``.
        seed: non-negative integer seed.
        object_hurst: Hurst exponent of the objects' texture, in
            ``[-1, 1.5]`` (default ``0.5``: a Brownian surface).
        background_hurst: Hurst exponent of the background, in
            ``[-1, 1.5]``, different from ``object_hurst`` (default
            ``-0.5``: a rough, fractional-noise texture).
        mean: common mean of both regions, in ``(0, 1)``.
        std: common standard deviation, in ``(0, 0.5]``.

    Returns:
        ``(images, masks)``: float32 ``(n, size, size, 1)`` in ``[0, 1]`` and
        float32 ``(n, size, size, 1)`` with 1 on the objects, 0 elsewhere.

    Raises:
        TypeError: for a non-integer ``n``, ``size`` or ``seed``, or a
            non-real exponent, ``mean`` or ``std``.
        ValueError: for values out of range, or equal exponents.

    Example:
        >>> images, masks = make_texture_dataset(n=4, size=32, seed=0)
        >>> images.shape, masks.shape, images.dtype
        ((4, 32, 32, 1), (4, 32, 32, 1), dtype('float32'))
    """
    n = check_int("n", n, 1)
    size = check_int("size", size, 16)
    seed = check_int("seed", seed, 0)
    object_hurst = check_real("object_hurst", object_hurst, *HURST_RANGE)
    background_hurst = check_real("background_hurst", background_hurst, *HURST_RANGE)
    if object_hurst == background_hurst:
        raise ValueError(
            "`object_hurst` and `background_hurst` must differ, or nothing "
            f"distinguishes the objects. Received: object_hurst={object_hurst}, "
            f"background_hurst={background_hurst}"
        )
    mean = check_real("mean", mean, 0.0, 1.0, open_minimum=True)
    if mean >= 1.0:
        raise ValueError(f"`mean` must be in (0, 1). Received: mean={mean!r}")
    std = check_real("std", std, 0.0, 0.5, open_minimum=True)

    images = np.empty((n, size, size, 1), dtype=np.float32)
    masks = np.empty((n, size, size, 1), dtype=np.float32)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        mask = random_blob_mask(size, rng, blobs=int(rng.integers(1, 3)))
        inside = fractional_field(size, object_hurst, rng)
        outside = fractional_field(size, background_hurst, rng)
        image = np.empty((size, size), dtype=np.float64)
        for region, field in ((mask, inside), (~mask, outside)):
            if region.any():
                image[region] = mean + std * _standardize_region(field[region])
        images[i, ..., 0] = np.clip(image, 0.0, 1.0)
        masks[i, ..., 0] = mask
    return images, masks


# --------------------------------------------------------------------------
# Immunohistochemistry patches


def _import_skimage():
    try:
        import skimage.color
        import skimage.data
        import skimage.filters
        import skimage.transform
        from scipy import ndimage
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "The 'ihc' data set needs scikit-image (and SciPy, which it "
            "installs). Install it with: pip install keras-ssr[demo]"
        ) from error
    return skimage, ndimage


def _remove_small_components(mask: np.ndarray, min_size: int, ndimage) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def ihc_mask(image: np.ndarray, sigma: float = 2.0, min_size: int = 64) -> np.ndarray:
    """Mask of the DAB-stained (brown) tissue of an IHC image, classically.

    1. Colour deconvolution into hematoxylin, eosin and DAB optical
       densities (``skimage.color.rgb2hed``, Ruifrok & Johnston's stain
       vectors); keep the DAB channel.
    2. Gaussian smoothing with standard deviation ``sigma`` pixels, which
       merges the stained membranes of one gland into a region.
    3. Otsu's threshold.
    4. Clean-up: a binary opening with the 3 x 3 cross, then connected
       components smaller than ``min_size`` pixels are removed and holes
       smaller than ``min_size`` pixels are filled.

    Args:
        image: RGB image ``(H, W, 3)``, uint8 or float in ``[0, 1]``.
        sigma: smoothing in pixels, ``>= 0``.
        min_size: smallest object and hole kept, in pixels, ``>= 1``.

    Returns:
        bool array ``(H, W)``.

    Raises:
        ImportError: without scikit-image.
        TypeError / ValueError: for a bad ``image``, ``sigma`` or
            ``min_size``.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            "`image` must be an RGB image of shape (height, width, 3). "
            f"Received: image.shape={image.shape}"
        )
    sigma = check_real("sigma", sigma, 0.0)
    min_size = check_int("min_size", min_size, 1)
    skimage, ndimage = _import_skimage()
    dab = skimage.color.rgb2hed(image)[..., 2]
    if sigma > 0:
        dab = ndimage.gaussian_filter(dab, sigma)
    mask = dab > skimage.filters.threshold_otsu(dab)
    mask = ndimage.binary_opening(mask, ndimage.generate_binary_structure(2, 1))
    mask = _remove_small_components(mask, min_size, ndimage)
    return ~_remove_small_components(~mask, min_size, ndimage)


def load_ihc_patches(
    size: int = 64,
    *,
    split: str = "all",
    stride: int | None = None,
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Patches of scikit-image's immunohistochemistry slide and DAB masks.

    The 512 x 512 slide ``skimage.data.immunohistochemistry()`` is bundled
    in the scikit-image wheel (no download). Its mask is computed at full
    resolution with :func:`ihc_mask`; if ``scale != 1`` the slide is then
    resized (anti-aliased) and the mask resized and re-thresholded at 0.5.
    The slide is cut into a 4 x 4 grid of blocks and patches of side
    ``size`` are taken inside each block with step ``stride``; the blocks
    of :data:`IHC_TEST_BLOCKS` form the test split, the other 12 the train
    split, so no test pixel is ever seen in training.

    Args:
        size: patch side, ``>= 8`` and at most the block side
            (``512 * scale / 4``).
        split: ``"train"``, ``"test"`` or ``"all"``.
        stride: step between patches, ``>= 1``; default ``size // 2``.
        scale: resize factor of the slide, in ``(0, 2]``; e.g. ``0.5``
            shows more tissue per patch.

    Returns:
        ``(images, masks)``: float32 ``(N, size, size, 3)`` RGB in
        ``[0, 1]`` and float32 ``(N, size, size, 1)`` in ``{0, 1}``, in
        block order (row-major), then patch order within the block.

    Raises:
        ImportError: without scikit-image.
        TypeError / ValueError: for bad arguments.

    Example:
        >>> images, masks = load_ihc_patches(64, split="test")
        >>> images.shape, masks.shape
        ((36, 64, 64, 3), (36, 64, 64, 1))
    """
    size = check_int("size", size, 8)
    if split not in ("train", "test", "all"):
        raise ValueError(
            f"`split` must be one of 'train', 'test', 'all'. Received: split={split!r}"
        )
    scale = check_real("scale", scale, 0.0, 2.0, open_minimum=True)
    skimage, _ = _import_skimage()
    slide = skimage.data.immunohistochemistry()
    mask = ihc_mask(slide).astype(np.float64)
    image = slide.astype(np.float64) / 255.0
    if scale != 1.0:
        side = max(1, round(slide.shape[0] * scale))
        image = skimage.transform.resize(
            image, (side, side), order=1, anti_aliasing=scale < 1
        )
        mask = skimage.transform.resize(mask, (side, side), order=1) >= 0.5
    block = image.shape[0] // IHC_GRID
    if size > block:
        raise ValueError(
            f"`size` must be at most the block side {block} (512 * scale / "
            f"{IHC_GRID}). Received: size={size} (scale={scale})"
        )
    stride = max(1, size // 2) if stride is None else check_int("stride", stride, 1)

    images, masks = [], []
    starts = range(0, block - size + 1, stride)
    for row in range(IHC_GRID):
        for col in range(IHC_GRID):
            held_out = (row, col) in IHC_TEST_BLOCKS
            if (split == "train" and held_out) or (split == "test" and not held_out):
                continue
            for dy in starts:
                for dx in starts:
                    y, x = row * block + dy, col * block + dx
                    images.append(image[y : y + size, x : x + size])
                    masks.append(mask[y : y + size, x : x + size])
    images = np.clip(np.stack(images), 0.0, 1.0).astype(np.float32)
    masks = np.stack(masks)[..., None].astype(np.float32)
    return images, masks


def _dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th of the 8 rotations/reflections of ``(N, H, W, C)``."""
    out = np.rot90(image, k % 4, axes=(1, 2))
    return out[:, :, ::-1] if k >= 4 else out


def load_demo_data(
    dataset: str, size: int, samples: int, test_samples: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and held-out splits of a built-in data set.

    ``textures``: ``samples + test_samples`` images of
    :func:`~keras_ssr.demo.data.make_texture_dataset`, the first ``samples``
    for training. ``ihc``: the train-block patches of
    :func:`~keras_ssr.demo.data.load_ihc_patches`, repeated under the 8
    rotations/reflections (shuffled by ``seed``) up to ``samples``, and the
    first ``test_samples`` held-out-block patches.

    Returns:
        ``(x_train, y_train, x_test, y_test)``, float32 NumPy arrays.

    Raises:
        ValueError: for an unknown ``dataset`` or bad sizes.
    """
    if dataset not in DATASETS:
        raise ValueError(
            f"`dataset` must be one of {', '.join(map(repr, DATASETS))}. "
            f"Received: dataset={dataset!r}"
        )
    check_int("samples", samples, 1)
    check_int("test_samples", test_samples, 1)
    if dataset == "textures":
        x, y = make_texture_dataset(samples + test_samples, size, seed)
        return x[:samples], y[:samples], x[samples:], y[samples:]
    x_train, y_train = load_ihc_patches(size, split="train")
    x_test, y_test = load_ihc_patches(size, split="test")
    rng = np.random.default_rng(seed)
    pairs = [(n, k) for k in range(8) for n in range(len(x_train))]
    order = rng.permutation(len(pairs))
    picked = [pairs[i] for i in order[: min(samples, len(pairs))]]
    xs = np.stack([_dihedral(x_train[n : n + 1], k)[0] for n, k in picked])
    ys = np.stack([_dihedral(y_train[n : n + 1], k)[0] for n, k in picked])
    return xs, ys, x_test[:test_samples], y_test[:test_samples]
