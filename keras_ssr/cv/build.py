"""What a fold is made of: the data, the model, its compilation, the callbacks."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_ssr import _checks, metrics
from keras_ssr.cv.config import CVConfig
from keras_ssr.cv.files import atomic_path
from keras_ssr.cv.splits import fold_splits

__all__ = [
    "METRIC_NAMES",
    "BestCheckpoint",
    "build_model",
    "compile_model",
    "fold_callbacks",
    "load_data",
]

#: Held-out scores of the paper's metric set, in the order of the summary's
#: columns (the follow-up's set has ``dice_score``, after these, for
#: ``dice_coefficient``).
METRIC_NAMES = ("loss", *metrics.SEGMENTATION_METRIC_NAMES)
#: Each metric set's Dice (``config.metrics``): the score progress lines show.
DICE_METRICS = {"batch": "dice_coefficient", "per_image": "dice_score"}
WEIGHTS_FILE = "best.weights.h5"
LOG_FILE = "log.csv"


def load_data(config: CVConfig, return_labels: bool = False):
    """Loads the configured dataset as ``float32`` arrays ``(x, y)``.

    Uses :mod:`keras_ssr.data` (``load_kvasir_seg``, ``load_isic2018``,
    ``load_image_mask_folders``, ``load_busi``), keeps the first
    ``max_samples``.

    Args:
        config: the configuration.
        return_labels: also return the class labels that stratify the folds
            (BUSI's benign 0 / malignant 1; ``None`` for the other datasets).

    Returns:
        ``(x, y)`` (or ``(x, y, labels)``) in ``config.data_format``.

    Raises:
        FileNotFoundError, ValueError, ImportError: as the loaders; also
            ``ValueError`` if the ISIC arrays' size differs from
            ``target_size``.
    """
    from keras_ssr import data

    labels = None
    size = config.target_size
    options = dict(data_format=config.data_format, binarize_masks=config.binarize_masks)
    if config.dataset == "busi":
        x, y, labels = data.load_busi(config.busi_root, size, **options)
    elif config.dataset == "kvasir":
        x, y = data.load_kvasir_seg(config.data_root, size, **options)
    elif config.dataset == "folder":
        x, y = data.load_image_mask_folders(
            config.images_dir, config.masks_dir, size, **options
        )
    else:
        x, y = data.load_isic2018(
            config.x_path,
            config.y_path,
            data_format=config.data_format,
            scale=config.isic_scale,
        )
        size = [x.shape[a] for a in _checks.spatial_axes(config.data_format, 4)]
        if tuple(size) != config.target_size:
            raise ValueError(
                f"The ISIC arrays are {size[0]}x{size[1]} but target_size="
                f"{list(config.target_size)}; the arrays are not resized: set "
                f"target_size = [{size[0]}, {size[1]}]. Received: "
                f"x_path='{config.x_path}'"
            )
    if config.max_samples is not None:
        if len(x) < config.max_samples:
            raise ValueError(
                f"The dataset has {len(x)} samples, fewer than max_samples. "
                f"Received: max_samples={config.max_samples}"
            )
        x, y = x[: config.max_samples], y[: config.max_samples]
        labels = None if labels is None else labels[: config.max_samples]
    return (x, y, labels) if return_labels else (x, y)


def splits(config: CVConfig, n: int, labels=None) -> list[dict[str, np.ndarray]]:
    """Every fold's ``{"fit", "val", "test"}`` indices for ``n`` samples.

    The paper's contiguous folds and validation tails
    (:func:`~keras_ssr.cv.fold_splits`), or for BUSI the follow-up's
    stratified ones (:func:`keras_ssr.data.busi_splits` with
    ``dev_size=val_fraction`` and ``random_state=42``; needs scikit-learn).
    """
    if config.dataset == "busi":
        from keras_ssr.cv.config import BUSI_RANDOM_STATE
        from keras_ssr.data import busi_splits

        return busi_splits(
            labels,
            config.folds,
            dev_size=config.val_fraction,
            random_state=BUSI_RANDOM_STATE,
        )
    return fold_splits(n, config.folds, config.val_fraction)


def fingerprint(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Sizes and a BLAKE2b digest of the data, recorded in ``run.json``."""
    digest = hashlib.blake2b(digest_size=16)
    for array in (x, y):
        digest.update(np.ascontiguousarray(array).data)
    return {
        "n_samples": int(len(x)),
        "x_shape": list(x.shape),
        "y_shape": list(y.shape),
        "blake2b": digest.hexdigest(),
    }


def build_model(
    config: CVConfig, input_shape: Sequence[int], synchronized: bool = False
):
    """The configured U-Net (uncompiled), via :func:`keras_ssr.models.build_unet`.

    ``"unet"`` has no attention, ``"ssr_unet"`` SSR; the attention layer
    gets every option of :attr:`CVConfig.attention_kwargs` (those set in
    ``attention_options``, the registered defaults for the others). With an
    ``encoder``, the encoder U-Net: the encoder with every option of
    ``effective_options("encoder_options")`` and ``encoder_weights``, the
    attention after its skip features and output, ``decoder_channels`` and
    the ``decoder_attention``.

    Args:
        config: the configuration.
        input_shape: one sample's shape, e.g. ``(224, 224, 3)``.
        synchronized: batch statistics over the global batch of a
            data-parallel step (``--distribute``): ``synchronized_bn=True``
            (the attention layers' own statistics follow their
            ``synchronized`` option, global by default).

    Returns:
        A ``keras.Model`` with one sigmoid output channel.

    Example:
        >>> config = CVConfig(dataset="folder", images_dir="i", masks_dir="m",
        ...                   channels_per_level=(4, 8), target_size=(32, 32),
        ...                   model="multifractal", attention_options={"k": 8})
        >>> build_model(config, (32, 32, 3)).get_layer("encoder_0_attention").k
        8
    """
    from keras_ssr import models

    encoder = {}
    if config.encoder is not None:
        encoder = {
            "encoder": config.encoder,
            "encoder_weights": config.encoder_weights,
            "encoder_kwargs": config.effective_options("encoder_options"),
            "decoder_attention": config.decoder_attention,
            "decoder_attention_kwargs": config.effective_options(
                "decoder_attention_options"
            ),
        }
    return models.build_unet(
        config.decoder_channels if config.encoder else config.channels_per_level,
        input_shape=tuple(input_shape),
        n_classes=2,
        with_bn=config.with_bn,
        # The U-Net's blocks have a BN to synchronise only with `with_bn`.
        synchronized_bn=bool(synchronized) and config.with_bn,
        attention=config.attention,
        attention_kwargs=config.attention_kwargs or None,
        data_format=config.data_format,
        name=config.model,
        **encoder,
    )


def compile_model(config: CVConfig, model, run_eagerly: bool = False) -> None:
    """Compiles ``model`` with the configured optimiser, loss and metric set."""
    from keras_ssr.losses import get_loss

    metric_sets = {
        "batch": metrics.segmentation_metrics,
        "per_image": metrics.per_image_segmentation_metrics,
    }
    optimizers = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}
    model.compile(
        optimizer=optimizers[config.optimizer](learning_rate=config.learning_rate),
        loss=get_loss(config.loss, alpha=config.loss_alpha),
        metrics=metric_sets[config.metrics](),
        run_eagerly=run_eagerly,
    )


def _finite(value) -> bool:
    return value is not None and math.isfinite(float(value))


class BestCheckpoint(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the lowest *finite* ``monitor``.

    Unlike ``keras.callbacks.ModelCheckpoint`` (which starts from
    ``best=None``, so a NaN first epoch is saved and then never beaten), an
    epoch whose ``monitor`` is NaN or infinite is never saved and never
    compared. Epochs whose ``loss`` or ``monitor`` is not finite are recorded
    in :attr:`nonfinite`. The file is written under a temporary name and
    renamed into place, so it always holds one whole epoch's weights, the
    one :attr:`best_epoch` names.

    Args:
        filepath: where the weights go (must end with ``.weights.h5``).
        monitor: the quantity to minimise (default ``"val_loss"``).

    Attributes:
        best: the lowest finite value seen (``inf`` before any).
        best_epoch: its epoch, 1-based; ``None`` while no epoch was finite
            (and then no file is written).
        nonfinite: ``[{"epoch", "loss", monitor}, ...]`` for every epoch with
            a non-finite ``loss`` or ``monitor``, values as text (``"nan"``);
            ``{"epoch", "error"}`` for an epoch a backend op ended by raising
            on non-finite values (see :meth:`fail`).
        completed: the number of epochs that ended.
    """

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_loss"):
        super().__init__()
        self.filepath = Path(filepath)
        self.monitor = monitor
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf
        self.best_epoch = None
        self.epoch = 0
        self.completed = 0
        self.nonfinite = []

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def fail(self, error: BaseException) -> None:
        """Records that the current epoch ended in ``error`` (non-finite model)."""
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        self.nonfinite.append(
            {"epoch": self.epoch, "error": f"{type(error).__name__}: {message}"}
        )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise KeyError(
                f"BestCheckpoint monitors {self.monitor!r}, which the epoch's logs "
                f"lack (they hold {sorted(logs)}); fit needs validation_data."
            )
        self.completed = epoch + 1
        values = {k: logs.get(k) for k in ("loss", self.monitor)}
        if not all(_finite(v) for v in values.values() if v is not None):
            shown = {k: str(float(v)) for k, v in values.items() if v is not None}
            self.nonfinite.append({"epoch": epoch + 1, **shown})
        value = values[self.monitor]
        if _finite(value) and float(value) < self.best:
            atomic_path(
                self.filepath, lambda path: self.model.save_weights(os.fspath(path))
            )
            self.best, self.best_epoch = float(value), epoch + 1


def training_data(config: CVConfig, x, y, seed: int) -> dict[str, Any]:
    """``model.fit``'s data arguments for the fitted samples ``x``, ``y``.

    The arrays themselves (``batch_size``, ``shuffle``), or with
    ``augment="flips"`` a :class:`~keras_ssr.cv.augment.FlipDataset` seeded
    with ``seed``, which orders its batches itself (``shuffle=False`` for
    ``fit``, which would otherwise reorder them).
    """
    if config.augment == "flips":
        from keras_ssr.cv.augment import FlipDataset

        dataset = FlipDataset(
            x,
            y,
            config.batch_size,
            seed=seed,
            data_format=config.data_format,
            shuffle=config.shuffle,
        )
        # The dataset orders its batches itself; Keras' fit would shuffle
        # their order too (its default shuffle=True reorders a PyDataset).
        return {"x": dataset, "shuffle": False}
    return {"x": x, "y": y, "batch_size": config.batch_size, "shuffle": config.shuffle}


def fold_callbacks(config: CVConfig, fold_dir: str | os.PathLike) -> list:
    """The callbacks of one fold, in order.

    * ``ReduceLROnPlateau(monitor="loss", factor=plateau_factor,
      patience=plateau_patience, min_lr=config.min_lr)``: the original's
      schedule, whose ``min_lr`` is the initial rate unless
      ``plateau_min_lr`` is set (so by default the rate never drops). It
      comes first so that the log has the ``learning_rate`` column.
    * :class:`BestCheckpoint` ``(fold_dir / "best.weights.h5",
      monitor="val_loss")``: the best *finite* epoch's weights.
    * ``CSVLogger(fold_dir / "log.csv")``, comma-separated and not appended
      (the original used ``separator=";"`` and ``append=True``; here an
      interrupted fold restarts with a fresh log instead).
    * with ``stop_on_nan``, ``TerminateOnNaN()`` last: it ends the fold at the
      first NaN batch loss (the epoch is still logged and checked).

    Args:
        config: the configuration.
        fold_dir: the fold's folder.

    Returns:
        A list of ``keras.callbacks.Callback``.
    """
    fold_dir = Path(fold_dir)
    callbacks = [
        keras.callbacks.ReduceLROnPlateau(
            monitor="loss",
            factor=config.plateau_factor,
            patience=config.plateau_patience,
            min_lr=config.min_lr,
        ),
        BestCheckpoint(fold_dir / WEIGHTS_FILE, monitor="val_loss"),
        keras.callbacks.CSVLogger(os.fspath(fold_dir / LOG_FILE), separator=","),
    ]
    if config.stop_on_nan:
        callbacks.append(keras.callbacks.TerminateOnNaN())
    return callbacks
