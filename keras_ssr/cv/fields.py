"""Declaring a configuration field once: default, help, table, check.

:func:`setting` declares a :class:`~keras_ssr.cv.CVConfig` field; the
checks, the command-line flags, the class documentation and the docs' table
are all derived from the declaration.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

from keras_ssr import _checks

__all__ = ["SECTIONS", "check_field", "choices_of", "setting", "shown"]

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
):
    """Declares one :class:`CVConfig` field and everything said about it.

    Args:
        default: the default (the paper's protocol).
        help: one line for ``--help``, the docs and the class documentation.
        section: the config file table it belongs to (one of ``SECTIONS``).
        kind: ``"str"``, ``"path"``, ``"int"``, ``"float"``, ``"bool"``,
            ``"ints"`` (a list of positive integers) or ``"size"`` (two).
        flags: extra command-line spellings besides ``--field-name``.
        choices: the accepted strings (or a function giving them).
        minimum, maximum: bounds of a number (``None``: unbounded).
        open_bounds: the bounds themselves are excluded.
        optional: ``None`` is accepted.
        metavar: the value's name in ``--help``.

    Returns:
        A ``dataclasses.field`` whose metadata holds the declaration.
    """
    if section not in SECTIONS:
        raise ValueError(f"`section` must be one of {SECTIONS}. Received: {section!r}")
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
    }
    return dataclasses.field(default=default, metadata=metadata)


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
        return _checks.check_choice(name, value, choices)
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
    raise AssertionError(f"unknown kind {kind!r} of field {name!r}")


def shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)
