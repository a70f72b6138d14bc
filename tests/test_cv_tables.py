"""``keras-ssr cv summarize --format`` and ``keras-ssr cv compare``.

The runs are synthetic run folders (``config.json``, ``run.json``,
``fold_<k>/metrics.json`` as the runner writes them) holding scores chosen
here; every expected number is computed here from those scores, with NumPy
(mean, ``std(ddof=1)``) and ``scipy.stats.ttest_rel``.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from keras_ssr import cli, cv, metrics
from keras_ssr.cv import results, tables

FOLDS = 5
BATCH_ORDER = ("loss", *metrics.SEGMENTATION_METRIC_NAMES)
_PER_IMAGE = ("loss", *metrics.PER_IMAGE_METRIC_NAMES)
#: The per-image set in the order the runner writes metrics.json: the
#: paper's names first, so the IoU comes before the per-image Dice.
PER_IMAGE_ORDER = (
    *(n for n in BATCH_ORDER if n in _PER_IMAGE),
    *(n for n in _PER_IMAGE if n not in BATCH_ORDER),
)
BASE_DICE = np.array([0.70, 0.72, 0.68, 0.74, 0.71])
CELL = re.compile(r"(-?\d+\.\d+)(?: ± (\d+\.\d+))?")


def _scores(seed: int, names=PER_IMAGE_ORDER, folds=FOLDS) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.uniform(0.4, 0.95, folds).round(3) for n in names}


def _write_run(
    root: Path,
    name: str,
    scores: dict[str, np.ndarray],
    *,
    metrics_set: str = "per_image",
    folds: int = FOLDS,
    finished=None,
    diverged=(),
    fingerprint: str = "0123abcd",
    test_indices=None,
    **config,
) -> Path:
    """A run folder as the runner leaves it; returns its path."""
    settings = dict(dataset="folder", images_dir="i", masks_dir="m", folds=folds)
    settings.update(metrics=metrics_set, output_dir=str(root), name=name, **config)
    config = cv.CVConfig(**settings)
    run = config.run_dir
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    data = {"n_samples": 10 * folds, "x_shape": [10 * folds, 32, 32, 3]}
    (run / "run.json").write_text(
        json.dumps({"data": {**data, "blake2b": fingerprint}})
    )
    for k in range(folds) if finished is None else finished:
        fold = run / f"fold_{k}"
        fold.mkdir()
        indices = list(range(10 * k, 10 * k + 10))
        if test_indices is not None and k in test_indices:
            indices = test_indices[k]
        record = {
            "fold": k,
            "metrics": {n: float(v[k]) for n, v in scores.items()},
            "weights": "best",
            "best_epoch": 2,
            "diverged": None,
            "n_fit": 36,
            "n_val": 4,
            "n_test": 10,
            "test_indices": indices,
        }
        if k in diverged:
            record["diverged"] = {"epoch": 1, "loss": "nan", "val_loss": "nan"}
            record["metrics"], record["weights"] = {}, None
        (fold / "metrics.json").write_text(json.dumps(record))
    return run


def _main(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main(["cv", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


def _numbers(cell: str) -> tuple[float, float | None]:
    match = CELL.search(cell)
    assert match, cell
    return float(match[1]), None if match[2] is None else float(match[2])


def _check_cell(cell: str, values, scale=100.0):
    """``mean ± std`` in the cell, to its two printed decimals (NumPy's)."""
    mean, std = _numbers(cell)
    values = np.asarray(values, dtype=np.float64)
    assert abs(mean - np.mean(values) * scale) <= 0.005 + 1e-9, cell
    if len(values) == 1:
        assert std is None, cell  # no std of one fold
    else:
        assert abs(std - np.std(values, ddof=1) * scale) <= 0.005 + 1e-9, cell


def _markdown_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert set(rows[1]) == {"---"}
    return [rows[0], *rows[2:]]


# --------------------------------------------------------------------------
# Columns
# --------------------------------------------------------------------------


def test_columns_say_what_they_measure_in_one_order():
    # Every logged name of both metric sets has a column, in the set's order.
    assert tuple(results.COLUMNS["batch"]) == BATCH_ORDER
    assert tuple(results.COLUMNS["per_image"]) == (
        "loss",
        *metrics.PER_IMAGE_METRIC_NAMES,
    )
    batch, per_image = (list(results.COLUMNS[s].values()) for s in results.COLUMNS)
    # The same order of what is measured; Dice and IoU say which ones.
    assert batch[:-2] == per_image[:-2]
    assert batch[-2:] == ["Dice (batch)", "IoU (both classes)"]
    assert per_image[-2:] == ["Dice (per image)", "IoU (foreground)"]


def test_the_per_image_table_puts_dice_before_iou_as_the_batch_one(tmp_path, capsys):
    batch = _write_run(tmp_path, "batch", _scores(1, BATCH_ORDER), metrics_set="batch")
    per_image = _write_run(tmp_path, "per_image", _scores(2))  # IoU first in files
    expected = {
        batch: ["fold", *results.COLUMNS["batch"].values()],
        per_image: ["fold", *results.COLUMNS["per_image"].values()],
    }
    for run, header in expected.items():
        status, out, _ = _main(capsys, "summarize", run)
        assert status == 0
        line = out.splitlines()[2]  # after the heading and a blank line
        titles = re.split(r"\s{2,}", line.strip())
        assert titles == header
        summary = json.loads((run / "summary.json").read_text())
        assert list(summary["columns"].values()) == header[1:]


# --------------------------------------------------------------------------
# summarize
# --------------------------------------------------------------------------


def test_summary_files_and_text_use_the_sample_std(tmp_path, capsys):
    scores = _scores(3)
    run = _write_run(tmp_path, "run", scores)
    status, out, _ = _main(capsys, "summarize", run)
    assert status == 0
    assert out.startswith(
        "Held-out scores (all 5 folds; mean and sample std (ddof=1) over 5 folds):"
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["std_ddof"] == 1 and summary["n_averaged"] == FOLDS
    with open(run / "summary.csv", newline="") as handle:
        rows = {row["fold"]: row for row in csv.DictReader(handle)}
    for name, values in scores.items():
        mean, std = np.mean(values), np.std(values, ddof=1)
        assert summary["mean"][name] == pytest.approx(mean, rel=1e-12)
        assert summary["std"][name] == pytest.approx(std, rel=1e-12)
        assert float(rows["std"][name]) == pytest.approx(std, rel=1e-12)
    lines = out.splitlines()
    assert any(line.startswith("mean (n=5)") for line in lines)
    std_row = next(line for line in lines if line.startswith("std (ddof=1)"))
    dice = float(std_row.split()[-2])  # Dice (per image), then the IoU
    assert dice == pytest.approx(np.std(scores["dice_score"], ddof=1), abs=5e-5)


@pytest.mark.parametrize("form", ["markdown", "latex", "csv"])
def test_summarize_format(tmp_path, capsys, form):
    scores = _scores(4)
    run = _write_run(tmp_path, "ssr-kvasir", scores)
    status, out, _ = _main(capsys, "summarize", run, "--format", form)
    assert status == 0
    # Every score but the loss, in the table's order.
    names = [n for n in results.COLUMNS["per_image"] if n != "loss"]
    titles = ["Run", "Folds", *(results.COLUMNS["per_image"][n] for n in names)]
    if form == "markdown":
        header, *rows = _markdown_rows(out)
        assert "sample standard deviation (ddof=1)" in out
    elif form == "latex":
        assert out.startswith(r"\begin{tabular}{lr" + "c" * len(names) + "}")
        lines = [line for line in out.splitlines() if line.endswith(r" \\")]
        header, *rows = [line[: -len(r" \\")].split(" & ") for line in lines]
        assert all(c.startswith("$") and r" \pm " in c for c in rows[0][2:])
        rows = [[c.replace(r" \pm ", " ± ").strip("$") for c in r] for r in rows]
        assert r"\end{tabular}" in out and "% Mean ± sample standard" in out
    else:
        header, *rows = list(csv.reader(io.StringIO(out)))
    assert header == titles
    assert len(rows) == 1 and rows[0][:2] == ["ssr-kvasir", "5"]
    for name, cell in zip(names, rows[0][2:]):
        _check_cell(cell, scores[name])
    # --columns chooses; the loss is shown as it is (not in percent).
    status, out, _ = _main(
        capsys, "summarize", run, "--format", form, "--columns", "loss,dice_score"
    )
    assert status == 0
    row = (
        _markdown_rows(out)[1]
        if form == "markdown"
        else list(csv.reader(io.StringIO(out)))[1]
        if form == "csv"
        else [
            c.replace(r" \pm ", " ± ").strip("$")
            for c in out.splitlines()[4][: -len(r" \\")].split(" & ")
        ]
    )
    _check_cell(row[2], scores["loss"], scale=1.0)
    _check_cell(row[3], scores["dice_score"])
    assert re.fullmatch(r"\d\.\d{4} ± \d\.\d{4}", row[2])


def test_latex_escapes_the_run_name(tmp_path, capsys):
    run = _write_run(tmp_path, "unet_50%&more", _scores(5))
    status, out, _ = _main(capsys, "summarize", run, "--format", "latex")
    assert status == 0
    assert r"unet\_50\%\&more & 5 & $" in out


def test_a_single_fold_has_a_mean_and_no_std(tmp_path, capsys):
    scores = _scores(6, folds=1)
    run = _write_run(tmp_path, "partial", scores, finished=[0])
    status, out, _ = _main(capsys, "summarize", run)
    assert status == 0
    assert out.startswith("Held-out scores (1 of 5 folds; mean of 1 fold, no std):")
    std_row = next(line for line in out.splitlines() if line.startswith("std"))
    assert set(std_row.split()[2:]) == {"-"}
    assert "0.0000" not in std_row
    summary = json.loads((run / "summary.json").read_text())
    assert summary["std"] == {} and summary["n_averaged"] == 1
    with open(run / "summary.csv", newline="") as handle:
        assert [row["fold"] for row in csv.DictReader(handle)] == ["0", "mean"]
    status, out, _ = _main(capsys, "summarize", run, "--format", "markdown")
    header, row = _markdown_rows(out)
    assert row[1] == "1"
    assert all("±" not in cell for cell in row[2:])
    dice = row[header.index("Dice (per image)")]
    assert dice == f"{scores['dice_score'][0] * 100:.2f}"


def test_diverged_folds_are_counted_out(tmp_path, capsys):
    scores = _scores(7)
    run = _write_run(tmp_path, "run", scores, diverged=(2,))
    status, out, _ = _main(capsys, "summarize", run, "--format", "csv")
    assert status == 0
    row = list(csv.reader(io.StringIO(out)))[1]
    assert row[1] == "4"
    kept = [0, 1, 3, 4]
    titles = list(results.COLUMNS["per_image"])[1:]
    _check_cell(row[2 + titles.index("dice_score")], scores["dice_score"][kept])


# --------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------


def _compared_runs(root: Path) -> dict[str, tuple[Path, dict]]:
    """A baseline and three runs whose Dice differs from it by design:
    clearly (p < 0.01), somewhat (0.01 < p <= 0.05) and not at all."""
    shifts = {
        "unet": np.zeros(FOLDS),
        "multi": np.array([0.020, 0.030, 0.025, 0.028, 0.022]),
        "mono": np.array([0.02, 0.04, 0.0, 0.03, 0.02]),
        "se": np.array([0.01, -0.02, 0.015, -0.01, 0.005]),
    }
    runs = {}
    for seed, (name, shift) in enumerate(shifts.items()):
        scores = _scores(10 + seed)
        scores["dice_score"] = BASE_DICE + shift
        runs[name] = (_write_run(root, name, scores), scores)
    return runs


def test_compare_is_scipy_paired_t_test_per_metric(tmp_path, capsys):
    runs = _compared_runs(tmp_path)
    base = runs["unet"][1]
    expected = {
        name: {n: stats.ttest_rel(v, base[n]).pvalue for n, v in scores.items()}
        for name, (_, scores) in list(runs.items())[1:]
    }
    # The design covers every mark: ‡, † and none.
    assert expected["multi"]["dice_score"] <= 0.01
    assert 0.01 < expected["mono"]["dice_score"] <= 0.05
    assert expected["se"]["dice_score"] > 0.05

    comparison = tables.compare([path for path, _ in runs.values()])
    assert comparison.labels == list(runs) and comparison.folds == list(range(5))
    for name, p_values in zip(list(runs)[1:], comparison.p_values):
        assert p_values == pytest.approx(expected[name], rel=1e-12)

    status, out, _ = _main(
        capsys, "compare", *(p for p, _ in runs.values()), "--format", "markdown"
    )
    assert status == 0
    header, *rows = _markdown_rows(out)
    assert [r[0] for r in rows] == list(runs)
    names = [n for n in results.COLUMNS["per_image"] if n != "loss"]
    for row, (name, (_, scores)) in zip(rows, runs.items()):
        for column, cell in zip(names, row[2:]):
            _check_cell(cell.strip("*"), scores[column])
            p = expected.get(name, {}).get(column)
            mark = "" if p is None or p > 0.05 else ("‡" if p <= 0.01 else "†")
            assert cell.strip("*").endswith(f"<sup>{mark}</sup>" if mark else "")
            assert ("<sup>" in cell) == bool(mark)
            # Bold: the best mean of the column over the runs.
            best = max(np.mean(s[column]) for _, s in runs.values())
            assert cell.startswith("**") == (np.mean(scores[column]) == best)
    assert (
        "<sup>†</sup> p ≤ 0.05 in a paired t-test over the 5 folds against unet" in out
    )
    assert "<sup>‡</sup> p ≤ 0.01" in out

    # The best loss is the least.
    paths = [p for p, _ in runs.values()]
    status, out, _ = _main(
        capsys, "compare", *paths, "--format", "markdown", "--columns", "loss"
    )
    losses = [np.mean(scores["loss"]) for _, scores in runs.values()]
    bold = [row[2].startswith("**") for row in _markdown_rows(out)[1:]]
    assert bold == [loss == min(losses) for loss in losses] and sum(bold) == 1

    status, out, _ = _main(capsys, "compare", runs["unet"][0], runs["mono"][0])
    assert status == 0
    line = next(line for line in out.splitlines() if line.startswith("  mono:"))
    p = expected["mono"]["dice_score"]
    assert f"Dice (per image) {p:.4g}" in line


def test_equal_runs_have_no_p_value(tmp_path, capsys):
    scores = _scores(20)
    a = _write_run(tmp_path, "a", scores)
    b = _write_run(tmp_path, "b", scores)
    comparison = tables.compare([a, b])
    assert all(np.isnan(p) for p in comparison.p_values[0].values())
    status, out, _ = _main(capsys, "compare", a, b, "--format", "csv")
    assert status == 0 and "†" not in out and "‡" not in out
    status, out, _ = _main(capsys, "compare", a, b)
    assert "- (equal on every fold)" in out


def test_a_run_saved_with_a_former_metric_set_name_compares(tmp_path, capsys):
    """config.json of an earlier version spells the per-image set "followup":
    it reads as "per_image", titled and compared as a run saved today."""
    scores, old_scores = _scores(21), _scores(22)
    now = _write_run(tmp_path, "now", scores)
    old = _write_run(tmp_path, "old", old_scores)
    saved = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({**saved, "metrics": "followup"}))
    with pytest.warns(DeprecationWarning, match="per_image"):
        assert results.load_result(old).config.metrics == "per_image"
    comparison = tables.compare([now, old])  # no "other metric sets"
    assert set(comparison.p_values[0]) == set(scores)
    expected = stats.ttest_rel(old_scores["dice_score"], scores["dice_score"]).pvalue
    assert comparison.p_values[0]["dice_score"] == pytest.approx(expected, rel=1e-12)
    for run in (now, old):
        status, out, _ = _main(capsys, "summarize", run)
        assert status == 0
        titles = re.split(r"\s{2,}", out.splitlines()[2].strip())
        assert titles == ["fold", *results.COLUMNS["per_image"].values()]


@pytest.mark.parametrize(
    "other, message",
    [
        ({"folds": 4}, "folds=4 and folds=5"),
        ({"val_fraction": 0.2}, "val_fraction=0.2 and val_fraction=0.1"),
        ({"max_samples": 40}, "max_samples=40 and max_samples=None"),
        ({"fingerprint": "ffff0000"}, "other data"),
        ({"test_indices": {3: list(range(40, 49)) + [0]}}, "Fold 3 .* `test_indices`"),
        ({"metrics_set": "batch"}, "other metric sets"),
    ],
)
def test_compare_refuses_runs_with_other_folds(tmp_path, capsys, other, message):
    base = _write_run(tmp_path, "base", _scores(30))
    folds = other.pop("folds", FOLDS)
    names = BATCH_ORDER if other.get("metrics_set") == "batch" else PER_IMAGE_ORDER
    run = _write_run(tmp_path, "other", _scores(31, names, folds), folds=folds, **other)
    with pytest.raises(ValueError, match=message):
        tables.compare([base, run])
    status, out, err = _main(capsys, "compare", base, run)
    assert status == 2 and out == ""
    assert err.startswith("keras-ssr cv: error:") and len(err.splitlines()) == 1


def test_compare_needs_the_same_finished_folds(tmp_path, capsys):
    base = _write_run(tmp_path, "base", _scores(40))
    partial = _write_run(tmp_path, "partial", _scores(41), finished=[0, 1, 2])
    with pytest.raises(ValueError, match=r"'partial' lacks fold\(s\) \[3, 4\]"):
        tables.compare([base, partial])
    diverged = _write_run(tmp_path, "diverged", _scores(42), diverged=(1,))
    with pytest.raises(ValueError, match=r"'diverged' lacks fold\(s\) \[1\]"):
        tables.compare([base, diverged])
    # Both partial alike: the paired test runs over the folds both have.
    other = _write_run(tmp_path, "other", _scores(43), finished=[0, 1, 2])
    comparison = tables.compare([partial, other])
    assert comparison.folds == [0, 1, 2]
    partial_dice = _scores(41)["dice_score"][:3]
    other_dice = _scores(43)["dice_score"][:3]
    assert comparison.p_values[0]["dice_score"] == pytest.approx(
        stats.ttest_rel(other_dice, partial_dice).pvalue, rel=1e-12
    )
    # A t-test needs two folds.
    one = _write_run(tmp_path, "one", _scores(44), finished=[0])
    one_more = _write_run(tmp_path, "one_more", _scores(45), finished=[0])
    with pytest.raises(ValueError, match="two or more folds"):
        tables.compare([one, one_more])


def test_compare_errors(tmp_path, capsys, monkeypatch):
    base = _write_run(tmp_path, "base", _scores(50))
    run = _write_run(tmp_path, "run", _scores(51))
    for argv, message in [
        (["compare", base], "two or more run folders"),
        (["compare", base, tmp_path / "nothing"], "No config.json"),
        (["compare", base, run, "--columns", "dice"], "must name recorded metrics"),
        (["summarize", base, "--columns", "dice_score"], "--columns chooses"),
    ]:
        status, out, err = _main(capsys, *argv)
        assert status == 2 and message in err and len(err.splitlines()) == 1
    (run / "run.json").unlink()
    with pytest.raises(ValueError, match="no data fingerprint"):
        tables.compare([base, run])
    monkeypatch.setitem(sys.modules, "scipy", None)
    with pytest.raises(ImportError, match=r"keras-ssr\[stats\]"):
        tables.compare([base, run])
