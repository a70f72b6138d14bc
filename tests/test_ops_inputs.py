"""Every public op of keras_ssr.ops takes what ``keras.ops`` takes (NumPy
arrays, Python lists and scalars, backend tensors) on every backend, keeps
float64 where the backend has it, and answers bad input with a clear error.

Values are checked against the NumPy brute force (``numpy_oracle``) or the
textbook formula, never against keras_ssr's own output.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_ssr import layers
from keras_ssr import ops as ssr_ops
from tests import numpy_oracle as oracle
from tests.gradients import float64_mode

BACKEND = keras.backend.backend()
RNG = np.random.default_rng(7)
#: One small shape for every op, so that JAX compiles each op once.
X = RNG.normal(loc=2.0, size=(2, 5, 6, 3)).astype("float32")
KERNELS = [oracle.gaussian_kernel(s).astype("float32") for s in (1, 2, 3)]
MEAN = RNG.normal(size=3).astype("float32")
VARIANCE = RNG.uniform(0.5, 2.0, size=3).astype("float32")
GAMMA = RNG.normal(size=3).astype("float32")
BETA = RNG.normal(size=3).astype("float32")
KINDS = ["numpy", "list", "tensor"]


def _kind(a, kind):
    a = np.asarray(a)
    if kind == "numpy":
        return a
    if kind == "list":
        return a.tolist()
    return keras.ops.convert_to_tensor(a)


def _np(t):
    return np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float64)


def _dtype(t):
    return keras.backend.standardize_dtype(t.dtype)


def _box_sums(x, max_scale):
    return np.stack(
        [oracle.box_sum(x, 2**j, (1, 2)) for j in range(1, max_scale + 1)], -1
    )


def _batch_normalize(x, mean, variance, scale, offset, epsilon=1e-3):
    return (x - mean) / np.sqrt(variance + epsilon) * scale + offset


# name -> (call on arrays of one kind, NumPy reference on the float32 data)
CASES = {
    "min_max_scale": (
        lambda k: ssr_ops.min_max_scale(_kind(X, k)),
        lambda: oracle.min_max(X),
    ),
    "box_sums": (
        lambda k: ssr_ops.box_sums(_kind(X, k), 2),
        lambda: _box_sums(X, 2),
    ),
    "singularity_strength": (
        lambda k: ssr_ops.singularity_strength(_kind(X, k), 2),
        lambda: oracle.singularity_strength(X, 2),
    ),
    "ols_slope": (
        lambda k: ssr_ops.ols_slope(_kind(1.0 + np.abs(X), k), [1, 2, 4]),
        lambda: oracle.slope(1.0 + np.abs(X), [1, 2, 4]),
    ),
    "learnable_measures": (
        lambda k: ssr_ops.learnable_measures(
            _kind(X, k), [_kind(w, k) for w in KERNELS]
        ),
        lambda: oracle.learnable_measures(X, KERNELS),
    ),
    "learnable_singularity_strength": (
        lambda k: ssr_ops.learnable_singularity_strength(
            _kind(X, k), [_kind(w, k) for w in KERNELS]
        ),
        lambda: oracle.slope(
            oracle.learnable_measures(oracle.min_max(X), KERNELS), [1, 2, 3]
        ),
    ),
    "accurate_sum": (
        lambda k: ssr_ops.accurate_sum(_kind(X, k), (1, 2)),
        lambda: X.astype(np.float64).sum((1, 2)),
    ),
    "accurate_mean": (
        lambda k: ssr_ops.accurate_mean(_kind(X, k), (0, 1, 2)),
        lambda: X.astype(np.float64).mean((0, 1, 2)),
    ),
    "centered_moments": (
        lambda k: keras.ops.concatenate(
            [
                keras.ops.reshape(m, (-1,))
                for m in ssr_ops.centered_moments(_kind(X, k), (0, 1, 2))
            ]
        ),
        lambda: np.concatenate(
            [X.astype(np.float64).mean((0, 1, 2)), X.astype(np.float64).var((0, 1, 2))]
        ),
    ),
    "batch_normalize": (
        lambda k: ssr_ops.batch_normalize(
            _kind(X, k),
            _kind(MEAN, k),
            _kind(VARIANCE, k),
            _kind(GAMMA, k),
            _kind(BETA, k),
        ),
        lambda: _batch_normalize(X.astype(np.float64), MEAN, VARIANCE, GAMMA, BETA),
    ),
}


def _weighted_slope(measures, weights, scales):
    """The follow-up's slope from its formula: unweighted means, sigmoid
    weights ``s`` on the centred log-scales ``d``."""
    logs = np.log(np.asarray(measures, dtype=np.float64) + 1e-7)
    d = np.log(scales) - np.log(scales).mean()
    s = 1.0 / (1.0 + np.exp(-np.asarray(weights, dtype=np.float64)))
    centred = logs - logs.mean(axis=-1, keepdims=True)
    return (centred * s * d).sum(-1) / (s * d**2).sum()


def _soft_histogram(x, anchors, widths):
    logits = -np.maximum(widths, 0.0) * (x[..., None] - anchors) ** 2
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


WEIGHTS = RNG.normal(size=2).astype("float32")
ANCHORS = RNG.normal(size=(1, 4)).astype("float32")
WIDTHS = RNG.uniform(0.5, 2.0, size=(1, 4)).astype("float32")
CASES.update(
    {
        "weighted_ols_slope": (
            lambda k: ssr_ops.weighted_ols_slope(
                _kind(1.0 + np.abs(X[..., :2]), k), _kind(WEIGHTS, k), [2, 4]
            ),
            lambda: _weighted_slope(1.0 + np.abs(X[..., :2]), WEIGHTS, [2, 4]),
        ),
        "weighted_singularity_strength": (
            lambda k: ssr_ops.weighted_singularity_strength(
                _kind(X, k), _kind(WEIGHTS, k), 2
            ),
            lambda: _weighted_slope(
                _box_sums(oracle.min_max(X), 2), WEIGHTS, [2.0, 4.0]
            ),
        ),
        "soft_histogram": (
            lambda k: ssr_ops.soft_histogram(
                _kind(X, k), _kind(ANCHORS, k), _kind(WIDTHS, k)
            ),
            lambda: _soft_histogram(X.astype(np.float64), ANCHORS, WIDTHS),
        ),
        "style_pool": (
            lambda k: keras.ops.concatenate(ssr_ops.style_pool(_kind(X, k)), -1),
            lambda: np.concatenate(
                [
                    X.astype(np.float64).mean((1, 2)),
                    np.sqrt(X.astype(np.float64).var((1, 2)) + 1e-12),
                ],
                -1,
            ),
        ),
    }
)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_op_takes_every_array_kind(name, kind):
    call, reference = CASES[name]
    got = call(kind)
    assert keras.ops.is_tensor(got)
    assert _dtype(got) == "float32"  # a list of floats is floatx
    want = reference()
    assert got.shape == want.shape
    np.testing.assert_allclose(_np(got), want, rtol=2e-5, atol=2e-5)


def test_python_scalars_where_meaningful():
    got = ssr_ops.batch_normalize(3.0, 1.0, 4.0, 2.0, 0.5, epsilon=0.0)
    assert got.shape == ()
    np.testing.assert_allclose(_np(got), (3.0 - 1.0) / 2.0 * 2.0 + 0.5, rtol=1e-6)
    # A scalar against a batch: the parameters broadcast.
    got = ssr_ops.batch_normalize(_kind(X, "tensor"), 2.0, 0.25, epsilon=0.0)
    np.testing.assert_allclose(_np(got), (X - 2.0) / 0.5, rtol=1e-5, atol=1e-5)
    assert float(_np(ssr_ops.accurate_sum(2.5, None))) == 2.5
    mean, variance = ssr_ops.centered_moments(2.5, ())
    assert (float(_np(mean)), float(_np(variance))) == (2.5, 0.0)


@pytest.mark.parametrize("kind", ["list", "numpy", "tensor"])
def test_ols_weights_take_any_sequence_of_scales(kind):
    scales = np.array([2.0, 4.0, 8.0], dtype="float32")
    logs = np.log(scales.astype(np.float64))
    want = (logs - logs.mean()) / np.sum((logs - logs.mean()) ** 2)
    np.testing.assert_allclose(ssr_ops.ols_weights(_kind(scales, kind)), want)


def test_counts_take_numpy_integers():
    assert ssr_ops.dyadic_scales(np.int64(3)) == [2, 4, 8]
    np.testing.assert_allclose(
        ssr_ops.gaussian_kernel(np.int32(3), np.float32(1.5)),
        oracle.gaussian_kernel(3),
        rtol=1e-6,
    )


# -- float64 -------------------------------------------------------------------


F64_CALLS = {
    "min_max_scale": lambda x: ssr_ops.min_max_scale(x),
    "box_sums": lambda x: ssr_ops.box_sums(x, 2),
    "singularity_strength": lambda x: ssr_ops.singularity_strength(x, 2),
    "ols_slope": lambda x: ssr_ops.ols_slope(1.0 + np.abs(x), [1, 2, 4]),
    "learnable_measures": lambda x: ssr_ops.learnable_measures(x, KERNELS),
    "learnable_singularity_strength": (
        lambda x: ssr_ops.learnable_singularity_strength(x, KERNELS)
    ),
    "accurate_sum": lambda x: ssr_ops.accurate_sum(x, (1, 2)),
    "accurate_mean": lambda x: ssr_ops.accurate_mean(x, (1, 2)),
    "centered_moments": lambda x: ssr_ops.centered_moments(x, (0, 1, 2))[1],
    "batch_normalize": lambda x: ssr_ops.batch_normalize(x, MEAN, VARIANCE),
    "weighted_singularity_strength": (
        lambda x: ssr_ops.weighted_singularity_strength(x, WEIGHTS, 2)
    ),
    "soft_histogram": lambda x: ssr_ops.soft_histogram(x, ANCHORS, WIDTHS),
    "style_pool": lambda x: ssr_ops.style_pool(x)[1],
}


@pytest.mark.parametrize("name", sorted(F64_CALLS))
def test_float64_in_float64_out_where_the_backend_has_it(name):
    x = X.astype(np.float64)
    with float64_mode():
        got = F64_CALLS[name](x)
        assert _dtype(got) == "float64"


def test_jax_without_x64_computes_float64_input_in_float32():
    """What the docs say: JAX holds float64 as float32 unless x64 is on."""
    if BACKEND != "jax":
        pytest.skip("only JAX narrows float64 by default")
    import jax

    if jax.config.jax_enable_x64:
        pytest.skip("x64 is on in this session")
    x = RNG.normal(size=(1, 8, 8, 2))
    got = ssr_ops.singularity_strength(x, 3)
    assert _dtype(got) == "float32"
    want = oracle.singularity_strength(x.astype(np.float32), 3)
    np.testing.assert_allclose(_np(got), want, rtol=1e-5, atol=1e-5)


# -- empty batches -------------------------------------------------------------

EMPTY = np.zeros((0, 16, 16, 4), dtype="float32")
EMPTY_OPS = {
    "min_max_scale": (lambda x: ssr_ops.min_max_scale(x), (0, 16, 16, 4)),
    "min_max_scale/sample": (
        lambda x: ssr_ops.min_max_scale(x, "sample"),
        (0, 16, 16, 4),
    ),
    "box_sums": (lambda x: ssr_ops.box_sums(x, 3), (0, 16, 16, 4, 3)),
    "singularity_strength": (
        lambda x: ssr_ops.singularity_strength(x, 3),
        (0, 16, 16, 4),
    ),
    "learnable_measures": (
        lambda x: ssr_ops.learnable_measures(x, KERNELS),
        (0, 16, 16, 4, 3),
    ),
    "learnable_singularity_strength": (
        lambda x: ssr_ops.learnable_singularity_strength(x, KERNELS),
        (0, 16, 16, 4),
    ),
}


@pytest.mark.parametrize("name", sorted(EMPTY_OPS))
def test_empty_batch_gives_the_empty_result(name):
    call, shape = EMPTY_OPS[name]
    got = call(keras.ops.convert_to_tensor(EMPTY))
    assert tuple(got.shape) == shape
    assert _dtype(got) == "float32"


def test_empty_spatial_axis_gives_the_empty_map():
    x = keras.ops.convert_to_tensor(np.zeros((2, 0, 5, 3), dtype="float32"))
    assert tuple(ssr_ops.singularity_strength(x, 2).shape) == (2, 0, 5, 3)


@pytest.mark.parametrize(
    "call",
    [
        lambda x: ssr_ops.accurate_mean(x, (0, 1, 2)),
        lambda x: ssr_ops.centered_moments(x, (0, 1, 2)),
    ],
    ids=["accurate_mean", "centered_moments"],
)
def test_mean_over_an_empty_batch_is_a_value_error(call):
    with pytest.raises(ValueError, match=r"empty axis.*x.shape=\(0, 16, 16, 4\)"):
        call(EMPTY)


def _layers():
    return {
        "SqueezeExcite": layers.SqueezeExcite(r=2),
        "SingularityStrengthRecalibration": (
            layers.SingularityStrengthRecalibration(r=2, max_scale=3)
        ),
        "SingularityStrengthRecalibrationXu": (
            layers.SingularityStrengthRecalibrationXu(r=2, local_scale=3)
        ),
        "LocalSingularityStrength": layers.LocalSingularityStrength(max_scale=3),
        "LocalSingularityStrengthXu": layers.LocalSingularityStrengthXu(local_scale=3),
        "LearnableMeasure": layers.LearnableMeasure(max_scale=3),
    }


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("name", sorted(_layers()))
def test_layers_pass_an_empty_batch(name, training):
    layer = _layers()[name]
    layer.build((None, 16, 16, 4))
    before = [_np(v) for v in layer.non_trainable_variables]
    got = layer(keras.ops.convert_to_tensor(EMPTY), training=training)
    want = (0, 16, 16, 4, 3) if name == "LearnableMeasure" else (0, 16, 16, 4)
    assert tuple(got.shape) == want
    # An empty batch has no statistics: the moving averages stay as they were.
    for old, new in zip(before, layer.non_trainable_variables, strict=True):
        np.testing.assert_array_equal(_np(new), old)


# -- bad input -----------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, text",
    [
        # axes: no wrapping, no IndexError
        (lambda: ssr_ops.accurate_sum(X, (5,)), ValueError, "axis=(5,)"),
        (lambda: ssr_ops.accurate_sum(X, 4), ValueError, "[-4, 4)"),
        (lambda: ssr_ops.accurate_sum(X, (-5,)), ValueError, "axis=(-5,)"),
        (lambda: ssr_ops.accurate_sum(X, (1, -3)), ValueError, "repeat"),
        (lambda: ssr_ops.accurate_sum(X, (1.0,)), TypeError, "axis=(1.0,)"),
        (lambda: ssr_ops.accurate_sum(X, "1"), TypeError, "axis='1'"),
        (
            lambda: ssr_ops.accurate_mean(np.ones((4, 4), "float32"), (0, 1, 2)),
            ValueError,
            "x.shape=(4, 4)",
        ),
        (
            lambda: ssr_ops.centered_moments(np.ones((4, 4), "float32"), (0, 1, 2)),
            ValueError,
            "rank 2",
        ),
        # counts
        (lambda: ssr_ops.dyadic_scales(0), ValueError, "max_scale=0"),
        (lambda: ssr_ops.dyadic_scales(-1), ValueError, "max_scale=-1"),
        (lambda: ssr_ops.dyadic_scales(17), ValueError, "max_scale=17"),
        (lambda: ssr_ops.dyadic_scales(2.5), TypeError, "max_scale=2.5"),
        (lambda: ssr_ops.dyadic_scales("3"), TypeError, "max_scale='3'"),
        (lambda: ssr_ops.dyadic_scales(True), TypeError, "max_scale=True"),
        (lambda: ssr_ops.gaussian_kernel(2.5), TypeError, "size=2.5"),
        (lambda: ssr_ops.gaussian_kernel(3, "1"), TypeError, "sigma='1'"),
        (lambda: ssr_ops.gaussian_kernel(3, -1.0), ValueError, "sigma=-1.0"),
        (lambda: ssr_ops.gaussian_kernel(3, float("nan")), ValueError, "sigma=nan"),
        # scales
        (lambda: ssr_ops.ols_weights([2, float("nan")]), ValueError, "nan"),
        (lambda: ssr_ops.ols_weights([2, float("inf")]), ValueError, "inf"),
        (
            lambda: ssr_ops.weighted_ols_coefficients([0.0, 0.0], [2, float("nan")]),
            ValueError,
            "nan",
        ),
        (lambda: ssr_ops.ols_weights(["a", "b"]), TypeError, "scales=['a', 'b']"),
        (lambda: ssr_ops.ols_slope(1.0 + X, [2, float("nan"), 8]), ValueError, "nan"),
        (lambda: ssr_ops.ols_slope(1.5, [2, 4]), ValueError, "measures.shape=()"),
        # array arguments
        (lambda: ssr_ops.min_max_scale([[[1, 2]]]), TypeError, "x.dtype=int"),
        (lambda: ssr_ops.min_max_scale([[[True]]]), TypeError, "x.dtype=bool"),
        (lambda: ssr_ops.min_max_scale(np.array([[["a"]]])), TypeError, "x.dtype"),
        (
            lambda: ssr_ops.min_max_scale([[[1.0, 2.0]], [[1.0]]]),
            ValueError,
            "`x` must be a tensor, an array or a (nested) list",
        ),
        (lambda: ssr_ops.box_sums([1.0, 2.0], 2), ValueError, "x.shape=(2,)"),
        (
            lambda: ssr_ops.min_max_scale(X, minimum_value=float("nan")),
            ValueError,
            "minimum_value=nan",
        ),
        (
            lambda: ssr_ops.batch_normalize(X, 0.0, 1.0, epsilon=-1.0),
            ValueError,
            "epsilon=-1.0",
        ),
        (
            lambda: ssr_ops.batch_normalize(X, [0, 0, 0], 1.0),
            TypeError,
            "mean.dtype=int",
        ),
        (
            lambda: ssr_ops.learnable_measures(X, KERNELS[0]),
            TypeError,
            "kernels of type ndarray",
        ),
        (
            lambda: ssr_ops.learnable_measures(X, [[[1]]]),
            TypeError,
            "kernels[0].dtype=int",
        ),
    ],
)
def test_bad_input_is_named(call, error, text):
    with pytest.raises(error) as info:
        call()
    assert text in str(info.value)
