"""Image/mask folder pairs (any dataset) and Kvasir-SEG."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_ssr._checks import standardize_data_format
from keras_ssr.data import _files
from keras_ssr.data.masks import MaskTally, check_mask_threshold

__all__ = [
    "READ_OPTIONS",
    "load_image_mask_folders",
    "load_kvasir_seg",
    "read_samples",
]


#: The reading options every loader takes, keyword-only, with their
#: defaults (documented on :func:`load_image_mask_folders`).
READ_OPTIONS = {
    "data_format": None,
    "binarize_masks": True,
    "mask_threshold": None,
    "resize_masks": False,
}


def read_samples(
    samples: Sequence[tuple[Path, Sequence[Path]]],
    target_size,
    *,
    loader: str,
    verbose: bool,
    **options,
) -> tuple[np.ndarray, np.ndarray]:
    """Reads ``(image, masks)`` file pairs into ``float32`` arrays ``(x, y)``.

    Each image is read as 8-bit RGB and divided by 255; each mask by the
    rules of :mod:`keras_ssr.data.masks`; several masks of one image are
    merged by union (their maximum). A mask whose size differs from its
    image's is an error, unless ``resize_masks`` (nearest). Then both are
    resized to ``target_size`` (bilinear images, nearest masks). With
    ``verbose``, one summary line is printed, e.g. ``"1000 masks, 0/255"``.
    ``options`` are :data:`READ_OPTIONS`; ``loader`` names the caller in
    messages.
    """
    unknown = sorted(set(options) - set(READ_OPTIONS))
    if unknown:
        raise TypeError(
            f"{loader}() got unexpected keyword arguments {unknown}; its reading "
            f"options are {sorted(READ_OPTIONS)}."
        )
    options = {**READ_OPTIONS, **options}
    data_format, binarize_masks, mask_threshold, resize_masks = options.values()
    size = _files.check_target_size(target_size)
    data_format = standardize_data_format(data_format)
    mask_threshold = check_mask_threshold(mask_threshold)
    tally = MaskTally()
    x_list, y_list = [], []
    for image_path, mask_paths in samples:
        image = _files.read_image(image_path)
        mask = None
        for mask_path in mask_paths:
            part = _files.read_mask(
                mask_path, tally, mask_threshold=mask_threshold, binarize=binarize_masks
            )
            if part.shape != image.shape[:2]:
                if not resize_masks:
                    raise ValueError(
                        f"The mask '{mask_path}' is {part.shape[0]}x{part.shape[1]} "
                        f"but its image '{image_path}' is {image.shape[0]}x"
                        f"{image.shape[1]} (height x width). Pass "
                        "resize_masks=True to resize such masks (nearest) to "
                        "their image's size."
                    )
                part = _files.resize_nearest(part, image.shape[:2])
            mask = part if mask is None else np.maximum(mask, part)
        image = _files.resize_image(image, size)
        mask = _files.resize_nearest(mask, size)
        if x_list and image.shape != x_list[0].shape:
            raise ValueError(
                "With target_size=None every image must have the same size, but "
                f"'{image_path}' is {image.shape[0]}x{image.shape[1]} and "
                f"'{samples[0][0]}' is {x_list[0].shape[0]}x{x_list[0].shape[1]} "
                "(height x width). Pass a target_size to resize."
            )
        x_list.append(image)
        y_list.append(mask)
    x = np.stack(x_list).astype(np.float32)
    x /= 255.0
    y = np.stack(y_list)[..., None]
    if verbose:
        print(f"{loader}: {len(x)} images, 8-bit, divided by 255; {tally.describe()}")
    if data_format == "channels_first":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        y = np.ascontiguousarray(y.transpose(0, 3, 1, 2))
    return x, y


def load_image_mask_folders(
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike,
    target_size: tuple[int, int] | None = (224, 224),
    *,
    data_format: str | None = None,
    binarize_masks: bool = True,
    mask_threshold: float | None = None,
    resize_masks: bool = False,
    return_names: bool = False,
    verbose: bool = True,
):
    """Loads a folder of images and a folder of masks paired by file stem.

    Every file directly in ``images_dir`` whose name ends with one of
    :data:`~keras_ssr.data.IMAGE_EXTENSIONS` (case-insensitive; hidden files
    skipped) is an image; its mask is the file in ``masks_dir`` with the same
    stem (the extensions may differ: ``a.jpg`` pairs with ``a.png``).
    Samples are in the order of the image file names, the order the paper's
    K-fold split uses.

    * Images must be 8-bit (gray, palette, RGB, RGBA...); they are converted
      to RGB, resized to ``target_size`` with bilinear interpolation
      (Pillow's, which antialiases when shrinking: values differ slightly
      from TensorFlow's ``image_dataset_from_directory`` that the original
      used) and divided by 255.
    * Each mask is interpreted on its own, from its own values (0/255, 0/1,
      boolean, palette, colour or gray levels; see
      :mod:`keras_ssr.data.masks` and ``docs/data.md``), then resized with
      nearest-neighbour interpolation. A file the rules cannot read as a
      binary mask (e.g. labels ``{0, 1, 2}``) is an error naming the file
      and its values.

    Args:
        images_dir: folder of the images.
        masks_dir: folder of the masks.
        target_size: ``(height, width)`` of the output; ``None`` keeps the
            files' size, which must then be the same for every image.
        data_format: ``"channels_last"`` gives ``(N, H, W, 3)`` and
            ``(N, H, W, 1)``, ``"channels_first"`` ``(N, 3, H, W)`` and
            ``(N, 1, H, W)``; ``None`` is ``keras.config.image_data_format()``.
        binarize_masks: exact ``{0, 1}`` masks; ``False`` keeps gray-level
            masks (JPEG) as ``value / 255``, as the original scripts did.
        mask_threshold: foreground is ``value >= mask_threshold`` for gray
            levels and colour masks, in the files' units (e.g. 128; 1 makes
            every non-zero value foreground); ``None`` uses the rules'
            defaults.
        resize_masks: resize a mask whose size differs from its image's to
            the image's size (nearest) instead of raising.
        return_names: also return the list of image file names, in order.
        verbose: print one line saying what was found, e.g.
            ``"load_image_mask_folders: 1000 images, ...; 1000 masks, 0/255"``.

    Returns:
        ``(x, y)`` or, with ``return_names``, ``(x, y, names)``; ``x`` and
        ``y`` are ``float32`` NumPy arrays.

    Raises:
        ImportError: if Pillow is not installed.
        FileNotFoundError: if a folder does not exist.
        NotADirectoryError: if a folder is a file.
        ValueError: for an empty folder, an image without a mask or a mask
            without an image (the names are listed), two files with one stem,
            a file Pillow cannot read, an image of more than 8 bits, a mask
            the rules refuse or whose size differs from its image's (all
            named), sizes that differ with ``target_size=None``, or a bad
            ``target_size``, ``mask_threshold`` or ``data_format``.

    Example:
        >>> x, y = load_image_mask_folders("data/images", "data/masks",
        ...                                (224, 224))  # doctest: +SKIP
        load_image_mask_folders: 1000 images, ...; 1000 masks, 0/255
        >>> x.shape, y.shape  # doctest: +SKIP
        ((1000, 224, 224, 3), (1000, 224, 224, 1))
    """
    _files.check_target_size(target_size)
    standardize_data_format(data_format)
    check_mask_threshold(mask_threshold)
    _files.pillow()
    _files.check_folder(images_dir, "images")
    _files.check_folder(masks_dir, "masks")
    images = _files.by_stem(
        _files.image_files(images_dir, "images"), images_dir, "images"
    )
    masks = _files.by_stem(_files.image_files(masks_dir, "masks"), masks_dir, "masks")

    no_mask = [images[stem].name for stem in images if stem not in masks]
    no_image = [masks[stem].name for stem in masks if stem not in images]
    if no_mask or no_image:
        problems = []
        if no_mask:
            problems.append(
                f"{len(no_mask)} image(s) in '{images_dir}' without a mask in "
                f"'{masks_dir}': {_files.listed(no_mask)}"
            )
        if no_image:
            problems.append(
                f"{len(no_image)} mask(s) in '{masks_dir}' without an image in "
                f"'{images_dir}': {_files.listed(no_image)}"
            )
        raise ValueError(
            "Images and masks are paired by file stem; " + "; ".join(problems) + "."
        )
    x, y = read_samples(
        [(path, [masks[stem]]) for stem, path in images.items()],
        target_size,
        loader="load_image_mask_folders",
        verbose=verbose,
        data_format=data_format,
        binarize_masks=binarize_masks,
        mask_threshold=mask_threshold,
        resize_masks=resize_masks,
    )
    if return_names:
        return x, y, [path.name for path in images.values()]
    return x, y


def load_kvasir_seg(
    root: str | os.PathLike,
    target_size: tuple[int, int] | None = (224, 224),
    **options,
):
    """Loads Kvasir-SEG: ``root/images/*.jpg`` and ``root/masks/*.jpg``.

    :func:`load_image_mask_folders` with the dataset's layout (the folder
    ``Kvasir-SEG`` of the official archive). Images are resized bilinear to
    ``target_size`` and scaled to ``[0, 1]``, as the original's Kvasir
    script does. The masks are JPEGs, gray levels near 0 and 255: they are
    thresholded at 127.5 (half of 255) by default; the original keeps their
    raw values ``v / 255``: pass ``binarize_masks=False`` for that. Samples
    are in file-name order, which the paper's 10-fold split (``KFold``
    without shuffling) relies on.

    Args:
        root: the dataset folder holding ``images/`` and ``masks/``.
        target_size: as :func:`load_image_mask_folders`; the paper uses
            ``(224, 224)``.
        **options: keyword-only, as :func:`load_image_mask_folders`:
            ``data_format``, ``binarize_masks``, ``mask_threshold``,
            ``resize_masks``, ``return_names`` and ``verbose``.

    Returns:
        ``(x, y)`` or ``(x, y, names)``, ``float32`` NumPy arrays.

    Raises:
        ImportError: if Pillow is not installed.
        FileNotFoundError: if ``root``, ``root/images`` or ``root/masks`` is
            missing.
        ValueError: as :func:`load_image_mask_folders`.

    Example:
        >>> x, y = load_kvasir_seg("/data/Kvasir-SEG")  # doctest: +SKIP
        load_image_mask_folders: 1000 images, ...; 1000 masks, colour >= 128 (JPEG)
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
        root / "images", root / "masks", target_size, **options
    )
