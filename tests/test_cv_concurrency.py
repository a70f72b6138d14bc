"""keras_ssr.cv with several processes in one run folder (a SLURM array).

Real processes where it matters: two ``keras-ssr cv --fold K`` processes run
at once, and a *holder* process stands for a ``--fold 0`` that is still
training (it holds the run and fold locks exactly as the runner does, then
waits). The holder loads ``keras_ssr/cv/locks.py`` alone, so it starts in a
fraction of a second, and is ended with SIGKILL to show that a dead
process leaves no stale lock behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from keras_ssr import cv
from keras_ssr.cv import files, locks
from tests.test_cv import SIZE, _config, _run, _write_arrays

pytestmark = pytest.mark.skipif(not locks.LOCKING, reason="needs fcntl (POSIX)")

#: The start of a helper process's script: keras_ssr/cv/locks.py alone
#: (argv[1]) and the run folder (argv[2]).
LOAD_LOCKS = """
import importlib.util, sys, pathlib
spec = importlib.util.spec_from_file_location("locks", sys.argv[1])
locks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(locks)
run_dir = pathlib.Path(sys.argv[2])
"""
HOLDER = (
    LOAD_LOCKS
    + """
run = locks.FileLock(run_dir / locks.LOCK_DIR / "run.lock")
assert run.acquire(shared=True)
fold = locks.FileLock(run_dir / locks.LOCK_DIR / "fold_0.lock")
assert fold.acquire(blocking=False)
(run_dir / "fold_0").mkdir(exist_ok=True)
(run_dir / "fold_0" / "partial.txt").write_text("epoch 7 of 40")
print("holding", flush=True)
sys.stdin.read()
"""
)


def _snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes and mtime."""
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def holder(tmp_path):
    """Starts a process that holds fold 0 of a run folder; yields (dir, proc)."""
    processes = []

    def start(run_dir: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, locks.__file__, str(run_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        assert process.stdout.readline().strip() == "holding"
        return process

    yield start
    for process in processes:
        process.kill()
        process.wait()


def _cli(data, output, *flags) -> list[str]:
    return [
        sys.executable, "-m", "keras_ssr.cli", "cv", "--dataset", "isic",
        "--x-path", str(data[0]), "--y-path", str(data[1]),
        "--target-size", str(SIZE), "--model", "unet", "--levels", "4,8",
        "-k", "2", "--epochs", "1", "-o", str(output), "--name", "run",
        "--verbose", "0", "--run-eagerly", *flags,
    ]  # fmt: skip


def test_two_concurrent_fold_processes_both_land_in_the_summary(tmp_path):
    data = _write_arrays(tmp_path / "data")
    output = tmp_path / "runs"
    processes = [
        subprocess.Popen(
            _cli(data, output, "--fold", str(k)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in (0, 1)
    ]
    for process in processes:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-2000:]
    run_dir = output / "run"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] == [0, 1] and summary["complete"]
    for k in (0, 1):
        record = json.loads((run_dir / f"fold_{k}" / "metrics.json").read_text())
        assert (
            record["fold"] == k
            and (run_dir / f"fold_{k}" / "best.weights.h5").is_file()
        )
        assert summary["per_fold"][k]["loss"] == record["metrics"]["loss"]
    config = _config(data, output, epochs=1)
    assert json.loads((run_dir / "config.json").read_text()) == config.to_dict()
    # No temporary file is left behind.
    assert not [p for p in run_dir.rglob("*.tmp*")]


def test_concurrent_summary_writers_never_leave_a_corrupt_file(tmp_path):
    config = cv.CVConfig(
        dataset="folder", images_dir="i", masks_dir="m", folds=3,
        output_dir=str(tmp_path), name="run",
    )  # fmt: skip
    run_dir = config.run_dir
    for k in range(3):
        (run_dir / f"fold_{k}").mkdir(parents=True)
        record = {"fold": k, "metrics": {"loss": float(k), "dice_coefficient": 0.5}}
        files.write_json(run_dir / f"fold_{k}" / "metrics.json", record)
    stop, errors, reads = threading.Event(), [], [0]

    def write(n):
        try:
            for _ in range(n):
                cv.write_summary(config, run_dir)
                files.write_json(run_dir / "scratch.json", {"x": list(range(500))})
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    def read():
        while not stop.is_set():
            for name in ("summary.json", "scratch.json"):
                try:
                    text = (run_dir / name).read_text()
                except FileNotFoundError:
                    continue
                value = json.loads(text)  # raises on a partial file
                if name == "summary.json":
                    assert value["finished"] == [0, 1, 2]
                    assert value["mean"]["loss"] == 1.0
                reads[0] += 1

    reader = threading.Thread(target=read)
    writers = [threading.Thread(target=write, args=(60,)) for _ in range(4)]
    reader.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    reader.join()
    assert errors == [] and reads[0] > 0
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".locks", "fold_0", "fold_1", "fold_2", "scratch.json", "summary.csv",
        "summary.json",
    ]  # fmt: skip


def test_different_config_is_refused_before_it_writes(tmp_path, holder, monkeypatch):
    data = _write_arrays(tmp_path / "data")
    config = _config(data, tmp_path / "runs", epochs=40)
    run_dir = config.run_dir
    run_dir.mkdir(parents=True)
    files.write_json(run_dir / "config.json", config.to_dict())
    process = holder(run_dir)  # a --fold 0 --epochs 40 still training
    before = _snapshot(run_dir)

    def no_loading(_config):
        raise AssertionError("the data were loaded before the config was compared")

    monkeypatch.setattr(cv.build, "load_data", no_loading)
    other = dataclasses.replace(config, epochs=3)
    with pytest.raises(
        cv.ConfigMismatchError, match="another process.*epochs: saved 40, now 3"
    ):
        _run(other, folds=[1])
    with pytest.raises(
        cv.ConfigMismatchError, match="--overwrite would delete its work"
    ):
        _run(other, overwrite=True)
    assert _snapshot(run_dir) == before

    # Once that process is gone (even killed), the folder is free again.
    process.send_signal(signal.SIGKILL)
    process.wait()
    folder = cv.rundir.RunFolder(other)
    folder.check(overwrite=False)  # no finished fold, nobody working: accepted


def test_full_run_beside_a_running_fold_leaves_it_alone(tmp_path, holder):
    data = _write_arrays(tmp_path / "data")
    config = _config(data, tmp_path / "runs", epochs=1)
    run_dir = config.run_dir
    run_dir.mkdir(parents=True)
    files.write_json(run_dir / "config.json", config.to_dict())
    process = holder(run_dir)
    result = _run(config)
    assert (result.trained, result.busy) == ([1], [0])
    assert (run_dir / "fold_0" / "partial.txt").read_text() == "epoch 7 of 40"
    assert not (run_dir / "fold_0" / "metrics.json").exists()
    assert json.loads((run_dir / "summary.json").read_text())["finished"] == [1]

    # The holder dies without cleaning up: the next run retrains fold 0.
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    result = _run(config)
    assert (result.trained, result.skipped, result.busy) == ([0], [1], [])
    assert not (run_dir / "fold_0" / "partial.txt").exists()
    assert result.complete


def test_claims_skip_held_and_finished_folds_until_leave(tmp_path, holder):
    """A run claims its folds at once: not one another process holds, not
    one found finished; the claims last until it leaves the run."""
    config = cv.CVConfig(
        dataset="folder", images_dir="i", masks_dir="m", folds=3,
        output_dir=str(tmp_path), name="run",
    )  # fmt: skip
    run_dir = config.run_dir
    run_dir.mkdir(parents=True)
    files.write_json(run_dir / "config.json", config.to_dict())
    process = holder(run_dir)  # holds fold 0
    (run_dir / "fold_1").mkdir()
    files.write_json(run_dir / "fold_1" / "metrics.json", {"fold": 1, "metrics": {}})
    folder = cv.rundir.RunFolder(config)
    folder.enter(None, overwrite=False)
    claimed, busy, finished = folder.claim([0, 1, 2])
    assert (claimed, list(busy), finished) == ([2], [0], [1])
    assert busy[0].startswith(f"{process.pid}@")
    fold_2, fold_1 = folder.fold_lock(2), folder.fold_lock(1)
    assert fold_2.busy() and not fold_1.busy()
    folder.leave()
    assert not fold_2.busy()


SUMMARY_WRITER = (
    LOAD_LOCKS
    + """
lock = locks.FileLock(run_dir / locks.LOCK_DIR / "summary.lock")
assert lock.acquire()  # exclusive, as write_summary holds it while writing
(run_dir / ".summary.live0000.tmp.csv").write_text("fold,loss\\n0,")
print("writing", flush=True)
sys.stdin.read()
"""
)


def test_stale_temporaries_are_removed_but_not_a_live_writers(tmp_path):
    """A writer killed before its rename leaves ``.summary.<random>.tmp.csv``
    (and the like for summary.json, config.json, run.json); the next writer
    of that file removes it under the lock all its writers hold, so that a
    temporary of a writer still at work is never touched."""
    config = cv.CVConfig(
        dataset="folder", images_dir="i", masks_dir="m", folds=2,
        output_dir=str(tmp_path / "runs"), name="run",
    )  # fmt: skip
    run_dir = config.run_dir
    run_dir.mkdir(parents=True)
    stale = [
        ".summary.k1ll3d00.tmp.csv",
        ".summary.k1ll3d01.tmp.json",
        ".config.k1ll3d02.tmp.json",
        ".run.k1ll3d03.tmp.json",
    ]
    others = ["notes.tmp.csv", ".summary.csv.bak", "fold_0.tmp.json"]
    for name in stale + others:
        (run_dir / name).write_text("partial")

    cv.write_summary(config, run_dir)
    left = {p.name for p in run_dir.iterdir()}
    assert left.isdisjoint(stale[:2]) and set(stale[2:] + others) <= left
    folder = cv.rundir.RunFolder(config, log=lambda *_: None)
    folder.enter(None, overwrite=False)  # alone: the run lock is exclusive
    folder.leave()
    left = {p.name for p in run_dir.iterdir()}
    assert left.isdisjoint(stale) and set(others) <= left

    # A live writer holds the summary lock: its temporary stays while it works.
    writer = subprocess.Popen(
        [sys.executable, "-c", SUMMARY_WRITER, locks.__file__, str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "writing"
        live = run_dir / ".summary.live0000.tmp.csv"
        summarizer = threading.Thread(target=cv.write_summary, args=(config, run_dir))
        summarizer.start()
        summarizer.join(timeout=1.0)
        assert summarizer.is_alive() and live.exists()  # waits for the lock
        writer.kill()  # killed before its rename: the kernel drops its lock
        writer.wait()
        summarizer.join(timeout=60)
        assert not summarizer.is_alive() and not live.exists()
    finally:
        writer.kill()
        writer.wait()
    assert (run_dir / "summary.json").is_file()
