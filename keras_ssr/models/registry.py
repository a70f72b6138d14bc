"""The attention registry: names the U-Net builders and ``keras-ssr cv`` accept."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import keras

from keras_ssr.layers import (
    FrequencyChannelAttention,
    MonofractalRecalibration,
    MultifractalRecalibration,
    SingularityStrengthRecalibration,
    SingularityStrengthRecalibrationXu,
    SpatialSqueezeExcite,
    SqueezeExcite,
    StyleBasedRecalibration,
)

AttentionFactory = Callable[..., keras.layers.Layer]


@dataclass(frozen=True)
class _AttentionEntry:
    factory: AttentionFactory
    defaults: dict[str, Any] = field(default_factory=dict)


_ATTENTION: dict[str, _AttentionEntry] = {}
_NO_ATTENTION = "none"


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
            f"a layer class or a callable returning a layer. "
            f"Received: {argument}={name!r}"
        )
    entry = _ATTENTION[key]
    return entry.factory, dict(entry.defaults)


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
    call_kwargs = dict(kwargs)
    if _accepts(factory, "data_format"):
        call_kwargs["data_format"] = data_format
    if _accepts(factory, "name"):
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
    ranks = getattr(layer, "ranks", None)
    if ranks is not None and spatial_rank + 2 not in ranks:
        supported = sorted(r - 2 for r in ranks)
        raise ValueError(
            f"{type(layer).__name__} supports {supported}-D inputs only, not "
            f"{spatial_rank}-D ones. Received: attention={attention!r} with a "
            f"{spatial_rank}-D input_shape"
        )
    return layer
