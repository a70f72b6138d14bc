"""``keras-ssr cv --distribute``: a fold on two replicas trains one device's model.

Each backend's session trains fold 0 of a tiny SSR-U-Net run with BN on one
device, and with ``--distribute`` on two replicas of each of its engines, in
subprocesses: TensorFlow's ``MirroredStrategy`` over two logical CPU devices
and ``MultiWorkerMirroredStrategy`` over two worker processes (``TF_CONFIG``),
JAX's ``keras.distribution.DataParallel`` over two host devices and over two
processes joined by ``jax.distributed`` (the ``KERAS_DISTRIBUTION_*``
variables), two ``torchrun`` processes over gloo. The worker processes talk
over loopback and have one CPU device each. This file is the subprocesses'
script too.

Both runs share the compiler's flags (TensorFlow and JAX run the one-device
fold in the subprocess too, with XLA's defaults). The comparison is fair by
construction: no shuffling (``--distribute``
orders batches with keras_ssr's seeded order, Keras' ``fit`` with its own),
plain SGD (Adam would turn the rounding-level gradient of a conv bias ahead
of BN into a full step), the per-pixel cross-entropy (a Dice ratio pooled
over the batch is per replica under TensorFlow and torch, as documented).
The global batch of 4 splits 2 + 2; the epoch's last batch of 3 and the
validation batch of 1 do not split, which exercises the uneven paths. The
reference is the one-device run itself: its saved weights, validation
losses and held-out scores. With several processes the chief's refusal of a
run (another configuration) must stop the other processes too, not leave
them waiting for it.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_ssr import cv
from keras_ssr.cv import parallel

BACKEND = keras.backend.backend()
SCRIPT = Path(__file__).resolve()
REPLICAS = 2
N, SIZE = 16, 16
#: Relative to each tensor's largest entry; plus an absolute floor for the
#: conv biases ahead of BN, whose gradient is zero up to rounding.
RTOL, ATOL = 1e-5, 1e-7


#: JAX compiles a step per batch shape, and compiling is most of its time:
#: there fold 0 fits 4 and validates 4 (one shape), elsewhere it fits 7
#: (batches 4 + 3) and validates 1, the uneven paths.
EVEN = {"jax": {"val_fraction": 0.5}}


def _settings(root: Path, name: str, **overrides) -> dict:
    """Fold 0 of a 2-fold run on 16 images: test 8, batch 4."""
    settings = {
        "dataset": "isic",
        "x_path": str(root / "x.npy"),
        "y_path": str(root / "y.npy"),
        "target_size": [SIZE, SIZE],
        "model": "ssr_unet",
        "levels": [4, 8],
        "with_bn": True,
        "folds": 2,
        "val_fraction": 0.125,
        "epochs": 2,
        "batch_size": 4,
        "optimizer": "sgd",
        "learning_rate": 0.05,
        "loss": "ce",
        "shuffle": False,
        "output_dir": str(root / "runs"),
        "name": name,
        **EVEN.get(BACKEND, {}),
    }
    settings.update(overrides)
    return settings


def _write_data(root: Path) -> None:
    """Images whose halves of a batch lie in different ranges."""
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (N, 3, SIZE, SIZE)).astype(np.uint8)
    x[1::2] //= 8  # every odd image dark: each replica's half differs
    y = (x[:, :1] > 60).astype(np.uint8) * 255
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "x.npy", x)
    np.save(root / "y.npy", y)


def _weights(path: Path) -> dict[str, np.ndarray]:
    """A ``.weights.h5`` file's arrays by path; ``--distribute``'s
    ``SynchronizedBatchNormalization`` is filed under Keras' BN name."""
    import h5py

    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name.replace("synchronized_", "")] = obj[()]

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def _val_losses(fold: Path) -> list[float]:
    with open(fold / "log.csv", newline="") as f:
        return [float(row["val_loss"]) for row in csv.DictReader(f)]


def _command(settings: dict) -> list[str]:
    text = json.dumps(settings)
    if BACKEND == "torch":
        return [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nnodes=1", f"--nproc-per-node={REPLICAS}", str(SCRIPT), text,
        ]  # fmt: skip
    return [sys.executable, str(SCRIPT), text]


def _env(**extra) -> dict[str, str]:
    """The subprocesses' environment: one thread, XLA's default flags."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(OMP_NUM_THREADS="1", KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="2")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(one-device run folder, distributed run folder, the subprocess's output)."""
    root = tmp_path_factory.mktemp("cv_distribute")
    _write_data(root)
    one = cv.CVConfig.from_dict(_settings(root, "one"))
    references = []
    if BACKEND == "torch":  # under torchrun every process joins the statistics
        cv.run_cv(one, folds=[0], verbose=0, log=None)
    else:  # in the subprocess, compiled with the same XLA flags
        references = [json.dumps(_settings(root, "one"))]
    env = _env()
    if BACKEND == "jax":
        env.update(
            XLA_FLAGS=f"--xla_force_host_platform_device_count={REPLICAS}",
            JAX_PLATFORMS="cpu",
        )
    proc = subprocess.run(
        [*_command(_settings(root, "two", distribute=True)), *references],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return one.run_dir, root / "runs" / "two", proc.stdout


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _worker_envs() -> list[dict[str, str]]:
    """Each worker's engine variables: two processes on loopback, one CPU
    device each."""
    ports = _free_ports(REPLICAS)
    if BACKEND == "tensorflow":
        cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
        return [
            {
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": i}}
                )
            }
            for i in range(REPLICAS)
        ]
    return [
        {
            "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{ports[0]}",
            "KERAS_DISTRIBUTION_NUM_PROCESSES": str(REPLICAS),
            "KERAS_DISTRIBUTION_PROCESS_ID": str(i),
            "JAX_PLATFORMS": "cpu",
        }
        for i in range(REPLICAS)
    ]


@pytest.fixture(scope="module")
def workers(runs):
    """(one-device run folder, the run folder of two worker processes,
    their output): TensorFlow's ``MultiWorkerMirroredStrategy`` from
    ``TF_CONFIG``, JAX's ``jax.distributed`` from the
    ``KERAS_DISTRIBUTION_*`` variables, as docs/distributed.md launches them."""
    one = runs[0]
    root = one.parent.parent
    settings = json.dumps(_settings(root, "workers", distribute=True))
    processes = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), settings],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(**extra),
        )
        for extra in _worker_envs()
    ]
    try:
        outputs = [p.communicate(timeout=600) for p in processes]
    finally:
        for p in processes:
            p.kill()
            p.wait()
    for p, (out, err) in zip(processes, outputs):
        assert p.returncode == 0, out[-3000:] + err[-6000:]
    return one, root / "runs" / "workers", "".join(out for out, _ in outputs)


def _only(backend: str, engine: str):
    return pytest.mark.skipif(
        BACKEND != backend, reason=f"{engine} runs in the {backend} session"
    )


def _check_fold_equals_one_device(runs, engine: str, processes: int = 1) -> None:
    one, two, output = runs
    assert (
        f"--distribute: {engine}, {REPLICAS} replicas in {processes} process(es)"
        in output
    )
    record_one = json.loads((one / "fold_0" / "metrics.json").read_text())
    record_two = json.loads((two / "fold_0" / "metrics.json").read_text())
    assert (record_one["replicas"], record_two["replicas"]) == (1, REPLICAS)
    assert record_two["best_epoch"] == record_one["best_epoch"] is not None
    want = _weights(one / "fold_0" / "best.weights.h5")
    got = _weights(two / "fold_0" / "best.weights.h5")
    assert sorted(got) == sorted(want) and len(want) > 10
    worst = 0.0
    for name, reference in want.items():
        scale = float(np.max(np.abs(reference)))
        error = float(np.max(np.abs(got[name] - reference)))
        assert error <= RTOL * scale + ATOL, (name, error, scale)
        if scale > 100 * ATOL:
            worst = max(worst, error / scale)
    print(f"{BACKEND}: largest relative weight difference {worst:.2e}")
    np.testing.assert_allclose(
        _val_losses(two / "fold_0"), _val_losses(one / "fold_0"), rtol=RTOL
    )
    for name in ("loss", "dice_coefficient", "binary_accuracy"):
        np.testing.assert_allclose(
            record_two["metrics"][name], record_one["metrics"][name], rtol=RTOL
        )
    # Only the chief wrote: one fold folder, and the summary holds fold 0.
    assert sorted(p.name for p in two.glob("fold_*")) == ["fold_0"]
    summary = json.loads((two / "summary.json").read_text())
    assert summary["finished"] == [0]
    # A global batch the replicas do not divide is refused by name.
    assert (
        f"REFUSED: `batch_size` is the global batch of --distribute and must be "
        f"divisible by the {REPLICAS} replicas"
    ) in output
    assert f"batch_size=3, replicas={REPLICAS}" in output
    # A chief that stops before training (here: another configuration in a
    # run folder with a finished fold) still tells the other processes,
    # which stop too instead of waiting for it.
    assert "REFUSED: The run folder" in output
    stopped = "STOPPED: The chief process of --distribute stopped before training"
    assert output.count(stopped) == processes - 1


@_only("tensorflow", "MirroredStrategy")
def test_tensorflow_mirrored_fold_equals_one_device(runs):
    _check_fold_equals_one_device(runs, "MirroredStrategy")


@_only("tensorflow", "MultiWorkerMirroredStrategy")
def test_tensorflow_multi_worker_fold_equals_one_device(workers):
    _check_fold_equals_one_device(workers, "MultiWorkerMirroredStrategy", REPLICAS)


@_only("jax", "keras.distribution.DataParallel")
def test_jax_data_parallel_fold_equals_one_device(runs):
    _check_fold_equals_one_device(runs, "keras.distribution.DataParallel")


@_only("jax", "jax.distributed")
@pytest.mark.skipif(
    parallel._keras_version() < (3, 11),
    reason="several JAX processes need Keras 3.11 (the runner refuses them before)",
)
def test_jax_multi_process_fold_equals_one_device(workers):
    _check_fold_equals_one_device(workers, "keras.distribution.DataParallel", REPLICAS)


@_only("torch", "torchrun")
def test_torchrun_fold_equals_one_device(runs):
    _check_fold_equals_one_device(runs, "torch.distributed", REPLICAS)


def test_one_device_is_a_noop_with_a_note(tmp_path):
    notes = []
    config = cv.CVConfig.from_dict(_settings(tmp_path, "x", distribute=True))
    replication = parallel.replicate(config, notes.append)
    assert not replication.active and replication.chief
    assert len(notes) == 1 and "the folds train as without it" in notes[0]
    off = dataclasses.replace(config, distribute=False)
    assert not parallel.replicate(off, notes.append).active
    assert len(notes) == 1  # nothing to say without --distribute


def test_distribute_comes_from_flags_and_config_files(tmp_path):
    parser = argparse.ArgumentParser()
    cv.add_arguments(parser)
    settings = _settings(tmp_path, "x")
    flags = ["--dataset", "isic", "--x-path", "x.npy", "--y-path", "y.npy"]
    assert cv.config_from_args(parser.parse_args([*flags, "--distribute"])).distribute
    assert not cv.config_from_args(parser.parse_args(flags)).distribute
    path = tmp_path / "run.toml"
    path.write_text(cv.config_to_toml(cv.CVConfig.from_dict(settings, distribute=True)))
    assert "distribute = true" in path.read_text()
    assert cv.CVConfig.from_file(path).distribute
    with pytest.raises(TypeError, match="`distribute` must be a bool"):
        cv.CVConfig.from_dict({**settings, "training": {"distribute": "yes"}})


def test_replica_batches_give_every_replica_an_even_share():
    from keras_ssr.cv.augment import FlipDataset

    x = np.arange(7 * 2, dtype="float32").reshape(7, 1, 1, 2)
    source = FlipDataset(x, x[..., :1], batch_size=4, flip=False)
    batches = parallel.ReplicaBatches(source, replicas=2)
    assert len(batches) == 2
    np.testing.assert_array_equal(batches[0][0], x[:4])
    # The last batch of 3 goes whole to each of the 2 replicas: the same
    # minimum, maximum, mean and variance as the batch itself.
    last = batches[1][0]
    np.testing.assert_array_equal(last, np.concatenate([x[4:], x[4:]]))
    for statistic in (np.min, np.max, np.mean, np.var):
        assert statistic(last[:3]) == statistic(last) == statistic(last[3:])
    # Two processes get the two halves, in order.
    shares = [parallel.ReplicaBatches(source, 2, 2, p) for p in (0, 1)]
    halves = [share[i][0] for i in (0, 1) for share in shares]
    np.testing.assert_array_equal(np.concatenate(halves[:2]), x[:4])
    np.testing.assert_array_equal(halves[2], x[4:])
    with pytest.raises(ValueError, match="`processes` must divide `replicas`"):
        parallel.ReplicaBatches(source, replicas=3, processes=2)


def _main(settings: dict, reference: dict | None = None) -> None:
    """The subprocess: ``--distribute`` on this backend's two replicas, after
    the one-device ``reference`` run when one is given."""
    if BACKEND == "tensorflow" and not os.environ.get("TF_CONFIG"):
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS
        )
    if reference is not None:
        cv.run_cv(cv.CVConfig.from_dict(reference), folds=[0], verbose=0, log=None)
    config = cv.CVConfig.from_dict(settings)
    result = cv.run_cv(config, folds=[0], verbose=0)
    assert result.trained == [0], result.trained
    try:
        cv.run_cv(dataclasses.replace(config, batch_size=3), log=None)
    except ValueError as error:
        print(f"REFUSED: {error}")
    try:
        cv.run_cv(dataclasses.replace(config, epochs=config.epochs + 1), log=None)
    except cv.ConfigMismatchError as error:
        print(f"REFUSED: {error}")
    except RuntimeError as error:
        print(f"STOPPED: {error}")


if __name__ == "__main__":
    _main(*(json.loads(argument) for argument in sys.argv[1:3]))
