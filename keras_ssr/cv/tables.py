"""Tables for a paper: runs' held-out scores, and runs compared fold by fold.

``keras-ssr cv summarize RUN --format markdown|latex|csv`` and
``keras-ssr cv compare RUN_A RUN_B ...`` write their tables here, in the
form of the follow-up's README: one row per run, each score as
``mean ± std`` over the folds in percent (the sample standard deviation,
``ddof=1``; none for a single fold), the best mean in bold, and every run
after the first marked against it by a paired t-test over the matched
folds: † for p ≤ 0.05, ‡ for p ≤ 0.01.

Runs are compared only when their folds are the same samples: the same
dataset, fold count, validation fraction and sample limit in
``config.json``, the same data fingerprint in ``run.json``, the same
held-out indices and fit/validation sizes in every fold's ``metrics.json``,
and the same folds finished and averaged.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import warnings
from collections.abc import Sequence

from keras_ssr.cv import files
from keras_ssr.cv.results import (
    COLUMNS,
    RUN_FILE,
    STD_DDOF,
    CVResult,
    load_result,
)

__all__ = ["FORMATS", "MARKS", "Comparison", "compare", "score_table"]

#: The forms of :func:`score_table`.
FORMATS = ("text", "markdown", "latex", "csv")
#: Significance marks, strictest first: ``(p bound, mark)``, as the
#: follow-up's README marks its paired t-tests.
MARKS = ((0.01, "‡"), (0.05, "†"))
#: ``config.json`` fields that decide which samples each fold holds out and
#: fits: runs that differ in one have different folds.
SPLIT_FIELDS = ("dataset", "folds", "val_fraction", "max_samples")
#: Per fold, what ``metrics.json`` records of its split.
FOLD_SPLIT_KEYS = ("test_indices", "n_fit", "n_val")

_LATEX_MARKS = {"‡": r"^{\ddagger}", "†": r"^{\dagger}"}
_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"}
_LATEX_SPECIAL.update(
    {"~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}
)


def mark(p_value: float | None) -> str:
    """The significance mark of a p-value (``""`` for none or NaN).

    Example:
        >>> [mark(p) for p in (0.001, 0.01, 0.03, 0.05, 0.2, float("nan"))]
        ['‡', '‡', '†', '†', '', '']
    """
    if p_value is None or math.isnan(p_value):
        return ""
    return next((symbol for bound, symbol in MARKS if p_value <= bound), "")


@dataclasses.dataclass
class Comparison:
    """Runs compared with the first by paired t-tests over their folds.

    Attributes:
        results: each run's :class:`~keras_ssr.cv.CVResult`, the baseline
            first.
        labels: the runs' row titles (their names; their paths where two
            names are alike).
        folds: the matched folds (0-based), each averaged in every run.
        p_values: for each run after the baseline, ``{metric: p}`` of
            ``scipy.stats.ttest_rel`` (two-sided) between its fold scores
            and the baseline's; NaN where the two agree on every fold.
    """

    results: list[CVResult]
    labels: list[str]
    folds: list[int]
    p_values: list[dict[str, float]]

    def table(self, format: str = "text", columns: Sequence[str] | None = None) -> str:
        """The runs' :func:`score_table`, marked by significance.

        The text form adds the p-values under the table.
        """
        table = score_table(
            self.results,
            format,
            columns,
            labels=self.labels,
            p_values=[{}, *self.p_values],
        )
        if format != "text":
            return table
        names = _chosen(self.results, columns)
        titles = self.results[0].columns
        lines = [
            "",
            f"p-values of paired t-tests (scipy.stats.ttest_rel, two-sided) over "
            f"folds {', '.join(map(str, self.folds))}, against "
            f"{self.labels[0]}:",
        ]
        for label, p_values in zip(self.labels[1:], self.p_values):
            cells = ", ".join(f"{titles[n]} {_p(p_values[n])}" for n in names)
            lines.append(f"  {label}: {cells}")
        return table + "\n".join(lines) + "\n"


def _p(value: float) -> str:
    return "- (equal on every fold)" if math.isnan(value) else f"{value:.4g}"


def compare(run_dirs: Sequence[str | os.PathLike]) -> Comparison:
    """Compares runs with the first by paired t-tests over their matched folds.

    For every metric and every run after the first, ``scipy.stats.ttest_rel``
    pairs the run's held-out score of fold ``k`` with the first run's.

    Args:
        run_dirs: two or more run folders; the first is the baseline.

    Returns:
        A :class:`Comparison`.

    Raises:
        ValueError: for fewer than two runs; runs whose folds are not the
            same samples (the differing field, fingerprint or fold is
            named); runs with other finished or averaged folds (each run's
            missing folds are named); fewer than two matched folds; runs
            with other metric sets or metrics.
        FileNotFoundError: for a folder without ``config.json``.
        ImportError: without SciPy (``pip install keras-ssr[stats]``).

    Example:
        >>> comparison = compare(["runs/unet-kvasir", "runs/ssr_unet-kvasir"])
        ... # doctest: +SKIP
        >>> print(comparison.table("markdown"))  # doctest: +SKIP
    """
    if isinstance(run_dirs, (str, os.PathLike)) or len(run_dirs) < 2:
        raise ValueError(
            f"Comparing needs two or more run folders, the baseline first. "
            f"Received: {run_dirs!r}"
        )
    try:
        from scipy import stats
    except ImportError as error:
        raise ImportError(
            "Comparing runs needs SciPy (scipy.stats.ttest_rel): "
            "pip install keras-ssr[stats]"
        ) from error
    results = [load_result(path) for path in run_dirs]
    labels = _labels(results, run_dirs)
    _check_same_splits(results, labels)
    folds = _matched_folds(results, labels)
    names = list(results[0].columns)
    p_values = []
    for result in results[1:]:
        row = {}
        for name in names:
            with warnings.catch_warnings():  # equal scores: NaN, said so
                warnings.simplefilter("ignore", RuntimeWarning)
                test = stats.ttest_rel(result.metric(name), results[0].metric(name))
            row[name] = float(test.pvalue)
        p_values.append(row)
    return Comparison(results, labels, folds, p_values)


def _labels(results: Sequence[CVResult], run_dirs) -> list[str]:
    names = [r.config.run_name for r in results]
    if len(set(names)) == len(names):
        return names
    return [os.fspath(path) for path in run_dirs]


def _check_same_splits(results: Sequence[CVResult], labels: Sequence[str]) -> None:
    base, base_label = results[0], labels[0]
    for result, label in zip(results[1:], labels[1:]):
        where = f"'{label}' and '{base_label}'"
        if result.config.metrics != base.config.metrics:
            raise ValueError(
                f"The runs {where} score with other metric sets "
                f"(metrics={result.config.metrics!r} and "
                f"{base.config.metrics!r}): their Dice and IoU measure "
                "different things."
            )
        for field in SPLIT_FIELDS:
            ours, theirs = getattr(result.config, field), getattr(base.config, field)
            if ours != theirs:
                raise ValueError(
                    f"The runs {where} have other folds: {field}={ours!r} and "
                    f"{field}={theirs!r}. A paired test needs the same folds."
                )
        data = [
            _fingerprint(r, name) for r, name in ((result, label), (base, base_label))
        ]
        if data[0] != data[1]:
            raise ValueError(
                f"The runs {where} were trained on other data (the fingerprints in "
                f"their {RUN_FILE} differ: {data[0]} and {data[1]}). A paired test "
                "needs the same samples in every fold."
            )
        theirs = {f["fold"]: f for f in base.folds}
        for record in result.folds:
            other = theirs.get(record["fold"])
            if other is None:
                continue
            for key in FOLD_SPLIT_KEYS:
                if key in record and key in other and record[key] != other[key]:
                    raise ValueError(
                        f"Fold {record['fold']} of the runs {where} holds other "
                        f"samples (its `{key}` differs in metrics.json). A paired "
                        "test needs the same folds."
                    )
        if list(result.columns) != list(base.columns):
            raise ValueError(
                f"The runs {where} recorded other metrics: "
                f"{list(result.columns)} and {list(base.columns)}."
            )


def _fingerprint(result: CVResult, label: str) -> dict:
    record = files.read_json(result.run_dir / RUN_FILE)
    data = record.get("data") if isinstance(record, dict) else None
    if not isinstance(data, dict):
        raise ValueError(
            f"The run '{label}' has no data fingerprint ({RUN_FILE} is missing or "
            f"unreadable in '{result.run_dir}'), so its folds cannot be matched."
        )
    return data


def _matched_folds(results: Sequence[CVResult], labels: Sequence[str]) -> list[int]:
    averaged = [set(r.averaged) for r in results]
    union = set().union(*averaged)
    missing = {
        label: sorted(union - folds)
        for label, folds in zip(labels, averaged)
        if union - folds
    }
    if missing:
        details = "; ".join(
            f"'{label}' lacks fold(s) {folds}" for label, folds in missing.items()
        )
        raise ValueError(
            f"The runs have other averaged folds ({details}; a fold is missing "
            "until it finishes, and a diverged fold is not averaged). A paired "
            "test needs every fold in every run: finish them (keras-ssr cv "
            "--fold K) first."
        )
    folds = sorted(union)
    if len(folds) < 2:
        raise ValueError(
            f"A paired t-test needs two or more folds in every run; the runs "
            f"have {len(folds)} averaged fold(s) ({folds})."
        )
    return folds


def _chosen(results: Sequence[CVResult], columns: Sequence[str] | None) -> list[str]:
    """The metrics shown: ``columns``, or every recorded score but the loss."""
    recorded = list(results[0].columns)
    if columns is None:
        return [n for n in recorded if n != "loss"]
    unknown = [n for n in columns if n not in recorded]
    if unknown or not columns:
        raise ValueError(
            f"`columns` must name recorded metrics: {', '.join(recorded)}. "
            f"Received: columns={list(columns)!r}"
        )
    return list(columns)


def _percent(name: str) -> bool:
    """Whether a metric is a score in [0, 1], shown in percent."""
    return name != "loss" and any(name in known for known in COLUMNS.values())


def _best(name: str, means: Sequence[float | None]) -> float | None:
    """The best mean of a column: the least loss, else the greatest score."""
    values = [m for m in means if m is not None]
    if len(values) < 2 or not (name == "loss" or _percent(name)):
        return None
    return min(values) if name == "loss" else max(values)


def score_table(
    results: Sequence[CVResult],
    format: str = "markdown",
    columns: Sequence[str] | None = None,
    *,
    labels: Sequence[str] | None = None,
    p_values: Sequence[dict[str, float]] | None = None,
) -> str:
    """Runs' held-out scores as a paper's table (the follow-up README's form).

    One row per run: its name, the number of folds averaged, and per metric
    ``mean ± std`` over those folds (sample std, ``ddof=1``; the mean alone
    for one fold). Scores are in percent with two decimals, the loss as it
    is with four. With several runs the best mean of each column is bold
    (Markdown, LaTeX). ``p_values`` mark a cell † (p ≤ 0.05) or ‡
    (p ≤ 0.01). A note under the table says all this (not in CSV).

    Args:
        results: the runs' :class:`~keras_ssr.cv.CVResult` (one or more, all
            with the same metric set).
        format: ``"markdown"``, ``"latex"``, ``"csv"`` or ``"text"``.
        columns: the logged metric names to show, in order; ``None``: every
            recorded score but the loss.
        labels: the rows' titles; ``None``: the runs' names.
        p_values: per run, ``{metric: p}`` (empty for the baseline).

    Returns:
        The table, ending with a newline.

    Raises:
        ValueError: for an unknown format, an unknown column, or runs
            without averaged folds.

    Example:
        >>> print(score_table([load_result("runs/unet-kvasir")], "markdown"))
        ... # doctest: +SKIP
    """
    if format not in FORMATS:
        raise ValueError(
            f"`format` must be one of {', '.join(FORMATS)}. Received: format={format!r}"
        )
    empty = [r.config.run_name for r in results if not r.mean]
    if empty:
        raise ValueError(
            f"No averaged fold to tabulate in {', '.join(map(repr, empty))}: "
            "no fold is finished, or every finished one diverged."
        )
    names = _chosen(results, columns)
    titles = results[0].columns
    labels = (
        list(labels) if labels is not None else [r.config.run_name for r in results]
    )
    p_values = list(p_values) if p_values is not None else [{} for _ in results]
    best = {n: _best(n, [r.mean.get(n) for r in results]) for n in names}
    header = ["Run", "Folds", *(titles[n] for n in names)]
    rows = []
    for result, label, p_row in zip(results, labels, p_values):
        cells = [label, str(len(result.averaged))]
        for name in names:
            cells.append(
                _cell(
                    result,
                    name,
                    mark(p_row.get(name)),
                    result.mean[name] == best[name],
                    format,
                )
            )
        rows.append(cells)
    render = {"markdown": _markdown, "latex": _latex, "csv": _csv, "text": _text}
    table = render[format](header, rows)
    if format == "csv":
        return table
    tested = None
    if any(p_values):
        tested = f"the {len(results[0].averaged)} folds against {labels[0]}"
    return table + _note(names, tested, len(results) > 1, format)


def _cell(result: CVResult, name: str, symbol: str, bold: bool, format: str) -> str:
    scale, digits = (100.0, 2) if _percent(name) else (1.0, 4)
    mean = f"{result.mean[name] * scale:.{digits}f}"
    std = result.std.get(name)
    spread = None if std is None else f"{std * scale:.{digits}f}"
    if format == "latex":
        value = mean if spread is None else f"{mean} \\pm {spread}"
        value = f"\\mathbf{{{value}}}" if bold else value
        return f"${value}{_LATEX_MARKS.get(symbol, '')}$"
    value = mean if spread is None else f"{mean} ± {spread}"
    if format == "markdown":
        value += f"<sup>{symbol}</sup>" if symbol else ""
        return f"**{value}**" if bold else value
    return value + symbol


def _note(names: Sequence[str], tested: str | None, several: bool, format: str) -> str:
    """What the table shows, under it (LaTeX: as comments)."""
    units = ""
    if any(map(_percent, names)):
        units = "; scores in %" + (", the loss as it is" if "loss" in names else "")
    lines = [
        f"Mean ± sample standard deviation (ddof={STD_DDOF}) over the folds "
        f"(Folds: how many; the mean alone for one){units}."
    ]
    if tested:
        lines += [
            f"{symbol} p ≤ {bound} in a paired t-test over {tested}."
            for bound, symbol in reversed(MARKS)
        ]
    if several and format != "text":
        lines.append("Bold: the best mean of each column.")
    if format == "markdown":
        for symbol in dict(MARKS).values():
            lines = [line.replace(symbol, f"<sup>{symbol}</sup>") for line in lines]
        return "\n" + "\n\n".join(lines) + "\n"
    if format == "latex":
        return "".join(f"% {line}\n" for line in lines)
    return "\n" + "\n".join(lines) + "\n"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "".join("| " + " | ".join(cells) + " |\n" for cells in lines)


def _latex_text(text: str) -> str:
    """Text with LaTeX's special characters escaped."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def _latex(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A ``tabular``; the cells after the label and fold count are math already."""
    lines = [
        [_latex_text(c) for c in header],
        *([_latex_text(r[0]), r[1], *r[2:]] for r in rows),
    ]
    body = [" & ".join(cells) + r" \\" for cells in lines]
    return "\n".join(
        [
            r"\begin{tabular}{lr" + "c" * (len(header) - 2) + "}",
            r"\hline",
            body[0],
            r"\hline",
            *body[1:],
            r"\hline",
            r"\end{tabular}",
            "",
        ]
    )


def _csv(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerows([header, *rows])
    return text.getvalue()


def _text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(
            [
                cells[0].ljust(widths[0]),
                *(c.rjust(w) for c, w in zip(cells[1:], widths[1:])),
            ]
        )

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *map(line, rows)]) + "\n"
