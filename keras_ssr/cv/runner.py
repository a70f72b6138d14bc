"""The training loop: :func:`run_cv` runs (or resumes) the folds of a run."""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_ssr import _checks
from keras_ssr.cv import build, files, parallel, results
from keras_ssr.cv.config import CVConfig
from keras_ssr.cv.rundir import RunFolder

__all__ = ["run_cv"]


def _check_fold_selection(folds, total: int) -> list[int]:
    if folds is None:
        return list(range(total))
    if isinstance(folds, numbers.Integral) and not isinstance(folds, bool):
        folds = [folds]
    if not isinstance(folds, Sequence) or isinstance(folds, str) or not folds:
        raise ValueError(
            f"`folds` must be None or a non-empty list of fold indices in "
            f"[0, {total - 1}]. Received: folds={folds!r}"
        )
    return sorted({_checks.check_int("folds", k, 0, total - 1) for k in folds})


def _quiet(*_) -> None:
    """A ``log`` that says nothing."""


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


def _finite_model(model, x, batch_size: int) -> bool:
    """Whether ``model``'s weights, and its predictions for ``x``, are finite."""
    import keras

    for weight in model.weights:
        if not np.all(np.isfinite(keras.ops.convert_to_numpy(weight))):
            return False
    try:
        predictions = model.predict(x, batch_size=batch_size, verbose=0)
    except Exception:  # noqa: BLE001 - the backend refused non-finite values
        return False
    return bool(np.all(np.isfinite(np.asarray(predictions))))


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
    extra_callbacks: Sequence = (),
    replication: parallel.Replication | None = None,
) -> dict[str, Any]:
    """Trains, reloads the best finite weights, scores; writes the fold's files.

    The caller holds the fold's lock. ``replication`` (``--distribute``)
    says where the fold trains; by default on one device.
    """
    import keras

    replication = replication or parallel.Replication()
    fold_dir = results.fold_dir(run_dir, k)
    if fold_dir.exists():  # an interrupted fold: start it cleanly
        shutil.rmtree(fold_dir)
    fold_dir.mkdir(parents=True)

    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed + k)
    fit, val, test = split["fit"], split["val"], split["test"]
    callbacks = build.fold_callbacks(config, fold_dir)
    checkpoint = next(c for c in callbacks if isinstance(c, build.BestCheckpoint))
    with replication.building():
        model = build.build_model(config, x.shape[1:], synchronized=replication.active)
        build.compile_model(config, model, run_eagerly)
        replication.prepare(model)
    twin, validation, validators = None, {"validation_data": (x[val], y[val])}, []
    if replication.active:  # validation and scores on one device, as without
        with replication.evaluation():
            twin = build.build_model(config, x.shape[1:], synchronized=True)
            build.compile_model(config, twin, run_eagerly)
        validation = {}
        validators = [
            parallel.Validation(replication, twin, x[val], y[val], config.batch_size)
        ]
    data = build.training_data(config, x[fit], y[fit], seed=config.seed + k)
    start = time.perf_counter()
    try:
        with replication.fitting():
            model.fit(
                **replication.fit_data(data, config, seed=config.seed + k),
                **validation,
                epochs=config.epochs,
                callbacks=[*validators, *extra_callbacks, *callbacks],
                verbose=verbose,
            )
    except Exception as error:
        # Some backend ops refuse NaN outright (torch's binary_cross_entropy
        # raises "all elements of input should be between 0 and 1"): with
        # a model that computes non-finite values that is a divergence,
        # anything else a real error.
        with replication.scoring(model, twin) as scorer:
            if _finite_model(scorer, x[val], config.batch_size):
                raise
        checkpoint.fail(error)
    seconds = time.perf_counter() - start
    epochs_run = checkpoint.completed
    diverged = None
    if checkpoint.nonfinite:
        first = checkpoint.nonfinite[0]
        diverged = dict(first)
        log(
            f"Fold {k}: diverged, first non-finite loss at epoch {first['epoch']} "
            f"({', '.join(f'{n} {v}' for n, v in first.items() if n != 'epoch')}); "
            + (
                f"keeping the weights of epoch {checkpoint.best_epoch}, the best "
                "finite val_loss."
                if checkpoint.best_epoch
                else "no epoch had a finite val_loss, so no weights are kept."
            )
        )
    metrics: dict[str, float] = {}
    if checkpoint.best_epoch is not None:
        scorer = model if twin is None else twin
        scorer.load_weights(os.fspath(fold_dir / build.WEIGHTS_FILE))
        with replication.evaluation():
            scores = scorer.evaluate(
                x[test],
                y[test],
                batch_size=config.batch_size,
                verbose=0,
                return_dict=True,
            )
        metrics = {n: float(scores[n]) for n in build.METRIC_NAMES if n in scores}
        metrics.update({n: float(v) for n, v in scores.items() if n not in metrics})
    record = {
        "fold": k,
        "metrics": metrics,
        "weights": "best" if checkpoint.best_epoch is not None else None,
        "best_epoch": checkpoint.best_epoch,
        "best_val_loss": checkpoint.best if checkpoint.best_epoch else None,
        "diverged": diverged,
        "nonfinite_epochs": checkpoint.nonfinite,
        "stopped_on_nan": bool(config.stop_on_nan and epochs_run < config.epochs),
        "epochs": epochs_run,
        "n_fit": int(len(fit)),
        "n_val": int(len(val)),
        "n_test": int(len(test)),
        "test_range": [int(test[0]), int(test[-1]) + 1],
        "test_indices": [int(i) for i in test],
        "train_seconds": round(seconds, 3),
        "backend": keras.backend.backend(),
        "replicas": replication.replicas,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    files.write_json(fold_dir / results.METRICS_FILE, record)  # last: marks it done
    return record


def _load(config: CVConfig) -> tuple[np.ndarray, np.ndarray, list]:
    """The data ``(x, y)`` and the folds' splits."""
    x, y, labels = build.load_data(config, return_labels=True)
    return x, y, build.splits(config, len(x), labels)


def _check_model(config: CVConfig, input_shape) -> None:
    """Builds the model once, so that its errors come before any file."""
    import keras

    build.build_model(config, input_shape)
    keras.backend.clear_session()


@dataclasses.dataclass
class _Claim:
    """The chief's share of a run: the folds it trains (their locks held
    until ``folder.leave()``), the folds it leaves, and the data."""

    folder: RunFolder
    folds: list[int]
    skipped: list[int]  # finished already
    busy: list[int]  # trained by another live process
    data: tuple | None = None  # _load's, when there are folds to train


def _claim(config: CVConfig, selected, overwrite: bool, log) -> _Claim:
    """Checks everything, joins the run folder, takes the selected folds
    that are neither finished nor held by another process."""
    folder = RunFolder(config, log)
    folder.check(overwrite)  # before any work
    run_dir = folder.path
    done = [] if overwrite else [k for k in selected if results.finished(run_dir, k)]
    if done:
        log(f"Resuming '{run_dir}': fold(s) {done} already finished, skipped.")
    pending = [k for k in selected if k not in done]
    if not pending:  # nothing to train: the data are not even loaded
        return _Claim(folder, [], done, [])
    import keras

    data = x, y, _ = _load(config)
    _check_model(config, x.shape[1:])
    folder.enter(build.fingerprint(x, y), overwrite)
    try:
        folds, busy, meanwhile = folder.claim(pending)
    except BaseException:
        folder.leave()
        raise
    log(
        f"{config.model} on {config.dataset}: {len(x)} samples of shape "
        f"{tuple(x.shape[1:])}, {config.folds} folds, {config.epochs} epochs; "
        f"Keras {keras.__version__} on {keras.backend.backend()}; results in "
        f"'{run_dir}'"
    )
    for k, owner in busy.items():
        log(f"[fold {k}] trained by another process ({owner}): skipped and left alone.")
    return _Claim(folder, folds, sorted(done + meanwhile), list(busy), data)


def _tell(replication: parallel.Replication, folds, total: int) -> list[int] | None:
    """The chief's ``folds`` on every process, in one broadcast (``None``:
    the chief stopped before training)."""
    word = np.zeros(total + 1, np.int64)
    if folds is not None:
        word[[0, *(k + 1 for k in folds)]] = 1
    word = replication.broadcast(word)
    return [k for k in range(total) if word[k + 1]] if word[0] else None


def _scores(config: CVConfig, record: Mapping[str, Any]) -> str:
    """A progress line's scores: the metric set's Dice and the loss."""
    scores = record["metrics"]
    if not scores:
        return "no scores (no weights kept)"
    dice = build.DICE_METRICS[config.metrics]
    return f"{dice} {scores[dice]:.4f}, loss {scores['loss']:.4f}"


def _report(result: results.CVResult, log) -> None:
    """The summary's printed part."""
    log("\n" + results.report(result))
    if result.busy:
        log(
            f"\nFold(s) {result.busy} are being trained by other processes; once "
            f"they end, `keras-ssr cv summarize {result.run_dir}` updates the summary."
        )
    log(
        f"\nWritten to '{result.run_dir}' ({results.SUMMARY_CSV}, "
        f"{results.SUMMARY_JSON})."
    )


def run_cv(
    config: CVConfig,
    *,
    folds: int | Sequence[int] | None = None,
    overwrite: bool = False,
    verbose: int | str = "auto",
    run_eagerly: bool = False,
    callbacks: Sequence | None = None,
    log: Callable[[str], Any] | None = print,
) -> results.CVResult:
    """Runs (or resumes) K-fold cross-validation with the paper's protocol.

    See ``docs/cross_validation.md`` for the protocol and the files written.
    Finished folds (``fold_<k>/metrics.json`` present) are skipped; a fold
    without it restarts from scratch, unless another live process holds it,
    in which case it is skipped and left alone. The configuration, the data
    and the model are all checked before anything is written; then the run
    claims (locks) every fold it is to train, until it ends. The summary
    (``summary.csv``, ``summary.json``, the printed table) covers every
    finished fold, so several processes may run different ``folds`` into one
    folder at once.

    A fold whose loss or ``val_loss`` becomes NaN or infinite does not stop
    the run: it is recorded as diverged (epoch and values), keeps the
    weights of its best finite ``val_loss`` epoch (or none, when no epoch
    was finite), and is left out of the mean.

    Args:
        config: the configuration.
        folds: the folds to run (an index or a list); ``None`` runs all.
        overwrite: delete the run folder's previous results first (needed
            when its saved configuration or data differ); refused while
            another process works in the folder.
        verbose: ``model.fit``'s verbosity: 0 silent, 1 progress bar, 2 one
            line per epoch; ``"auto"`` is 1 on a terminal, else 2.
        run_eagerly: compile with ``run_eagerly`` (no graph compilation;
            slower steps, for debugging and tiny runs).
        callbacks: extra Keras callbacks for every fold, called before the
            built-in ones (so what they put in ``logs`` is seen by them).
        log: where progress lines and the table go (``None``: nowhere).

    Returns:
        A :class:`~keras_ssr.cv.CVResult`.

    Raises:
        ConfigMismatchError: if the run folder holds another configuration
            or other data in use (the differing fields are named).
        ValueError: for folds outside ``[0, config.folds)``, a dataset with
            fewer samples than needed (every fold needs samples to fit and
            to validate), or as :func:`~keras_ssr.cv.load_data` and the
            model builder.
        TypeError: if ``config`` is not a :class:`~keras_ssr.cv.CVConfig`.
        FileNotFoundError, ImportError: as :func:`~keras_ssr.cv.load_data`.

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
    log = log or _quiet
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    elif verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(
            f"`verbose` must be 0, 1, 2 or 'auto'. Received: verbose={verbose!r}"
        )
    _checks.check_bool("overwrite", overwrite)
    selected = _check_fold_selection(folds, config.folds)
    extra = list(callbacks or ())
    replication = parallel.replicate(config, log)
    if not replication.chief:  # the chief alone speaks and writes the run
        log, verbose = _quiet, 0

    # 1. The chief claims its folds and tells the other processes, once.
    claim = None
    try:
        if replication.chief:
            claim = _claim(config, selected, overwrite, log)
    finally:  # the others wait for this word whatever happens to the chief
        folds = _tell(replication, None if claim is None else claim.folds, config.folds)
    if folds is None:
        raise RuntimeError(
            "The chief process of --distribute stopped before training (its "
            "error says why); this process trained nothing."
        )

    # 2. Every process trains them: the chief into the run folder, the
    # others in step into a scratch folder that is deleted afterwards.
    with contextlib.ExitStack() as stack:
        if claim is None:
            run_dir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="keras-ssr-cv-"))
            )
            x, y, splits = _load(config) if folds else (None, None, None)
        else:
            stack.callback(claim.folder.leave)
            run_dir = claim.folder.path
            x, y, splits = claim.data or (None, None, None)
        started = time.perf_counter()
        for i, k in enumerate(folds):
            split, fold = splits[k], f"[fold {k} ({i + 1} of {len(folds)})]"
            log(
                f"\n{fold} fit {len(split['fit'])}, validate {len(split['val'])}, "
                f"test {len(split['test'])} samples (test indices "
                f"{split['test'][0]}..{split['test'][-1]})"
            )
            record = _train_fold(
                config, k, x, y, split, run_dir, verbose, run_eagerly, log, extra,
                replication,
            )  # fmt: skip
            elapsed = time.perf_counter() - started
            left = (len(folds) - i - 1) * elapsed / (i + 1)
            log(
                f"{fold} {'diverged' if record.get('diverged') else 'done'}: "
                f"{_scores(config, record)}, best epoch {record.get('best_epoch')}; "
                f"{_duration(elapsed)} elapsed"
                + (f"; about {_duration(left)} left" if left else "")
            )
        # 3. The chief summarises (every process its own folder).
        result = results.write_summary(config, run_dir)
    result.trained = folds
    if claim is not None:
        result.skipped, result.busy = claim.skipped, claim.busy
    _report(result, log)
    return result
