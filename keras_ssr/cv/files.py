"""Reading and writing the files of a run: config files, atomic JSON/text.

Every file of a run folder is written whole under a temporary name unique to
the writing process and thread, then renamed into place with
:func:`os.replace` (atomic on POSIX and Windows). A reader therefore sees the
previous file or the next one, never a half-written one, and concurrent
writers never share a temporary file.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keras_ssr import _settings

__all__ = [
    "atomic_path",
    "config_to_toml",
    "load_config_file",
    "read_json",
    "remove_temporaries",
    "write_json",
    "write_text",
]


def _load_toml(handle) -> dict:
    return _settings.tomllib().load(handle)


def _load_yaml(handle) -> dict:
    try:
        import yaml
    except ImportError as err:
        raise ImportError(
            "Reading YAML config files needs PyYAML: `pip install pyyaml`. "
            "TOML (.toml) and JSON (.json) config files need nothing extra."
        ) from err
    return yaml.safe_load(handle)


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a configuration file into a dict, by its extension.

    ``.toml`` (standard library ``tomllib``; ``tomli`` on Python 3.10),
    ``.yaml``/``.yml`` (needs PyYAML, imported only then) or ``.json`` (a
    run's saved ``config.json`` reproduces that run).

    Args:
        path: the file.

    Returns:
        The parsed mapping (not yet validated: see
        :meth:`keras_ssr.cv.CVConfig.from_dict`).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: for another extension, a file that does not parse (the
            parser's message is included), or a file that is not a mapping.
        ImportError: for YAML without PyYAML (or TOML on Python 3.10
            without tomli).

    Example:
        >>> load_config_file("kvasir.toml")["dataset"]  # doctest: +SKIP
        'kvasir'
    """
    path = Path(path)
    suffix = path.suffix.lower()
    readers = {".toml": ("rb", _load_toml), ".yaml": ("r", _load_yaml)}
    readers[".yml"] = readers[".yaml"]
    readers[".json"] = ("r", json.load)
    if suffix not in readers:
        raise ValueError(
            "A config file must end with .toml, .yaml, .yml or .json. "
            f"Received: path='{path}'"
        )
    if not path.is_file():
        raise FileNotFoundError(f"The config file does not exist: '{path}'")
    mode, reader = readers[suffix]
    with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
        try:
            values = reader(handle)
        except ImportError:
            raise
        except Exception as err:
            raise ValueError(f"Cannot parse the config file '{path}': {err}") from err
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(
            f"The config file '{path}' must hold a mapping of keys to values. "
            f"Received: {type(values).__name__}"
        )
    return values


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table; TOML has no null: None left out
        pairs = (f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(pairs) + "}"
    return json.dumps(str(value))  # a TOML basic string


def config_to_toml(config) -> str:
    """The configuration as a TOML file (``None`` fields commented out), the
    attention options all of them (:attr:`~keras_ssr.cv.CVConfig.attention_kwargs`).

    Args:
        config: a :class:`keras_ssr.cv.CVConfig`.

    Returns:
        TOML text that :meth:`~keras_ssr.cv.CVConfig.from_file` reads back
        to ``config``.

    Example:
        >>> from keras_ssr.cv import CVConfig
        >>> print(config_to_toml(CVConfig(dataset="folder", images_dir="i",
        ...                                masks_dir="m")).splitlines()[0])
        dataset = "folder"
    """
    lines = []
    values = {**config.to_dict(), "name": config.name}
    for field in dataclasses.fields(config):
        value = values[field.name]
        if value is None:
            lines.append(f"# {field.name} =")
        else:
            lines.append(f"{field.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _temporary_affixes(path: Path) -> tuple[str, str]:
    """The prefix and suffix of :func:`atomic_path`'s temporaries of ``path``."""
    suffix = "".join(path.suffixes) or ".tmp"
    stem = path.name[: len(path.name) - len("".join(path.suffixes))]
    return f".{stem}.", ".tmp" + suffix


def atomic_path(path: Path, write: Callable[[Path], Any]) -> None:
    """Calls ``write(temporary)``, then renames the temporary onto ``path``.

    The temporary file is created next to ``path`` (same file system) with a
    unique name that keeps ``path``'s suffixes (Keras needs
    ``.weights.h5``): ``.<stem>.<random>.tmp<suffixes>``. It is removed if
    ``write`` fails; a process killed before the rename leaves it behind
    (see :func:`remove_temporaries`).
    """
    path = Path(path)
    prefix, suffix = _temporary_affixes(path)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=prefix, suffix=suffix
    )
    os.close(descriptor)
    temporary = Path(temporary)
    try:
        write(temporary)
        os.chmod(temporary, 0o644)  # mkstemp's 0o600 would hide it from others
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def remove_temporaries(path: Path) -> list[Path]:
    """Removes the temporaries that :func:`atomic_path` left for ``path``.

    A process killed between writing a temporary and renaming it leaves the
    temporary behind. Call this only while holding the lock that every
    writer of ``path`` holds while it writes: then no temporary found can
    belong to a live writer.

    Returns:
        The files removed.
    """
    path = Path(path)
    prefix, suffix = _temporary_affixes(path)
    removed = []
    for entry in path.parent.glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"):
        if entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def write_text(path: Path, text: str, newline: str | None = None) -> None:
    """Writes a text file atomically (see :func:`atomic_path`)."""

    def write(temporary: Path) -> None:
        with open(temporary, "w", encoding="utf-8", newline=newline) as handle:
            handle.write(text)

    atomic_path(path, write)


def write_json(path: Path, value) -> None:
    """Writes JSON atomically (see :func:`atomic_path`)."""
    write_text(path, json.dumps(value, indent=2) + "\n")


def read_json(path: Path):
    """The parsed JSON file, or ``None`` if it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None
