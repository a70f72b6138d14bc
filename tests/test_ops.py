"""keras_ssr.ops against NumPy brute force, on every rank and data format."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_ssr import ops as ssr_ops
from tests import numpy_oracle as oracle
from tests.gradients import compiled, vjp_function
from tests.helpers import to_numpy

RNG = np.random.default_rng(1234)


def _t(x):
    return keras.ops.convert_to_tensor(np.asarray(x, dtype="float32"))


def _rel(a, b):
    return np.max(np.abs(a - b)) / max(1.0, np.max(np.abs(b)))


# Odd and even sizes, sizes below the largest box, 1-D, 2-D and 3-D.
SHAPES = [
    (2, 7, 3),
    (2, 16, 1),
    (1, 13, 9, 2),
    (2, 8, 5, 3),
    (2, 3, 2, 2),
    (1, 5, 7, 6, 2),
    (2, 4, 3, 5, 1),
]


def _to_first(x):
    return np.moveaxis(x, -1, 1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("max_scale", [1, 2, 3])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_box_sums_equal_brute_force(shape, max_scale, data_format):
    x = RNG.uniform(0, 5, size=shape)
    if data_format == "channels_first":
        x = _to_first(x)
    axes = oracle.spatial_axes(x.ndim, data_format)
    box_sums = compiled(lambda t: ssr_ops.box_sums(t, max_scale, data_format))
    got = to_numpy(box_sums(_t(x)))
    assert got.shape == x.shape + (max_scale,)
    for j in range(max_scale):
        want = oracle.box_sum(x, 2 ** (j + 1), axes)
        np.testing.assert_allclose(got[..., j], want, rtol=1e-5, atol=1e-5)


def test_box_sums_are_exact_on_large_maps():
    """No cumulative-sum drift: 224 x 224, boxes up to 16, float32 vs float64."""
    x = RNG.uniform(1, 256, size=(1, 224, 224, 1))
    got = to_numpy(ssr_ops.box_sums(_t(x), 4))
    for j in range(4):
        want = oracle.box_sum(x, 2 ** (j + 1), (1, 2))
        assert np.max(np.abs(got[..., j] - want) / want) < 2e-6


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scaling", ["batch", "sample"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_singularity_strength_equals_brute_force(shape, scaling, data_format):
    x = RNG.normal(size=shape)
    if data_format == "channels_first":
        x = _to_first(x)
    got = to_numpy(ssr_ops.singularity_strength(_t(x), 3, scaling, data_format))
    want = oracle.singularity_strength(x, 3, scaling, data_format)
    assert got.dtype == np.float32
    assert _rel(got, want) < 1e-5


@pytest.mark.parametrize("shape", [(2, 9, 4), (2, 11, 6, 3), (1, 5, 6, 7, 2)])
def test_channels_first_equals_channels_last(shape):
    x = RNG.normal(size=shape).astype("float32")
    last = to_numpy(ssr_ops.singularity_strength(_t(x), 3, "sample", "channels_last"))
    first = to_numpy(
        ssr_ops.singularity_strength(_t(_to_first(x)), 3, "sample", "channels_first")
    )
    np.testing.assert_allclose(_to_first(last), first, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("scaling", ["batch", "sample"])
def test_min_max_scale_equals_numpy(scaling):
    x = RNG.normal(size=(3, 6, 5, 4))
    x[..., 1] = 2.5  # a constant channel stays finite (clipped denominator)
    got = to_numpy(ssr_ops.min_max_scale(_t(x), scaling))
    want = oracle.min_max(x, scaling)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    assert got.min() >= 1.0 - 1e-4 and got.max() <= 256.0 + 1e-3


@pytest.mark.parametrize("n", [2, 3, 6])
def test_ols_slope_equals_centred_formula(n):
    measures = RNG.uniform(1, 1000, size=(2, 4, 3, n))
    for scales in (ssr_ops.dyadic_scales(n), list(range(1, n + 1))):
        got = to_numpy(ssr_ops.ols_slope(_t(measures), scales))
        np.testing.assert_allclose(
            got, oracle.slope(measures, scales), rtol=1e-5, atol=1e-5
        )


def test_ols_slope_recovers_a_power_law():
    """measure = c * scale**a has slope exactly a."""
    scales = ssr_ops.dyadic_scales(4)
    exponents = RNG.uniform(0.5, 3.0, size=(5,))
    measures = 3.0 * np.asarray(scales)[None, :] ** exponents[:, None]
    got = to_numpy(ssr_ops.ols_slope(_t(measures), scales))
    np.testing.assert_allclose(got, exponents, rtol=1e-5)


def test_ols_weights_sum_to_zero_and_fit_a_line():
    w = ssr_ops.ols_weights([2, 4, 8, 16])
    assert abs(w.sum()) < 1e-12
    assert abs(np.dot(w, np.log([2, 4, 8, 16])) - 1.0) < 1e-12


@pytest.mark.parametrize("size", range(1, 8))
def test_gaussian_kernel_matches_the_original_grid(size):
    np.testing.assert_allclose(
        ssr_ops.gaussian_kernel(size), oracle.gaussian_kernel(size), rtol=1e-6
    )
    assert abs(ssr_ops.gaussian_kernel(size).sum() - 1.0) < 1e-6


def test_gaussian_kernel_even_sizes_are_off_centre():
    """The original's quirk, stated from its definition: s=2 is flat."""
    np.testing.assert_allclose(ssr_ops.gaussian_kernel(2), np.full((2, 2), 0.25))
    profile = np.exp(-0.5 * np.array([-1, -1 / 3, 1 / 3, 1.0]) ** 2 / 4.0)
    want = np.outer(profile, profile)
    np.testing.assert_allclose(ssr_ops.gaussian_kernel(4), want / want.sum(), rtol=1e-6)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_learnable_measures_equal_brute_force(data_format):
    x = RNG.uniform(0, 3, size=(2, 9, 8, 3))
    if data_format == "channels_first":
        x = _to_first(x)
    kernels = [RNG.normal(size=(s, s)) for s in range(1, 5)]
    got = to_numpy(
        ssr_ops.learnable_measures(_t(x), [_t(k) for k in kernels], data_format)
    )
    want = oracle.learnable_measures(x, kernels, data_format)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_learnable_singularity_strength_equals_brute_force():
    x = RNG.normal(size=(2, 10, 7, 3))
    kernels = [np.abs(RNG.normal(size=(s, s))) for s in range(1, 5)]
    got = to_numpy(
        ssr_ops.learnable_singularity_strength(_t(x), [_t(k) for k in kernels])
    )
    measures = oracle.learnable_measures(oracle.min_max(x), kernels)
    want = oracle.slope(measures, range(1, 5))
    assert _rel(got, want) < 1e-5


def test_centered_batch_normalization_equals_numpy():
    x = RNG.normal(loc=5.0, scale=0.01, size=(4, 6, 6, 3))
    mean, variance = ssr_ops.centered_moments(_t(x), (0, 1, 2))
    np.testing.assert_allclose(
        to_numpy(mean).ravel(), x.mean(axis=(0, 1, 2)), rtol=1e-6
    )
    np.testing.assert_allclose(
        to_numpy(variance).ravel(), x.var(axis=(0, 1, 2)), rtol=1e-3
    )
    gamma, beta = RNG.normal(size=3), RNG.normal(size=3)
    y = to_numpy(
        ssr_ops.batch_normalize(_t(x), mean, variance, _t(gamma), _t(beta), 1e-3)
    )
    want = (x - x.mean((0, 1, 2))) / np.sqrt(x.var((0, 1, 2)) + 1e-3) * gamma + beta
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


def test_float64_inputs_stay_float64():
    if keras.backend.backend() == "jax":
        pytest.skip("JAX computes in float32 unless x64 is enabled")
    x = keras.ops.convert_to_tensor(RNG.normal(size=(1, 8, 8, 2)), dtype="float64")
    assert (
        keras.backend.standardize_dtype(ssr_ops.singularity_strength(x, 2).dtype)
        == "float64"
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_inputs_are_computed_in_float32(dtype):
    x = RNG.normal(size=(2, 16, 16, 2))
    half = keras.ops.cast(_t(x), dtype)
    got = ssr_ops.singularity_strength(half, 4)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    want = oracle.singularity_strength(to_numpy(keras.ops.cast(half, "float32")), 4)
    assert _rel(to_numpy(got), want) < 1e-5


def _autodiff_strength(max_scale, scaling, data_format):
    """The map from the public, plainly differentiated pieces."""

    def fn(x):
        scaled = ssr_ops.min_max_scale(x, scaling, data_format)
        measures = ssr_ops.box_sums(scaled, max_scale, data_format)
        return ssr_ops.ols_slope(measures, ssr_ops.dyadic_scales(max_scale))

    return fn


@pytest.mark.parametrize(
    "shape, scaling, data_format",
    [
        ((2, 23, 3), "batch", "channels_last"),
        ((3, 17, 12, 2), "batch", "channels_last"),
        ((2, 3, 9, 14), "sample", "channels_first"),
        ((1, 6, 7, 5, 2), "sample", "channels_last"),
        ((2, 2, 5, 4, 7), "batch", "channels_first"),
    ],
)
def test_hand_written_gradient_equals_autodiff(shape, scaling, data_format):
    """singularity_strength's custom gradient against autodiff of the pieces,
    ties at the minimum and maximum included."""
    x = RNG.normal(size=shape).astype("float32")
    flat = x.reshape(-1)
    flat[:4] = flat.min()  # ties at the minimum
    flat[-3:] = flat.max()  # and at the maximum
    cotangent = RNG.normal(size=shape).astype("float32")
    y, grad = vjp_function(
        lambda t: ssr_ops.singularity_strength(t, 3, scaling, data_format), x, cotangent
    )
    y_ref, grad_ref = vjp_function(
        _autodiff_strength(3, scaling, data_format), x, cotangent
    )
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    scale = max(1.0, np.abs(grad_ref).max())
    assert np.max(np.abs(grad - grad_ref)) / scale < 1e-4


# -- bad input ---------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, text",
    [
        (lambda x: ssr_ops.singularity_strength(x, 1), ValueError, "max_scale=1"),
        (lambda x: ssr_ops.singularity_strength(x, 0), ValueError, "max_scale=0"),
        (lambda x: ssr_ops.singularity_strength(x, 17), ValueError, "max_scale=17"),
        (lambda x: ssr_ops.singularity_strength(x, 2.5), TypeError, "max_scale=2.5"),
        (lambda x: ssr_ops.singularity_strength(x, True), TypeError, "max_scale=True"),
        (lambda x: ssr_ops.singularity_strength(x, "3"), TypeError, "max_scale='3'"),
        (lambda x: ssr_ops.box_sums(x, 0), ValueError, "max_scale=0"),
        (
            lambda x: ssr_ops.min_max_scale(x, "channel"),
            ValueError,
            "scaling='channel'",
        ),
        (
            lambda x: ssr_ops.singularity_strength(x, 3, data_format="NHWC"),
            ValueError,
            "data_format='NHWC'",
        ),
        (lambda x: ssr_ops.ols_slope(x, [2]), ValueError, "scales=[2.0]"),
        (lambda x: ssr_ops.ols_slope(x, [2, 2, 2, 2]), ValueError, "scales="),
        (lambda x: ssr_ops.ols_slope(x, [2, 4]), ValueError, "measures.shape"),
        (lambda x: ssr_ops.gaussian_kernel(0), ValueError, "size=0"),
        (lambda x: ssr_ops.learnable_measures(x, []), ValueError, "kernels"),
        (
            lambda x: ssr_ops.learnable_measures(x, [_t(np.ones((2, 2)))]),
            ValueError,
            "kernels[0] must have shape (1, 1)",
        ),
        (
            lambda x: ssr_ops.learnable_singularity_strength(x, [_t(np.ones((1, 1)))]),
            ValueError,
            "1 kernel",
        ),
    ],
)
def test_bad_arguments_are_named(call, error, text):
    with pytest.raises(error) as info:
        call(_t(np.ones((1, 4, 4, 4))))
    assert text in str(info.value)


def test_non_float_input_is_a_type_error():
    x = keras.ops.convert_to_tensor(np.ones((1, 4, 4, 2), dtype="int32"))
    with pytest.raises(TypeError, match="x.dtype=int32"):
        ssr_ops.singularity_strength(x, 2)


def test_low_rank_input_is_a_value_error():
    with pytest.raises(ValueError, match=r"x.shape=\(4, 4\)"):
        ssr_ops.singularity_strength(_t(np.ones((4, 4))), 2)
