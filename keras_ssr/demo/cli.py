"""The ``keras-ssr demo`` command line: options, and the run from parsed options."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from keras_ssr import _settings
from keras_ssr.demo import data as datasets
from keras_ssr.demo.config import QUICK_SETTINGS, DemoConfig
from keras_ssr.demo.runner import run_demo
from keras_ssr.demo.training import UnbuildableModelError

__all__ = ["add_arguments", "config_from_args", "run_from_args"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _channels(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 8,16,32,64, got {text!r}"
        ) from None
    if len(values) < 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected at least two positive integers, got {text!r}"
        )
    return values


def _models(text: str) -> tuple[str, ...]:
    """``none,ssr,se`` (or ``all``) as a tuple; the names are checked once
    ``--import`` has run (:class:`DemoConfig`)."""
    names = tuple(v.strip().lower() for v in text.split(",") if v.strip())
    if not names:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated attention names or 'all', got {text!r}"
        )
    return names


def _attention_options(assigned) -> dict[str, dict]:
    """``{"multifractal.k": 8}`` (from ``--attention-option``) as
    ``{"multifractal": {"k": 8}}``."""
    options: dict[str, dict] = {}
    for key, value in (assigned or {}).items():
        model, dot, option = key.partition(".")
        if not dot or not model or not option:
            raise ValueError(
                "--attention-option takes MODEL.KEY=VALUE in the demo, the model "
                f"one of --models (e.g. multifractal.k=8). Received: {key}={value!r}"
            )
        options.setdefault(model.strip().lower(), {})[option.strip()] = value
    return options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``demo`` options to an ``argparse`` (sub-)parser."""
    parser.add_argument(
        "--output",
        "-o",
        default="keras-ssr-demo",
        help="folder for results.csv, results.json and the PNG figures "
        "(default keras-ssr-demo)",
    )
    parser.add_argument(
        "--dataset",
        choices=datasets.DATASETS,
        default=DemoConfig.dataset,
        help="textures: synthetic, objects differ only in regularity; "
        "ihc: scikit-image's immunohistochemistry slide, DAB masks "
        f"(default {DemoConfig.dataset})",
    )
    parser.add_argument(
        "--models",
        type=_models,
        help="the U-Nets compared, by attention name, comma-separated, in table "
        "order: none (plain U-Net), se, ssr, ssr_xu, mono, multifractal, scse, "
        f"srm, fca..., or all (default {','.join(DemoConfig.models)})",
    )
    parser.add_argument(
        "--attention-option",
        dest="attention_options",
        action=_settings.SetOption,
        type=_settings.assignment,
        metavar="MODEL.KEY=VALUE",
        help="an option of one model's attention layer, e.g. multifractal.k=8 or "
        "fca.basis=dct (keras_ssr.models.attention_options lists them); "
        "repeatable, the value a TOML literal; unset ones keep the registered "
        "defaults",
    )
    _settings.add_import_argument(parser)
    parser.add_argument(
        "--encoder",
        metavar="NAME",
        help="every model an encoder U-Net on this keras.applications encoder "
        "(mobilenetv2, resnet50, efficientnetb0, convnexttiny, ...; "
        "keras_ssr.models.encoder_names lists them), its attention after the "
        "encoder's skip features and output; --size divisible by 32 "
        "(default: the papers' U-Net)",
    )
    parser.add_argument(
        "--encoder-option",
        dest="encoder_options",
        action=_settings.SetOption,
        type=_settings.assignment,
        metavar="KEY=VALUE",
        help="an option of the encoder, e.g. alpha=0.35 for mobilenetv2 "
        "(keras_ssr.models.encoder_options lists them); repeatable, the value a "
        "TOML literal",
    )
    parser.add_argument(
        "--encoder-weights",
        metavar="WEIGHTS",
        help="the encoder's initial weights: imagenet (downloaded by Keras) or a "
        "weights file (default: random)",
    )
    parser.add_argument(
        "--decoder-channels",
        type=_channels,
        metavar="C,...",
        help="with --encoder: the decoder's filters from full resolution, 5 "
        "values (default 16,32,64,128,256)",
    )
    parser.add_argument(
        "--epochs", type=_positive_int, help=f"(default {DemoConfig.epochs})"
    )
    parser.add_argument(
        "--size",
        type=_positive_int,
        help=f"image side, divisible by 2**(levels-1) (default {DemoConfig.size})",
    )
    parser.add_argument(
        "--samples",
        type=_positive_int,
        help=f"training images (default {DemoConfig.samples})",
    )
    parser.add_argument(
        "--test-samples",
        type=_positive_int,
        help=f"held-out images (default {DemoConfig.test_samples})",
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, help=f"(default {DemoConfig.batch_size})"
    )
    parser.add_argument(
        "--channels-per-level",
        "--channels",
        dest="channels_per_level",
        type=_channels,
        help="filters per level, comma-separated "
        f"(default {','.join(map(str, DemoConfig.channels_per_level))}; "
        "--channels: its former name)",
    )
    parser.add_argument(
        "--learning-rate", type=float, help=f"Adam (default {DemoConfig.learning_rate})"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DemoConfig.seed,
        help=f"seed of the data, weights and shuffling (default {DemoConfig.seed})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny everything for smoke tests: {size}px, {samples} images, "
        "{epochs} epoch, channels {channels} (explicit options still win)".format(
            **QUICK_SETTINGS,
            channels=",".join(map(str, QUICK_SETTINGS["channels_per_level"])),
        ),
    )
    parser.add_argument(
        "--no-figures",
        dest="figures",
        action="store_false",
        help="skip the PNG figures (no matplotlib needed)",
    )
    parser.add_argument(
        "--run-eagerly",
        action="store_true",
        help="no tf.function/jax.jit compilation (faster for tiny smoke runs "
        "on TensorFlow, slower on JAX)",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        help="Keras fit verbosity (default: 1 on a terminal, else 2)",
    )


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """The :class:`DemoConfig` of parsed options (``--quick`` or defaults + flags).

    Raises:
        ValueError, TypeError: for an impossible configuration (a model or
            an attention option included).
    """
    from keras_ssr.demo.config import DEFAULTS, QUICK
    from keras_ssr.models import attention_names

    base = QUICK if args.quick else DEFAULTS
    if args.encoder is not None and args.channels_per_level is not None:
        raise ValueError(
            "--channels-per-level sets the papers' U-Net; with --encoder the "
            "decoder's widths are --decoder-channels. Received: "
            f"--channels-per-level {','.join(map(str, args.channels_per_level))}"
        )
    models = args.models
    if models == ("all",):
        models = tuple(attention_names())
    overrides = {
        "dataset": args.dataset,
        "seed": args.seed,
        "epochs": args.epochs,
        "size": args.size,
        "samples": args.samples,
        "test_samples": args.test_samples,
        "batch_size": args.batch_size,
        "channels_per_level": args.channels_per_level,
        "learning_rate": args.learning_rate,
        "models": models,
        "attention_options": _attention_options(args.attention_options) or None,
        "encoder": args.encoder,
        "encoder_options": args.encoder_options,
        "encoder_weights": args.encoder_weights,
        "decoder_channels": args.decoder_channels,
    }
    return dataclasses.replace(
        base, **{k: v for k, v in overrides.items() if v is not None}
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Runs the demo from parsed arguments; returns the exit status.

    An impossible configuration (bad sizes, a model that cannot be built
    with them) or a missing optional dependency prints one line on standard
    error and returns 2.
    """
    try:
        _settings.import_modules(args.imports)
        config = config_from_args(args)
    except (ValueError, TypeError, ImportError) as error:
        print(f"keras-ssr demo: error: {error}", file=sys.stderr)
        return 2
    try:
        run_demo(
            config,
            args.output,
            verbose="auto" if args.verbose is None else args.verbose,
            figures=args.figures,
            run_eagerly=args.run_eagerly,
        )
    except (ImportError, UnbuildableModelError) as error:
        print(f"keras-ssr demo: error: {error}", file=sys.stderr)
        return 2
    return 0
