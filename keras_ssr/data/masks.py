"""How a mask becomes a binary mask: the rules, decided for each file or sample.

Every mask is interpreted on its own, from its own values, never from the
rest of the dataset (one odd file cannot change how the others are read).
The rules, in order (``docs/data.md`` has them as a table):

1. **palette** (Pillow mode ``P``/``PA``, VOC-style): the palette index is
   the label; index 0 is background, any other index is foreground.
2. **boolean** (Pillow mode ``1``, a ``bool`` array): ``True`` is foreground.
3. **colour** (channels that differ somewhere): a pixel's value is its
   largest channel; it is foreground if that is non-zero, or
   ``>= mask_threshold`` when given. Lossy (JPEG) colour masks default to
   ``mask_threshold=128``, as their background is never exactly 0. Alpha is
   ignored, and colour images whose channels are all equal are gray masks.
4. **two values**: values within ``{0, 1}`` (``"0/1"``) or ``{0, 255}``
   (``"0/255"``): the larger value is foreground (all zero: ``"empty"``).
   ``mask_threshold`` does not apply, so a 0/1 mask among 0/255 masks is
   read correctly.
5. **gray levels** (JPEG noise, a bilinear resize): values in ``[0, 255]``
   are foreground where ``>= mask_threshold``; the default is 127.5 (half of
   255), or 0.5 when every value lies in ``[0, 1]`` and some are fractional
   (a resized 0/1 mask). Without ``mask_threshold``, a mask with few
   distinct values (at most :data:`MAX_LABELS`, e.g. ``{0, 1, 2}``) or none
   reaching the threshold is refused: it is a label image, not gray levels.
6. Anything else (negative, above 255, NaN or infinite values) is refused.

Refusals are ``ValueError``\\ s naming the file or sample and the values found.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter

import numpy as np

__all__ = ["MAX_LABELS", "MaskTally", "interpret_mask"]

#: A mask with at most this many distinct values that is not a two-value
#: encoding is taken for a label image and refused (unless ``mask_threshold``).
MAX_LABELS = 8
#: Pillow modes whose pixels are palette indices.
PALETTE_MODES = ("P", "PA")
_GRAY_THRESHOLD = 127.5  # half of 255: the same as the original's v / 255 >= 0.5
_UNIT_THRESHOLD = 0.5
_LOSSY_COLOUR_THRESHOLD = 128
_SHOWN_VALUES = 8


def check_mask_threshold(mask_threshold) -> float | None:
    """``None`` or a positive finite number (in the masks' own units)."""
    if mask_threshold is None:
        return None
    if (
        isinstance(mask_threshold, bool)
        or not isinstance(mask_threshold, numbers.Real)
        or not math.isfinite(mask_threshold)
        or not 0 < mask_threshold <= 255
    ):
        raise ValueError(
            "`mask_threshold` must be None or a number in (0, 255], in the "
            "masks' own units (e.g. 128 for 8-bit gray levels, 1 for any "
            f"non-zero value). Received: mask_threshold={mask_threshold!r}"
        )
    return float(mask_threshold)


def _values_text(values: np.ndarray) -> str:
    """The distinct values of ``values``, a few of them if there are many."""
    distinct = np.unique(values)
    shown = ", ".join(f"{v:g}" for v in distinct[:_SHOWN_VALUES].tolist())
    if len(distinct) > _SHOWN_VALUES:
        shown += f", ... ({len(distinct)} distinct values, max {distinct[-1]:g})"
    return "{" + shown + "}"


def _within(values: np.ndarray, allowed: tuple[float, float]) -> bool:
    return bool(np.all((values == allowed[0]) | (values == allowed[1])))


def interpret_mask(
    values,
    *,
    name: str = "mask",
    mode: str | None = None,
    lossy: bool = False,
    mask_threshold: float | None = None,
    binarize: bool = True,
) -> tuple[np.ndarray, str]:
    """One mask as a foreground map, by the rules of :mod:`keras_ssr.data.masks`.

    Args:
        values: the mask as stored, ``(height, width)`` or ``(height, width,
            channels)``: palette indices, booleans, or numbers.
        name: what to call the mask in errors (a file path, "sample 3 of
            'Y.npy'").
        mode: the Pillow mode it was read in (``"P"`` marks palette
            indices), or ``None`` for an array.
        lossy: whether it was read from a lossy format (JPEG).
        mask_threshold: foreground is ``value >= mask_threshold`` for gray
            levels and colour masks, in the stored units; ``None`` takes the
            defaults above.
        binarize: return exactly 0 and 1; ``False`` keeps gray levels (and
            thresholded colour masks' largest channel) as ``value / 255`` (the
            value itself for ``[0, 1]`` masks), the original scripts'
            unthresholded masks. Other encodings are always 0 and 1.

    Returns:
        ``(mask, encoding)``: a float32 ``(height, width)`` array in
        ``[0, 1]`` and the name of the encoding found (``"0/255"``,
        ``"0/1"``, ``"boolean"``, ``"palette"``, ``"colour"``, ``"gray
        levels >= 127.5"``, ...).

    Raises:
        ValueError: for a mask the rules refuse, naming ``name`` and the
            values found.

    Example:
        >>> mask, encoding = interpret_mask(np.array([[0, 1], [1, 0]]))
        >>> encoding, mask.tolist()
        ('0/1', [[0.0, 1.0], [1.0, 0.0]])
    """
    threshold = check_mask_threshold(mask_threshold)
    array = np.asarray(values)
    if array.ndim == 3 and mode in PALETTE_MODES:
        array = array[..., 0]  # PA: the index, not its alpha
    if array.ndim == 3:
        if array.shape[-1] in (2, 4):
            array = array[..., :-1]  # LA, RGBA: alpha is ignored
        if array.shape[-1] == 1 or np.all(array == array[..., :1]):
            array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ValueError(
            f"The mask {name} must be (height, width) or (height, width, "
            f"channels). Received: shape {array.shape}"
        )
    if mode in PALETTE_MODES:
        return (array != 0).astype(np.float32), "palette"
    if array.dtype == np.bool_:
        return array.astype(np.float32), "boolean"
    if not (np.issubdtype(array.dtype, np.number)) or np.iscomplexobj(array):
        raise ValueError(
            f"The mask {name} must hold numbers or booleans. Received: "
            f"dtype={array.dtype}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"The mask {name} holds NaN or infinite values: {_values_text(array)}."
        )
    low, high = array.min(), array.max()
    if low < 0 or high > 255:
        raise ValueError(
            f"The mask {name} holds values outside [0, 255]: "
            f"{_values_text(array)} (min {low:g}, max {high:g}). Masks are "
            "0/1, 0/255, boolean, palette, colour or 8-bit gray levels."
        )

    if array.ndim == 3:
        brightest = array.max(axis=-1)
        if threshold is None:
            if lossy:
                threshold = _LOSSY_COLOUR_THRESHOLD
            else:
                return (brightest > 0).astype(np.float32), "colour"
        if binarize:
            mask = (brightest >= threshold).astype(np.float32)
        else:
            mask = (brightest / 255.0).astype(np.float32)
        return mask, f"colour >= {threshold:g}"

    if high == 0:
        return np.zeros(array.shape, np.float32), "empty"
    for pair, encoding in (((0, 1), "0/1"), ((0, 255), "0/255")):
        if _within(array, pair):
            return (array == pair[1]).astype(np.float32), encoding

    fractional = bool(np.any(array != np.round(array)))
    unit = fractional and high <= 1
    scale = 1.0 if unit else 255.0
    if threshold is None:
        threshold = _UNIT_THRESHOLD if unit else _GRAY_THRESHOLD
        distinct = len(np.unique(array))
        if (distinct <= MAX_LABELS and not fractional) or high < threshold:
            why = (
                f"{distinct} distinct values: a label image, not gray levels"
                if distinct <= MAX_LABELS and not fractional
                else f"none reaches the gray-level threshold {threshold:g}"
            )
            raise ValueError(
                f"The mask {name} holds the values {_values_text(array)} "
                f"({why}). A binary mask holds 0/1, 0/255 or booleans. Convert "
                "it, or pass mask_threshold (foreground = value >= "
                "mask_threshold; 1 takes every non-zero value as foreground)."
            )
    if binarize:
        mask = (array >= threshold).astype(np.float32)
    else:
        mask = (array / scale).astype(np.float32)
    return mask, f"gray levels >= {threshold:g}"


class MaskTally:
    """Counts the encodings found, for the one-line summary a loader prints."""

    def __init__(self, what: str = "masks"):
        self.what = what
        self.counts: Counter[str] = Counter()

    def add(self, encoding: str) -> None:
        self.counts[encoding] += 1

    def describe(self) -> str:
        """E.g. ``"1000 masks, 0/255"`` or ``"3 masks: 2 0/255, 1 0/1"``."""
        total = sum(self.counts.values())
        if len(self.counts) == 1:
            return f"{total} {self.what}, {next(iter(self.counts))}"
        parts = ", ".join(f"{n} {enc}" for enc, n in self.counts.most_common())
        return f"{total} {self.what}: {parts}"
