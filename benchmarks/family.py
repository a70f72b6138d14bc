"""The follow-up's recalibration family, timed beside the follow-up's own code.

    python -m benchmarks.family --followup-repo PATH [--shape 4x56x56x128]

Times forward + backward of each family layer (SE, scSE, SRM, FCA, Mono,
Multi) on every keras_ssr backend and in the follow-up's TF 2.14 code
(``miguelmartins/multifractal-recalibration``), on the same input, and
reports each backend's agreement with the follow-up (inference outputs,
with the follow-up's weights loaded through :mod:`keras_ssr.porting`).

The follow-up runs in the TF 2.14 interpreter of ``--followup-python``
(default ``.nox/bench-reference/bin/python``, the original's benchmark
venv) with its checkout first on ``sys.path``: its ``neural_components``
is imported from there at run time, never copied here. Each keras_ssr
backend runs in ``.nox/tests-<backend>/bin/python``. Standard library and
NumPy only at import time.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent

#: Layer name -> constructor arguments, identical on both sides (the
#: follow-up builders' defaults).
FAMILY = {
    "SqueezeExcite": {"r": 2},
    "SpatialSqueezeExcite": {"r": 2},
    "StyleBasedRecalibration": {},
    "FrequencyChannelAttention": {"r": 2, "low_freq": 4},
    "MonofractalRecalibration": {"r": 2, "max_scale": 3},
    "MultifractalRecalibration": {"max_scale": 3, "k": 16, "per_channel": False},
}
BACKENDS = ("tensorflow", "torch", "jax")


def _timed(step, repeats: int) -> float:
    step()  # compiles
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats * 1e3


def _followup_worker(spec: dict) -> dict:
    sys.path.insert(0, os.path.abspath(spec["followup_repo"]))
    import tensorflow as tf
    from neural_components import attention

    x = tf.constant(np.load(spec["input"]))
    result = {}
    for name, kwargs in FAMILY.items():
        layer = getattr(attention, name)(**kwargs)
        y = layer(x, training=False)
        np.savez(
            os.path.join(spec["dir"], f"{name}.npz"),
            y=y.numpy(),
            **{f"w:{v.name}": v.numpy() for v in layer.weights},
        )

        @tf.function
        def step(x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                total = tf.reduce_sum(layer(x, training=True))
            return tape.gradient(total, [x, *layer.trainable_variables])

        result[name] = _timed(
            lambda: [g.numpy() for g in step(x) if g is not None], spec["repeats"]
        )
    return result


def _keras_ssr_worker(spec: dict) -> dict:
    import keras

    from keras_ssr import layers
    from keras_ssr.porting import keras_names, set_layer_weights

    x = np.load(spec["input"])
    result = {}
    for name, kwargs in FAMILY.items():
        layer = getattr(layers, name)(**kwargs)
        layer(x)
        recorded = np.load(os.path.join(spec["dir"], f"{name}.npz"))
        weights = {k[2:]: recorded[k] for k in recorded.files if k.startswith("w:")}
        arrays = {
            w.slot.split("/", 1)[1]: w.value
            for w in keras_names.parse_variable_names(weights)
            if ".box_" not in w.slot
        }
        set_layer_weights(layer, arrays)
        y = keras.ops.convert_to_numpy(layer(x, training=False))
        expected = recorded["y"]
        error = float(np.max(np.abs(y - expected)) / max(1.0, np.max(np.abs(expected))))
        step = _gradient_step(layer, x)
        result[name] = {"ms": _timed(step, spec["repeats"]), "error": error}
    return result


def _gradient_step(layer, x):
    """A compiled forward + backward of ``sum(layer(x))`` on this backend."""
    import keras

    backend = keras.backend.backend()
    variables = layer.trainable_variables
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                total = tf.reduce_sum(layer(x, training=True))
            return tape.gradient(total, [x, *[v.value for v in variables]])

        return lambda: [g.numpy() for g in step(xt) if g is not None]
    if backend == "jax":
        import jax

        def loss(values, non_trainable, x):
            y, _ = layer.stateless_call(values, non_trainable, x, training=True)
            return jax.numpy.sum(y)

        grad = jax.jit(jax.grad(loss, argnums=(0, 2)))
        values = [v.value for v in layer.trainable_variables]
        fixed = [v.value for v in layer.non_trainable_variables]
        xj = jax.numpy.asarray(x)
        return lambda: jax.block_until_ready(grad(values, fixed, xj))
    import torch

    xt = torch.tensor(x, requires_grad=True)

    def step():
        total = layer(xt, training=True).sum()
        layer.zero_grad(set_to_none=True)
        total.backward()

    return step


def _spawn(python: str, backend: str | None, spec: dict) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(spec, file)
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    if backend:
        env["KERAS_BACKEND"] = backend
    command = [python, "-m", "benchmarks.family", "--worker", file.name]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.family")
    parser.add_argument("--followup-repo", metavar="PATH")
    parser.add_argument(
        "--followup-python", default=str(REPO / ".nox/bench-reference/bin/python")
    )
    parser.add_argument("--shape", default="4x56x56x128")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(pathlib.Path(args.worker).read_text())
        work = _followup_worker if spec["side"] == "followup" else _keras_ssr_worker
        print(json.dumps(work(spec)))
        return 0
    if not args.followup_repo or not os.path.isdir(
        os.path.join(args.followup_repo, "neural_components")
    ):
        parser.error(
            "--followup-repo must name a checkout of "
            "miguelmartins/multifractal-recalibration. "
            f"Received: followup_repo={args.followup_repo!r}"
        )
    shape = tuple(int(s) for s in args.shape.split("x"))
    with tempfile.TemporaryDirectory() as work:
        rng = np.random.default_rng(0)
        np.save(os.path.join(work, "x.npy"), rng.normal(size=shape).astype("float32"))
        spec = {"input": os.path.join(work, "x.npy"), "dir": work}
        spec["repeats"] = args.repeats
        theirs = _spawn(
            args.followup_python,
            None,
            {**spec, "side": "followup", "followup_repo": args.followup_repo},
        )
        ours = {}
        for backend in args.backends.split(","):
            python = str(REPO / f".nox/tests-{backend}/bin/python")
            ours[backend] = _spawn(python, backend, {**spec, "side": "keras_ssr"})
    header = "| layer | follow-up (ms) | " + " | ".join(
        f"{b} ms (x faster, error)" for b in ours
    )
    print(f"forward + backward, input {args.shape}\n")
    print(header + " |")
    print("|" + " --- |" * (2 + len(ours)))
    for name in FAMILY:
        cells = [
            f"{r[name]['ms']:.1f} ({theirs[name] / r[name]['ms']:.2f}x, "
            f"{r[name]['error']:.1e})"
            for r in ours.values()
        ]
        print(f"| {name} | {theirs[name]:.1f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
