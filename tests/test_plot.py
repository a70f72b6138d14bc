"""The singularity-map figure: which maps, their values, panels, errors."""

from __future__ import annotations

import sys

import keras
import numpy as np
import pytest

from keras_ssr import plot
from keras_ssr.models import attention_names, build_unet, get_ssr_unet, get_unet
from tests import numpy_oracle as oracle
from tests.helpers import requires_nchw_conv

pytest.importorskip("matplotlib")

SHAPE = (32, 32, 1)
CHANNELS = [4, 8, 16]  # two encoder levels and a bottleneck


@pytest.fixture
def image():
    return np.random.default_rng(0).uniform(size=SHAPE).astype(np.float32)


def _outputs(model, names, image):
    probe = keras.Model(model.inputs[0], [model.get_layer(n).output for n in names])
    return [keras.ops.convert_to_numpy(o)[0] for o in probe(image[None])]


def _panels(figure, rows: int, columns: int) -> np.ndarray:
    """The figure's panels as a grid, once every map has its colour bar.

    The panels come first in ``figure.axes``, then one colour bar per map
    panel (all but the input and mask column, and panels left empty), each
    drawn for that panel's image with its colour range.
    """
    grid = np.asarray(figure.axes[: rows * columns]).reshape(rows, columns)
    bars = figure.axes[rows * columns :]
    maps = [a for a in grid[:, 1:].ravel() if a.images]
    assert len(bars) == len(maps) > 0
    for axis in grid[:, 0]:
        assert all(image.colorbar is None for image in axis.images)
    assert all(axis.images[0].colorbar is not None for axis in maps)
    assert {id(a.images[0].colorbar.ax) for a in maps} == set(map(id, bars))
    for axis in maps:
        image = axis.images[0]
        assert image.colorbar.mappable is image
        low, high = image.get_clim()
        bar = image.colorbar
        assert (bar.vmin, bar.vmax) == pytest.approx((low, high), rel=1e-12)
        # The colour bar ends in a triangle where values lie beyond its range.
        values = np.asarray(image.get_array(), dtype=np.float64)
        below, above = np.any(values < low), np.any(values > high)
        assert (
            image.colorbar.extend
            == {
                (True, True): "both",
                (True, False): "min",
                (False, True): "max",
                (False, False): "neither",
            }[(bool(below), bool(above))]
        )
    # Each bar's labels can be told apart (a narrow range gets more digits).
    figure.canvas.draw()
    for bar in bars:
        labels = [t.get_text() for t in bar.get_yticklabels() if t.get_text()]
        assert labels and len(set(labels)) == len(labels), labels
    return grid


def _bar_labels(axis) -> list[str]:
    axis.figure.canvas.draw()
    ticks = axis.images[0].colorbar.ax.get_yticklabels()
    return [t.get_text().replace("\N{MINUS SIGN}", "-") for t in ticks if t.get_text()]


def test_colour_bars_of_narrow_and_constant_maps():
    def model(scale):
        return keras.Sequential(
            [
                keras.Input(SHAPE),
                keras.layers.Conv2D(
                    1,
                    3,
                    padding="same",
                    kernel_initializer=keras.initializers.Constant(scale),
                    bias_initializer=keras.initializers.Constant(0.5),
                    name="a",
                ),
            ]
        )

    ramp = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(SHAPE)
    # Features 0.5 + 9 * 1e-4 * (local mean): a range of about 0.001.
    figure = plot.singularity_maps(model(1e-4), ramp, layer_names=["a"])
    labels = _bar_labels(_panels(figure, 2, 2)[0, 1])
    values = [float(label) for label in labels]
    assert len(values) >= 2 and all(0.5 <= v <= 0.501 for v in values)
    # A constant map: one label, its value.
    figure = plot.singularity_maps(model(0.0), ramp, layer_names=["a"])
    assert _bar_labels(_panels(figure, 2, 2)[0, 1]) == ["0.5"]


def test_ssr_model_shows_the_inputs_of_its_ssr_layers(image):
    model = get_ssr_unet(CHANNELS, input_shape=list(SHAPE))
    depths = plot.depth_features(model, image)
    assert [d.name for d in depths] == ["encoder_0_attention", "encoder_1_attention"]
    assert [d.features.shape for d in depths] == [(32, 32, 4), (16, 16, 8)]
    # An SSR layer reads the output of its encoder block's last ReLU.
    expected = _outputs(model, ["encoder_0_relu_1", "encoder_1_relu_1"], image)
    for depth, reference in zip(depths, expected):
        np.testing.assert_allclose(depth.features, reference, rtol=1e-5, atol=1e-6)
        assert depth.ssr_layer is model.get_layer(depth.name)


def test_plain_unet_shows_its_encoder_blocks(image):
    model = get_unet(CHANNELS, input_shape=list(SHAPE))
    depths = plot.depth_features(model, image)
    # The bottleneck (deepest level) is left out, as for the SSR-U-Net.
    assert [d.name for d in depths] == ["encoder_0_relu_1", "encoder_1_relu_1"]
    assert all(d.ssr_layer is None for d in depths)


def test_cnn_without_decoder_keeps_every_level(image):
    model = keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Conv2D(3, 3, padding="same", name="a"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Conv2D(5, 3, padding="same", name="b"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    depths = plot.depth_features(model, image)
    assert [d.name for d in depths] == ["a", "b"]
    assert depths[1].features.shape == (16, 16, 5)
    named = plot.depth_features(model, image, layer_names=["b"])
    assert [d.name for d in named] == ["b"]


def test_figure_panels_values_and_file(tmp_path, image):
    model = get_ssr_unet(CHANNELS, input_shape=list(SHAPE))
    mask = (image[..., 0] > 0.5).astype(np.float32)
    path = tmp_path / "sub" / "maps.png"
    figure = plot.singularity_maps(model, image, mask, channels_per_depth=2, path=path)
    # 2 rows x (input column + 2 depths x 2 channels), and a colour bar
    # beside each of the 8 maps.
    assert len(figure.axes) == 2 * (1 + 2 * 2) + 8
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"

    rows = _panels(figure, 2, 5)
    np.testing.assert_array_equal(rows[1, 0].images[0].get_array(), mask)
    # Top: the channels of largest spread; bottom: their singularity
    # strength, checked against the NumPy reference.
    depths = plot.depth_features(model, image)
    column = 1
    for depth in depths:
        spread = depth.features.reshape(-1, depth.features.shape[-1]).std(axis=0)
        picked = sorted(np.argsort(-spread, kind="stable")[:2])
        alpha = oracle.singularity_strength(
            depth.features[None][..., picked], 3, "sample"
        )[0]
        for k, channel in enumerate(picked):
            shown = rows[0, column].images[0].get_array()
            np.testing.assert_allclose(shown, depth.features[..., channel], atol=1e-6)
            shown_alpha = rows[1, column].images[0].get_array()
            np.testing.assert_allclose(shown_alpha, alpha[..., k], atol=1e-4)
            # The colour bars give each map's range: the feature map's own,
            # the singularity map's 1st-99th percentiles (NumPy's, of the
            # reference map).
            bar = rows[0, column].images[0].colorbar
            assert (bar.vmin, bar.vmax) == pytest.approx(
                (depth.features[..., channel].min(), depth.features[..., channel].max())
            )
            bar = rows[1, column].images[0].colorbar
            expected = np.percentile(alpha[..., k], [1, 99])
            np.testing.assert_allclose([bar.vmin, bar.vmax], expected, atol=1e-4)
            column += 1


def test_more_channels_than_a_depth_has(image):
    model = get_unet(CHANNELS, input_shape=list(SHAPE))
    figure = plot.singularity_maps(model, image, channels_per_depth=6)
    # depth 1 has 4 channels, depth 2 has 8 (6 shown); no mask: prediction.
    assert len(figure.axes) == 2 * (1 + 4 + 6) + 2 * (4 + 6)
    assert _panels(figure, 2, 11)[1, 0].get_title() == "prediction"


def test_alpha_from_the_model_layers(image):
    model = get_ssr_unet(CHANNELS, input_shape=list(SHAPE))
    figure = plot.singularity_maps(model, image, alpha="model", channels_per_depth=1)
    rows = _panels(figure, 2, 3)
    depth = plot.depth_features(model, image)[0]
    layer = depth.ssr_layer
    expected = keras.ops.convert_to_numpy(
        layer.alpha(depth.features[None], training=False)
    )[0]
    channel = int(np.argmax(depth.features.reshape(-1, 4).std(axis=0)))
    np.testing.assert_allclose(
        rows[1, 1].images[0].get_array(), expected[..., channel], atol=1e-5
    )


def _registered(name):
    if name not in attention_names():
        pytest.skip(f"attention {name!r} is not registered")


@pytest.mark.parametrize("name", ["se", "mono", "scse", "srm", "fca"])
def test_figure_for_each_attention_of_the_family(image, name):
    _registered(name)
    # FCA splits the channels into low_freq**2 = 16 groups.
    channels = [16, 32, 64] if name == "fca" else CHANNELS
    model = build_unet(channels, SHAPE, attention=name)
    figure = plot.singularity_maps(model, image, channels_per_depth=1)
    assert len(figure.axes) == 2 * (1 + 2) + 4
    _panels(figure, 2, 3)
    depths = plot.depth_features(model, image)
    if name == "mono":  # SSR under the follow-up's name: its inputs, its layers
        assert [d.ssr_layer.name for d in depths] == [
            "encoder_0_attention",
            "encoder_1_attention",
        ]
    else:  # channel gates without a singularity map: the encoder blocks
        assert [d.name for d in depths] == [
            "encoder_0_attention",
            "encoder_1_attention",
        ]
        assert all(d.ssr_layer is None and d.gate_layer is None for d in depths)


def test_multifractal_gates_are_shown_per_pixel(image, tmp_path):
    _registered("multifractal")
    model = build_unet(CHANNELS, SHAPE, attention="multifractal")
    depths = plot.depth_features(model, image)
    assert [d.gate_layer.name for d in depths] == [
        "encoder_0_attention",
        "encoder_1_attention",
    ]
    # The maps are the layers' inputs, the encoder blocks' last ReLU.
    inputs = _outputs(model, ["encoder_0_relu_1", "encoder_1_relu_1"], image)
    outputs = _outputs(model, ["encoder_0_attention", "encoder_1_attention"], image)
    figure = plot.singularity_maps(
        model, image, channels_per_depth=2, path=tmp_path / "mf.png"
    )
    assert len(figure.axes) == 3 * (1 + 2 * 2) + 3 * 4  # 12 maps with a colour bar
    rows = _panels(figure, 3, 5)
    assert not rows[2, 0].axison and rows[2, 1].get_title() == "per-pixel gate"
    column = 1
    for depth, before, after in zip(depths, inputs, outputs, strict=True):
        np.testing.assert_allclose(depth.features, before, rtol=1e-5, atol=1e-6)
        spread = depth.features.reshape(-1, depth.features.shape[-1]).std(axis=0)
        for channel in sorted(np.argsort(-spread, kind="stable")[:2]):
            # The layer adds its gate to its input: y - x is the gate.
            gate = rows[2, column].images[0].get_array()
            np.testing.assert_allclose(gate, (after - before)[..., channel], atol=1e-5)
            assert np.all((gate > 0) & (gate < 1))
            bar = rows[2, column].images[0].colorbar
            expected = np.percentile((after - before)[..., channel], [1, 99])
            np.testing.assert_allclose([bar.vmin, bar.vmax], expected, atol=1e-5)
            column += 1


@requires_nchw_conv
def test_channels_first_model(image):
    model = get_ssr_unet(
        CHANNELS, input_shape=[1, 32, 32], data_format="channels_first"
    )
    chw = np.moveaxis(image, -1, 0)
    depths = plot.depth_features(model, chw, data_format="channels_first")
    assert [d.features.shape for d in depths] == [(32, 32, 4), (16, 16, 8)]
    figure = plot.singularity_maps(model, chw, data_format="channels_first")
    assert len(figure.axes) == 10 + 8
    _panels(figure, 2, 5)


def test_bad_arguments(image):
    model = get_ssr_unet(CHANNELS, input_shape=list(SHAPE))
    with pytest.raises(TypeError, match="model="):
        plot.singularity_maps("model", image)
    with pytest.raises(ValueError, match=r"image.shape=\(16, 16, 1\)"):
        plot.singularity_maps(model, np.zeros((16, 16, 1)))
    with pytest.raises(ValueError, match=r"image.shape=\(2, 32, 32, 1\)"):
        plot.singularity_maps(model, np.zeros((2, 32, 32, 1)))
    with pytest.raises(ValueError, match=r"mask.shape=\(8, 8\)"):
        plot.singularity_maps(model, image, np.zeros((8, 8)))
    with pytest.raises(ValueError, match="channels_per_depth=0"):
        plot.singularity_maps(model, image, channels_per_depth=0)
    with pytest.raises(ValueError, match="max_scale=1"):
        plot.singularity_maps(model, image, max_scale=1)
    with pytest.raises(ValueError, match="alpha='box'"):
        plot.singularity_maps(model, image, alpha="box")
    with pytest.raises(ValueError, match="dpi=1"):
        plot.singularity_maps(model, image, dpi=1)
    with pytest.raises(ValueError, match="'nope'"):
        plot.singularity_maps(model, image, layer_names=["nope"])
    with pytest.raises(TypeError, match="layer_names='head'"):
        plot.depth_features(model, image, layer_names="head")
    with pytest.raises(TypeError, match="path=3"):
        plot.singularity_maps(model, image, path=3)
    unet = get_unet(CHANNELS, input_shape=list(SHAPE))
    with pytest.raises(ValueError, match="alpha='model'"):
        plot.singularity_maps(unet, image, alpha="model")


def test_subclassed_model_is_refused(image):
    class Tiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(2, 3, padding="same")

        def call(self, x):
            return self.conv(x)

    with pytest.raises(ValueError, match="functional or Sequential"):
        plot.depth_features(Tiny(), image)


def test_missing_matplotlib_gives_an_install_hint(monkeypatch, image):
    model = get_unet(CHANNELS, input_shape=list(SHAPE))
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match=r"pip install keras-ssr\[plot\]"):
        plot.singularity_maps(model, image)
