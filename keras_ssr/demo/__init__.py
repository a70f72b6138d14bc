"""``keras-ssr demo``: U-Net and SSR-U-Net, side by side, on built-in data.

Trains both models with the same data, loss (``0.5 BCE + 0.5 soft Dice``),
optimiser and seed, scores them on held-out images, prints a table, and
writes it as ``results.csv`` and ``results.json`` next to the figures
``singularity_maps.png`` (SSR-U-Net: feature maps per depth and their
singularity-strength maps), ``singularity_maps_unet.png`` (the same for the
U-Net) and ``predictions.png``.

The data need no download (:mod:`keras_ssr.demo.data`): ``textures``
(default) are synthetic images whose objects differ from the background only
in local regularity; ``ihc`` are patches of the immunohistochemistry slide
that scikit-image ships, with classical DAB-stain masks.

Run it as ``keras-ssr demo`` (see ``keras-ssr demo --help``) or call
:func:`run_demo`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import time
from typing import Any

import numpy as np

from keras_ssr.demo import data as datasets

__all__ = [
    "DEFAULTS",
    "QUICK",
    "DemoConfig",
    "add_arguments",
    "dice_and_iou",
    "format_table",
    "load_demo_data",
    "run_demo",
    "run_from_args",
]

#: Momentum of every BatchNormalization during the demo. The models' own
#: 0.99 (the original's) needs thousands of steps before the moving
#: statistics that inference uses catch up with the weights; the demo trains
#: for a few hundred, so both models get 0.9.
DEMO_BN_MOMENTUM = 0.9
THRESHOLD = 0.5
MODEL_LABELS = {"unet": "U-Net", "ssr_unet": "SSR-U-Net"}


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Everything that defines one demo run.

    Attributes:
        dataset: ``"textures"`` or ``"ihc"``.
        size: image side in pixels (divisible by ``2 ** (levels - 1)``).
        samples: number of training images.
        test_samples: number of held-out images (``ihc``: at most the
            patches of its held-out blocks).
        epochs: training epochs.
        batch_size: training batch size.
        channels: filters per U-Net level, the last the bottleneck's.
        learning_rate: Adam's learning rate.
        seed: seed of the data, the weights and the shuffling.
        r: SSR reduction ratio.
        max_scale: SSR dyadic scales.
    """

    dataset: str = "textures"
    size: int = 64
    samples: int = 320
    test_samples: int = 128
    epochs: int = 8
    batch_size: int = 16
    channels: tuple[int, ...] = (8, 16, 32, 64)
    learning_rate: float = 1e-3
    seed: int = 0
    r: int = 2
    max_scale: int = 3

    def __post_init__(self):
        _validate(self)


def _validate(config: DemoConfig) -> None:
    """Raises ``ValueError``/``TypeError`` for an impossible configuration."""

    def integer(name, minimum, maximum=None):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"`{name}` must be an integer. Received: {name}={value!r}")
        if value < minimum or (maximum is not None and value > maximum):
            bounds = (
                f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            )
            raise ValueError(f"`{name}` must be {bounds}. Received: {name}={value!r}")

    if config.dataset not in datasets.DATASETS:
        raise ValueError(
            f"`dataset` must be one of {', '.join(map(repr, datasets.DATASETS))}. "
            f"Received: dataset={config.dataset!r}"
        )
    for name in ("samples", "test_samples", "epochs", "batch_size", "r"):
        integer(name, 1)
    integer("seed", 0)
    integer("max_scale", 2, 16)
    channels = config.channels
    if (
        not isinstance(channels, tuple)
        or len(channels) < 2
        or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels)
    ):
        raise ValueError(
            "`channels` must be a tuple of at least two positive integers. "
            f"Received: channels={channels!r}"
        )
    if min(channels[:-1]) < config.r:
        raise ValueError(
            f"Every encoder level needs at least r={config.r} channels for the "
            f"SSR's hidden layer. Received: channels={channels!r}"
        )
    integer("size", 16, 128 if config.dataset == "ihc" else None)
    factor = 2 ** (len(channels) - 1)
    if config.size % factor:
        raise ValueError(
            f"`size` must be divisible by 2**(levels - 1) = {factor} for "
            f"{len(channels)} levels. Received: size={config.size}"
        )
    rate = config.learning_rate
    if (
        isinstance(rate, bool)
        or not isinstance(rate, (int, float))
        or not 0 < rate < float("inf")
    ):
        raise ValueError(
            "`learning_rate` must be a positive finite number. "
            f"Received: learning_rate={rate!r}"
        )


#: The default run (under 5 minutes on 2 CPU cores).
DEFAULTS = DemoConfig()
#: ``--quick``: tiny everything, for tests and smoke checks (seconds).
QUICK = DemoConfig(
    size=32, samples=16, test_samples=8, epochs=1, batch_size=8, channels=(4, 8, 16)
)


# --------------------------------------------------------------------------
# Data


def _dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th of the 8 rotations/reflections of ``(N, H, W, C)``."""
    out = np.rot90(image, k % 4, axes=(1, 2))
    return out[:, :, ::-1] if k >= 4 else out


def load_demo_data(
    dataset: str, size: int, samples: int, test_samples: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and held-out splits of a built-in data set.

    ``textures``: ``samples + test_samples`` images of
    :func:`~keras_ssr.demo.data.make_texture_dataset`, the first ``samples``
    for training. ``ihc``: the train-block patches of
    :func:`~keras_ssr.demo.data.load_ihc_patches`, repeated under the 8
    rotations/reflections (shuffled by ``seed``) up to ``samples``, and the
    first ``test_samples`` held-out-block patches.

    Returns:
        ``(x_train, y_train, x_test, y_test)``, float32 NumPy arrays.

    Raises:
        ValueError: for an unknown ``dataset`` or bad sizes.
    """
    if dataset not in datasets.DATASETS:
        raise ValueError(
            f"`dataset` must be one of {', '.join(map(repr, datasets.DATASETS))}. "
            f"Received: dataset={dataset!r}"
        )
    for name, value in (("samples", samples), ("test_samples", test_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"`{name}` must be an integer >= 1. Received: {name}={value!r}"
            )
    if dataset == "textures":
        x, y = datasets.make_texture_dataset(samples + test_samples, size, seed)
        return x[:samples], y[:samples], x[samples:], y[samples:]
    x_train, y_train = datasets.load_ihc_patches(size, split="train")
    x_test, y_test = datasets.load_ihc_patches(size, split="test")
    rng = np.random.default_rng(seed)
    pairs = [(n, k) for k in range(8) for n in range(len(x_train))]
    order = rng.permutation(len(pairs))
    picked = [pairs[i] for i in order[: min(samples, len(pairs))]]
    xs = np.stack([_dihedral(x_train[n : n + 1], k)[0] for n, k in picked])
    ys = np.stack([_dihedral(y_train[n : n + 1], k)[0] for n, k in picked])
    return xs, ys, x_test[:test_samples], y_test[:test_samples]


# --------------------------------------------------------------------------
# Scores


def dice_and_iou(
    masks: np.ndarray, probabilities: np.ndarray, threshold: float = THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Dice and IoU of thresholded predictions, in NumPy.

    ``p = probabilities >= threshold`` and ``g = masks >= 0.5``; per image,
    ``Dice = 2 |p & g| / (|p| + |g|)`` and ``IoU = |p & g| / |p | g|``,
    both 1 when prediction and mask are both empty.

    Args:
        masks: ground truth ``(N, ...)``.
        probabilities: predictions of the same shape.
        threshold: decision threshold in ``[0, 1]``.

    Returns:
        ``(dice, iou)``: float64 arrays of shape ``(N,)``.

    Raises:
        ValueError: if the shapes differ or ``threshold`` is out of range.

    Example:
        >>> g = np.array([[1, 1, 0, 0]])
        >>> dice_and_iou(g, np.array([[0.9, 0.2, 0.7, 0.1]]))
        (array([0.5]), array([0.33333333]))
    """
    masks, probabilities = np.asarray(masks), np.asarray(probabilities)
    if masks.shape != probabilities.shape or masks.ndim < 1:
        raise ValueError(
            "`masks` and `probabilities` must have the same shape (N, ...). "
            f"Received: masks.shape={masks.shape}, "
            f"probabilities.shape={probabilities.shape}"
        )
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(
            f"`threshold` must be in [0, 1]. Received: threshold={threshold!r}"
        )
    axes = tuple(range(1, masks.ndim))
    predicted = probabilities >= threshold
    truth = masks >= 0.5
    intersection = np.sum(predicted & truth, axis=axes).astype(np.float64)
    total = np.sum(predicted, axis=axes) + np.sum(truth, axis=axes)
    union = np.sum(predicted | truth, axis=axes).astype(np.float64)
    empty = total == 0
    dice = np.where(empty, 1.0, 2.0 * intersection / np.maximum(total, 1))
    iou = np.where(empty, 1.0, intersection / np.maximum(union, 1))
    return dice, iou


def format_table(rows: list[dict[str, Any]]) -> str:
    """The printed results table (one row per model).

    Args:
        rows: dicts with ``model``, ``params``, ``train_seconds``,
            ``dice_mean``, ``dice_std``, ``iou_mean``, ``iou_std`` (per
            image), ``dice_pooled`` and ``iou_pooled`` (all held-out pixels
            together).

    Returns:
        The table as a string, no trailing newline.
    """
    header = (
        "model",
        "params",
        "train s",
        "Dice per image",
        "IoU per image",
        "Dice pooled",
        "IoU pooled",
    )
    lines = [
        (
            row["model"],
            f"{row['params']:,}",
            f"{row['train_seconds']:.1f}",
            f"{row['dice_mean']:.3f} ± {row['dice_std']:.3f}",
            f"{row['iou_mean']:.3f} ± {row['iou_std']:.3f}",
            f"{row['dice_pooled']:.3f}",
            f"{row['iou_pooled']:.3f}",
        )
        for row in rows
    ]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]

    def fmt(cells):
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest])

    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *map(fmt, lines)])


# --------------------------------------------------------------------------
# Training


def _set_bn_momentum(model, momentum: float) -> None:
    import keras

    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def _held_out_callback(x_test, y_test, batch_size, history: list):
    import keras

    class HeldOutDice(keras.callbacks.Callback):
        """Adds the held-out Dice to the epoch's logs (shown by ``fit``)."""

        def on_epoch_end(self, epoch, logs=None):
            probabilities = self.model.predict(x_test, batch_size=batch_size, verbose=0)
            dice, _ = dice_and_iou(y_test, probabilities)
            history.append(float(dice.mean()))
            if logs is not None:
                logs["held_out_dice"] = float(dice.mean())

    return HeldOutDice()


def _build(kind: str, config: DemoConfig, input_shape):
    from keras_ssr import models

    if kind == "unet":
        return models.get_unet(list(config.channels), input_shape=list(input_shape))
    return models.get_ssr_unet(
        list(config.channels),
        r=config.r,
        max_scale=config.max_scale,
        input_shape=list(input_shape),
    )


def _train_and_score(
    kind, config, data, verbose, log, run_eagerly=False
) -> tuple[dict, Any]:
    import keras

    from keras_ssr.losses import BCEDiceLoss

    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(config.seed)
    model = _build(kind, config, x_train.shape[1:])
    _set_bn_momentum(model, DEMO_BN_MOMENTUM)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=BCEDiceLoss(alpha=0.5),
        run_eagerly=run_eagerly,
    )
    label = MODEL_LABELS[kind]
    log(f"\nTraining {label} ({model.count_params():,} parameters)")
    history: list[float] = []
    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        batch_size=config.batch_size,
        epochs=config.epochs,
        shuffle=True,
        verbose=verbose,
        callbacks=[_held_out_callback(x_test, y_test, config.batch_size, history)],
    )
    seconds = time.perf_counter() - start
    probabilities = model.predict(x_test, batch_size=config.batch_size, verbose=0)
    dice, iou = dice_and_iou(y_test, probabilities)
    pooled_dice, pooled_iou = dice_and_iou(
        y_test.reshape(1, -1), probabilities.reshape(1, -1)
    )
    row = {
        "model": label,
        "params": int(model.count_params()),
        "train_seconds": round(seconds, 2),
        "dice_mean": float(dice.mean()),
        "dice_std": float(dice.std()),
        "iou_mean": float(iou.mean()),
        "iou_std": float(iou.std()),
        "dice_pooled": float(pooled_dice[0]),
        "iou_pooled": float(pooled_iou[0]),
        "held_out_dice_per_epoch": [round(v, 4) for v in history],
    }
    return row, (model, probabilities)


def _predictions_figure(x_test, y_test, predictions, path, count=4):
    from keras_ssr.plot import _display_image, _import_matplotlib

    Figure, FigureCanvasAgg = _import_matplotlib()
    count = min(count, len(x_test))
    columns = ["input", "mask", *predictions]
    figure = Figure(
        figsize=(2.0 * len(columns), 2.0 * count + 0.3), layout="constrained"
    )
    FigureCanvasAgg(figure)
    grid = figure.subplots(count, len(columns), squeeze=False)
    for i in range(count):
        shown, cmap = _display_image(x_test[i])
        grid[i, 0].imshow(shown, cmap=cmap, interpolation="nearest")
        grid[i, 1].imshow(y_test[i, ..., 0], cmap="gray", vmin=0, vmax=1)
        for j, probabilities in enumerate(predictions.values(), start=2):
            grid[i, j].imshow(
                probabilities[i, ..., 0] >= THRESHOLD, cmap="gray", vmin=0, vmax=1
            )
    for j, name in enumerate(columns):
        grid[0, j].set_title(name, fontsize=9)
    for axis in grid.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    figure.savefig(path, dpi=100, format="png")


def run_demo(
    config: DemoConfig = DEFAULTS,
    output: str | os.PathLike = "keras-ssr-demo",
    *,
    verbose: int | str = "auto",
    figures: bool = True,
    run_eagerly: bool = False,
    log=print,
) -> dict[str, Any]:
    """Trains U-Net and SSR-U-Net on built-in data; writes table and figures.

    Args:
        config: the run's settings (:data:`DEFAULTS`, :data:`QUICK` or your
            own :class:`DemoConfig`).
        output: folder for ``results.csv``, ``results.json`` and the PNG
            figures (created if needed).
        verbose: ``model.fit``'s verbosity; ``"auto"`` is 1 (progress bars)
            on a terminal, else 2 (one line per epoch).
        figures: whether to draw the figures (needs matplotlib).
        run_eagerly: compile the models with ``run_eagerly`` (no
            ``tf.function``/``jax.jit`` tracing: slower steps, no compile
            time; for tiny smoke runs).
        log: where the table and messages go (``print`` by default).

    Returns:
        The content of ``results.json``: ``config``, ``backend``, ``rows``
        (one dict per model), ``table`` (the printed text), ``files``
        and ``total_seconds``.

    Raises:
        ValueError: for an invalid configuration.
        ImportError: if ``figures`` and matplotlib is missing, or the
            ``ihc`` data set and scikit-image is missing.
    """
    import keras

    start = time.perf_counter()
    if not isinstance(config, DemoConfig):
        raise TypeError(f"`config` must be a DemoConfig. Received: config={config!r}")
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    if figures:
        from keras_ssr.plot import _import_matplotlib

        _import_matplotlib()  # fail before training, not after
    output = os.fspath(output)
    os.makedirs(output, exist_ok=True)

    data = load_demo_data(
        config.dataset, config.size, config.samples, config.test_samples, config.seed
    )
    x_train, _, x_test, y_test = data
    backend = keras.backend.backend()
    log(
        f"keras-ssr demo: dataset {config.dataset!r}, {config.size}x{config.size} "
        f"images, {len(x_train)} for training, {len(x_test)} held out; "
        f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}; "
        f"channels {list(config.channels)}; Keras {keras.__version__} on {backend}"
    )
    rows, trained = [], {}
    for kind in ("unet", "ssr_unet"):
        row, trained[kind] = _train_and_score(
            kind, config, data, verbose, log, run_eagerly
        )
        rows.append(row)

    table = format_table(rows)
    files = {
        "csv": os.path.join(output, "results.csv"),
        "json": os.path.join(output, "results.json"),
    }
    if figures:
        from keras_ssr.plot import singularity_maps

        index = int(np.argmax(y_test.reshape(len(y_test), -1).mean(axis=1) > 0.05))
        for kind, filename in (
            ("ssr_unet", "singularity_maps.png"),
            ("unet", "singularity_maps_unet.png"),
        ):
            files[f"figure_{kind}"] = os.path.join(output, filename)
            singularity_maps(
                trained[kind][0],
                x_test[index],
                y_test[index],
                title=f"{MODEL_LABELS[kind]}, held-out image {index} "
                f"({config.dataset}): feature maps (top) and their "
                "singularity strength (bottom)",
                path=files[f"figure_{kind}"],
            )
        files["predictions"] = os.path.join(output, "predictions.png")
        _predictions_figure(
            x_test,
            y_test,
            {MODEL_LABELS[k]: trained[k][1] for k in ("unet", "ssr_unet")},
            files["predictions"],
        )

    columns = [
        "model",
        "params",
        "train_seconds",
        "dice_mean",
        "dice_std",
        "iou_mean",
        "iou_std",
        "dice_pooled",
        "iou_pooled",
    ]
    with open(files["csv"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    result = {
        "config": dataclasses.asdict(config),
        "backend": backend,
        "keras": keras.__version__,
        "bn_momentum": DEMO_BN_MOMENTUM,
        "threshold": THRESHOLD,
        "rows": rows,
        "table": table,
        "files": files,
        "total_seconds": round(time.perf_counter() - start, 2),
    }
    with open(files["json"], "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")

    log(
        "\nHeld-out scores, threshold 0.5 (per image: mean ± std over the "
        "held-out images; pooled: all their pixels together):\n"
    )
    log(table)
    log("")
    for name, path in files.items():
        log(f"{name:>18}: {path}")
    return result


# --------------------------------------------------------------------------
# Command line


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
        default=DEFAULTS.dataset,
        help="textures: synthetic, objects differ only in regularity; "
        "ihc: scikit-image's immunohistochemistry slide, DAB masks "
        f"(default {DEFAULTS.dataset})",
    )
    parser.add_argument(
        "--epochs", type=_positive_int, help=f"(default {DEFAULTS.epochs})"
    )
    parser.add_argument(
        "--size",
        type=_positive_int,
        help=f"image side, divisible by 2**(levels-1) (default {DEFAULTS.size})",
    )
    parser.add_argument(
        "--samples",
        type=_positive_int,
        help=f"training images (default {DEFAULTS.samples})",
    )
    parser.add_argument(
        "--test-samples",
        type=_positive_int,
        help=f"held-out images (default {DEFAULTS.test_samples})",
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, help=f"(default {DEFAULTS.batch_size})"
    )
    parser.add_argument(
        "--channels",
        type=_channels,
        help="filters per level, comma-separated "
        f"(default {','.join(map(str, DEFAULTS.channels))})",
    )
    parser.add_argument(
        "--learning-rate", type=float, help=f"Adam (default {DEFAULTS.learning_rate})"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULTS.seed,
        help=f"seed of the data, weights and shuffling (default {DEFAULTS.seed})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny everything for smoke tests: {QUICK.size}px, {QUICK.samples} "
        f"images, {QUICK.epochs} epoch, channels {','.join(map(str, QUICK.channels))} "
        "(explicit options still win)",
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


def _config_from_args(args: argparse.Namespace) -> DemoConfig:
    base = QUICK if args.quick else DEFAULTS
    overrides = {
        "dataset": args.dataset,
        "seed": args.seed,
        "epochs": args.epochs,
        "size": args.size,
        "samples": args.samples,
        "test_samples": args.test_samples,
        "batch_size": args.batch_size,
        "channels": args.channels,
        "learning_rate": args.learning_rate,
    }
    return dataclasses.replace(
        base, **{k: v for k, v in overrides.items() if v is not None}
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Runs the demo from parsed arguments; returns the exit status.

    An impossible configuration (bad sizes) or a missing optional
    dependency prints one line on standard error and returns 2.
    """
    try:
        config = _config_from_args(args)
    except (ValueError, TypeError) as error:
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
    except ImportError as error:
        print(f"keras-ssr demo: error: {error}", file=sys.stderr)
        return 2
    return 0
