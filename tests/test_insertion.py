"""insert_attention: attention after chosen layers of any functional or
Sequential model, nested ones, keras.applications and keras-hub backbones.

Each big model is built and rewritten once per module (32x32 inputs). What
is checked: the anchors (against segmentation_models' known skip names), the
base model's weights (unchanged, and copied array-wise into the new model),
gradients reaching every inserted layer, parameter counts against the SE
formula, and the wiring against a model built by hand.
"""

from __future__ import annotations

import functools
import time

import keras
import numpy as np
import pytest

from keras_ssr import layers, models
from keras_ssr.models.encoders import ENCODERS
from tests.gradients import vjp
from tests.helpers import hub_resnet_backbone, to_numpy

SIZE = 32
APPLICATIONS = {
    "resnet50": keras.applications.ResNet50,
    "mobilenetv2": keras.applications.MobileNetV2,
    "efficientnetb0": keras.applications.EfficientNetB0,
    "convnexttiny": keras.applications.ConvNeXtTiny,
}


def _images(batch=2, size=SIZE, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (batch, size, size, channels)).astype("float32")


def _flat(model) -> dict:
    """``{name: layer}`` over every layer, nested models' included."""
    found = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue  # clone_model renames these
        found[layer.name] = layer
        if isinstance(layer, keras.Model):
            found.update(_flat(layer))
    return found


def _weights(model) -> dict:
    return {
        name: [to_numpy(w) for w in layer.weights]
        for name, layer in _flat(model).items()
        if not isinstance(layer, keras.Model)
    }


def _assert_copied(base, before, new):
    """``base`` still holds ``before``; ``new`` holds equal copies."""
    current = _weights(base)
    assert current.keys() == before.keys()
    new_layers = _flat(new)
    for name, arrays in before.items():
        for old, now in zip(arrays, current[name]):
            np.testing.assert_array_equal(now, old)
        copies = [to_numpy(w) for w in new_layers[name].weights]
        assert len(copies) == len(arrays), name
        for old, copy in zip(arrays, copies):
            np.testing.assert_array_equal(copy, old)


def _assert_gradients_reach(model, attention_layers, x):
    rng = np.random.default_rng(1)
    # The output's shape without an eager call (on JAX, one compile per op).
    shape = (len(x), *model.outputs[0].shape[1:])
    cotangent = rng.normal(size=shape).astype("float32")
    _, _, grads = vjp(model, x, cotangent, training=True)
    for layer in attention_layers:
        assert layer.trainable_variables, layer.name
        reached = []
        for variable in layer.trainable_variables:
            grad = grads[variable.path]
            assert np.all(np.isfinite(grad)), variable.path
            reached.append(np.any(grad != 0))
        # A layer off the gradient's path gets zeros everywhere. Not every
        # variable need move: a gate's ReLU can be dead on given inputs, as
        # all 8 hidden units of the SE after ConvNeXt's stem are with
        # TensorFlow's initial weights (both noise images have almost the
        # same channel means), which zeroes the gradients before it.
        assert any(reached), f"no gradient reaches {layer.name}"


def _se_parameters(channels: int) -> int:
    """SqueezeExcite's two Dense layers, hidden = channels // r."""
    hidden = channels // models.wide_reduction_ratio(channels)
    return channels * hidden + hidden + hidden * channels + channels


@functools.cache
def _application(name):
    keras.utils.set_random_seed(0)
    return APPLICATIONS[name](
        include_top=False, weights=None, input_shape=(SIZE, SIZE, 3)
    )


#: Anchors inside nested models, next to the stages: ConvNeXt's stem and
#: first downsampling block are nested Sequential models.
NESTED = {
    "convnexttiny": ["convnext_tiny_stem_conv", "convnext_tiny_downsampling_conv_0"]
}


@functools.cache
def _inserted(name):
    """``(base, its weights before, anchors, new model)``: SE after each stage
    (and the nested anchors), one insertion per application."""
    base = _application(name)
    before = _weights(base)
    stages = [layer.name for layer in models.stage_layers(base).values()]
    anchors = NESTED.get(name, []) + stages
    start = time.perf_counter()
    model = models.insert_attention(base, "se", after=anchors)
    seconds = time.perf_counter() - start
    print(
        f"{name}: {base.count_params()} parameters, insertion {seconds:.1f} s, "
        f"+{model.count_params() - base.count_params()} (se)"
    )
    return base, before, anchors, model


@pytest.fixture(scope="module", params=list(APPLICATIONS))
def application(request):
    return request.param, *_inserted(request.param)


def test_stages_are_the_known_skip_layers(application):
    name, base, *_ = application
    stages = models.stage_layers(base)
    skips = dict(zip((2, 4, 8, 16), ENCODERS[name][1]))
    expected = {s: n for s, n in skips.items() if n is not None}
    expected[32] = base.layers[-1].name
    assert {s: layer.name for s, layer in stages.items()} == expected


def test_application_insertion(application):
    """Weights copied array-wise, gradients reaching every inserted layer."""
    name, base, before, anchors, model = application
    new_layers = _flat(model)
    inserted = [new_layers[f"{anchor}_attention"] for anchor in anchors]
    assert len([n for n in new_layers if n.endswith("_attention")]) == len(anchors)
    for anchor, layer in zip(anchors, inserted):
        assert isinstance(layer, layers.SqueezeExcite)
        # It reads its anchor's output, in the new graph.
        assert layer.input is new_layers[anchor].output
        assert layer.count_params() == _se_parameters(layer.input.shape[-1])
        assert new_layers[anchor] is not _flat(base)[anchor]
    assert model.count_params() == base.count_params() + sum(
        layer.count_params() for layer in inserted
    )
    assert model.output is new_layers[f"{anchors[-1]}_attention"].output
    _assert_copied(base, before, model)
    _assert_gradients_reach(model, inserted, _images())


def test_convnext_nested_stem_and_downsampling_blocks():
    """Anchors inside ConvNeXt's nested Sequential stem and downsampling block
    (test_application_insertion checks their weights and gradients)."""
    *_, model = _inserted("convnexttiny")
    stem = model.get_layer("convnext_tiny_stem")
    assert isinstance(stem, keras.Sequential)
    assert [layer.name for layer in stem.layers] == [
        "convnext_tiny_stem_conv",
        "convnext_tiny_stem_conv_attention",
        "convnext_tiny_stem_layernorm",
    ]
    block = model.get_layer("convnext_tiny_downsampling_block_0")
    assert block.layers[-1].name == "convnext_tiny_downsampling_conv_0_attention"


def _residual(attention_after=()):
    """A small residual functional model; an SSR after the named layers."""
    inputs = keras.Input((16, 16, 3))
    a = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    b = keras.layers.Conv2D(8, 3, padding="same", name="branch_conv")(a)
    b = keras.layers.BatchNormalization(name="branch_bn")(b)
    if "branch_bn" in attention_after:
        b = _ssr("branch_bn_attention")(b)
    x = keras.layers.Add(name="add")([a, b])
    x = keras.layers.ReLU(name="out")(x)
    if "out" in attention_after:
        x = _ssr("out_attention")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(2, name="dense")(x)
    return keras.Model(inputs, outputs, name="residual")


def _ssr(name):
    # insert_attention's r for 8 channels: wide_reduction_ratio(8) = 1.
    return layers.SingularityStrengthRecalibration(r=1, max_scale=3, name=name)


@pytest.mark.parametrize(
    "after",
    [["out"], ["branch_bn"], r"branch_bn|out"],
    ids=["after_add", "residual_branch", "regex_both"],
)
def test_functional_matches_a_hand_built_model(after):
    """Both placements on a residual block, against the same model by hand."""
    keras.utils.set_random_seed(0)
    base = _residual()
    before = _weights(base)
    model = models.insert_attention(base, "ssr", after=after)
    anchors = ["branch_bn", "out"] if isinstance(after, str) else after
    reference = _residual(anchors)
    x = _images(2, 16)
    model(x)
    reference(x)
    for layer in reference.layers[1:]:  # not the input
        layer.set_weights(model.get_layer(layer.name).get_weights())
    np.testing.assert_allclose(
        to_numpy(model(x, training=False)),
        to_numpy(reference(x, training=False)),
        rtol=0,
        atol=1e-6,
    )
    _assert_copied(base, before, model)
    inserted = [model.get_layer(f"{a}_attention") for a in anchors]
    assert all(layer.r == 1 for layer in inserted)
    _assert_gradients_reach(model, inserted, x)


def _sequential():
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(16, 3, strides=2, padding="same", name="conv_0"),
            keras.layers.Conv2D(32, 3, strides=2, padding="same", name="conv_1"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
        ],
        name="plain",
    )


def test_sequential_stays_sequential():
    keras.utils.set_random_seed(0)
    base = _sequential()
    before = _weights(base)
    model = models.insert_attention(base, "ssr", attention_kwargs={"r": 4})
    assert isinstance(model, keras.Sequential)
    assert [layer.name for layer in model.layers] == [
        "conv_0",
        "conv_0_attention",
        "conv_1",
        "conv_1_attention",
        "pool",
    ]
    assert model.get_layer("conv_1_attention").r == 4  # the user's r wins
    _assert_copied(base, before, model)
    _assert_gradients_reach(model, model.layers[1:4:2], _images(2, 16))


def test_share_layers_shares_variables_copy_does_not():
    base = _sequential()
    shared = models.insert_attention(base, "se", after=["conv_0"], share_layers=True)
    copied = models.insert_attention(base, "se", after=["conv_0"])
    assert shared.get_layer("conv_0") is base.get_layer("conv_0")
    assert copied.get_layer("conv_0") is not base.get_layer("conv_0")
    base.get_layer("conv_0").kernel.assign(np.ones((3, 3, 3, 16), "float32"))
    assert np.all(to_numpy(shared.get_layer("conv_0").kernel) == 1)
    assert not np.all(to_numpy(copied.get_layer("conv_0").kernel) == 1)


def test_policy_and_data_format_follow_the_anchor():
    """Not the global settings: a bfloat16 channels-first model."""
    assert keras.config.image_data_format() == "channels_last"
    inputs = keras.Input((3, 16, 16))
    x = keras.layers.Conv2D(
        16, 3, data_format="channels_first", dtype="mixed_bfloat16", name="conv"
    )(inputs)
    x = keras.layers.ReLU(dtype="mixed_bfloat16", name="relu")(x)
    base = keras.Model(inputs, x)
    model = models.insert_attention(base, "scse", after=["relu"])
    layer = model.get_layer("relu_attention")
    assert layer.data_format == "channels_first"
    assert layer.dtype_policy.name == "mixed_bfloat16"
    assert layer.r == models.wide_reduction_ratio(16) == 2
    assert tuple(model.output.shape) == (None, 16, 14, 14)


def test_stages_skip_a_squeeze_and_excitation_branch():
    """EfficientNet's SE branches pool to 1x1: 64x64 inputs made one a stage."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv")(inputs)
    squeezed = keras.layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    gate = keras.layers.Conv2D(8, 1, activation="sigmoid", name="excite")(squeezed)
    x = keras.layers.Multiply(name="scale")([x, gate])
    stages = models.stage_layers(keras.Model(inputs, x))
    assert {s: layer.name for s, layer in stages.items()} == {2: "scale"}


def test_wide_reduction_ratio():
    assert [models.wide_reduction_ratio(c) for c in (1, 8, 16, 64, 128, 2048)] == [
        1,
        1,
        2,
        8,
        16,
        16,
    ]
    for channels in range(1, 300):
        hidden = channels // models.wide_reduction_ratio(channels)
        assert hidden >= min(channels, 8)


def test_errors_list_candidates():
    base = _residual()
    with pytest.raises(ValueError, match=r"No layer is named 'branch_b'.*'branch_bn'"):
        models.insert_attention(base, "se", after=["branch_b"])
    with pytest.raises(ValueError, match=r"matches no layer.*'stem'"):
        models.insert_attention(base, "se", after=r"conv\d+")
    with pytest.raises(ValueError, match=r"'pool' has no spatial output.*'out'"):
        models.insert_attention(base, "se", after=["out", "pool"])
    with pytest.raises(ValueError, match="returned True for no layer"):
        models.insert_attention(base, "se", after=lambda layer: False)
    with pytest.raises(ValueError, match="not a valid regular expression"):
        models.insert_attention(base, "se", after="(")
    with pytest.raises(TypeError, match="`after` must be"):
        models.insert_attention(base, "se", after=3)
    with pytest.raises(ValueError, match="`attention` must name"):
        models.insert_attention(base, None)
    with pytest.raises(ValueError, match="Unknown attention"):
        models.insert_attention(base, "nope")

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="subclassed"):
        models.insert_attention(Subclassed(), "se")
    with pytest.raises(ValueError, match="input's spatial size"):
        models.insert_attention(
            keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3)]),
            "se",
        )


@pytest.fixture(scope="module")
def hub_backbone():
    return hub_resnet_backbone(SIZE)


def test_keras_hub_backbone_keeps_pyramid_outputs(hub_backbone, tmp_path):
    base = hub_backbone
    before = _weights(base)
    model = models.insert_attention(base, "se")
    assert isinstance(model, models.FeaturePyramidModel)
    assert (
        list(model.pyramid_outputs) == list(base.pyramid_outputs) == ["P2", "P3", "P4"]
    )
    inserted = []
    for level, tensor in model.pyramid_outputs.items():
        layer = model.get_layer(model.pyramid_layers[level])
        assert layer.output is tensor and isinstance(layer, layers.SqueezeExcite)
        inserted.append(layer)
    _assert_copied(base, before, model)
    x = _images()
    _assert_gradients_reach(model, inserted, x)

    path = tmp_path / "hub.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded, models.FeaturePyramidModel)
    assert reloaded.pyramid_layers == model.pyramid_layers
    pyramid = keras.Model(model.input, model.pyramid_outputs)(x, training=False)
    again = keras.Model(reloaded.input, reloaded.pyramid_outputs)(x, training=False)
    for level in pyramid:
        np.testing.assert_array_equal(to_numpy(again[level]), to_numpy(pyramid[level]))
