"""The run folder: its configuration check, resume and sharing between processes.

Several processes may work in one run folder at once (a SLURM array running
``--fold K`` each). The rules, enforced with the locks of
:mod:`keras_ssr.cv.locks`:

* The configuration is compared with the saved ``config.json`` before any
  work, and again under the run lock before anything is written. A
  different configuration is refused while some fold is finished or while
  another process works in the folder; a folder with neither simply takes
  the new configuration.
* A fold is trained only under its lock. A fold another live process holds is
  skipped, never deleted; a fold without ``metrics.json`` and without a
  holder was interrupted and restarts from scratch.
* ``--overwrite`` deletes results only when no other process works in the
  folder.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from keras_ssr.cv import files
from keras_ssr.cv.config import CVConfig
from keras_ssr.cv.locks import LOCK_DIR, FileLock
from keras_ssr.cv.results import (
    CONFIG_FILE,
    METRICS_FILE,
    RUN_FILE,
    SUMMARY_CSV,
    SUMMARY_JSON,
    finished,
)

__all__ = ["ConfigMismatchError", "RunFolder"]

_FOLD_DIR = re.compile(r"fold_\d+")


class ConfigMismatchError(ValueError):
    """An output folder holds a run whose configuration or data differ, or
    another process is working in it."""


def any_finished(run_dir: Path) -> bool:
    """Whether some ``fold_<k>/metrics.json`` exists in ``run_dir``."""
    return run_dir.is_dir() and any(
        (entry / METRICS_FILE).is_file()
        for entry in run_dir.iterdir()
        if _FOLD_DIR.fullmatch(entry.name)
    )


def _our_entries(run_dir: Path) -> list[Path]:
    names = {CONFIG_FILE, RUN_FILE, SUMMARY_CSV, SUMMARY_JSON}
    return sorted(
        entry
        for entry in run_dir.iterdir()
        if entry.name in names or (entry.is_dir() and _FOLD_DIR.fullmatch(entry.name))
    )


def _mismatch(run_dir: Path, differences: list[str], why: str) -> ConfigMismatchError:
    return ConfigMismatchError(
        f"The run folder '{run_dir}' holds a run with another configuration "
        f"({why}); differing fields: "
        + "; ".join(differences)
        + ". Choose another name/output_dir, or pass overwrite=True "
        "(--overwrite) to delete its results and start afresh."
    )


class RunFolder:
    """One process's share of a run folder.

    Args:
        config: the configuration of this process.
        log: where messages go.
    """

    def __init__(self, config: CVConfig, log: Callable[[str], object] = print):
        self.config = config
        self.path = config.run_dir
        self.log = log
        self._run_lock = FileLock(self.path / LOCK_DIR / "run.lock")
        self._fold_locks: dict[int, FileLock] = {}

    # -- checks that write nothing ---------------------------------------

    def check(self, overwrite: bool, alone: bool = False) -> None:
        """Refuses a configuration that differs from the saved one while the
        saved one is in use (finished folds, or a process working in the
        folder). Reads only.

        Args:
            overwrite: whether the results are to be deleted.
            alone: the caller holds the run lock exclusively (no other
                process can be working in the folder).

        Raises:
            NotADirectoryError: if the run folder is a file.
            ConfigMismatchError: as described.
        """
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"The run folder is a file: '{self.path}'")
        if not self.path.is_dir():
            return
        if overwrite:
            if not alone and self._run_lock.busy():
                raise ConfigMismatchError(
                    f"Another process ({self._fold_owners()}) is working in the run "
                    f"folder '{self.path}'; --overwrite would delete its work. Wait "
                    "for it to end, or choose another name/output_dir."
                )
            return
        saved = files.read_json(self.path / CONFIG_FILE)
        finished = any_finished(self.path)
        if saved is None:
            if finished:
                raise ConfigMismatchError(
                    f"The run folder '{self.path}' holds finished folds but no "
                    f"readable {CONFIG_FILE}; pass overwrite=True (--overwrite) to "
                    "delete them and start afresh."
                )
            return
        differences = self.config.differences(saved)
        if not differences:
            return
        if finished:
            raise _mismatch(self.path, differences, "some folds are finished")
        if not alone and self._run_lock.busy():
            raise _mismatch(
                self.path,
                differences,
                f"another process is working with it: {self._fold_owners()}",
            )

    def _fold_owners(self) -> str:
        owners = []
        for lock in sorted((self.path / LOCK_DIR).glob("fold_*.lock")):
            fold = FileLock(lock)
            if fold.busy():
                owners.append(f"{lock.stem} held by {fold.owner()}")
        return ", ".join(owners) or "no fold held yet"

    # -- taking part -------------------------------------------------------

    def enter(self, fingerprint: dict | None, overwrite: bool) -> None:
        """Joins the run: checks again and writes ``config.json``/``run.json``
        under the exclusive run lock, then holds it shared until :meth:`leave`.

        Args:
            fingerprint: the data's, recorded in ``run.json`` and compared with
                a recorded one (``None``: not compared).
            overwrite: delete the previous results first (only when no other
                process works in the folder).

        Raises:
            ConfigMismatchError: for another configuration or other data in
                use, or ``overwrite`` beside another process.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self._run_lock
        if lock.acquire(blocking=False, record=False):  # nobody else works here
            try:
                self.check(overwrite, alone=True)
                if overwrite:
                    self._clear()
                for name in (CONFIG_FILE, RUN_FILE):  # left by a killed writer
                    files.remove_temporaries(self.path / name)
                self._record_data(fingerprint, alone=True)
                if files.read_json(self.path / CONFIG_FILE) != self.config.to_dict():
                    files.write_json(self.path / CONFIG_FILE, self.config.to_dict())
            except BaseException:
                lock.release()
                raise
        elif overwrite:
            self.check(overwrite=True)  # raises: someone works here
        # Shared from here on. Converting is not atomic, so check once more.
        lock.acquire(shared=True)
        try:
            saved = files.read_json(self.path / CONFIG_FILE)
            if saved is None:
                raise ConfigMismatchError(
                    f"The run folder '{self.path}' has no readable {CONFIG_FILE} "
                    "although another process works in it; try again."
                )
            differences = self.config.differences(saved)
            if differences:
                raise _mismatch(
                    self.path, differences, "another process is working with it"
                )
            self._record_data(fingerprint, alone=False)
        except BaseException:
            lock.release()
            raise

    def leave(self) -> None:
        """Ends this process's share of the run: releases the locks of the
        folds it claimed, then the run lock."""
        for lock in self._fold_locks.values():
            lock.release()
        self._fold_locks.clear()
        self._run_lock.release()

    def _clear(self) -> None:
        entries = _our_entries(self.path)
        if entries:
            self.log(f"--overwrite: removing the previous results in '{self.path}'")
        for entry in entries:
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def _record_data(self, fingerprint: dict | None, alone: bool) -> None:
        """Compares the data with the recorded fingerprint; records it if alone."""
        if fingerprint is None:
            return
        import keras

        from keras_ssr import __version__

        path = self.path / RUN_FILE
        record = files.read_json(path)
        saved = record.get("data") if isinstance(record, dict) else None
        if saved == fingerprint:
            return
        if saved is not None and (not alone or any_finished(self.path)):
            changes = ", ".join(
                f"{key}: saved {saved.get(key)!r}, now {value!r}"
                for key, value in fingerprint.items()
                if saved.get(key) != value
            )
            raise ConfigMismatchError(
                f"The data differ from those of the run in '{self.path}' ({changes}). "
                "Pass overwrite=True (--overwrite) to start afresh."
            )
        if alone:
            files.write_json(
                path,
                {
                    "data": fingerprint,
                    "keras_ssr": __version__,
                    "keras": keras.__version__,
                    "backend": keras.backend.backend(),
                    "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                },
            )

    # -- folds -------------------------------------------------------------

    def fold_lock(self, k: int) -> FileLock:
        """The lock of fold ``k`` (not yet taken)."""
        return FileLock(self.path / LOCK_DIR / f"fold_{k}.lock")

    def claim(self, folds) -> tuple[list[int], dict[int, str], list[int]]:
        """Takes the locks of ``folds`` that this process is to train; they
        are held until :meth:`leave`. Call it between :meth:`enter` and
        :meth:`leave`.

        Returns:
            ``(claimed, busy, finished)``: the folds whose locks it took;
            those another live process holds, with that process's
            ``pid@host``; those finished meanwhile (found finished once
            their lock was taken, which is then released).
        """
        claimed, busy, done = [], {}, []
        for k in folds:
            lock = self.fold_lock(k)
            if not lock.acquire(blocking=False):
                busy[k] = lock.owner()
            elif finished(self.path, k) is not None:
                lock.release()
                done.append(k)
            else:
                self._fold_locks[k] = lock
                claimed.append(k)
        return claimed, busy, done
