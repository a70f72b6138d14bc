"""Mathematical properties, checked with hypothesis on small shapes."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import keras_ssr
from keras_ssr import ops as ssr_ops
from tests import fixtures as fx
from tests import numpy_oracle as oracle
from tests.helpers import random_weights, to_numpy


def _t(x):
    return keras.ops.convert_to_tensor(np.asarray(x, dtype="float32"))


@st.composite
def maps(
    draw, min_rank=3, max_rank=5, max_side=7, max_channels=3, max_batch=2, bound=100.0
):
    rank = draw(st.integers(min_rank, max_rank))
    spatial = draw(
        st.lists(st.integers(1, max_side), min_size=rank - 2, max_size=rank - 2)
    )
    batch = draw(st.integers(1, max_batch))
    shape = (batch, *spatial, draw(st.integers(1, max_channels)))
    values = st.floats(-bound, bound, allow_nan=False, width=32)
    return draw(arrays("float32", shape, elements=values))


def _channel_ranges(x, scaling):
    axes = (
        tuple(range(1, x.ndim - 1)) if scaling == "sample" else tuple(range(x.ndim - 1))
    )
    return x.max(axis=axes) - x.min(axis=axes)


@given(
    x=maps(),
    scale=st.floats(0.01, 100),
    shift=st.floats(-1000, 1000),
    scaling=st.sampled_from(["batch", "sample"]),
    max_scale=st.integers(2, 3),
)
def test_map_ignores_positive_scale_and_shift(x, scale, shift, scaling, max_scale):
    """alpha(a * x + b) == alpha(x) for a > 0, per channel."""
    assume(np.all(_channel_ranges(x, scaling) > 1e-2))
    x = x.astype(np.float64)
    channel = np.arange(x.shape[-1]) + 1.0
    moved = (x * scale * channel + shift * channel).astype("float32")
    # float32 keeps the moved map's shape only where its range is wide
    # against its magnitude (x * 0.01 + 16 spans 1e-4 in steps of 2e-6).
    assume(np.all(_channel_ranges(moved, scaling) > 1e-3 * np.abs(moved).max()))
    a = to_numpy(ssr_ops.singularity_strength(_t(x), max_scale, scaling))
    b = to_numpy(ssr_ops.singularity_strength(_t(moved), max_scale, scaling))
    np.testing.assert_allclose(a, b, atol=2e-3)


@given(x=maps(max_side=9), max_scale=st.integers(1, 3))
def test_box_sums_equal_brute_force(x, max_scale):
    got = to_numpy(ssr_ops.box_sums(_t(x), max_scale))
    axes = tuple(range(1, x.ndim - 1))
    for j in range(max_scale):
        want = oracle.box_sum(x, 2 ** (j + 1), axes)
        np.testing.assert_allclose(got[..., j], want, rtol=1e-5, atol=1e-3)


@given(side=st.integers(9, 14), rank=st.integers(3, 5))
def test_constant_map_has_the_dimension_as_exponent(side, rank):
    """A uniform measure scales as k**d: the interior exponent is d."""
    spatial = rank - 2
    shape = (1,) + (side,) * spatial + (1,)
    alpha = to_numpy(ssr_ops.singularity_strength(_t(np.full(shape, 3.0)), 2))
    interior = alpha[(0,) + (slice(1, side - 2),) * spatial + (0,)]
    np.testing.assert_allclose(interior, float(spatial), atol=1e-5)


@given(
    x=maps(min_rank=3, max_rank=5, max_channels=6),
    cls=st.sampled_from(["se", "ssr"]),
    training=st.booleans(),
)
def test_gates_lie_in_the_open_unit_interval(x, cls, training):
    channels = x.shape[-1]
    assume(channels >= 2)
    if cls == "se":
        layer = keras_ssr.SqueezeExcite(r=2)
    else:
        layer = keras_ssr.SingularityStrengthRecalibration(r=2, max_scale=2)
    # Inputs within +-0.1 keep the sigmoid's argument moderate: in float32,
    # sigmoid(z) rounds to exactly 1.0 for z > ~17 (hypothesis found x = 63).
    x = x / 1000.0
    y, gates = (to_numpy(t) for t in layer(_t(x), training=training, return_gates=True))
    assert gates.shape == (x.shape[0],) + (1,) * (x.ndim - 2) + (channels,)
    assert np.all(gates > 0.0) and np.all(gates < 1.0)
    # and the layer multiplies by them
    np.testing.assert_allclose(y, x * gates, rtol=1e-5, atol=1e-7)


@given(
    first=maps(min_rank=4, max_rank=4, max_side=8),
    others=st.integers(1, 3),
    seed=st.integers(0, 2**16),
    layer_kind=st.sampled_from(["lss", "ssr", "xu"]),
)
def test_sample_scaling_makes_samples_independent(first, others, seed, layer_kind):
    """With scaling="sample", sample 0's output ignores the rest of the batch."""
    first = first[:1]
    shape = first.shape
    rng = np.random.default_rng(seed)
    batch_a = np.concatenate([first, rng.normal(size=(others,) + shape[1:])]).astype(
        "float32"
    )
    batch_b = np.concatenate(
        [first, 50 * rng.normal(size=(others,) + shape[1:])]
    ).astype("float32")
    if layer_kind == "lss":
        layer = keras_ssr.LocalSingularityStrength(3, scaling="sample")
    elif layer_kind == "ssr":
        layer = keras_ssr.SingularityStrengthRecalibration(
            r=1, max_scale=3, scaling="sample"
        )
    else:
        layer = keras_ssr.LocalSingularityStrengthXu(3, scaling="sample")
    a = to_numpy(layer(_t(batch_a), training=False))[0]
    b = to_numpy(layer(_t(batch_b), training=False))[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_batch_scaling_couples_samples():
    """The original's batch-wide scaling: a batch mate changes sample 0."""
    rng = np.random.default_rng(0)
    first = rng.normal(size=(1, 8, 8, 2))
    layer = keras_ssr.LocalSingularityStrength(3)
    a = to_numpy(
        layer(
            _t(np.concatenate([first, rng.normal(size=(1, 8, 8, 2))])), training=False
        )
    )
    b = to_numpy(
        layer(
            _t(np.concatenate([first, 50 + rng.normal(size=(1, 8, 8, 2))])),
            training=False,
        )
    )
    assert np.max(np.abs(a[0] - b[0])) > 1e-3


@given(x=maps(min_rank=4, max_rank=4, max_side=8), training=st.booleans())
def test_ssr_output_is_finite_on_constant_channels(x, training):
    x = x.copy()
    x[..., 0] = 7.0
    layer = keras_ssr.SingularityStrengthRecalibration(r=1, max_scale=2)
    assert np.all(np.isfinite(to_numpy(layer(_t(x), training=training))))


# -- the follow-up's layers and ops ----------------------------------------------


@given(
    x=maps(max_side=6, max_batch=3, bound=10.0),
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
    x=maps(min_rank=4, max_rank=4, max_side=8, max_batch=3, bound=50.0),
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
    x=maps(max_side=7, max_channels=2, max_batch=3, bound=100.0).filter(
        lambda a: a.shape[-1] >= 1
    ),
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
    x=maps(min_rank=3, max_rank=5, max_side=6, max_batch=3, bound=50.0),
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
def test_weighted_strength_sample_scaling_makes_samples_independent(
    cls, kwargs, x, seed
):
    """With ``scaling="sample"`` (inference) a sample's output ignores its batch."""
    layer = cls(**kwargs, scaling="sample")
    layer.build((None, *x.shape[1:]))
    random_weights(layer, np.random.default_rng(seed))
    others = np.random.default_rng(seed).normal(scale=30, size=(2, *x.shape[1:]))
    batch = np.concatenate([x, others.astype("float32")])
    alone = to_numpy(layer(x, training=False))
    together = to_numpy(layer(batch, training=False))[: len(x)]
    fx.assert_agrees(together, alone, "sample output")
