"""What the command lines and configurations share: option values, deprecated
spellings, and modules to import first.

* :func:`parse_assignment` reads ``KEY=VALUE`` (``--attention-option k=8``),
  the value as a TOML or JSON literal, so a flag and a config file give a
  value the same type;
* :func:`legacy_keywords` and :func:`rename_deprecated` keep an old keyword
  working, with a ``DeprecationWarning``;
* :func:`import_modules` imports the modules of ``--import``, which register
  attentions of one's own before a configuration names them.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "REGISTER_HINT",
    "SetOption",
    "add_import_argument",
    "assignment",
    "import_modules",
    "legacy_keywords",
    "parse_assignment",
    "parse_value",
    "rename_deprecated",
    "tomllib",
]

#: How an attention of your own becomes known, for the errors that miss one.
REGISTER_HINT = (
    "An attention of your own must be registered in the process that builds "
    "the model: call keras_ssr.models.register_attention(name, LayerClass) in "
    "a module and pass `--import MODULE` to keras-ssr (or import that module "
    "before building)"
)


def tomllib():
    """The TOML reader: ``tomllib`` (Python >= 3.11), else ``tomli``."""
    try:
        import tomllib as reader
    except ImportError:  # Python < 3.11
        try:
            import tomli as reader
        except ImportError as err:
            raise ImportError(
                "Reading TOML on Python < 3.11 needs tomli: `pip install tomli`."
            ) from err
    return reader


def parse_value(text: str) -> Any:
    """A command-line value as a TOML literal, else JSON, else the text itself.

    ``8`` is an int, ``0.5`` a float, ``true`` a bool, ``[3, 4]`` a list,
    ``"dct"`` or plain ``dct`` a string and JSON's ``null`` is ``None`` (TOML
    has no null), as the same value in a TOML or JSON config file would be.

    Example:
        >>> [parse_value(t) for t in ("8", "true", "dct", "[1, 2]", "null")]
        [8, True, 'dct', [1, 2], None]
    """
    try:
        return tomllib().loads(f"value = {text}")["value"]
    except Exception:  # noqa: BLE001 - not a TOML literal: try JSON, then text
        pass
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` as ``(key, parse_value(value))``.

    Raises:
        ValueError: if there is no ``=`` or no key.

    Example:
        >>> parse_assignment("per_channel=true")
        ('per_channel', True)
    """
    key, equals, value = text.partition("=")
    key = key.strip()
    if not equals or not key:
        raise ValueError(
            f"expected KEY=VALUE (e.g. k=8, basis=dct, sizes=[3, 4]), got {text!r}"
        )
    return key, parse_value(value.strip())


def assignment(text: str) -> tuple[str, Any]:
    """:func:`parse_assignment` as an ``argparse`` type."""
    try:
        return parse_assignment(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


class SetOption(argparse.Action):
    """``--flag KEY=VALUE`` (with ``type=assignment``), repeatable: the
    pairs gather in one mapping, a repeated key's last value winning."""

    def __call__(self, parser, namespace, values, option_string=None):
        key, value = values
        options = dict(getattr(namespace, self.dest, None) or {})
        options[key] = value
        setattr(namespace, self.dest, options)


def add_import_argument(parser) -> None:
    """Adds ``--import MODULE`` (repeatable, ``dest="imports"``); the command
    passes ``args.imports`` to :func:`import_modules` before anything else."""
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        help="import this module first (repeatable), e.g. one that registers an "
        "attention with keras_ssr.models.register_attention; from the current "
        "folder or the installed packages",
    )


def rename_deprecated(
    values: dict[str, Any], aliases: Mapping[str, str], owner: str
) -> dict[str, Any]:
    """``values`` with each deprecated key of ``aliases`` renamed, warning once
    per key. The deprecated key wins over its new name: ``dataclasses.replace``
    passes every field on, the new name included."""
    values = dict(values)
    for old, new in aliases.items():
        if old in values:
            warnings.warn(
                f"{owner}: `{old}` is deprecated; it is now `{new}`.",
                DeprecationWarning,
                stacklevel=4,
            )
            values[new] = values.pop(old)
    return values


def legacy_keywords(translate: Callable[[dict], dict], aliases: Mapping[str, str]):
    """A class decorator for a dataclass whose keywords changed.

    Its ``__init__`` first passes the keywords through ``translate`` (which
    renames or folds the deprecated ones), and each old name of ``aliases``
    reads its new attribute, with a ``DeprecationWarning``.
    """

    def decorate(cls):
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            init(self, *args, **translate(kwargs))

        cls.__init__ = __init__
        for old, new in aliases.items():
            setattr(cls, old, _deprecated_property(cls.__name__, old, new))
        return cls

    return decorate


def _deprecated_property(owner: str, old: str, new: str) -> property:
    def read(self):
        warnings.warn(
            f"{owner}.{old} is deprecated; read {owner}.{new}.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(self, new)

    return property(read, doc=f"Deprecated: :attr:`{new}`.")


def import_modules(names: Sequence[str] | None, flag: str = "--import") -> None:
    """Imports each module of ``names`` (e.g. one that calls
    :func:`keras_ssr.models.register_attention`), from the installed packages
    or the current folder.

    Raises:
        ImportError: naming the module and the flag, if one fails to import.
    """
    for name in names or ():
        cwd = os.getcwd()
        added = cwd not in sys.path
        if added:
            sys.path.append(cwd)
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ImportError(
                f"{flag} {name}: cannot import it ({error}). Give a module name "
                "importable from the current folder or the installed packages."
            ) from error
        finally:
            if added:
                sys.path.remove(cwd)
