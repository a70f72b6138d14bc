"""keras_ssr.cv: the K-fold runner, its config, resume, CLI; and examples/.

The runs are tiny (20 images of 32x32, 2 folds, channels [4, 8], 2 epochs,
run eagerly) and reuse one module-scoped run where they can. Held-out scores
are checked against NumPy recomputations from the saved best weights, the
splits against explicit index lists, the summary against ``numpy.mean`` and
``numpy.std(..., ddof=1)`` of the folds' files.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import py_compile
import runpy
import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_ssr import cli, cv, layers

try:
    import tomllib
except ImportError:  # Python 3.10: keras_ssr reads TOML with tomli there
    import tomli as tomllib

N, SIZE, FOLDS, EPOCHS = 20, 32, 2, 2
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _write_arrays(folder: Path) -> tuple[Path, Path]:
    """ISIC-style arrays: uint8 images (N, 3, H, W), 0/255 masks (N, 1, H, W)."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (N, 3, SIZE, SIZE), dtype=np.uint8)
    # Masks that depend on the image, so there is something to learn.
    y = (x[:, :1].astype(np.int32) > 128).astype(np.uint8) * 255
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    return folder / "x.npy", folder / "y.npy"


def _config(data: tuple[Path, Path], output: Path, **overrides) -> cv.CVConfig:
    settings = {
        "dataset": "isic",
        "x_path": str(data[0]),
        "y_path": str(data[1]),
        "target_size": (SIZE, SIZE),
        "model": "unet",
        "channels_per_level": (4, 8),
        "folds": FOLDS,
        "epochs": EPOCHS,
        "batch_size": 16,  # >= the test folds' 10 samples: one evaluation batch
        "output_dir": str(output),
        "name": "run",
    }
    settings.update(overrides)
    return cv.CVConfig(**settings)


def _run(config, **kwargs):
    kwargs = {"verbose": 0, "run_eagerly": True, "log": None, **kwargs}
    return cv.run_cv(config, **kwargs)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished run: (config, result, data paths)."""
    root = tmp_path_factory.mktemp("cv")
    data = _write_arrays(root / "data")
    config = _config(data, root / "runs")
    return config, _run(config), data


def _copy_run(config, tmp_path) -> cv.CVConfig:
    """A copy of the finished run elsewhere (only output_dir differs)."""
    shutil.copytree(config.run_dir, tmp_path / "runs" / config.run_name)
    return dataclasses.replace(config, output_dir=str(tmp_path / "runs"))


# --------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------


def test_kfold_indices_are_contiguous_chunks_in_order():
    splits = cv.kfold_indices(7, 3)
    assert [test.tolist() for _, test in splits] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [train.tolist() for train, _ in splits] == [
        [3, 4, 5, 6],
        [0, 1, 2, 5, 6],
        [0, 1, 2, 3, 4],
    ]
    # n % k = 2: the first two folds get one sample more (sklearn's KFold).
    tests = [test.tolist() for _, test in cv.kfold_indices(10, 4)]
    assert tests == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    # Every index is tested exactly once.
    for n, k in [(10, 4), (1000, 10), (13, 13)]:
        tested = np.concatenate([t for _, t in cv.kfold_indices(n, k)])
        np.testing.assert_array_equal(tested, np.arange(n))


def test_validation_is_the_tail_of_the_training_fold():
    train, _ = cv.kfold_indices(N, FOLDS)[0]
    fit, val = cv.validation_split(train, 0.1)
    assert val.tolist() == [19]  # int(10 * 0.1) = 1: the last one
    assert fit.tolist() == list(range(10, 19))
    fit, val = cv.validation_split(np.arange(25), 0.1)  # int(2.5) = 2
    assert (fit.tolist(), val.tolist()) == (list(range(23)), [23, 24])
    train, _ = cv.kfold_indices(1000, 10)[3]  # Kvasir-SEG: 900 -> 810 + 90
    fit, val = cv.validation_split(train, 0.1)
    assert (len(fit), len(val)) == (810, 90)
    np.testing.assert_array_equal(val, np.arange(910, 1000))


@pytest.mark.parametrize(
    "n, folds, match",
    [(3, 4, "n=3, folds=4"), (10, 1, "folds=1"), (10, 2.0, "folds=2.0")],
)
def test_split_errors(n, folds, match):
    with pytest.raises((ValueError, TypeError), match=match):
        cv.kfold_indices(n, folds)
    with pytest.raises(ValueError, match="fraction=1.0"):
        cv.validation_split(np.arange(10), 1.0)


# --------------------------------------------------------------------------
# An end-to-end run
# --------------------------------------------------------------------------


def test_files_written(finished):
    config, result, _ = finished
    run_dir = config.run_dir
    assert result.run_dir == run_dir
    assert result.complete and result.trained == [0, 1] and result.skipped == []
    for name in ("config.json", "run.json", "summary.csv", "summary.json"):
        assert (run_dir / name).is_file(), name
    for k in range(FOLDS):
        for name in ("best.weights.h5", "log.csv", "metrics.json"):
            assert (run_dir / f"fold_{k}" / name).is_file(), (k, name)
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved == config.to_dict()
    assert saved["channels_per_level"] == [4, 8] and saved["name"] == "run"
    assert saved["attention_options"] == {}  # the U-Net has no attention
    record = json.loads((run_dir / "fold_1" / "metrics.json").read_text())
    assert record["fold"] == 1
    assert (record["n_fit"], record["n_val"], record["n_test"]) == (9, 1, 10)
    assert record["test_range"] == [10, 20]
    assert record["backend"] == keras.backend.backend()
    assert sorted(record["metrics"]) == sorted(cv.METRIC_NAMES)


def test_log_and_best_checkpoint(finished):
    config, _, _ = finished
    for k in range(FOLDS):
        fold_dir = config.run_dir / f"fold_{k}"
        with open(fold_dir / "log.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))
        # The original's plateau setting: min_lr = the initial rate.
        for row in rows:
            assert float(row["learning_rate"]) == pytest.approx(1e-4)
        val_losses = [float(r["val_loss"]) for r in rows]
        record = json.loads((fold_dir / "metrics.json").read_text())
        assert record["weights"] == "best"
        assert record["best_epoch"] == int(np.argmin(val_losses)) + 1
        assert record["best_val_loss"] == pytest.approx(min(val_losses), rel=1e-6)


def _bce_dice(y, p, alpha=0.5, eps=1e-12):
    q = np.clip(p, 1e-7, 1 - 1e-7)
    bce = -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
    dice = (2 * np.sum(y * p) + eps) / (np.sum(y) + np.sum(p) + eps)
    return alpha * bce + (1 - alpha) * (1 - dice)


def test_held_out_scores_are_those_of_the_best_weights(finished):
    """metrics.json equals NumPy's scores of the checkpoint's predictions."""
    config, _, data = finished
    x = np.load(data[0]).transpose(0, 2, 3, 1).astype(np.float32) / 255.0
    y = (np.load(data[1]).transpose(0, 2, 3, 1) >= 128).astype(np.float32)
    for k in range(FOLDS):
        fold_dir = config.run_dir / f"fold_{k}"
        record = json.loads((fold_dir / "metrics.json").read_text())
        start, stop = record["test_range"]
        model = cv.build_model(config, (SIZE, SIZE, 3))
        model.load_weights(str(fold_dir / "best.weights.h5"))
        p = np.asarray(model.predict(x[start:stop], batch_size=16, verbose=0))
        t = y[start:stop]
        m = record["metrics"]
        hard = (p >= 0.5).astype(np.float64)
        dice = (2 * np.sum(t * hard) + 1e-12) / (np.sum(t) + np.sum(hard) + 1e-12)
        assert m["dice_coefficient"] == pytest.approx(dice, abs=1e-5)
        assert m["loss"] == pytest.approx(_bce_dice(t, p), abs=1e-5)
        assert m["binary_accuracy"] == pytest.approx(
            np.mean((p > 0.5) == (t > 0.5)), abs=1e-5
        )
        negatives = 1 - t
        tn = np.sum(np.round(np.clip(negatives * (1 - p), 0, 1)))
        fp = np.sum(np.round(np.clip(negatives * p, 0, 1)))
        assert m["specificity"] == pytest.approx(tn / (tn + fp + 1e-7), abs=1e-5)
        tp = np.sum((p > 0.5) & (t > 0.5))
        assert m["sensitivity"] == pytest.approx(tp / np.sum(t > 0.5), abs=1e-5)
        # The checkpoint is the best epoch's: its validation loss is the best.
        val = np.arange(start, stop)
        other = np.setdiff1d(np.arange(N), val)
        v = other[-1:]  # the validation tail of this training fold
        pv = np.asarray(model.predict(x[v], batch_size=16, verbose=0))
        assert _bce_dice(y[v], pv) == pytest.approx(record["best_val_loss"], abs=1e-5)


def test_summary_is_numpy_mean_and_std_of_the_folds(finished):
    config, result, _ = finished
    records = [
        json.loads((config.run_dir / f"fold_{k}" / "metrics.json").read_text())
        for k in range(FOLDS)
    ]
    summary = json.loads((config.run_dir / "summary.json").read_text())
    assert summary["finished"] == [0, 1] and summary["complete"]
    with open(config.run_dir / "summary.csv", newline="") as handle:
        rows = {row["fold"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["0", "1", "mean", "std"]
    for name in cv.METRIC_NAMES:
        values = np.array([r["metrics"][name] for r in records])
        for got in (summary["mean"][name], float(rows["mean"][name])):
            assert got == pytest.approx(np.mean(values), rel=1e-12)
        for got in (summary["std"][name], float(rows["std"][name])):
            expected = np.std(values, ddof=1)
            assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)
        np.testing.assert_array_equal(result.metric(name), values)
        assert result.mean[name] == pytest.approx(np.mean(values), rel=1e-12)
    assert (
        summary["per_fold"][1]["dice_coefficient"]
        == records[1]["metrics"]["dice_coefficient"]
    )
    # The printed table has a row per fold plus mean and std.
    lines = result.table.splitlines()
    assert lines[0].split()[0] == "fold" and "Dice" in lines[0].split()
    assert [line.split()[0] for line in lines if line[:1].isalnum()][1:] == [
        "0",
        "1",
        "mean",
        "std",
    ]
    loaded = cv.load_result(config.run_dir)
    assert loaded.config == config and loaded.folds == result.folds
    assert loaded.std == result.std


def test_summarize_and_its_errors():
    mean, std = cv.summarize([{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 2.0}])
    # The sample std: sqrt(((1 - 2)**2 + (3 - 2)**2) / (2 - 1)).
    assert mean == {"a": 2.0, "b": 2.0} and std == {"a": 2.0**0.5, "b": 0.0}
    assert cv.summarize([{"a": 0.25}]) == ({"a": 0.25}, {})  # no std of one
    assert cv.summarize([]) == ({}, {})
    with pytest.raises(ValueError, match="same metrics"):
        cv.summarize([{"a": 1.0}, {"b": 1.0}])


# --------------------------------------------------------------------------
# Resume, overwrite, mismatches
# --------------------------------------------------------------------------


def _counting(monkeypatch):
    calls = []
    real = cv.runner._train_fold

    def counted(config, k, *args, **kwargs):
        calls.append(k)
        return real(config, k, *args, **kwargs)

    monkeypatch.setattr(cv.runner, "_train_fold", counted)
    return calls


def test_resume_reruns_only_the_unfinished_fold(finished, tmp_path, monkeypatch):
    config = _copy_run(finished[0], tmp_path)
    run_dir = config.run_dir
    kept = run_dir / "fold_0" / "metrics.json"
    kept_text, kept_mtime = kept.read_text(), kept.stat().st_mtime_ns
    (run_dir / "fold_1" / "metrics.json").unlink()  # fold 1 "was interrupted"
    (run_dir / "fold_1" / "stale.txt").write_text("left by the interrupted run")
    (run_dir / "summary.json").write_text("{}")

    calls = _counting(monkeypatch)
    result = _run(config)
    assert calls == [1]
    assert (result.trained, result.skipped) == ([1], [0])
    assert kept.read_text() == kept_text and kept.stat().st_mtime_ns == kept_mtime
    assert not (run_dir / "fold_1" / "stale.txt").exists()  # restarted cleanly
    assert (run_dir / "fold_1" / "metrics.json").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] == [0, 1]
    assert summary["mean"] == pytest.approx(result.mean)

    # Everything finished: nothing trains, the data are not even loaded.
    def no_loading(_config):
        raise AssertionError("load_data called")

    monkeypatch.setattr(cv.build, "load_data", no_loading)
    result = _run(config)
    assert calls == [1] and (result.trained, result.skipped) == ([], [0, 1])


def test_changed_config_is_refused_then_overwritten(finished, tmp_path, monkeypatch):
    config = _copy_run(finished[0], tmp_path)
    changed = dataclasses.replace(config, epochs=1, learning_rate=1e-3)
    with pytest.raises(cv.ConfigMismatchError) as info:
        _run(changed)
    message = str(info.value)
    assert "epochs: saved 2, now 1" in message
    assert "learning_rate: saved 0.0001, now 0.001" in message
    assert "overwrite" in message and "batch_size" not in message

    def fake_train(config, k, x, y, split, run_dir, *args):
        fold_dir = run_dir / f"fold_{k}"
        fold_dir.mkdir()
        record = {"fold": k, "metrics": {"loss": float(k), "dice_coefficient": 0.5}}
        (fold_dir / "metrics.json").write_text(json.dumps(record))
        return record

    monkeypatch.setattr(cv.runner, "_train_fold", fake_train)
    result = _run(changed, overwrite=True, folds=[1])
    assert result.trained == [1] and not result.complete
    assert not (config.run_dir / "fold_0").exists()  # the old results are gone
    saved = json.loads((config.run_dir / "config.json").read_text())
    assert saved["epochs"] == 1
    summary = json.loads((config.run_dir / "summary.json").read_text())
    assert summary["finished"] == [1] and summary["complete"] is False
    assert summary["mean"] == {"loss": 1.0, "dice_coefficient": 0.5}


def test_a_run_saved_with_former_names_resumes(finished, tmp_path, monkeypatch):
    """A run folder whose config.json spells the metric set as it was
    (``paper``) resumes: the missing fold trains, the finished one is kept,
    and config.json is rewritten in today's spelling."""
    config = _copy_run(finished[0], tmp_path)
    path = config.run_dir / "config.json"
    saved = json.loads(path.read_text())
    assert saved["metrics"] == "batch"
    path.write_text(json.dumps({**saved, "metrics": "paper"}))
    record = json.loads((config.run_dir / "fold_1" / "metrics.json").read_text())
    (config.run_dir / "fold_1" / "metrics.json").unlink()
    trained = []

    def fake_train(config, k, x, y, split, run_dir, *args):
        trained.append(k)
        (run_dir / f"fold_{k}" / "metrics.json").write_text(json.dumps(record))
        return record

    monkeypatch.setattr(cv.runner, "_train_fold", fake_train)
    result = _run(config)
    assert trained == [1] and result.skipped == [0] and result.complete
    assert json.loads(path.read_text())["metrics"] == "batch"


def test_changed_data_are_refused(finished, tmp_path, monkeypatch):
    config = _copy_run(finished[0], tmp_path)
    (config.run_dir / "fold_1" / "metrics.json").unlink()
    x, y = cv.load_data(config)

    def reversed_data(_config, return_labels=False):
        data = (x[::-1].copy(), y)
        return (*data, None) if return_labels else data

    monkeypatch.setattr(cv.build, "load_data", reversed_data)
    with pytest.raises(cv.ConfigMismatchError, match="data differ.*blake2b"):
        _run(config)


def test_run_errors(finished, tmp_path):
    config = _copy_run(finished[0], tmp_path)
    with pytest.raises(ValueError, match=r"folds=\[2\]|folds=2"):
        _run(config, folds=[2])
    with pytest.raises(TypeError, match="config"):
        cv.run_cv({"dataset": "isic"})
    with pytest.raises(ValueError, match="verbose=3"):
        _run(config, verbose=3)
    # 10 training samples * 0.05 leaves no validation sample.
    small = dataclasses.replace(config, val_fraction=0.05, name="small")
    with pytest.raises(ValueError, match="0 to validate.*val_fraction=0.05"):
        _run(small)
    # The error comes before anything is written.
    assert not small.run_dir.exists()
    # A folder whose saved run has no finished fold (and no process working
    # in it) is taken by another configuration.
    small.run_dir.mkdir(parents=True)
    (small.run_dir / "config.json").write_text(json.dumps(small.to_dict()))
    fixed = dataclasses.replace(small, val_fraction=0.2, epochs=1)
    folder = cv.rundir.RunFolder(fixed)
    folder.enter(None, overwrite=False)
    folder.leave()
    saved = json.loads((small.run_dir / "config.json").read_text())
    assert (saved["val_fraction"], saved["epochs"]) == (0.2, 1)


def test_fold_callbacks(tmp_path):
    config = cv.CVConfig(dataset="folder", images_dir="i", masks_dir="m")
    plateau, checkpoint, logger = cv.fold_callbacks(config, tmp_path)
    assert isinstance(plateau, keras.callbacks.ReduceLROnPlateau)
    assert plateau.monitor == "loss" and plateau.factor == 0.5
    assert plateau.patience == 10 and plateau.min_lr == config.learning_rate
    # Not keras.callbacks.ModelCheckpoint, which keeps a NaN first epoch.
    assert isinstance(checkpoint, cv.BestCheckpoint)
    assert checkpoint.monitor == "val_loss"
    assert Path(checkpoint.filepath) == tmp_path / "best.weights.h5"
    assert isinstance(logger, keras.callbacks.CSVLogger) and logger.sep == ","
    other = dataclasses.replace(config, plateau_min_lr=1e-6, plateau_patience=3)
    plateau = cv.fold_callbacks(other, tmp_path)[0]
    assert (plateau.min_lr, plateau.patience) == (1e-6, 3)


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------

FOLDER = {"dataset": "folder", "images_dir": "img", "masks_dir": "msk"}


def test_defaults_are_the_papers_protocol():
    config = cv.CVConfig(**FOLDER)
    assert (config.folds, config.epochs, config.batch_size) == (10, 100, 16)
    assert config.learning_rate == 1e-4 and config.optimizer == "adam"
    assert config.loss == "weighted" and config.loss_alpha == 0.5
    assert config.channels_per_level == (32, 64, 128, 256) and config.with_bn is False
    assert config.target_size == (224, 224) and config.val_fraction == 0.1
    assert config.model == "ssr_unet" and config.attention_options == {}
    assert config.attention_kwargs == {
        "r": 2, "max_scale": 3, "scaling": "batch", "synchronized": True
    }  # fmt: skip
    assert config.min_lr == config.learning_rate
    assert config.run_dir == Path("runs") / "ssr_unet-folder"


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        ({"folds": 1}, ValueError, "folds=1"),
        ({"epochs": 0}, ValueError, "epochs=0"),
        ({"epochs": "3"}, TypeError, "epochs='3'"),
        ({"batch_size": 0}, ValueError, "batch_size=0"),
        ({"learning_rate": 0}, ValueError, "learning_rate=0"),
        ({"learning_rate": float("nan")}, ValueError, "learning_rate=nan"),
        # inf is refused, and the message says so: (0.0, inf), not (0.0, inf].
        (
            {"learning_rate": float("inf")},
            ValueError,
            r"`learning_rate` must be in \(0\.0, inf\)\. Received: learning_rate=inf",
        ),
        ({"plateau_min_lr": float("inf")}, ValueError, r"must be in \[0\.0, inf\)"),
        ({"dataset": "coco"}, ValueError, "'kvasir', 'isic', 'folder'.*dataset='coco'"),
        ({"model": "resnet"}, ValueError, "'ssr_unet', 'unet'.*'se'.*model='resnet'"),
        ({"channels_per_level": (4,)}, ValueError, r"channels_per_level=\(4,\)"),
        ({"channels_per_level": (4, 0)}, ValueError, r"level=\(4, 0\)"),
        ({"target_size": (33, 32), "channels_per_level": (4, 8)}, ValueError, "divis"),
        ({"target_size": (32,)}, ValueError, r"target_size=\(32,\)"),
        ({"val_fraction": 0.0}, ValueError, "val_fraction=0.0"),
        ({"val_fraction": 1}, ValueError, r"in \(0\.0, 1\.0\)\. .*val_fraction=1"),
        ({"loss": "focal"}, ValueError, "loss='focal'"),
        ({"optimizer": "rmsprop"}, ValueError, "optimizer='rmsprop'"),
        ({"loss_alpha": 1.5}, ValueError, "loss_alpha=1.5"),
        ({"with_bn": "yes"}, TypeError, "with_bn='yes'"),
        ({"seed": -1}, ValueError, "seed=-1"),
        ({"seed": None}, TypeError, "seed=None"),
        ({"plateau_factor": 1.0}, ValueError, "plateau_factor=1.0"),
        ({"plateau_min_lr": -1.0}, ValueError, "plateau_min_lr=-1.0"),
        ({"attention_options": {"max_scale": 1}}, ValueError, "max_scale=1"),
        ({"attention_options": {"k": 8}}, ValueError, "takes no option 'k'"),
        ({"attention_options": [("r", 2)]}, TypeError, "mapping of option names"),
        ({"model": "unet", "attention_options": {"r": 2}}, ValueError, "no attention"),
        ({"max_samples": 5}, ValueError, "max_samples=5"),  # < folds
        ({"name": "a/b"}, ValueError, "name='a/b'"),
        ({"name": "run\n2"}, ValueError, "`name` must not contain a control character"),
        ({"name": "a\x00b"}, ValueError, "`name` must not contain a NUL character"),
        ({"images_dir": "i\x00"}, ValueError, "`images_dir` must not contain a NUL"),
        ({"output_dir": "o\x00"}, ValueError, "`output_dir` must not contain a NUL"),
        ({"masks_dir": None}, ValueError, "needs `masks_dir`.*masks_dir=None"),
        ({"x_path": "x.npy"}, ValueError, "belongs to dataset='isic'"),
    ],
)
def test_config_validation(overrides, error, match):
    with pytest.raises(error, match=match):
        cv.CVConfig(**{**FOLDER, **overrides})


def test_config_normalisation_and_replace():
    config = cv.CVConfig(
        **FOLDER, model="SE", channels_per_level=[4, 8], target_size=[32, 32],
        learning_rate=1,
    )  # fmt: skip
    assert config.model == "se" and config.channels_per_level == (4, 8)
    assert config.target_size == (32, 32) and isinstance(config.learning_rate, float)
    with pytest.raises(ValueError, match="epochs=-1"):
        dataclasses.replace(config, epochs=-1)


TOML = """
dataset = "isic"

[data]
x_path = "{x}"
y_path = "{y}"
target_size = [32, 32]

[training]
folds = 2
epochs = 3
batch_size = 16
learning_rate = 0.001

[model]
model = "unet"
channels_per_level = [4, 8]
"""


def _toml(tmp_path, data, text=TOML) -> Path:
    path = tmp_path / "cv.toml"
    path.write_text(text.format(x=data[0].as_posix(), y=data[1].as_posix()))
    return path


def test_toml_file_and_overrides(finished, tmp_path):
    path = _toml(tmp_path, finished[2])
    config = cv.CVConfig.from_file(path)
    assert (config.dataset, config.model, config.epochs) == ("isic", "unet", 3)
    assert config.channels_per_level == (4, 8) and config.learning_rate == 1e-3
    config = cv.CVConfig.from_file(path, epochs=1, model="ssr_unet")
    assert (config.epochs, config.model, config.folds) == (1, "ssr_unet", 2)
    # Switching the dataset by an override drops the file's other paths.
    config = cv.CVConfig.from_file(
        path, dataset="folder", images_dir="i", masks_dir="m"
    )
    assert config.x_path is None and config.images_dir == "i"


def test_config_file_errors(tmp_path, monkeypatch):
    bad = tmp_path / "bad.toml"
    bad.write_text('dataset = "folder"\nimages_dir = "i"\nmasks_dir = "m"\nepoch = 3\n')
    with pytest.raises(ValueError, match="Unknown configuration key 'epoch'.*epochs"):
        cv.CVConfig.from_file(bad)
    twice = tmp_path / "twice.toml"
    twice.write_text("epochs = 3\n[training]\nepochs = 4\n")
    with pytest.raises(ValueError, match="'epochs' is given twice"):
        cv.CVConfig.from_file(twice)
    with pytest.raises(ValueError, match="Unknown configuration field.*'epoch'"):
        cv.CVConfig.from_dict(FOLDER, epoch=3)
    broken = tmp_path / "broken.toml"
    broken.write_text("epochs = = 3\n")
    with pytest.raises(ValueError, match="Cannot parse the config file"):
        cv.load_config_file(broken)
    with pytest.raises(ValueError, match="must end with .toml"):
        cv.load_config_file(tmp_path / "cv.ini")
    with pytest.raises(FileNotFoundError, match="missing.toml"):
        cv.load_config_file(tmp_path / "missing.toml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    pytest.importorskip("yaml")
    with pytest.raises(ValueError, match="mapping"):
        cv.load_config_file(listed)
    monkeypatch.setitem(sys.modules, "yaml", None)  # PyYAML not installed
    with pytest.raises(ImportError, match="pip install pyyaml"):
        cv.load_config_file(listed)


def test_yaml_json_and_toml_round_trips(tmp_path):
    yaml = pytest.importorskip("yaml")
    config = cv.CVConfig(
        **FOLDER, epochs=7, channels_per_level=(4, 8, 16), max_samples=12
    )
    path = tmp_path / "cv.yaml"
    path.write_text(yaml.safe_dump({"data": FOLDER, "training": {"epochs": 7}}))
    assert (
        cv.CVConfig.from_file(path, channels_per_level=(4, 8, 16), max_samples=12)
        == config
    )
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    assert cv.CVConfig.from_file(path) == dataclasses.replace(
        config, name="ssr_unet-folder"
    )
    path = tmp_path / "config.toml"
    path.write_text(cv.config_to_toml(config))
    assert tomllib.loads(path.read_text())["channels_per_level"] == [4, 8, 16]
    assert cv.CVConfig.from_file(path) == config


def test_example_config_file_is_the_default_protocol():
    config = cv.CVConfig.from_file(EXAMPLES / "cv_kvasir.toml", data_root="/kvasir")
    assert config == cv.CVConfig(data_root="/kvasir", name="ssr_unet-kvasir")


def test_docs_config_reference_is_current():
    """docs/cross_validation.md holds the table generated from the fields."""
    text = (EXAMPLES.parent / "docs" / "cross_validation.md").read_text()
    marker = "<!-- config-reference:start -->\n"
    start = text.index(marker) + len(marker)
    stop = text.index("<!-- config-reference:end -->")
    assert text[start:stop] == cv.config_reference()
    for field in dataclasses.fields(cv.CVConfig):
        assert f"`{field.name}`" in cv.config_reference()


def test_load_data_from_folders(tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for root in (tmp_path / "kvasir", tmp_path / "plain"):
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        for i in range(5):
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            image_module.fromarray(pixels).save(root / "images" / f"{i}.png")
            mask = np.where(pixels[..., 0] > 128, 255, 0).astype(np.uint8)
            image_module.fromarray(mask).save(root / "masks" / f"{i}.png")
    config = cv.CVConfig(
        dataset="kvasir",
        data_root=str(tmp_path / "kvasir"),
        target_size=(16, 16),
        channels_per_level=(4, 8),
        folds=2,
        max_samples=4,
    )
    x, y = cv.load_data(config)
    assert x.shape == (4, 16, 16, 3) and y.shape == (4, 16, 16, 1)
    assert set(np.unique(y)) <= {0.0, 1.0}
    plain = cv.CVConfig(
        dataset="folder",
        images_dir=str(tmp_path / "plain" / "images"),
        masks_dir=str(tmp_path / "plain" / "masks"),
        target_size=(16, 16),
        channels_per_level=(4, 8),
        folds=2,
        data_format="channels_first",
    )
    x, y = cv.load_data(plain)
    assert x.shape == (5, 3, 16, 16) and y.shape == (5, 1, 16, 16)
    with pytest.raises(ValueError, match="fewer than max_samples"):
        cv.load_data(dataclasses.replace(plain, max_samples=6))


def test_isic_size_must_match_target_size(finished):
    config = dataclasses.replace(finished[0], target_size=(64, 64))
    with pytest.raises(ValueError, match=r"32x32 but target_size=\[64, 64\]"):
        cv.load_data(config)


def test_build_model_choices():
    base = cv.CVConfig(
        **FOLDER, channels_per_level=(4, 8), target_size=(16, 16),
        attention_options={"r": 4},
    )  # fmt: skip
    model = cv.build_model(base, (16, 16, 3))
    ssr = model.get_layer("encoder_0_attention")
    assert isinstance(ssr, layers.SingularityStrengthRecalibration)
    assert (ssr.r, ssr.max_scale) == (4, 3)
    model = cv.build_model(dataclasses.replace(base, model="se"), (16, 16, 3))
    se = model.get_layer("encoder_0_attention")  # r=4 carries over: SE takes it
    assert type(se) is layers.SqueezeExcite and se.r == 4
    unet = dataclasses.replace(base, model="unet", attention_options={})
    model = cv.build_model(unet, (16, 16, 3))
    assert not any("attention" in layer.name for layer in model.layers)
    assert model.output.shape == (None, 16, 16, 1)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def test_cli_file_plus_flags(finished, tmp_path, capsys):
    path = _toml(tmp_path, finished[2])
    argv = ["cv", "--config", str(path), "--epochs", "1", "-o", str(tmp_path / "out")]
    argv += ["--name", "cli", "--fold", "0", "--verbose", "0", "--run-eagerly"]
    assert cli.main(argv) == 0
    run_dir = tmp_path / "out" / "cli"
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["epochs"] == 1  # the flag wins over the file's 3
    assert saved["learning_rate"] == 1e-3 and saved["channels_per_level"] == [4, 8]
    assert (run_dir / "fold_0" / "metrics.json").is_file()
    assert not (run_dir / "fold_1").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] == [0] and not summary["complete"]
    out = capsys.readouterr().out
    assert "1 of 2 folds" in out and "mean" in out

    # Same run, another epoch count: refused with a one-line error.
    argv[argv.index("1")] = "2"
    assert cli.main(argv) == 2
    assert "epochs: saved 1, now 2" in capsys.readouterr().err


def test_cli_print_config_dry_run_and_errors(finished, tmp_path, capsys):
    path = _toml(tmp_path, finished[2])
    assert cli.main(["cv", "-c", str(path), "--print-config", "--lr", "0.01"]) == 0
    printed = tomllib.loads(capsys.readouterr().out)
    assert printed["learning_rate"] == 0.01 and printed["epochs"] == 3
    assert printed["dataset"] == "isic" and "name" not in printed

    argv = ["cv", "-c", str(path), "--dry-run", "-o", str(tmp_path / "dry")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "fold 0: fit 9, validate 1, test 10 (indices 0..9) - to run" in out
    assert not (tmp_path / "dry").exists()  # nothing written

    assert cli.main(["cv", "--dataset", "isic"]) == 2
    assert "needs `x_path`" in capsys.readouterr().err
    assert cli.main(["cv", "-c", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["cv", "--channels-per-level", "4,x"])
    with pytest.raises(ValueError, match="needs `x_path`"):
        cli.main(["cv", "--dataset", "isic", "--traceback"])
    # A NUL from a config file: the field is named, not "embedded null byte".
    bad = tmp_path / "nul.toml"
    bad.write_text('name = "a\\u0000b"\n' + path.read_text())  # top level
    assert cli.main(["cv", "-c", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "`name` must not contain a NUL character" in err
    assert "embedded null byte" not in err


# --------------------------------------------------------------------------
# examples/
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["ssr_in_your_model.py", "train_kvasir.py", "import_original_weights.py"]
)
def test_examples_compile(name, tmp_path):
    py_compile.compile(
        str(EXAMPLES / name), cfile=str(tmp_path / "x.pyc"), doraise=True
    )


def test_example_ssr_in_your_model_trains_a_step(monkeypatch, capsys):
    monkeypatch.setattr(
        sys, "argv", ["ssr_in_your_model.py", "--quick", "--models", "cnn"]
    )
    runpy.run_path(str(EXAMPLES / "ssr_in_your_model.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "3 SSR layers" in out and "32/32 trainable tensors updated" in out
