"""K-fold cross-validation with the paper's protocol (``keras-ssr cv``).

The original experiments (ISIC 2018 and Kvasir-SEG, U-Net vs SSR-U-Net)
follow one protocol, which :func:`run_cv` reproduces on every Keras backend:

* ``K``-fold split **without shuffling**, in file-name order: fold ``k``
  tests on the ``k``-th contiguous chunk of the samples (the first
  ``n % K`` chunks hold one sample more, as scikit-learn's ``KFold``);
* the **last** ``int(len(training fold) * 0.1)`` samples of each training
  fold are held out for validation (model selection), the rest is fitted;
* Adam (learning rate ``1e-4``), batch 16, 100 epochs, loss
  ``0.5 * BCE + 0.5 * soft Dice``, levels ``[32, 64, 128, 256]``, no
  BatchNormalization in the U-Net (``with_bn=False``), 224x224 inputs;
* callbacks: the weights with the best ``val_loss`` are checkpointed,
  every epoch is logged to CSV, and ``ReduceLROnPlateau(monitor="loss",
  factor=0.5, patience=10, min_lr=<the initial rate>)``: with ``min_lr``
  equal to the initial rate it never lowers the rate. That is the
  original's setting and the default here; ``plateau_min_lr`` changes it;
* the best weights are reloaded and the held-out fold is scored with
  :func:`keras_ssr.metrics.segmentation_metrics` and the loss
  (``model.evaluate``, so batch-averaged as in the original).

Everything of a run goes to ``<output_dir>/<name>/``::

    config.json             the resolved configuration (CVConfig fields)
    run.json                versions, backend and a fingerprint of the data
    fold_<k>/best.weights.h5  the best weights (lowest val_loss)
    fold_<k>/log.csv        the epoch log (comma-separated)
    fold_<k>/metrics.json   held-out scores; its presence marks the fold done
    summary.csv             one row per finished fold, then mean and std
    summary.json            the same, plus the table printed at the end

Rerunning into the same folder resumes: finished folds are skipped, an
interrupted fold restarts from scratch, and the summary is recomputed. A
folder whose saved configuration (or data) differs is refused, naming the
fields, unless ``overwrite=True`` (``--overwrite``).

Example:
    >>> config = CVConfig(dataset="kvasir", data_root="/data/Kvasir-SEG",
    ...                   model="ssr_unet")  # doctest: +SKIP
    >>> result = run_cv(config)  # doctest: +SKIP
    >>> dice = result.metric("dice_coefficient")  # doctest: +SKIP
    >>> print(result.table)  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import inspect
import json
import math
import numbers
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_ssr import _checks
from keras_ssr.ops import MAX_SCALE_LIMIT

__all__ = [
    "DATASETS",
    "METRIC_NAMES",
    "CVConfig",
    "CVResult",
    "ConfigMismatchError",
    "add_arguments",
    "build_model",
    "config_from_args",
    "config_to_toml",
    "fold_callbacks",
    "format_table",
    "kfold_indices",
    "load_config_file",
    "load_data",
    "load_result",
    "model_names",
    "run_cv",
    "run_from_args",
    "summarize",
    "validation_split",
]

#: Dataset kinds and the configuration fields (paths) each one needs.
DATASETS = {
    "kvasir": ("data_root",),
    "isic": ("x_path", "y_path"),
    "folder": ("images_dir", "masks_dir"),
}
LOSSES = ("weighted", "ce", "dice")
OPTIMIZERS = ("adam", "sgd")
ISIC_SCALES = ("unit", "none")
#: Model names besides the attention names of :func:`keras_ssr.models.build_unet`.
MODEL_ALIASES = {"ssr_unet": "ssr", "unet": None}
#: Held-out scores, in the order of the summary's columns.
METRIC_NAMES = (
    "loss",
    "binary_accuracy",
    "auc",
    "precision",
    "sensitivity",
    "specificity",
    "dice_coefficient",
    "binary_io_u",
)
#: Short column titles of the printed table.
SHORT_NAMES = {
    "loss": "loss",
    "binary_accuracy": "acc",
    "auc": "AUC",
    "precision": "prec",
    "sensitivity": "sens",
    "specificity": "spec",
    "dice_coefficient": "Dice",
    "binary_io_u": "IoU",
}
#: Optional grouping tables of a config file; their keys are merged.
SECTIONS = ("data", "model", "training", "callbacks", "output")
#: Fields that say where a run goes, not what it computes: ignored when a
#: saved configuration is compared with the current one.
LOCATION_FIELDS = ("output_dir", "name")

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"
WEIGHTS_FILE = "best.weights.h5"
LOG_FILE = "log.csv"
METRICS_FILE = "metrics.json"
_FOLD_DIR = re.compile(r"fold_\d+")


class ConfigMismatchError(ValueError):
    """An output folder holds a run whose configuration or data differ."""


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


def model_names() -> list[str]:
    """The accepted ``model`` names: ``"ssr_unet"``, ``"unet"`` and the
    attention names registered with :func:`keras_ssr.models.register_attention`
    (``"none"``, ``"se"``, ``"ssr"``, ``"ssr_xu"``, ...)."""
    from keras_ssr import models

    return [
        *MODEL_ALIASES,
        *(n for n in models.attention_names() if n not in MODEL_ALIASES),
    ]


def _fail(name: str, requirement: str, value) -> ValueError:
    return ValueError(f"`{name}` must be {requirement}. Received: {name}={value!r}")


def _real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a number. Received: {name}={value!r} "
            f"(of type {type(value).__name__})"
        )
    value = float(value)
    if not math.isfinite(value):
        raise _fail(name, "a finite number", value)
    return value


def _boolean(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be true or false. Received: {name}={value!r} "
            f"(of type {type(value).__name__})"
        )
    return value


def _int_tuple(name: str, value, length: int | None, minimum_length: int = 1):
    valid = (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and (len(value) == length if length else len(value) >= minimum_length)
        and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
            for v in value
        )
    )
    if not valid:
        what = f"{length}" if length else f"at least {minimum_length}"
        raise _fail(name, f"a list of {what} positive integers", value)
    return tuple(int(v) for v in value)


def _path(name: str, value) -> str | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise _fail(name, "a non-empty path", value)
    return value


@dataclasses.dataclass(frozen=True)
class CVConfig:
    """Everything that defines a cross-validation run.

    The defaults are the paper's protocol (the original's
    ``ten_fold_config.yaml`` and experiment scripts), so a config needs
    the dataset and its paths only. Every field is checked on construction;
    ``dataclasses.replace(config, epochs=5)`` makes a checked copy.

    Attributes:
        dataset: ``"kvasir"`` (``data_root`` holding ``images/`` and
            ``masks/``), ``"isic"`` (the prepared ``x_path`` and ``y_path``
            ``.npy`` arrays) or ``"folder"`` (``images_dir`` and
            ``masks_dir``, paired by file stem).
        data_root: the Kvasir-SEG folder.
        x_path: the ISIC images' ``.npy`` file (``X_tr_224x224.npy``).
        y_path: the ISIC masks' ``.npy`` file (``Y_tr_224x224.npy``).
        images_dir: the images of ``"folder"``.
        masks_dir: the masks of ``"folder"``.
        target_size: ``(height, width)`` the images are resized to
            (``"kvasir"``, ``"folder"``); the ISIC arrays are used as stored
            and must have this size.
        binarize_masks: threshold the masks at 0.5 (``"kvasir"``,
            ``"folder"``; see :func:`keras_ssr.data.load_image_mask_folders`).
        isic_scale: ``"unit"`` (images to ``[0, 1]``, masks to ``{0, 1}``)
            or ``"none"`` (raw values, as the original ISIC script); see
            :func:`keras_ssr.data.load_isic2018`.
        max_samples: use only the first ``max_samples`` samples (file-name
            order); ``None`` uses all. For quick trials.
        model: ``"ssr_unet"`` (SSR after every encoder block), ``"unet"``,
            or any attention name of :func:`keras_ssr.models.build_unet`
            (``"se"``, ``"ssr"``, ``"ssr_xu"``, ``"none"``, ...).
        levels: filters per U-Net level, the last the bottleneck's.
        with_bn: BatchNormalization after every U-Net convolution (the
            original's experiments: ``False``).
        r: reduction ratio of the attention's excitation MLP.
        max_scale: dyadic scales of the SSR (attentions that take it).
        data_format: ``"channels_last"`` or ``"channels_first"``.
        folds: number of folds ``K``, at least 2.
        val_fraction: the tail of each training fold held out for
            validation: ``int(len(training fold) * val_fraction)`` samples,
            in ``(0, 1)``.
        epochs: training epochs per fold.
        batch_size: batch size of training and evaluation.
        learning_rate: the optimiser's (initial) learning rate.
        optimizer: ``"adam"`` or ``"sgd"``.
        loss: ``"weighted"`` (``loss_alpha * BCE + (1 - loss_alpha) *
            Dice``), ``"ce"`` or ``"dice"``.
        loss_alpha: the cross-entropy weight of ``"weighted"``.
        shuffle: shuffle the fitted samples every epoch (Keras' ``fit``
            default, as the original Kvasir script; its ISIC script fed an
            unshuffled ``tf.data`` pipeline).
        seed: fold ``k`` seeds Keras, NumPy and Python (weights, shuffling)
            with ``seed + k`` (``keras.utils.set_random_seed``), so a fold
            gives the same result whether it runs first or after a resume
            (up to the backend's nondeterminism).
        plateau_factor: ``ReduceLROnPlateau`` factor.
        plateau_patience: ``ReduceLROnPlateau`` patience (epochs).
        plateau_min_lr: ``ReduceLROnPlateau`` lower bound; ``None`` is the
            initial learning rate, the original's setting, with which the
            rate never changes.
        output_dir: the folder of all runs.
        name: the run's folder inside ``output_dir``; ``None`` is
            ``"<model>-<dataset>"``.
    """

    dataset: str = "kvasir"
    data_root: str | None = None
    x_path: str | None = None
    y_path: str | None = None
    images_dir: str | None = None
    masks_dir: str | None = None
    target_size: tuple[int, int] = (224, 224)
    binarize_masks: bool = True
    isic_scale: str = "unit"
    max_samples: int | None = None
    model: str = "ssr_unet"
    levels: tuple[int, ...] = (32, 64, 128, 256)
    with_bn: bool = False
    r: int = 2
    max_scale: int = 3
    data_format: str = "channels_last"
    folds: int = 10
    val_fraction: float = 0.1
    epochs: int = 100
    batch_size: int = 16
    learning_rate: float = 1e-4
    optimizer: str = "adam"
    loss: str = "weighted"
    loss_alpha: float = 0.5
    shuffle: bool = True
    seed: int = 0
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    plateau_min_lr: float | None = None
    output_dir: str = "runs"
    name: str | None = None

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        put("dataset", _checks.check_choice("dataset", self.dataset, tuple(DATASETS)))
        for kind, fields in DATASETS.items():
            for field in fields:
                value = _path(field, getattr(self, field))
                put(field, value)
                if kind == self.dataset and value is None:
                    raise ValueError(
                        f"dataset={self.dataset!r} needs `{field}` "
                        f"({', '.join(f'`{f}`' for f in fields)}). "
                        f"Received: {field}=None"
                    )
                if kind != self.dataset and value is not None:
                    raise ValueError(
                        f"`{field}` belongs to dataset={kind!r}, but "
                        f"dataset={self.dataset!r}. Received: {field}={value!r}"
                    )
        put("target_size", _int_tuple("target_size", self.target_size, 2))
        put("binarize_masks", _boolean("binarize_masks", self.binarize_masks))
        put(
            "isic_scale",
            _checks.check_choice("isic_scale", self.isic_scale, ISIC_SCALES),
        )
        put("folds", _checks.check_int("folds", self.folds, 2))
        if self.max_samples is not None:
            put(
                "max_samples",
                _checks.check_int("max_samples", self.max_samples, self.folds),
            )

        names = model_names()
        if not isinstance(self.model, str) or self.model.lower() not in names:
            raise ValueError(
                f"`model` must be one of {', '.join(map(repr, names))}. "
                f"Received: model={self.model!r}"
            )
        put("model", self.model.lower())
        put("levels", _int_tuple("levels", self.levels, None, 2))
        put("with_bn", _boolean("with_bn", self.with_bn))
        put("r", _checks.check_int("r", self.r, 1))
        put(
            "max_scale",
            _checks.check_int("max_scale", self.max_scale, 2, MAX_SCALE_LIMIT),
        )
        put(
            "data_format",
            _checks.check_choice("data_format", self.data_format, _checks.DATA_FORMATS),
        )
        if self.dataset != "isic":
            factor = 2 ** (len(self.levels) - 1)
            if any(side % factor for side in self.target_size):
                raise ValueError(
                    f"`target_size` must be divisible by 2**(levels - 1) = {factor} "
                    f"for {len(self.levels)} levels. Received: "
                    f"target_size={self.target_size!r}, levels={self.levels!r}"
                )

        fraction = _real("val_fraction", self.val_fraction)
        if not 0.0 < fraction < 1.0:
            raise _fail("val_fraction", "in (0, 1)", self.val_fraction)
        put("val_fraction", fraction)
        put("epochs", _checks.check_int("epochs", self.epochs, 1))
        put("batch_size", _checks.check_int("batch_size", self.batch_size, 1))
        rate = _real("learning_rate", self.learning_rate)
        if rate <= 0:
            raise _fail("learning_rate", "> 0", self.learning_rate)
        put("learning_rate", rate)
        put("optimizer", _checks.check_choice("optimizer", self.optimizer, OPTIMIZERS))
        put("loss", _checks.check_choice("loss", self.loss, LOSSES))
        alpha = _real("loss_alpha", self.loss_alpha)
        if not 0.0 <= alpha <= 1.0:
            raise _fail("loss_alpha", "in [0, 1]", self.loss_alpha)
        put("loss_alpha", alpha)
        put("shuffle", _boolean("shuffle", self.shuffle))
        put("seed", _checks.check_int("seed", self.seed, 0))
        factor = _real("plateau_factor", self.plateau_factor)
        if not 0.0 < factor < 1.0:
            raise _fail("plateau_factor", "in (0, 1)", self.plateau_factor)
        put("plateau_factor", factor)
        put(
            "plateau_patience",
            _checks.check_int("plateau_patience", self.plateau_patience, 0),
        )
        if self.plateau_min_lr is not None:
            min_lr = _real("plateau_min_lr", self.plateau_min_lr)
            if min_lr < 0:
                raise _fail("plateau_min_lr", ">= 0 (or None)", self.plateau_min_lr)
            put("plateau_min_lr", min_lr)

        put("output_dir", _path("output_dir", self.output_dir))
        if self.output_dir is None:
            raise _fail("output_dir", "a non-empty path", None)
        if self.name is not None:
            if (
                not isinstance(self.name, str)
                or not self.name.strip()
                or self.name in (".", "..")
                or any(sep in self.name for sep in ("/", "\\"))
            ):
                raise _fail("name", "a non-empty folder name without '/'", self.name)

    # ----------------------------------------------------------------------

    @property
    def run_name(self) -> str:
        """``name``, or ``"<model>-<dataset>"`` when it is ``None``."""
        return self.name if self.name is not None else f"{self.model}-{self.dataset}"

    @property
    def run_dir(self) -> Path:
        """The run's folder, ``output_dir / run_name``."""
        return Path(self.output_dir) / self.run_name

    @property
    def min_lr(self) -> float:
        """The ``ReduceLROnPlateau`` lower bound actually used."""
        return (
            self.learning_rate if self.plateau_min_lr is None else self.plateau_min_lr
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (tuples as lists), ``name``
        resolved to :attr:`run_name`."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        out["name"] = self.run_name
        return out

    @classmethod
    def from_dict(
        cls, values: Mapping[str, Any], *, source: str | None = None, **overrides
    ) -> CVConfig:
        """A config from a (possibly sectioned) mapping, then ``overrides``.

        Keys are field names. Tables named ``data``, ``model``,
        ``training``, ``callbacks`` or ``output`` only group fields: their
        keys are merged into the top level. ``overrides`` (e.g. command-line
        flags) replace the mapping's values.

        Args:
            values: the mapping (e.g. a parsed TOML file).
            source: where ``values`` came from, for error messages.
            **overrides: field values that win over ``values``.

        Returns:
            A validated :class:`CVConfig`.

        Raises:
            ValueError: for an unknown key (the valid ones are listed), a key
                given twice, or an invalid value.
            TypeError: for a value of the wrong type.

        Example:
            >>> CVConfig.from_dict({"dataset": "isic", "data": {"x_path": "x.npy",
            ...     "y_path": "y.npy"}}, epochs=3).epochs
            3
        """
        where = f" in {source}" if source else ""
        if not isinstance(values, Mapping):
            raise TypeError(
                f"A configuration must be a mapping of field names to values{where}. "
                f"Received: {type(values).__name__}"
            )
        valid = [f.name for f in dataclasses.fields(cls)]
        flat: dict[str, Any] = {}

        def add(key, value, table=None):
            label = f"{table}.{key}" if table else key
            if key not in valid:
                raise ValueError(
                    f"Unknown configuration key {label!r}{where}. Valid keys: "
                    f"{', '.join(valid)} (optionally grouped in the tables "
                    f"{', '.join(SECTIONS)})."
                )
            if key in flat:
                raise ValueError(
                    f"The configuration key {key!r} is given twice{where}."
                )
            flat[key] = value

        for key, value in values.items():
            if key in SECTIONS and isinstance(value, Mapping):
                for inner, inner_value in value.items():
                    add(inner, inner_value, key)
            else:
                add(key, value)
        unknown = [key for key in overrides if key not in valid]
        if unknown:
            raise ValueError(
                f"Unknown configuration field(s) {', '.join(map(repr, unknown))}. "
                f"Valid fields: {', '.join(valid)}."
            )
        # Switching the dataset from the flags drops the file's other paths.
        if "dataset" in overrides and overrides["dataset"] != flat.get("dataset"):
            for kind, fields in DATASETS.items():
                if kind != str(overrides["dataset"]).lower():
                    for field in fields:
                        if field not in overrides:
                            flat.pop(field, None)
        flat.update(overrides)
        for key in ("target_size", "levels"):
            if isinstance(flat.get(key), list):
                flat[key] = tuple(flat[key])
        return cls(**flat)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides) -> CVConfig:
        """A config from a TOML, YAML or JSON file, then ``overrides``.

        See :func:`load_config_file` and :meth:`from_dict`.

        Example:
            >>> config = CVConfig.from_file("kvasir.toml", epochs=1)  # doctest: +SKIP
        """
        return cls.from_dict(
            load_config_file(path), source=os.fspath(path), **overrides
        )


def _load_toml(handle) -> dict:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        try:
            import tomli as tomllib
        except ImportError as err:
            raise ImportError(
                "Reading TOML config files on Python < 3.11 needs tomli: "
                "`pip install tomli`."
            ) from err
    return tomllib.load(handle)


def _load_yaml(handle) -> dict:
    try:
        import yaml
    except ImportError as err:
        raise ImportError(
            "Reading YAML config files needs PyYAML: `pip install pyyaml`. "
            "TOML (.toml) and JSON (.json) config files need nothing extra."
        ) from err
    return yaml.safe_load(handle)


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a configuration file into a dict, by its extension.

    ``.toml`` (standard library ``tomllib``; ``tomli`` on Python 3.10),
    ``.yaml``/``.yml`` (needs PyYAML, imported only then) or ``.json`` (a
    run's saved ``config.json`` reproduces that run).

    Args:
        path: the file.

    Returns:
        The parsed mapping (not yet validated: see :meth:`CVConfig.from_dict`).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: for another extension, a file that does not parse (the
            parser's message is included), or a file that is not a mapping.
        ImportError: for YAML without PyYAML (or TOML on Python 3.10
            without tomli).

    Example:
        >>> load_config_file("kvasir.toml")["dataset"]  # doctest: +SKIP
        'kvasir'
    """
    path = Path(path)
    suffix = path.suffix.lower()
    readers = {".toml": ("rb", _load_toml), ".yaml": ("r", _load_yaml)}
    readers[".yml"] = readers[".yaml"]
    readers[".json"] = ("r", json.load)
    if suffix not in readers:
        raise ValueError(
            "A config file must end with .toml, .yaml, .yml or .json. "
            f"Received: path='{path}'"
        )
    if not path.is_file():
        raise FileNotFoundError(f"The config file does not exist: '{path}'")
    mode, reader = readers[suffix]
    with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
        try:
            values = reader(handle)
        except ImportError:
            raise
        except Exception as err:
            raise ValueError(f"Cannot parse the config file '{path}': {err}") from err
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(
            f"The config file '{path}' must hold a mapping of keys to values. "
            f"Received: {type(values).__name__}"
        )
    return values


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string


def config_to_toml(config: CVConfig) -> str:
    """The configuration as a TOML file (``None`` fields commented out).

    Args:
        config: the configuration.

    Returns:
        TOML text that :meth:`CVConfig.from_file` reads back to ``config``.

    Example:
        >>> print(config_to_toml(CVConfig(dataset="folder", images_dir="i",
        ...                                masks_dir="m")).splitlines()[0])
        dataset = "folder"
    """
    lines = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is None:
            lines.append(f"# {field.name} =")
        else:
            lines.append(f"{field.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------


def kfold_indices(n: int, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """K-fold split without shuffling: ``[(train_indices, test_indices), ...]``.

    Fold ``k`` tests on the ``k``-th contiguous chunk of ``range(n)``; the
    first ``n % folds`` chunks have ``n // folds + 1`` samples, the others
    ``n // folds`` (scikit-learn's ``KFold(folds, shuffle=False)``). The
    training indices are the rest, in increasing order.

    Args:
        n: number of samples, at least ``folds``.
        folds: number of folds, at least 2.

    Returns:
        A list of ``folds`` pairs of ``int64`` arrays.

    Raises:
        ValueError: if ``folds < 2`` or ``n < folds``.
        TypeError: if an argument is not an integer.

    Example:
        >>> [test.tolist() for _, test in kfold_indices(5, 2)]
        [[0, 1, 2], [3, 4]]
    """
    folds = _checks.check_int("folds", folds, 2)
    n = _checks.check_int("n", n, 0)
    if n < folds:
        raise ValueError(
            f"Cannot split {n} samples into {folds} folds: need n >= folds. "
            f"Received: n={n}, folds={folds}"
        )
    sizes = np.full(folds, n // folds, dtype=np.int64)
    sizes[: n % folds] += 1
    stops = np.cumsum(sizes)
    indices = np.arange(n, dtype=np.int64)
    out = []
    for stop, size in zip(stops, sizes):
        start = stop - size
        out.append(
            (np.concatenate([indices[:start], indices[stop:]]), indices[start:stop])
        )
    return out


def validation_split(
    train_indices: np.ndarray, fraction: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Splits a training fold into ``(fit, validation)``: validation is the tail.

    The last ``int(len(train_indices) * fraction)`` indices (the original's
    ``dev_size``) are for validation, the others for fitting.

    Args:
        train_indices: the training fold's indices, in order.
        fraction: the held-out fraction, in ``(0, 1)``.

    Returns:
        ``(fit_indices, validation_indices)``.

    Raises:
        ValueError: if ``fraction`` is not in ``(0, 1)``.

    Example:
        >>> fit, val = validation_split(np.arange(20), 0.1)
        >>> val.tolist()
        [18, 19]
    """
    fraction = _real("fraction", fraction)
    if not 0.0 < fraction < 1.0:
        raise _fail("fraction", "in (0, 1)", fraction)
    train_indices = np.asarray(train_indices)
    size = int(len(train_indices) * fraction)
    cut = len(train_indices) - size
    return train_indices[:cut], train_indices[cut:]


def _splits(n: int, config: CVConfig) -> list[dict[str, np.ndarray]]:
    splits = []
    for k, (train, test) in enumerate(kfold_indices(n, config.folds)):
        fit, val = validation_split(train, config.val_fraction)
        if len(val) == 0 or len(fit) == 0:
            raise ValueError(
                f"Fold {k} has {len(train)} training samples, so "
                f"int({len(train)} * val_fraction) leaves "
                f"{len(fit)} to fit and {len(val)} to validate. Use more "
                "samples, fewer folds or another val_fraction. Received: "
                f"n={n}, folds={config.folds}, val_fraction={config.val_fraction}"
            )
        splits.append({"fit": fit, "val": val, "test": test})
    return splits


# --------------------------------------------------------------------------
# Data, model
# --------------------------------------------------------------------------


def load_data(config: CVConfig) -> tuple[np.ndarray, np.ndarray]:
    """Loads the configured dataset as ``float32`` arrays ``(x, y)``.

    Uses :mod:`keras_ssr.data` (``load_kvasir_seg``, ``load_isic2018``,
    ``load_image_mask_folders``), keeps the first ``max_samples``.

    Args:
        config: the configuration.

    Returns:
        ``(x, y)`` in ``config.data_format``.

    Raises:
        FileNotFoundError, ValueError, ImportError: as the loaders; also
            ``ValueError`` if the ISIC arrays' size differs from
            ``target_size``.
    """
    from keras_ssr import data

    if config.dataset == "kvasir":
        x, y = data.load_kvasir_seg(
            config.data_root,
            config.target_size,
            data_format=config.data_format,
            binarize_masks=config.binarize_masks,
        )
    elif config.dataset == "folder":
        x, y = data.load_image_mask_folders(
            config.images_dir,
            config.masks_dir,
            config.target_size,
            data_format=config.data_format,
            binarize_masks=config.binarize_masks,
        )
    else:
        x, y = data.load_isic2018(
            config.x_path,
            config.y_path,
            data_format=config.data_format,
            scale=config.isic_scale,
        )
        size = x.shape[1:3] if config.data_format == "channels_last" else x.shape[2:]
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
    return x, y


def _fingerprint(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    digest = hashlib.blake2b(digest_size=16)
    for array in (x, y):
        digest.update(np.ascontiguousarray(array).data)
    return {
        "n_samples": int(len(x)),
        "x_shape": list(x.shape),
        "y_shape": list(y.shape),
        "blake2b": digest.hexdigest(),
    }


def _attention_kwargs(name: str, config: CVConfig) -> dict[str, Any] | None:
    from keras_ssr import models

    factory = models.get_attention(name)
    if factory is None:
        return None
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return None
    kwargs = {}
    for key in ("r", "max_scale"):
        if key in parameters:
            kwargs[key] = getattr(config, key)
    return kwargs


def build_model(config: CVConfig, input_shape: Sequence[int]):
    """The configured U-Net (uncompiled), via :func:`keras_ssr.models.build_unet`.

    ``"unet"`` has no attention, ``"ssr_unet"`` SSR (``r``, ``max_scale``);
    another attention name gets ``r`` and ``max_scale`` when its layer
    takes them.

    Args:
        config: the configuration.
        input_shape: one sample's shape, e.g. ``(224, 224, 3)``.

    Returns:
        A ``keras.Model`` with one sigmoid output channel.

    Example:
        >>> config = CVConfig(dataset="folder", images_dir="i", masks_dir="m",
        ...                   levels=(4, 8), target_size=(32, 32))
        >>> build_model(config, (32, 32, 3)).name
        'ssr_unet'
    """
    from keras_ssr import models

    attention = MODEL_ALIASES.get(config.model, config.model)
    return models.build_unet(
        config.levels,
        input_shape=tuple(input_shape),
        n_classes=2,
        with_bn=config.with_bn,
        attention=attention,
        attention_kwargs=None
        if attention is None
        else _attention_kwargs(attention, config),
        data_format=config.data_format,
        name=config.model,
    )


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


@dataclasses.dataclass
class CVResult:
    """The outcome of :func:`run_cv` (or :func:`load_result`).

    Attributes:
        config: the run's configuration.
        run_dir: the run's folder.
        folds: the ``metrics.json`` of every finished fold, in fold order
            (``fold``, ``metrics``, ``best_epoch``, ``n_fit``, ...).
        mean: per metric, the mean over the finished folds.
        std: per metric, the standard deviation over the finished folds
            (population, ``ddof=0``: ``numpy.std``'s default).
        complete: whether all ``config.folds`` folds are finished.
        table: the printed table.
        trained: the folds trained by this call.
        skipped: the folds found finished and reused by this call.
    """

    config: CVConfig
    run_dir: Path
    folds: list[dict[str, Any]]
    mean: dict[str, float]
    std: dict[str, float]
    complete: bool
    table: str
    trained: list[int] = dataclasses.field(default_factory=list)
    skipped: list[int] = dataclasses.field(default_factory=list)

    def metric(self, name: str) -> np.ndarray:
        """One metric's values over the finished folds, in fold order.

        Raises:
            KeyError: for a metric that was not recorded.
        """
        if self.folds and name not in self.folds[0]["metrics"]:
            raise KeyError(
                f"No metric {name!r}; recorded: {', '.join(self.folds[0]['metrics'])}"
            )
        return np.array([f["metrics"][name] for f in self.folds], dtype=np.float64)


def summarize(
    fold_metrics: Sequence[Mapping[str, float]],
) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and standard deviation (``ddof=0``) of each metric over folds.

    Args:
        fold_metrics: one ``{metric: value}`` per fold, all with the same
            metrics.

    Returns:
        ``(mean, std)``, dicts in the metrics' order; empty for no folds.

    Raises:
        ValueError: if the folds do not have the same metrics.

    Example:
        >>> summarize([{"dice": 0.5}, {"dice": 0.7}])
        ({'dice': 0.6}, {'dice': 0.09999999999999998})
    """
    if not fold_metrics:
        return {}, {}
    names = list(fold_metrics[0])
    for k, metrics in enumerate(fold_metrics):
        if sorted(metrics) != sorted(names):
            raise ValueError(
                f"Every fold must have the same metrics: fold entry {k} has "
                f"{sorted(metrics)}, the first {sorted(names)}."
            )
    values = {
        n: np.array([m[n] for m in fold_metrics], dtype=np.float64) for n in names
    }
    return (
        {n: float(np.mean(v)) for n, v in values.items()},
        {n: float(np.std(v)) for n, v in values.items()},
    )


def format_table(
    folds: Sequence[Mapping[str, Any]],
    mean: Mapping[str, float],
    std: Mapping[str, float],
) -> str:
    """The printed results table: one row per fold, then mean and std.

    Args:
        folds: the folds' ``metrics.json`` contents (``fold`` and
            ``metrics``).
        mean: :func:`summarize`'s means.
        std: :func:`summarize`'s standard deviations.

    Returns:
        The table as text, no trailing newline.
    """
    if not folds:
        return "(no finished folds)"
    names = list(folds[0]["metrics"])
    header = ["fold", *(SHORT_NAMES.get(n, n) for n in names)]
    rows = [[str(f["fold"]), *(f"{f['metrics'][n]:.4f}" for n in names)] for f in folds]
    rows.append(["mean", *(f"{mean[n]:.4f}" for n in names)])
    rows.append(["std", *(f"{std[n]:.4f}" for n in names)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(
            [
                cells[0].ljust(widths[0]),
                *(c.rjust(w) for c, w in zip(cells[1:], widths[1:])),
            ]
        )

    rule = "-" * len(line(header))
    return "\n".join(
        [line(header), rule, *map(line, rows[:-2]), rule, *map(line, rows[-2:])]
    )


def _write_json(path: Path, value) -> None:
    """Writes JSON atomically (a temporary file renamed into place)."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2)
        handle.write("\n")
    os.replace(temporary, path)


def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _fold_dir(run_dir: Path, k: int) -> Path:
    return run_dir / f"fold_{k}"


def _finished(run_dir: Path, k: int) -> dict | None:
    """The fold's ``metrics.json`` if the fold is finished, else ``None``."""
    record = _read_json(_fold_dir(run_dir, k) / METRICS_FILE)
    if isinstance(record, dict) and isinstance(record.get("metrics"), dict):
        return record
    return None


def _collect(config: CVConfig, run_dir: Path) -> tuple[list[dict], dict, dict, str]:
    folds = [r for k in range(config.folds) if (r := _finished(run_dir, k)) is not None]
    mean, std = summarize([f["metrics"] for f in folds])
    return folds, mean, std, format_table(folds, mean, std)


def _write_summary(config, run_dir, folds, mean, std, table) -> None:
    names = list(folds[0]["metrics"]) if folds else list(METRIC_NAMES)
    with open(run_dir / (SUMMARY_CSV + ".tmp"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["fold", *names])
        for record in folds:
            writer.writerow([record["fold"], *(record["metrics"][n] for n in names)])
        if folds:
            writer.writerow(["mean", *(mean[n] for n in names)])
            writer.writerow(["std", *(std[n] for n in names)])
    os.replace(run_dir / (SUMMARY_CSV + ".tmp"), run_dir / SUMMARY_CSV)
    _write_json(
        run_dir / SUMMARY_JSON,
        {
            "folds": config.folds,
            "finished": [f["fold"] for f in folds],
            "complete": len(folds) == config.folds,
            "metric_names": names,
            "per_fold": [{"fold": f["fold"], **f["metrics"]} for f in folds],
            "mean": mean,
            "std": std,
            "std_ddof": 0,
            "table": table,
        },
    )


def load_result(run_dir: str | os.PathLike) -> CVResult:
    """Reads a run's folder (finished or not) into a :class:`CVResult`.

    Nothing is trained or written.

    Args:
        run_dir: the run's folder (``<output_dir>/<name>``).

    Returns:
        The result over the folds finished so far.

    Raises:
        FileNotFoundError: if the folder has no ``config.json``.
        ValueError: if ``config.json`` is not a valid configuration.

    Example:
        >>> result = load_result("runs/ssr_unet-kvasir")  # doctest: +SKIP
        >>> result.mean["dice_coefficient"]  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No {CONFIG_FILE} in '{run_dir}': not a run folder.")
    config = CVConfig.from_dict(load_config_file(path), source=str(path))
    folds, mean, std, table = _collect(config, run_dir)
    return CVResult(
        config, run_dir, folds, mean, std, len(folds) == config.folds, table
    )


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------


def _config_differences(
    saved: Mapping[str, Any], current: Mapping[str, Any]
) -> list[str]:
    differences = []
    for key in sorted(set(saved) | set(current)):
        if key in LOCATION_FIELDS:
            continue
        if key not in saved:
            differences.append(f"{key}: not saved, now {current[key]!r}")
        elif key not in current:
            differences.append(f"{key}: saved {saved[key]!r}, unknown now")
        elif saved[key] != current[key]:
            differences.append(f"{key}: saved {saved[key]!r}, now {current[key]!r}")
    return differences


def _our_entries(run_dir: Path) -> list[Path]:
    names = {CONFIG_FILE, RUN_FILE, SUMMARY_CSV, SUMMARY_JSON}
    return sorted(
        entry
        for entry in run_dir.iterdir()
        if entry.name in names or (entry.is_dir() and _FOLD_DIR.fullmatch(entry.name))
    )


def _any_finished(run_dir: Path) -> bool:
    """Whether some ``fold_<k>/metrics.json`` exists in ``run_dir``."""
    return run_dir.is_dir() and any(
        (entry / METRICS_FILE).is_file()
        for entry in run_dir.iterdir()
        if _FOLD_DIR.fullmatch(entry.name)
    )


def _prepare_run_dir(config: CVConfig, overwrite: bool, log) -> Path:
    """Checks (or clears) the run folder and writes ``config.json``.

    A saved configuration that differs is refused only when some fold is
    finished: a run without results (say, one whose data path was wrong)
    simply takes the new configuration.
    """
    run_dir = config.run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"The run folder is a file: '{run_dir}'")
    current = config.to_dict()
    if run_dir.is_dir():
        entries = _our_entries(run_dir)
        if overwrite and entries:
            log(f"--overwrite: removing the previous results in '{run_dir}'")
            for entry in entries:
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        elif _any_finished(run_dir):
            saved = _read_json(run_dir / CONFIG_FILE)
            if not isinstance(saved, dict):
                raise ConfigMismatchError(
                    f"The run folder '{run_dir}' holds finished folds but no "
                    f"readable {CONFIG_FILE}; pass overwrite=True (--overwrite) "
                    "to delete them and start afresh."
                )
            differences = _config_differences(saved, current)
            if differences:
                raise ConfigMismatchError(
                    f"The run folder '{run_dir}' holds a run with another "
                    "configuration; differing fields: "
                    + "; ".join(differences)
                    + ". Choose another name/output_dir, or pass overwrite=True "
                    "(--overwrite) to delete its results and start afresh."
                )
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / CONFIG_FILE, current)
    return run_dir


def _check_data(run_dir: Path, fingerprint: dict, overwrite: bool) -> None:
    """Compares the data with the run's recorded fingerprint; records it."""
    import keras

    from keras_ssr import __version__

    path = run_dir / RUN_FILE
    record = _read_json(path)
    saved = record.get("data") if isinstance(record, dict) else None
    if saved is not None and saved != fingerprint:
        if _any_finished(run_dir) and not overwrite:
            changes = ", ".join(
                f"{key}: saved {saved.get(key)!r}, now {value!r}"
                for key, value in fingerprint.items()
                if saved.get(key) != value
            )
            raise ConfigMismatchError(
                f"The data differ from those of the finished folds in '{run_dir}' "
                f"({changes}). "
                "Pass overwrite=True (--overwrite) to start afresh."
            )
    if saved != fingerprint:
        _write_json(
            path,
            {
                "data": fingerprint,
                "keras_ssr": __version__,
                "keras": keras.__version__,
                "backend": keras.backend.backend(),
                "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            },
        )


def _check_fold_selection(folds, total: int) -> list[int]:
    if folds is None:
        return list(range(total))
    if isinstance(folds, numbers.Integral) and not isinstance(folds, bool):
        folds = [folds]
    if not isinstance(folds, Sequence) or isinstance(folds, str) or not folds:
        raise _fail(
            "folds",
            f"None or a non-empty list of fold indices in [0, {total - 1}]",
            folds,
        )
    out = []
    for k in folds:
        _checks.check_int("folds", k, 0, total - 1)
        if int(k) not in out:
            out.append(int(k))
    return sorted(out)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


def _compile(config: CVConfig, model, run_eagerly: bool) -> None:
    import keras

    from keras_ssr.losses import get_loss
    from keras_ssr.metrics import segmentation_metrics

    optimizers = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}
    model.compile(
        optimizer=optimizers[config.optimizer](learning_rate=config.learning_rate),
        loss=get_loss(config.loss, alpha=config.loss_alpha),
        metrics=segmentation_metrics(),
        run_eagerly=run_eagerly,
    )


def fold_callbacks(config: CVConfig, fold_dir: str | os.PathLike) -> list:
    """The callbacks of one fold, in order: learning-rate schedule,
    checkpoint, CSV log.

    * ``ReduceLROnPlateau(monitor="loss", factor=plateau_factor,
      patience=plateau_patience, min_lr=config.min_lr)``: the original's
      schedule, whose ``min_lr`` is the initial rate unless
      ``plateau_min_lr`` is set (so by default the rate never drops). It
      comes first so that the log has the ``learning_rate`` column.
    * ``ModelCheckpoint(fold_dir / "best.weights.h5", monitor="val_loss",
      save_best_only=True, save_weights_only=True)``.
    * ``CSVLogger(fold_dir / "log.csv")``, comma-separated and not appended
      (the original used ``separator=";"`` and ``append=True``; here an
      interrupted fold restarts with a fresh log instead).

    Args:
        config: the configuration.
        fold_dir: the fold's folder.

    Returns:
        A list of three ``keras.callbacks.Callback``.
    """
    import keras

    fold_dir = Path(fold_dir)
    return [
        keras.callbacks.ReduceLROnPlateau(
            monitor="loss",
            factor=config.plateau_factor,
            patience=config.plateau_patience,
            min_lr=config.min_lr,
        ),
        keras.callbacks.ModelCheckpoint(
            os.fspath(fold_dir / WEIGHTS_FILE),
            monitor="val_loss",
            save_best_only=True,
            save_weights_only=True,
        ),
        keras.callbacks.CSVLogger(os.fspath(fold_dir / LOG_FILE), separator=","),
    ]


def _train_fold(
    config: CVConfig,
    k: int,
    x: np.ndarray,
    y: np.ndarray,
    split: Mapping[str, np.ndarray],
    run_dir: Path,
    verbose,
    run_eagerly: bool,
    log,
) -> dict[str, Any]:
    """Trains, reloads the best weights, scores; writes the fold's files."""
    import keras

    fold_dir = _fold_dir(run_dir, k)
    if fold_dir.exists():  # an interrupted fold: start it cleanly
        shutil.rmtree(fold_dir)
    fold_dir.mkdir(parents=True)
    weights_path = fold_dir / WEIGHTS_FILE

    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed + k)
    model = build_model(config, x.shape[1:])
    _compile(config, model, run_eagerly)

    fit, val, test = split["fit"], split["val"], split["test"]
    callbacks = fold_callbacks(config, fold_dir)
    start = time.perf_counter()
    history = model.fit(
        x[fit],
        y[fit],
        validation_data=(x[val], y[val]),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=config.shuffle,
        callbacks=callbacks,
        verbose=verbose,
    )
    seconds = time.perf_counter() - start
    val_losses = np.asarray(history.history.get("val_loss", []), dtype=np.float64)
    if weights_path.exists():
        model.load_weights(os.fspath(weights_path))
        kept = "best"
        best = int(np.nanargmin(val_losses))
        best_epoch, best_val_loss = best + 1, float(val_losses[best])
    else:  # every val_loss was NaN: no checkpoint was written
        log(
            f"Fold {k}: val_loss was never finite, so no best checkpoint; "
            "keeping the last epoch's weights."
        )
        model.save_weights(os.fspath(weights_path))
        kept, best_epoch, best_val_loss = "last", None, None

    scores = model.evaluate(
        x[test], y[test], batch_size=config.batch_size, verbose=0, return_dict=True
    )
    metrics = {n: float(scores[n]) for n in METRIC_NAMES if n in scores}
    metrics.update({n: float(v) for n, v in scores.items() if n not in metrics})
    record = {
        "fold": k,
        "metrics": metrics,
        "weights": kept,
        "best_epoch": best_epoch,
        "best_val_loss": best_val_loss,
        "epochs": len(val_losses),
        "n_fit": int(len(fit)),
        "n_val": int(len(val)),
        "n_test": int(len(test)),
        "test_range": [int(test[0]), int(test[-1]) + 1],
        "train_seconds": round(seconds, 3),
        "backend": keras.backend.backend(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    _write_json(fold_dir / METRICS_FILE, record)  # last: marks the fold done
    return record


def run_cv(
    config: CVConfig,
    *,
    folds: int | Sequence[int] | None = None,
    overwrite: bool = False,
    verbose: int | str = "auto",
    run_eagerly: bool = False,
    log: Callable[[str], Any] | None = print,
) -> CVResult:
    """Runs (or resumes) K-fold cross-validation with the paper's protocol.

    See the module documentation for the protocol and the files written.
    Finished folds (``fold_<k>/metrics.json`` present) are skipped; a fold
    without it restarts from scratch. The summary (``summary.csv``,
    ``summary.json``, the printed table) covers every finished fold, so
    several processes may run different ``folds`` into one folder.

    Args:
        config: the configuration.
        folds: the folds to run (an index or a list); ``None`` runs all.
        overwrite: delete the run folder's previous results first (needed
            when its saved configuration or data differ).
        verbose: ``model.fit``'s verbosity: 0 silent, 1 progress bar, 2 one
            line per epoch; ``"auto"`` is 1 on a terminal, else 2.
        run_eagerly: compile with ``run_eagerly`` (no graph compilation;
            slower steps, for debugging and tiny runs).
        log: where progress lines and the table go (``None``: nowhere).

    Returns:
        A :class:`CVResult`.

    Raises:
        ConfigMismatchError: if the run folder holds another configuration
            or other data (the differing fields are named).
        ValueError: for folds outside ``[0, config.folds)``, a dataset with
            fewer samples than needed (every fold needs samples to fit and
            to validate), or as :func:`load_data`.
        TypeError: if ``config`` is not a :class:`CVConfig`.
        FileNotFoundError, ImportError: as :func:`load_data`.

    Example:
        >>> result = run_cv(CVConfig(dataset="isic", x_path="X.npy",
        ...                          y_path="Y.npy"))  # doctest: +SKIP
        >>> print(result.table)  # doctest: +SKIP
    """
    if not isinstance(config, CVConfig):
        raise TypeError(
            f"`config` must be a CVConfig. Received: config={config!r} "
            f"(of type {type(config).__name__})"
        )
    log = log or (lambda *_: None)
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    elif verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise _fail("verbose", "0, 1, 2 or 'auto'", verbose)
    _boolean("overwrite", overwrite)
    selected = _check_fold_selection(folds, config.folds)

    run_dir = _prepare_run_dir(config, overwrite, log)
    skipped = [k for k in selected if _finished(run_dir, k) is not None]
    pending = [k for k in selected if k not in skipped]
    if skipped:
        log(f"Resuming '{run_dir}': fold(s) {skipped} already finished, skipped.")
    if pending:
        import keras

        x, y = load_data(config)
        splits = _splits(len(x), config)
        _check_data(run_dir, _fingerprint(x, y), overwrite)
        log(
            f"{config.model} on {config.dataset}: {len(x)} samples of shape "
            f"{tuple(x.shape[1:])}, {config.folds} folds, {config.epochs} epochs; "
            f"Keras {keras.__version__} on {keras.backend.backend()}; "
            f"results in '{run_dir}'"
        )
    started = time.perf_counter()
    for done, k in enumerate(pending):
        split = splits[k]
        log(
            f"\n[fold {k + 1}/{config.folds}] fit {len(split['fit'])}, "
            f"validate {len(split['val'])}, test {len(split['test'])} samples "
            f"(test indices {split['test'][0]}..{split['test'][-1]})"
        )
        record = _train_fold(config, k, x, y, split, run_dir, verbose, run_eagerly, log)
        elapsed = time.perf_counter() - started
        left = len(pending) - done - 1
        eta = f"; about {_duration(elapsed / (done + 1) * left)} left" if left else ""
        scores = record["metrics"]
        log(
            f"[fold {k + 1}/{config.folds}] done: Dice "
            f"{scores.get('dice_coefficient', float('nan')):.4f}, loss "
            f"{scores.get('loss', float('nan')):.4f}, best epoch "
            f"{record.get('best_epoch')}; {_duration(elapsed)} elapsed{eta}"
        )

    folds_done, mean, std, table = _collect(config, run_dir)
    _write_summary(config, run_dir, folds_done, mean, std, table)
    complete = len(folds_done) == config.folds
    status = "all folds" if complete else f"{len(folds_done)} of {config.folds} folds"
    log(f"\nHeld-out scores ({status}; mean and std over folds, ddof=0):\n")
    log(table)
    log(f"\nWritten to '{run_dir}' ({SUMMARY_CSV}, {SUMMARY_JSON}).")
    return CVResult(
        config, run_dir, folds_done, mean, std, complete, table, pending, skipped
    )


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _size(text: str) -> tuple[int, int]:
    values = _int_list(text)
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected H,W or one size, got {text!r}")
    return values


def _optional(kind):
    def parse(text: str):
        if text.lower() in ("none", "null", ""):
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {kind.__name__} or 'none', got {text!r}"
            ) from None

    return parse


def _verbosity(text: str):
    if text == "auto":
        return text
    if text in ("0", "1", "2"):
        return int(text)
    raise argparse.ArgumentTypeError(f"expected 0, 1, 2 or auto, got {text!r}")


def _flag(group: str, flags: tuple[str, ...], **options) -> tuple[str, tuple, dict]:
    return group, flags, options


#: Config fields settable from the command line: field -> (group, flags, options).
_FLAGS: dict[str, tuple[str, tuple[str, ...], dict]] = {
    "dataset": _flag("data", ("--dataset",), choices=tuple(DATASETS)),
    "data_root": _flag(
        "data",
        ("--data-root",),
        metavar="DIR",
        help="kvasir: the folder holding images/ and masks/",
    ),
    "x_path": _flag("data", ("--x-path",), metavar="NPY", help="isic: images .npy"),
    "y_path": _flag("data", ("--y-path",), metavar="NPY", help="isic: masks .npy"),
    "images_dir": _flag(
        "data", ("--images-dir",), metavar="DIR", help="folder: the images"
    ),
    "masks_dir": _flag(
        "data",
        ("--masks-dir",),
        metavar="DIR",
        help="folder: the masks (paired with the images by file stem)",
    ),
    "target_size": _flag(
        "data",
        ("--target-size",),
        type=_size,
        metavar="H,W",
        help="input size (default 224,224)",
    ),
    "binarize_masks": _flag(
        "data",
        ("--binarize-masks",),
        action=argparse.BooleanOptionalAction,
        help="threshold the masks at 0.5 (default on)",
    ),
    "isic_scale": _flag(
        "data",
        ("--isic-scale",),
        choices=ISIC_SCALES,
        help="isic: unit (default: [0, 1] images, {0, 1} masks) or none (raw)",
    ),
    "max_samples": _flag(
        "data",
        ("--max-samples",),
        type=_optional(int),
        metavar="N",
        help="use the first N samples only (default: all)",
    ),
    "model": _flag(
        "model",
        ("--model",),
        metavar="NAME",
        help="ssr_unet (default), unet, or an attention name: se, ssr, ssr_xu, ...",
    ),
    "levels": _flag(
        "model",
        ("--levels",),
        type=_int_list,
        metavar="C,...",
        help="filters per level (default 32,64,128,256)",
    ),
    "with_bn": _flag(
        "model",
        ("--with-bn",),
        action=argparse.BooleanOptionalAction,
        help="BatchNormalization in the U-Net (default off)",
    ),
    "r": _flag("model", ("--r",), type=int, help="reduction ratio (default 2)"),
    "max_scale": _flag(
        "model", ("--max-scale",), type=int, help="SSR scales (default 3)"
    ),
    "data_format": _flag("model", ("--data-format",), choices=_checks.DATA_FORMATS),
    "folds": _flag(
        "protocol", ("--folds", "-k"), type=int, help="number of folds (default 10)"
    ),
    "val_fraction": _flag(
        "protocol",
        ("--val-fraction",),
        type=float,
        help="validation tail of each training fold (default 0.1)",
    ),
    "epochs": _flag("protocol", ("--epochs",), type=int, help="(default 100)"),
    "batch_size": _flag("protocol", ("--batch-size",), type=int, help="(default 16)"),
    "learning_rate": _flag(
        "protocol", ("--learning-rate", "--lr"), type=float, help="(default 1e-4)"
    ),
    "optimizer": _flag(
        "protocol", ("--optimizer",), choices=OPTIMIZERS, help="(default adam)"
    ),
    "loss": _flag(
        "protocol",
        ("--loss",),
        choices=LOSSES,
        help="weighted (default): alpha BCE + (1 - alpha) Dice",
    ),
    "loss_alpha": _flag(
        "protocol", ("--loss-alpha",), type=float, help="(default 0.5)"
    ),
    "shuffle": _flag(
        "protocol",
        ("--shuffle",),
        action=argparse.BooleanOptionalAction,
        help="shuffle the fitted samples every epoch (default on)",
    ),
    "seed": _flag(
        "protocol",
        ("--seed",),
        type=int,
        help="fold k is seeded with seed + k (default 0)",
    ),
    "plateau_factor": _flag(
        "protocol", ("--plateau-factor",), type=float, help="(default 0.5)"
    ),
    "plateau_patience": _flag(
        "protocol", ("--plateau-patience",), type=int, help="(default 10)"
    ),
    "plateau_min_lr": _flag(
        "protocol",
        ("--plateau-min-lr",),
        type=_optional(float),
        help="ReduceLROnPlateau's min_lr; default none = the initial rate, so "
        "the rate never drops (the original's setting)",
    ),
    "output_dir": _flag(
        "output",
        ("--output-dir", "-o"),
        metavar="DIR",
        help="the folder of all runs (default runs)",
    ),
    "name": _flag(
        "output", ("--name",), help="the run's folder (default <model>-<dataset>)"
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``cv`` options to an ``argparse`` (sub-)parser.

    Configuration flags default to "not given", so that they override a
    ``--config`` file only when present.
    """
    parser.description = (
        "K-fold cross-validation with the SSR paper's protocol. Settings come "
        "from --config FILE (TOML, YAML or JSON) and the flags below, which win "
        "over the file; unset ones take the paper's defaults. Rerunning into "
        "the same output folder resumes."
    )
    parser.add_argument(
        "--config", "-c", metavar="FILE", help="a .toml, .yaml/.yml or .json config"
    )
    groups = {
        name: parser.add_argument_group(name)
        for name in ("data", "model", "protocol", "output")
    }
    for field, (group, flags, options) in _FLAGS.items():
        groups[group].add_argument(
            *flags, dest=field, default=argparse.SUPPRESS, **options
        )
    run = parser.add_argument_group("running")
    run.add_argument(
        "--fold",
        dest="run_folds",
        type=_int_list,
        action="append",
        metavar="K[,K...]",
        help="run only these folds (0-based; repeatable); the summary covers "
        "every finished fold",
    )
    run.add_argument(
        "--overwrite",
        "--force",
        action="store_true",
        help="delete the run folder's previous results (needed when its saved "
        "configuration differs)",
    )
    run.add_argument(
        "--verbose",
        type=_verbosity,
        default="auto",
        help="fit verbosity 0, 1 (bars), 2 (lines) or auto (1 on a terminal)",
    )
    run.add_argument(
        "--run-eagerly", action="store_true", help="no graph compilation (debugging)"
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="check the configuration and data, print the folds' sizes, train nothing",
    )
    run.add_argument(
        "--traceback",
        action="store_true",
        help="show the full traceback of an error instead of one line",
    )
    run.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved configuration as TOML and exit",
    )


def config_from_args(args: argparse.Namespace) -> CVConfig:
    """The configuration of parsed ``cv`` arguments: file, then flags."""
    overrides = {f: getattr(args, f) for f in _FLAGS if hasattr(args, f)}
    if getattr(args, "config", None):
        return CVConfig.from_file(args.config, **overrides)
    return CVConfig.from_dict({}, **overrides)


def _dry_run(config: CVConfig) -> None:
    x, _ = load_data(config)
    splits = _splits(len(x), config)
    print(
        f"{len(x)} samples of shape {tuple(x.shape[1:])}; run folder '{config.run_dir}'"
    )
    for k, split in enumerate(splits):
        state = "finished" if _finished(config.run_dir, k) else "to run"
        print(
            f"fold {k}: fit {len(split['fit'])}, validate {len(split['val'])}, "
            f"test {len(split['test'])} (indices {split['test'][0]}.."
            f"{split['test'][-1]}) - {state}"
        )


def run_from_args(args: argparse.Namespace) -> int:
    """Runs ``keras-ssr cv`` from parsed arguments; returns the exit status.

    A configuration, data or resume problem prints one line on standard
    error and returns 2 (``--traceback`` raises it instead); Ctrl-C returns
    130 with a hint on resuming.
    """
    try:
        config = config_from_args(args)
        if args.print_config:
            print(config_to_toml(config), end="")
            return 0
        if args.dry_run:
            _dry_run(config)
            return 0
        folds = None
        if args.run_folds:
            folds = [k for chunk in args.run_folds for k in chunk]
        run_cv(
            config,
            folds=folds,
            overwrite=args.overwrite,
            verbose=args.verbose,
            run_eagerly=args.run_eagerly,
        )
    except (ValueError, TypeError, OSError, ImportError) as error:
        if args.traceback:
            raise
        print(f"keras-ssr cv: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\nkeras-ssr cv: interrupted. Run the same command again to resume: "
            "finished folds are kept, the interrupted one restarts.",
            file=sys.stderr,
        )
        return 130
    return 0
