"""The follow-up's metrics: per-image Dice and foreground IoU, against its
recorded numbers (``metrics_0``), a NumPy brute force, properties, bad input
and serialisation, on this backend."""

from __future__ import annotations

import json
import pathlib

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_ssr import metrics
from keras_ssr.metrics import (
    PER_IMAGE_METRIC_NAMES,
    ForegroundIoU,
    PerImageDice,
    per_image_dice,
    per_image_segmentation_metrics,
)
from tests.fixtures import assert_agrees
from tests.helpers import tiny_segmenter

DATA = pathlib.Path(__file__).parent / "data" / "reference_mfr_tf214"
EPS = 1e-12


@pytest.fixture(autouse=True)
def _clean_keras_state():
    """conftest's fixture without ``clear_session``'s garbage collection."""
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


def load_metrics_case():
    manifest = json.loads((DATA / "manifest.json").read_text())
    case = next(c for c in manifest["cases"] if c["case"] == "metrics_0")
    with np.load(DATA / case["file"]) as arrays:
        return {key: arrays[key] for key in arrays.files}


def numpy_(tensor) -> np.ndarray:
    return keras.ops.convert_to_numpy(tensor)


# ---------------------------------------------------------------- brute force


def np_per_image_dice(y, p, eps=EPS):
    """Image by image, pixel by pixel, in float64."""
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    result = []
    for yi, pi in zip(y, p):
        inter = total = 0.0
        for a, b in zip(yi.ravel(), pi.ravel()):
            hard = 1.0 if b >= 0.5 else 0.0
            inter += a * hard
            total += a + hard
        result.append((2.0 * inter + eps) / (total + eps))
    return np.array(result)


def np_foreground_iou(y, p, threshold=0.5):
    y = np.asarray(y).ravel() > 0.5
    hard = np.asarray(p).ravel() >= threshold
    tp = np.sum(y & hard)
    fp = np.sum(~y & hard)
    fn = np.sum(y & ~hard)
    return tp / (tp + fp + fn) if tp + fp + fn else 0.0


def random_pair(seed, shape):
    rng = np.random.default_rng(seed)
    y = (rng.random(shape) > 0.6).astype(np.float32)
    p = rng.random(shape).astype(np.float32)
    return y, p


# --------------------------------------------------------------------- parity


def test_per_image_dice_agrees_with_the_followup():
    arrays = load_metrics_case()
    y, p = arrays["y_true"], arrays["y_pred"]
    actual = numpy_(per_image_dice(y, p))
    assert actual.shape == arrays["dice_per_image"].shape == (4,)
    assert_agrees(actual, arrays["dice_per_image"], "dice_per_image")
    # The case is not trivial: one image has an empty prediction (Dice ~ 0)
    # and the per-image mean differs from the batch-wide Dice.
    assert arrays["dice_per_image"].min() < 1e-6
    assert abs(np.mean(actual) - float(metrics.dice_coefficient(y, p))) > 1e-2
    metric = PerImageDice()
    metric.update_state(y, p)
    assert_agrees(
        float(metric.result()), np.mean(arrays["dice_per_image"]), "PerImageDice"
    )


def test_foreground_iou_agrees_with_the_followup():
    arrays = load_metrics_case()
    y, p = arrays["y_true"], arrays["y_pred"]
    metric = ForegroundIoU()
    metric.update_state(y, p)
    assert_agrees(float(metric.result()), arrays["foreground_iou"], "foreground_iou")
    # ... and it is not the original's mean of background and foreground IoU.
    mean_iou = keras.metrics.BinaryIoU()
    mean_iou.update_state(y, p)
    assert abs(float(mean_iou.result()) - float(arrays["foreground_iou"])) > 1e-2


def test_fixture_matches_the_brute_force():
    arrays = load_metrics_case()
    y, p = arrays["y_true"], arrays["y_pred"]
    np.testing.assert_allclose(
        np_per_image_dice(y, p), arrays["dice_per_image"], rtol=1e-5, atol=1e-12
    )
    np.testing.assert_allclose(
        np_foreground_iou(y, p), arrays["foreground_iou"], rtol=1e-6
    )


@pytest.mark.parametrize("shape", [(3, 5, 6, 1), (4,), (2, 3, 4, 4, 1)])
def test_against_numpy(shape):
    y, p = random_pair(sum(shape), shape)
    expected = np_per_image_dice(y, p)
    actual = numpy_(per_image_dice(y, p))
    assert actual.shape == (shape[0],)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-12)
    iou = ForegroundIoU()
    iou.update_state(y, p)
    np.testing.assert_allclose(float(iou.result()), np_foreground_iou(y, p), rtol=1e-5)


def test_metric_averages_images_across_batches():
    # Batches of 3 and 1 images: every image counts once (not batch means).
    y, p = random_pair(7, (4, 6, 6, 1))
    metric = PerImageDice()
    metric.update_state(y[:3], p[:3])
    metric.update_state(y[3:], p[3:])
    np.testing.assert_allclose(
        float(metric.result()), np.mean(np_per_image_dice(y, p)), rtol=1e-5
    )
    weights = np.array([1.0, 0.0, 2.0, 1.0], np.float32)
    metric.reset_state()
    metric.update_state(y, p, sample_weight=weights)
    expected = np.sum(weights * np_per_image_dice(y, p)) / np.sum(weights)
    np.testing.assert_allclose(float(metric.result()), expected, rtol=1e-5)


def test_foreground_iou_accumulates_over_batches():
    y, p = random_pair(11, (4, 5, 5, 1))
    metric = ForegroundIoU()
    metric.update_state(y[:1], p[:1])
    metric.update_state(y[1:], p[1:])
    np.testing.assert_allclose(
        float(metric.result()), np_foreground_iou(y, p), rtol=1e-5
    )
    metric = ForegroundIoU(threshold=0.8)
    metric.update_state(y, p)
    np.testing.assert_allclose(
        float(metric.result()), np_foreground_iou(y, p, 0.8), rtol=1e-5
    )


# ----------------------------------------------------------------- edge cases


def test_empty_masks():
    zeros = np.zeros((2, 4, 4, 1), np.float32)
    ones = np.ones_like(zeros)
    np.testing.assert_array_equal(numpy_(per_image_dice(zeros, zeros)), [1.0, 1.0])
    empty_pred = numpy_(per_image_dice(ones, zeros))
    assert np.all(np.isfinite(empty_pred)) and np.all(empty_pred < 1e-12)


def test_half_precision_is_promoted():
    ones = keras.ops.ones((1, 300, 300, 1), dtype="float16")  # 90000 > 65504
    dice = per_image_dice(ones, ones)
    assert keras.backend.standardize_dtype(dice.dtype) == "float32"
    assert float(numpy_(dice)[0]) == 1.0


def test_integer_targets():
    y, p = random_pair(5, (2, 4, 4, 1))
    for target in (y.astype(np.int32), y.astype(bool)):
        np.testing.assert_allclose(
            numpy_(per_image_dice(target, p)), np_per_image_dice(y, p), rtol=1e-6
        )


# ----------------------------------------------------------------- properties

masks = hnp.arrays(
    np.float32,
    st.sampled_from([(1, 4), (3, 2, 2, 1)]),
    elements=st.sampled_from([0.0, 1.0]),
)


@given(masks, st.data())
def test_dice_properties(mask, data):
    p = data.draw(
        hnp.arrays(np.float32, mask.shape, elements=st.floats(0.0, 1.0, width=32))
    )
    dice = numpy_(per_image_dice(mask, p))
    assert np.all(dice >= 0.0) and np.all(dice <= 1.0 + 1e-6)
    # Symmetric in the two binary masks, and perfect on itself.
    hard = (p >= 0.5).astype(np.float32)
    np.testing.assert_allclose(dice, numpy_(per_image_dice(hard, mask)), atol=1e-6)
    np.testing.assert_allclose(numpy_(per_image_dice(mask, mask)), 1.0, atol=1e-6)
    # One image's value does not depend on the others in its batch.
    np.testing.assert_allclose(
        dice[:1], numpy_(per_image_dice(mask[:1], p[:1])), atol=0
    )


# ------------------------------------------------------------------ bad input


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(
        ValueError, match=r"y_true.shape=\(2, 4\).*y_pred.shape=\(2, 5\)"
    ):
        per_image_dice(np.zeros((2, 4)), np.zeros((2, 5)))


@pytest.mark.parametrize("epsilon", [0.0, -1.0, float("nan")])
def test_bad_epsilon(epsilon):
    with pytest.raises(ValueError, match="epsilon="):
        per_image_dice(np.zeros((2, 2)), np.zeros((2, 2)), epsilon=epsilon)
    with pytest.raises(ValueError, match="epsilon="):
        PerImageDice(epsilon=epsilon)
    with pytest.raises(TypeError, match="epsilon='1'"):
        PerImageDice(epsilon="1")


def test_scalar_input_has_no_batch_axis():
    with pytest.raises(ValueError, match="batch axis"):
        per_image_dice(np.float32(1.0), np.float32(1.0))


# ------------------------------------------------------------- serialisation


def test_metrics_serialise():
    for metric in (PerImageDice(1e-6, name="d"), ForegroundIoU(0.3, name="iou")):
        config = keras.metrics.serialize(metric)
        assert config["registered_name"] == f"keras_ssr>{type(metric).__name__}"
        clone = keras.metrics.deserialize(config)
        assert type(clone) is type(metric)
        assert clone.get_config() == metric.get_config()
    assert PerImageDice(1e-6).epsilon == 1e-6
    assert ForegroundIoU().target_class_ids == [1]
    assert (
        keras.saving.get_registered_object("keras_ssr>per_image_dice") is per_image_dice
    )


def test_per_image_set_and_a_training_step(tmp_path):
    names = [m.name for m in per_image_segmentation_metrics()]
    assert names == [
        "binary_accuracy",
        "auc",
        "precision",
        "sensitivity",
        "specificity",
        "dice_score",
        "binary_io_u",
    ]
    model, x, y = tiny_segmenter()
    model.compile(
        optimizer="adam",
        loss="binary_crossentropy",
        metrics=per_image_segmentation_metrics(),
    )
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    for name in names:
        assert np.isfinite(history.history[name][0]), name
    assert sorted(history.history) == sorted(["loss", *PER_IMAGE_METRIC_NAMES])
    scores = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    prediction = numpy_(model(x))
    np.testing.assert_allclose(
        scores["dice_score"], np.mean(np_per_image_dice(y, prediction)), rtol=1e-4
    )
    np.testing.assert_allclose(
        scores["binary_io_u"], np_foreground_iou(y, prediction), rtol=1e-4
    )
    path = tmp_path / "model.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    rescored = again.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    np.testing.assert_allclose(rescored["dice_score"], scores["dice_score"], rtol=1e-6)
    np.testing.assert_allclose(
        rescored["binary_io_u"], scores["binary_io_u"], rtol=1e-6
    )
