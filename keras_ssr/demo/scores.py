"""Held-out scores of the demo, in NumPy, and the printed table."""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_ssr.demo.config import THRESHOLD

__all__ = ["dice_and_iou", "format_table"]


def dice_and_iou(
    masks: np.ndarray, probabilities: np.ndarray, threshold: float = THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Dice and IoU of thresholded predictions, in NumPy.

    ``p = probabilities >= threshold`` and ``g = masks >= 0.5``; per image,
    ``Dice = 2 |p & g| / (|p| + |g|)`` and ``IoU = |p & g| / |p | g|``,
    both 1 when prediction and mask are both empty.

    Args:
        masks: ground truth ``(N, ...)``.
        probabilities: predictions of the same shape.
        threshold: decision threshold in ``[0, 1]``.

    Returns:
        ``(dice, iou)``: float64 arrays of shape ``(N,)``.

    Raises:
        ValueError: if the shapes differ or ``threshold`` is out of range.

    Example:
        >>> g = np.array([[1, 1, 0, 0]])
        >>> dice_and_iou(g, np.array([[0.9, 0.2, 0.7, 0.1]]))
        (array([0.5]), array([0.33333333]))
    """
    masks, probabilities = np.asarray(masks), np.asarray(probabilities)
    if masks.shape != probabilities.shape or masks.ndim < 1:
        raise ValueError(
            "`masks` and `probabilities` must have the same shape (N, ...). "
            f"Received: masks.shape={masks.shape}, "
            f"probabilities.shape={probabilities.shape}"
        )
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(
            f"`threshold` must be in [0, 1]. Received: threshold={threshold!r}"
        )
    axes = tuple(range(1, masks.ndim))
    predicted = probabilities >= threshold
    truth = masks >= 0.5
    intersection = np.sum(predicted & truth, axis=axes).astype(np.float64)
    total = np.sum(predicted, axis=axes) + np.sum(truth, axis=axes)
    union = np.sum(predicted | truth, axis=axes).astype(np.float64)
    empty = total == 0
    dice = np.where(empty, 1.0, 2.0 * intersection / np.maximum(total, 1))
    iou = np.where(empty, 1.0, intersection / np.maximum(union, 1))
    return dice, iou


def format_table(rows: list[dict[str, Any]]) -> str:
    """The printed results table (one row per model).

    Args:
        rows: dicts with ``model``, ``params``, ``train_seconds``,
            ``dice_mean``, ``dice_std``, ``iou_mean``, ``iou_std`` (per
            image), ``dice_pooled`` and ``iou_pooled`` (all held-out pixels
            together).

    Returns:
        The table as a string, no trailing newline.
    """
    header = (
        "model",
        "params",
        "train s",
        "Dice per image",
        "IoU per image",
        "Dice pooled",
        "IoU pooled",
    )
    lines = [
        (
            row["model"],
            f"{row['params']:,}",
            f"{row['train_seconds']:.1f}",
            f"{row['dice_mean']:.3f} ± {row['dice_std']:.3f}",
            f"{row['iou_mean']:.3f} ± {row['iou_std']:.3f}",
            f"{row['dice_pooled']:.3f}",
            f"{row['iou_pooled']:.3f}",
        )
        for row in rows
    ]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]

    def fmt(cells):
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest])

    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *map(fmt, lines)])
