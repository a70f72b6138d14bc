"""BUSI, Breast Ultrasound Images (Al-Dhabyani et al. 2020), and the follow-up's splits.

Two layouts are read:

* the official release, ``Dataset_BUSI_with_GT/``: one folder per class,
  ``benign/``, ``malignant/``, ``normal/``, each holding ``benign (1).png``
  with its mask ``benign (1)_mask.png`` and, for some images, more masks
  ``benign (1)_mask_1.png``, ``_mask_2.png``... (merged by union);
* the follow-up's sorted layout: ``images/`` and ``masks/``, paired by file
  stem (a mask may also be named ``<stem>_mask``), the class read from the
  start of the file name (``benign ...``, ``malignant ...``).

Samples are in file-name order (Python's ``sorted``), the order in which
the follow-up's ``image_dataset_from_directory`` reads its sorted folders.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_ssr._checks import check_int, check_real
from keras_ssr.data import _files
from keras_ssr.data.folders import read_samples

__all__ = ["BUSI_CLASSES", "busi_splits", "load_busi"]

#: The classes of the official release, in the order of their labels.
BUSI_CLASSES = ("benign", "malignant", "normal")
_MASK = re.compile(r"^(?P<stem>.+?)_mask(?:_(?P<k>\d+))?$", re.IGNORECASE)


def _check_classes(classes) -> tuple[str, ...]:
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise TypeError(
            "`classes` must be a sequence of class names. "
            f"Received: classes={classes!r}"
        )
    chosen = tuple(classes)
    if (
        not chosen
        or len(set(chosen)) != len(chosen)
        or not set(chosen) <= set(BUSI_CLASSES)
    ):
        raise ValueError(
            f"`classes` must be distinct names among {BUSI_CLASSES}. "
            f"Received: classes={classes!r}"
        )
    return chosen


def _split_masks(files: list[Path]) -> tuple[dict[str, Path], dict[str, list]]:
    """Images by stem, and each image stem's masks (``_mask``, ``_mask_k``)."""
    images: dict[str, Path] = {}
    masks: dict[str, list[tuple[int, Path]]] = {}
    for path in files:
        match = _MASK.match(path.stem)
        if match:
            k = int(match["k"]) if match["k"] is not None else 0
            masks.setdefault(match["stem"], []).append((k, path))
        else:
            images[path.stem] = path
    ordered = {stem: [p for _, p in sorted(found)] for stem, found in masks.items()}
    return images, ordered


def _official(root: Path, classes) -> list[tuple[Path, list[Path], int]]:
    samples = []
    for label, name in enumerate(classes):
        folder = root / name
        images, masks = _split_masks(_files.image_files(folder, f"BUSI {name}"))
        orphans = sorted(set(masks) - set(images))
        missing = sorted(stem for stem in images if stem not in masks)
        if orphans or missing:
            problems = [
                f"{len(missing)} image(s) without a mask: "
                f"{_files.listed([images[s].name for s in missing])}"
                if missing
                else "",
                f"{len(orphans)} mask(s) without an image: "
                f"{_files.listed([masks[s][0].name for s in orphans])}"
                if orphans
                else "",
            ]
            raise ValueError(
                f"In the BUSI folder '{folder}', each image 'x.png' needs its "
                "mask 'x_mask.png' (and optional 'x_mask_1.png', ...); "
                + "; ".join(p for p in problems if p)
                + "."
            )
        samples += [(images[s], masks[s], label) for s in images]
    return samples


def _sorted_layout(root: Path, classes) -> list[tuple[Path, list[Path], int]]:
    images_dir, masks_dir = root / "images", root / "masks"
    image_files = _files.image_files(images_dir, "images")
    images = _files.by_stem(image_files, images_dir, "images")
    mask_files = _files.image_files(masks_dir, "masks")
    by_stem = _files.by_stem(mask_files, masks_dir, "masks")
    _, suffixed = _split_masks(mask_files)
    samples, unknown, missing = [], [], []
    for stem, path in images.items():
        found = [
            label
            for label, name in enumerate(classes)
            if path.name.lower().startswith(name)
        ]
        if not found:
            if not any(path.name.lower().startswith(c) for c in BUSI_CLASSES):
                unknown.append(path.name)
            continue  # a class not asked for
        masks = [by_stem[stem]] if stem in by_stem else suffixed.get(stem, [])
        if not masks:
            missing.append(path.name)
        samples.append((path, masks, found[0]))
    if unknown or missing:
        problems = []
        if unknown:
            problems.append(
                f"{len(unknown)} image(s) whose name starts with no BUSI class "
                f"{BUSI_CLASSES}: {_files.listed(unknown)}"
            )
        if missing:
            problems.append(
                f"{len(missing)} image(s) without a mask in '{masks_dir}': "
                f"{_files.listed(missing)}"
            )
        raise ValueError(f"In the BUSI folder '{root}': " + "; ".join(problems) + ".")
    return samples


def load_busi(
    root: str | os.PathLike,
    target_size: tuple[int, int] | None = (224, 224),
    *,
    classes: Sequence[str] = ("benign", "malignant"),
    return_names: bool = False,
    verbose: bool = True,
    **options,
):
    """Loads BUSI from the official release or the follow-up's sorted layout.

    ``root`` holds either the class folders (``benign/``, ``malignant/``,
    ``normal/``: the official ``Dataset_BUSI_with_GT``) or ``images/`` and
    ``masks/`` (the follow-up's sorted layout). An image's extra masks
    (``_mask_1.png``, ...) are merged with its ``_mask.png`` by union. The
    follow-up segments benign and malignant tumours only, the default
    ``classes``; ``"normal"`` images (empty masks) can be added.

    Images are read as 8-bit RGB, resized bilinear to ``target_size`` and
    divided by 255; masks are interpreted file by file (see
    ``docs/data.md``) and resized nearest, as
    :func:`~keras_ssr.data.load_image_mask_folders` does. Samples are in
    file-name order.

    Args:
        root: the dataset folder.
        target_size: ``(height, width)``; ``None`` keeps the files' size
            (BUSI's images differ in size, so this fails on the real data).
        classes: the classes to read, among :data:`BUSI_CLASSES`; their
            positions are the labels.
        return_names: also return the image file names, in order.
        verbose: print what was found (and the count per class).
        **options: keyword-only, as
            :func:`~keras_ssr.data.load_image_mask_folders`: ``data_format``,
            ``binarize_masks``, ``mask_threshold`` and ``resize_masks``.

    Returns:
        ``(x, y, labels)`` or ``(x, y, labels, names)``: ``float32`` images
        and masks, and ``int64`` labels, the position of each sample's class
        in ``classes`` (benign 0, malignant 1 by default: the follow-up's
        stratification target).

    Raises:
        ImportError: if Pillow is not installed.
        FileNotFoundError: if ``root`` or a class folder is missing.
        ValueError: for an image without a mask or a mask without an image
            (listed), a sorted-layout name that starts with no class, bad
            ``classes``, and as :func:`~keras_ssr.data.load_image_mask_folders`.

    Example:
        >>> x, y, labels = load_busi("Dataset_BUSI_with_GT")  # doctest: +SKIP
        >>> x.shape, y.shape, labels.sum()  # doctest: +SKIP
        ((647, 224, 224, 3), (647, 224, 224, 1), 210)
    """
    classes = _check_classes(classes)
    _files.check_target_size(target_size)
    _files.pillow()
    root = _files.check_folder(root, "BUSI")
    if (root / "images").is_dir() and (root / "masks").is_dir():
        samples = _sorted_layout(root, classes)
    elif any((root / name).is_dir() for name in BUSI_CLASSES):
        samples = _official(root, classes)
    else:
        raise FileNotFoundError(
            f"'{root}' is not a BUSI folder: it holds neither the class folders "
            f"{', '.join(n + '/' for n in BUSI_CLASSES)} nor images/ and masks/."
        )
    if not samples:
        raise ValueError(f"The BUSI folder '{root}' holds no images of {classes}.")
    samples.sort(key=lambda sample: sample[0].name)
    x, y = read_samples(
        [(image, masks) for image, masks, _ in samples],
        target_size,
        loader="load_busi",
        verbose=verbose,
        **options,
    )
    labels = np.array([label for _, _, label in samples], dtype=np.int64)
    if verbose:
        counts = ", ".join(
            f"{int(np.sum(labels == i))} {name}" for i, name in enumerate(classes)
        )
        print(f"load_busi: {counts}")
    if return_names:
        return x, y, labels, [image.name for image, _, _ in samples]
    return x, y, labels


def _sklearn_model_selection():
    try:
        from sklearn import model_selection
    except ImportError as err:
        raise ImportError(
            "The BUSI splits use scikit-learn. Install it with "
            "`pip install keras-ssr[sklearn]` (or `pip install scikit-learn`)."
        ) from err
    return model_selection


def busi_splits(
    labels,
    n_splits: int = 5,
    *,
    dev_size: float = 0.2,
    random_state: int = 42,
) -> list[dict[str, np.ndarray]]:
    """The follow-up's BUSI protocol: stratified 5 folds, a stratified dev split.

    Fold ``k``'s test indices are the ``k``-th of scikit-learn's
    ``StratifiedKFold(n_splits, shuffle=True, random_state)`` on ``labels``;
    its other indices are split by ``train_test_split(test_size=dev_size,
    stratify=..., random_state)`` into ``fit`` (training) and ``val`` (the
    dev split that picks the best epoch), exactly as the follow-up's BUSI
    scripts split their arrays. scikit-learn is an optional dependency
    (``pip install keras-ssr[sklearn]``).

    Args:
        labels: one class label per sample, e.g. from :func:`load_busi`
            (benign 0, malignant 1).
        n_splits: number of folds, ``>= 2``.
        dev_size: fraction of each training fold held out as ``val``, in
            ``(0, 1)``.
        random_state: the seed of both scikit-learn splitters.

    Returns:
        One dict per fold with index arrays ``"fit"``, ``"val"`` and
        ``"test"``, disjoint and together all samples.

    Raises:
        ImportError: if scikit-learn is not installed.
        ValueError: for labels that are not a non-empty 1-D array, a class
            with fewer than ``n_splits`` samples, or bad arguments.

    Example:
        >>> folds = busi_splits([0] * 10 + [1] * 5, n_splits=5)
        >>> [len(f["test"]) for f in folds], len(folds[0]["val"])
        ([3, 3, 3, 3, 3], 3)
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(
            "`labels` must be a non-empty 1-D array of class labels. "
            f"Received: labels.shape={labels.shape}"
        )
    n_splits = check_int("n_splits", n_splits, 2)
    dev_size = check_real("dev_size", dev_size, 0.0, 1.0, open_minimum=True)
    if dev_size >= 1.0:
        raise ValueError(f"`dev_size` must be in (0, 1). Received: dev_size={dev_size}")
    random_state = check_int("random_state", random_state, 0)
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < n_splits:
        raise ValueError(
            f"Every class needs at least n_splits={n_splits} samples for a "
            f"stratified split; class {classes[np.argmin(counts)].item()!r} has "
            f"{counts.min()}."
        )
    selection = _sklearn_model_selection()
    folds = selection.StratifiedKFold(n_splits, shuffle=True, random_state=random_state)
    splits = []
    for train, test in folds.split(np.zeros((len(labels), 1)), labels):
        fit, val = selection.train_test_split(
            train, test_size=dev_size, stratify=labels[train], random_state=random_state
        )
        splits.append({"fit": fit, "val": val, "test": test})
    return splits
