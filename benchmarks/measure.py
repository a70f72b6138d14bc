"""Timing and memory measurement, shared by every worker.

Standard library and NumPy only (the reference worker imports it under
TensorFlow 2.14 with ``numpy<2``).

Memory on CPU is the process' resident set size (RSS). Linux keeps its
high-water mark (``VmHWM`` in ``/proc/self/status``) and lets a process
reset it to the current RSS (writing ``5`` to ``/proc/self/clear_refs``), so
every benchmark reports

* ``peak_rss_mb``: the highest RSS of the process while that benchmark ran
  (framework, compiled code and every live buffer included), and
* ``peak_rss_delta_mb``: that peak minus the RSS just before the benchmark
  started (its inputs already allocated): the memory the benchmark needed
  on top of what the process held.

Allocators keep freed memory, so a benchmark that runs after a larger one
could reuse it without raising the RSS: every window starts by returning
freed heap memory to the OS (``malloc_trim``), and the models are timed in a
fresh process each, after a tiny warm-up model has loaded the libraries
that load lazily (compilers, kernels). On GPU the allocator's own peak is
reported instead (``gpu_peak_mb``).
"""

from __future__ import annotations

import gc
import os
import platform
import re
import statistics
import time
from collections.abc import Callable

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_kb(field: str) -> int | None:
    try:
        with open(_STATUS) as f:
            match = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


_LIBC = None


def release_freed_memory() -> None:
    """Collects garbage and returns freed heap memory to the OS.

    glibc keeps freed blocks in its arenas, so a benchmark that follows a
    larger one could reuse them without raising the RSS; ``malloc_trim(0)``
    hands them back first (TensorFlow, XLA:CPU and PyTorch allocate CPU
    memory through malloc).
    """
    global _LIBC
    gc.collect()
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
        except OSError:
            _LIBC = False
    if _LIBC:
        try:
            _LIBC.malloc_trim(0)
        except AttributeError:
            pass


def rss_mb() -> float | None:
    """The current resident set size in MiB (``None`` off Linux)."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


def reset_peak_rss() -> bool:
    """Resets the RSS high-water mark to the current RSS; ``False`` if unable."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float | None:
    """The RSS high-water mark in MiB since the last reset."""
    kb = _status_kb("VmHWM")
    if kb is None:
        try:
            import resource

            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        except (ImportError, OSError):
            return None
    return kb / 1024


class MemoryWindow:
    """Measures the peak RSS (and, given hooks, GPU memory) of a block.

    Example:
        >>> with MemoryWindow() as memory:
        ...     buffer = bytearray(10 * 2**20)
        >>> memory.result()["peak_rss_delta_mb"] >= 0
        True
    """

    def __init__(
        self,
        gpu_reset: Callable[[], None] | None = None,
        gpu_peak: Callable[[], float | None] | None = None,
    ):
        self._gpu_reset = gpu_reset
        self._gpu_peak = gpu_peak
        self.base = None
        self.peak = None
        self.gpu = None
        self.resettable = False

    def __enter__(self):
        release_freed_memory()
        self.resettable = reset_peak_rss()
        self.base = rss_mb()
        if self._gpu_reset is not None:
            self._gpu_reset()
        return self

    def __exit__(self, *exc):
        self.peak = peak_rss_mb()
        if self._gpu_peak is not None:
            self.gpu = self._gpu_peak()
        return False

    def result(self) -> dict:
        delta = None
        if self.resettable and self.peak is not None and self.base is not None:
            delta = max(0.0, self.peak - self.base)
        return {
            "peak_rss_mb": _round(self.peak),
            "peak_rss_delta_mb": _round(delta),
            "gpu_peak_mb": _round(self.gpu),
        }


def _round(value, digits: int = 1):
    return None if value is None else round(float(value), digits)


def time_calls(
    fn: Callable[[], object],
    sync: Callable[[object], object],
    warmup: int,
    repeats: int,
    budget_s: float | None = None,
    min_repeats: int = 3,
) -> dict:
    """Calls ``fn`` ``warmup`` times, then times up to ``repeats`` calls.

    ``sync`` waits for the result (``block_until_ready``, a CUDA
    synchronisation) so that asynchronous backends are timed to completion.
    The first call, which traces and compiles, is reported separately as
    ``first_call_ms``. With ``budget_s``, slow benchmarks stop early: further
    warm-up calls only while the warm-up has taken under a quarter of the
    budget, and timed calls only while they have taken under the budget,
    but at least ``min_repeats`` (or ``repeats`` if fewer) of them.

    Returns:
        ``{"median_ms", "min_ms", "times_ms", "first_call_ms"}``.
    """
    warmup = max(1, int(warmup))
    repeats = max(1, int(repeats))
    start = time.perf_counter()
    sync(fn())
    first = time.perf_counter() - start
    spent = first
    for _ in range(warmup - 1):
        if budget_s is not None and spent > 0.25 * budget_s:
            break
        start = time.perf_counter()
        sync(fn())
        spent += time.perf_counter() - start
    times: list[float] = []
    floor = min(repeats, max(1, int(min_repeats)))
    while len(times) < repeats:
        if budget_s is not None and len(times) >= floor and sum(times) > budget_s:
            break
        start = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - start)
    return {
        "median_ms": round(statistics.median(times) * 1e3, 3),
        "min_ms": round(min(times) * 1e3, 3),
        "times_ms": [round(t * 1e3, 3) for t in times],
        "first_call_ms": round(first * 1e3, 1),
    }


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo``), or ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info() -> dict:
    """CPU, core count, memory and OS of this machine."""
    total = None
    try:
        with open("/proc/meminfo") as f:
            match = re.search(r"MemTotal:\s+(\d+)", f.read())
            total = round(int(match.group(1)) / 2**20, 1) if match else None
    except OSError:
        pass
    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_gib": total,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def error_stats(actual, expected, channel_axis: int | None = None) -> dict:
    """Max absolute error and the fixtures' relative error of one array.

    The relative error is ``max|a - e| / max(1, max|e|)``; with
    ``channel_axis`` it is taken per channel and the worst channel reported
    (input gradients: a channel's argmin/argmax entries are long cancelling
    sums). Non-finite values in ``actual`` give ``inf``.
    """
    import numpy as np

    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise ValueError(f"shape {a.shape} != expected {e.shape}")
    if a.size == 0:
        return {"max_abs": 0.0, "max_rel": 0.0}
    if not np.all(np.isfinite(a)):
        return {"max_abs": float("inf"), "max_rel": float("inf")}
    diff = np.abs(a - e)
    if channel_axis is None:
        rel = float(diff.max() / max(1.0, float(np.abs(e).max())))
    else:
        axes = tuple(i for i in range(a.ndim) if i != channel_axis % a.ndim)
        scale = np.maximum(1.0, np.abs(e).max(axis=axes))
        rel = float((diff.max(axis=axes) / scale).max())
    return {"max_abs": float(diff.max()), "max_rel": rel}
