"""``keras-ssr demo``: scores, configuration, data splits, a short run end to end."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import json
import os
import sys

import keras
import numpy as np
import pytest

from keras_ssr import demo
from keras_ssr.demo import data as datasets
from keras_ssr.models import attention_names, build_unet, get_ssr_unet, get_unet

BACKEND = keras.backend.backend()


def _parser() -> argparse.ArgumentParser:
    """The CLI's ``demo`` parser when the whole CLI imports, else our own."""
    if importlib.util.find_spec("keras_ssr.cv") is not None:
        from keras_ssr import cli

        parser = cli.build_parser()

        class Demo:
            def parse_args(self, argv):
                return parser.parse_args(["demo", *argv])

        return Demo()
    parser = argparse.ArgumentParser(prog="keras-ssr demo")
    demo.add_arguments(parser)
    return parser


# --------------------------------------------------------------------------
# Scores and table


def test_dice_and_iou_by_hand():
    masks = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0], [1, 0, 0, 0]])
    probabilities = np.array(
        [
            [0.9, 0.2, 0.7, 0.1],  # p={0,2}, g={0,1}: 2*1/4, 1/3
            [0.1, 0.2, 0.3, 0.4],  # both empty: 1, 1
            [0.6, 0.6, 0.6, 0.6],  # p=all, g={0,2}: 4/6, 2/4
            [0.5, 0.0, 0.0, 0.0],  # 0.5 counts as positive: 1, 1
        ]
    )
    dice, iou = demo.dice_and_iou(masks, probabilities)
    np.testing.assert_allclose(dice, [0.5, 1.0, 2 / 3, 1.0])
    np.testing.assert_allclose(iou, [1 / 3, 1.0, 0.5, 1.0])
    dice, iou = demo.dice_and_iou(
        masks[:1, :, None, None], probabilities[:1, :, None, None]
    )
    np.testing.assert_allclose([dice[0], iou[0]], [0.5, 1 / 3])


def test_dice_and_iou_errors():
    with pytest.raises(ValueError, match=r"masks.shape=\(2, 3\)"):
        demo.dice_and_iou(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="threshold=1.5"):
        demo.dice_and_iou(np.zeros((2, 3)), np.zeros((2, 3)), threshold=1.5)


def test_format_table():
    row = {
        "model": "SSR-U-Net",
        "params": 125029,
        "train_seconds": 12.345,
        "dice_mean": 0.95012,
        "dice_std": 0.0149,
        "iou_mean": 0.9051,
        "iou_std": 0.036,
        "dice_pooled": 0.9612,
        "iou_pooled": 0.92549,
    }
    lines = demo.format_table([{**row, "model": "U-Net"}, row]).splitlines()
    assert lines[0].split()[:2] == ["model", "params"]
    assert set(lines[1]) == {"-"}
    assert lines[3].split() == [
        "SSR-U-Net", "125,029", "12.3", "0.950", "±", "0.015", "0.905", "±", "0.036",
        "0.961", "0.925",
    ]  # fmt: skip
    assert len({len(line) for line in lines}) == 1


# --------------------------------------------------------------------------
# Configuration


def test_presets_are_valid():
    assert demo.DEFAULTS.dataset == "textures"
    assert demo.QUICK.epochs == 1
    for config in (demo.DEFAULTS, demo.QUICK):
        assert config.size % 2 ** (len(config.channels_per_level) - 1) == 0


@pytest.mark.parametrize(
    "changes, error, text",
    [
        ({"size": 30}, ValueError, "size=30"),
        ({"size": 8}, ValueError, "size=8"),
        ({"dataset": "isic"}, ValueError, "dataset='isic'"),
        ({"dataset": "ihc", "size": 256}, ValueError, "size=256"),
        ({"epochs": 0}, ValueError, "epochs=0"),
        ({"samples": 2.5}, TypeError, "samples=2.5"),
        ({"seed": -3}, ValueError, "seed=-3"),
        ({"attention_options": {"ssr": {"max_scale": 1}}}, ValueError, "max_scale=1"),
        ({"attention_options": {"ssr": {"k": 8}}}, ValueError, "takes no option 'k'"),
        ({"attention_options": {"se": {"r": 4}}}, ValueError, r"\['se'\], which"),
        ({"attention_options": {"ssr": 4}}, TypeError, "must map model names"),
        ({"channels_per_level": (8,)}, ValueError, r"level=\(8,\)"),
        ({"channels_per_level": (1, 4, 8)}, ValueError, r"level=\(1, 4, 8\)"),
        ({"learning_rate": 0.0}, ValueError, "learning_rate=0.0"),
        ({"models": ("none", "cbam")}, ValueError, r"unknown \['cbam'\]"),
        ({"models": ("ssr", "ssr")}, ValueError, "repeated"),
        ({"models": ()}, ValueError, r"models=\(\)"),
        ({"models": "ssr"}, ValueError, "models='ssr'"),
    ],
)
def test_config_validation(changes, error, text):
    with pytest.raises(error, match=text):
        dataclasses.replace(demo.DEFAULTS, **changes)


def test_command_line_options():
    parser = _parser()
    args = parser.parse_args([])
    assert demo.config_from_args(args) == demo.DEFAULTS
    assert args.output == "keras-ssr-demo"
    args = parser.parse_args(
        ["--quick", "--epochs", "3", "--channels-per-level", "2,4", "--dataset", "ihc"]
    )
    config = demo.config_from_args(args)
    assert config == dataclasses.replace(
        demo.QUICK, epochs=3, channels_per_level=(2, 4), dataset="ihc"
    )
    # The former spelling of the widths still works.
    args = parser.parse_args(["--quick", "--channels", "2,4"])
    assert demo.config_from_args(args).channels_per_level == (2, 4)
    args = parser.parse_args(["--models", "SE, none,ssr_xu"])
    assert demo.config_from_args(args).models == ("se", "none", "ssr_xu")
    args = parser.parse_args(["--models", "all"])
    assert demo.config_from_args(args).models == tuple(attention_names())
    bad_options = (
        ["--channels", "8,x"],
        ["--epochs", "0"],
        ["--dataset", "mnist"],
        ["--models", ","],
        ["--attention-option", "k"],
    )
    for bad in bad_options:
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    # Names are checked once --import has run, by the configuration.
    with pytest.raises(ValueError, match=r"unknown \['cbam'\].*register_attention"):
        demo.config_from_args(parser.parse_args(["--models", "none,cbam"]))


def test_attention_options_from_the_command_line():
    parser = _parser()
    argv = ["--quick", "--models", "none,multifractal"]
    argv += ["--attention-option", "multifractal.k=8"]
    argv += ["--attention-option", "multifractal.per_channel=true"]
    config = demo.config_from_args(parser.parse_args(argv))
    assert config.attention_options == {"multifractal": {"k": 8, "per_channel": True}}
    assert config.to_dict()["attention_options"] == {
        "multifractal": {
            "max_scale": 3, "k": 8, "per_channel": True, "scaling": "batch",
            "synchronized": True,
        }
    }  # fmt: skip
    model = demo.build_model("multifractal", config, (32, 32, 1))
    for level in (0, 1):
        layer = model.get_layer(f"encoder_{level}_attention")
        assert (layer.k, layer.per_channel) == (8, True)
    # The former r and max_scale set every model that takes them.
    legacy = dataclasses.replace(
        config, models=("none", "ssr", "se"), attention_options={}, r=4
    )
    assert legacy.attention_options == {"ssr": {"r": 4}, "se": {"r": 4}}


@pytest.mark.parametrize(
    "option, message",
    [
        ("k=8", "MODEL.KEY=VALUE"),
        ("multifractal.r=4", "takes no option 'r'; its options are max_scale, k"),
        ("multifractal.k=1", "`k` must be >= 2. Received: k=1"),  # the layer's
        ("multifractal.scaling=global", "`scaling` must be one of"),
        ("ssr.r=2", "['ssr'], which are not among the models"),
    ],
)
def test_bad_attention_options_exit_with_2(tmp_path, capsys, option, message):
    argv = ["--quick", "--models", "none,multifractal", "--attention-option", option]
    argv += ["--output", str(tmp_path / "out")]
    assert demo.run_from_args(_parser().parse_args(argv)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_import_registers_a_models_attention(tmp_path, capsys, monkeypatch):
    from keras_ssr.demo import cli as demo_cli
    from keras_ssr.models import registry

    (tmp_path / "demo_plugin.py").write_text(
        "from keras_ssr import layers, models\n"
        "models.register_attention('se_plugin', layers.SqueezeExcite, {'r': 2})\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "demo_plugin", raising=False)
    runs = []
    monkeypatch.setattr(
        demo_cli, "run_demo", lambda config, *a, **k: runs.append(config)
    )
    argv = ["--quick", "--models", "none,se_plugin", "--output", str(tmp_path / "o")]
    argv += ["--attention-option", "se_plugin.r=4"]
    try:
        assert demo.run_from_args(_parser().parse_args(argv)) == 2
        assert "register_attention" in capsys.readouterr().err and not runs
        argv += ["--import", "demo_plugin"]
        assert demo.run_from_args(_parser().parse_args(argv)) == 0
        assert runs[0].models == ("none", "se_plugin")
        assert runs[0].attention_kwargs("se_plugin") == {"r": 4}
    finally:
        registry._ATTENTION.pop("se_plugin", None)
        sys.modules.pop("demo_plugin", None)


def test_an_encoder_from_the_command_line():
    """--encoder makes every model an encoder U-Net; its options recorded."""
    argv = ["--quick", "--models", "none,multifractal,ssr", "--encoder", "MobileNetV2"]
    argv += ["--encoder-option", "alpha=0.35", "--attention-option", "multifractal.k=8"]
    config = demo.config_from_args(_parser().parse_args(argv))
    assert (config.encoder, config.encoder_options) == ("mobilenetv2", {"alpha": 0.35})
    recorded = config.to_dict()
    assert recorded["encoder_options"] == {"alpha": 0.35}
    assert recorded["encoder_weights"] is None
    # SSR's r is chosen per layer in an encoder U-Net: not an option then.
    assert recorded["attention_options"]["ssr"] == {
        "max_scale": 3, "scaling": "batch", "synchronized": True
    }  # fmt: skip
    model = demo.build_model("multifractal", config, (32, 32, 1))
    assert model.get_layer("block_1_expand_relu_attention").k == 8
    # alpha 0.35: MobileNetV2's first convolution has 32 * 0.35 rounded up
    # to a multiple of 8 filters.
    assert model.get_layer("Conv1").filters == 16
    assert [model.get_layer(f"decoder_{i}_conv_0").filters for i in range(5)] == [
        16, 32, 64, 128, 256,
    ]  # fmt: skip
    # Every BatchNormalization, the encoder's too, at the demo's momentum.
    momenta = _block_momenta(model)
    assert "bn_Conv1" in momenta and set(momenta.values()) == {0.9}
    assert model.get_layer("block_1_expand_relu_attention").alpha.bn.momentum == 0.9


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--encoder", "mobilenetv3"], "Unknown encoder 'mobilenetv3'"),
        (["--encoder", "resnet50", "--encoder-option", "alpha=1"], "no option 'alpha'"),
        (["--encoder", "resnet50", "--size", "48"], "stride 32. Received: size=48"),
        (["--encoder", "resnet50", "--channels", "4,8"], "--decoder-channels"),
        (["--encoder-option", "alpha=0.35"], "set `encoder`"),
        (["--encoder", "resnet50", "--decoder-channels", "8,16"], "5 positive"),
    ],
)
def test_bad_encoder_options_exit_with_2(tmp_path, capsys, flags, message):
    argv = ["--quick", "--output", str(tmp_path / "out"), *flags]
    assert demo.run_from_args(_parser().parse_args(argv)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------
# Models


def _block_momenta(model):
    return {
        layer.name: layer.momentum
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }


def test_builders_take_a_bn_momentum():
    for builder in (get_unet, get_ssr_unet):
        default = _block_momenta(builder([2, 4], input_shape=[16, 16, 1]))
        assert len(default) == 6 and set(default.values()) == {0.99}
        momenta = _block_momenta(
            builder([2, 4], input_shape=[16, 16, 1], bn_momentum=0.75)
        )
        assert momenta.keys() == default.keys()
        assert set(momenta.values()) == {0.75}
    with pytest.raises(ValueError, match="bn_momentum=1.5"):
        build_unet([2, 4], (16, 16, 1), bn_momentum=1.5)


@pytest.mark.parametrize("name", ["none", "ssr", "se"])
def test_demo_models_are_the_registry_u_nets(name):
    config = dataclasses.replace(
        demo.QUICK, channels_per_level=(2, 4), models=(name,),
        attention_options={"ssr": {"max_scale": 2}} if name == "ssr" else {},
    )  # fmt: skip
    model = demo.build_model(name, config, (16, 16, 1))
    assert set(_block_momenta(model).values()) == {0.9}
    if name == "ssr":  # the SSR's own normalisation of its map, too
        assert model.get_layer("encoder_0_attention").alpha.bn.momentum == 0.9
    reference = build_unet(
        [2, 4],
        (16, 16, 1),
        attention=None if name == "none" else name,
        attention_kwargs={"ssr": {"max_scale": 2}}.get(name),
    )
    assert model.count_params() == reference.count_params()
    if name == "ssr":
        assert model.get_layer("encoder_0_attention").max_scale == 2
    assert demo.model_label(name) in {"U-Net", "SSR-U-Net", "SE-U-Net"}
    assert demo.model_label("mine") == "mine-U-Net"


def test_multifractal_normalisations_get_the_demo_momentum():
    if "multifractal" not in attention_names():
        pytest.skip("Multifractal is not registered")
    model = demo.build_model("multifractal", demo.QUICK, (32, 32, 1))
    for level in (0, 1):
        layer = model.get_layer(f"encoder_{level}_attention")
        assert layer.alpha.bn.momentum == 0.9
        assert layer.histogram.bn.momentum == 0.9


# --------------------------------------------------------------------------
# Data splits


def test_texture_splits_are_disjoint_slices():
    x_train, y_train, x_test, y_test = demo.load_demo_data("textures", 32, 6, 3, 5)
    images, masks = datasets.make_texture_dataset(9, 32, 5)
    np.testing.assert_array_equal(x_train, images[:6])
    np.testing.assert_array_equal(y_test, masks[6:])
    assert x_test.shape == (3, 32, 32, 1)


def test_ihc_training_set_is_augmented_train_blocks():
    pytest.importorskip("skimage")
    x_train, y_train, x_test, y_test = demo.load_demo_data("ihc", 64, 200, 10, 0)
    patches, masks = datasets.load_ihc_patches(64, split="train")
    held_out, _ = datasets.load_ihc_patches(64, split="test")
    assert x_train.shape == (200, 64, 64, 3) and y_train.shape == (200, 64, 64, 1)
    np.testing.assert_array_equal(x_test, held_out[:10])
    # Every training image is one of the 8 rotations/reflections of a
    # train-block patch, with its mask transformed alike.
    variants = {}
    for n in range(len(patches)):
        for k in range(8):
            image = np.rot90(patches[n], k % 4)
            mask = np.rot90(masks[n], k % 4)
            if k >= 4:
                image, mask = image[:, ::-1], mask[:, ::-1]
            variants[image.tobytes()] = mask
    for image, mask in zip(x_train, y_train):
        np.testing.assert_array_equal(variants[image.tobytes()], mask)


# --------------------------------------------------------------------------
# End to end


def test_a_model_that_cannot_be_built_exits_with_2_before_training(tmp_path, capsys):
    if "fca" not in attention_names():
        pytest.skip("FCA is not registered")
    argv = ["--quick", "--models", "none,fca", "--output", str(tmp_path / "out")]
    assert demo.run_from_args(_parser().parse_args(argv)) == 2
    err = capsys.readouterr().err
    assert "FCA-U-Net (--models fca) cannot be built" in err and "16" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_short_demo_end_to_end(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    # The default pair, plus Multifractal (per-pixel gates) when registered.
    names = ["none", "ssr"] + (
        ["multifractal"] if "multifractal" in attention_names() else []
    )
    output = tmp_path / "demo"
    argv = [
        "--quick",
        "--size", "16",
        "--channels", "2,4",
        "--samples", "8",
        "--test-samples", "4",
        "--batch-size", "4",
        "--output", str(output),
        "--verbose", "0",
        "--models", ",".join(names),
    ]  # fmt: skip
    if BACKEND == "tensorflow":
        argv.append("--run-eagerly")  # no tf.function tracing: faster here
    assert demo.run_from_args(_parser().parse_args(argv)) == 0
    printed = capsys.readouterr().out

    files = sorted(os.listdir(output))
    expected_files = [
        "predictions.png",
        "results.csv",
        "results.json",
        "singularity_maps.png",
        "singularity_maps_unet.png",
    ]
    if "multifractal" in names:
        expected_files.append("singularity_maps_multifractal.png")
    assert files == sorted(expected_files)
    for name in files:
        if name.endswith(".png"):
            assert (output / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with open(output / "results.json", encoding="utf-8") as handle:
        result = json.load(handle)
    assert result["backend"] == BACKEND
    assert result["config"]["size"] == 16 and result["config"]["epochs"] == 1
    assert result["config"]["models"] == names
    assert result["config"]["channels_per_level"] == [2, 4]
    # Every option each attention was built with, none for the plain U-Net.
    recorded = {
        "none": {},
        "ssr": {"r": 2, "max_scale": 3, "scaling": "batch", "synchronized": True},
        "multifractal": {
            "max_scale": 3, "k": 16, "per_channel": False, "scaling": "batch",
            "synchronized": True,
        },
    }  # fmt: skip
    assert [r["attention_options"] for r in result["rows"]] == [
        recorded[n] for n in names
    ]
    assert result["table"] in printed
    assert len(result["table"].splitlines()) == 2 + len(names)
    rows = result["rows"]
    labels = [demo.model_label(n) for n in names]
    assert [r["model"] for r in rows] == labels
    assert labels[:2] == ["U-Net", "SSR-U-Net"]
    expected_params = [
        get_unet([2, 4], input_shape=[16, 16, 1]).count_params(),
        get_ssr_unet([2, 4], input_shape=[16, 16, 1]).count_params(),
    ] + [build_unet([2, 4], (16, 16, 1), attention=n).count_params() for n in names[2:]]
    assert [r["params"] for r in rows] == expected_params
    for row in rows:
        assert 0.0 <= row["dice_mean"] <= 1.0 and 0.0 <= row["iou_mean"] <= 1.0
        assert row["iou_mean"] <= row["dice_mean"] + 1e-12  # IoU <= Dice
        assert 0.0 <= row["iou_pooled"] <= row["dice_pooled"] + 1e-12
        assert len(row["held_out_dice_per_epoch"]) == 1

    with open(output / "results.csv", newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert [r["model"] for r in table] == labels
    assert [r["attention"] for r in table] == names
    for line, row in zip(table, rows):
        assert float(line["dice_mean"]) == pytest.approx(row["dice_mean"])
        assert float(line["iou_std"]) == pytest.approx(row["iou_std"])
        assert float(line["dice_pooled"]) == pytest.approx(row["dice_pooled"])


@pytest.mark.slow
def test_short_encoder_demo_end_to_end(tmp_path):
    """A MobileNetV2 + Multifractal U-Net through the demo: trained, scored,
    drawn (its per-pixel gates among the encoder's features), recorded."""
    pytest.importorskip("matplotlib")
    output = tmp_path / "demo"
    argv = [
        "--quick", "--samples", "8", "--test-samples", "4", "--batch-size", "4",
        "--output", str(output), "--verbose", "0", "--models", "multifractal",
        "--encoder", "mobilenetv2", "--encoder-option", "alpha=0.35",
        "--run-eagerly",
    ]  # fmt: skip
    assert demo.run_from_args(_parser().parse_args(argv)) == 0
    assert sorted(os.listdir(output)) == [
        "predictions.png",
        "results.csv",
        "results.json",
        "singularity_maps_multifractal.png",
    ]
    with open(output / "results.json", encoding="utf-8") as handle:
        result = json.load(handle)
    config = result["config"]
    assert (config["encoder"], config["encoder_options"]) == (
        "mobilenetv2",
        {"alpha": 0.35},
    )
    (row,) = result["rows"]
    reference = build_unet(
        input_shape=(32, 32, 1),
        encoder="mobilenetv2",
        encoder_kwargs={"alpha": 0.35},
        attention="multifractal",
    )
    assert row["params"] == reference.count_params()
    assert 0.0 <= row["iou_mean"] <= row["dice_mean"] + 1e-12 <= 1.0 + 1e-12
