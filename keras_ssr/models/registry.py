"""The attention registry: names the U-Net builders and ``keras-ssr cv`` accept.

A registered attention is a factory (a layer class, or a callable returning
a layer) and defaults for some of its arguments. Its *options* are its
factory's named arguments but ``name`` and ``data_format``, which the
builders set for every level: :func:`attention_options` gives their
effective values, checked by the layer itself. ``keras-ssr cv`` and
``keras-ssr demo`` resolve, check and record every attention option through
it, so a layer's new argument needs no change anywhere else.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import keras

from keras_ssr import _checks
from keras_ssr._settings import REGISTER_HINT
from keras_ssr.layers import (
    FrequencyChannelAttention,
    MapLayer,
    MonofractalRecalibration,
    MultifractalRecalibration,
    SingularityStrengthRecalibration,
    SingularityStrengthRecalibrationXu,
    SpatialSqueezeExcite,
    SqueezeExcite,
    StyleBasedRecalibration,
)

__all__ = [
    "attention_names",
    "attention_options",
    "attention_reference",
    "get_attention",
    "register_attention",
]

AttentionFactory = Callable[..., keras.layers.Layer]


@dataclass(frozen=True)
class _AttentionEntry:
    factory: AttentionFactory
    defaults: dict[str, Any] = field(default_factory=dict)


_ATTENTION: dict[str, _AttentionEntry] = {}
_NO_ATTENTION = "none"
#: The factory arguments the builders set for every level: never options.
BUILDER_ARGUMENTS = ("name", "data_format")
#: The option that :func:`insert_attention` and :func:`build_unet`'s encoder
#: U-Net choose per layer, from its channels (:func:`wide_reduction_ratio`),
#: unless it is given.
PER_LAYER_OPTION = "r"


def register_attention(
    name: str,
    factory: AttentionFactory,
    defaults: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> None:
    """Makes an attention layer available to :func:`build_unet` by name.

    Args:
        name: the registry key (case-insensitive); ``"none"`` is reserved.
        factory: a layer class or a callable returning a new
            ``keras.layers.Layer`` each time it is called. It receives the
            attention keyword arguments, plus ``data_format`` and ``name``
            when its signature accepts them.
        defaults: keyword arguments used when ``build_unet`` gets no
            ``attention_kwargs`` for them (``attention_kwargs`` overrides).
        overwrite: allow replacing an existing entry.

    Raises:
        TypeError: if ``name`` is not a string, ``factory`` is not callable
            or ``defaults`` is not a mapping.
        ValueError: if ``name`` is empty, ``"none"``, or already registered
            and ``overwrite`` is false.

    Example:
        >>> register_attention("se4", SqueezeExcite, {"r": 4})
        >>> model = build_unet((4, 8, 16), (32, 32, 3), attention="se4")
    """
    if not isinstance(name, str):
        raise TypeError(
            f"`name` must be a string. Received: name={name!r} "
            f"(of type {type(name).__name__})"
        )
    key = name.strip().lower()
    if not key or key == _NO_ATTENTION:
        raise ValueError(
            "`name` must be a non-empty name other than 'none'. "
            f"Received: name={name!r}"
        )
    if not callable(factory):
        raise TypeError(
            "`factory` must be a layer class or a callable returning a layer. "
            f"Received: factory={factory!r}"
        )
    if defaults is not None and not isinstance(defaults, Mapping):
        raise TypeError(
            f"`defaults` must be a mapping or None. Received: defaults={defaults!r}"
        )
    if key in _ATTENTION and not overwrite:
        raise ValueError(
            f"An attention named {key!r} is already registered; pass "
            f"overwrite=True to replace it. Received: name={name!r}"
        )
    _ATTENTION[key] = _AttentionEntry(factory, dict(defaults or {}))


def attention_names() -> list[str]:
    """The registered attention names, ``"none"`` included, sorted."""
    return sorted([_NO_ATTENTION, *_ATTENTION])


def get_attention(name: str | None) -> AttentionFactory | None:
    """The factory registered under ``name``; ``None`` for no attention.

    Args:
        name: a registered name (case-insensitive), ``"none"`` or ``None``.

    Returns:
        The layer class or callable, or ``None`` for ``None``/``"none"``.

    Raises:
        ValueError: for an unknown name, listing the known ones.

    Example:
        >>> get_attention("ssr") is SingularityStrengthRecalibration
        True
    """
    return _lookup(name, "name")[0]


def _lookup(name, argument: str) -> tuple[AttentionFactory | None, dict]:
    if name is None:
        return None, {}
    if not isinstance(name, str):
        raise TypeError(
            f"`{argument}` must be a string or None. Received: {argument}={name!r}"
        )
    key = name.strip().lower()
    if key == _NO_ATTENTION:
        return None, {}
    if key not in _ATTENTION:
        raise ValueError(
            f"Unknown attention {name!r}. Known names: {attention_names()}; or pass "
            f"a layer class or a callable returning a layer. {REGISTER_HINT}. "
            f"Received: {argument}={name!r}"
        )
    entry = _ATTENTION[key]
    return entry.factory, dict(entry.defaults)


def _named_parameters(factory) -> dict[str, Any]:
    """``factory``'s arguments that a keyword can set, with their defaults
    (``inspect.Parameter.empty`` for a required one)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return {}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.default for p in parameters if p.kind in kinds}


def attention_options(
    name: str | None,
    options: Mapping[str, Any] | None = None,
    *,
    inserted: bool = False,
) -> dict[str, Any]:
    """The effective constructor options of a registered attention, checked.

    The options of an attention are the named arguments of its factory (a
    layer class's ``__init__``) but ``name`` and ``data_format``, which the
    builders set for every level, plus any key of its registered defaults.
    Each takes its value from ``options``, else from the registered
    defaults (:func:`register_attention`), else from the signature. The
    layer is then constructed once with them (Python's ``random`` state is
    restored afterwards), so a bad value raises the layer's own error, and
    the values returned are those the layer's ``get_config()`` reports.
    ``keras-ssr cv`` records this mapping in ``config.json``; passed as
    ``attention_kwargs`` to :func:`build_unet` it builds the same layers.

    Args:
        name: a registered attention name; ``None`` or ``"none"`` (no
            attention) has no options.
        options: the options to set (``None``: the defaults).
        inserted: the options of layers that :func:`insert_attention` or an
            encoder U-Net (:func:`build_unet` with ``encoder``) place: ``r``
            is left out unless ``options`` sets it, as those give each layer
            :func:`wide_reduction_ratio` of its channels.

    Returns:
        Every option of the attention and its value, in signature order.

    Raises:
        ValueError: for an unknown attention name (saying how to register
            one), an option the attention does not take (its options are
            listed), a required option left unset, or options for no
            attention; and as the layer's constructor for a bad value.
        TypeError: if ``options`` is not a mapping of names; and as the
            layer's constructor.

    Example:
        >>> attention_options("multifractal", {"k": 8})
        {'max_scale': 3, 'k': 8, 'per_channel': False, 'scaling': 'batch',
         'synchronized': True}
        >>> attention_options("ssr", inserted=True)
        {'max_scale': 3, 'scaling': 'batch', 'synchronized': True}
    """
    factory, defaults = _lookup(name, "name")
    inserted = _checks.check_bool("inserted", inserted)
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(
            f"`options` must be a mapping of option names to values or None. "
            f"Received: options={options!r}"
        )
    options = dict(options or {})
    for key in options:
        if not isinstance(key, str):
            raise TypeError(
                f"Option names must be strings. Received: {key!r} in "
                f"options={options!r}"
            )
    if factory is None:
        if options:
            raise ValueError(
                f"There is no attention ({name!r}), so there are no attention "
                f"options to set. Received: options={options!r}"
            )
        return {}
    label = f"The attention {name.strip().lower()!r} ({_describe(factory)})"
    values = {
        key: default
        for key, default in _named_parameters(factory).items()
        if key not in BUILDER_ARGUMENTS
    }
    values.update(defaults)
    unknown = [key for key in options if key not in values]
    if unknown:
        raise ValueError(
            f"{label} takes no option {', '.join(map(repr, unknown))}; its options "
            f"are {', '.join(values) or 'none'}. Received: options={options!r}"
        )
    values.update(options)
    missing = [key for key, value in values.items() if value is inspect.Parameter.empty]
    if missing:
        raise ValueError(
            f"{label} needs the option(s) {', '.join(missing)}, which have no "
            f"default: set them. Received: options={options!r}"
        )
    state = random.getstate()  # the layer's initialisers draw default seeds
    try:
        layer = _make_attention(factory, values, None, None, None, name)
    finally:
        random.setstate(state)
    try:
        reported = layer.get_config()
    except NotImplementedError:
        reported = {}
    if (
        inserted
        and PER_LAYER_OPTION not in options
        and PER_LAYER_OPTION in _named_parameters(factory)
    ):
        values.pop(PER_LAYER_OPTION)
    return {key: reported.get(key, value) for key, value in values.items()}


def attention_reference() -> str:
    """The registered attentions and their options, as a Markdown table.

    ``docs/models.md`` holds this table; a test checks that it is current.

    Returns:
        One row per name of :func:`attention_names`: its layer and every
        option with its default (:func:`attention_options`).
    """
    lines = [
        "| name | layer | options (defaults) |",
        "| --- | --- | --- |",
    ]
    for name in attention_names():
        factory = get_attention(name)
        if factory is None:
            lines.append(f"| `{name}` | no attention | - |")
            continue
        options = ", ".join(
            f"`{key}={value!r}`" for key, value in attention_options(name).items()
        )
        lines.append(f"| `{name}` | `{_describe(factory)}` | {options or '-'} |")
    return "\n".join(lines) + "\n"


def _describe(factory) -> str:
    return getattr(factory, "__qualname__", None) or repr(factory)


register_attention("se", SqueezeExcite, {"r": 2})
register_attention("ssr", SingularityStrengthRecalibration, {"r": 2, "max_scale": 3})
register_attention("ssr_xu", SingularityStrengthRecalibrationXu, {"r": 2})
# The follow-up's family (miguelmartins/multifractal-recalibration), with the
# defaults of its builders.
register_attention("mono", MonofractalRecalibration, {"r": 2, "max_scale": 3})
register_attention(
    "multifractal",
    MultifractalRecalibration,
    {"max_scale": 3, "k": 16, "per_channel": False},
)
register_attention("scse", SpatialSqueezeExcite, {"r": 2})
register_attention("srm", StyleBasedRecalibration)
register_attention("fca", FrequencyChannelAttention, {"r": 2, "low_freq": 4})


def _accepts(factory, parameter: str) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return parameter in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
    )


def _resolve_attention(attention, attention_kwargs):
    """``(factory or None, keyword arguments)`` from the builder's arguments."""
    if attention_kwargs is not None and not isinstance(attention_kwargs, Mapping):
        raise TypeError(
            "`attention_kwargs` must be a mapping or None. "
            f"Received: attention_kwargs={attention_kwargs!r}"
        )
    for reserved in ("name", "data_format"):
        if attention_kwargs and reserved in attention_kwargs:
            raise ValueError(
                f"`attention_kwargs` must not set {reserved!r}: the builder sets "
                "it for every level. "
                f"Received: attention_kwargs={dict(attention_kwargs)!r}"
            )
    if attention is None or isinstance(attention, str):
        factory, kwargs = _lookup(attention, "attention")
    elif isinstance(attention, keras.layers.Layer):
        raise TypeError(
            "`attention` must be a name, a layer class or a callable returning a new "
            "layer: a layer instance cannot serve several levels. "
            f"Received: attention={attention!r}"
        )
    elif callable(attention):
        factory, kwargs = attention, {}
    else:
        raise TypeError(
            "`attention` must be None, a registered name, a layer class or a "
            f"callable returning a layer. Received: attention={attention!r}"
        )
    if factory is None:
        if attention_kwargs:
            raise ValueError(
                "`attention_kwargs` was given but there is no attention. "
                f"Received: attention={attention!r}, "
                f"attention_kwargs={dict(attention_kwargs)!r}"
            )
        return None, {}
    kwargs.update(attention_kwargs or {})
    return factory, kwargs


def _make_attention(
    factory, kwargs, name, data_format, spatial_rank, attention, dtype=None
):
    """``factory(**kwargs)`` with ``data_format``, ``name`` and ``dtype``
    where it takes them (``None`` leaves them out), checked to be a layer for
    ``spatial_rank``-D inputs (``None``: any)."""
    call_kwargs = dict(kwargs)
    if data_format is not None and _accepts(factory, "data_format"):
        call_kwargs["data_format"] = data_format
    if name is not None and _accepts(factory, "name"):
        call_kwargs["name"] = name
    if dtype is not None and "dtype" not in call_kwargs and _accepts(factory, "dtype"):
        call_kwargs["dtype"] = dtype
    layer = factory(**call_kwargs)
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(
            "`attention` must build a keras.layers.Layer; it returned "
            f"{layer!r} (of type {type(layer).__name__}). "
            f"Received: attention={attention!r}"
        )
    # keras_ssr's layers say which input ranks they take (MapLayer.ranks);
    # any other layer is taken at its word.
    ranks = layer.ranks if isinstance(layer, MapLayer) else None
    if ranks is not None and spatial_rank is not None and spatial_rank + 2 not in ranks:
        supported = sorted(r - 2 for r in ranks)
        raise ValueError(
            f"{type(layer).__name__} supports {supported}-D inputs only, not "
            f"{spatial_rank}-D ones. Received: attention={attention!r} with a "
            f"{spatial_rank}-D input_shape"
        )
    return layer
