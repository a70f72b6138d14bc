"""ISIC 2018: the prepared arrays ``X_tr_224x224.npy`` / ``Y_tr_224x224.npy``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from keras_ssr._checks import check_choice, check_real, standardize_data_format
from keras_ssr.data.masks import MaskTally, check_mask_threshold, interpret_mask

__all__ = ["ISIC_SCALES", "load_isic2018"]

#: ``scale`` values of :func:`load_isic2018`.
ISIC_SCALES = ("unit", "none")
_CHUNK = 64  # samples converted at a time from a memory-mapped .npy


def _open_npy(path, argument: str) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"The {argument} file does not exist: '{path}'")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:
        raise ValueError(
            f"Cannot read '{path}' ({argument}) as a .npy array: {err}"
        ) from err
    if not isinstance(array, np.ndarray) or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    ):
        raise ValueError(
            f"'{path}' ({argument}) must hold a numeric array. "
            f"Received: dtype={getattr(array, 'dtype', type(array).__name__)}"
        )
    return array


def _layouts(x_raw, y_raw, shapes: str) -> tuple[bool, str]:
    """``(images channels-first?, masks' layout "none"/"last"/"first")``."""
    if x_raw.ndim != 4:
        raise ValueError(
            "The images must be a 4-D array (N, 3, H, W) or (N, H, W, 3). "
            f"Received: {shapes}"
        )
    first, last = x_raw.shape[1] == 3, x_raw.shape[3] == 3
    if first == last:
        reason = "ambiguous: size 3 on axes 1 and 3" if first else "no axis of size 3"
        raise ValueError(
            "Cannot tell the images' channel axis (" + reason + "); expected "
            f"(N, 3, H, W) or (N, H, W, 3). Received: {shapes}"
        )
    n, h, w = (x_raw.shape[0], *x_raw.shape[2:]) if first else x_raw.shape[:3]
    if y_raw.shape[:1] != (n,):
        raise ValueError(
            f"The images and masks must be as many: {n} images but "
            f"{y_raw.shape[0] if y_raw.ndim else 0} masks. Received: {shapes}"
        )
    candidates = {"none": (n, h, w), "last": (n, h, w, 1), "first": (n, 1, h, w)}
    matches = [key for key, shape in candidates.items() if y_raw.shape == shape]
    if not matches:
        raise ValueError(
            f"The masks must have shape {(n, 1, h, w)}, {(n, h, w, 1)} or "
            f"{(n, h, w)} to match the images. Received: {shapes}"
        )
    return first, matches[0] if len(matches) == 1 else ("first" if first else "last")


def _image_scale(x_raw, maxima: np.ndarray, image_max) -> float:
    """The images' full scale: given, 255 for integers, else what most fit."""
    if image_max is not None:
        return check_real("image_max", image_max, 0.0, open_minimum=True)
    if x_raw.dtype == np.bool_:
        return 1.0
    if np.issubdtype(x_raw.dtype, np.integer):
        return 255.0
    # Float arrays: the scale that at least half of the samples fit, so that
    # no single sample (or pixel) decides it.
    return 1.0 if np.mean(maxima <= 1.0) >= 0.5 else 255.0


def _check_image_range(path, minima, maxima, finite, full_scale: float) -> None:
    bad = ~finite | (minima < 0) | (maxima > full_scale)
    if not bad.any():
        return
    index = int(np.argmax(bad))
    if not finite[index]:
        value = "NaN or infinite values"
    elif minima[index] < 0:
        value = f"the value {minima[index]:g}"
    else:
        value = f"the value {maxima[index]:g}"
    raise ValueError(
        f"Sample {index} of '{path}' (x_path) holds {value}, outside the images' "
        f"range [0, {full_scale:g}] ({int(bad.sum())} of {len(bad)} samples are "
        "outside it). Fix the data, or pass image_max (255 for 8-bit values, 1 "
        "for [0, 1]) if the range was inferred wrongly, or scale='none' for raw "
        "values."
    )


def load_isic2018(
    x_path: str | os.PathLike,
    y_path: str | os.PathLike,
    *,
    data_format: str | None = None,
    scale: str = "unit",
    image_max: float | None = None,
    mask_threshold: float | None = None,
    verbose: bool = True,
):
    """Loads the prepared ISIC 2018 arrays ``X_tr_224x224.npy``/``Y_tr_...``.

    The common preparation script stores the images channels-first,
    ``(N, 3, H, W)``, and the masks ``(N, 1, H, W)``. Channels-last files,
    ``(N, H, W, 3)`` and ``(N, H, W, 1)``, and masks without a channel axis,
    ``(N, H, W)``, are accepted too: the layout is read from where the
    image array's axis of size 3 is (an array with size 3 on both candidate
    axes is refused as ambiguous), and the masks must match the images'
    ``N``, ``H`` and ``W``. The output has the requested ``data_format``.

    Scaling differs between the original scripts: its Kvasir script divides
    by 255, its ISIC script feeds the arrays' raw values. ``scale`` chooses:

    * ``"unit"`` (default): images are divided by their full scale
      ``image_max``: 255 for integer arrays; for float arrays 1 if at least
      half of the samples lie within ``[0, 1]``, else 255 (never decided by
      one sample). A sample outside ``[0, image_max]`` (or not finite) is an
      error naming it and the value. Each mask is interpreted on its own by
      the rules of :mod:`keras_ssr.data.masks` (0/1, 0/255, boolean, gray
      levels; ``{0, 1, 2}`` labels are refused, naming the sample) and comes
      out in ``{0, 1}``. Images and masks then match :func:`load_kvasir_seg`.
    * ``"none"``: the raw values as ``float32``, the original ISIC behaviour.

    The files are memory-mapped and converted in chunks, so the peak memory
    is about the ``float32`` output.

    Args:
        x_path: the images' ``.npy`` file.
        y_path: the masks' ``.npy`` file.
        data_format: ``"channels_last"`` or ``"channels_first"`` output;
            ``None`` is ``keras.config.image_data_format()``.
        scale: ``"unit"`` or ``"none"``, see above.
        image_max: the images' full scale (e.g. 255 or 1), ``None`` to infer
            it as above.
        mask_threshold: foreground is ``value >= mask_threshold`` for
            gray-level masks, in the array's units; ``None``: the rules'
            defaults (127.5, or 0.5 for fractional masks within ``[0, 1]``).
        verbose: print one line saying what was found, e.g.
            ``"load_isic2018: 2594 images, 0..255 (uint8), divided by 255;
            2594 masks, 0/255"``.

    Returns:
        ``(x, y)``: ``float32`` NumPy arrays, ``(N, H, W, 3)`` and
        ``(N, H, W, 1)`` channels-last, or ``(N, 3, H, W)`` and
        ``(N, 1, H, W)`` channels-first.

    Raises:
        FileNotFoundError: if a file does not exist.
        ValueError: for a file that is not a numeric ``.npy`` array, images
            that are not 4-D with 3 channels, masks whose count or size does
            not match the images (both files and shapes are named), with
            ``scale="unit"`` an image sample outside its range or a mask
            sample the rules refuse (the sample and values are named), or a
            bad ``scale``, ``image_max``, ``mask_threshold`` or
            ``data_format``.

    Example:
        >>> x, y = load_isic2018("X_tr_224x224.npy",
        ...                      "Y_tr_224x224.npy")  # doctest: +SKIP
        >>> x.shape, y.shape  # doctest: +SKIP
        ((2594, 224, 224, 3), (2594, 224, 224, 1))
    """
    scale = check_choice("scale", scale, ISIC_SCALES)
    data_format = standardize_data_format(data_format)
    mask_threshold = check_mask_threshold(mask_threshold)
    if image_max is not None:
        check_real("image_max", image_max, 0.0, open_minimum=True)
    x_raw = _open_npy(x_path, "x_path")
    y_raw = _open_npy(y_path, "y_path")
    shapes = (
        f"x_path '{x_path}' has shape {x_raw.shape}, "
        f"y_path '{y_path}' has shape {y_raw.shape}"
    )
    x_first, y_layout = _layouts(x_raw, y_raw, shapes)
    n, h, w = (x_raw.shape[0], *x_raw.shape[2:]) if x_first else x_raw.shape[:3]
    channels_first = data_format == "channels_first"

    x = np.empty((n, 3, h, w) if channels_first else (n, h, w, 3), np.float32)
    y = np.empty((n, 1, h, w) if channels_first else (n, h, w, 1), np.float32)
    minima, maxima = np.zeros(n), np.zeros(n)
    finite = np.ones(n, dtype=bool)
    tally = MaskTally()
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        chunk = np.asarray(x_raw[start:stop], dtype=np.float32)
        if x_first != channels_first:
            chunk = np.moveaxis(chunk, 1, -1) if x_first else np.moveaxis(chunk, -1, 1)
        x[start:stop] = chunk
        masks = np.asarray(y_raw[start:stop])
        masks = {"none": masks, "last": masks[..., 0], "first": masks[:, 0]}[y_layout]
        if scale == "unit":
            flat = chunk.reshape(len(chunk), -1)
            finite[start:stop] = np.isfinite(flat).all(axis=1)
            with np.errstate(invalid="ignore"):
                minima[start:stop] = np.nanmin(flat, axis=1, initial=np.inf)
                maxima[start:stop] = np.nanmax(flat, axis=1, initial=-np.inf)
            for i, values in enumerate(masks, start=start):
                masks_out, encoding = interpret_mask(
                    values,
                    name=f"sample {i} of '{y_path}' (y_path)",
                    mask_threshold=mask_threshold,
                )
                tally.add(encoding)
                y[i] = masks_out[None] if channels_first else masks_out[..., None]
        else:
            y[start:stop] = masks[:, None] if channels_first else masks[..., None]

    if scale == "none":
        if verbose:
            print(f"load_isic2018: {n} images and masks, raw values (scale='none')")
        return x, y
    if n:
        full_scale = _image_scale(x_raw, maxima, image_max)
        _check_image_range(x_path, minima, maxima, finite, full_scale)
        if full_scale != 1.0:
            x /= np.float32(full_scale)
    else:
        full_scale = 255.0
    if verbose:
        divided = f", divided by {full_scale:g}" if full_scale != 1.0 else ""
        print(
            f"load_isic2018: {n} images, 0..{full_scale:g} ({x_raw.dtype}){divided}; "
            f"{tally.describe()}"
        )
    return x, y
