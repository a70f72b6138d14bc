"""Every layer of the follow-up against a NumPy float64 brute force (1-D, 2-D,
3-D, both data formats). Float32 against float64 is in
test_float64_gradients.py; hypothesis properties in test_properties.py."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import keras_ssr
from tests import fixtures as fx
from tests import numpy_oracle as oracle
from tests.helpers import random_weights, to_numpy

EPS = 1e-3  # BatchNormalization epsilon
CF = {"data_format": "channels_first"}


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def to_last(x, data_format):
    return np.moveaxis(x, 1, -1) if data_format == "channels_first" else x


def to_format(x, data_format):
    return np.moveaxis(x, -1, 1) if data_format == "channels_first" else x


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
