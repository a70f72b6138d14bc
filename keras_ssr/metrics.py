"""Segmentation metrics of the SSR experiments, in ``keras.ops``.

:func:`segmentation_metrics` returns the original's metric set ("baseline"),
in its order: binary accuracy, AUC, precision, sensitivity (recall),
specificity, Dice coefficient and binary IoU. The first four and the last are
Keras 3's built-in metrics; :func:`specificity` and :func:`dice_coefficient`
are plain functions (Keras averages their per-batch values over an epoch, as
the original did), registered serialisable under the package ``keras_ssr``
so that a compiled model saves and loads.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_ssr._serialization import register
from keras_ssr.losses import DEFAULT_EPSILON, as_float_pair, check_positive_float

__all__ = ["dice_coefficient", "segmentation_metrics", "specificity"]


@register
def dice_coefficient(y_true, y_pred, epsilon: float = DEFAULT_EPSILON):
    """Dice coefficient of the thresholded prediction, over the whole batch.

    ``y_pred`` is binarised at ``>= 0.5``; then
    ``(2 * sum(y_true * p) + epsilon) / (sum(y_true) + sum(p) + epsilon)``
    with sums over every element of the batch (as the original's metric).
    ``y_true`` is used as given (not thresholded).

    Args:
        y_true: ground-truth masks, values in ``[0, 1]``.
        y_pred: predicted probabilities, the same shape as ``y_true``.
        epsilon: smoothing term, ``> 0``: an empty prediction of an empty
            mask scores 1.

    Returns:
        A scalar tensor, in ``[0, 1]`` for binary ``y_true``.

    Raises:
        ValueError: if the shapes differ or ``epsilon`` is not ``> 0``.

    Example:
        >>> import numpy as np
        >>> y = np.array([[1.0, 0.0, 1.0]])
        >>> round(float(dice_coefficient(y, np.array([[0.9, 0.2, 0.4]]))), 4)
        0.6667
    """
    epsilon = check_positive_float("epsilon", epsilon)
    y_true, y_pred = as_float_pair(y_true, y_pred)
    predicted = ops.cast(ops.greater_equal(y_pred, 0.5), y_pred.dtype)
    intersection = ops.sum(y_true * predicted)
    total = ops.sum(y_true) + ops.sum(predicted)
    return (2.0 * intersection + epsilon) / (total + epsilon)


@register
def specificity(y_true, y_pred):
    """True-negative rate ``tn / (tn + fp + keras.config.epsilon())``.

    As the original: ``tn = sum(round(clip((1 - y_true) * (1 - y_pred), 0,
    1)))`` and ``fp = sum(round(clip((1 - y_true) * y_pred, 0, 1)))`` over
    the whole batch, so a pixel counts when its product exceeds 0.5 (exactly
    0.5 rounds half to even, to 0). A batch without negatives scores 0.

    Args:
        y_true: ground-truth masks, values in ``[0, 1]``.
        y_pred: predicted probabilities, the same shape as ``y_true``.

    Returns:
        A scalar tensor in ``[0, 1]``.

    Raises:
        ValueError: if the shapes differ.

    Example:
        >>> import numpy as np
        >>> y = np.array([[0.0, 0.0, 1.0]])
        >>> round(float(specificity(y, np.array([[0.1, 0.8, 0.9]]))), 4)
        0.5
    """
    y_true, y_pred = as_float_pair(y_true, y_pred)
    negatives = 1.0 - y_true
    tn = ops.sum(ops.round(ops.clip(negatives * (1.0 - y_pred), 0.0, 1.0)))
    fp = ops.sum(ops.round(ops.clip(negatives * y_pred, 0.0, 1.0)))
    return tn / (tn + fp + keras.config.epsilon())


def segmentation_metrics() -> list:
    """A fresh list of the original's segmentation metrics, in its order.

    ``[BinaryAccuracy(), AUC(), Precision(), Recall(name="sensitivity"),
    specificity, dice_coefficient, BinaryIoU()]``, named as the original's
    logs name them (``binary_accuracy``, ``auc``, ``precision``,
    ``sensitivity``, ``specificity``, ``dice_coefficient``, ``binary_io_u``).
    The metric objects are new on every call (a metric object must not be
    shared between models).

    Note that Keras' ``AUC``, ``Precision`` and ``Recall`` count every
    non-zero ``y_true`` as positive: feed binary masks
    (:mod:`keras_ssr.data` binarises them by default).

    Returns:
        A list of 7 metrics for ``model.compile(metrics=...)``.

    Example:
        >>> len(segmentation_metrics())
        7
    """
    return [
        keras.metrics.BinaryAccuracy(name="binary_accuracy"),
        keras.metrics.AUC(name="auc"),
        keras.metrics.Precision(name="precision"),
        keras.metrics.Recall(name="sensitivity"),
        specificity,
        dice_coefficient,
        keras.metrics.BinaryIoU(name="binary_io_u"),
    ]
