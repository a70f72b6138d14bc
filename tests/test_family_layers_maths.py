"""The follow-up's layers against NumPy float64 brute force (1-D, 2-D, 3-D,
both data formats), float32 against float64 on larger shapes, and
hypothesis properties."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import keras_ssr
from keras_ssr import ops as ssr_ops
from tests import fixtures as fx
from tests import numpy_oracle as oracle
from tests.gradients import assert_matches_float64_twin
from tests.helpers import to_numpy

EPS = 1e-3  # BatchNormalization epsilon
CF = {"data_format": "channels_first"}


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def to_last(x, data_format):
    return np.moveaxis(x, 1, -1) if data_format == "channels_first" else x


def to_format(x, data_format):
    return np.moveaxis(x, -1, 1) if data_format == "channels_first" else x


def random_weights(layer, rng):
    """Random values for every semantic weight (positive variances)."""
    weights = {}
    for name, v in layer.semantic_variables().items():
        if "moving_variance" in name:
            weights[name] = rng.uniform(0.5, 2.0, size=v.shape)
        elif name.endswith("widths"):
            weights[name] = rng.uniform(-0.5, 2.0, size=v.shape)
        else:
            weights[name] = rng.normal(size=v.shape)
        v.assign(weights[name].astype(v.dtype))
    return weights


def batch_norm(z, w, prefix, axis, training):
    """BatchNormalization over ``axis`` (statistics over every other axis)."""
    shape = [1] * z.ndim
    shape[axis] = z.shape[axis]
    if training:
        axes = tuple(a for a in range(z.ndim) if a != axis % z.ndim)
        mean, var = z.mean(axis=axes, keepdims=True), z.var(axis=axes, keepdims=True)
    else:
        mean = w[prefix + "moving_mean"].reshape(shape)
        var = w[prefix + "moving_variance"].reshape(shape)
    gamma = w[prefix + "gamma"].reshape(shape)
    beta = w[prefix + "beta"].reshape(shape)
    return (z - mean) / np.sqrt(var + EPS) * gamma + beta


def mlp(d, w):
    hidden = np.maximum(d @ w["squeeze.kernel"] + w["squeeze.bias"], 0)
    return sigmoid(hidden @ w["excite.kernel"] + w["excite.bias"])


def gate(x, g):
    """``x`` (channels last) times per-(sample, channel) gates ``g``."""
    return x * g.reshape((g.shape[0],) + (1,) * (x.ndim - 2) + (g.shape[1],))


# -- NumPy brute force, channels last, float64 -------------------------------------


def np_scse(x, w, combine, training):
    channel = gate(x, mlp(x.reshape(x.shape[0], -1, x.shape[-1]).mean(1), w))
    logits = x @ w["spatial.kernel"].reshape(-1, 1) + w["spatial.bias"]
    spatial = x * sigmoid(logits)
    return np.maximum(channel, spatial) if combine == "max" else channel + spatial


def np_srm(x, w, style_weights, training):
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    m, s = flat.mean(1), np.sqrt(flat.var(1) + 1e-12)
    k = w["style.kernel"]
    z = m * k[0] + s * k[1]
    return gate(x, sigmoid(batch_norm(z, w, "bn.", -1, training)))


def np_fca_descriptor(x, low_freq, basis):
    """Every channel's basis built explicitly over the whole map."""
    spatial = x.shape[1:-1]
    channels = x.shape[-1]
    per_group = channels // low_freq ** len(spatial)
    out = np.zeros((x.shape[0], channels))
    for c in range(channels):
        g = c // per_group
        freqs = [
            (g // low_freq ** (len(spatial) - 1 - k)) % low_freq
            for k in range(len(spatial))
        ]
        b = np.ones(spatial)
        for position in itertools.product(*[range(n) for n in spatial]):
            value = 1.0
            for u, i, n in zip(freqs, position, spatial):
                if basis == "transposed_dct":
                    value *= np.cos(np.pi * i * (u + 0.5) / n)
                else:
                    value *= np.cos(np.pi * u * (i + 0.5) / n)
            b[position] = value
        out[:, c] = (x[..., c] * b).reshape(x.shape[0], -1).sum(1)
    return out


def np_fca(x, w, low_freq, basis, training):
    return gate(x, mlp(np_fca_descriptor(x, low_freq, basis), w))


def np_weighted_strength(x, logits, max_scale, scaling):
    scaled = oracle.min_max(x, scaling)
    axes = tuple(range(1, x.ndim - 1))
    sides = [2**j for j in range(1, max_scale + 1)]
    big = np.stack([np.log(oracle.box_sum(scaled, k, axes) + 1e-7) for k in sides], -1)
    small = np.log(np.asarray(sides, dtype=np.float64))
    s = sigmoid(logits)
    numerator = s * (big - big.mean(-1, keepdims=True)) * (small - small.mean())
    return numerator.sum(-1) / (s * (small - small.mean()) ** 2).sum()


def np_wlss(x, w, max_scale, scaling, training, prefix=""):
    alpha = np_weighted_strength(x, w[prefix + "ols.weights"], max_scale, scaling)
    return batch_norm(alpha, w, prefix + "bn.", -1, training)


def np_histogram(x, anchors, widths):
    z = -np.maximum(widths, 0) * (x[..., None] - anchors) ** 2
    z = z - z.max(-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


def np_soft_histogram(x, w, training, prefix=""):
    h = np_histogram(x, w[prefix + "anchors"], w[prefix + "widths"])
    return batch_norm(h, w, prefix + "bn.", -1, training)


def np_multi(x, w, max_scale, scaling, training):
    alpha = np_wlss(x, w, max_scale, scaling, training, "alpha.")
    h = np_soft_histogram(alpha, w, training, "histogram.")
    return x + sigmoid(np.maximum(h, 0).sum(-1))


def np_mono(x, w, max_scale, scaling, training):
    alpha = oracle.singularity_strength(x, max_scale, scaling)
    alpha = batch_norm(alpha, w, "alpha.bn.", -1, training)
    return gate(x, mlp(alpha.reshape(x.shape[0], -1, x.shape[-1]).mean(1), w))


# Every rank and both formats, in four layouts (the fixtures cover 2-D, last).
LAYOUTS = [
    ((2, 9, 8), "channels_last"),
    ((2, 7, 6, 8), "channels_first"),
    ((2, 4, 5, 3, 8), "channels_last"),
    ((2, 4, 5, 3, 8), "channels_first"),
]
LAYOUT_IDS = ["1d-last", "2d-first", "3d-last", "3d-first"]
BRUTE_FORCE = [
    (keras_ssr.SpatialSqueezeExcite, {"r": 2}, lambda x, w, t: np_scse(x, w, "max", t)),
    (
        keras_ssr.SpatialSqueezeExcite,
        {"r": 4, "combine": "add"},
        lambda x, w, t: np_scse(x, w, "add", t),
    ),
    (keras_ssr.StyleBasedRecalibration, {}, lambda x, w, t: np_srm(x, w, "shared", t)),
    (
        keras_ssr.StyleBasedRecalibration,
        {"style_weights": "per_channel"},
        lambda x, w, t: np_srm(x, w, "per_channel", t),
    ),
    (
        keras_ssr.FrequencyChannelAttention,
        {"r": 2, "low_freq": 2},
        lambda x, w, t: np_fca(x, w, 2, "transposed_dct", t),
    ),
    (
        keras_ssr.FrequencyChannelAttention,
        {"r": 2, "low_freq": 2, "basis": "dct"},
        lambda x, w, t: np_fca(x, w, 2, "dct", t),
    ),
    (
        keras_ssr.MonofractalRecalibration,
        {"r": 2, "max_scale": 2},
        lambda x, w, t: np_mono(x, w, 2, "batch", t),
    ),
    (
        keras_ssr.WeightedLocalSingularityStrength,
        {"max_scale": 3},
        lambda x, w, t: np_wlss(x, w, 3, "batch", t),
    ),
    (
        keras_ssr.WeightedLocalSingularityStrength,
        {"max_scale": 2, "scaling": "sample"},
        lambda x, w, t: np_wlss(x, w, 2, "sample", t),
    ),
    (
        keras_ssr.SoftHistogram,
        {"num_anchors": 4},
        lambda x, w, t: np_soft_histogram(x, w, t),
    ),
    (
        keras_ssr.SoftHistogram,
        {"num_anchors": 3, "per_channel": True},
        lambda x, w, t: np_soft_histogram(x, w, t),
    ),
    (
        keras_ssr.MultifractalRecalibration,
        {"max_scale": 2, "k": 4, "per_channel": False},
        lambda x, w, t: np_multi(x, w, 2, "batch", t),
    ),
    (
        keras_ssr.MultifractalRecalibration,
        {"max_scale": 3, "k": 3, "per_channel": True, "scaling": "sample"},
        lambda x, w, t: np_multi(x, w, 3, "sample", t),
    ),
]


@pytest.mark.parametrize("shape, data_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize(
    "cls, kwargs, brute",
    BRUTE_FORCE,
    ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(BRUTE_FORCE)],
)
def test_equals_numpy_brute_force(cls, kwargs, brute, shape, data_format):
    rng = np.random.default_rng(3)
    x_last = rng.normal(size=shape)
    if cls is keras_ssr.FrequencyChannelAttention and len(shape) == 5:
        x_last = rng.normal(size=shape[:-1] + (16,))  # 2**3 groups of 2
    x = to_format(x_last, data_format).astype("float32")
    layer = cls(**kwargs, data_format=data_format)
    layer.build(x.shape)
    w = random_weights(layer, rng)
    if data_format == "channels_first" and "spatial.kernel" in w:
        # The kernel keeps its (1, .., 1, C, 1) layout in either format.
        assert w["spatial.kernel"].shape[-2] == x.shape[1]
    x64 = to_last(x, data_format).astype(np.float64)
    for training in (False, True):
        got = to_numpy(layer(x, training=training))
        if got.ndim == x.ndim:
            got = to_last(got, data_format)
        else:  # SoftHistogram: (..., K) with the map in the input's layout
            got = (
                to_last(got, data_format)
                if data_format == "channels_last"
                else (np.moveaxis(got, 1, -2))
            )
        fx.assert_agrees(got, brute(x64, w, training), f"training={training}")


# -- float32 against float64 on larger shapes ---------------------------------------


FLOAT64_CASES = [
    (keras_ssr.SpatialSqueezeExcite, {"r": 2}, (2, 32, 30, 8)),
    (keras_ssr.StyleBasedRecalibration, {}, (4, 24, 24, 8)),
    (
        keras_ssr.StyleBasedRecalibration,
        {"style_weights": "per_channel", **CF},
        (4, 8, 20, 18),
    ),
    (keras_ssr.FrequencyChannelAttention, {"r": 2, "low_freq": 4}, (2, 28, 20, 32)),
    (
        keras_ssr.FrequencyChannelAttention,
        {"r": 2, "low_freq": 2, "basis": "dct", **CF},
        (2, 16, 8, 10, 12),
    ),
    (keras_ssr.WeightedLocalSingularityStrength, {"max_scale": 4}, (2, 40, 36, 6)),
    (
        keras_ssr.SoftHistogram,
        {"num_anchors": 8, "per_channel": True},
        (2, 20, 18, 4),
    ),
    (
        keras_ssr.MultifractalRecalibration,
        {"max_scale": 3, "k": 8, "per_channel": False},
        (2, 32, 32, 4),
    ),
    (
        keras_ssr.MultifractalRecalibration,
        {"max_scale": 3, "k": 6, "per_channel": True, "scaling": "sample", **CF},
        (2, 4, 10, 12, 8),
    ),
]


@pytest.mark.parametrize(
    "cls, kwargs, shape",
    FLOAT64_CASES,
    ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(FLOAT64_CASES)],
)
def test_float32_matches_float64(cls, kwargs, shape):
    rng = np.random.default_rng(11)
    x = rng.normal(size=shape).astype("float32")
    layer = cls(**kwargs)
    layer.build(shape)
    weights = random_weights(layer, rng)
    cotangent = rng.normal(size=layer.compute_output_shape(shape)).astype("float32")
    weights = {k: v.astype("float32") for k, v in weights.items()}
    layer64 = assert_matches_float64_twin(cls, kwargs, layer, x, cotangent, weights)
    for name, v in layer.semantic_variables().items():
        if "moving" in name:
            want = keras.ops.convert_to_numpy(layer64.semantic_variables()[name].value)
            fx.assert_agrees(to_numpy(v.value), want, name)


# -- properties --------------------------------------------------------------------


@st.composite
def maps(draw, min_rank=3, max_rank=5, max_side=6, max_channels=3, bound=10.0):
    rank = draw(st.integers(min_rank, max_rank))
    spatial = draw(
        st.lists(st.integers(1, max_side), min_size=rank - 2, max_size=rank - 2)
    )
    shape = (draw(st.integers(1, 3)), *spatial, draw(st.integers(1, max_channels)))
    values = st.floats(-bound, bound, allow_nan=False, width=32)
    return draw(arrays("float32", shape, elements=values))


@given(
    x=maps(),
    k=st.integers(2, 6),
    per_channel=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_soft_histogram_sums_to_one_before_its_bn(x, k, per_channel, seed):
    rng = np.random.default_rng(seed)
    rows = x.shape[-1] if per_channel else 1
    anchors = rng.normal(size=(rows, k)).astype("float32")
    widths = rng.uniform(-1, 5, size=(rows, k)).astype("float32")
    h = to_numpy(ssr_ops.soft_histogram(x, anchors, widths))
    assert h.shape == x.shape + (k,)
    assert np.all(h >= 0) and np.all(h <= 1)
    np.testing.assert_allclose(h.sum(-1), 1.0, atol=1e-5)


@given(
    x=maps(min_rank=4, max_rank=4, max_side=8, bound=50.0),
    seed=st.integers(0, 2**16),
    training=st.booleans(),
)
def test_multifractal_output_minus_input_in_unit_interval(x, seed, training):
    """``y - x = sigmoid(sum_k relu(h_k))``, in [1/2, 1): the sum is >= 0."""
    layer = keras_ssr.MultifractalRecalibration(2, 4, per_channel=bool(seed % 2))
    layer.build(x.shape)
    random_weights(layer, np.random.default_rng(seed))
    y = to_numpy(layer(x, training=training))
    rounding = np.abs(x) * 2.0**-23 * 2
    diff = y.astype(np.float64) - x
    assert np.all(diff > 0.5 - 1e-6 - rounding) and np.all(diff <= 1.0 + rounding)


@given(
    x=maps(max_side=7, max_channels=2, bound=100.0).filter(lambda a: a.shape[-1] >= 1),
    low_freq=st.integers(1, 3),
)
def test_dct_first_group_sees_the_spatial_sum(x, low_freq):
    groups = low_freq ** (x.ndim - 2)
    x = np.repeat(x, groups, axis=-1)  # channels divisible by low_freq**d
    d = to_numpy(ssr_ops.frequency_pool(x, low_freq, "dct"))
    per_group = x.shape[-1] // groups
    spatial = tuple(range(1, x.ndim - 1))
    want = x.astype(np.float64).sum(axis=spatial)[:, :per_group]
    size = np.prod(x.shape[1:-1])
    np.testing.assert_allclose(d[:, :per_group], want, atol=1e-4 * 100 * size)
    mean = x.astype(np.float64).mean(axis=spatial)[:, :per_group]
    np.testing.assert_allclose(d[:, :per_group], size * mean, atol=1e-4 * 100 * size)


@pytest.mark.parametrize("basis", ["transposed_dct", "dct"])
def test_cosine_bases(basis):
    b = ssr_ops.cosine_bases(7, 3, basis)
    assert b.shape == (3, 7)
    # The DCT-II rows are orthogonal; the follow-up's are not constant at u=0.
    if basis == "dct":
        np.testing.assert_allclose(b[0], 1.0)
        gram = b @ b.T
        np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-12)
    else:
        assert np.ptp(b[0]) > 0.5
        np.testing.assert_allclose(b[0, 0], 1.0)


@given(
    x=maps(min_rank=3, max_rank=5, max_side=6, bound=50.0),
    logits=arrays("float32", 3, elements=st.floats(-3, 3, width=32)),
)
def test_equal_weights_give_the_ordinary_slope(x, logits):
    equal = np.full(3, float(logits[0]), "float32")
    a = to_numpy(ssr_ops.weighted_singularity_strength(x, equal, 3))
    b = to_numpy(ssr_ops.singularity_strength(x, 3))
    np.testing.assert_allclose(a, b, atol=2e-4)


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (keras_ssr.WeightedLocalSingularityStrength, {"max_scale": 2}),
        (keras_ssr.MultifractalRecalibration, {"max_scale": 2, "k": 3}),
        (keras_ssr.MonofractalRecalibration, {"r": 1, "max_scale": 2}),
    ],
)
@given(
    # One shape, so that JAX compiles each layer once for all examples.
    x=arrays("float32", (1, 6, 5, 2), elements=st.floats(-20, 20, width=32)),
    seed=st.integers(0, 99),
)
def test_sample_scaling_makes_samples_independent(cls, kwargs, x, seed):
    """With ``scaling="sample"`` (inference) a sample's output ignores its batch."""
    layer = cls(**kwargs, scaling="sample")
    layer.build((None, *x.shape[1:]))
    random_weights(layer, np.random.default_rng(seed))
    others = np.random.default_rng(seed).normal(scale=30, size=(2, *x.shape[1:]))
    batch = np.concatenate([x, others.astype("float32")])
    alone = to_numpy(layer(x, training=False))
    together = to_numpy(layer(batch, training=False))[: len(x)]
    fx.assert_agrees(together, alone, "sample output")
