"""Building, training and scoring one demo model."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from keras_ssr.demo.config import DEMO_BN_MOMENTUM, DemoConfig, model_label
from keras_ssr.demo.scores import dice_and_iou

__all__ = ["UnbuildableModelError", "build_model", "check_models", "train_and_score"]


class UnbuildableModelError(ValueError):
    """A model of ``--models`` cannot be built with the demo's settings."""


def build_model(name: str, config: DemoConfig, input_shape):
    """The demo's U-Net with attention ``name`` (``"none"``: none).

    The attention gets every option of ``config.attention_kwargs(name)``
    (those set in ``config.attention_options``, the registry's defaults for
    the others). Every BatchNormalization, the U-Net blocks'
    (``bn_momentum``) and the attention layers' own, gets the demo's
    momentum (:data:`~keras_ssr.demo.config.DEMO_BN_MOMENTUM`). With
    ``config.encoder``, the encoder U-Net on it (its own BatchNormalization
    layers included).
    """
    import keras

    from keras_ssr import models

    factory = models.get_attention(name)
    widths, encoder = list(config.channels_per_level), {}
    if config.encoder is not None:
        widths = config.decoder_channels
        encoder = {
            "encoder": config.encoder,
            "encoder_weights": config.encoder_weights,
            "encoder_kwargs": config.encoder_kwargs(),
        }
    model = models.build_unet(
        widths,
        input_shape=list(input_shape),
        attention=None if factory is None else name,
        attention_kwargs=config.attention_kwargs(name) or None,
        data_format="channels_last",
        name="unet" if factory is None else f"{name}_unet",
        bn_momentum=DEMO_BN_MOMENTUM,
        **encoder,
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = DEMO_BN_MOMENTUM
        for norm in _inner_batch_norms(layer):
            norm.momentum = DEMO_BN_MOMENTUM
    return model


def _inner_batch_norms(layer) -> list:
    """The BatchNormalization layers held in ``layer``'s attributes, at any depth.

    The attention layers normalise their maps and gates with their own
    BatchNormalization (``alpha.bn``, ``histogram.bn``, ...), which the
    builder's ``bn_momentum`` does not reach; they are found through the
    layers' public attributes.
    """
    import keras

    found, seen, pending = [], set(), [layer]
    while pending:
        current = pending.pop()
        for value in vars(current).values():
            values = value if isinstance(value, (list, tuple)) else [value]
            for item in values:
                if isinstance(item, keras.layers.Layer) and id(item) not in seen:
                    seen.add(id(item))
                    if isinstance(item, keras.layers.BatchNormalization):
                        found.append(item)
                    pending.append(item)
    return found


def check_models(config: DemoConfig, input_shape) -> None:
    """Builds every model of ``config.models`` once, before any training.

    Raises:
        UnbuildableModelError: a ``ValueError`` naming the model, if one
            cannot be built on this data (e.g. FCA, whose channels must be
            divisible by 16).
    """
    import keras

    for name in config.models:
        try:
            build_model(name, config, input_shape)
        except (ValueError, TypeError) as error:
            raise UnbuildableModelError(
                f"The {model_label(name)} (--models {name}) cannot be built with "
                f"{config.architecture} on {tuple(input_shape)} images: {error}"
            ) from error
    keras.backend.clear_session()


def _held_out_callback(x_test, y_test, batch_size, history: list):
    import keras

    class HeldOutDice(keras.callbacks.Callback):
        """Adds the held-out Dice to the epoch's logs (shown by ``fit``)."""

        def on_epoch_end(self, epoch, logs=None):
            probabilities = self.model.predict(x_test, batch_size=batch_size, verbose=0)
            dice, _ = dice_and_iou(y_test, probabilities)
            history.append(float(dice.mean()))
            if logs is not None:
                logs["held_out_dice"] = float(dice.mean())

    return HeldOutDice()


def train_and_score(
    name: str, config: DemoConfig, data, verbose, log, run_eagerly=False
) -> tuple[dict[str, Any], Any, np.ndarray]:
    """Trains one model from ``config.seed``; returns its row, model, predictions."""
    import keras

    from keras_ssr.losses import BCEDiceLoss

    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(config.seed)
    model = build_model(name, config, x_train.shape[1:])
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=BCEDiceLoss(alpha=0.5),
        run_eagerly=run_eagerly,
    )
    label = model_label(name)
    log(f"\nTraining {label} ({model.count_params():,} parameters)")
    history: list[float] = []
    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        batch_size=config.batch_size,
        epochs=config.epochs,
        shuffle=True,
        verbose=verbose,
        callbacks=[_held_out_callback(x_test, y_test, config.batch_size, history)],
    )
    seconds = time.perf_counter() - start
    probabilities = model.predict(x_test, batch_size=config.batch_size, verbose=0)
    dice, iou = dice_and_iou(y_test, probabilities)
    pooled_dice, pooled_iou = dice_and_iou(
        y_test.reshape(1, -1), probabilities.reshape(1, -1)
    )
    row = {
        "model": label,
        "attention": name,
        "attention_options": config.attention_kwargs(name),
        "params": int(model.count_params()),
        "train_seconds": round(seconds, 2),
        "dice_mean": float(dice.mean()),
        "dice_std": float(dice.std()),
        "iou_mean": float(iou.mean()),
        "iou_std": float(iou.std()),
        "dice_pooled": float(pooled_dice[0]),
        "iou_pooled": float(pooled_iou[0]),
        "held_out_dice_per_epoch": [round(v, 4) for v in history],
    }
    return row, model, probabilities
