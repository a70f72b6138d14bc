"""BUSI in the runner: the follow-up's stratified folds, end to end.

A tiny official-layout BUSI folder (``benign/``, ``malignant/``, ``normal/``
holding ``name (i).png`` and ``name (i)_mask.png``) is generated; the
folds the runner records are checked against scikit-learn's
``StratifiedKFold`` and ``train_test_split`` called directly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from keras_ssr import cv, data

model_selection = pytest.importorskip("sklearn.model_selection")
image_module = pytest.importorskip("PIL.Image")

N_BENIGN, N_MALIGNANT, SIZE = 8, 6, 16


def _write_busi(root):
    rng = np.random.default_rng(11)
    for name, count in (
        ("benign", N_BENIGN),
        ("malignant", N_MALIGNANT),
        ("normal", 2),
    ):
        (root / name).mkdir(parents=True)
        for i in range(1, count + 1):
            pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            image_module.fromarray(pixels).save(root / name / f"{name} ({i}).png")
            mask = np.where(pixels[..., 0] > 128, 255, 0).astype(np.uint8)
            image_module.fromarray(mask).save(root / name / f"{name} ({i})_mask.png")


def test_busi_runs_on_the_followups_stratified_folds(tmp_path):
    _write_busi(tmp_path / "busi")
    config = cv.CVConfig.from_dict(
        {"dataset": "busi", "busi_root": str(tmp_path / "busi")},
        protocol="followup", folds=2, epochs=1, target_size=(SIZE, SIZE),
        levels=(4, 8), model="unet", output_dir=str(tmp_path / "runs"), name="busi",
    )  # fmt: skip
    assert config.val_fraction == 0.2  # the follow-up's BUSI dev split
    result = cv.run_cv(config, verbose=0, run_eagerly=True, log=None)
    assert result.complete and result.diverged == []

    # The loader's labels (benign 0, malignant 1; normal left out), split by
    # scikit-learn directly as the follow-up's BUSI scripts do.
    _, _, labels = data.load_busi(tmp_path / "busi", (SIZE, SIZE), verbose=False)
    assert sorted(labels.tolist()) == [0] * N_BENIGN + [1] * N_MALIGNANT
    folds = model_selection.StratifiedKFold(2, shuffle=True, random_state=42)
    for k, (train, test) in enumerate(folds.split(np.zeros((len(labels), 1)), labels)):
        fit, val = model_selection.train_test_split(
            train, test_size=0.2, stratify=labels[train], random_state=42
        )
        record = json.loads((config.run_dir / f"fold_{k}" / "metrics.json").read_text())
        assert record["test_indices"] == test.tolist()
        assert (record["n_fit"], record["n_val"]) == (len(fit), len(val))
