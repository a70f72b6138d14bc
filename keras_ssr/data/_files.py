"""Reading image files: Pillow, folder listings, 8-bit images, raw masks, resizing."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_ssr.data.masks import MaskTally, interpret_mask

#: File name endings (case-insensitive) read from image and mask folders.
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff")

#: Pillow modes of 8-bit images (converted to RGB, then divided by 255).
EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
_LOSSY_FORMATS = ("JPEG", "MPO")
_MAX_LISTED = 10


def pillow():
    """Pillow's ``Image`` module, or an ``ImportError`` with the install hint."""
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - exercised without Pillow
        raise ImportError(
            "Loading image folders needs Pillow. Install it with "
            "`pip install keras-ssr[data]` (or `pip install pillow`)."
        ) from err
    return Image


def check_target_size(target_size) -> tuple[int, int] | None:
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


def listed(names: Sequence[str]) -> str:
    """Up to ten quoted names, then how many more."""
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def check_folder(folder, what: str) -> Path:
    path = Path(folder)
    if not path.exists():
        raise FileNotFoundError(f"The {what} folder does not exist: '{path}'")
    if not path.is_dir():
        raise NotADirectoryError(f"The {what} folder is not a directory: '{path}'")
    return path


def image_files(folder, what: str) -> list[Path]:
    """The image files directly in ``folder``, in file-name order."""
    path = check_folder(folder, what)
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
    return files


def by_stem(files: list[Path], folder, what: str) -> dict[str, Path]:
    """``files`` keyed by stem; two files with one stem are an error."""
    result: dict[str, Path] = {}
    for entry in files:
        if entry.stem in result:
            raise ValueError(
                f"The {what} folder '{folder}' holds two files with the stem "
                f"{entry.stem!r}: '{result[entry.stem].name}' and '{entry.name}'. "
                "Images and masks are paired by stem, which must be unique."
            )
        result[entry.stem] = entry
    return result


def _decode(path: Path, rgb: bool) -> tuple[np.ndarray | None, str, bool]:
    """``(array, mode, lossy)`` of an image file.

    With ``rgb``, the array is the 8-bit RGB conversion (``None`` for a file
    of more than 8 bits); else the values as stored (colour spaces other
    than RGB are converted to RGB).
    """
    try:
        with pillow().open(path) as image:
            image.load()
            lossy, mode = image.format in _LOSSY_FORMATS, image.mode
            if rgb:
                if mode not in EIGHT_BIT_MODES:
                    return None, mode, lossy
                return np.asarray(image.convert("RGB"), dtype=np.uint8), mode, lossy
            if mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
                image, mode = image.convert("RGB"), "RGB"
            return np.asarray(image), mode, lossy
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError...
        raise ValueError(f"Cannot read the image file '{path}': {err}") from err


def read_image(path: Path) -> np.ndarray:
    """An 8-bit image file as a ``uint8`` RGB array ``(height, width, 3)``.

    Images of more than 8 bits (Pillow modes ``I;16``, ``I``, ``F``) are
    refused: their scale cannot be told from one file.
    """
    image, mode, _ = _decode(path, rgb=True)
    if image is None:
        raise ValueError(
            f"The image file '{path}' is not an 8-bit image (Pillow mode {mode}); "
            "images are read as 8-bit values 0..255 and divided by 255. Convert "
            "it to 8 bits (gray, palette or RGB)."
        )
    return image


def read_mask(
    path: Path, tally: MaskTally, *, mask_threshold, binarize: bool
) -> np.ndarray:
    """A mask file as float32 ``(height, width)`` in ``[0, 1]``, by the mask rules."""
    values, mode, lossy = _decode(path, rgb=False)
    mask, encoding = interpret_mask(
        values,
        name=f"'{path}'",
        mode=mode,
        lossy=lossy,
        mask_threshold=mask_threshold,
        binarize=binarize,
    )
    tally.add(encoding + (" (JPEG)" if lossy else ""))
    return mask


def resize_image(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Pillow's bilinear resize of a ``uint8`` RGB array to ``(height, width)``."""
    if size is None or image.shape[:2] == size:
        return image
    image_module = pillow()
    resized = image_module.fromarray(image).resize(
        (size[1], size[0]), resample=image_module.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.uint8)


def resize_nearest(mask: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Nearest-neighbour resampling at pixel centres.

    Output pixel ``i`` takes input pixel ``floor((i + 1/2) * n_in / n_out)``
    (in exact integer arithmetic), on each axis: the pixels Pillow's and
    TensorFlow's nearest resizing pick.
    """
    if size is None or mask.shape[:2] == size:
        return mask
    rows = ((2 * np.arange(size[0]) + 1) * mask.shape[0]) // (2 * size[0])
    cols = ((2 * np.arange(size[1]) + 1) * mask.shape[1]) // (2 * size[1])
    return mask[np.ix_(rows, cols)]
