"""The demo's settings: :class:`DemoConfig`, its presets and its checks."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

from keras_ssr._checks import check_int, check_real
from keras_ssr._settings import REGISTER_HINT, legacy_keywords, rename_deprecated
from keras_ssr.demo import data as datasets

__all__ = ["DEFAULTS", "QUICK", "QUICK_SETTINGS", "DemoConfig", "model_label"]  # noqa: F822

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
        channels_per_level: filters per U-Net level, the last the
            bottleneck's (formerly ``channels``).
        learning_rate: Adam's learning rate.
        seed: seed of the data, the weights and the shuffling.
        models: the attention of each U-Net compared, names of
            :func:`keras_ssr.models.attention_names` (``"none"``: the plain
            U-Net), in table order.
        attention_options: per model of ``models``, options of its
            attention layer (``{"multifractal": {"k": 8}}``), checked by
            :func:`keras_ssr.models.attention_options`; the others keep the
            registered defaults. Holds the options that differ from those
            defaults; :meth:`attention_kwargs` gives every option. (The
            former fields ``r`` and ``max_scale`` are still accepted as
            keywords: they set that option of every model that takes it.)
        encoder: ``None`` (the papers' U-Net), or a keras.applications
            encoder name of :func:`keras_ssr.models.encoder_names`: every
            model is then an encoder U-Net (:func:`keras_ssr.models.build_unet`
            with ``encoder``), its attention after the encoder's skip
            features and output, ``r`` chosen per layer unless set;
            ``channels_per_level`` is not used and ``size`` must be divisible
            by 32.
        encoder_options: the encoder's constructor options
            (``{"alpha": 0.35}``), checked by
            :func:`keras_ssr.models.encoder_options`; holds those that differ
            from the defaults, :meth:`encoder_kwargs` gives every option.
        encoder_weights: the encoder's initial weights: ``None`` (random),
            ``"imagenet"`` (downloaded by Keras) or a weights file.
        decoder_channels: the encoder U-Net's decoder filters from full
            resolution, 5 values; ``None``: ``(16, 32, 64, 128, 256)``.
    """

    dataset: str = "textures"
    size: int = 64
    samples: int = 320
    test_samples: int = 128
    epochs: int = 8
    batch_size: int = 16
    channels_per_level: tuple[int, ...] = (8, 16, 32, 64)
    learning_rate: float = 1e-3
    seed: int = 0
    models: tuple[str, ...] = ("none", "ssr")
    attention_options: Mapping[str, Mapping[str, Any]] = dataclasses.field(
        default_factory=dict
    )
    encoder: str | None = None
    encoder_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    encoder_weights: str | None = None
    decoder_channels: tuple[int, ...] | None = None

    def __post_init__(self):
        _validate(self)

    def attention_kwargs(self, name: str) -> dict[str, Any]:
        """Every option of model ``name``'s attention, defaults included (a
        name not among ``models``: the registered defaults)."""
        if name in self._attention_kwargs:
            return dict(self._attention_kwargs[name])
        from keras_ssr.models import attention_options

        return attention_options(name, inserted=self.encoder is not None)

    @property
    def architecture(self) -> str:
        """``"channels [...]"``, or ``"encoder <name>"`` with an encoder."""
        if self.encoder is None:
            return f"channels {list(self.channels_per_level)}"
        return f"encoder {self.encoder}"

    def encoder_kwargs(self) -> dict[str, Any]:
        """Every option of the encoder, defaults included (none without one)."""
        return dict(self._encoder_kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values, ``attention_options`` holding
        every option of every model (:meth:`attention_kwargs`) and
        ``encoder_options`` every option of the encoder."""
        out = dataclasses.asdict(self)
        out["channels_per_level"] = list(self.channels_per_level)
        out["models"] = list(self.models)
        out["attention_options"] = {
            name: kwargs for name, kwargs in self._attention_kwargs.items() if kwargs
        }
        out["encoder_options"] = self.encoder_kwargs()
        if self.decoder_channels is not None:
            out["decoder_channels"] = list(self.decoder_channels)
        return out


#: Former keywords of :class:`DemoConfig` and their new names.
ALIASES = {"channels": "channels_per_level"}
#: Former fields, now attention options, with their defaults then.
LEGACY_OPTIONS = {"r": 2, "max_scale": 3}


def _fold_legacy(values: dict[str, Any]) -> dict[str, Any]:
    """Keywords in today's names: ``channels`` renamed; ``r`` and
    ``max_scale`` set on every model of ``models`` that takes them, as they
    were (options set explicitly win)."""
    values = rename_deprecated(values, ALIASES, "DemoConfig")
    legacy = {key: values.pop(key) for key in LEGACY_OPTIONS if key in values}
    options = values.get("attention_options", {})
    if not legacy or not isinstance(options, Mapping):
        return values
    from keras_ssr.models import attention_options

    warnings.warn(
        f"DemoConfig: {', '.join(f'`{k}`' for k in legacy)} are deprecated: set "
        "them per model in `attention_options`.",
        DeprecationWarning,
        stacklevel=3,
    )
    options = {name: dict(given) for name, given in options.items()}
    for name in values.get("models", DemoConfig.models):
        try:
            taken = attention_options(name)
        except (ValueError, TypeError):
            continue  # the check of `models` names the error
        extra = {k: v for k, v in legacy.items() if k in taken}
        if extra:
            options[name] = {**extra, **options.get(name, {})}
    values["attention_options"] = options
    return values


DemoConfig = legacy_keywords(_fold_legacy, ALIASES)(DemoConfig)


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
        hint = f" {REGISTER_HINT}." if unknown else ""
        raise ValueError(
            f"`models` holds {what}; the names are {known}.{hint} "
            f"Received: models={models!r}"
        )


def _resolve_options(config: DemoConfig) -> None:
    """Checks ``attention_options`` against each model's attention; keeps
    the options that differ from the defaults, all of them for
    :meth:`DemoConfig.attention_kwargs`."""
    from keras_ssr.models import attention_options

    given = config.attention_options
    if not isinstance(given, Mapping) or not all(
        isinstance(options, Mapping) for options in given.values()
    ):
        raise TypeError(
            "`attention_options` must map model names to mappings of option "
            f"names to values. Received: attention_options={given!r}"
        )
    strangers = [name for name in given if name not in config.models]
    if strangers:
        raise ValueError(
            f"`attention_options` sets options of {strangers}, which are not "
            f"among the models {list(config.models)}. Received: "
            f"attention_options={dict(given)!r}"
        )
    inserted = config.encoder is not None
    effective, changed = {}, {}
    for name in config.models:
        effective[name] = attention_options(name, given.get(name), inserted=inserted)
        defaults = attention_options(name, inserted=inserted)
        differing = {
            k: v
            for k, v in effective[name].items()
            if k not in defaults or v != defaults[k]
        }
        if differing:
            changed[name] = differing
    object.__setattr__(config, "attention_options", changed)
    object.__setattr__(config, "_attention_kwargs", effective)


def _check_encoder(config: DemoConfig) -> None:
    """The encoder's name, options, weights and decoder widths; keeps every
    option for :meth:`DemoConfig.encoder_kwargs`."""
    from keras_ssr.models import encoder_options
    from keras_ssr.models.encoders import ENCODER_STRIDE

    if config.encoder is None:
        given = {
            name: getattr(config, name)
            for name in ("encoder_options", "encoder_weights", "decoder_channels")
            if getattr(config, name)
        }
        if given:
            raise ValueError(
                f"{', '.join(f'`{n}`' for n in given)} "
                f"{'belongs' if len(given) == 1 else 'belong'} to an encoder "
                "U-Net: set `encoder` (e.g. mobilenetv2). Received: "
                + ", ".join(f"{n}={v!r}" for n, v in given.items())
            )
        object.__setattr__(config, "_encoder_kwargs", {})
        return
    if not isinstance(config.encoder, str):
        raise TypeError(
            "`encoder` must be None or an encoder name. "
            f"Received: encoder={config.encoder!r}"
        )
    object.__setattr__(config, "encoder", config.encoder.strip().lower())
    effective = encoder_options(config.encoder, config.encoder_options)
    defaults = encoder_options(config.encoder)
    changed = {k: v for k, v in effective.items() if v != defaults[k]}
    object.__setattr__(config, "encoder_options", changed)
    object.__setattr__(config, "_encoder_kwargs", effective)
    if config.encoder_weights is not None and not isinstance(
        config.encoder_weights, str
    ):
        raise TypeError(
            "`encoder_weights` must be None, 'imagenet' or a file path. "
            f"Received: encoder_weights={config.encoder_weights!r}"
        )
    if config.size % ENCODER_STRIDE:
        raise ValueError(
            f"`size` must be divisible by the encoder's stride {ENCODER_STRIDE}. "
            f"Received: size={config.size}, encoder={config.encoder!r}"
        )
    levels = ENCODER_STRIDE.bit_length() - 1
    widths = config.decoder_channels
    if widths is not None and (
        not isinstance(widths, tuple)
        or len(widths) != levels
        or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in widths)
    ):
        raise ValueError(
            f"`decoder_channels` must be a tuple of {levels} positive integers, "
            f"one per 2x upsampling of the encoder's stride {ENCODER_STRIDE}. "
            f"Received: decoder_channels={widths!r}"
        )


def _validate(config: DemoConfig) -> None:
    """Raises ``ValueError``/``TypeError`` for an impossible configuration."""
    if config.dataset not in datasets.DATASETS:
        raise ValueError(
            f"`dataset` must be one of {', '.join(map(repr, datasets.DATASETS))}. "
            f"Received: dataset={config.dataset!r}"
        )
    for name in ("samples", "test_samples", "epochs", "batch_size"):
        _integer(config, name, 1)
    _integer(config, "seed", 0)
    channels = config.channels_per_level
    if (
        not isinstance(channels, tuple)
        or len(channels) < 2
        or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels)
    ):
        raise ValueError(
            "`channels_per_level` must be a tuple of at least two positive "
            f"integers. Received: channels_per_level={channels!r}"
        )
    _integer(config, "size", 16, 128 if config.dataset == "ihc" else None)
    check_real("learning_rate", config.learning_rate, 0.0, open_minimum=True)
    _check_models(config.models)
    _check_encoder(config)
    _resolve_options(config)
    if config.encoder is not None:
        return  # its attention's r is chosen per layer
    factor = 2 ** (len(channels) - 1)
    if config.size % factor:
        raise ValueError(
            f"`size` must be divisible by 2**(levels - 1) = {factor} for "
            f"{len(channels)} levels. Received: size={config.size}"
        )
    for name in config.models:
        r = config.attention_kwargs(name).get("r")
        if isinstance(r, int) and min(channels[:-1]) < r:
            raise ValueError(
                f"Every encoder level needs at least r={r} channels for the "
                f"hidden layer of {name!r}. Received: channels_per_level={channels!r}"
            )


#: ``--quick``'s settings: tiny everything, for tests and smoke checks (seconds).
QUICK_SETTINGS = {
    "size": 32,
    "samples": 16,
    "test_samples": 8,
    "epochs": 1,
    "batch_size": 8,
    "channels_per_level": (4, 8, 16),
}


def __getattr__(name: str):
    """``DEFAULTS`` (the default run; timings per backend: docs/demo.md,
    "Timing") and ``QUICK`` (``--quick``), made on first use: a
    :class:`DemoConfig` checks its options against the attention registry,
    which loads Keras, and ``keras-ssr demo --help`` reads this module."""
    if name not in ("DEFAULTS", "QUICK"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = DemoConfig() if name == "DEFAULTS" else DemoConfig(**QUICK_SETTINGS)
    globals()[name] = value
    return value
