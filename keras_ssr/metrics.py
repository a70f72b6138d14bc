"""Segmentation metrics of the SSR experiments, in ``keras.ops``.

:func:`segmentation_metrics` returns the original's metric set ("baseline"),
in its order: binary accuracy, AUC, precision, sensitivity (recall),
specificity, Dice coefficient and binary IoU. The first four and the last are
Keras 3's built-in metrics; :func:`specificity` and :func:`dice_coefficient`
are plain functions (Keras averages their per-batch values over an epoch, as
the original did), registered serialisable under the package ``keras_ssr``
so that a compiled model saves and loads.

The follow-up (``miguelmartins/multifractal-recalibration``) reports two
metrics differently, per image, and :func:`per_image_segmentation_metrics`
returns its set (``followup_segmentation_metrics``, its former name, is
deprecated):

* **per-image Dice** (:func:`per_image_dice`, one value per image, averaged
  over the images seen by :class:`PerImageDice`), where the original's
  :func:`dice_coefficient` pools every pixel of the batch;
* the **foreground IoU** (:class:`ForegroundIoU`, the IoU of class 1 only),
  where the original's ``BinaryIoU()`` averages background and foreground.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_ssr._serialization import register
from keras_ssr.losses import DEFAULT_EPSILON, as_float_pair, check_positive_float

__all__ = [
    "PER_IMAGE_METRIC_NAMES",
    "SEGMENTATION_METRIC_NAMES",
    "ForegroundIoU",
    "PerImageDice",
    "dice_coefficient",
    "per_image_dice",
    "per_image_segmentation_metrics",
    "segmentation_metrics",
    "specificity",
]


def _thresholded_dice(y_true, y_pred, epsilon, per_image: bool):
    """Dice of ``y_pred >= 0.5`` over the batch or over each image."""
    epsilon = check_positive_float("epsilon", epsilon)
    y_true, y_pred = as_float_pair(y_true, y_pred)
    predicted = ops.cast(ops.greater_equal(y_pred, 0.5), y_pred.dtype)
    axis = None
    if per_image:
        if len(y_true.shape) < 1:
            raise ValueError(
                "`y_true` and `y_pred` need a batch axis for a per-image Dice. "
                f"Received: y_true.shape={tuple(y_true.shape)}"
            )
        batch = ops.shape(y_true)[0]
        y_true = ops.reshape(y_true, (batch, -1))
        predicted = ops.reshape(predicted, (batch, -1))
        axis = -1
    intersection = ops.sum(y_true * predicted, axis=axis)
    total = ops.sum(y_true, axis=axis) + ops.sum(predicted, axis=axis)
    return (2.0 * intersection + epsilon) / (total + epsilon)


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
    return _thresholded_dice(y_true, y_pred, epsilon, per_image=False)


@register
def per_image_dice(y_true, y_pred, epsilon: float = DEFAULT_EPSILON):
    """Dice coefficient of the thresholded prediction, one value per image.

    The follow-up's ``dice_coefficient``: each image (the first axis indexes
    images) is flattened, ``y_pred`` is binarised at ``>= 0.5``, and
    ``(2 * sum(y_true * p) + epsilon) / (sum(y_true) + sum(p) + epsilon)``
    is taken over that image alone. ``y_true`` is used as given (not
    thresholded). :class:`PerImageDice` averages these values over every
    image of an epoch, as the follow-up's ``MeanMetricWrapper`` does. An
    empty prediction of an empty mask scores 1; an image whose mask is not
    empty but whose prediction is scores ~0 (not NaN).

    Args:
        y_true: ground-truth masks ``(batch, ...)``, values in ``[0, 1]``.
        y_pred: predicted probabilities, the same shape as ``y_true``.
        epsilon: smoothing term, ``> 0``.

    Returns:
        A ``(batch,)`` tensor, in ``[0, 1]`` for binary ``y_true``.

    Raises:
        ValueError: if the shapes differ, there is no batch axis, or
            ``epsilon`` is not ``> 0``.
        TypeError: if ``epsilon`` is not a number.

    Example:
        >>> import numpy as np
        >>> y = np.array([[1.0, 0.0], [1.0, 1.0]])
        >>> dice = per_image_dice(y, np.array([[0.9, 0.2], [0.1, 0.7]]))
        >>> [round(float(v), 4) for v in keras.ops.convert_to_numpy(dice)]
        [1.0, 0.6667]
    """
    return _thresholded_dice(y_true, y_pred, epsilon, per_image=True)


@register
class PerImageDice(keras.metrics.MeanMetricWrapper):
    """Mean of :func:`per_image_dice` over every image seen (the follow-up's).

    The follow-up's ``MeanMetricWrapper(dice_coefficient)``: every image of
    every batch counts once (a smaller last batch weighs less, unlike the
    mean of per-batch values). ``sample_weight`` weighs the images.

    Args:
        epsilon: the Dice smoothing term, ``> 0``.
        name: the metric's name in the logs.
        dtype: the dtype of the metric's state and result.

    Raises:
        ValueError, TypeError: for a bad ``epsilon``.

    Example:
        >>> import numpy as np
        >>> metric = PerImageDice()
        >>> metric.update_state(np.ones((2, 3)), np.array([[0.9] * 3, [0.1] * 3]))
        >>> round(float(metric.result()), 4)
        0.5
    """

    def __init__(
        self,
        epsilon: float = DEFAULT_EPSILON,
        name: str = "per_image_dice",
        dtype=None,
    ):
        epsilon = check_positive_float("epsilon", epsilon)
        super().__init__(fn=per_image_dice, name=name, dtype=dtype, epsilon=epsilon)
        self.epsilon = epsilon

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "epsilon": self.epsilon}


@register
class ForegroundIoU(keras.metrics.BinaryIoU):
    """IoU of the foreground class only (the follow-up's IoU).

    ``keras.metrics.BinaryIoU(target_class_ids=[1])``: pixels with
    ``y_pred >= threshold`` are predicted foreground; the result is
    ``tp / (tp + fp + fn)`` of class 1 over every pixel seen (a confusion
    matrix accumulated over the epoch), where the original SSR code's
    ``BinaryIoU()`` reports the mean of the background and foreground IoUs.
    ``y_true`` must be binary (Keras casts it to integers).

    Args:
        threshold: the prediction threshold.
        name: the metric's name in the logs.
        dtype: the dtype of the metric's result.

    Example:
        >>> import numpy as np
        >>> metric = ForegroundIoU()
        >>> y_true, y_pred = np.array([0.0, 1.0, 1.0]), np.array([0.6, 0.7, 0.2])
        >>> _ = metric.update_state(y_true, y_pred)
        >>> round(float(metric.result()), 4)
        0.3333
    """

    def __init__(
        self, threshold: float = 0.5, name: str = "foreground_iou", dtype=None
    ):
        super().__init__(
            target_class_ids=[1], threshold=threshold, name=name, dtype=dtype
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("target_class_ids")
        return config


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
    return [make() for make in _PAPER_METRICS.values()]


def per_image_segmentation_metrics() -> list:
    """A fresh list of the follow-up's segmentation metrics, in its order.

    ``[BinaryAccuracy(), AUC(), Precision(), Recall(name="sensitivity"),
    MeanMetricWrapper(specificity), PerImageDice(name="dice_score"),
    ForegroundIoU(name="binary_io_u")]``, named as the follow-up's logs name
    them (``binary_accuracy``, ``auc``, ``precision``, ``sensitivity``,
    ``specificity``, ``dice_score``, ``binary_io_u``). Unlike
    :func:`segmentation_metrics`, the Dice is per image and the IoU is the
    foreground's; specificity is still the batch value, averaged over
    batches. The metric objects are new on every call.

    Returns:
        A list of 7 metrics for ``model.compile(metrics=...)``.

    Example:
        >>> [m.name for m in per_image_segmentation_metrics()][-2:]
        ['dice_score', 'binary_io_u']
    """
    return [make() for make in _PER_IMAGE_METRICS.values()]


def _shared_metrics() -> dict:
    """The metrics both sets compute alike, by their logged names."""
    return {
        "binary_accuracy": lambda: keras.metrics.BinaryAccuracy(name="binary_accuracy"),
        "auc": lambda: keras.metrics.AUC(name="auc"),
        "precision": lambda: keras.metrics.Precision(name="precision"),
        "sensitivity": lambda: keras.metrics.Recall(name="sensitivity"),
    }


#: Logged name -> factory, in each set's order: the one place the sets and
#: their names are written (:data:`SEGMENTATION_METRIC_NAMES` derive from it).
_PAPER_METRICS = {
    **_shared_metrics(),
    "specificity": lambda: specificity,
    "dice_coefficient": lambda: dice_coefficient,
    "binary_io_u": lambda: keras.metrics.BinaryIoU(name="binary_io_u"),
}
_PER_IMAGE_METRICS = {
    **_shared_metrics(),
    "specificity": lambda: keras.metrics.MeanMetricWrapper(
        specificity, name="specificity"
    ),
    "dice_score": lambda: PerImageDice(name="dice_score"),
    "binary_io_u": lambda: ForegroundIoU(name="binary_io_u"),
}

#: The names Keras logs for :func:`segmentation_metrics`, in its order.
SEGMENTATION_METRIC_NAMES = tuple(_PAPER_METRICS)
#: The names Keras logs for :func:`per_image_segmentation_metrics`, in its order.
PER_IMAGE_METRIC_NAMES = tuple(_PER_IMAGE_METRICS)

#: Former names: ``keras_ssr.metrics.<old>`` still works, with a
#: ``DeprecationWarning``.
_RENAMED = {
    "followup_segmentation_metrics": "per_image_segmentation_metrics",
    "FOLLOWUP_METRIC_NAMES": "PER_IMAGE_METRIC_NAMES",
}


def __getattr__(name: str):
    # PEP 562: the former names.
    if name not in _RENAMED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    warnings.warn(
        f"keras_ssr.metrics.{name} is deprecated: use {_RENAMED[name]} (the same).",
        DeprecationWarning,
        stacklevel=2,
    )
    return globals()[_RENAMED[name]]
