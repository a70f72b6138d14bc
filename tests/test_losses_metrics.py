"""Losses and metrics: the original's batch-global ones and the follow-up's
per-image ones, against their recorded numbers, a NumPy brute force,
properties, bad input, serialisation and a training step on this backend."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_ssr import losses, metrics
from keras_ssr.losses import BCEDiceLoss, DiceLoss, bce_dice_loss, dice_loss
from keras_ssr.metrics import (
    PER_IMAGE_METRIC_NAMES,
    ForegroundIoU,
    PerImageDice,
    dice_coefficient,
    per_image_dice,
    per_image_segmentation_metrics,
    segmentation_metrics,
    specificity,
)
from tests import fixtures_mfr as mfr
from tests.fixtures import assert_agrees, load
from tests.helpers import tiny_segmenter, to_numpy

EPS = 1e-12


@pytest.fixture(autouse=True)
def _clean_keras_state():
    """conftest's fixture without the garbage collection of ``clear_session``
    (which costs more than most tests here); the Keras state is reset alike."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session(free_memory=False)


# ---------------------------------------------------------------- references


def np_dice_loss(y, p, eps=EPS):
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    return 1.0 - (2.0 * np.sum(y * p) + eps) / (np.sum(y) + np.sum(p) + eps)


def np_bce(y, p, eps=1e-7):
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    p = np.clip(p, eps, 1.0 - eps)
    return float(np.mean(-(y * np.log(p) + (1.0 - y) * np.log(1.0 - p))))


def np_dice_coefficient(y, p, eps=EPS):
    y = np.asarray(y, np.float64)
    b = (np.asarray(p) >= 0.5).astype(np.float64)
    return (2.0 * np.sum(y * b) + eps) / (np.sum(y) + np.sum(b) + eps)


def np_specificity(y, p, eps=1e-7):
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    # Counted pixel by pixel: a product counts when it rounds to 1.
    tn = sum(1 for a, b in zip(y.ravel(), p.ravel()) if round((1 - a) * (1 - b)))
    fp = sum(1 for a, b in zip(y.ravel(), p.ravel()) if round((1 - a) * b))
    return tn / (tn + fp + eps)


def value(tensor) -> float:
    return float(keras.ops.convert_to_numpy(tensor))


def random_pair(seed, shape, binary=True):
    rng = np.random.default_rng(seed)
    y = rng.random(shape)
    y = (y > 0.6).astype(np.float32) if binary else y.astype(np.float32)
    p = rng.random(shape).astype(np.float32)
    return y, p


# ------------------------------------------------------------------- parity


def _parity_values(y_true, y_pred) -> dict[str, float]:
    iou = segmentation_metrics()[-1]
    iou.update_state(y_true, y_pred)
    return {
        "dice_loss": value(DiceLoss()(y_true, y_pred)),
        "bce": value(keras.losses.BinaryCrossentropy()(y_true, y_pred)),
        "weighted_loss_alpha_0.5": value(BCEDiceLoss(0.5)(y_true, y_pred)),
        "dice_coefficient": value(dice_coefficient(y_true, y_pred)),
        "specificity": value(specificity(y_true, y_pred)),
        "binary_iou": value(iou.result()),
    }


KEYS = (
    "dice_loss",
    "bce",
    "weighted_loss_alpha_0.5",
    "dice_coefficient",
    "specificity",
    "binary_iou",
)


def test_agrees_with_the_original():
    _, arrays = load("losses_metrics_0")
    actual = _parity_values(arrays["y_true"], arrays["y_pred"])
    assert sorted(actual) == sorted(KEYS)
    failures = []
    for key in KEYS:
        try:
            assert_agrees(np.float32(actual[key]), arrays[key], f"{key}")
        except AssertionError as err:
            failures.append(str(err))
    assert not failures, "losses_metrics_0: " + "; ".join(failures)


def test_fixture_is_batch_global_not_per_sample_mean():
    # The recorded Dice loss is the batch-global one; a per-sample mean differs.
    _, arrays = load("losses_metrics_0")
    y, p = arrays["y_true"], arrays["y_pred"]
    per_sample = np.mean([np_dice_loss(y[i], p[i]) for i in range(len(y))])
    assert abs(np_dice_loss(y, p) - arrays["dice_loss"]) < 1e-5
    assert abs(per_sample - arrays["dice_loss"]) > 1e-3
    assert abs(value(dice_loss(y, p)) - arrays["dice_loss"]) < 1e-5


# ------------------------------------------------------------ brute force


@pytest.mark.parametrize(
    "shape,binary",
    [((2, 5, 6, 1), True), ((3, 4, 4, 2), False), ((7,), True), ((1, 3, 3), False)],
)
def test_against_numpy(shape, binary):
    y, p = random_pair(sum(shape), shape, binary)
    rtol = 1e-5
    np.testing.assert_allclose(value(dice_loss(y, p)), np_dice_loss(y, p), rtol=rtol)
    np.testing.assert_allclose(value(DiceLoss()(y, p)), np_dice_loss(y, p), rtol=rtol)
    for alpha in (0.0, 0.3, 0.5, 1.0):
        expected = alpha * np_bce(y, p) + (1 - alpha) * np_dice_loss(y, p)
        np.testing.assert_allclose(value(BCEDiceLoss(alpha)(y, p)), expected, rtol=rtol)
        np.testing.assert_allclose(
            value(bce_dice_loss(y, p, alpha)), expected, rtol=rtol
        )
    np.testing.assert_allclose(
        value(dice_coefficient(y, p)), np_dice_coefficient(y, p), rtol=rtol
    )
    np.testing.assert_allclose(
        value(specificity(y, p)), np_specificity(y, p), rtol=rtol
    )


def test_custom_epsilon_enters_the_formula():
    y = np.zeros((2, 3), np.float32)
    p = np.full((2, 3), 0.25, np.float32)  # sum(p) = 1.5, intersection 0
    for eps in (1e-12, 0.5, 3.0):
        expected = 1.0 - eps / (1.5 + eps)
        np.testing.assert_allclose(value(DiceLoss(eps)(y, p)), expected, rtol=1e-6)
        np.testing.assert_allclose(
            value(dice_coefficient(y, p, epsilon=eps)), eps / (0.0 + eps), rtol=1e-6
        )


def test_integer_and_bool_targets_are_accepted():
    y, p = random_pair(3, (2, 4, 4, 1))
    for target in (y.astype(np.int32), y.astype(bool), y.astype(np.uint8)):
        np.testing.assert_allclose(
            value(BCEDiceLoss()(target, p)),
            0.5 * np_bce(y, p) + 0.5 * np_dice_loss(y, p),
            rtol=1e-5,
        )
        np.testing.assert_allclose(
            value(dice_coefficient(target, p)), np_dice_coefficient(y, p), rtol=1e-6
        )


# ------------------------------------------------------------- edge cases


def test_half_precision_sums_do_not_overflow():
    # 300 * 300 = 90000 ones: more than float16's largest value, 65504.
    ones = np.ones((1, 300, 300, 1), np.float16)
    half = keras.ops.convert_to_tensor(ones, dtype="float16")
    assert value(dice_coefficient(half, half)) == 1.0
    assert value(dice_loss(half, half)) == 0.0
    assert value(specificity(1.0 - ones, ones * 0.25)) == pytest.approx(1.0, 1e-6)


def test_empty_masks_do_not_give_nan():
    zeros = np.zeros((2, 4, 4, 1), np.float32)
    assert value(DiceLoss()(zeros, zeros)) == 0.0
    assert value(dice_coefficient(zeros, zeros)) == 1.0
    assert value(BCEDiceLoss()(zeros, zeros)) == pytest.approx(
        0.5 * np_bce(zeros, zeros), abs=1e-7
    )
    # Empty target, non-empty prediction: Dice ~ 0, loss ~ 1, all finite.
    ones = np.ones_like(zeros)
    assert value(dice_coefficient(zeros, ones)) == pytest.approx(0.0, abs=1e-9)
    assert value(DiceLoss()(zeros, ones)) == pytest.approx(1.0, abs=1e-7)
    # No negatives at all: specificity 0, not NaN.
    assert value(specificity(ones, ones * 0.3)) == 0.0
    # Saturated predictions keep the cross-entropy finite (clipped).
    bce = value(BCEDiceLoss(1.0)(ones, zeros))
    assert math.isfinite(bce) and bce == pytest.approx(-math.log(1e-7), rel=1e-4)


def test_specificity_rounds_half_to_even_like_the_original():
    # (1 - 0) * (1 - 0.5) = 0.5 rounds to 0 (banker's rounding), as tf.round.
    y = np.zeros((1, 4), np.float32)
    p = np.array([[0.5, 0.5, 0.1, 0.9]], np.float32)
    # tn: 0.5->0, 0.5->0, 0.9->1, 0.1->0 ; fp: 0.5->0, 0.5->0, 0.1->0, 0.9->1
    assert value(specificity(y, p)) == pytest.approx(1 / (1 + 1 + 1e-7), rel=1e-6)


# ------------------------------------------------------------- properties

unit = st.floats(0.0, 1.0, width=32)
# A few fixed shapes: eager JAX compiles every op once per new shape.
shapes = st.sampled_from([(1,), (5,), (2, 3), (2, 3, 3, 1)])


@st.composite
def pairs(draw, binary_true=False):
    shape = draw(shapes)
    elements = st.sampled_from([0.0, 1.0]) if binary_true else unit
    y = draw(hnp.arrays(np.float32, shape, elements=elements))
    p = draw(hnp.arrays(np.float32, shape, elements=unit))
    return y, p


@given(pairs())
def test_dice_loss_is_in_unit_interval_and_symmetric(pair):
    y, p = pair
    loss = value(dice_loss(y, p))
    assert -1e-6 <= loss <= 1.0 + 1e-6
    assert loss == pytest.approx(value(dice_loss(p, y)), abs=1e-6)
    assert loss == pytest.approx(np_dice_loss(y, p), abs=1e-5)


@given(hnp.arrays(np.float32, shapes, elements=st.sampled_from([0.0, 1.0])))
def test_identical_binary_masks_are_perfect(mask):
    assert value(dice_loss(mask, mask)) == pytest.approx(0.0, abs=1e-6)
    assert value(dice_coefficient(mask, mask)) == pytest.approx(1.0, abs=1e-6)
    if np.any(mask == 0):
        assert value(specificity(mask, mask)) == pytest.approx(1.0, abs=1e-6)


@given(pairs(binary_true=True), st.floats(0.0, 1.0))
def test_weighted_loss_interpolates(pair, alpha):
    y, p = pair
    bce = value(BCEDiceLoss(1.0)(y, p))
    dice = value(DiceLoss()(y, p))
    mixed = value(BCEDiceLoss(alpha)(y, p))
    assert mixed == pytest.approx(alpha * bce + (1 - alpha) * dice, abs=1e-5)
    assert bce >= 0.0


@given(pairs(binary_true=True))
def test_metrics_are_in_unit_interval(pair):
    y, p = pair
    dice = value(dice_coefficient(y, p))
    spec = value(specificity(y, p))
    assert 0.0 <= dice <= 1.0 + 1e-6
    assert 0.0 <= spec <= 1.0
    assert dice == pytest.approx(np_dice_coefficient(y, p), abs=1e-6)


# -------------------------------------------------------------- bad input


@pytest.mark.parametrize("shapes_", [((2, 4, 4, 1), (2, 4, 4, 2)), ((2, 4), (2, 4, 1))])
def test_shape_mismatch_names_both_shapes(shapes_):
    true_shape, pred_shape = shapes_
    y_true = np.zeros(true_shape, np.float32)
    y_pred = np.zeros(pred_shape, np.float32)
    for fn in (
        DiceLoss(),
        BCEDiceLoss(),
        dice_loss,
        bce_dice_loss,
        dice_coefficient,
        specificity,
    ):
        with pytest.raises(ValueError) as info:
            fn(y_true, y_pred)
        message = str(info.value)
        assert f"y_true.shape={true_shape}" in message, fn
        assert f"y_pred.shape={pred_shape}" in message, fn


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match=f"alpha={alpha!r}"):
        BCEDiceLoss(alpha)
    with pytest.raises(ValueError, match=f"alpha={alpha!r}"):
        bce_dice_loss(np.zeros(2), np.zeros(2), alpha=alpha)


@pytest.mark.parametrize("alpha", ["0.5", True, None])
def test_alpha_of_wrong_type(alpha):
    with pytest.raises(TypeError, match="alpha="):
        BCEDiceLoss(alpha)


@pytest.mark.parametrize("epsilon", [0.0, -1e-12, float("inf")])
def test_bad_epsilon(epsilon):
    for make in (DiceLoss, lambda e: BCEDiceLoss(epsilon=e)):
        with pytest.raises(ValueError, match=f"epsilon={epsilon!r}"):
            make(epsilon)
    with pytest.raises(ValueError, match=f"epsilon={epsilon!r}"):
        dice_coefficient(np.zeros(2), np.zeros(2), epsilon=epsilon)
    with pytest.raises(TypeError, match="epsilon='1'"):
        DiceLoss("1")


def test_get_loss():
    assert isinstance(losses.get_loss("ce"), keras.losses.BinaryCrossentropy)
    assert isinstance(losses.get_loss("dice"), DiceLoss)
    weighted = losses.get_loss("Weighted", alpha=0.25)
    assert isinstance(weighted, BCEDiceLoss) and weighted.alpha == 0.25
    with pytest.raises(ValueError, match="name='focal'"):
        losses.get_loss("focal")


# --------------------------------------------------------- serialisation


def test_losses_serialise():
    for loss in (DiceLoss(1e-6, name="d"), BCEDiceLoss(0.25, 1e-8)):
        config = keras.losses.serialize(loss)
        assert config["registered_name"] == f"keras_ssr>{type(loss).__name__}"
        clone = keras.losses.deserialize(config)
        assert type(clone) is type(loss)
        assert clone.get_config() == loss.get_config()
    clone = keras.losses.deserialize(keras.losses.serialize(DiceLoss(dtype="float16")))
    assert clone.dtype == "float16"
    assert BCEDiceLoss(0.25, 1e-8).get_config() == {
        "name": "bce_dice_loss",
        "alpha": 0.25,
        "epsilon": 1e-8,
    }


def test_metric_functions_are_registered():
    for fn, name in (
        (specificity, "specificity"),
        (dice_coefficient, "dice_coefficient"),
    ):
        assert fn.__name__ == name
        assert keras.saving.get_registered_name(fn) == f"keras_ssr>{name}"
        assert keras.saving.get_registered_object(f"keras_ssr>{name}") is fn


def test_segmentation_metrics_are_the_original_set():
    first, second = segmentation_metrics(), segmentation_metrics()
    kinds = [
        keras.metrics.BinaryAccuracy,
        keras.metrics.AUC,
        keras.metrics.Precision,
        keras.metrics.Recall,
        None,
        None,
        keras.metrics.BinaryIoU,
    ]
    for metric, kind in zip(first, kinds):
        if kind is not None:
            assert isinstance(metric, kind)
    assert first[4] is specificity and first[5] is dice_coefficient
    assert first[3].name == "sensitivity"
    assert all(a is not b for a, b in zip(first[:4], second[:4]))
    assert metrics.segmentation_metrics is segmentation_metrics


# ------------------------------------------------------------ training step


def test_fit_evaluate_save_load(tmp_path):
    model, x, y = tiny_segmenter()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=BCEDiceLoss(),
        metrics=segmentation_metrics(),
    )
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    for key in (
        "loss",
        "binary_accuracy",
        "auc",
        "precision",
        "sensitivity",
        "specificity",
        "dice_coefficient",
        "binary_io_u",
    ):
        assert key in history.history, sorted(history.history)
        assert np.isfinite(history.history[key][0])
    # The names the package declares are the ones Keras logs.
    assert sorted(history.history) == sorted(
        ["loss", *metrics.SEGMENTATION_METRIC_NAMES]
    )

    # One batch holding everything: the reported numbers are the formulas.
    logs = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    p = model.predict(x, batch_size=4, verbose=0)
    assert logs["loss"] == pytest.approx(
        0.5 * np_bce(y, p) + 0.5 * np_dice_loss(y, p), rel=1e-5
    )
    assert logs["dice_coefficient"] == pytest.approx(np_dice_coefficient(y, p), 1e-5)
    assert logs["specificity"] == pytest.approx(np_specificity(y, p), rel=1e-5)

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.loss, BCEDiceLoss) and loaded.loss.alpha == 0.5
    loaded_logs = loaded.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    for key, expected in logs.items():
        assert loaded_logs[key] == pytest.approx(expected, rel=1e-5, abs=1e-6), key


# ------------------------------------------- per-image metrics: brute force


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


# ------------------------------------------------- per-image metrics: parity


def test_per_image_dice_agrees_with_the_followup():
    _, arrays = mfr.load("metrics_0")
    y, p = arrays["y_true"], arrays["y_pred"]
    actual = to_numpy(per_image_dice(y, p))
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
    _, arrays = mfr.load("metrics_0")
    y, p = arrays["y_true"], arrays["y_pred"]
    metric = ForegroundIoU()
    metric.update_state(y, p)
    assert_agrees(float(metric.result()), arrays["foreground_iou"], "foreground_iou")
    # ... and it is not the original's mean of background and foreground IoU.
    mean_iou = keras.metrics.BinaryIoU()
    mean_iou.update_state(y, p)
    assert abs(float(mean_iou.result()) - float(arrays["foreground_iou"])) > 1e-2


def test_per_image_fixture_matches_the_brute_force():
    _, arrays = mfr.load("metrics_0")
    y, p = arrays["y_true"], arrays["y_pred"]
    np.testing.assert_allclose(
        np_per_image_dice(y, p), arrays["dice_per_image"], rtol=1e-5, atol=1e-12
    )
    np.testing.assert_allclose(
        np_foreground_iou(y, p), arrays["foreground_iou"], rtol=1e-6
    )


@pytest.mark.parametrize("shape", [(3, 5, 6, 1), (4,), (2, 3, 4, 4, 1)])
def test_per_image_against_numpy(shape):
    y, p = random_pair(sum(shape), shape)
    expected = np_per_image_dice(y, p)
    actual = to_numpy(per_image_dice(y, p))
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


# --------------------------------------------- per-image metrics: edge cases


def test_per_image_empty_masks():
    zeros = np.zeros((2, 4, 4, 1), np.float32)
    ones = np.ones_like(zeros)
    np.testing.assert_array_equal(to_numpy(per_image_dice(zeros, zeros)), [1.0, 1.0])
    empty_pred = to_numpy(per_image_dice(ones, zeros))
    assert np.all(np.isfinite(empty_pred)) and np.all(empty_pred < 1e-12)


def test_per_image_half_precision_is_promoted():
    ones = keras.ops.ones((1, 300, 300, 1), dtype="float16")  # 90000 > 65504
    dice = per_image_dice(ones, ones)
    assert keras.backend.standardize_dtype(dice.dtype) == "float32"
    assert float(to_numpy(dice)[0]) == 1.0


def test_per_image_integer_targets():
    y, p = random_pair(5, (2, 4, 4, 1))
    for target in (y.astype(np.int32), y.astype(bool)):
        np.testing.assert_allclose(
            to_numpy(per_image_dice(target, p)), np_per_image_dice(y, p), rtol=1e-6
        )


# --------------------------------------------- per-image metrics: properties

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
    dice = to_numpy(per_image_dice(mask, p))
    assert np.all(dice >= 0.0) and np.all(dice <= 1.0 + 1e-6)
    # Symmetric in the two binary masks, and perfect on itself.
    hard = (p >= 0.5).astype(np.float32)
    np.testing.assert_allclose(dice, to_numpy(per_image_dice(hard, mask)), atol=1e-6)
    np.testing.assert_allclose(to_numpy(per_image_dice(mask, mask)), 1.0, atol=1e-6)
    # One image's value does not depend on the others in its batch.
    np.testing.assert_allclose(
        dice[:1], to_numpy(per_image_dice(mask[:1], p[:1])), atol=0
    )


# ---------------------------------------------- per-image metrics: bad input


def test_per_image_shape_mismatch_names_both_shapes():
    with pytest.raises(
        ValueError, match=r"y_true.shape=\(2, 4\).*y_pred.shape=\(2, 5\)"
    ):
        per_image_dice(np.zeros((2, 4)), np.zeros((2, 5)))


@pytest.mark.parametrize("epsilon", [0.0, -1.0, float("nan")])
def test_per_image_bad_epsilon(epsilon):
    with pytest.raises(ValueError, match="epsilon="):
        per_image_dice(np.zeros((2, 2)), np.zeros((2, 2)), epsilon=epsilon)
    with pytest.raises(ValueError, match="epsilon="):
        PerImageDice(epsilon=epsilon)
    with pytest.raises(TypeError, match="epsilon='1'"):
        PerImageDice(epsilon="1")


def test_scalar_input_has_no_batch_axis():
    with pytest.raises(ValueError, match="batch axis"):
        per_image_dice(np.float32(1.0), np.float32(1.0))


# ------------------------------------------ per-image metrics: serialisation


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
    prediction = to_numpy(model(x))
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
