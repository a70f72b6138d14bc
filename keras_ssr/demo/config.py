"""The demo's settings: :class:`DemoConfig`, its presets and its checks."""

from __future__ import annotations

import dataclasses

from keras_ssr._checks import MAX_SCALE_LIMIT, check_int, check_real
from keras_ssr.demo import data as datasets

__all__ = ["DEFAULTS", "QUICK", "DemoConfig", "model_label"]

#: Momentum of every BatchNormalization during the demo. The models' own
#: 0.99 (the original's) needs thousands of steps before the moving
#: statistics that inference uses catch up with the weights; the demo trains
#: for a few hundred, so every model gets 0.9.
DEMO_BN_MOMENTUM = 0.9
#: Decision threshold of the held-out scores.
THRESHOLD = 0.5
#: Table labels of the registered attention names; others get "<name>-U-Net".
MODEL_LABELS = {
    "none": "U-Net",
    "ssr": "SSR-U-Net",
    "ssr_xu": "SSR-Xu-U-Net",
    "se": "SE-U-Net",
    "mono": "Mono-U-Net",
    "multifractal": "Multifractal-U-Net",
    "scse": "scSE-U-Net",
    "srm": "SRM-U-Net",
    "fca": "FCA-U-Net",
}


def model_label(name: str) -> str:
    """The table's name of the U-Net with attention ``name``."""
    return MODEL_LABELS.get(name, f"{name}-U-Net")


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
        r: reduction ratio of the attention layers that take one.
        max_scale: dyadic scales of the layers that take them (SSR, Mono,
            Multifractal).
        models: the attention of each U-Net compared, names of
            :func:`keras_ssr.models.attention_names` (``"none"``: the plain
            U-Net), in table order.
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
    models: tuple[str, ...] = ("none", "ssr")  # built-ins: see _check_models

    def __post_init__(self):
        _validate(self)


def _integer(config, name, minimum, maximum=None):
    check_int(name, getattr(config, name), minimum, maximum)


def _check_models(models) -> None:
    if models == DemoConfig.models:
        # Built-in names, always registered: looking them up would load Keras
        # when this module makes DEFAULTS (and `keras-ssr demo --help` reads it).
        return
    from keras_ssr.models import attention_names

    known = attention_names()
    if (
        not isinstance(models, tuple)
        or not models
        or any(not isinstance(m, str) for m in models)
    ):
        raise ValueError(
            "`models` must be a non-empty tuple of attention names among "
            f"{known}. Received: models={models!r}"
        )
    unknown = [m for m in models if m not in known]
    if unknown or len(set(models)) != len(models):
        what = f"unknown {unknown}" if unknown else "repeated names"
        raise ValueError(
            f"`models` holds {what}; the names are {known}. Received: models={models!r}"
        )


def _validate(config: DemoConfig) -> None:
    """Raises ``ValueError``/``TypeError`` for an impossible configuration."""
    if config.dataset not in datasets.DATASETS:
        raise ValueError(
            f"`dataset` must be one of {', '.join(map(repr, datasets.DATASETS))}. "
            f"Received: dataset={config.dataset!r}"
        )
    for name in ("samples", "test_samples", "epochs", "batch_size", "r"):
        _integer(config, name, 1)
    _integer(config, "seed", 0)
    _integer(config, "max_scale", 2, MAX_SCALE_LIMIT)
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
            f"attention's hidden layer. Received: channels={channels!r}"
        )
    _integer(config, "size", 16, 128 if config.dataset == "ihc" else None)
    factor = 2 ** (len(channels) - 1)
    if config.size % factor:
        raise ValueError(
            f"`size` must be divisible by 2**(levels - 1) = {factor} for "
            f"{len(channels)} levels. Received: size={config.size}"
        )
    check_real("learning_rate", config.learning_rate, 0.0, open_minimum=True)
    _check_models(config.models)


#: The default run (about a minute on 2 CPU cores, TensorFlow).
DEFAULTS = DemoConfig()
#: ``--quick``: tiny everything, for tests and smoke checks (seconds).
QUICK = DemoConfig(
    size=32, samples=16, test_samples=8, epochs=1, batch_size=8, channels=(4, 8, 16)
)
