"""BUSI: both layouts end to end on small generated PNGs; splits vs scikit-learn."""

from __future__ import annotations

import re
import shutil
import sys

import numpy as np
import pytest

from keras_ssr.data import BUSI_CLASSES, busi_splits, load_busi

Image = pytest.importorskip("PIL.Image")

COUNTS = {"benign": 10, "malignant": 6, "normal": 3}
SIZE = 8


@pytest.fixture(autouse=True)
def _clean_keras_state():
    """NumPy-only tests: skip conftest's per-test ``clear_session``."""
    yield


def blocks(seed):
    rng = np.random.default_rng(seed)
    return np.kron(rng.random((2, 2)) > 0.5, np.ones((4, 4), bool))


@pytest.fixture
def official(tmp_path):
    """The official layout; returns (root, {name: (image, union mask)})."""
    root = tmp_path / "Dataset_BUSI_with_GT"
    truth = {}
    seed = 0
    for name, count in COUNTS.items():
        (root / name).mkdir(parents=True)
        for i in range(1, count + 1):
            seed += 1
            stem = f"{name} ({i})"
            image = np.full((SIZE, SIZE, 3), seed * 7 % 256, np.uint8)
            image[0, 0] = (i, 0, 255)
            Image.fromarray(image).save(root / name / f"{stem}.png")
            mask = blocks(seed) if name != "normal" else np.zeros((SIZE, SIZE), bool)
            Image.fromarray(mask.astype(np.uint8) * 255).save(
                root / name / f"{stem}_mask.png"
            )
            union = mask
            if name == "benign" and i in (2, 10):  # two tumours, two masks
                extra = np.zeros((SIZE, SIZE), bool)
                extra[-2:, :3] = True
                Image.fromarray(extra.astype(np.uint8) * 255).save(
                    root / name / f"{stem}_mask_1.png"
                )
                union = mask | extra
            truth[f"{stem}.png"] = (image, union)
    return root, truth


def test_official_release(official, capsys):
    root, truth = official
    x, y, labels, names = load_busi(
        root, None, data_format="channels_last", return_names=True
    )
    expected = sorted(n for n in truth if not n.startswith("normal"))
    assert names == expected  # file-name order: "benign (1)", "benign (10)", ...
    assert names[:3] == ["benign (1).png", "benign (10).png", "benign (2).png"]
    assert x.shape == (16, SIZE, SIZE, 3) and y.shape == (16, SIZE, SIZE, 1)
    np.testing.assert_array_equal(labels, [0] * 10 + [1] * 6)
    for i, name in enumerate(names):
        image, mask = truth[name]
        np.testing.assert_array_equal(x[i], image / np.float32(255))
        np.testing.assert_array_equal(y[i, ..., 0], mask)
    assert y[names.index("benign (2).png"), -1, 0, 0] == 1  # from _mask_1
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].endswith("18 masks, 0/255")  # 16 images, 2 extra masks
    assert printed[1] == "load_busi: 10 benign, 6 malignant"
    with pytest.raises(TypeError, match=r"load_busi\(\).*'binarise_masks'"):
        load_busi(root, None, binarise_masks=False)


def test_normal_class_and_label_order(official):
    root, truth = official
    x, y, labels, names = load_busi(
        root,
        (4, 4),
        classes=("normal", "malignant", "benign"),
        data_format="channels_first",
        return_names=True,
        verbose=False,
    )
    assert x.shape == (19, 3, 4, 4) and y.shape == (19, 1, 4, 4)
    expected = {"normal": 0, "malignant": 1, "benign": 2}
    assert list(labels) == [expected[n.split(" ")[0]] for n in names]
    assert not y[labels == 0].any()  # normal images have empty masks


def test_sorted_layout_equals_the_official_one(official, tmp_path):
    root, truth = official
    sorted_root = tmp_path / "BUSI_sorted"
    (sorted_root / "images").mkdir(parents=True)
    (sorted_root / "masks").mkdir()
    for name, (_, mask) in truth.items():
        if name.startswith("normal"):
            continue
        shutil.copy(root / name.split(" ")[0] / name, sorted_root / "images" / name)
        Image.fromarray(mask.astype(np.uint8) * 255).save(sorted_root / "masks" / name)
    a = load_busi(root, (4, 4), return_names=True, verbose=False)
    b = load_busi(sorted_root, (4, 4), return_names=True, verbose=False)
    for left, right in zip(a, b, strict=True):
        np.testing.assert_array_equal(left, right)


def test_splits_are_scikit_learns_called_as_the_follow_up_does(official):
    model_selection = pytest.importorskip("sklearn.model_selection")
    root, _ = official
    x, y, labels = load_busi(root, None, verbose=False)
    folds = busi_splits(labels)
    assert len(folds) == 5
    reference = model_selection.StratifiedKFold(5, shuffle=True, random_state=42)
    pairs = zip(folds, reference.split(X=x, y=labels), strict=True)
    for fold, (train, test) in pairs:
        np.testing.assert_array_equal(fold["test"], test)
        # The follow-up splits the fold's arrays, not indices.
        x_train, x_dev, y_train, y_dev = model_selection.train_test_split(
            x[train], y[train], test_size=0.2, stratify=labels[train], random_state=42
        )
        np.testing.assert_array_equal(x[fold["fit"]], x_train)
        np.testing.assert_array_equal(y[fold["val"]], y_dev)
        together = np.concatenate([fold["fit"], fold["val"], fold["test"]])
        assert sorted(together) == list(range(len(labels)))
    # Every sample is tested exactly once.
    tested = np.concatenate([fold["test"] for fold in folds])
    assert sorted(tested) == list(range(len(labels)))


def test_split_arguments():
    pytest.importorskip("sklearn")
    labels = [0] * 10 + [1] * 5
    three = busi_splits(labels, 3, dev_size=0.5, random_state=1)
    assert [len(f["test"]) for f in three] == [5, 5, 5]
    assert all(len(f["val"]) == 5 for f in three)
    for bad, error, text in [
        ({"labels": [0, 0, 1, 1]}, ValueError, "class 0 has 2"),
        ({"labels": np.zeros((3, 2))}, ValueError, r"labels.shape=\(3, 2\)"),
        ({"labels": labels, "n_splits": 1}, ValueError, "n_splits"),
        ({"labels": labels, "dev_size": 1.0}, ValueError, "dev_size=1.0"),
        ({"labels": labels, "random_state": -1}, ValueError, "random_state"),
    ]:
        with pytest.raises(error, match=text):
            busi_splits(bad.pop("labels"), **{"n_splits": 5, **bad})


def test_splits_without_scikit_learn_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError, match=re.escape("pip install keras-ssr[sklearn]")):
        busi_splits([0] * 5 + [1] * 5)


def test_layout_errors(official, tmp_path):
    root, _ = official
    (root / "benign" / "benign (1)_mask.png").unlink()
    (root / "malignant" / "malignant (2).png").unlink()
    with pytest.raises(ValueError, match=r"without a mask: 'benign \(1\).png'"):
        load_busi(root)
    shutil.rmtree(root / "benign")
    with pytest.raises(ValueError, match=r"without an image: 'malignant \(2\)_mask"):
        load_busi(root, classes=("malignant",))
    with pytest.raises(FileNotFoundError, match="benign"):
        load_busi(root)
    with pytest.raises(FileNotFoundError, match="not a BUSI folder"):
        load_busi(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_busi(tmp_path / "nowhere")
    for classes in (("benign", "benign"), ("cyst",), ()):
        with pytest.raises(ValueError, match=re.escape(f"classes={classes!r}")):
            load_busi(root, classes=classes)
    with pytest.raises(TypeError, match="classes='benign'"):
        load_busi(root, classes="benign")
    assert BUSI_CLASSES == ("benign", "malignant", "normal")


def test_sorted_layout_errors(tmp_path):
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    pixels = np.zeros((4, 4), np.uint8)
    for name in ("benign (1).png", "cyst (1).png", "malignant (1).png"):
        Image.fromarray(pixels).save(tmp_path / "images" / name)
    Image.fromarray(pixels).save(tmp_path / "masks" / "benign (1)_mask.png")
    with pytest.raises(ValueError) as info:
        load_busi(tmp_path)
    message = str(info.value)
    assert "no BUSI class" in message and "'cyst (1).png'" in message
    assert "without a mask" in message and "'malignant (1).png'" in message
