"""Attention options in ``keras-ssr cv``: set, checked, recorded, rebuilt, compared.

One option of each kind is set from the command line or a config file and a
fold trained (20 images of 32x32, channels [4, 8], 1 epoch); a new Python
process then reads that run's ``config.json`` alone and rebuilds the model.
What it reports is compared with the values the test set (literals, not
values read back from our own files) and with the model this process builds
from the same flags: the attention layers' classes and configs, the weights
a seed gives, and the predictions of the fold's saved weights. The new
process also shows that an attention registered in the first process only
is a clear error there, and that ``--import`` resumes the run without a
configuration mismatch.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_ssr import cli, cv, layers, models
from keras_ssr.models import registry
from tests.test_cv import SIZE, _write_arrays

ROOT = Path(__file__).resolve().parent.parent

#: A module that registers an attention with a float and a list option.
PLUGIN = "options_plugin"
PLUGIN_SOURCE = '''
import keras
from keras_ssr import models


class Gain(keras.layers.Layer):
    """x * gain * scale + sum(offsets) / 1000, scale a trained scalar."""

    def __init__(self, gain=1.0, offsets=(1, 2), data_format=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(gain, float):
            raise TypeError(f"`gain` must be a float. Received: gain={gain!r}")
        self.gain, self.offsets = gain, list(offsets)

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")

    def call(self, x):
        return x * (self.gain * self.scale) + sum(self.offsets) / 1000.0

    def get_config(self):
        return {**super().get_config(), "gain": self.gain, "offsets": self.offsets}


models.register_attention("gain_test", Gain)
'''

#: Each run: how its options are given, and every option config.json must
#: record for its attention (the values set, the others' defaults).
RUNS = {
    "multi": {
        "flags": [
            "--model", "multifractal", "--attention-option", "k=8",
            "--attention-option", "per_channel=true",
            "--attention-option", "scaling=sample",
        ],
        "layers": ["MultifractalRecalibration"],
        "recorded": {
            "max_scale": 3, "k": 8, "per_channel": True, "scaling": "sample",
            "synchronized": True,
        },
    },
    "fca": {
        "toml": '[model]\nmodel = "fca"\n[model.attention_options]\n'
        'low_freq = 2\nbasis = "dct"\n',
        "layers": ["FrequencyChannelAttention"],
        "recorded": {"r": 2, "low_freq": 2, "basis": "dct"},
    },
    "gain": {
        "flags": [
            "--import", PLUGIN, "--model", "gain_test",
            "--attention-option", "gain=0.5", "--attention-option", "offsets=[3, 4]",
        ],
        "layers": ["Gain"],
        "recorded": {"gain": 0.5, "offsets": [3, 4]},
    },
    # A MobileNetV2 + Multifractal U-Net, scSE in the decoder: one attention
    # after each of the encoder's 4 skips and its output, one per decoder skip.
    "encoder": {
        "flags": [
            "--model", "multifractal", "--attention-option", "k=8",
            "--encoder", "mobilenetv2", "--encoder-option", "alpha=0.35",
            "--decoder-attention", "scse",
        ],
        "layers": ["MultifractalRecalibration"] * 5 + ["SpatialSqueezeExcite"] * 4,
        "recorded": {
            "max_scale": 3, "k": 8, "per_channel": False, "scaling": "batch",
            "synchronized": True,
        },
    },
}  # fmt: skip

#: The new process: rebuild every run from its config.json alone.
REBUILD = """
import contextlib, io, json, sys
import keras, numpy as np
from keras_ssr import cli, cv

root, names = sys.argv[1], sys.argv[2].split(",")
x = np.load(f"{root}/probe.npy")
report = {name: {} for name in names}
# gain_test was registered in the other process only: first without --import.
err = io.StringIO()
with contextlib.redirect_stderr(err):
    report["gain"]["unregistered_rc"] = cli.main(
        ["cv", "--config", f"{root}/runs/gain/config.json", "--dry-run"]
    )
report["gain"]["unregistered_err"] = err.getvalue()
for name in names:
    path = f"{root}/runs/{name}/config.json"
    entry = report[name]
    if name == "gain":
        from keras_ssr import _settings
        _settings.import_modules(["options_plugin"])
    config = cv.CVConfig.from_file(path)
    keras.utils.set_random_seed(0)
    model = cv.build_model(config, x.shape[1:])
    np.savez(f"{root}/{name}_init.npz", *[keras.ops.convert_to_numpy(w)
                                          for w in model.weights])
    model.load_weights(f"{root}/runs/{name}/fold_0/best.weights.h5")
    np.save(f"{root}/{name}_pred.npy", model.predict(x, verbose=0))
    entry["attention"] = [
        [type(layer).__name__, layer.get_config()]
        for layer in model.layers if layer.name.endswith("_attention")
    ]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        entry["resume_rc"] = cli.main(
            ["cv", "--import", "options_plugin", "--config", path, "--fold", "0",
             "--verbose", "0"]
        )
    entry["resume_out"] = out.getvalue()
print(json.dumps(report))
"""


def _argv(data, root: Path, name: str, *flags, encoder=None) -> list[str]:
    """A tiny run's command line: the papers' U-Net with channels [4, 8],
    unless there is an encoder (whose decoder keeps its widths): ``encoder``,
    by default whether ``flags`` name one."""
    if encoder is None:
        encoder = "--encoder" in flags
    widths = [] if encoder else ["--channels-per-level", "4,8"]
    return [
        "cv", "--dataset", "isic", "--x-path", str(data[0]), "--y-path",
        str(data[1]), "--target-size", str(SIZE), *widths,
        "-k", "2", "--epochs", "1", "--batch-size", "16", "--verbose", "0",
        "--run-eagerly", "-o", str(root / "runs"), "--name", name, *flags,
    ]  # fmt: skip


def _flags(spec, root: Path, name: str) -> list[str]:
    """A run's option flags (with ``--config FILE`` for a TOML-given run)."""
    if "toml" not in spec:
        return list(spec["flags"])
    path = root / f"{name}.toml"
    path.write_text(spec["toml"])
    return ["--config", str(path)]


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    """Trains fold 0 of every run of ``RUNS`` from the CLI, then rebuilds
    them all in one new process; yields what both processes saw."""
    root = tmp_path_factory.mktemp("options")
    data = _write_arrays(root / "data")
    (root / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
    x = np.load(data[0])[:4].transpose(0, 2, 3, 1).astype("float32") / 255.0
    np.save(root / "probe.npy", x)
    here = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # --import finds the plugin in the current folder
        for name, spec in RUNS.items():
            argv = _argv(data, root, name, *_flags(spec, root, name), "--fold", "0")
            assert cli.main(argv) == 0, name
            # The model this process builds from the same flags, not the file.
            config = cv.config_from_args(cli.build_parser().parse_args(argv))
            keras.utils.set_random_seed(0)
            model = cv.build_model(config, x.shape[1:])
            here[name] = {
                "init": [keras.ops.convert_to_numpy(w) for w in model.weights],
                "attention": _attention_configs(model),
            }
            fold = root / "runs" / name / "fold_0"
            model.load_weights(str(fold / "best.weights.h5"))
            here[name]["pred"] = model.predict(x, verbose=0)
            here[name]["metrics"] = (fold / "metrics.json").read_bytes()
        env = {**os.environ}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), env.get("PYTHONPATH")) if p
        )
        env.pop("PYTHONSAFEPATH", None)
        process = subprocess.run(
            [sys.executable, "-c", REBUILD, str(root), ",".join(RUNS)],
            capture_output=True, text=True, env=env, cwd=root, timeout=600,
        )  # fmt: skip
    registry._ATTENTION.pop("gain_test", None)  # this process's registration
    sys.modules.pop(PLUGIN, None)
    assert process.returncode == 0, process.stderr[-3000:]
    report = json.loads(process.stdout.strip().splitlines()[-1])
    return root, here, report


def _attention_configs(model) -> list:
    """``[class name, config]`` of each attention layer, as JSON gives them."""
    return json.loads(
        json.dumps(
            [
                [type(layer).__name__, layer.get_config()]
                for layer in model.layers
                if layer.name.endswith("_attention")
            ]
        )
    )


def _check_rebuilt(rebuilt, name: str, expected: dict) -> None:
    """The run ``name`` recorded, and rebuilt in the new process, with
    ``expected`` among its options, the same weights and predictions."""
    root, here, report = rebuilt
    spec = RUNS[name]
    saved = json.loads((root / "runs" / name / "config.json").read_text())
    assert saved["attention_options"] == spec["recorded"]
    assert "r" not in saved and "max_scale" not in saved  # options, not fields
    attention = report[name]["attention"]
    # Channels [4, 8]: one encoder level (an encoder U-Net: spec["layers"]).
    assert [kind for kind, _ in attention] == spec["layers"]
    for kind, config in attention:
        if kind == spec["layers"][0]:
            for key, value in expected.items():
                assert config[key] == value and type(config[key]) is type(value), key
    assert attention == here[name]["attention"]
    with np.load(root / f"{name}_init.npz") as init:
        weights = [init[f"arr_{i}"] for i in range(len(init.files))]
    assert len(weights) == len(here[name]["init"])
    for theirs, ours in zip(weights, here[name]["init"]):
        np.testing.assert_array_equal(theirs, ours)
    np.testing.assert_allclose(
        np.load(root / f"{name}_pred.npy"), here[name]["pred"], rtol=0, atol=1e-6
    )
    # config.json resumes in the new process: the same configuration, so
    # the finished fold is kept as it was.
    assert report[name]["resume_rc"] == 0
    fold = root / "runs" / name / "fold_0"
    assert (fold / "metrics.json").read_bytes() == here[name]["metrics"]


def test_int_options_rebuild_in_a_new_process(rebuilt):
    _check_rebuilt(rebuilt, "multi", {"k": 8})  # from a flag
    _check_rebuilt(rebuilt, "fca", {"low_freq": 2})  # from a config file


def test_bool_option_rebuilds_in_a_new_process(rebuilt):
    _check_rebuilt(rebuilt, "multi", {"per_channel": True})


def test_choice_options_rebuild_in_a_new_process(rebuilt):
    _check_rebuilt(rebuilt, "multi", {"scaling": "sample"})
    _check_rebuilt(rebuilt, "fca", {"basis": "dct"})


def test_float_and_list_options_rebuild_in_a_new_process(rebuilt):
    _check_rebuilt(rebuilt, "gain", {"gain": 0.5, "offsets": [3, 4]})


def test_encoder_u_net_rebuilds_in_a_new_process(rebuilt):
    """config.json records the encoder and every option; a new process builds
    the same MobileNetV2 + Multifractal U-Net from it, and resumes it."""
    _check_rebuilt(rebuilt, "encoder", {"k": 8})
    root, _, report = rebuilt
    saved = json.loads((root / "runs" / "encoder" / "config.json").read_text())
    assert saved["encoder"] == "mobilenetv2"
    assert saved["encoder_options"] == {"alpha": 0.35}
    assert saved["encoder_weights"] is None and saved["decoder_channels"] is None
    assert saved["decoder_attention"] == "scse"
    # No `r`: each inserted layer takes wide_reduction_ratio of its channels.
    assert saved["decoder_attention_options"] == {"combine": "max"}
    attention = report["encoder"]["attention"]
    assert [config["name"] for _, config in attention] == [
        "block_1_expand_relu_attention",
        "block_3_expand_relu_attention",
        "block_6_expand_relu_attention",
        "block_13_expand_relu_attention",
        "out_relu_attention",
        *(f"decoder_{level}_attention" for level in (4, 3, 2, 1)),
    ]
    # The decoder's concatenations at alpha 0.35: 1280 + 192, 256 + 96,
    # 128 + 48 and 64 + 48 channels; r = max(1, min(16, channels // 8)).
    assert [config["r"] for _, config in attention[5:]] == [16, 16, 16, 14]


def test_an_unregistered_attention_is_a_clear_error_in_a_new_process(rebuilt):
    _, _, report = rebuilt
    assert report["gain"]["unregistered_rc"] == 2
    err = report["gain"]["unregistered_err"]
    assert "model='gain_test'" in err
    assert "register_attention" in err and "--import MODULE" in err


# --------------------------------------------------------------------------
# Errors, before anything is written


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _write_arrays(tmp_path_factory.mktemp("options_data"))


@pytest.mark.parametrize(
    "option, expected",
    [
        # A key the layer does not take: its options are listed.
        ("r=4", "takes no option 'r'; its options are max_scale, k, per_channel, "
         "scaling, synchronized"),
        # Bad values: the layer's own errors (compared below with the layer's).
        ("k=1", None),
        ("per_channel=1", None),
        ("scaling=global", None),
    ],
)  # fmt: skip
def test_bad_options_are_refused_before_any_file(
    data, tmp_path, capsys, option, expected
):
    argv = _argv(data, tmp_path, "bad", "--model", "multifractal")
    assert cli.main([*argv, "--attention-option", option]) == 2
    err = capsys.readouterr().err
    if expected is None:
        key, value = option.split("=")
        value = {"1": 1}.get(value, value)
        with pytest.raises((ValueError, TypeError)) as info:
            layers.MultifractalRecalibration(**{"max_scale": 3, "k": 16, key: value})
        expected = str(info.value)
    assert expected in err
    assert not (tmp_path / "runs").exists()


def test_option_errors_in_a_config_file(data, tmp_path, capsys):
    path = tmp_path / "cv.toml"
    path.write_text('[model]\nmodel = "multifractal"\nk = 8\n')
    argv = _argv(data, tmp_path, "bad", "--config", str(path))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Unknown configuration key 'model.k'" in err
    assert "[model.attention_options]" in err  # says where options go
    path.write_text('[model]\nmodel = "unet"\n[model.attention_options]\nk = 8\n')
    assert cli.main(argv) == 2
    assert "no attention layer" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # not KEY=VALUE: argparse's usage error
        cli.main([*argv, "--attention-option", "k"])
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_an_unknown_flag_says_how_options_are_set(data, tmp_path, capsys):
    argv = _argv(data, tmp_path, "bad", "--model", "multifractal")
    with pytest.raises(SystemExit):
        cli.main([*argv, "--k", "8"])  # argparse takes 8 for the sub-command
    err = capsys.readouterr().err
    assert "invalid choice: '8'" in err and "--attention-option KEY=VALUE" in err


# --------------------------------------------------------------------------
# Flags and files together; resume


def test_flags_join_the_files_options_and_a_new_model_drops_them(data, tmp_path):
    path = tmp_path / "cv.toml"
    path.write_text(
        '[model]\nmodel = "multifractal"\n[model.attention_options]\nk = 8\n'
    )
    parser = cli.build_parser()

    def config(*flags):
        argv = _argv(data, tmp_path, "x", "--config", str(path), *flags)
        return cv.config_from_args(parser.parse_args(argv))

    assert config().attention_options == {"k": 8}
    joined = config("--attention-option", "per_channel=true")
    assert joined.attention_options == {"k": 8, "per_channel": True}
    assert config("--attention-option", "k=4").attention_options == {"k": 4}
    # Another model: the file's options were another layer's.
    other = config("--model", "ssr")
    assert other.attention_options == {}
    assert other.attention_kwargs == {
        "r": 2, "max_scale": 3, "scaling": "batch", "synchronized": True
    }  # fmt: skip


def test_a_changed_option_is_a_configuration_mismatch(rebuilt, capsys):
    root, _, _ = rebuilt
    spec = RUNS["multi"]
    data = (root / "data" / "x.npy", root / "data" / "y.npy")
    argv = _argv(data, root, "multi", *spec["flags"], "--fold", "1")
    argv[argv.index("k=8")] = "k=4"
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "attention_options.k: saved 8, now 4" in err
    assert not (root / "runs" / "multi" / "fold_1").exists()


def test_a_changed_encoder_option_is_a_configuration_mismatch(rebuilt, capsys):
    root, _, _ = rebuilt
    data = (root / "data" / "x.npy", root / "data" / "y.npy")
    argv = _argv(data, root, "encoder", *RUNS["encoder"]["flags"], "--fold", "1")
    argv[argv.index("alpha=0.35")] = "alpha=0.5"
    assert cli.main(argv) == 2
    assert "encoder_options.alpha: saved 0.35, now 0.5" in capsys.readouterr().err
    assert not (root / "runs" / "encoder" / "fold_1").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--encoder", "resnet50", "--encoder-option", "alpha=1"],
         "'resnet50' (keras.applications.ResNet50) takes no option 'alpha'"),
        (["--encoder", "mobilenetv2", "--encoder-option", "alpha=true"],
         "`alpha` must be a number"),
        (["--encoder-weights", "imagenet"], "`encoder_weights` belongs to an encoder"),
        (["--decoder-attention", "se"], "set `encoder`"),
        (["--encoder", "mobilenet"], "`encoder` must be one of"),
        # The papers' U-Net's widths with an encoder.
        (["--channels-per-level", "4,8", "--encoder", "resnet50"],
         "the widths of an encoder U-Net's decoder are `decoder_channels`"),
        (["--encoder", "resnet50", "--decoder-channels", "8,16"], "needs 5 values"),
        (["--encoder", "resnet50", "--decoder-attention", "none",
          "--decoder-attention-option", "r=4"], "`decoder_attention` is none"),
    ],
)  # fmt: skip
def test_bad_encoder_settings_are_refused_before_any_file(
    data, tmp_path, capsys, flags, message
):
    argv = _argv(data, tmp_path, "bad", *flags)
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_encoder_flags_join_the_files_options_and_a_new_encoder_drops_them(
    data, tmp_path
):
    path = tmp_path / "cv.toml"
    path.write_text(
        '[model]\nmodel = "se"\nencoder = "mobilenetv2"\n'
        "[model.encoder_options]\nalpha = 0.5\n"
    )
    parser = cli.build_parser()

    def config(*flags):
        argv = _argv(data, tmp_path, "x", "--config", str(path), *flags, encoder=True)
        return cv.config_from_args(parser.parse_args(argv))

    assert config().encoder_options == {"alpha": 0.5}
    assert config().attention_kwargs == {}  # SE's r: chosen per layer
    assert config("--encoder-option", "alpha=0.35").encoder_options == {"alpha": 0.35}
    other = config("--encoder", "convnexttiny")
    assert other.encoder_options == {}
    assert other.effective_options("encoder_options") == {"include_preprocessing": True}
    assert config("--attention-option", "r=4").attention_kwargs == {"r": 4}


def test_encoder_weights_reach_the_encoder(tmp_path):
    """encoder_weights (a file here; "imagenet" the same way) is passed on."""
    keras.utils.set_random_seed(1)
    stored = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(SIZE, SIZE, 3), alpha=0.35
    )
    path = tmp_path / "encoder.weights.h5"
    stored.save_weights(path)
    config = cv.CVConfig(
        dataset="folder", images_dir="i", masks_dir="m", target_size=(SIZE, SIZE),
        model="unet", encoder="mobilenetv2", encoder_options={"alpha": 0.35},
        encoder_weights=str(path),
    )  # fmt: skip
    model = cv.build_model(config, (SIZE, SIZE, 3))
    for name in ("Conv1", "block_16_project"):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(model.get_layer(name).kernel),
            keras.ops.convert_to_numpy(stored.get_layer(name).kernel),
        )


def test_differences_compare_option_by_option():
    config = cv.CVConfig(
        dataset="folder", images_dir="i", masks_dir="m", model="multifractal",
        attention_options={"k": 8},
    )  # fmt: skip
    saved = config.to_dict()
    assert config.differences(saved) == []
    options = saved["attention_options"]
    # An option the layer gained since the run was saved: fine at its default.
    assert config.differences({**saved, "attention_options": {"k": 8}}) == []
    changed = {**saved, "attention_options": {**options, "per_channel": True}}
    assert config.differences(changed) == [
        "attention_options.per_channel: saved True, now False"
    ]
    gone = {**saved, "attention_options": {**options, "old": 1}}
    assert config.differences(gone) == ["attention_options.old: saved 1, unknown now"]
    unset = {**saved, "attention_options": {"max_scale": 3}}
    assert config.differences(unset) == ["attention_options.k: not saved, now 8"]


def test_former_field_names_still_read(data, tmp_path):
    """``levels``, ``r`` and ``max_scale`` (config files, flags, keywords and
    old runs' config.json files) mean what they meant."""
    config = cv.CVConfig(
        dataset="folder", images_dir="i", masks_dir="m", target_size=(32, 32),
        channels_per_level=(4, 8), attention_options={"r": 4},
    )  # fmt: skip
    with pytest.warns(DeprecationWarning, match="levels"):
        assert cv.CVConfig(
            dataset="folder", images_dir="i", masks_dir="m", target_size=(32, 32),
            levels=(4, 8), r=4,
        ) == config  # fmt: skip
    with pytest.warns(DeprecationWarning):
        assert config.levels == (4, 8)
    # An old run's config.json: levels, r and max_scale, no attention_options.
    old = config.to_dict()
    old["levels"] = old.pop("channels_per_level")
    del old["attention_options"]
    old.update(r=4, max_scale=3)
    assert config.differences(old) == []
    assert cv.CVConfig.from_dict(old) == dataclasses.replace(config, name=old["name"])
    assert config.differences({**old, "r": 2}) == [
        "attention_options.r: saved 2, now 4"
    ]
    # The plain U-Net's runs recorded r and max_scale too, which it ignored.
    unet = cv.CVConfig.from_dict({**old, "model": "unet", "r": 2})
    assert unet.attention_kwargs == {} and unet.channels_per_level == (4, 8)
    # Flags and file keys.
    path = tmp_path / "old.toml"
    path.write_text('[model]\nmodel = "se"\nlevels = [4, 8]\nr = 4\nmax_scale = 3\n')
    argv = _argv(data, tmp_path, "x", "--config", str(path))
    got = cv.config_from_args(cli.build_parser().parse_args(argv))
    assert got.channels_per_level == (4, 8) and got.attention_kwargs == {"r": 4}
    argv = _argv(data, tmp_path, "x", "--levels", "8,16", "--r", "8")
    got = cv.config_from_args(cli.build_parser().parse_args(argv))
    assert got.channels_per_level == (8, 16) and got.attention_options == {"r": 8}
    with pytest.raises(ValueError, match="given twice"):
        cv.CVConfig.from_dict({**old, "attention_options": {"r": 2}})


def test_former_spellings_of_choices_still_read(data, tmp_path):
    """The metric sets ``paper`` and ``followup`` (now ``batch`` and
    ``per_image``) and FCA's ``basis="followup"`` (now ``transposed_dct``):
    config files, flags and old runs' config.json files mean what they
    meant, and an old run compares equal to the same run now."""
    config = cv.CVConfig(
        dataset="folder", images_dir="i", masks_dir="m", model="fca",
        metrics="per_image", attention_options={"low_freq": 2},
    )  # fmt: skip
    assert config.effective_options("attention_options")["basis"] == "transposed_dct"
    old = config.to_dict()
    old["metrics"] = "followup"
    old["attention_options"] = {**old["attention_options"], "basis": "followup"}
    assert config.differences(old) == []
    with pytest.warns(DeprecationWarning, match="per_image"):
        again = cv.CVConfig.from_dict(old)
    assert again == dataclasses.replace(config, name=old["name"])
    assert config.differences({**old, "metrics": "paper"}) == [
        "metrics: saved 'batch', now 'per_image'"
    ]
    assert cv.CVConfig.from_dict({**old, "metrics": "paper"}).metrics == "batch"
    argv = _argv(data, tmp_path, "x", "--metrics", "followup")
    got = cv.config_from_args(cli.build_parser().parse_args(argv))
    assert got.metrics == "per_image"
    # The tables read the former names too.
    assert cv.results.columns("followup") == cv.results.COLUMNS["per_image"]


def test_print_config_round_trips_every_option(data, tmp_path, capsys):
    argv = _argv(data, tmp_path, "x", "--model", "multifractal")
    assert cli.main([*argv, "--attention-option", "k=8", "--print-config"]) == 0
    path = tmp_path / "printed.toml"
    path.write_text(capsys.readouterr().out)
    assert "attention_options = {max_scale = 3, k = 8, per_channel = false" in (
        path.read_text()
    )
    config = cv.CVConfig.from_file(path)
    assert config.attention_options == {"k": 8}


def test_config_construction_leaves_the_random_state_alone():
    random.seed(3)
    expected = random.random()
    random.seed(3)
    cv.CVConfig(dataset="folder", images_dir="i", masks_dir="m", model="ssr_xu")
    assert random.random() == expected


def test_the_u_net_widths_have_one_name():
    from keras_ssr import demo

    for owner in (models.build_unet, models.get_unet, demo.DemoConfig, cv.CVConfig):
        assert "channels_per_level" in inspect.signature(owner).parameters
