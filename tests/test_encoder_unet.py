"""build_unet(encoder=...): a U-Net decoder on standard encoders.

One small encoder U-Net (MobileNetV2, alpha 0.35, 1-channel 32x32 inputs,
SSR in the encoder, scSE in the decoder, 3 classes) is built once per module,
trained, saved and exported; another one runs in mixed precision; the other
encoders are built for their wiring (all on torch, one per other backend).
Inference goes through one XLA program on JAX (``compiled``).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_ssr import layers, models
from tests.gradients import compiled
from tests.helpers import hub_resnet_backbone, to_numpy

BACKEND = keras.backend.backend()
SIZE = 32
MOBILENET = {"alpha": 0.35}


def _predict(model, x):
    """An inference call; one XLA program on JAX, where an eager call
    compiles every op of the U-Net."""
    return to_numpy(compiled(lambda x: model(x, training=False))(x))


def _images(batch=2, channels=1, seed=0, size=SIZE):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (batch, size, size, channels)).astype("float32")


def _unet(**overrides):
    keras.utils.set_random_seed(0)
    kwargs = {
        "input_shape": (SIZE, SIZE, 1),
        "n_classes": 3,
        "encoder": "mobilenetv2",
        "encoder_kwargs": MOBILENET,
        "attention": "ssr",
        "decoder_attention": "scse",
        "bn_momentum": 0.9,
    }
    return models.build_unet(**{**kwargs, **overrides})


@pytest.fixture(scope="module")
def unet():
    return _unet()


def test_decoder_wiring(unet):
    skips = models.ENCODERS["mobilenetv2"][1]
    for level, skip in zip(range(1, 5), skips):
        concat = unet.get_layer(f"decoder_{level}_concat")
        encoder_side = unet.get_layer(f"{skip}_attention")
        assert concat.input[1] is encoder_side.output
        assert isinstance(encoder_side, layers.SingularityStrengthRecalibration)
        attention = unet.get_layer(f"decoder_{level}_attention")
        assert isinstance(attention, layers.SpatialSqueezeExcite)
        assert attention.input is concat.output
        assert attention.r == models.wide_reduction_ratio(concat.output.shape[-1])
    # Level 0 (full resolution) has no skip; the deepest feature is the output.
    assert "decoder_0_concat" not in [layer.name for layer in unet.layers]
    assert unet.get_layer("decoder_4_upsample").input is (
        unet.get_layer("out_relu_attention").output
    )
    assert [unet.get_layer(f"decoder_{i}_conv_1").filters for i in range(5)] == [
        16,
        32,
        64,
        128,
        256,
    ]
    assert tuple(unet.output.shape) == (None, SIZE, SIZE, 3)


def test_trains_one_step(unet, tmp_path):
    """fit, then .keras save/reload. Compiled as Keras compiles by default
    (``jit_compile="auto"``): XLA on JAX, a tf.function graph on TensorFlow's
    CPU (XLA where there is a GPU; on a CPU, XLA compiles this training step
    about 2.5x slower than the graph, and each attention layer's XLA fit step
    is tested in tests/test_layers.py),
    eagerly on torch. The module's U-Net itself: test_export compares its
    export with its own outputs, whatever its weights."""
    model = unet
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy"
    )
    x = _images(2)
    labels = np.random.default_rng(1).integers(0, 3, (2, SIZE, SIZE))
    y = keras.utils.to_categorical(labels, 3)
    # Not on the 1x1 deepest map (32 / 32): a single pixel has no local
    # singularity structure, SSR's map is constant there and its BN gets no
    # gradient (at 224x224 that map is 7x7).
    attention = [
        v for layer in model.layers if "attention" in layer.name
        and layer.input.shape[1] > 1 for v in layer.trainable_variables
    ]  # fmt: skip
    before = [to_numpy(v) for v in attention]
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for variable, old in zip(attention, before):
        assert not np.array_equal(to_numpy(variable), old), variable.path

    path = tmp_path / "unet.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(_predict(reloaded, x), _predict(model, x))


@pytest.fixture
def mixed_policy():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    yield
    keras.config.set_dtype_policy(policy)


def test_mixed_precision(mixed_policy):
    model = _unet(attention="se")
    assert model.get_layer("block_1_expand_relu_attention").compute_dtype == "bfloat16"
    out = _predict(model, _images(2))
    assert out.dtype == np.float32 and np.all(np.isfinite(out))
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-5)


def test_export(unet, tmp_path):
    """One export per backend: SavedModel (TF), torch.export, ONNX (JAX)."""
    x = _images(2, seed=3)
    expected = _predict(unet, x)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        unet.export(str(tmp_path / "saved"), verbose=False)
        reloaded = tf.saved_model.load(str(tmp_path / "saved"))  # keep it alive
        actual = reloaded.serve(x).numpy()
    elif BACKEND == "torch":
        import torch

        unet.export(
            str(tmp_path / "unet.pt2"),
            format="torch",
            verbose=False,
            input_signature=[keras.InputSpec(shape=x.shape, dtype="float32")],
        )
        module = torch.export.load(str(tmp_path / "unet.pt2")).module()
        with torch.no_grad():
            actual = module(torch.from_numpy(x)).numpy()
    else:
        ort = pytest.importorskip("onnxruntime")
        pytest.importorskip("jax2onnx")
        unet.export(
            str(tmp_path / "unet.onnx"),
            format="onnx",
            verbose=False,
            input_signature=[keras.InputSpec(shape=x.shape, dtype="float32")],
        )
        session = ort.InferenceSession(
            str(tmp_path / "unet.onnx"), providers=["CPUExecutionProvider"]
        )
        actual = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(actual, expected, rtol=0, atol=2e-5)


#: The other encoders' wiring: all on torch (the quickest to build them), one
#: on each other backend (the wiring is the same code; test_insertion.py
#: inserts into every encoder on every backend).
OTHER_ENCODERS = {
    "torch": ["resnet50", "efficientnetb0", "convnexttiny"],
    "tensorflow": ["convnexttiny"],
    "jax": ["resnet50"],
}


@pytest.mark.parametrize("encoder", OTHER_ENCODERS.get(BACKEND, ["resnet50"]))
def test_other_encoders(encoder):
    model = _unet(encoder=encoder, encoder_kwargs=None, attention="se")
    names = [layer.name for layer in model.layers]
    table = models.ENCODERS[encoder][1]
    for level, skip in zip(range(1, 5), table):
        if skip is None:  # ConvNeXt's stem has stride 4: no stride-2 skip
            assert f"decoder_{level}_concat" not in names
            continue
        concat = model.get_layer(f"decoder_{level}_concat")
        assert concat.input[1] is model.get_layer(f"{skip}_attention").output
    assert tuple(model.output.shape) == (None, SIZE, SIZE, 3)
    print(f"{encoder} U-Net: {model.count_params()} parameters")


def test_keras_hub_encoder():
    backbone = hub_resnet_backbone(SIZE)
    model = models.build_unet(encoder=backbone, attention="se", n_classes=1)
    # P2, P3 are skips at strides 4 and 8; P4 (stride 16) the deepest.
    assert model.get_layer("decoder_3_concat").input[1] is (
        model.get_layer("stack1_block0_out_attention").output
    )
    assert model.get_layer("decoder_3_upsample").input is (
        model.get_layer("stack2_block0_out_attention").output
    )
    assert _predict(model, _images(1, 3)).shape == (1, SIZE, SIZE, 1)


@pytest.mark.skipif(
    BACKEND == "jax",
    reason="the same decoder code as in 2-D; the volumetric layers and U-Net "
    "run on JAX in tests/test_models.py (each new model costs a compile per "
    "weight shape on JAX)",
)
def test_volumetric_encoder():
    """A 3-D encoder of your own: skips by the stride rule, 3-D decoder."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 8, 2))
    x = inputs
    for i, filters in enumerate((8, 16, 32)):
        x = keras.layers.Conv3D(filters, 3, strides=2, padding="same", name=f"c{i}")(x)
        x = keras.layers.ReLU(name=f"r{i}")(x)
    encoder = keras.Model(inputs, x)
    model = models.build_unet(
        encoder=encoder, attention="se", decoder_attention="se", n_classes=1
    )
    assert model.get_layer("decoder_1_concat").input[1] is (
        model.get_layer("r0_attention").output
    )
    assert [model.get_layer(f"decoder_{i}_conv_0").filters for i in range(3)] == [
        16,
        32,
        64,
    ]
    x = np.random.default_rng(0).uniform(size=(1, 8, 8, 8, 2)).astype("float32")
    assert _predict(model, x).shape == (1, 8, 8, 8, 1)


def _adapt_reference(kernel, channels):
    """segmentation_models.pytorch's patch_first_conv, in plain loops."""
    if channels == 1:
        return kernel.sum(axis=2, keepdims=True)
    out = np.zeros(kernel.shape[:2] + (channels,) + kernel.shape[3:], kernel.dtype)
    for i in range(channels):
        out[:, :, i] = kernel[:, :, i % 3] * 3 / channels
    return out


@pytest.mark.parametrize("channels", [1, 2, 4, 6])
def test_adapt_input_channels(channels):
    rng = np.random.default_rng(channels)
    kernel = rng.normal(size=(3, 3, 3, 5)).astype("float32")
    adapted = models.adapt_input_channels(kernel, channels)
    np.testing.assert_allclose(adapted, _adapt_reference(kernel, channels), rtol=1e-6)
    # What it is for: replicated grey (or RGB) input gives the RGB response.
    rgb = rng.uniform(size=(3,)).astype("float32")
    if channels == 1:
        rgb[:] = rgb[0]
    if channels in (1, 6):
        image = np.resize(rgb, channels)
        np.testing.assert_allclose(
            np.einsum("hwio,i->hwo", adapted, image),
            np.einsum("hwio,i->hwo", kernel, rgb),
            rtol=1e-5,
        )


def test_pretrained_weights_reach_a_one_channel_encoder(tmp_path):
    """``encoder_weights`` (a file here; "imagenet" the same way) with one input
    channel: the first kernel adapted, every other weight as stored."""
    keras.utils.set_random_seed(0)
    rgb = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(SIZE, SIZE, 3), **MOBILENET
    )
    path = tmp_path / "rgb.weights.h5"
    rgb.save_weights(path)
    model = _unet(attention=None, decoder_attention=None, encoder_weights=str(path))
    kernel = to_numpy(rgb.get_layer("Conv1").kernel)
    np.testing.assert_allclose(
        to_numpy(model.get_layer("Conv1").kernel), kernel.sum(axis=2, keepdims=True)
    )
    for layer in rgb.layers[2:]:
        for stored, weight in zip(layer.weights, model.get_layer(layer.name).weights):
            np.testing.assert_array_equal(to_numpy(weight), to_numpy(stored))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"encoder": "resnet5"}, ValueError, "Unknown encoder 'resnet5'"),
        ({"encoder": 3}, TypeError, "`encoder` must be"),
        ({"channels_per_level": (8, 16)}, ValueError, "channels_per_level"),
        ({"input_shape": (36, 36, 1)}, ValueError, "divisible by"),
        ({"encoder_kwargs": {"weights": None}}, ValueError, "must not set"),
        # A pooled output, or ConvNeXt's layer-name prefix: not options.
        ({"encoder_kwargs": {"pooling": "avg"}}, ValueError, "no option 'pooling'"),
        ({"encoder_kwargs": {"alpha": "big"}}, TypeError, "`alpha` must be a number"),
        ({"skips": ["nope"]}, ValueError, "no layer named 'nope'"),
        ({"encoder": None, "skips": ["a"]}, ValueError, "need an `encoder`"),
    ],
)
def test_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        _unet(attention=None, decoder_attention=None, **kwargs)


def test_encoder_options():
    """The constructor's own arguments, checked without building anything."""
    assert models.encoder_options("MobileNetV2", {"alpha": 1}) == {"alpha": 1.0}
    assert models.encoder_options("convnexttiny") == {"include_preprocessing": True}
    assert models.encoder_options("resnet50") == models.encoder_options(None) == {}
    with pytest.raises(ValueError, match="no option 'name'; its options are alpha"):
        models.encoder_options("mobilenetv2", {"name": "x"})
    with pytest.raises(TypeError, match="`include_preprocessing` must be a bool"):
        models.encoder_options("convnexttiny", {"include_preprocessing": 1})
    with pytest.raises(ValueError, match="no encoder"):
        models.encoder_options(None, {"alpha": 0.5})
    with pytest.raises(ValueError, match="Unknown encoder 'vgg16'"):
        models.encoder_options("vgg16")
    with pytest.raises(TypeError, match="mapping"):
        models.encoder_options("resnet50", [("alpha", 1)])


def test_inserted_attention_options_leave_r_to_each_layer():
    """Without `r` (chosen per layer), the options build the same layers."""
    options = models.attention_options("ssr", inserted=True)
    assert "r" not in options and options["max_scale"] == 3
    assert models.attention_options("ssr", {"r": 4}, inserted=True)["r"] == 4
    assert "r" in models.attention_options("ssr")  # the papers' U-Net: r=2
