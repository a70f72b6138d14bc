"""Dataset loaders for the SSR experiments (Kvasir-SEG, ISIC 2018).

Every loader returns NumPy ``float32`` arrays ``(x, y)`` that any Keras
backend takes in ``model.fit``; nothing here needs TensorFlow's ``tf.data``.
Images come out in ``[0, 1]`` and masks in ``{0, 1}`` by default; see each
function for the options that reproduce the original scripts' raw values.

Image folders are read with Pillow, an optional dependency
(``pip install keras-ssr[data]``).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_ssr._checks import check_choice, standardize_data_format

__all__ = [
    "IMAGE_EXTENSIONS",
    "load_image_mask_folders",
    "load_isic2018",
    "load_kvasir_seg",
]

#: File name endings (case-insensitive) read from image and mask folders.
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff")

ISIC_SCALES = ("unit", "none")
_MAX_LISTED = 10
_CHUNK = 64  # samples converted at a time from a memory-mapped .npy


def _pillow():
    """Pillow's ``Image`` module, or an ``ImportError`` with the install hint."""
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - exercised without Pillow
        raise ImportError(
            "Loading image folders needs Pillow. Install it with "
            "`pip install keras-ssr[data]` (or `pip install pillow`)."
        ) from err
    return Image


def _check_target_size(target_size) -> tuple[int, int] | None:
    """``None`` or a ``(height, width)`` pair of positive Python ints."""
    if target_size is None:
        return None
    valid = (
        isinstance(target_size, Sequence)
        and not isinstance(target_size, str)
        and len(target_size) == 2
        and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
            for v in target_size
        )
    )
    if not valid:
        raise ValueError(
            "`target_size` must be None or (height, width), two positive "
            f"integers. Received: target_size={target_size!r}"
        )
    return int(target_size[0]), int(target_size[1])


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _check_folder(folder, what: str) -> Path:
    path = Path(folder)
    if not path.exists():
        raise FileNotFoundError(f"The {what} folder does not exist: '{path}'")
    if not path.is_dir():
        raise NotADirectoryError(f"The {what} folder is not a directory: '{path}'")
    return path


def _image_files(folder, what: str) -> dict[str, Path]:
    """The image files directly in ``folder``, by stem, in file-name order."""
    path = _check_folder(folder, what)
    files = sorted(
        (
            entry
            for entry in path.iterdir()
            if entry.is_file()
            and not entry.name.startswith(".")
            and entry.suffix.lower() in IMAGE_EXTENSIONS
        ),
        key=lambda entry: entry.name,
    )
    if not files:
        raise ValueError(
            f"The {what} folder '{path}' holds no image files (looked for "
            f"{', '.join(IMAGE_EXTENSIONS)})."
        )
    by_stem: dict[str, Path] = {}
    for entry in files:
        if entry.stem in by_stem:
            raise ValueError(
                f"The {what} folder '{path}' holds two files with the stem "
                f"{entry.stem!r}: '{by_stem[entry.stem].name}' and '{entry.name}'. "
                "Images and masks are paired by stem, which must be unique."
            )
        by_stem[entry.stem] = entry
    return by_stem


def _read(image_module, path: Path, mode: str, size, resample) -> np.ndarray:
    """One image as a uint8 array, converted to ``mode``, resized if asked."""
    try:
        with image_module.open(path) as image:
            image.load()
            image = image.convert(mode)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), resample=resample)
            return np.asarray(image, dtype=np.uint8)
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError...
        raise ValueError(f"Cannot read the image file '{path}': {err}") from err


def load_image_mask_folders(
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike,
    target_size: tuple[int, int] | None = (224, 224),
    *,
    data_format: str | None = None,
    binarize_masks: bool = True,
    return_names: bool = False,
):
    """Loads a folder of images and a folder of masks paired by file stem.

    Every file directly in ``images_dir`` whose name ends with one of
    :data:`IMAGE_EXTENSIONS` (case-insensitive; hidden files skipped) is an
    image; its mask is the file in ``masks_dir`` with the same stem (the
    extensions may differ: ``a.jpg`` pairs with ``a.png``). Samples are in
    the order of the image file names, the order the paper's K-fold split
    uses.

    * Images are converted to RGB, resized to ``target_size`` with bilinear
      interpolation (Pillow's, which antialiases when shrinking: values differ
      slightly from TensorFlow's ``image_dataset_from_directory`` that the
      original used) and divided by 255.
    * Masks are converted to 8-bit grayscale, resized with nearest-neighbour
      interpolation and divided by 255 (unless no mask pixel exceeds 1: masks
      stored as 0/1 labels are taken as they are). With ``binarize_masks``
      (the default) they are then thresholded at ``>= 0.5``, so JPEG noise
      around 0 and 255 disappears; ``binarize_masks=False`` keeps the
      original's unthresholded values ``v / 255``.

    Args:
        images_dir: folder of the images.
        masks_dir: folder of the masks.
        target_size: ``(height, width)`` of the output; ``None`` keeps the
            files' size, which must then be the same for every image and its
            mask.
        data_format: ``"channels_last"`` gives ``(N, H, W, 3)`` and
            ``(N, H, W, 1)``, ``"channels_first"`` ``(N, 3, H, W)`` and
            ``(N, 1, H, W)``; ``None`` is ``keras.config.image_data_format()``.
        binarize_masks: threshold the masks at ``0.5`` to exact ``{0, 1}``.
        return_names: also return the list of image file names, in order.

    Returns:
        ``(x, y)`` or, with ``return_names``, ``(x, y, names)``; ``x`` and
        ``y`` are ``float32`` NumPy arrays.

    Raises:
        ImportError: if Pillow is not installed.
        FileNotFoundError: if a folder does not exist.
        NotADirectoryError: if a folder is a file.
        ValueError: for an empty folder, an image without a mask or a mask
            without an image (the names are listed), two files with one stem,
            a file Pillow cannot read (named), sizes that differ with
            ``target_size=None``, or a bad ``target_size`` or ``data_format``.

    Example:
        >>> x, y = load_image_mask_folders("data/images", "data/masks",
        ...                                (224, 224))  # doctest: +SKIP
        >>> x.shape, y.shape  # doctest: +SKIP
        ((1000, 224, 224, 3), (1000, 224, 224, 1))
    """
    size = _check_target_size(target_size)
    data_format = standardize_data_format(data_format)
    image_module = _pillow()
    _check_folder(images_dir, "images")
    _check_folder(masks_dir, "masks")
    images = _image_files(images_dir, "images")
    masks = _image_files(masks_dir, "masks")

    no_mask = [images[stem].name for stem in images if stem not in masks]
    no_image = [masks[stem].name for stem in masks if stem not in images]
    if no_mask or no_image:
        problems = []
        if no_mask:
            problems.append(
                f"{len(no_mask)} image(s) in '{images_dir}' without a mask in "
                f"'{masks_dir}': {_listed(no_mask)}"
            )
        if no_image:
            problems.append(
                f"{len(no_image)} mask(s) in '{masks_dir}' without an image in "
                f"'{images_dir}': {_listed(no_image)}"
            )
        raise ValueError(
            "Images and masks are paired by file stem; " + "; ".join(problems) + "."
        )

    resampling = image_module.Resampling
    x_list, y_list = [], []
    for stem, image_path in images.items():
        x_list.append(_read(image_module, image_path, "RGB", size, resampling.BILINEAR))
        y_list.append(_read(image_module, masks[stem], "L", size, resampling.NEAREST))
        if size is None:
            reference_path, reference = images[next(iter(images))], x_list[0].shape
            for path, array in ((image_path, x_list[-1]), (masks[stem], y_list[-1])):
                if array.shape[:2] != reference[:2]:
                    raise ValueError(
                        "With target_size=None every image and mask must have "
                        f"the same size, but '{path}' is "
                        f"{array.shape[0]}x{array.shape[1]} and '{reference_path}' "
                        f"is {reference[0]}x{reference[1]} (height x width). "
                        "Pass a target_size to resize."
                    )

    x = np.stack(x_list).astype(np.float32)
    x /= 255.0
    y = np.stack(y_list)[..., None]
    y = y.astype(np.float32) if y.max() <= 1 else y.astype(np.float32) / 255.0
    if binarize_masks:
        y = (y >= 0.5).astype(np.float32)
    if data_format == "channels_first":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        y = np.ascontiguousarray(y.transpose(0, 3, 1, 2))
    if return_names:
        return x, y, [images[stem].name for stem in images]
    return x, y


def load_kvasir_seg(
    root: str | os.PathLike,
    target_size: tuple[int, int] | None = (224, 224),
    *,
    data_format: str | None = None,
    binarize_masks: bool = True,
    return_names: bool = False,
):
    """Loads Kvasir-SEG: ``root/images/*.jpg`` and ``root/masks/*.jpg``.

    A thin wrapper over :func:`load_image_mask_folders` with the dataset's
    layout (the folder ``Kvasir-SEG`` of the official archive). Images are
    resized bilinear to ``target_size`` and scaled to ``[0, 1]``, as the
    original's Kvasir script does; masks are resized nearest and, by default,
    binarised at ``0.5`` (the original keeps the JPEG masks' raw values
    ``v / 255``: pass ``binarize_masks=False`` for that). Samples are in
    file-name order, which the paper's 10-fold split (``KFold`` without
    shuffling) relies on.

    Args:
        root: the dataset folder holding ``images/`` and ``masks/``.
        target_size: ``(height, width)``; the paper uses ``(224, 224)``.
        data_format: output layout, ``"channels_last"`` (``(N, H, W, 3)``,
            ``(N, H, W, 1)``) or ``"channels_first"``; ``None`` is
            ``keras.config.image_data_format()``.
        binarize_masks: threshold the masks at ``0.5`` to exact ``{0, 1}``.
        return_names: also return the image file names, in order.

    Returns:
        ``(x, y)`` or ``(x, y, names)``, ``float32`` NumPy arrays.

    Raises:
        ImportError: if Pillow is not installed.
        FileNotFoundError: if ``root``, ``root/images`` or ``root/masks`` is
            missing.
        ValueError: as :func:`load_image_mask_folders`.

    Example:
        >>> x, y = load_kvasir_seg("/data/Kvasir-SEG")  # doctest: +SKIP
        >>> x.shape, y.shape  # doctest: +SKIP
        ((1000, 224, 224, 3), (1000, 224, 224, 1))
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"The Kvasir-SEG folder does not exist: '{root}' (expected it to "
            "hold images/ and masks/)"
        )
    return load_image_mask_folders(
        root / "images",
        root / "masks",
        target_size,
        data_format=data_format,
        binarize_masks=binarize_masks,
        return_names=return_names,
    )


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


def load_isic2018(
    x_path: str | os.PathLike,
    y_path: str | os.PathLike,
    *,
    data_format: str | None = None,
    scale: str = "unit",
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

    * ``"unit"`` (default): images are divided by 255 when their maximum
      exceeds 1 (values must lie in ``[0, 255]``); masks are divided by 255
      when their maximum exceeds 1, then thresholded at ``>= 0.5`` to
      ``{0, 1}``. Images and masks then match :func:`load_kvasir_seg`.
    * ``"none"``: the raw values as ``float32``, the original ISIC behaviour.

    The files are memory-mapped and converted in chunks, so the peak memory
    is about the ``float32`` output.

    Args:
        x_path: the images' ``.npy`` file.
        y_path: the masks' ``.npy`` file.
        data_format: ``"channels_last"`` or ``"channels_first"`` output;
            ``None`` is ``keras.config.image_data_format()``.
        scale: ``"unit"`` or ``"none"``, see above.

    Returns:
        ``(x, y)``: ``float32`` NumPy arrays, ``(N, H, W, 3)`` and
        ``(N, H, W, 1)`` channels-last, or ``(N, 3, H, W)`` and
        ``(N, 1, H, W)`` channels-first.

    Raises:
        FileNotFoundError: if a file does not exist.
        ValueError: for a file that is not a numeric ``.npy`` array, images
            that are not 4-D with 3 channels, masks whose count or size does
            not match the images (both files and shapes are named), values
            outside ``[0, 255]`` or non-finite with ``scale="unit"``, or a bad
            ``scale`` or ``data_format``.

    Example:
        >>> x, y = load_isic2018("X_tr_224x224.npy",
        ...                      "Y_tr_224x224.npy")  # doctest: +SKIP
        >>> x.shape, y.shape  # doctest: +SKIP
        ((2594, 224, 224, 3), (2594, 224, 224, 1))
    """
    scale = check_choice("scale", scale, ISIC_SCALES)
    data_format = standardize_data_format(data_format)
    x_raw = _open_npy(x_path, "x_path")
    y_raw = _open_npy(y_path, "y_path")
    shapes = (
        f"x_path '{x_path}' has shape {x_raw.shape}, "
        f"y_path '{y_path}' has shape {y_raw.shape}"
    )

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
    x_first = first
    n, h, w = (x_raw.shape[0], *x_raw.shape[2:]) if x_first else x_raw.shape[:3]

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
    y_layout = matches[0] if len(matches) == 1 else ("first" if x_first else "last")

    def to_output_layout(chunk, layout):
        chunk = np.asarray(chunk, dtype=np.float32)
        if layout == "none":
            chunk = chunk[..., None]
        elif layout == "first":
            chunk = chunk.transpose(0, 2, 3, 1)
        if data_format == "channels_first":
            chunk = chunk.transpose(0, 3, 1, 2)
        return chunk

    outputs = []
    for raw, layout, channels, argument, path in (
        (x_raw, "first" if x_first else "last", 3, "x_path", x_path),
        (y_raw, y_layout, 1, "y_path", y_path),
    ):
        shape = (n, h, w, channels)
        if data_format == "channels_first":
            shape = (n, channels, h, w)
        out = np.empty(shape, dtype=np.float32)
        low, high, finite = np.inf, -np.inf, True
        for start in range(0, n, _CHUNK):
            chunk = to_output_layout(raw[start : start + _CHUNK], layout)
            out[start : start + _CHUNK] = chunk
            if scale == "unit":
                finite = finite and bool(np.isfinite(chunk).all())
                low = min(low, float(chunk.min()))
                high = max(high, float(chunk.max()))
        if scale == "unit" and n:
            if not finite or low < 0 or high > 255:
                raise ValueError(
                    f"With scale='unit' the values of '{path}' ({argument}) must "
                    f"be finite and in [0, 255]. Received: min={low}, max={high}"
                    + ("" if finite else " (with NaN or infinite values)")
                )
            if high > 1:
                out /= 255.0
            if channels == 1:
                np.greater_equal(out, 0.5, out=out)
        outputs.append(out)
    return outputs[0], outputs[1]
