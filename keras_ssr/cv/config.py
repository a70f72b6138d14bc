"""The configuration of a cross-validation run: :class:`CVConfig`.

Every field is declared once, with :func:`setting`: its default, its help
text, the table it belongs to in a config file, and how it is checked. The
command-line flags (:mod:`keras_ssr.cv.cli`), the class documentation and the
reference table of ``docs/cross_validation.md`` are generated from these
declarations, so a default or a help text is never written twice.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keras_ssr import _checks, _settings
from keras_ssr._checks import LOSS_NAMES
from keras_ssr.cv.fields import (
    SECTIONS,
    aliases_of,
    check_field,
    default_of,
    renamed_values,
    setting,
    shown,
)

__all__ = [
    "DATASETS",
    "SECTIONS",
    "CVConfig",
    "config_reference",
    "model_names",
    "setting",
]

#: Dataset kinds and the configuration fields (paths) each one needs.
DATASETS = {
    "kvasir": ("data_root",),
    "isic": ("x_path", "y_path"),
    "folder": ("images_dir", "masks_dir"),
    "busi": ("busi_root",),
}
OPTIMIZERS = ("adam", "sgd")
AUGMENTATIONS = ("none", "flips")
#: Metric sets: ``keras_ssr.metrics.segmentation_metrics`` (the SSR paper's:
#: batch Dice, IoU of both classes) and ``per_image_segmentation_metrics``
#: (the follow-up's: per-image Dice, foreground IoU).
METRIC_SETS = ("batch", "per_image")
#: The metric sets' former names (by the paper that used each), still read.
RENAMED_METRIC_SETS = {"paper": "batch", "followup": "per_image"}
#: Protocol presets: field values that replace the defaults (a config file
#: and flags still win over them). ``"paper"`` is the SSR paper's, the
#: defaults themselves; ``"followup"`` is that of the authors' follow-up
#: (multifractal recalibration): 5 folds, 400 epochs, the unshuffled training
#: set flipped at random every epoch, per-image Dice and foreground IoU.
PROTOCOLS = {
    "paper": {},
    "followup": {
        "folds": 5,
        "epochs": 400,
        "shuffle": False,
        "augment": "flips",
        "metrics": "per_image",
    },
}
#: Protocol values that hold for one dataset only: the follow-up's BUSI
#: scripts hold out 20 % of each training fold (its other scripts 10 %).
DATASET_PROTOCOLS = {("followup", "busi"): {"val_fraction": 0.2}}
#: The seed of the follow-up's stratified BUSI splits (``random_state=42``).
BUSI_RANDOM_STATE = 42
#: Model names besides the attention names of :func:`keras_ssr.models.build_unet`.
MODEL_ALIASES = {"ssr_unet": "ssr", "unet": None}
#: Fields that say where a run goes, not what it computes: ignored when a
#: saved configuration is compared with the current one.
LOCATION_FIELDS = ("output_dir", "name")
#: The former fields ``r`` and ``max_scale``, with their defaults: still read
#: (from files, flags and keywords, deprecated) and applied to the attention
#: when it takes them, as they were; now they are ``attention_options``.
LEGACY_OPTIONS = {"r": 2, "max_scale": 3}


def model_names() -> list[str]:
    """The accepted ``model`` names: ``"ssr_unet"``, ``"unet"`` and the
    attention names registered with :func:`keras_ssr.models.register_attention`
    (``"none"``, ``"se"``, ``"ssr"``, ``"ssr_xu"``, ...)."""
    from keras_ssr import models

    return [
        *MODEL_ALIASES,
        *(n for n in models.attention_names() if n not in MODEL_ALIASES),
    ]


def attention_of(model: str) -> str | None:
    """The attention name of a ``model`` name (``None``: a plain U-Net)."""
    name = model.strip().lower() if isinstance(model, str) else model
    return MODEL_ALIASES.get(name, name)


def _jsonable(value):
    """``value`` as JSON gives it back: tuples as lists, recursively."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _attention_options(model: str, options, config=None) -> dict[str, Any]:
    """Every option of ``model``'s attention layer, checked
    (:func:`keras_ssr.models.attention_options`); in an encoder U-Net, ``r``
    only when set (otherwise each layer's from its channels)."""
    from keras_ssr import models

    attention = attention_of(model)
    if attention is None and options:
        raise ValueError(
            f"model={model!r} has no attention layer, so it takes no attention "
            f"options. Received: attention_options={dict(options)!r}"
        )
    encoder = getattr(config, "encoder", None)
    return models.attention_options(attention, options, inserted=encoder is not None)


def _decoder_attention_options(name, options, config=None) -> dict[str, Any]:
    """Every option of the decoder's attention layer (``r`` only when set)."""
    from keras_ssr import models

    if name is None and options:
        raise ValueError(
            "`decoder_attention` is none, so it takes no options. Received: "
            f"decoder_attention_options={dict(options)!r}"
        )
    return models.attention_options(name, options, inserted=True)


def _encoder_options(encoder, options, config=None) -> dict[str, Any]:
    """Every option of the encoder (:func:`keras_ssr.models.encoder_options`)."""
    from keras_ssr import models

    if encoder is None and options:
        raise ValueError(
            "`encoder` is none (the papers' U-Net), so it takes no encoder options. "
            f"Received: encoder_options={dict(options)!r}"
        )
    return models.encoder_options(encoder, options)


def _encoder_names() -> list[str]:
    from keras_ssr import models

    return models.encoder_names()


def _decoder_attention_names() -> list[str]:
    from keras_ssr import models

    return models.attention_names()


def _isic_scales() -> tuple[str, ...]:
    from keras_ssr.data import ISIC_SCALES

    return tuple(ISIC_SCALES)


@dataclasses.dataclass(frozen=True)
class CVConfig:
    """Everything that defines a cross-validation run.

    The defaults are the paper's protocol (the original's
    ``ten_fold_config.yaml`` and experiment scripts), so a config needs the
    dataset and its paths only. Every field is checked on construction;
    ``dataclasses.replace(config, epochs=5)`` makes a checked copy. The
    fields are listed below (generated from their declarations).
    """

    # -- data -------------------------------------------------------------
    dataset: str = setting(
        "kvasir",
        "kvasir (data_root holding images/ and masks/), isic (the x_path and "
        "y_path .npy arrays), folder (images_dir and masks_dir, paired by "
        "file stem) or busi (busi_root; stratified folds, see the docs)",
        "data",
        "str",
        choices=tuple(DATASETS),
    )
    data_root: str | None = setting(
        None, "kvasir: the folder holding images/ and masks/", "data", "path",
        metavar="DIR",
    )  # fmt: skip
    x_path: str | None = setting(
        None, "isic: the images' .npy file", "data", "path", metavar="NPY"
    )
    y_path: str | None = setting(
        None, "isic: the masks' .npy file", "data", "path", metavar="NPY"
    )
    busi_root: str | None = setting(
        None,
        "busi: the official release (benign/, malignant/, normal/) or the "
        "follow-up's sorted images/ and masks/",
        "data",
        "path",
        metavar="DIR",
    )
    images_dir: str | None = setting(
        None, "folder: the images", "data", "path", metavar="DIR"
    )
    masks_dir: str | None = setting(
        None, "folder: the masks, paired with the images by file stem", "data",
        "path", metavar="DIR",
    )  # fmt: skip
    target_size: tuple[int, int] = setting(
        (224, 224),
        "(height, width) the images are resized to (kvasir, folder); the ISIC "
        "arrays must have this size",
        "data",
        "size",
        metavar="H,W",
    )
    binarize_masks: bool = setting(
        True, "threshold the masks at 0.5 (kvasir, folder)", "data", "bool"
    )
    isic_scale: str = setting(
        "unit",
        "isic: unit (images to [0, 1], masks to {0, 1}) or none (raw values, "
        "as the original ISIC script)",
        "data",
        "str",
        choices=_isic_scales,
    )
    max_samples: int | None = setting(
        None,
        "use only the first N samples in file-name order (none: all), at least `folds`",
        "data",
        "int",
        minimum=1,
        metavar="N",
    )
    # -- model ------------------------------------------------------------
    model: str = setting(
        "ssr_unet",
        "ssr_unet (SSR after every encoder block), unet, or an attention name "
        "of keras_ssr.models.build_unet (none, se, ssr, ssr_xu, mono, "
        "multifractal, scse, srm, fca, or one registered with --import); with "
        "an encoder, after its skip features and its output",
        "model",
        "str",
        choices=model_names,
        metavar="NAME",
        hint=_settings.REGISTER_HINT,
    )
    attention_options: dict[str, Any] = setting(
        {},
        "the attention layer's constructor arguments (keras_ssr.models."
        "attention_options lists them), e.g. k=8 or basis=dct; unset ones take "
        "the registered defaults (with an encoder, r is chosen per layer unless "
        "set); config.json records them all",
        "model",
        "options",
        flags=("--attention-option",),
        metavar="KEY=VALUE",
        owner="model",
        resolve=_attention_options,
    )
    channels_per_level: tuple[int, ...] = setting(
        (32, 64, 128, 256),
        "filters per level of the papers' U-Net, the last the bottleneck's "
        "(with an encoder: decoder_channels)",
        "model",
        "ints",
        metavar="C,...",
        aliases=("levels",),
    )
    encoder: str | None = setting(
        None,
        "none (the papers' U-Net), or a keras.applications encoder under a U-Net "
        "decoder: mobilenetv2, resnet50, efficientnetb0, convnexttiny, ... "
        "(keras_ssr.models.encoder_names lists them); the input size must be "
        "divisible by 32",
        "model",
        "str",
        choices=_encoder_names,
        metavar="NAME",
    )
    encoder_options: dict[str, Any] = setting(
        {},
        "the encoder's constructor arguments (keras_ssr.models.encoder_options "
        "lists them), e.g. alpha=0.35 for mobilenetv2; config.json records them all",
        "model",
        "options",
        flags=("--encoder-option",),
        metavar="KEY=VALUE",
        owner="encoder",
        resolve=_encoder_options,
    )
    encoder_weights: str | None = setting(
        None,
        "the encoder's initial weights: none (random), imagenet (downloaded by "
        "Keras) or a weights file",
        "model",
        "str",
        metavar="WEIGHTS",
    )
    decoder_channels: tuple[int, ...] | None = setting(
        None,
        "with an encoder: the decoder's filters from full resolution, 5 values "
        "(none: 16,32,64,128,256)",
        "model",
        "ints",
        metavar="C,...",
    )
    decoder_attention: str | None = setting(
        None,
        "with an encoder: an attention name after each skip concatenation of the "
        "decoder (as segmentation_models.pytorch's decoder_attention_type)",
        "model",
        "str",
        choices=_decoder_attention_names,
        metavar="NAME",
        hint=_settings.REGISTER_HINT,
    )
    decoder_attention_options: dict[str, Any] = setting(
        {},
        "the decoder attention's constructor arguments, as attention_options",
        "model",
        "options",
        flags=("--decoder-attention-option",),
        metavar="KEY=VALUE",
        owner="decoder_attention",
        resolve=_decoder_attention_options,
    )
    with_bn: bool = setting(
        False,
        "BatchNormalization after every U-Net convolution (the paper's runs: off)",
        "model",
        "bool",
    )
    data_format: str = setting(
        "channels_last", "channels_last or channels_first", "model", "str",
        choices=_checks.DATA_FORMATS,
    )  # fmt: skip
    # -- training ---------------------------------------------------------
    folds: int = setting(
        10,
        "number of folds K: KFold without shuffling, in file-name order",
        "training",
        "int",
        flags=("-k",),
        minimum=2,
    )
    val_fraction: float = setting(
        0.1,
        "the tail of each training fold held out for validation: "
        "int(len(training fold) * val_fraction) samples",
        "training",
        "float",
        minimum=0.0,
        maximum=1.0,
        open_bounds=True,
    )
    epochs: int = setting(100, "training epochs per fold", "training", "int", minimum=1)
    batch_size: int = setting(
        16, "batch size of training and evaluation", "training", "int", minimum=1
    )
    learning_rate: float = setting(
        1e-4, "the optimiser's (initial) learning rate", "training", "float",
        flags=("--lr",), minimum=0.0, open_bounds=True,
    )  # fmt: skip
    optimizer: str = setting(
        "adam", "adam or sgd", "training", "str", choices=OPTIMIZERS
    )
    loss: str = setting(
        "weighted",
        "weighted (loss_alpha * BCE + (1 - loss_alpha) * soft Dice), ce or dice",
        "training",
        "str",
        choices=LOSS_NAMES,
    )
    loss_alpha: float = setting(
        0.5, "the cross-entropy weight of the weighted loss", "training", "float",
        minimum=0.0, maximum=1.0,
    )  # fmt: skip
    shuffle: bool = setting(
        True,
        "shuffle the fitted samples every epoch (Keras' fit default, as the "
        "original Kvasir script)",
        "training",
        "bool",
    )
    seed: int = setting(
        0,
        "fold k seeds Keras, NumPy and Python with seed + k, so a fold gives the "
        "same result first or after a resume",
        "training",
        "int",
        minimum=0,
    )
    augment: str = setting(
        "none",
        "none, or flips: random horizontal and vertical flips of image and mask "
        "together, every epoch, seeded with seed + k (the follow-up's)",
        "training",
        "str",
        choices=AUGMENTATIONS,
    )
    metrics: str = setting(
        "batch",
        "batch (keras_ssr.metrics.segmentation_metrics, the SSR paper's: Dice over "
        "the batch's pixels, IoU of both classes) or per_image "
        "(per_image_segmentation_metrics, the follow-up's: per-image Dice, "
        "foreground IoU); formerly paper and followup",
        "training",
        "str",
        choices=METRIC_SETS,
        renamed=RENAMED_METRIC_SETS,
    )
    stop_on_nan: bool = setting(
        False,
        "end a fold at the first NaN training loss (keras.callbacks.TerminateOnNaN); "
        "either way a fold whose losses turn NaN is reported as diverged",
        "training",
        "bool",
    )
    distribute: bool = setting(
        False,
        "train each fold data-parallel over all local devices (with TF_CONFIG, "
        "jax.distributed or torchrun, all processes' devices), on the backend's "
        "engine, BN and attention statistics global; batch_size is the global "
        "batch, split evenly across the replicas, learning rate unchanged",
        "training",
        "bool",
    )
    # -- callbacks --------------------------------------------------------
    plateau_factor: float = setting(
        0.5, "ReduceLROnPlateau(monitor='loss') factor", "callbacks", "float",
        minimum=0.0, maximum=1.0, open_bounds=True,
    )  # fmt: skip
    plateau_patience: int = setting(
        10, "ReduceLROnPlateau patience (epochs)", "callbacks", "int", minimum=0
    )
    plateau_min_lr: float | None = setting(
        None,
        "ReduceLROnPlateau lower bound; none is the initial learning rate (the "
        "original's setting), with which the rate never changes",
        "callbacks",
        "float",
        minimum=0.0,
    )
    # -- output -----------------------------------------------------------
    output_dir: str = setting(
        "runs", "the folder of all runs", "output", "path", flags=("-o",),
        metavar="DIR",
    )  # fmt: skip
    name: str | None = setting(
        None,
        "the run's folder inside output_dir (none: <model>-<dataset>)",
        "output",
        "str",
    )

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        for field in dataclasses.fields(self):
            put(field.name, check_field(field, getattr(self, field.name)))
        for kind, fields in DATASETS.items():
            for field in fields:
                value = getattr(self, field)
                if kind == self.dataset and value is None:
                    raise ValueError(
                        f"dataset={self.dataset!r} needs `{field}` "
                        f"({', '.join(f'`{f}`' for f in fields)}). "
                        f"Received: {field}=None"
                    )
                if kind != self.dataset and value is not None:
                    raise ValueError(
                        f"`{field}` belongs to dataset={kind!r}, but "
                        f"dataset={self.dataset!r}. Received: {field}={value!r}"
                    )
        if self.max_samples is not None:
            _checks.check_int("max_samples", self.max_samples, self.folds)
        self._check_encoder()
        if self.dataset != "isic" and self.encoder is None:
            levels = self.channels_per_level
            factor = 2 ** (len(levels) - 1)
            if any(side % factor for side in self.target_size):
                raise ValueError(
                    f"`target_size` must be divisible by 2**(levels - 1) = {factor} "
                    f"for {len(levels)} levels. Received: "
                    f"target_size={self.target_size!r}, channels_per_level={levels!r}"
                )
        self._resolve_options()
        if self.name is not None and (
            not isinstance(self.name, str)
            or not self.name.strip()
            or self.name in (".", "..")
            or any(sep in self.name for sep in ("/", "\\"))
        ):
            raise ValueError(
                "`name` must be a non-empty folder name without '/'. "
                f"Received: name={self.name!r}"
            )

    def _check_encoder(self) -> None:
        """The encoder U-Net's fields go together: none without an encoder,
        and the papers' U-Net's widths not with one."""
        if self.decoder_attention == "none":
            object.__setattr__(self, "decoder_attention", None)
        if self.encoder is None:
            given = [
                name
                for name in ("encoder_weights", "decoder_channels", "decoder_attention")
                if getattr(self, name) is not None
            ]
            if given:
                raise ValueError(
                    f"{', '.join(f'`{n}`' for n in given)} "
                    f"{'belongs' if len(given) == 1 else 'belong'} to an encoder "
                    "U-Net: set `encoder` (e.g. mobilenetv2). Received: "
                    + ", ".join(f"{n}={getattr(self, n)!r}" for n in given)
                )
            return
        from keras_ssr.models.encoders import ENCODER_STRIDE

        if self.dataset != "isic" and any(
            side % ENCODER_STRIDE for side in self.target_size
        ):
            raise ValueError(
                f"`target_size` must be divisible by the encoder's stride "
                f"{ENCODER_STRIDE}. Received: target_size={self.target_size!r}, "
                f"encoder={self.encoder!r}"
            )
        default = default_of(self.__dataclass_fields__["channels_per_level"])
        if self.channels_per_level != default:
            raise ValueError(
                "`channels_per_level` sets the papers' U-Net; the widths of an "
                "encoder U-Net's decoder are `decoder_channels`. Received: "
                f"channels_per_level={self.channels_per_level!r}, "
                f"encoder={self.encoder!r}"
            )
        levels = ENCODER_STRIDE.bit_length() - 1
        if self.decoder_channels is not None and len(self.decoder_channels) != levels:
            raise ValueError(
                f"`decoder_channels` needs {levels} values, one per 2x upsampling "
                f"of the encoder's stride {ENCODER_STRIDE}. Received: "
                f"decoder_channels={self.decoder_channels!r}"
            )

    def _resolve_options(self) -> None:
        """Checks each ``"options"`` field by its ``resolve`` (the layer's own
        errors for bad values); keeps the options that differ from the
        defaults in the field, all of them for :meth:`effective_options`."""
        resolved = {}
        for field in _options_fields():
            resolve = field.metadata["resolve"]
            owner = getattr(self, field.metadata["owner"])
            effective = resolve(owner, getattr(self, field.name), self)
            defaults = resolve(owner, None, self)
            changed = {
                key: value
                for key, value in effective.items()
                if key not in defaults or _jsonable(value) != _jsonable(defaults[key])
            }
            object.__setattr__(self, field.name, changed)
            resolved[field.name] = (effective, defaults)
        object.__setattr__(self, "_resolved", resolved)

    def _saved_options(self, name: str, saved: Mapping[str, Any]) -> dict:
        """A saved ``"options"`` field as its layer (or encoder) reads it now
        (a choice renamed since, such as FCA's ``basis``, in today's
        spelling); as saved where it no longer resolves, so that the
        comparison names the difference."""
        field = self.__dataclass_fields__[name]
        owner = field.metadata["owner"]
        options = saved[name]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                read = field.metadata["resolve"](
                    saved.get(owner, getattr(self, owner)), options, self
                )
        except (ValueError, TypeError):
            return dict(options)
        return {key: _jsonable(read.get(key, value)) for key, value in options.items()}

    def effective_options(self, field: str) -> dict[str, Any]:
        """Every option of an ``"options"`` field (e.g. ``"attention_options"``),
        the defaults included: the values ``config.json`` records and the
        model is built with (the field holds those that differ from the
        defaults)."""
        return dict(self._resolved[field][0])

    # ----------------------------------------------------------------------

    @property
    def attention(self) -> str | None:
        """The attention name of :attr:`model` (``None``: no attention)."""
        return attention_of(self.model)

    @property
    def attention_kwargs(self) -> dict[str, Any]:
        """Every option of the attention, its defaults included:
        ``effective_options("attention_options")``."""
        return self.effective_options("attention_options")

    @property
    def run_name(self) -> str:
        """``name``, or ``"<model>-<dataset>"`` (``"<model>-<encoder>-<dataset>"``
        with an encoder) when it is ``None``."""
        if self.name is not None:
            return self.name
        parts = (self.model, self.encoder, self.dataset)
        return "-".join(part for part in parts if part is not None)

    @property
    def run_dir(self) -> Path:
        """The run's folder, ``output_dir / run_name``."""
        return Path(self.output_dir) / self.run_name

    @property
    def min_lr(self) -> float:
        """The ``ReduceLROnPlateau`` lower bound actually used."""
        return (
            self.learning_rate if self.plateau_min_lr is None else self.plateau_min_lr
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (tuples as lists), ``name``
        resolved to :attr:`run_name`, each ``"options"`` field with every
        option (:meth:`effective_options`)."""
        out = {}
        for field in dataclasses.fields(self):
            out[field.name] = _jsonable(getattr(self, field.name))
        for name, (effective, _) in self._resolved.items():
            out[name] = _jsonable(effective)
        out["name"] = self.run_name
        return out

    def differences(self, saved: Mapping[str, Any]) -> list[str]:
        """How a saved :meth:`to_dict` differs from this configuration.

        The location fields (``output_dir``, ``name``) are ignored, and so is a
        field missing from ``saved`` whose value here is its default (a field
        added since that run was saved). The attention options are compared
        one by one, by the same rule (an option the layer gained since keeps
        its default). A file saved before the fields were renamed (``levels``,
        ``r``, ``max_scale``) is read as it was meant.

        Returns:
            One ``"field: saved X, now Y"`` line per differing field (per
            option: ``"attention_options.k: saved 16, now 8"``).
        """
        current = self.to_dict()
        with warnings.catch_warnings():  # an old file's names, read as meant
            warnings.simplefilter("ignore")
            saved = renamed_values(type(self), _fold_legacy(dict(saved)))
        defaults = {f.name: _jsonable(default_of(f)) for f in dataclasses.fields(self)}
        out = []
        for key in sorted(set(saved) | set(current)):
            if key in LOCATION_FIELDS:
                continue
            if key in self._resolved and isinstance(saved.get(key), Mapping):
                option_defaults = _jsonable(self._resolved[key][1])
                out += _differences(
                    self._saved_options(key, saved),
                    current[key],
                    option_defaults,
                    f"{key}.",
                )
            else:
                out += _differences(saved, current, defaults, "", (key,))
        return out

    @classmethod
    def from_dict(
        cls,
        values: Mapping[str, Any],
        *,
        source: str | None = None,
        protocol: str | None = None,
        **overrides,
    ) -> CVConfig:
        """A config from a (possibly sectioned) mapping, then ``overrides``.

        The fields start from the defaults, replaced by a protocol preset
        when one is named (``protocol``, or a top-level ``protocol`` key of
        ``values``; see ``PROTOCOLS``), then by ``values``, then by
        ``overrides``.

        Keys are field names, at the top level or inside the table of their
        section (``data``, ``model``, ``training``, ``callbacks``,
        ``output``). A key inside another table is an error, so that
        ``[model] name = "unet"`` cannot silently name the run folder.
        ``overrides`` (e.g. command-line flags) replace the mapping's values.

        Args:
            values: the mapping (e.g. a parsed TOML file).
            source: where ``values`` came from, for error messages.
            protocol: a preset of ``PROTOCOLS`` (``"paper"``, ``"followup"``);
                wins over a ``protocol`` key of ``values``.
            **overrides: field values that win over ``values``.

        Returns:
            A validated :class:`CVConfig`.

        Raises:
            ValueError: for an unknown key (the valid ones are listed), a key
                in the wrong table, a key given twice, or an invalid value.
            TypeError: for a value of the wrong type.

        Example:
            >>> CVConfig.from_dict({"dataset": "isic", "data": {"x_path": "x.npy",
            ...     "y_path": "y.npy"}}, epochs=3).epochs
            3
        """
        where = f" in {source}" if source else ""
        if not isinstance(values, Mapping):
            raise TypeError(
                f"A configuration must be a mapping of field names to values{where}. "
                f"Received: {type(values).__name__}"
            )
        sections = {f.name: f.metadata["section"] for f in dataclasses.fields(cls)}
        valid = ", ".join(sections)
        aliases = aliases_of(cls)
        sections.update({alias: sections[name] for alias, name in aliases.items()})
        sections.update(dict.fromkeys(LEGACY_OPTIONS, "model"))
        values = dict(values)
        named = values.pop("protocol", None)
        protocol = _checks.check_choice(
            "protocol", protocol if protocol is not None else named or "paper",
            tuple(PROTOCOLS),
        )  # fmt: skip
        flat: dict[str, Any] = {}

        def add(key, value, table=None):
            label = f"{table}.{key}" if table else key
            if key not in sections:
                raise ValueError(
                    f"Unknown configuration key {label!r}{where}. Valid keys: "
                    f"{valid} (optionally grouped in the tables "
                    f"{', '.join(SECTIONS)}). The attention layer's options go "
                    f"in the table [model.attention_options]."
                )
            if table is not None and sections[key] != table:
                field = cls.__dataclass_fields__.get(aliases.get(key, key))
                what = field.metadata["help"] if field else "an attention option"
                raise ValueError(
                    f"The configuration key {key!r} is inside the table [{table}]"
                    f"{where}, but it belongs to [{sections[key]}]: `{key}` is "
                    f"{what}. Move it to [{sections[key]}] or to the top level. "
                    f"Received: {label}={value!r}"
                )
            key = aliases.get(key, key)
            if key in flat:
                raise ValueError(
                    f"The configuration key {key!r} is given twice{where}."
                )
            flat[key] = value

        for key, value in values.items():
            if key in SECTIONS and isinstance(value, Mapping):
                for inner, inner_value in value.items():
                    add(inner, inner_value, key)
            else:
                add(key, value)
        unknown = [key for key in overrides if key not in sections]
        if unknown:
            raise ValueError(
                f"Unknown configuration field(s) {', '.join(map(repr, unknown))}. "
                f"Valid fields: {valid}."
            )
        overrides = {aliases.get(key, key): value for key, value in overrides.items()}
        # Switching the dataset from the flags drops the file's other paths.
        if "dataset" in overrides and overrides["dataset"] != flat.get("dataset"):
            for kind, fields in DATASETS.items():
                if kind != str(overrides["dataset"]).lower():
                    for field in fields:
                        if field not in overrides:
                            flat.pop(field, None)
        # Switching the model drops the file's attention options (those of
        # another layer); otherwise the flags' options join the file's.
        for field in _options_fields():
            name, owner = field.name, field.metadata["owner"]
            before = flat.get(owner, default_of(cls.__dataclass_fields__[owner]))
            if owner in overrides and _same(overrides[owner]) != _same(before):
                flat.pop(name, None)
            elif isinstance(flat.get(name), Mapping) and isinstance(
                overrides.get(name), Mapping
            ):
                overrides[name] = {**flat[name], **overrides[name]}
        dataset = str(overrides.get("dataset", flat.get("dataset", "kvasir"))).lower()
        preset = {
            **PROTOCOLS[protocol],
            **DATASET_PROTOCOLS.get((protocol, dataset), {}),
        }
        flat = {**preset, **flat, **overrides}
        for key in ("target_size", "channels_per_level"):
            if isinstance(flat.get(key), list):
                flat[key] = tuple(flat[key])
        return cls(**flat)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides) -> CVConfig:
        """A config from a TOML, YAML or JSON file, then ``overrides``.

        See :func:`keras_ssr.cv.load_config_file` and :meth:`from_dict`.

        Example:
            >>> config = CVConfig.from_file("kvasir.toml", epochs=1)  # doctest: +SKIP
        """
        from keras_ssr.cv.files import load_config_file

        return cls.from_dict(
            load_config_file(path), source=os.fspath(path), **overrides
        )


def _options_fields() -> list[dataclasses.Field]:
    """The ``"options"`` fields of :class:`CVConfig`."""
    return [f for f in dataclasses.fields(CVConfig) if f.metadata["kind"] == "options"]


def _same(name):
    """A name as compared when a flag may change it: case-insensitive."""
    return name.strip().lower() if isinstance(name, str) else name


def _differences(saved, current, defaults, prefix, keys=None) -> list[str]:
    """``"key: saved X, now Y"`` for each key of ``keys`` (default: all)
    that differs; a key missing from ``saved`` is fine at its default."""
    out = []
    for key in keys or sorted(set(saved) | set(current)):
        label = prefix + key
        if key not in saved:
            if current[key] != defaults.get(key):
                out.append(f"{label}: not saved, now {current[key]!r}")
        elif key not in current:
            out.append(f"{label}: saved {saved[key]!r}, unknown now")
        elif saved[key] != current[key]:
            out.append(f"{label}: saved {saved[key]!r}, now {current[key]!r}")
    return out


def _taken_options(model) -> dict[str, Any]:
    """The default options of ``model``'s attention; none for an unknown one."""
    try:
        return _attention_options(model, None)
    except (ValueError, TypeError):
        return {}


def _fold_legacy(values: dict[str, Any]) -> dict[str, Any]:
    """Constructor keywords in today's names: ``levels`` renamed, the former
    fields ``r`` and ``max_scale`` moved into ``attention_options`` when the
    model's attention takes them, and dropped otherwise, as they were unused
    then (with a warning when not at their old default)."""
    values = _settings.rename_deprecated(values, aliases_of(CVConfig), "CVConfig")
    legacy = {key: values.pop(key) for key in LEGACY_OPTIONS if key in values}
    if not legacy:
        return values
    warnings.warn(
        f"CVConfig: the fields {', '.join(f'`{k}`' for k in legacy)} are "
        "deprecated: set them in `attention_options` (--attention-option KEY=VALUE).",
        DeprecationWarning,
        stacklevel=3,
    )
    options = values.get("attention_options")
    if options is not None and not isinstance(options, Mapping):
        return values  # the field's check names the error
    options = dict(options or {})
    model = values.get("model", default_of(CVConfig.__dataclass_fields__["model"]))
    taken = _taken_options(model)
    for key, value in legacy.items():
        if key in taken:
            if key in options and options[key] != value:
                raise ValueError(
                    f"`{key}` is given twice: as the former field ({key}={value!r}) "
                    f"and among the attention options ({key}={options[key]!r}). "
                    f"Give it once, in attention_options."
                )
            options[key] = value
        elif value != LEGACY_OPTIONS[key]:
            warnings.warn(
                f"`{key}`={value!r} is ignored: model={model!r} does not take it "
                f"(its attention options: {', '.join(taken) or 'none'}).",
                UserWarning,
                stacklevel=3,
            )
    values["attention_options"] = options
    return values


CVConfig = _settings.legacy_keywords(_fold_legacy, aliases_of(CVConfig))(CVConfig)


def config_reference() -> str:
    """The table of every :class:`CVConfig` field as Markdown, by section.

    ``docs/cross_validation.md`` holds this table; a test checks that it is
    current.
    """
    lines = []
    for section in SECTIONS:
        lines += [
            f"**[{section}]**",
            "",
            "| key | flag | default | meaning |",
            "| --- | --- | --- | --- |",
        ]
        for field in dataclasses.fields(CVConfig):
            if field.metadata["section"] == section:
                help_text = field.metadata["help"].replace("|", "\\|")
                flags = [f"--{field.name.replace('_', '-')}", *field.metadata["flags"]]
                key = f"`{field.name}`" + "".join(
                    f" (formerly `{alias}`)" for alias in field.metadata["aliases"]
                )
                lines.append(
                    f"| {key} | {', '.join(f'`{f}`' for f in flags)} | "
                    f"`{shown(default_of(field))}` | {help_text} |"
                )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _document_fields(cls) -> None:
    lines = ["", "    Attributes:"]
    for field in dataclasses.fields(cls):
        lines.append(
            f"        {field.name}: {field.metadata['help']} "
            f"(default ``{shown(default_of(field))}``)."
        )
    cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n" + "\n".join(lines) + "\n"


_document_fields(CVConfig)
