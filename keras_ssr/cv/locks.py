"""Advisory file locks that let several processes share one run folder.

A :class:`FileLock` is an ``flock(2)`` lock on a file under
``<run>/.locks/``. The kernel releases it when its holder exits, however it
exits (``kill -9`` included), so a lock is never stale and never has to be
deleted or guessed at from a pid. The lock files themselves stay (deleting a
lock file while others wait on it would break the lock); the holder writes
its pid and host into an exclusive lock's file, for messages.

The run folder uses three kinds:

* ``run.lock``: held *shared* by every process working in the folder for
  as long as it works, and *exclusively* (briefly) to write ``config.json``
  or to delete results (``--overwrite``). A process whose configuration
  differs from the saved one can then tell whether someone is still
  working with the saved one.
* ``fold_<k>.lock``: held exclusively while fold ``k`` trains. Another
  process skips a held fold; it never deletes it.
* ``summary.lock``: held exclusively while the summary is collected and
  written, so that the last writer has seen every finished fold.

Locks need ``fcntl`` (Linux, macOS and other POSIX systems, and Linux NFS
mounts, where ``flock`` is emulated with ``fcntl`` locks). Where it is
missing (Windows) locking is a no-op: run one process per run folder there.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["LOCK_DIR", "FileLock", "LOCKING"]

LOCK_DIR = ".locks"
#: Whether locks are real on this platform.
LOCKING = fcntl is not None


class FileLock:
    """An ``flock`` lock on ``path``: shared or exclusive, blocking or not.

    Args:
        path: the lock file (created when first acquired).

    Example:
        >>> lock = FileLock("/tmp/example.lock")  # doctest: +SKIP
        >>> with lock.exclusive():  # doctest: +SKIP
        ...     pass
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd = None
        self.mode = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(
        self,
        *,
        shared: bool = False,
        blocking: bool = True,
        create: bool = True,
        record: bool = True,
    ) -> bool:
        """Takes the lock (or converts a held one); returns whether it did.

        Args:
            shared: a shared lock (many holders) instead of an exclusive one.
            blocking: wait for it; otherwise return ``False`` at once when
                another process holds a conflicting lock.
            create: create the lock file if missing; with ``False`` a missing
                file counts as a free lock that was not taken (``False``).
            record: write ``pid@host`` into the file of an exclusive lock.
        """
        if self._fd is None:
            if not create and not self.path.exists():
                return False
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                flags = os.O_RDWR | (os.O_CREAT if create else 0)
                self._fd = os.open(self.path, flags, 0o644)
            except FileNotFoundError:
                return False
        if fcntl is None:  # pragma: no cover - Windows
            self.mode = "shared" if shared else "exclusive"
            return True
        flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (
            0 if blocking else fcntl.LOCK_NB
        )
        try:
            fcntl.flock(self._fd, flags)
        except BlockingIOError:
            # A failed conversion may already have dropped a held lock (Linux
            # removes the old lock first): hold nothing rather than guess.
            os.close(self._fd)
            self._fd, self.mode = None, None
            return False
        self.mode = "shared" if shared else "exclusive"
        if record and not shared:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}@{socket.gethostname()}\n".encode(), 0)
        return True

    def release(self) -> None:
        """Releases the lock (nothing if not held)."""
        if self._fd is None:
            return
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd, self.mode = None, None

    def busy(self) -> bool:
        """Whether another process holds the lock now (a missing file: no)."""
        probe = FileLock(self.path)
        if not probe.acquire(blocking=False, create=False, record=False):
            return self.path.exists()
        probe.release()
        return False

    def owner(self) -> str:
        """The ``pid@host`` its last exclusive holder wrote, or ``"?"``."""
        try:
            return self.path.read_text(encoding="utf-8").strip() or "?"
        except OSError:
            return "?"

    def exclusive(self):
        """A context manager holding the lock exclusively (blocking)."""
        return _Held(self, shared=False)

    def __del__(self):
        try:
            self.release()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


class _Held:
    def __init__(self, lock: FileLock, shared: bool):
        self.lock, self.shared = lock, shared

    def __enter__(self) -> FileLock:
        self.lock.acquire(shared=self.shared)
        return self.lock

    def __exit__(self, *exc) -> None:
        self.lock.release()
