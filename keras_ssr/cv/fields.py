"""Declaring a configuration field once: default, help, table, check.

:func:`setting` declares a :class:`~keras_ssr.cv.CVConfig` field; the
checks, the command-line flags, the class documentation and the docs' table
are all derived from the declaration.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence

from keras_ssr import _checks

__all__ = [
    "SECTIONS",
    "aliases_of",
    "check_field",
    "choices_of",
    "renamed_values",
    "setting",
    "shown",
]

#: The tables of a config file, in order. A key inside a table must be one
#: of that table's fields; at the top level any field may appear.
SECTIONS = ("data", "model", "training", "callbacks", "output")


def setting(
    default,
    help: str,
    section: str,
    kind: str,
    *,
    flags: Sequence[str] = (),
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    open_bounds: bool = False,
    optional: bool = False,
    metavar: str | None = None,
    aliases: Sequence[str] = (),
    renamed: Mapping[str, str] | None = None,
    hint: str | None = None,
    owner: str | None = None,
    resolve: Callable | None = None,
):
    """Declares one :class:`CVConfig` field and everything said about it.

    Args:
        default: the default (the paper's protocol).
        help: one line for ``--help``, the docs and the class documentation.
        section: the config file table it belongs to (one of ``SECTIONS``).
        kind: ``"str"``, ``"path"``, ``"int"``, ``"float"``, ``"bool"``,
            ``"ints"`` (a list of positive integers), ``"size"`` (two) or
            ``"options"``: the constructor options of what the field
            ``owner`` names (a mapping of option names to TOML values, set
            on the command line by a repeatable ``KEY=VALUE`` flag and
            merged key by key over a config file's; ``resolve`` checks them).
        flags: extra command-line spellings besides ``--field-name``.
        choices: the accepted strings (or a function giving them).
        minimum, maximum: bounds of a number (``None``: unbounded).
        open_bounds: the bounds themselves are excluded.
        optional: ``None`` is accepted.
        metavar: the value's name in ``--help``.
        aliases: deprecated names of the field, still accepted as keys,
            keywords and flags.
        renamed: former spellings of ``choices``, ``{old: choice}``: still
            accepted (deprecated) and read as the choice, in a saved
            configuration too.
        hint: a sentence added to the error for a value not in ``choices``.
        owner: for ``"options"``: the field whose value the options belong
            to (e.g. ``"model"``); when a flag changes it, the options of a
            config file are dropped.
        resolve: for ``"options"``: ``resolve(owner_value, options, config)``
            returns every option's effective value (``options=None``: the
            defaults), raising for an unknown option or a bad value;
            ``config`` is the configuration, its other fields checked (the
            attention's options depend on whether there is an encoder).

    Returns:
        A ``dataclasses.field`` whose metadata holds the declaration.
    """
    if section not in SECTIONS:
        raise ValueError(f"`section` must be one of {SECTIONS}. Received: {section!r}")
    if (kind == "options") != (owner is not None and resolve is not None):
        raise ValueError(
            "`owner` and `resolve` go with kind='options', and it needs both. "
            f"Received: kind={kind!r}, owner={owner!r}, resolve={resolve!r}"
        )
    metadata = {
        "help": help,
        "section": section,
        "kind": kind,
        "flags": tuple(flags),
        "choices": choices,
        "minimum": minimum,
        "maximum": maximum,
        "open_bounds": open_bounds,
        "optional": optional or default is None,
        "metavar": metavar,
        "aliases": tuple(aliases),
        "renamed": dict(renamed or {}),
        "hint": hint,
        "owner": owner,
        "resolve": resolve,
    }
    if isinstance(default, Mapping):  # a mutable default needs a factory
        frozen = dict(default)
        return dataclasses.field(
            default_factory=lambda: dict(frozen), metadata=metadata
        )
    return dataclasses.field(default=default, metadata=metadata)


def default_of(field: dataclasses.Field):
    """A field's default, whether given as a value or a factory."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def renamed_values(cls, values: Mapping) -> dict:
    """``values`` (field name -> value, e.g. a saved configuration) with the
    former spellings of choices in today's (see :func:`setting`'s
    ``renamed``)."""
    out = dict(values)
    for field in dataclasses.fields(cls):
        renamed = field.metadata.get("renamed") or {}
        value = out.get(field.name)
        if isinstance(value, str) and value.lower() in renamed:
            out[field.name] = renamed[value.lower()]
    return out


def aliases_of(cls) -> dict[str, str]:
    """``{deprecated name: field name}`` of a class of :func:`setting` fields."""
    return {
        alias: field.name
        for field in dataclasses.fields(cls)
        for alias in field.metadata.get("aliases", ())
    }


def choices_of(field: dataclasses.Field) -> tuple[str, ...] | None:
    """A field's accepted strings (resolving a function), or ``None``."""
    choices = field.metadata.get("choices")
    if callable(choices):
        choices = choices()
    return None if choices is None else tuple(choices)


def _path(name: str, value) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise ValueError(
            f"`{name}` must be a non-empty path. Received: {name}={value!r}"
        )
    return _checks.check_text(name, value, control=False)


def check_field(field: dataclasses.Field, value):
    """One field's value, checked and normalised by its declaration."""
    meta, name = field.metadata, field.name
    if value is None and meta["optional"]:
        return None
    kind = meta["kind"]
    if kind == "str":
        choices = choices_of(field)
        if choices is None:  # free text, such as a folder name
            return _checks.check_text(name, value)
        try:
            return _checks.check_choice(name, value, choices, meta["renamed"])
        except ValueError as error:
            if meta["hint"] is None:
                raise
            raise ValueError(f"{error}. {meta['hint']}.") from None
    if kind == "path":
        return _path(name, value)
    if kind == "bool":
        return _checks.check_bool(name, value)
    if kind == "int":
        minimum = meta["minimum"] if meta["minimum"] is not None else -(2**63)
        return _checks.check_int(name, value, minimum, meta["maximum"])
    if kind == "float":
        return _checks.check_real(
            name,
            value,
            meta["minimum"],
            meta["maximum"],
            open_minimum=meta["open_bounds"],
            open_maximum=meta["open_bounds"],
        )
    if kind == "ints":
        return _checks.check_int_sequence(name, value, 1, min_length=2)
    if kind == "size":
        return _checks.check_int_sequence(name, value, 1, length=2)
    if kind == "options":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise TypeError(
                f"`{name}` must be a mapping of option names to values (in a "
                f"config file a table, [model.{name}]). Received: {name}={value!r}"
            )
        return dict(value)
    raise AssertionError(f"unknown kind {kind!r} of field {name!r}")


def shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={shown(v)}" for k, v in value.items()) or "{}"
    return str(value)
