"""K-fold cross-validation with the paper's protocol (``keras-ssr cv``).

The original experiments (ISIC 2018 and Kvasir-SEG, U-Net vs SSR-U-Net)
follow one protocol, which :func:`run_cv` reproduces on every Keras backend:
K contiguous folds without shuffling, the last 10 % of each training fold
for validation, Adam 1e-4, batch 16, 100 epochs, 0.5 BCE + 0.5 Dice, the
best-``val_loss`` weights scored on the held-out fold. ``docs/cross_validation.md``
describes the protocol, the configuration, the files of a run folder, resume,
divergence and running folds in parallel.

The package, by concern:

* :mod:`~keras_ssr.cv.config`: :class:`CVConfig`, each field declared once
  with its default, help text and table;
* :mod:`~keras_ssr.cv.files`: config files (TOML, YAML, JSON), atomic writes;
* :mod:`~keras_ssr.cv.splits`: the folds and their validation tails;
* :mod:`~keras_ssr.cv.build`: data, model, compilation, callbacks;
* :mod:`~keras_ssr.cv.results`: per-fold records, summary, table;
* :mod:`~keras_ssr.cv.locks` and :mod:`~keras_ssr.cv.rundir`: the run folder,
  resume, and processes sharing it;
* :mod:`~keras_ssr.cv.parallel`: ``--distribute``, a fold data-parallel on
  the backend's engine;
* :mod:`~keras_ssr.cv.runner`: the training loop, :func:`run_cv`;
* :mod:`~keras_ssr.cv.cli`: the ``keras-ssr cv`` command line.

Example:
    >>> config = CVConfig(dataset="kvasir", data_root="/data/Kvasir-SEG",
    ...                   model="ssr_unet")  # doctest: +SKIP
    >>> result = run_cv(config)  # doctest: +SKIP
    >>> dice = result.metric("dice_coefficient")  # doctest: +SKIP
    >>> print(result.table)  # doctest: +SKIP
"""

from keras_ssr.cv.build import (
    METRIC_NAMES,
    BestCheckpoint,
    build_model,
    compile_model,
    fold_callbacks,
    load_data,
)
from keras_ssr.cv.cli import add_arguments, config_from_args, run_from_args
from keras_ssr.cv.config import DATASETS, CVConfig, config_reference, model_names
from keras_ssr.cv.files import config_to_toml, load_config_file
from keras_ssr.cv.results import (
    CVResult,
    format_table,
    load_result,
    summarize,
    write_summary,
)
from keras_ssr.cv.rundir import ConfigMismatchError
from keras_ssr.cv.runner import run_cv
from keras_ssr.cv.splits import fold_splits, kfold_indices, validation_split

__all__ = [
    "DATASETS",
    "METRIC_NAMES",
    "BestCheckpoint",
    "CVConfig",
    "CVResult",
    "ConfigMismatchError",
    "add_arguments",
    "build_model",
    "compile_model",
    "config_from_args",
    "config_reference",
    "config_to_toml",
    "fold_callbacks",
    "fold_splits",
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
    "write_summary",
]
