"""Segmentation losses of the SSR experiments, in ``keras.ops``.

The paper trains with ``0.5 * binary cross-entropy + 0.5 * soft Dice loss``.
Both losses here reproduce the original's numbers (TF 2.14) on TensorFlow,
PyTorch and JAX:

* the soft Dice loss is taken over the **whole batch** at once (one
  intersection and one pair of sums over every pixel of every sample), not
  per sample and then averaged;
* the cross-entropy is Keras' ``BinaryCrossentropy`` (probabilities, not
  logits), averaged over every pixel of the batch.

Both losses return one scalar per batch. Keras' per-sample ``reduction`` has
nothing left to reduce, so it is not an argument; a ``sample_weight`` given to
``fit`` or to ``__call__`` multiplies that scalar by the mean of the weights.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_ssr import _checks
from keras_ssr._checks import LOSS_NAMES
from keras_ssr._serialization import register

__all__ = [
    "BCEDiceLoss",
    "DiceLoss",
    "bce_dice_loss",
    "dice_loss",
    "get_loss",
]

DEFAULT_EPSILON = 1e-12


def check_positive_float(name: str, value) -> float:
    """Returns ``value`` as a finite, strictly positive ``float``."""
    return _checks.check_real(name, value, 0.0, open_minimum=True)


def check_alpha(value) -> float:
    """Returns the mixing weight ``alpha`` as a ``float`` in ``[0, 1]``."""
    return _checks.check_real("alpha", value, 0.0, 1.0)


def check_same_shape(y_true, y_pred) -> None:
    """Raises ``ValueError`` when the (known) shapes of the two tensors differ."""
    true_shape = tuple(y_true.shape)
    pred_shape = tuple(y_pred.shape)
    mismatch = len(true_shape) != len(pred_shape) or any(
        a is not None and b is not None and a != b
        for a, b in zip(true_shape, pred_shape)
    )
    if mismatch:
        raise ValueError(
            "`y_true` and `y_pred` must have the same shape. Received: "
            f"y_true.shape={true_shape}, y_pred.shape={pred_shape}"
        )


def as_float_pair(y_true, y_pred):
    """Both tensors in ``y_pred``'s float dtype, at least float32.

    Half-precision predictions (mixed precision) are promoted: the batch-wide
    sums of a segmentation batch overflow float16 (max 65504).
    """
    y_pred = ops.convert_to_tensor(y_pred)
    dtype = keras.backend.standardize_dtype(y_pred.dtype)
    if not keras.backend.is_float_dtype(dtype):
        y_pred = ops.cast(y_pred, keras.config.floatx())
    elif dtype in ("float16", "bfloat16"):
        y_pred = ops.cast(y_pred, "float32")
    y_true = ops.cast(ops.convert_to_tensor(y_true), y_pred.dtype)
    check_same_shape(y_true, y_pred)
    return y_true, y_pred


def dice_loss(y_true, y_pred, epsilon: float = DEFAULT_EPSILON):
    """Soft Dice loss over the whole batch.

    ``1 - (2 * sum(y_true * y_pred) + epsilon) /
    (sum(y_true) + sum(y_pred) + epsilon)``, every sum running over all
    elements of the batch (as the original's ``dice_loss``).

    Args:
        y_true: ground-truth masks, values in ``[0, 1]``, any shape.
        y_pred: predicted probabilities, the same shape as ``y_true``.
        epsilon: smoothing term, ``> 0``; it makes an empty prediction of an
            empty mask score a loss of 0 instead of NaN.

    Returns:
        A scalar tensor in ``[0, 1]`` for inputs in ``[0, 1]``.

    Raises:
        ValueError: if the shapes differ, or ``epsilon`` is not ``> 0``.
        TypeError: if ``epsilon`` is not a number.

    Example:
        >>> import numpy as np
        >>> y = np.array([[1.0, 0.0], [1.0, 1.0]])
        >>> round(float(dice_loss(y, y)), 6)
        0.0
    """
    epsilon = check_positive_float("epsilon", epsilon)
    y_true, y_pred = as_float_pair(y_true, y_pred)
    intersection = ops.sum(y_true * y_pred)
    total = ops.sum(y_true) + ops.sum(y_pred)
    return 1.0 - (2.0 * intersection + epsilon) / (total + epsilon)


def bce_dice_loss(y_true, y_pred, alpha: float = 0.5, epsilon: float = DEFAULT_EPSILON):
    """``alpha * BCE + (1 - alpha) * soft Dice loss``, over the whole batch.

    The cross-entropy is Keras' binary cross-entropy of probabilities
    (``from_logits=False``, predictions clipped to
    ``[keras.config.epsilon(), 1 - keras.config.epsilon()]``) averaged over
    every element; the Dice loss is :func:`dice_loss`. ``alpha=0.5`` is the
    original's ``"weighted"`` loss.

    Args:
        y_true: ground-truth masks, values in ``[0, 1]``.
        y_pred: predicted probabilities, the same shape as ``y_true``.
        alpha: weight of the cross-entropy, in ``[0, 1]``.
        epsilon: the Dice loss' smoothing term, ``> 0``.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: if the shapes differ, ``alpha`` is outside ``[0, 1]`` or
            ``epsilon`` is not ``> 0``.
        TypeError: if ``alpha`` or ``epsilon`` is not a number.

    Example:
        >>> import numpy as np
        >>> y = np.array([[1.0, 0.0]])
        >>> float(bce_dice_loss(y, y, alpha=0.0)) == float(dice_loss(y, y))
        True
    """
    alpha = check_alpha(alpha)
    epsilon = check_positive_float("epsilon", epsilon)
    y_true, y_pred = as_float_pair(y_true, y_pred)
    bce = ops.mean(keras.losses.binary_crossentropy(y_true, y_pred))
    return alpha * bce + (1.0 - alpha) * dice_loss(y_true, y_pred, epsilon)


class _BatchLoss(keras.losses.Loss):
    """A loss whose ``call`` already returns the batch's scalar value."""

    def __init__(self, name: str, dtype=None):
        super().__init__(name=name, reduction="sum_over_batch_size", dtype=dtype)
        self._config_dtype = dtype

    def get_config(self) -> dict:
        config = {"name": self.name}
        if self._config_dtype is not None:
            config["dtype"] = keras.saving.serialize_keras_object(self._config_dtype)
        return config


@register
class DiceLoss(_BatchLoss):
    """Soft Dice loss over the whole batch (the original's ``dice_loss()``).

    ``1 - (2 * sum(y_true * y_pred) + epsilon) /
    (sum(y_true) + sum(y_pred) + epsilon)`` with sums over every element of
    the batch; see :func:`dice_loss`. The value is one scalar per batch, not a
    mean of per-sample Dice losses.

    Args:
        epsilon: smoothing term, ``> 0`` (default ``1e-12`` as the original).
        name: the loss' name.
        dtype: dtype of the computation; ``None`` is ``keras.config.floatx()``.

    Raises:
        ValueError: if ``epsilon`` is not ``> 0``; when called, if the shapes
            of ``y_true`` and ``y_pred`` differ.
        TypeError: if ``epsilon`` is not a number.

    Example:
        >>> model.compile(optimizer="adam", loss=DiceLoss())  # doctest: +SKIP
    """

    def __init__(
        self,
        epsilon: float = DEFAULT_EPSILON,
        name: str = "dice_loss",
        dtype=None,
    ):
        self.epsilon = check_positive_float("epsilon", epsilon)
        super().__init__(name=name, dtype=dtype)

    def call(self, y_true, y_pred):
        return dice_loss(y_true, y_pred, self.epsilon)

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon}


@register
class BCEDiceLoss(_BatchLoss):
    """``alpha * BCE + (1 - alpha) * soft Dice loss`` over the whole batch.

    With ``alpha=0.5`` this is the loss the paper trains with (the original's
    ``"weighted"`` loss). See :func:`bce_dice_loss`.

    Args:
        alpha: weight of the binary cross-entropy, in ``[0, 1]``.
        epsilon: smoothing term of the Dice part, ``> 0``.
        name: the loss' name.
        dtype: dtype of the computation; ``None`` is ``keras.config.floatx()``.

    Raises:
        ValueError: if ``alpha`` is outside ``[0, 1]`` or ``epsilon`` is not
            ``> 0``; when called, if the shapes of ``y_true`` and ``y_pred``
            differ.
        TypeError: if ``alpha`` or ``epsilon`` is not a number.

    Example:
        >>> model.compile(optimizer="adam", loss=BCEDiceLoss(0.5))  # doctest: +SKIP
    """

    def __init__(
        self,
        alpha: float = 0.5,
        epsilon: float = DEFAULT_EPSILON,
        name: str = "bce_dice_loss",
        dtype=None,
    ):
        self.alpha = check_alpha(alpha)
        self.epsilon = check_positive_float("epsilon", epsilon)
        super().__init__(name=name, dtype=dtype)

    def call(self, y_true, y_pred):
        return bce_dice_loss(y_true, y_pred, self.alpha, self.epsilon)

    def get_config(self) -> dict:
        return {**super().get_config(), "alpha": self.alpha, "epsilon": self.epsilon}


def get_loss(name: str, alpha: float = 0.5) -> keras.losses.Loss:
    """The original configuration's losses by name.

    Args:
        name: ``"ce"`` (``keras.losses.BinaryCrossentropy()``), ``"dice"``
            (:class:`DiceLoss`) or ``"weighted"`` (:class:`BCEDiceLoss`).
        alpha: the cross-entropy weight of ``"weighted"``.

    Returns:
        A new ``keras.losses.Loss``.

    Raises:
        ValueError: for another name, or a bad ``alpha``.

    Example:
        >>> type(get_loss("weighted")).__name__
        'BCEDiceLoss'
    """
    if not isinstance(name, str) or name.lower() not in LOSS_NAMES:
        raise ValueError(
            f"`name` must be one of {', '.join(repr(n) for n in LOSS_NAMES)}. "
            f"Received: name={name!r}"
        )
    name = name.lower()
    if name == "ce":
        return keras.losses.BinaryCrossentropy()
    if name == "dice":
        return DiceLoss()
    return BCEDiceLoss(alpha=alpha)
