"""keras_ssr.cv under faults: NaN losses, ambiguous config keys, early errors.

A fold whose loss turns NaN must end cleanly, name the epoch, keep the
weights of its best *finite* epoch (or none), let the next fold run, and be
left out of the mean; the checkpoint and ``metrics.json`` must name the same
epoch. The checkpoint is checked by recomputing its validation loss in NumPy
and comparing it with the epoch log's value for the epoch ``metrics.json``
names.
"""

from __future__ import annotations

import csv
import json
import math

import keras
import numpy as np
import pytest

from keras_ssr import cli, cv
from tests.test_cv import EPOCHS, SIZE, _bce_dice, _config, _run, _write_arrays


class NaNValidationAt(keras.callbacks.Callback):
    """Fault injection: fold 0's ``val_loss`` is NaN at the given epochs."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs, self.fold = set(epochs), -1

    def on_train_begin(self, logs=None):
        self.fold += 1

    def on_epoch_end(self, epoch, logs=None):
        if self.fold == 0 and epoch + 1 in self.epochs:
            logs["val_loss"] = float("nan")


def _log(fold_dir):
    with open(fold_dir / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_nan_in_epoch_1_and_later_checkpoint_and_record_agree(tmp_path):
    data = _write_arrays(tmp_path / "data")
    config = _config(data, tmp_path / "runs", epochs=4)
    result = _run(config, callbacks=[NaNValidationAt({1, 3})])

    fold_dir = config.run_dir / "fold_0"
    record = json.loads((fold_dir / "metrics.json").read_text())
    rows = _log(fold_dir)
    val_losses = [float(r["val_loss"]) for r in rows]
    assert [math.isnan(v) for v in val_losses] == [True, False, True, False]
    finite = {i + 1: v for i, v in enumerate(val_losses) if math.isfinite(v)}
    best_epoch = min(finite, key=finite.get)
    assert record["diverged"]["epoch"] == 1
    assert record["diverged"]["val_loss"] == "nan"
    assert [e["epoch"] for e in record["nonfinite_epochs"]] == [1, 3]
    assert record["weights"] == "best" and record["best_epoch"] == best_epoch
    assert record["best_val_loss"] == pytest.approx(finite[best_epoch], rel=1e-6)

    # The checkpoint holds that epoch's weights: its validation loss,
    # recomputed in NumPy, is the one logged for that epoch.
    x = np.load(data[0]).transpose(0, 2, 3, 1).astype(np.float32) / 255.0
    y = (np.load(data[1]).transpose(0, 2, 3, 1) >= 128).astype(np.float32)
    model = cv.build_model(config, (SIZE, SIZE, 3))
    model.load_weights(str(fold_dir / "best.weights.h5"))
    v = slice(19, 20)  # fold 0 fits 10..18 and validates on the last one
    p = np.asarray(model.predict(x[v], verbose=0))
    assert _bce_dice(y[v], p) == pytest.approx(finite[best_epoch], abs=1e-5)

    # The next fold ran normally; the summary averages it alone and says so.
    assert result.trained == [0, 1] and result.diverged == [0]
    other = json.loads((config.run_dir / "fold_1" / "metrics.json").read_text())
    assert other["diverged"] is None and other["nonfinite_epochs"] == []
    summary = json.loads((config.run_dir / "summary.json").read_text())
    assert summary["finished"] == [0, 1] and summary["averaged"] == [1]
    assert [(d["fold"], d["epoch"]) for d in summary["diverged"]] == [(0, 1)]
    assert summary["mean"] == pytest.approx(other["metrics"], rel=1e-12)
    # One averaged fold: its mean, and no standard deviation.
    assert summary["std"] == {} and summary["n_averaged"] == 1
    std_row = next(line for line in result.table.splitlines() if line[:3] == "std")
    assert set(std_row.split()[2:]) == {"-"}  # "std (ddof=1)  -  -  ..."
    assert "* fold 0 diverged at epoch 1" in result.table
    assert "not in the mean" in result.table
    with open(config.run_dir / "summary.csv", newline="") as handle:
        status = {r["fold"]: r["status"] for r in csv.DictReader(handle)}
    assert (status["0"], status["1"]) == ("diverged", "averaged")


def test_diverging_optimiser_ends_cleanly_and_resumes(tmp_path, capsys):
    """Adam at 1e30 makes val_loss NaN from epoch 1: no weights are kept."""
    data = _write_arrays(tmp_path / "data")
    config = _config(data, tmp_path / "runs", learning_rate=1e30, epochs=3)
    argv = ["cv", "--dataset", "isic", "--x-path", str(data[0])]
    argv += ["--y-path", str(data[1]), "--target-size", f"{SIZE}", "--model", "unet"]
    argv += ["--levels", "4,8", "-k", "2", "--epochs", "3", "--lr", "1e30"]
    argv += ["-o", str(tmp_path / "runs"), "--name", "run", "--fold", "0"]
    argv += ["--verbose", "0", "--run-eagerly", "--stop-on-nan"]
    assert cli.main(argv) == 0
    out = capsys.readouterr()
    assert "error" not in out.err
    assert "diverged, first non-finite loss at epoch 1" in out.out
    fold_dir = config.run_dir / "fold_0"
    record = json.loads((fold_dir / "metrics.json").read_text())
    assert record["weights"] is None and record["best_epoch"] is None
    assert record["metrics"] == {} and not (fold_dir / "best.weights.h5").exists()
    assert record["diverged"]["epoch"] == 1
    # --stop-on-nan ended the fold in the first epoch whose training loss is
    # NaN; on torch, whose binary_cross_entropy raises on NaN input, the
    # error ends the epoch before it is logged, and is recorded.
    assert record["epochs"] < 3
    if "error" in record["diverged"]:
        assert "RuntimeError" in record["diverged"]["error"]
        assert record["epochs"] == record["diverged"]["epoch"] - 1
    else:
        first_nan_loss = next(
            e["epoch"] for e in record["nonfinite_epochs"] if e["loss"] == "nan"
        )
        assert record["stopped_on_nan"] and record["epochs"] == first_nan_loss
    assert len(_log(fold_dir)) == record["epochs"]
    # A rerun resumes instead of crashing again.
    assert cli.main(argv) == 0
    assert "already finished" in capsys.readouterr().out
    assert cli.main(["cv", "summarize", str(config.run_dir)]) == 0
    assert "fold 0 diverged at epoch 1" in capsys.readouterr().out


def test_stop_on_nan_adds_terminate_on_nan(tmp_path):
    config = cv.CVConfig(dataset="folder", images_dir="i", masks_dir="m")
    assert not any(
        isinstance(c, keras.callbacks.TerminateOnNaN)
        for c in cv.fold_callbacks(config, tmp_path)
    )
    stopping = cv.CVConfig(
        dataset="folder", images_dir="i", masks_dir="m", stop_on_nan=True
    )
    assert isinstance(
        cv.fold_callbacks(stopping, tmp_path)[-1], keras.callbacks.TerminateOnNaN
    )


def test_best_checkpoint_ignores_non_finite_epochs(tmp_path):
    """BestCheckpoint alone, fed epoch logs: it never saves a NaN/inf epoch."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    checkpoint = cv.BestCheckpoint(tmp_path / "best.weights.h5")
    checkpoint.set_model(model)
    checkpoint.on_train_begin()
    for epoch, value in enumerate([math.nan, 0.5, math.inf, 0.7, 0.2, math.nan]):
        checkpoint.on_epoch_end(epoch, {"loss": 1.0, "val_loss": value})
    assert (checkpoint.best_epoch, checkpoint.best) == (5, 0.2)
    assert [e["epoch"] for e in checkpoint.nonfinite] == [1, 3, 6]
    assert checkpoint.nonfinite[1]["val_loss"] == "inf"
    with pytest.raises(KeyError, match="val_loss"):
        checkpoint.on_epoch_end(6, {"loss": 1.0})


# --------------------------------------------------------------------------
# Config keys mean one thing
# --------------------------------------------------------------------------

FOLDER = 'dataset = "folder"\nimages_dir = "i"\nmasks_dir = "m"\n'


@pytest.mark.parametrize(
    "text, match",
    [
        (
            '[model]\nname = "unet"\n',
            r"'name' is inside the table \[model\].*\[output\]",
        ),
        ('[training]\nmodel = "se"\n', r"'model' is inside.*\[training\].*\[model\]"),
        ("[model]\nepochs = 3\n", r"belongs to \[training\].*model.epochs=3"),
        ('[output]\ndataset = "isic"\n', r"belongs to \[data\]"),
    ],
)
def test_a_key_in_another_table_is_an_error(tmp_path, text, match):
    path = tmp_path / "cv.toml"
    path.write_text(FOLDER + text)
    with pytest.raises(ValueError, match=match):
        cv.CVConfig.from_file(path)


def test_keys_in_their_own_table_or_at_the_top_level(tmp_path):
    path = tmp_path / "cv.toml"
    path.write_text(
        FOLDER + 'name = "top"\n[model]\nmodel = "se"\n[output]\noutput_dir = "o"\n'
    )
    config = cv.CVConfig.from_file(path)
    assert (config.name, config.model, config.output_dir) == ("top", "se", "o")


# --------------------------------------------------------------------------
# Every error before anything is written
# --------------------------------------------------------------------------


def test_dry_run_builds_the_model_and_writes_nothing(tmp_path, capsys):
    data = _write_arrays(tmp_path / "data")
    out = tmp_path / "out"
    argv = ["cv", "--dataset", "isic", "--x-path", str(data[0])]
    argv += ["--y-path", str(data[1]), "--target-size", f"{SIZE}", "--model", "se"]
    argv += ["--levels", "4,8", "-k", "2", "-o", str(out), "--verbose", "0"]
    assert cli.main([*argv, "--dry-run"]) == 0
    assert "parameters" in capsys.readouterr().out
    # r=64 leaves no hidden unit for 4 channels: only building the model says so.
    assert cli.main([*argv, "--r", "64", "--dry-run"]) == 2
    assert "r=64" in capsys.readouterr().err
    assert cli.main([*argv, "--r", "64", "--epochs", str(EPOCHS)]) == 2
    assert "r=64" in capsys.readouterr().err
    assert not out.exists()  # neither the dry run nor the run wrote anything
