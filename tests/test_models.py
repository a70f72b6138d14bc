"""keras_ssr.models: the U-Net builders (the original's and the follow-up's),
the attention registry, 3-D.

Parity with the authors' recorded models is in test_load_weights.py;
here: structure (parameter counts from the original's recorded weight
shapes), argument checks, data formats, the volumetric variant, and
serialisation.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_ssr import layers, models, porting
from keras_ssr import testing as kt
from keras_ssr.models import registry
from tests import fixtures as fx
from tests import fixtures_mfr as mfr
from tests.helpers import (
    FOLLOWUP_UNETS,
    build_model,
    model_case,
    requires_nchw_conv,
    to_numpy,
)

LEVELS = (4, 8, 16)
SHAPE = (32, 32, 3)


# --------------------------------------------------------------------------
# The original's builders
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["model_unet_0", "model_unet_1", "model_ssr_unet_2", "model_ssr_unet_3"]
)
def test_parameter_counts_match_the_original(name):
    # Expected counts come from the recorded weight shapes of the original,
    # less its constant box-sum kernels (keras_ssr computes box sums
    # without weights).
    case, _, weights = model_case(fx, name)
    stored = {n: w for n, w in weights.items() if "depthwise_conv2d" not in n}
    assert len(stored) < len(weights) or case["model"] == "unet"
    trainable = sum(w.size for n, w in stored.items() if "moving_" not in n)
    fixed = sum(w.size for n, w in stored.items() if "moving_" in n)

    model = build_model(case)
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == trainable
    assert sum(int(np.prod(v.shape)) for v in model.non_trainable_weights) == fixed
    assert len(model.weights) == len(stored)
    assert sorted(tuple(v.shape) for v in model.weights) == sorted(
        tuple(w.shape) for w in stored.values()
    )


def test_original_signatures_are_kept():
    unet = inspect.signature(models.get_unet).parameters
    ssr = inspect.signature(models.get_ssr_unet).parameters
    positional = [n for n, p in unet.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == ["channels_per_level", "input_shape", "n_classes", "with_bn"]
    positional = [n for n, p in ssr.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == [
        "channels_per_level",
        "r",
        "max_scale",
        "input_shape",
        "n_classes",
        "with_bn",
    ]
    assert list(unet["input_shape"].default) == [224, 224, 3]
    assert (ssr["r"].default, ssr["max_scale"].default) == (2, 3)
    assert unet["n_classes"].default == 2 and unet["with_bn"].default is True

    # Positional calls as in the original code (lists, not tuples).
    model = models.get_ssr_unet([4, 8, 16], 4, 2, [32, 32, 3], 2, False)
    attention = model.get_layer("encoder_1_attention")
    assert isinstance(attention, layers.SingularityStrengthRecalibration)
    assert (attention.r, attention.max_scale) == (4, 2)
    assert not any(isinstance(x, keras.layers.BatchNormalization) for x in model.layers)


def test_layer_names_and_wiring():
    model = models.get_ssr_unet(list(LEVELS), input_shape=list(SHAPE))
    names = [layer.name for layer in model.layers]
    order = [
        "encoder_0_conv_0",
        "encoder_0_bn_0",
        "encoder_0_relu_0",
        "encoder_0_conv_1",
        "encoder_0_bn_1",
        "encoder_0_relu_1",
        "encoder_0_attention",
        "encoder_0_pool",
        "encoder_1_attention",
        "bottleneck_conv_1",
        "decoder_1_upsample",
        "decoder_1_concat",
        "decoder_1_conv_0",
        "decoder_0_concat",
        "decoder_0_conv_1",
        "head",
        "head_activation",
    ]
    positions = [names.index(n) for n in order]
    assert positions == sorted(positions)
    assert "encoder_2_attention" not in names and "bottleneck_attention" not in names
    # The skip of decoder level 1 is the attention output of encoder level 1,
    # concatenated after the upsampled map.
    concat = model.get_layer("decoder_1_concat")
    sources = [t._keras_history.operation.name for t in concat.input]
    assert sources == ["decoder_1_upsample", "encoder_1_attention"]
    assert model.get_layer("decoder_1_conv_0").kernel.shape == (3, 3, 16 + 8, 8)
    assert model.get_layer("decoder_0_conv_0").kernel.shape == (3, 3, 8 + 4, 4)
    bn = model.get_layer("encoder_0_bn_0")
    assert (bn.momentum, bn.epsilon) == (0.99, 1e-3)
    conv = model.get_layer("bottleneck_conv_0")
    assert conv.padding == "same" and conv.use_bias
    assert isinstance(conv.kernel_initializer, keras.initializers.HeNormal)


@pytest.mark.parametrize("n_classes", [1, 2, 3])
def test_head(n_classes):
    model = models.build_unet(LEVELS, SHAPE, n_classes=n_classes, with_bn=False)
    x = np.random.default_rng(0).normal(size=(2, *SHAPE)).astype("float32")
    y = to_numpy(model(x))
    channels = 1 if n_classes <= 2 else n_classes
    assert y.shape == (2, 32, 32, channels)
    assert np.all((y > 0) & (y < 1))
    logits = keras.Model(model.input, model.get_layer("head").output)(x)
    logits = to_numpy(logits).astype("float64")
    if channels == 1:
        expected = 1 / (1 + np.exp(-logits))
    else:
        e = np.exp(logits - logits.max(-1, keepdims=True))
        expected = e / e.sum(-1, keepdims=True)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls", "expected"),
    [
        ("se", layers.SqueezeExcite, {"r": 2}),
        ("SSR", layers.SingularityStrengthRecalibration, {"r": 2, "max_scale": 3}),
        ("ssr_xu", layers.SingularityStrengthRecalibrationXu, {"r": 2}),
    ],
)
def test_attention_by_name(name, cls, expected):
    assert models.get_attention(name) is cls
    model = models.build_unet(LEVELS, SHAPE, attention=name, with_bn=False)
    for level in range(len(LEVELS) - 1):
        layer = model.get_layer(f"encoder_{level}_attention")
        assert type(layer) is cls
        assert {k: getattr(layer, k) for k in expected} == expected
    assert model(np.ones((1, *SHAPE), "float32")).shape == (1, 32, 32, 1)


def test_attention_kwargs_override_defaults():
    model = models.build_unet(
        LEVELS, SHAPE, attention="ssr", attention_kwargs={"max_scale": 2}
    )
    layer = model.get_layer("encoder_0_attention")
    assert (layer.r, layer.max_scale) == (2, 2)


def test_no_attention():
    for attention in (None, "none", "None"):
        model = models.build_unet(LEVELS, SHAPE, attention=attention)
        names = [layer.name for layer in model.layers]
        assert not any(n.endswith("_attention") for n in names)
    assert models.get_attention(None) is None
    assert models.get_attention("none") is None


def test_unknown_attention_lists_names():
    with pytest.raises(ValueError, match=r"'cbam'.*Known names") as info:
        models.build_unet(LEVELS, SHAPE, attention="cbam")
    assert str(models.attention_names()) in str(info.value)
    assert {"none", "se", "ssr", "ssr_xu"} <= set(models.attention_names())
    with pytest.raises(ValueError, match="Known names"):
        models.get_attention("cbam")
    with pytest.raises(TypeError, match="attention=3"):
        models.build_unet(LEVELS, SHAPE, attention=3)


def test_attention_as_class_and_callable():
    model = models.build_unet(
        LEVELS, SHAPE, attention=layers.SqueezeExcite, attention_kwargs={"r": 4}
    )
    layer = model.get_layer("encoder_1_attention")
    assert isinstance(layer, layers.SqueezeExcite) and layer.r == 4

    made = []

    def factory(**kwargs):  # receives data_format and name
        made.append(kwargs)
        return layers.SqueezeExcite(r=1, **kwargs)

    model = models.build_unet(LEVELS, SHAPE, attention=factory)
    assert [k["name"] for k in made] == ["encoder_0_attention", "encoder_1_attention"]
    assert all(k["data_format"] == "channels_last" for k in made)
    assert model.get_layer("encoder_0_attention").r == 1

    # A callable without arguments gets none.
    model = models.build_unet(LEVELS, SHAPE, attention=lambda: keras.layers.Identity())
    identities = [x for x in model.layers if isinstance(x, keras.layers.Identity)]
    assert len(identities) == 2


def test_attention_errors():
    with pytest.raises(TypeError, match="returned"):
        models.build_unet(LEVELS, SHAPE, attention=lambda: "not a layer")
    with pytest.raises(TypeError, match="layer instance"):
        models.build_unet(LEVELS, SHAPE, attention=layers.SqueezeExcite(2))
    with pytest.raises(ValueError, match="no attention"):
        models.build_unet(LEVELS, SHAPE, attention_kwargs={"r": 2})
    with pytest.raises(ValueError, match="must not set 'name'"):
        models.build_unet(LEVELS, SHAPE, attention="se", attention_kwargs={"name": "a"})
    with pytest.raises(TypeError, match="attention_kwargs"):
        models.build_unet(LEVELS, SHAPE, attention="se", attention_kwargs=[("r", 2)])
    # r larger than the channels of the first level (4).
    with pytest.raises(ValueError, match="r=8"):
        models.build_unet(LEVELS, SHAPE, attention="se", attention_kwargs={"r": 8})


def test_register_attention(attention_registry):
    models.register_attention("se4", layers.SqueezeExcite, {"r": 4})
    assert "se4" in models.attention_names()
    model = models.build_unet(LEVELS, SHAPE, attention="SE4")
    assert model.get_layer("encoder_0_attention").r == 4
    with pytest.raises(ValueError, match="already registered"):
        models.register_attention("se4", layers.SqueezeExcite)
    models.register_attention("se4", layers.SqueezeExcite, {"r": 1}, overwrite=True)
    assert (
        models.build_unet(LEVELS, SHAPE, attention="se4")
        .get_layer("encoder_0_attention")
        .r
        == 1
    )
    with pytest.raises(ValueError, match="name='none'"):
        models.register_attention("none", layers.SqueezeExcite)
    with pytest.raises(TypeError, match="factory"):
        models.register_attention("x", 3)
    with pytest.raises(TypeError, match="name"):
        models.register_attention(3, layers.SqueezeExcite)
    with pytest.raises(TypeError, match="defaults"):
        models.register_attention("x", layers.SqueezeExcite, defaults=[1])


# --------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"channels_per_level": [4]}, ValueError, r"at least 2.*\[4\]"),
        ({"channels_per_level": [4, 0]}, ValueError, r"positive.*\[4, 0\]"),
        ({"channels_per_level": [4, 8.0]}, TypeError, r"integers.*\[4, 8.0\]"),
        ({"channels_per_level": "48"}, TypeError, "channels_per_level='48'"),
        ({"channels_per_level": 4}, TypeError, "channels_per_level=4"),
        ({"input_shape": (30, 32, 3)}, ValueError, r"divisible.*input_shape=\(30"),
        ({"input_shape": (32, 32, None)}, ValueError, "channel dimension"),
        ({"input_shape": (32, 32)}, ValueError, r"3 entries.*input_shape=\(32, 32\)"),
        ({"input_shape": (32, 0, 3)}, ValueError, "positive"),
        ({"input_shape": (32, 32.0, 3)}, TypeError, "integers or None"),
        ({"input_shape": "32"}, TypeError, "input_shape='32'"),
        ({"n_classes": 0}, ValueError, "n_classes=0"),
        ({"n_classes": 2.0}, TypeError, "n_classes=2.0"),
        ({"with_bn": 1}, TypeError, "with_bn=1"),
        ({"data_format": "nchw"}, ValueError, "data_format='nchw'"),
        ({"name": 3}, TypeError, "name=3"),
    ],
)
def test_argument_errors(kwargs, error, match):
    arguments = {"channels_per_level": LEVELS, "input_shape": SHAPE, **kwargs}
    with pytest.raises(error, match=match):
        models.build_unet(**arguments)


def test_divisibility_follows_levels():
    # 3 levels need multiples of 4; 2 levels multiples of 2.
    models.build_unet((4, 8), (6, 6, 3))
    with pytest.raises(ValueError, match="2\\*\\*\\(levels - 1\\) = 4"):
        models.build_unet((4, 8, 16), (6, 6, 3))
    # channels_first: the channel axis comes first and is not checked.
    models.build_unet((4, 8, 16), (3, 8, 8), data_format="channels_first")


def _assert_same_as_known_sizes(unknown, known, x):
    """A model built for unknown sizes computes what the same model built for
    ``x``'s sizes computes, with the same weights."""
    known.set_weights(unknown.get_weights())
    for training in (False, True):
        np.testing.assert_allclose(
            to_numpy(unknown(x, training=training)),
            to_numpy(known(x, training=training)),
            rtol=1e-5,
            atol=1e-6,
        )


def test_unknown_spatial_sizes():
    model = models.build_unet(LEVELS, (None, None, 3), attention="ssr")
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    assert to_numpy(model(x)).shape == (2, 32, 32, 1)
    known = models.build_unet(LEVELS, (32, 32, 3), attention="ssr")
    _assert_same_as_known_sizes(model, known, x)


# --------------------------------------------------------------------------
# Data formats
# --------------------------------------------------------------------------


@requires_nchw_conv
@pytest.mark.parametrize("n_classes", [2, 3])
def test_channels_first_equals_channels_last(n_classes):
    case, _, weights = model_case(fx, "model_ssr_unet_2")
    _, arrays = fx.load("model_ssr_unet_2")
    x = arrays["x"]
    kwargs = dict(attention="ssr", n_classes=n_classes)
    last = models.build_unet(LEVELS, SHAPE, data_format="channels_last", **kwargs)
    first = models.build_unet(
        LEVELS, (3, 32, 32), data_format="channels_first", **kwargs
    )
    if n_classes == 2:
        porting.load_weights(last, weights)
        porting.load_weights(first, weights)
    else:
        first.set_weights(last.get_weights())
    for training in (False, True):
        y_last = to_numpy(last(x, training=training))
        y_first = to_numpy(first(np.transpose(x, (0, 3, 1, 2)), training=training))
        assert y_first.shape[1] == (1 if n_classes == 2 else 3)
        fx.assert_agrees(np.transpose(y_first, (0, 2, 3, 1)), y_last, f"{training=}")
    if n_classes == 3:
        np.testing.assert_allclose(y_first.sum(axis=1), 1.0, rtol=1e-5)


# --------------------------------------------------------------------------
# The volumetric variant
# --------------------------------------------------------------------------


def _linear_2x_numpy(x, axis):
    """Half-pixel linear resize by 2 along ``axis``, brute force."""
    n = x.shape[axis]
    out = []
    for o in range(2 * n):
        source = min(max((o + 0.5) / 2 - 0.5, 0.0), n - 1.0)
        low = int(np.floor(source))
        high = min(low + 1, n - 1)
        weight = source - low
        out.append(
            (1 - weight) * np.take(x, low, axis=axis)
            + weight * np.take(x, high, axis=axis)
        )
    return np.stack(out, axis=axis)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_trilinear_upsampling(data_format):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 4, 5, 2)).astype("float32")
    expected = x.astype("float64")
    for axis in (1, 2, 3):
        expected = _linear_2x_numpy(expected, axis)
    layer = layers.TrilinearUpSampling3D(data_format=data_format)
    if data_format == "channels_first":
        y = np.moveaxis(to_numpy(layer(np.moveaxis(x, -1, 1))), 1, -1)
    else:
        y = to_numpy(layer(x))
    if data_format == "channels_first":
        assert layer.compute_output_shape((None, 2, 3, 4, 5)) == (None, 2, 6, 8, 10)
    else:
        assert layer.compute_output_shape((None, 3, 4, 5, 2)) == (None, 6, 8, 10, 2)
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)


def test_trilinear_matches_keras_bilinear_on_flat_volumes():
    # A volume constant along depth upsamples like Keras' bilinear 2-D
    # upsampling of its slices.
    rng = np.random.default_rng(2)
    image = rng.normal(size=(2, 4, 6, 3)).astype("float32")
    volume = np.repeat(image[:, None], 3, axis=1)
    y = to_numpy(layers.TrilinearUpSampling3D(data_format="channels_last")(volume))
    bilinear = keras.layers.UpSampling2D(2, interpolation="bilinear")(image)
    for depth in range(6):
        np.testing.assert_allclose(
            y[:, depth], to_numpy(bilinear), rtol=1e-5, atol=1e-6
        )


def test_volumetric_unet_trains_one_step():
    model = models.build_unet(
        (2, 4), (8, 8, 8, 1), attention="ssr", attention_kwargs={"r": 1, "max_scale": 2}
    )
    assert isinstance(model.get_layer("encoder_0_conv_0"), keras.layers.Conv3D)
    assert isinstance(
        model.get_layer("decoder_0_upsample"), layers.TrilinearUpSampling3D
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 8, 8, 8, 1)).astype("float32")
    y = (rng.uniform(size=(2, 8, 8, 8, 1)) > 0.5).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
    before = [np.copy(w) for w in model.get_weights()]
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [not np.array_equal(a, b) for a, b in zip(before, model.get_weights())]
    assert any(changed)
    assert to_numpy(model(x)).shape == (2, 8, 8, 8, 1)


def test_volumetric_channels_first_and_unknown_sizes():
    model = models.build_unet(
        (2, 4), (1, None, None, None), attention="se", data_format="channels_first"
    )
    x = np.random.default_rng(0).uniform(size=(1, 1, 4, 6, 8)).astype("float32")
    assert to_numpy(model(x)).shape == (1, 1, 4, 6, 8)
    known = models.build_unet(
        (2, 4), (1, 4, 6, 8), attention="se", data_format="channels_first"
    )
    _assert_same_as_known_sizes(model, known, x)


def test_ssr_xu_is_two_dimensional_only():
    with pytest.raises(
        ValueError, match=r"SingularityStrengthRecalibrationXu.*\[2\]-D"
    ):
        models.build_unet((2, 4), (8, 8, 8, 1), attention="ssr_xu")


# --------------------------------------------------------------------------
# Serialisation
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("input_shape", "attention"),
    [(SHAPE, "ssr"), (SHAPE, "ssr_xu"), ((8, 8, 8, 1), "ssr")],
)
def test_save_and_reload(tmp_path, input_shape, attention):
    kwargs = {"r": 2, "max_scale": 2} if attention == "ssr" else {"local_scale": 3}
    levels, n_classes = (LEVELS, 3) if len(input_shape) == 3 else ((2, 4), 2)
    model = models.build_unet(
        levels,
        input_shape,
        n_classes=n_classes,
        attention=attention,
        attention_kwargs=kwargs,
    )
    x = np.random.default_rng(0).uniform(size=(2, *input_shape)).astype("float32")
    model(x, training=True)  # move the BN statistics away from their start
    path = tmp_path / "unet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [layer.name for layer in loaded.layers] == [
        layer.name for layer in model.layers
    ]
    for training in (False, True):
        np.testing.assert_array_equal(
            to_numpy(loaded(x, training=training)),
            to_numpy(model(x, training=training)),
        )


# -- the blocks' BatchNormalization settings ------------------------------------


@pytest.mark.parametrize("builder", ["build_unet", "get_unet", "get_ssr_unet"])
def test_bn_momentum_and_epsilon_reach_every_block(builder):
    model = getattr(models, builder)(
        [2, 4], input_shape=[8, 8, 1], bn_momentum=0.75, bn_epsilon=0.5
    )
    norms = [layer for layer in model.layers if "_bn_" in layer.name]
    assert len(norms) == 6
    assert {(n.momentum, n.epsilon) for n in norms} == {(0.75, 0.5)}
    if builder == "get_ssr_unet":  # the attention keeps the original's own
        alpha_bn = model.get_layer("encoder_0_attention").alpha.bn
        assert (alpha_bn.momentum, alpha_bn.epsilon) == (0.99, 1e-3)


def test_bn_momentum_and_epsilon_values():
    """Moving mean after one training call, and the inference output, in NumPy."""
    model = models.build_unet(
        [2, 4], (8, 8, 1), bn_momentum=0.75, bn_epsilon=0.5, name="m"
    )
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype("float32")
    conv = keras.Model(model.input, model.get_layer("encoder_0_conv_0").output)
    relu = keras.Model(model.input, model.get_layer("encoder_0_relu_0").output)
    pre = keras.ops.convert_to_numpy(conv(x))
    # Fresh statistics (mean 0, variance 1): inference is x / sqrt(1 + eps).
    got = keras.ops.convert_to_numpy(relu(x, training=False))
    np.testing.assert_allclose(got, np.maximum(pre / np.sqrt(1.5), 0), atol=1e-5)
    model(x, training=True)
    bn = model.get_layer("encoder_0_bn_0")
    moving = keras.ops.convert_to_numpy(bn.moving_mean.value)
    np.testing.assert_allclose(moving, 0.25 * pre.mean(axis=(0, 1, 2)), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, error, value",
    [
        ({"bn_momentum": 1.5}, ValueError, ("bn_momentum", 1.5)),
        ({"bn_momentum": "0.9"}, TypeError, ("bn_momentum", "0.9")),
        ({"bn_epsilon": 0.0}, ValueError, ("bn_epsilon", 0.0)),
        ({"bn_epsilon": True}, TypeError, ("bn_epsilon", True)),
    ],
)
def test_bn_argument_errors(kwargs, error, value):
    kt.check_bad_argument(
        lambda: models.build_unet(LEVELS, SHAPE, **kwargs), *value, error=error
    )


def test_attention_options_are_the_layers_arguments():
    assert models.attention_options("multifractal", {"k": 8}) == {
        "max_scale": 3, "k": 8, "per_channel": False, "scaling": "batch",
        "synchronized": True,
    }  # fmt: skip
    assert models.attention_options("fca") == {
        "r": 2,
        "low_freq": 4,
        "basis": "transposed_dct",
    }
    assert models.attention_options(None) == models.attention_options("none") == {}
    with pytest.raises(ValueError, match="takes no option 'r'; its options are max_"):
        models.attention_options("multifractal", {"r": 4})
    with pytest.raises(ValueError, match=r"`k` must be >= 2. Received: k=1"):
        models.attention_options("multifractal", {"k": 1})  # the layer's error
    with pytest.raises(ValueError, match="no attention"):
        models.attention_options("none", {"r": 2})
    with pytest.raises(ValueError, match="register_attention.*--import"):
        models.attention_options("nope")
    with pytest.raises(TypeError, match="mapping"):
        models.attention_options("se", [("r", 2)])


def test_attention_options_need_the_required_arguments():
    def gate(width, gain=1.0, name=None, data_format=None):
        return layers.SqueezeExcite(width, name=name, data_format=data_format)

    models.register_attention("gate_test", gate, overwrite=True)
    try:
        with pytest.raises(ValueError, match="needs the option.*width"):
            models.attention_options("gate_test")
        assert models.attention_options("gate_test", {"width": 2}) == {
            "width": 2, "gain": 1.0
        }  # fmt: skip
    finally:
        registry._ATTENTION.pop("gate_test")


def test_docs_attention_reference_is_current():
    """docs/models.md holds the table generated from the registry."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "models.md").read_text()
    marker = "<!-- attention-reference:start -->\n"
    start = text.index(marker) + len(marker)
    stop = text.index("<!-- attention-reference:end -->")
    assert text[start:stop] == models.attention_reference()


# --------------------------------------------------------------------------
# The follow-up's builders and registry names
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attention,kind",
    [
        ("mono", layers.MonofractalRecalibration),
        ("multifractal", layers.MultifractalRecalibration),
        ("scse", layers.SpatialSqueezeExcite),
        ("srm", layers.StyleBasedRecalibration),
        ("fca", layers.FrequencyChannelAttention),
    ],
)
def test_registry_names(attention, kind):
    assert attention in models.attention_names()
    assert models.get_attention(attention) is kind
    model = models.build_unet((16, 32), (16, 16, 3), attention=attention)
    assert type(model.get_layer("encoder_0_attention")) is kind
    assert tuple(model.output.shape) == (None, 16, 16, 1)


def test_builder_defaults_follow_the_followup():
    shape = {"input_shape": (16, 16, 3)}
    mono = models.get_monofractal_unet([16, 32], **shape).get_layer(
        "encoder_0_attention"
    )
    assert (mono.r, mono.max_scale) == (2, 3)
    multi = models.get_multifractal_unet([16, 32], **shape).get_layer(
        "encoder_0_attention"
    )
    assert (multi.max_scale, multi.k, multi.per_channel) == (3, 16, False)
    scse = models.get_sc_encoder_unet([16, 32], **shape).get_layer(
        "encoder_0_attention"
    )
    assert (scse.r, scse.combine) == (2, "max")
    srm = models.get_srm_encoder_unet([16, 32], **shape).get_layer(
        "encoder_0_attention"
    )
    assert srm.style_weights == "shared"
    fca = models.get_fca_encoder_unet([16, 32], **shape).get_layer(
        "encoder_0_attention"
    )
    assert (fca.r, fca.low_freq, fca.basis) == (2, 4, "transposed_dct")


def test_arguments_the_followup_ignores_warn():
    # Its FCA is always built with r=2; its SE and SRM U-Nets take r /
    # max_scale and do not use them. Another value than the used one warns,
    # naming the argument; the default does not.
    shape = {"input_shape": (16, 16, 3)}
    with pytest.warns(UserWarning, match=r"ignores `r`.*attention_kwargs.*r=8"):
        fca = models.get_fca_encoder_unet([16, 32], r=8, **shape)
    assert fca.get_layer("encoder_0_attention").r == 2
    with pytest.warns(UserWarning, match="ignores `max_scale`.*max_scale=9"):
        se = models.get_se_unet([16, 32], 4, 9, **shape)
    assert se.get_layer("encoder_0_attention").r == 4
    with pytest.warns(UserWarning, match="ignores") as caught:
        srm = models.get_srm_encoder_unet([16, 32], 7, 9, **shape)
    assert sorted(str(w.message).split("`")[1] for w in caught) == ["max_scale", "r"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the defaults, and what is used: silent
        plain = models.get_srm_encoder_unet([16, 32], **shape)
        models.get_fca_encoder_unet([16, 32], r=2, **shape)
        models.get_se_unet([16, 32], 4, 3, **shape)
    assert srm.count_params() == plain.count_params()


def test_bn_options_without_bn_warn():
    arguments = {"channels_per_level": [2, 4], "input_shape": (8, 8, 3)}
    with pytest.warns(UserWarning, match="`bn_momentum`.*with_bn=False"):
        model = models.build_unet(with_bn=False, bn_momentum=0.9, **arguments)
    assert not [layer for layer in model.layers if "_bn_" in layer.name]
    with pytest.warns(UserWarning, match="`synchronized_bn`, `bn_epsilon`"):
        models.get_unet(
            with_bn=False, synchronized_bn=True, bn_epsilon=1e-5, **arguments
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        models.get_ssr_unet(with_bn=False, **arguments)
        models.build_unet(bn_momentum=0.9, **arguments)


def test_paper_options_reach_the_layers():
    shape = {"input_shape": (16, 16, 3)}
    scse = models.get_sc_encoder_unet([16, 32], combine="add", **shape)
    assert scse.get_layer("encoder_0_attention").combine == "add"
    srm = models.get_srm_encoder_unet([16, 32], style_weights="per_channel", **shape)
    assert srm.get_layer("encoder_0_attention").style_weights == "per_channel"
    fca = models.get_fca_encoder_unet([16, 32], basis="dct", **shape)
    assert fca.get_layer("encoder_0_attention").basis == "dct"
    multi = models.get_multifractal_unet([16, 32], scaling="sample", **shape)
    assert multi.get_layer("encoder_0_attention").scaling == "sample"


def test_volumetric_multifractal_unet():
    model = models.get_multifractal_unet(
        [2, 4], max_scale=2, k=2, input_shape=(4, 4, 4, 1)
    )
    assert model.get_layer("encoder_0_attention").k == 2
    assert tuple(model.output.shape) == (None, 4, 4, 4, 1)
    if keras.backend.backend() == "jax":
        return  # eager JAX compiles every 3-D op: the layer tests call them
    x = np.random.default_rng(0).random((1, 4, 4, 4, 1)).astype(np.float32)
    y = to_numpy(model(x))
    assert y.shape == (1, 4, 4, 4, 1) and np.all((y > 0) & (y < 1))


def test_keras_file_round_trip(tmp_path):
    case, arrays, weights = model_case(mfr, "model_multifractal_unet_5")
    model = build_model(case)
    porting.load_weights(model, weights)
    path = tmp_path / "multifractal_unet.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    x = arrays["x"]
    np.testing.assert_allclose(
        to_numpy(again(x, training=False)),
        to_numpy(model(x, training=False)),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "builder,kwargs,match",
    [
        ("get_fca_encoder_unet", {"low_freq": 3}, "low_freq|channels"),
        ("get_multifractal_unet", {"k": 1}, "k="),
        ("get_sc_encoder_unet", {"combine": "sum"}, "combine="),
        ("get_monofractal_unet", {"max_scale": 0}, "max_scale="),
        ("get_se_unet", {"channels_per_level": [8]}, "channels_per_level="),
    ],
)
def test_bad_arguments(builder, kwargs, match):
    arguments = {"channels_per_level": [16, 32], "input_shape": (16, 16, 3)}
    with pytest.raises(ValueError, match=match):
        getattr(models, builder)(**{**arguments, **kwargs})


@pytest.mark.parametrize(
    "builder", [f"get_{name}" for name in sorted(FOLLOWUP_UNETS)] + ["get_unet"]
)
def test_builders_pass_the_unet_options_on(builder):
    arguments = {"channels_per_level": [16, 32], "input_shape": (16, 16, 3)}
    model = getattr(models, builder)(
        **arguments, synchronized_bn=True, bn_momentum=0.9, bn_epsilon=1e-5
    )
    bn = model.get_layer("encoder_0_bn_0")
    assert isinstance(bn, layers.BatchNormalization) and bn.synchronized
    assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)
    assert model.name == builder.removeprefix("get_")
    assert "{shared args}" not in getattr(models, builder).__doc__
    with pytest.raises(TypeError, match="synchronised_bn"):
        getattr(models, builder)(**arguments, synchronised_bn=True)
