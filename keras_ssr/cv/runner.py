"""The training loop: :func:`run_cv` runs (or resumes) the folds of a run."""

from __future__ import annotations

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


def _follow(
    config: CVConfig,
    replication: parallel.Replication,
    selected: Sequence[int],
    run_eagerly: bool,
    extra: Sequence,
) -> results.CVResult:
    """A non-chief process of ``--distribute``: trains the folds the chief
    names, in step with it, into a temporary folder that is then deleted.

    Returns the temporary run's result (its folds' records).
    """
    data = None
    trained = []
    with tempfile.TemporaryDirectory(prefix="keras-ssr-cv-") as scratch:
        for k in selected:
            if not replication.broadcast(0):
                continue
            if data is None:
                x, y, labels = build.load_data(config, return_labels=True)
                data = x, y, build.splits(config, len(x), labels)
            x, y, splits = data
            _train_fold(
                config, k, x, y, splits[k], Path(scratch), 0, run_eagerly,
                lambda *_: None, extra, replication,
            )  # fmt: skip
            trained.append(k)
        result = results.write_summary(config, Path(scratch))
    result.trained, result.skipped, result.busy = trained, [], []
    return result


def _check_model(config: CVConfig, input_shape) -> None:
    """Builds the model once, so that its errors come before any file."""
    import keras

    build.build_model(config, input_shape)
    keras.backend.clear_session()


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
    and the model are all checked before anything is written. The summary
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
    log = log or (lambda *_: None)
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
    if not replication.chief:
        return _follow(config, replication, selected, run_eagerly, extra)

    folder = RunFolder(config, log)
    folder.check(overwrite)  # before any work
    run_dir = folder.path
    done = {} if overwrite else {k: results.finished(run_dir, k) for k in selected}
    skipped = [k for k in selected if done.get(k) is not None]
    pending = [k for k in selected if k not in skipped]
    if skipped:
        log(f"Resuming '{run_dir}': fold(s) {skipped} already finished, skipped.")
    trained, busy = [], []
    if not pending:
        for _ in selected:  # the other processes of --distribute wait for word
            replication.broadcast(0)
    else:
        import keras

        x, y, labels = build.load_data(config, return_labels=True)
        splits = build.splits(config, len(x), labels)
        _check_model(config, x.shape[1:])
        folder.enter(build.fingerprint(x, y), overwrite)
        try:
            log(
                f"{config.model} on {config.dataset}: {len(x)} samples of shape "
                f"{tuple(x.shape[1:])}, {config.folds} folds, {config.epochs} "
                f"epochs; Keras {keras.__version__} on {keras.backend.backend()}; "
                f"results in '{run_dir}'"
            )
            started = time.perf_counter()
            for k in selected:
                if k not in pending:
                    replication.broadcast(0)
                    continue
                index = pending.index(k)
                lock = folder.fold_lock(k)
                if not lock.acquire(blocking=False):
                    replication.broadcast(0)
                    busy.append(k)
                    log(
                        f"[fold {k + 1}/{config.folds}] trained by another process "
                        f"({lock.owner()}): skipped and left alone."
                    )
                    continue
                try:
                    if results.finished(run_dir, k) is not None:
                        replication.broadcast(0)
                        skipped.append(k)  # finished meanwhile by another process
                        continue
                    replication.broadcast(1)
                    split = splits[k]
                    log(
                        f"\n[fold {k + 1}/{config.folds}] fit {len(split['fit'])}, "
                        f"validate {len(split['val'])}, test {len(split['test'])} "
                        f"samples (test indices {split['test'][0]}.."
                        f"{split['test'][-1]})"
                    )
                    record = _train_fold(
                        config,
                        k,
                        x,
                        y,
                        split,
                        run_dir,
                        verbose,
                        run_eagerly,
                        log,
                        extra,
                        replication,
                    )
                finally:
                    lock.release()
                trained.append(k)
                elapsed = time.perf_counter() - started
                left = len(pending) - index - 1
                per_fold = elapsed / len(trained)
                eta = f"; about {_duration(per_fold * left)} left" if left > 0 else ""
                scores = record["metrics"]
                state = "diverged" if record.get("diverged") else "done"
                log(
                    f"[fold {k + 1}/{config.folds}] {state}: Dice "
                    f"{scores.get('dice_coefficient', float('nan')):.4f}, loss "
                    f"{scores.get('loss', float('nan')):.4f}, best epoch "
                    f"{record.get('best_epoch')}; {_duration(elapsed)} elapsed{eta}"
                )
        finally:
            folder.leave()

    result = results.write_summary(config, run_dir)
    result.trained, result.skipped, result.busy = trained, sorted(skipped), busy
    log("\n" + results.report(result))
    if busy:
        log(
            f"\nFold(s) {busy} are being trained by other processes; once they end, "
            f"`keras-ssr cv summarize {run_dir}` updates the summary."
        )
    log(f"\nWritten to '{run_dir}' ({results.SUMMARY_CSV}, {results.SUMMARY_JSON}).")
    return result
