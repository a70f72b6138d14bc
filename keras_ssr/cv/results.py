"""The results of a run: per-fold records, their summary and its table.

A fold's ``metrics.json`` marks it finished. A fold whose loss or
``val_loss`` turned NaN or infinite is finished too, but *diverged*: it is
listed, marked in the table and in ``summary.json``, and left out of the mean
and standard deviation (which say over how many folds they are).

The standard deviation over folds is the sample one (``ddof=1``), as papers
report it; a single fold has none. The tables name every column by what it
measures (:data:`COLUMNS`), in one order for both metric sets.
:mod:`keras_ssr.cv.tables` writes the scores as a paper's table and compares
runs.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_ssr import _checks
from keras_ssr.cv import files
from keras_ssr.cv.config import RENAMED_METRIC_SETS, CVConfig
from keras_ssr.cv.locks import LOCK_DIR, FileLock

__all__ = [
    "COLUMNS",
    "CVResult",
    "format_table",
    "load_result",
    "report",
    "summarize",
    "write_summary",
]

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"
METRICS_FILE = "metrics.json"
#: The standard deviation over folds: the sample one.
STD_DDOF = 1

_SHARED_COLUMNS = {
    "loss": "loss",
    "binary_accuracy": "accuracy",
    "auc": "AUC",
    "precision": "precision",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
}
#: Per metric set (``CVConfig.metrics``), the logged name of each held-out
#: score and its column title, in the tables' column order (the same for
#: both sets). The sets log two scores alike that differ in what they
#: measure: the paper's ``dice_coefficient`` pools the pixels of each batch
#: (:func:`keras_ssr.metrics.dice_coefficient`), the follow-up's
#: ``dice_score`` averages per image (:class:`~keras_ssr.metrics.PerImageDice`);
#: the paper's ``binary_io_u`` is Keras' ``BinaryIoU``, the mean of the
#: background's and the foreground's IoU, the follow-up's the foreground's
#: alone (:class:`~keras_ssr.metrics.ForegroundIoU`).
COLUMNS = {
    "batch": {
        **_SHARED_COLUMNS,
        "dice_coefficient": "Dice (batch)",
        "binary_io_u": "IoU (both classes)",
    },
    "per_image": {
        **_SHARED_COLUMNS,
        "dice_score": "Dice (per image)",
        "binary_io_u": "IoU (foreground)",
    },
}


def columns(metric_set: str, recorded: Sequence[str] = ()) -> dict[str, str]:
    """The columns of a table: logged name -> title, in the tables' order.

    Args:
        metric_set: ``"batch"`` or ``"per_image"`` (``CVConfig.metrics``).
        recorded: the names the folds recorded; empty: the set's names.
            Recorded names the set does not know come last, titled by name.

    Returns:
        An ordered ``{name: title}``.
    """
    known = COLUMNS[
        _checks.check_choice(
            "metric_set", metric_set, tuple(COLUMNS), RENAMED_METRIC_SETS
        )
    ]
    if not recorded:
        return dict(known)
    ordered = {n: t for n, t in known.items() if n in recorded}
    ordered.update({n: n for n in recorded if n not in known})
    return ordered


def fold_dir(run_dir: Path, k: int) -> Path:
    """The folder of fold ``k``."""
    return Path(run_dir) / f"fold_{k}"


def finished(run_dir: Path, k: int) -> dict | None:
    """The fold's ``metrics.json`` if the fold is finished, else ``None``."""
    record = files.read_json(fold_dir(run_dir, k) / METRICS_FILE)
    if isinstance(record, dict) and isinstance(record.get("metrics"), dict):
        return record
    return None


def averaged(record: Mapping[str, Any]) -> bool:
    """Whether a fold's scores enter the mean: it did not diverge."""
    return not record.get("diverged") and bool(record["metrics"])


@dataclasses.dataclass
class CVResult:
    """The outcome of :func:`keras_ssr.cv.run_cv` (or :func:`load_result`).

    Attributes:
        config: the run's configuration.
        run_dir: the run's folder.
        folds: the ``metrics.json`` of every finished fold, diverged ones
            included, in fold order (``fold``, ``metrics``, ``best_epoch``,
            ``diverged``, ``n_fit``, ...).
        mean: per metric, the mean over the finished folds that did not
            diverge.
        std: per metric, their sample standard deviation (``ddof=1``); empty
            when fewer than two folds are averaged.
        complete: whether all ``config.folds`` folds are finished.
        table: the printed table.
        trained: the folds trained by this call.
        skipped: the folds found finished and reused by this call.
        busy: the folds skipped because another live process trains them.
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
    busy: list[int] = dataclasses.field(default_factory=list)

    @property
    def diverged(self) -> list[int]:
        """The finished folds that diverged (not in :attr:`mean`)."""
        return [f["fold"] for f in self.folds if not averaged(f)]

    @property
    def averaged(self) -> list[int]:
        """The folds :attr:`mean` and :attr:`std` are over, in order."""
        return [f["fold"] for f in self.folds if averaged(f)]

    @property
    def columns(self) -> dict[str, str]:
        """The recorded scores' logged names and column titles, in order."""
        return columns(self.config.metrics, _recorded(self.folds))

    def metric(self, name: str) -> np.ndarray:
        """One metric's values over the averaged folds, in fold order.

        Raises:
            KeyError: for a metric that was not recorded.
        """
        folds = [f for f in self.folds if averaged(f)]
        if folds and name not in folds[0]["metrics"]:
            raise KeyError(
                f"No metric {name!r}; recorded: {', '.join(folds[0]['metrics'])}"
            )
        return np.array([f["metrics"][name] for f in folds], dtype=np.float64)


def _recorded(folds: Sequence[Mapping[str, Any]]) -> list[str]:
    """The metric names of the first fold with scores (all have the same)."""
    return next((list(f["metrics"]) for f in folds if f["metrics"]), [])


def summarize(
    fold_metrics: Sequence[Mapping[str, float]],
) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and sample standard deviation (``ddof=1``) of each metric over folds.

    Args:
        fold_metrics: one ``{metric: value}`` per fold, all with the same
            metrics.

    Returns:
        ``(mean, std)``, dicts in the metrics' order; both empty for no
        folds, ``std`` empty for one fold (a sample of one has no spread).

    Raises:
        ValueError: if the folds do not have the same metrics.

    Example:
        >>> summarize([{"dice": 0.5}, {"dice": 0.7}])
        ({'dice': 0.6}, {'dice': 0.14142135623730948})
        >>> summarize([{"dice": 0.5}])
        ({'dice': 0.5}, {})
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
    mean = {n: float(np.mean(v)) for n, v in values.items()}
    if len(fold_metrics) <= STD_DDOF:
        return mean, {}
    return mean, {n: float(np.std(v, ddof=STD_DDOF)) for n, v in values.items()}


def _divergence(record: Mapping[str, Any]) -> str:
    info = record.get("diverged") or {}
    values = ", ".join(f"{k} {v}" for k, v in info.items() if k != "epoch")
    kept = (
        f"weights of epoch {record['best_epoch']} kept"
        if record.get("weights")
        else "no weights kept"
    )
    epoch = info.get("epoch")
    return f"fold {record['fold']} diverged at epoch {epoch} ({values}); {kept}"


def format_table(
    folds: Sequence[Mapping[str, Any]],
    mean: Mapping[str, float],
    std: Mapping[str, float],
    metric_set: str = "batch",
) -> str:
    """The printed results table: one row per fold, then mean and std.

    The columns are titled by what they measure (:data:`COLUMNS`). Diverged
    folds are marked ``*`` (``-`` where they have no scores) and explained
    under the table; the mean and std rows leave them out and say over how
    many folds they are. With one averaged fold the std row is ``-``.

    Args:
        folds: the folds' ``metrics.json`` contents (``fold`` and
            ``metrics``).
        mean: :func:`summarize`'s means.
        std: :func:`summarize`'s standard deviations.
        metric_set: ``CVConfig.metrics``, which titles the columns.

    Returns:
        The table as text, no trailing newline.
    """
    if not folds:
        return "(no finished folds)"
    titles = columns(metric_set, list(mean) or _recorded(folds))
    header = ["fold", *titles.values()]

    def cell(values, n):
        return f"{values[n]:.4f}" if n in values else "-"

    rows = [
        [
            f"{f['fold']}" + ("" if averaged(f) else "*"),
            *(cell(f["metrics"], n) for n in titles),
        ]
        for f in folds
    ]
    n_averaged = sum(1 for f in folds if averaged(f))
    rows.append([f"mean (n={n_averaged})", *(cell(mean, n) for n in titles)])
    rows.append([f"std (ddof={STD_DDOF})", *(cell(std, n) for n in titles)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(
            [
                cells[0].ljust(widths[0]),
                *(c.rjust(w) for c, w in zip(cells[1:], widths[1:])),
            ]
        )

    rule = "-" * len(line(header))
    notes = [f"* {_divergence(f)}; not in the mean." for f in folds if not averaged(f)]
    return "\n".join(
        [line(header), rule, *map(line, rows[:-2]), rule, *map(line, rows[-2:]), *notes]
    )


def report(result: CVResult) -> str:
    """The table with a line that says what it covers, as the runner prints it.

    Example:
        >>> print(report(load_result("runs/unet-kvasir")))  # doctest: +SKIP
        Held-out scores (3 of 5 folds; mean and sample std (ddof=1) over 3 folds):
        ...
    """
    total = result.config.folds
    status = (
        f"all {total} folds"
        if result.complete
        else f"{len(result.folds)} of {total} folds"
    )
    n = len(result.averaged)
    if n >= 2:
        spread = f"mean and sample std (ddof={STD_DDOF}) over {n} folds"
    else:
        spread = "mean of 1 fold, no std" if n else "no fold to average"
    return f"Held-out scores ({status}; {spread}):\n\n{result.table}"


def collect(config: CVConfig, run_dir: Path) -> tuple[list[dict], dict, dict, str]:
    """The finished folds' records, the summary over the averaged ones, the table."""
    folds = [r for k in range(config.folds) if (r := finished(run_dir, k)) is not None]
    mean, std = summarize([f["metrics"] for f in folds if averaged(f)])
    return folds, mean, std, format_table(folds, mean, std, config.metrics)


def _summary_csv(names, folds, mean, std) -> str:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["fold", *names, "status"])
    for record in folds:
        status = "averaged" if averaged(record) else "diverged"
        scores = record["metrics"]
        writer.writerow([record["fold"], *(scores.get(n, "") for n in names), status])
    if mean:
        writer.writerow(["mean", *(mean[n] for n in names), ""])
    if std:
        writer.writerow(["std", *(std[n] for n in names), ""])
    return text.getvalue()


def write_summary(config: CVConfig, run_dir: Path) -> CVResult:
    """Collects the finished folds and writes ``summary.csv`` / ``summary.json``.

    Collecting and writing happen under the run's summary lock, so that when
    several processes finish folds at once the last file written has seen
    every finished fold; each file is replaced atomically, so a reader never
    sees a partial one. Under that lock no other writer is live, so the
    temporaries of a writer that was killed before its rename are removed.

    Returns:
        A :class:`CVResult` over the finished folds.
    """
    run_dir = Path(run_dir)
    with FileLock(run_dir / LOCK_DIR / "summary.lock").exclusive():
        for name in (SUMMARY_CSV, SUMMARY_JSON):  # left by a killed writer
            files.remove_temporaries(run_dir / name)
        folds, mean, std, table = collect(config, run_dir)
        titles = columns(config.metrics, list(mean) or _recorded(folds))
        names = list(titles)
        files.write_text(
            run_dir / SUMMARY_CSV, _summary_csv(names, folds, mean, std), newline=""
        )
        files.write_json(
            run_dir / SUMMARY_JSON,
            {
                "folds": config.folds,
                "finished": [f["fold"] for f in folds],
                "averaged": [f["fold"] for f in folds if averaged(f)],
                "diverged": [
                    {
                        "fold": f["fold"],
                        **(f.get("diverged") or {}),
                        "weights": f.get("weights"),
                        "best_epoch": f.get("best_epoch"),
                    }
                    for f in folds
                    if not averaged(f)
                ],
                "complete": len(folds) == config.folds,
                "metric_names": names,
                "columns": titles,
                "per_fold": [{"fold": f["fold"], **f["metrics"]} for f in folds],
                "n_averaged": sum(1 for f in folds if averaged(f)),
                "mean": mean,
                "std": std,
                "std_ddof": STD_DDOF,
                "table": table,
            },
        )
    return CVResult(
        config, run_dir, folds, mean, std, len(folds) == config.folds, table
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
    config = saved_config(run_dir)
    folds, mean, std, table = collect(config, Path(run_dir))
    return CVResult(
        config, Path(run_dir), folds, mean, std, len(folds) == config.folds, table
    )


def saved_config(run_dir: str | os.PathLike) -> CVConfig:
    """The configuration saved in a run folder's ``config.json``.

    Raises:
        FileNotFoundError: if the folder has no ``config.json``.
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No {CONFIG_FILE} in '{run_dir}': not a run folder.")
    return CVConfig.from_dict(files.load_config_file(path), source=str(path))
