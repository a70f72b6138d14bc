"""The follow-up's protocol as a preset (``--protocol followup``) and its flips.

The preset is checked field by field against the follow-up's experiment
scripts and ``config.yaml`` (5 folds, 400 epochs, Adam 1e-4, batch 16,
0.5 BCE + 0.5 Dice, best-``val_loss`` checkpoint, unshuffled training set
flipped at random every epoch, KFold without shuffling with the last 10 %
of each training fold validating). The held-out per-image Dice and
foreground IoU are recomputed in NumPy from the saved best weights.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from keras_ssr import cli, cv
from keras_ssr.cv.augment import FlipDataset
from tests.test_cv import SIZE, _config, _run, _write_arrays

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

FOLDER = {"dataset": "folder", "images_dir": "i", "masks_dir": "m"}


def test_followup_preset_is_the_followups_protocol(tmp_path):
    config = cv.CVConfig.from_dict(FOLDER, protocol="followup")
    assert (config.folds, config.epochs, config.batch_size) == (5, 400, 16)
    assert (config.optimizer, config.learning_rate) == ("adam", 1e-4)
    assert (config.loss, config.loss_alpha) == ("weighted", 0.5)
    assert (config.augment, config.shuffle, config.metrics) == (
        "flips",
        False,
        "per_image",
    )
    assert config.val_fraction == 0.1
    # The file and the flags still win over the preset.
    assert (
        cv.CVConfig.from_dict({**FOLDER, "epochs": 3}, protocol="followup").epochs == 3
    )
    path = tmp_path / "cv.toml"
    path.write_text(
        'protocol = "followup"\n'
        '[data]\ndataset = "folder"\nimages_dir = "i"\nmasks_dir = "m"\n'
        "[training]\nfolds = 4\n"
    )
    from_file = cv.CVConfig.from_file(path)
    assert (from_file.folds, from_file.epochs, from_file.augment) == (4, 400, "flips")
    assert cv.CVConfig.from_file(path, protocol="paper").epochs == 100
    with pytest.raises(ValueError, match="protocol='mfr'"):
        cv.CVConfig.from_dict(FOLDER, protocol="mfr")


def test_protocol_flag(capsys):
    argv = ["cv", "--dataset", "folder", "--images-dir", "i", "--masks-dir", "m"]
    assert cli.main([*argv, "--protocol", "followup", "--print-config"]) == 0
    printed = tomllib.loads(capsys.readouterr().out)
    assert (printed["folds"], printed["epochs"], printed["augment"]) == (
        5,
        400,
        "flips",
    )
    argv += ["--protocol", "followup", "--epochs", "7", "--print-config"]
    assert cli.main(argv) == 0
    assert tomllib.loads(capsys.readouterr().out)["epochs"] == 7


def _variants(image, rows, cols):
    """The four flips of one image, by index arithmetic: (left_right, up_down)."""
    out = {}
    for lr in (False, True):
        for ud in (False, True):
            index = [slice(None)] * image.ndim
            index[cols] = slice(None, None, -1 if lr else 1)
            index[rows] = slice(None, None, -1 if ud else 1)
            out[(lr, ud)] = image[tuple(index)]
    return out


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_flips_move_image_and_mask_together(data_format):
    rng = np.random.default_rng(3)
    x = rng.random((7, 4, 6, 2)).astype("float32")  # H != W: a transpose shows
    y = (x[..., :1] > 0.5).astype("float32")
    rows, cols = 0, 1  # of one sample, channels last
    if data_format == "channels_first":
        x, y = x.transpose(0, 3, 1, 2), y.transpose(0, 3, 1, 2)
        rows, cols = 1, 2
    dataset = FlipDataset(x, y, batch_size=3, seed=5, data_format=data_format)
    twin = FlipDataset(x, y, batch_size=3, seed=5, data_format=data_format)
    assert len(dataset) == 3
    seen = set()
    for _ in range(4):  # epochs
        got = [dataset[i] for i in range(len(dataset))]
        # Seeded: another dataset with the same seed draws the same flips.
        for (bx, by), (tx, ty) in zip(got, [twin[i] for i in range(len(twin))]):
            np.testing.assert_array_equal(bx, tx)
            np.testing.assert_array_equal(by, ty)
        batch_x = np.concatenate([b[0] for b in got])
        batch_y = np.concatenate([b[1] for b in got])
        assert batch_x.shape == x.shape
        for i in range(len(x)):  # unshuffled: sample i stays at i
            variants = _variants(x[i], rows, cols).items()
            image = [k for k, v in variants if np.array_equal(v, batch_x[i])]
            mask = _variants(y[i], rows, cols)
            assert len(image) == 1, "not a flip of the sample"
            np.testing.assert_array_equal(batch_y[i], mask[image[0]])
            seen.add(image[0])
        dataset.on_epoch_end()
        twin.on_epoch_end()
    assert seen == {(False, False), (False, True), (True, False), (True, True)}
    # A new epoch draws anew (the draws depend on seed, epoch and batch only).
    fresh = FlipDataset(x, y, batch_size=3, seed=5, data_format=data_format)
    epoch_0 = [np.stack(fresh.flips(i)) for i in range(3)]
    fresh.on_epoch_end()
    epoch_1 = [np.stack(fresh.flips(i)) for i in range(3)]
    assert any(not np.array_equal(a, b) for a, b in zip(epoch_0, epoch_1))
    with pytest.raises(ValueError, match="same spatial size"):
        FlipDataset(x, y[:, :, :2] if data_format == "channels_first" else y[:, :2], 3)
    with pytest.raises(IndexError):
        dataset[3]


def test_followup_protocol_end_to_end(tmp_path):
    data = _write_arrays(tmp_path / "data")
    base = _config(data, tmp_path / "runs")
    settings = {
        k: getattr(base, k)
        for k in ("dataset", "x_path", "y_path", "target_size", "model", "levels")
    }
    config = cv.CVConfig.from_dict(
        settings, protocol="followup", folds=2, epochs=2,
        output_dir=str(tmp_path / "runs"), name="followup",
    )  # fmt: skip
    lines = []
    result = _run(config, log=lines.append)
    assert result.complete and result.diverged == []
    x = np.load(data[0]).transpose(0, 2, 3, 1).astype(np.float32) / 255.0
    y = (np.load(data[1]).transpose(0, 2, 3, 1) >= 128).astype(np.float32)
    for k in range(2):
        fold_dir = config.run_dir / f"fold_{k}"
        record = json.loads((fold_dir / "metrics.json").read_text())
        assert (
            "dice_score" in record["metrics"]
            and "dice_coefficient" not in record["metrics"]
        )
        model = cv.build_model(config, (SIZE, SIZE, 3))
        model.load_weights(str(fold_dir / "best.weights.h5"))
        start, stop = record["test_range"]
        p = np.asarray(model.predict(x[start:stop], verbose=0)) >= 0.5
        t = y[start:stop] > 0.5
        per_image = [
            (2 * np.sum(ti & pi) + 1e-12) / (np.sum(ti) + np.sum(pi) + 1e-12)
            for ti, pi in zip(t, p)
        ]
        assert record["metrics"]["dice_score"] == pytest.approx(
            np.mean(per_image), abs=1e-5
        )
        iou = np.sum(t & p) / max(np.sum(t | p), 1)
        assert record["metrics"]["binary_io_u"] == pytest.approx(iou, abs=1e-5)
        # The progress line names the fold as its folder does (0-based) and
        # shows the per-image Dice just checked (it printed "Dice nan").
        scores = record["metrics"]
        done = (
            f"[fold {k} ({k + 1} of 2)] done: dice_score {scores['dice_score']:.4f}, "
            f"loss {scores['loss']:.4f}, best epoch {record['best_epoch']};"
        )
        assert [line for line in lines if line.startswith(done)], lines
    assert "Dice" in result.table


def test_each_metric_set_names_the_dice_progress_lines_show():
    from keras_ssr import metrics
    from keras_ssr.cv.config import METRIC_SETS

    sets = {
        "batch": metrics.SEGMENTATION_METRIC_NAMES,
        "per_image": metrics.PER_IMAGE_METRIC_NAMES,
    }
    assert set(cv.build.DICE_METRICS) == set(sets) == set(METRIC_SETS)
    for name, dice in cv.build.DICE_METRICS.items():
        assert dice in sets[name]
