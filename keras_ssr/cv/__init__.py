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
* :mod:`~keras_ssr.cv.tables`: a paper's table of runs, runs compared by
  paired t-tests over their folds;
* :mod:`~keras_ssr.cv.locks` and :mod:`~keras_ssr.cv.rundir`: the run folder,
  resume, and processes sharing it;
* :mod:`~keras_ssr.cv.parallel`: ``--distribute``, a fold data-parallel on
  the backend's engine;
* :mod:`~keras_ssr.cv.runner`: the training loop, :func:`run_cv`;
* :mod:`~keras_ssr.cv.cli`: the ``keras-ssr cv`` command line.

The names below are imported on first use, so that ``keras-ssr cv --help``
loads no backend.

Example:
    >>> config = CVConfig(dataset="kvasir", data_root="/data/Kvasir-SEG",
    ...                   model="ssr_unet")  # doctest: +SKIP
    >>> result = run_cv(config)  # doctest: +SKIP
    >>> dice = result.metric("dice_coefficient")  # doctest: +SKIP
    >>> print(result.table)  # doctest: +SKIP
"""

from keras_ssr._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "METRIC_NAMES": "build",
        "BestCheckpoint": "build",
        "build_model": "build",
        "compile_model": "build",
        "fold_callbacks": "build",
        "load_data": "build",
        "add_arguments": "cli",
        "config_from_args": "cli",
        "run_from_args": "cli",
        "DATASETS": "config",
        "CVConfig": "config",
        "config_reference": "config",
        "model_names": "config",
        "config_to_toml": "files",
        "load_config_file": "files",
        "CVResult": "results",
        "format_table": "results",
        "load_result": "results",
        "summarize": "results",
        "write_summary": "results",
        "Comparison": "tables",
        "compare": "tables",
        "score_table": "tables",
        "ConfigMismatchError": "rundir",
        "run_cv": "runner",
        "fold_splits": "splits",
        "kfold_indices": "splits",
        "validation_split": "splits",
    },
    submodules=(
        "augment",
        "build",
        "cli",
        "config",
        "fields",
        "files",
        "locks",
        "parallel",
        "results",
        "rundir",
        "runner",
        "splits",
        "tables",
    ),
)
