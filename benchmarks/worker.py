"""The keras_ssr side of the benchmarks: one backend per process.

    KERAS_BACKEND=jax python -m benchmarks.worker SPEC.json RESULT.json

``SPEC.json`` names a task (written by :mod:`benchmarks.run`):

* ``"layers"``: for every layer, shape and compile mode, the forward pass
  (``training=False``) and the forward plus backward pass (``training=True``,
  gradient of ``sum(y * cotangent)`` with respect to the input and every
  trainable weight) are timed; the agreement with the recorded TF 2.14
  fixtures and, given the original's outputs, with the original run live is
  measured with the very functions that are timed.
* ``"model"``: one model (U-Net or SSR-U-Net) in one compile mode: an
  inference batch (``predict_on_batch``) and a training step
  (``train_on_batch``, Adam, binary cross-entropy) are timed.
* ``"prepare"``: the live comparison's inputs and weights (keras_ssr's
  initial weights, batch-normalisation parameters perturbed) are written
  for the reference worker and every backend to load.

:func:`run_task` runs a task in the current process (the tests use it).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from benchmarks import config, measure

# --------------------------------------------------------------------------
# Backends


@dataclass
class Compiled:
    """A layer compiled one way.

    ``forward(x) -> y``; ``vjp(x, cotangent) -> (y, grad_x, grads, state)``
    with ``grads`` the gradients of the trainable weights in the order of
    ``names`` and ``state`` the non-trainable values after the call (``None``
    where the layer's variables were updated in place).
    """

    forward: Callable
    vjp: Callable


def _kwargs(has_training: bool, training: bool) -> dict:
    return {"training": training} if has_training else {}


def _has_training(layer) -> bool:
    return "training" in inspect.signature(layer.call).parameters


class Backend:
    """What differs between TensorFlow, PyTorch and JAX."""

    name = ""

    def setup(self) -> None:
        """float32 throughout: TensorFloat-32 off on GPUs."""

    def device(self) -> dict:
        raise NotImplementedError

    def versions(self) -> dict:
        raise NotImplementedError

    def tensor(self, array: np.ndarray):
        raise NotImplementedError

    def numpy(self, value) -> np.ndarray:
        import keras

        return np.asarray(keras.ops.convert_to_numpy(value))

    def sync(self, out) -> None:
        raise NotImplementedError

    def gpu_hooks(self) -> tuple[Callable | None, Callable | None]:
        return None, None

    def compile_layer(self, layer, mode: str, variables: list) -> Compiled:
        raise NotImplementedError

    def model_jit_compile(self, mode: str) -> bool:
        raise NotImplementedError


class TensorFlowBackend(Backend):
    name = "tensorflow"

    def setup(self):
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
        self.gpus = tf.config.list_physical_devices("GPU")

    def device(self):
        import tensorflow as tf

        if self.gpus:
            details = tf.config.experimental.get_device_details(self.gpus[0])
            return {"type": "gpu", "name": details.get("device_name", "GPU:0")}
        return {"type": "cpu", "name": measure.cpu_name()}

    def versions(self):
        import tensorflow as tf

        return {"tensorflow": tf.__version__}

    def tensor(self, array):
        import tensorflow as tf

        return tf.constant(array)

    def sync(self, out):
        import tensorflow as tf

        if not self.gpus:
            return  # CPU kernels of a tf.function have finished on return.
        sync_devices = getattr(tf.test.experimental, "sync_devices", None)
        if sync_devices is not None:
            sync_devices()
            return
        for leaf in tf.nest.flatten(out):
            if leaf is not None:
                tf.reshape(leaf, [-1])[:1].numpy()

    def gpu_hooks(self):
        import tensorflow as tf

        if not self.gpus:
            return None, None

        def reset():
            tf.config.experimental.reset_memory_stats("GPU:0")

        def peak():
            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20

        return reset, peak

    def compile_layer(self, layer, mode, variables):
        import tensorflow as tf

        xla = mode == "tf.function+XLA"
        has_training = _has_training(layer)

        @tf.function(jit_compile=xla)
        def forward(x):
            return layer(x, **_kwargs(has_training, False))

        @tf.function(jit_compile=xla)
        def vjp_all(x, cotangent):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, **_kwargs(has_training, True))
                loss = tf.reduce_sum(y * cotangent)
            grads = tape.gradient(loss, [x] + [v.value for v in variables])
            weights = [
                tf.zeros_like(v.value) if g is None else g
                for v, g in zip(variables, grads[1:])
            ]
            return y, grads[0], weights

        def run_vjp(x, cotangent):
            y, grad_x, grads = vjp_all(x, cotangent)
            return y, grad_x, list(grads), None

        return Compiled(forward, run_vjp)

    def model_jit_compile(self, mode):
        return mode == "tf.function+XLA"


class TorchBackend(Backend):
    name = "torch"

    def setup(self):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self.cuda = torch.cuda.is_available()

    def device(self):
        import torch

        if self.cuda:
            return {"type": "gpu", "name": torch.cuda.get_device_name(0)}
        return {
            "type": "cpu",
            "name": measure.cpu_name(),
            "threads": torch.get_num_threads(),
        }

    def versions(self):
        import torch

        return {"torch": torch.__version__}

    def tensor(self, array):
        import torch

        return torch.tensor(array, device="cuda" if self.cuda else "cpu")

    def numpy(self, value):
        return np.asarray(value.detach().cpu().numpy())

    def sync(self, out):
        import torch

        if self.cuda:
            torch.cuda.synchronize()

    def gpu_hooks(self):
        import torch

        if not self.cuda:
            return None, None

        def reset():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

        def peak():
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20

        return reset, peak

    def compile_layer(self, layer, mode, variables):
        import torch

        has_training = _has_training(layer)
        params = [v.value for v in variables]

        def forward(x):
            with torch.no_grad():
                return layer(x, **_kwargs(has_training, False))

        def loss_fn(x, cotangent):
            y = layer(x, **_kwargs(has_training, True))
            return y, (y * cotangent).sum()

        if mode == "torch.compile":
            # Fresh caches: every layer and shape compiles on its own, and
            # never falls back to eager on dynamo's recompilation limit.
            torch._dynamo.reset()
            forward = torch.compile(forward)
            loss_fn = torch.compile(loss_fn)

        def vjp(x, cotangent):
            x = x.detach().requires_grad_(True)
            y, loss = loss_fn(x, cotangent)
            grads = torch.autograd.grad(loss, [x, *params], allow_unused=True)
            weights = [
                torch.zeros_like(p) if g is None else g
                for p, g in zip(params, grads[1:])
            ]
            return y.detach(), grads[0], weights, None

        return Compiled(forward, vjp)

    def model_jit_compile(self, mode):
        return mode == "torch.compile"


class JaxBackend(Backend):
    name = "jax"

    def setup(self):
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
        self.platform = jax.devices()[0].platform

    def device(self):
        import jax

        device = jax.devices()[0]
        if self.platform == "cpu":
            return {"type": "cpu", "name": measure.cpu_name()}
        return {"type": self.platform, "name": device.device_kind}

    def versions(self):
        import jax
        import jaxlib

        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}

    def tensor(self, array):
        import jax

        return jax.device_put(array)

    def sync(self, out):
        import jax

        jax.block_until_ready(out)

    def gpu_hooks(self):
        import jax

        if self.platform == "cpu":
            return None, None
        device = jax.devices()[0]

        def peak():
            stats = device.memory_stats() or {}
            value = stats.get("peak_bytes_in_use")
            return None if value is None else value / 2**20

        # XLA's peak cannot be reset: it is the process' peak so far.
        return (lambda: None), peak

    def compile_layer(self, layer, mode, variables):
        import jax
        import jax.numpy as jnp

        has_training = _has_training(layer)
        order = [
            next(i for i, v in enumerate(layer.trainable_variables) if v is w)
            for w in variables
        ]

        @jax.jit
        def forward_(trainable, non_trainable, x):
            y, _ = layer.stateless_call(
                trainable, non_trainable, x, **_kwargs(has_training, False)
            )
            return y

        @jax.jit
        def vjp_(trainable, non_trainable, x, cotangent):
            def loss(trainable, x):
                y, state = layer.stateless_call(
                    trainable, non_trainable, x, **_kwargs(has_training, True)
                )
                return jnp.sum(y * cotangent), (y, state)

            (grad_t, grad_x), (y, state) = jax.grad(loss, argnums=(0, 1), has_aux=True)(
                trainable, x
            )
            return y, grad_x, grad_t, state

        def values():
            return (
                [v.value for v in layer.trainable_variables],
                [v.value for v in layer.non_trainable_variables],
            )

        def forward(x):
            return forward_(*values(), x)

        def vjp(x, cotangent):
            y, grad_x, grad_t, state = vjp_(*values(), x, cotangent)
            return y, grad_x, [grad_t[i] for i in order], state

        return Compiled(forward, vjp)

    def model_jit_compile(self, mode):
        return True


BACKEND_CLASSES = {
    "tensorflow": TensorFlowBackend,
    "torch": TorchBackend,
    "jax": JaxBackend,
}


def get_backend() -> Backend:
    import keras

    backend = BACKEND_CLASSES[keras.backend.backend()]()
    backend.setup()
    return backend


def environment(backend: Backend) -> dict:
    import keras

    import keras_ssr

    return {
        "backend": backend.name,
        "device": backend.device(),
        "versions": {
            "keras": keras.__version__,
            "keras_ssr": keras_ssr.__version__,
            "numpy": np.__version__,
            **backend.versions(),
        },
    }


# --------------------------------------------------------------------------
# Layers


def make_layer(name: str, kwargs: dict):
    import keras_ssr

    return getattr(keras_ssr, name)(**kwargs)


def named_variables(layer) -> tuple[list[str], list, dict]:
    """Trainable weights with their semantic names, and the named state.

    Returns:
        ``(names, variables, state)``: the semantic names and variables of
        the trainable weights (in ``layer.trainable_variables`` order) and
        ``{name: index}`` of the non-trainable ones in
        ``layer.non_trainable_variables``.
    """
    by_id = {id(v): n for n, v in layer.semantic_variables().items()}
    variables = list(layer.trainable_variables)
    names = [by_id.get(id(v), v.path) for v in variables]
    state = {
        by_id[id(v)]: i
        for i, v in enumerate(layer.non_trainable_variables)
        if id(v) in by_id
    }
    return names, variables, state


def evaluate(backend: Backend, layer, compiled: Compiled, x, cotangent) -> dict:
    """The outputs that are compared: forward, training call, gradients."""
    _, _, state_index = named_variables(layer)
    names, _, _ = named_variables(layer)
    out = {"y_inference": backend.numpy(compiled.forward(x))}
    y, grad_x, grads, state = compiled.vjp(x, cotangent)
    out["y_training"] = backend.numpy(y)
    out["grad_x"] = backend.numpy(grad_x)
    for name, grad in zip(names, grads):
        out["grad." + name] = backend.numpy(grad)
    variables = layer.non_trainable_variables
    for name, index in state_index.items():
        value = variables[index].value if state is None else state[index]
        out["after." + name] = backend.numpy(value)
    return out


def compare(ours: dict, expected: dict, skip_channels=()) -> dict:
    """Errors of every array of ``expected`` that ``ours`` has too."""
    arrays = {}
    for key, want in expected.items():
        if key not in ours:
            continue
        got = ours[key]
        per_channel = key == "grad_x"
        if per_channel and skip_channels:
            keep = [c for c in range(want.shape[-1]) if c not in skip_channels]
            got, want = got[..., keep], want[..., keep]
        arrays[key] = measure.error_stats(
            got, want, channel_axis=-1 if per_channel else None
        )
    worst_abs = max((a["max_abs"] for a in arrays.values()), default=None)
    worst_rel = max((a["max_rel"] for a in arrays.values()), default=None)
    return {
        "max_abs": worst_abs,
        "max_rel": worst_rel,
        "ok": worst_rel is not None and worst_rel <= config.RTOL,
        "arrays": arrays,
    }


def fixture_cases(fixtures_dir: str, layer_name: str):
    """``(case, arrays)`` of every recorded case of ``layer_name``."""
    with open(os.path.join(fixtures_dir, "manifest.json")) as f:
        manifest = json.load(f)
    for case in manifest["cases"]:
        if case.get("layer") != layer_name:
            continue
        with np.load(os.path.join(fixtures_dir, case["file"])) as data:
            yield case, {k: data[k] for k in data.files}


def fixture_expected(case: dict, arrays: dict, layer) -> dict:
    """The fixture's arrays under the names :func:`evaluate` gives."""
    expected = {}
    for ours, theirs in (
        ("y_inference", "y_inference"),
        ("y_training", "y_training"),
        ("y_inference", "y"),
        ("y_training", "y"),
        ("grad_x", "grad_x"),
    ):
        if theirs in arrays:
            expected[ours] = arrays[theirs]
    names = layer.semantic_variables()
    for key, value in arrays.items():
        if key.startswith("grad.") and key != "grad_x":
            expected[key] = value
        elif key.startswith("after_training_call."):
            suffix = key[len("after_training_call.") :]
            matches = [n for n in names if n == suffix or n.endswith("." + suffix)]
            if len(matches) == 1:
                expected["after." + matches[0]] = value
    return expected


def fixture_agreement(
    backend: Backend, layer_name: str, mode: str, fixtures_dir: str
) -> dict:
    """Worst error of ``layer_name`` over its recorded cases in ``mode``."""
    from keras_ssr.reference import layer_weight_names, set_layer_weights

    cases, worst = [], {"max_abs": 0.0, "max_rel": 0.0}
    for case, arrays in fixture_cases(fixtures_dir, layer_name):
        layer = make_layer(layer_name, case["kwargs"])
        layer.build(arrays["x"].shape)
        set_layer_weights(layer, {n: arrays[n] for n in layer_weight_names(layer)})
        _, variables, _ = named_variables(layer)
        compiled = backend.compile_layer(layer, mode, variables)
        ours = evaluate(
            backend,
            layer,
            compiled,
            backend.tensor(arrays["x"]),
            backend.tensor(arrays.get("cotangent", np.ones_like(arrays["x"]))),
        )
        skip = (0,) if case.get("input_kind") == "with_constant_channel" else ()
        result = compare(ours, fixture_expected(case, arrays, layer), skip)
        cases.append({"case": case["case"], **result})
        worst["max_abs"] = max(worst["max_abs"], result["max_abs"])
        worst["max_rel"] = max(worst["max_rel"], result["max_rel"])
    return {
        "layer": layer_name,
        "mode": mode,
        "cases": len(cases),
        **worst,
        "ok": bool(cases) and all(c["ok"] for c in cases),
        "details": cases,
    }


def live_paths(live_dir: str, layer_name: str, shape) -> dict:
    key = config.shape_key(shape)
    return {
        "inputs": os.path.join(live_dir, f"inputs_{layer_name}_{key}.npz"),
        "weights": os.path.join(live_dir, f"weights_{layer_name}_{key}.npz"),
        "reference": os.path.join(live_dir, f"reference_{layer_name}_{key}.npz"),
        "float64": os.path.join(live_dir, f"float64_{layer_name}_{key}.npz"),
    }


def _load(path: str) -> dict:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def bench_layers(spec: dict, backend: Backend) -> dict:
    """The ``"layers"`` task."""
    from keras_ssr.reference import set_layer_weights

    warmup, repeats = spec["warmup"], spec["repeats"]
    gpu_reset, gpu_peak = backend.gpu_hooks()
    records, fixtures, live, errors = [], [], [], []
    rng = np.random.default_rng(spec.get("seed", 0))
    for mode in spec["modes"] if spec.get("warm_up", True) else ():
        try:
            warm_up_layers(backend, mode)
        except Exception as exc:  # noqa: BLE001
            errors.append(_error(f"warm-up {mode}", exc))
    for layer_name in spec["layers"]:
        kwargs = config.LAYERS[layer_name]
        for mode in spec["modes"]:
            fixture_layers = spec.get("fixture_layers")
            if spec.get("fixtures_dir") and (
                fixture_layers is None or layer_name in fixture_layers
            ):
                try:
                    fixtures.append(
                        fixture_agreement(
                            backend, layer_name, mode, spec["fixtures_dir"]
                        )
                    )
                except Exception as exc:  # noqa: BLE001 (reported, not hidden)
                    errors.append(_error(f"fixtures {layer_name} {mode}", exc))
        for shape in spec["shapes"]:
            shape = tuple(shape)
            paths = None
            if spec.get("live_dir"):
                paths = live_paths(spec["live_dir"], layer_name, shape)
            if paths and os.path.exists(paths["inputs"]):
                inputs = _load(paths["inputs"])
                x_np, ct_np = inputs["x"], inputs["cotangent"]
            else:
                x_np, ct_np = layer_inputs(layer_name, shape, rng)
            x, cotangent = backend.tensor(x_np), backend.tensor(ct_np)
            for mode in spec["modes"]:
                base = {
                    "suite": "layer",
                    "name": layer_name,
                    "shape": list(shape),
                    "implementation": "keras_ssr",
                    "backend": backend.name,
                    "mode": mode,
                }
                try:
                    layer = make_layer(layer_name, kwargs)
                    layer.build(shape)
                    weights = None
                    if paths and os.path.exists(paths["weights"]):
                        weights = _load(paths["weights"])
                        set_layer_weights(layer, weights)
                    _, variables, _ = named_variables(layer)
                    compiled = backend.compile_layer(layer, mode, variables)
                except Exception as exc:  # noqa: BLE001
                    errors.append(_error(f"{layer_name} {shape} {mode}", exc))
                    for pass_name in config.PASSES:
                        records.append(
                            {
                                **base,
                                "pass": pass_name,
                                "status": "failed",
                                "error": _short(exc),
                            }
                        )
                    continue
                # Timed first, so that the comparison's buffers (which pooling
                # allocators keep) do not hide the benchmark's own memory.
                for pass_name, fn in (
                    ("forward", functools.partial(compiled.forward, x)),
                    ("forward+backward", functools.partial(compiled.vjp, x, cotangent)),
                ):
                    record = {**base, "pass": pass_name}
                    try:
                        with measure.MemoryWindow(gpu_reset, gpu_peak) as memory:
                            timing = measure.time_calls(
                                fn, backend.sync, warmup, repeats, spec.get("budget_s")
                            )
                        record.update(status="ok", **timing, **memory.result())
                    except Exception as exc:  # noqa: BLE001
                        errors.append(_error(f"{layer_name} {shape} {mode}", exc))
                        record.update(status="failed", error=_short(exc))
                    records.append(record)
                    _progress(record)
                if weights is not None and os.path.exists(paths["reference"]):
                    try:
                        # The timed training calls moved the batch-norm
                        # statistics: back to the shared weights first.
                        set_layer_weights(layer, weights)
                        ours = evaluate(backend, layer, compiled, x, cotangent)
                        result = compare(ours, _load(paths["reference"]))
                        if os.path.exists(paths["float64"]):
                            result["vs_float64"] = compare(
                                ours, _load(paths["float64"])
                            )
                        del ours
                        live.append(
                            {
                                "layer": layer_name,
                                "shape": list(shape),
                                "mode": mode,
                                **result,
                            }
                        )
                    except Exception as exc:  # noqa: BLE001
                        errors.append(_error(f"live {layer_name} {shape} {mode}", exc))
                del layer, compiled
    return {
        "records": records,
        "fixtures": fixtures,
        "live": live,
        "errors": errors,
    }


def output_shape(layer_name: str, shape) -> tuple[int, ...]:
    """The layer's output shape for input ``shape`` (channels last)."""
    if layer_name == "LearnableMeasure":
        return (*shape, config.LAYERS[layer_name]["max_scale"])
    return tuple(shape)


def layer_inputs(layer_name: str, shape, rng) -> tuple[np.ndarray, np.ndarray]:
    """A standard-normal input and a cotangent of the output's shape."""
    x = rng.standard_normal(tuple(shape), dtype=np.float32)
    cotangent = rng.standard_normal(output_shape(layer_name, shape), dtype=np.float32)
    return x, cotangent


WARM_SHAPE = (2, 8, 8, 4)


def warm_up_layers(backend: Backend, mode: str) -> None:
    """Runs a tiny SSR once, so that lazily loaded libraries (compilers,
    kernels) are not charged to the first benchmark's time or memory."""
    name = "SingularityStrengthRecalibration"
    layer = make_layer(name, config.LAYERS[name])
    layer.build(WARM_SHAPE)
    _, variables, _ = named_variables(layer)
    compiled = backend.compile_layer(layer, mode, variables)
    x, cotangent = layer_inputs(name, WARM_SHAPE, np.random.default_rng(0))
    x, cotangent = backend.tensor(x), backend.tensor(cotangent)
    backend.sync(compiled.forward(x))
    backend.sync(compiled.vjp(x, cotangent))


def _perturbed(name: str, value: np.ndarray, rng) -> np.ndarray:
    """Moves batch-norm parameters and measure kernels off their defaults."""
    if name.endswith("gamma") or name.endswith("moving_variance"):
        return rng.uniform(0.5, 1.5, value.shape).astype(value.dtype)
    if name.endswith("beta") or name.endswith("moving_mean"):
        return rng.normal(0.0, 0.2, value.shape).astype(value.dtype)
    if name.startswith("measure.kernel"):
        return (value * rng.uniform(0.5, 1.5, value.shape)).astype(value.dtype)
    return value


def prepare(spec: dict, backend: Backend) -> dict:
    """The ``"prepare"`` task: inputs and keras_ssr's weights for the live run."""
    from keras_ssr.reference import get_layer_weights

    live_dir = spec["live_dir"]
    os.makedirs(live_dir, exist_ok=True)
    rng = np.random.default_rng(spec.get("seed", 0))
    written = []
    for shape in spec["shapes"]:
        shape = tuple(shape)
        for layer_name in spec["layers"]:
            paths = live_paths(live_dir, layer_name, shape)
            x, cotangent = layer_inputs(layer_name, shape, rng)
            np.savez(paths["inputs"], x=x, cotangent=cotangent)
            written.append(paths["inputs"])
            layer = make_layer(layer_name, config.LAYERS[layer_name])
            layer.build(shape)
            weights = {
                name: _perturbed(name, value, rng)
                for name, value in get_layer_weights(layer).items()
            }
            np.savez(paths["weights"], **weights)
            written.append(paths["weights"])
    return {"records": [], "written": written, "errors": []}


def float64_truth(spec: dict, backend: Backend) -> dict:
    """The ``"float64"`` task: keras_ssr in float64 on the live inputs.

    Runs on JAX with ``jax_enable_x64`` (set by :func:`run_task`). The
    float64 results arbitrate the live comparison: where keras_ssr and the
    original disagree, the float32 result closer to these is the more
    accurate one. The original's outputs are compared here too.
    """
    from keras_ssr.reference import set_layer_weights

    if backend.name != "jax":
        raise ValueError(
            f"The float64 task runs on JAX. Received: backend={backend.name!r}"
        )
    results, written, errors = [], [], []
    for layer_name in spec["layers"]:
        for shape in spec["shapes"]:
            shape = tuple(shape)
            paths = live_paths(spec["live_dir"], layer_name, shape)
            try:
                inputs, weights = _load(paths["inputs"]), _load(paths["weights"])
                kwargs = dict(config.LAYERS[layer_name], dtype="float64")
                layer = make_layer(layer_name, kwargs)
                layer.build(shape)
                set_layer_weights(
                    layer, {k: v.astype(np.float64) for k, v in weights.items()}
                )
                _, variables, _ = named_variables(layer)
                compiled = backend.compile_layer(layer, "jax.jit", variables)
                truth = evaluate(
                    backend,
                    layer,
                    compiled,
                    backend.tensor(inputs["x"].astype(np.float64)),
                    backend.tensor(inputs["cotangent"].astype(np.float64)),
                )
                np.savez(paths["float64"], **truth)
                written.append(paths["float64"])
                if os.path.exists(paths["reference"]):
                    results.append(
                        {
                            "layer": layer_name,
                            "shape": list(shape),
                            "mode": config.MODES["original"][0],
                            "implementation": "original",
                            **compare(_load(paths["reference"]), truth),
                        }
                    )
                del truth, layer, compiled
            except Exception as exc:  # noqa: BLE001
                errors.append(_error(f"float64 {layer_name} {shape}", exc))
    return {
        "records": [],
        "original_vs_float64": results,
        "written": written,
        "errors": errors,
    }


# --------------------------------------------------------------------------
# Models


def build_model(name: str, model_config: dict):
    from keras_ssr import models

    common = {
        "channels_per_level": list(model_config["channels_per_level"]),
        "input_shape": list(model_config["input_shape"]),
        "n_classes": model_config["n_classes"],
        "with_bn": model_config["with_bn"],
    }
    if name == "unet":
        return models.get_unet(**common)
    return models.get_ssr_unet(
        r=model_config["r"], max_scale=model_config["max_scale"], **common
    )


#: Warms a model process up before its baseline memory is taken.
TINY_MODEL = {
    "channels_per_level": [4, 8],
    "input_shape": [16, 16, 3],
    "n_classes": 2,
    "with_bn": True,
    "r": 2,
    "max_scale": 3,
}


def model_data(model_config: dict, batch_size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    height, width, channels = model_config["input_shape"]
    outputs = 1 if model_config["n_classes"] <= 2 else model_config["n_classes"]
    x = rng.standard_normal((batch_size, height, width, channels), dtype=np.float32)
    y = (rng.random((batch_size, height, width, outputs)) > 0.5).astype(np.float32)
    return x, y


def bench_model(spec: dict, backend: Backend) -> dict:
    """The ``"model"`` task: one model, one compile mode."""
    import keras

    name, mode = spec["model"], spec["mode"]
    model_config = spec["model_config"]
    batch_size = spec["batch_size"]
    warmup, repeats = spec["warmup"], spec["repeats"]
    gpu_reset, gpu_peak = backend.gpu_hooks()
    base = {
        "suite": "model",
        "name": name,
        "shape": [batch_size, *model_config["input_shape"]],
        "implementation": "keras_ssr",
        "backend": backend.name,
        "mode": mode,
    }
    records, errors = [], []
    x, y = model_data(model_config, batch_size, spec.get("seed", 0))

    def compiled_model(model_name, model_config):
        model = build_model(model_name, model_config)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=1e-3),
            loss="binary_crossentropy",
            jit_compile=backend.model_jit_compile(mode),
        )
        return model

    try:
        if spec.get("warm_up_model", True) and gpu_peak is None:
            # On CPU, a tiny U-Net first loads what loads lazily (compilers,
            # kernels, data adapters), so that the RSS baseline leaves it out.
            tiny = compiled_model("unet", TINY_MODEL)
            tiny_x, tiny_y = model_data(TINY_MODEL, 2)
            tiny.predict_on_batch(tiny_x)
            tiny.train_on_batch(tiny_x, tiny_y)
            del tiny
        keras.utils.set_random_seed(spec.get("seed", 0))
        measure.release_freed_memory()
        baseline = measure.rss_mb()
        model = compiled_model(name, model_config)
        parameters = int(model.count_params())
    except Exception as exc:  # noqa: BLE001
        errors.append(_error(f"{name} {mode} build", exc))
        return {
            "records": [
                {**base, "pass": p, "status": "failed", "error": _short(exc)}
                for p in config.MODEL_PASSES
            ],
            "errors": errors,
        }
    records.extend(
        time_model_passes(
            model,
            x,
            y,
            {**base, "parameters": parameters},
            sync=backend.sync,
            timing=(warmup, repeats, spec.get("budget_s")),
            gpu=(gpu_reset, gpu_peak),
            baseline=baseline,
            label=f"{name} {mode}",
            errors=errors,
        )
    )
    return {"records": records, "errors": errors}


def time_model_passes(model, x, y, base, *, sync, timing, gpu, baseline, label, errors):
    """Times one inference batch and one training step of a compiled model.

    Shared by keras_ssr's worker and the original's (``reference_worker``).
    Inference goes first: the training step needs more memory, so its peak is
    not hidden by what inference left in the allocators. ``baseline`` is the
    RSS before the model was built, so weights, optimizer state and compiled
    code count too.
    """
    warmup, repeats, budget_s = timing
    records = []
    for pass_name, fn in (
        ("inference", lambda: model.predict_on_batch(x)),
        ("train_step", lambda: model.train_on_batch(x, y)),
    ):
        record = {**base, "pass": pass_name}
        try:
            with measure.MemoryWindow(*gpu) as memory:
                times = measure.time_calls(fn, sync, warmup, repeats, budget_s)
            result = memory.result()
            if result["peak_rss_mb"] is not None and baseline is not None:
                result["peak_rss_delta_mb"] = round(result["peak_rss_mb"] - baseline, 1)
            record.update(status="ok", **times, **result)
        except Exception as exc:  # noqa: BLE001
            errors.append(_error(f"{label} {pass_name}", exc))
            record.update(status="failed", error=_short(exc))
        records.append(record)
        _progress(record)
    return records


# --------------------------------------------------------------------------
# Entry points


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 400 else text[:400] + " ..."


def _error(where: str, exc: BaseException) -> dict:
    return {
        "where": where,
        "error": _short(exc),
        "traceback": traceback.format_exc(limit=8)[-3000:],
    }


def _progress(record: dict) -> None:
    if os.environ.get("KERAS_SSR_BENCH_QUIET"):
        return
    shape = config.shape_key(record["shape"])
    timing = (
        f"{record['median_ms']:9.2f} ms"
        if record.get("status") == "ok"
        else record.get("error", "failed")
    )
    print(
        f"  [{record['backend']:>10} {record['mode']:<16}] {record['name']:<33} "
        f"{shape:<14} {record['pass']:<16} {timing}",
        file=sys.stderr,
        flush=True,
    )


def run_suite(spec: dict, backend: Backend) -> dict:
    """The ``"suite"`` task: several tasks in one process (``--quick``)."""
    merged: dict = {"records": [], "errors": []}
    for sub in spec["tasks"]:
        result = TASKS[sub["task"]](sub, backend)
        for key, value in result.items():
            if isinstance(value, list):
                merged.setdefault(key, []).extend(value)
    return merged


TASKS = {
    "layers": bench_layers,
    "model": bench_model,
    "prepare": prepare,
    "float64": float64_truth,
    "suite": run_suite,
}


def run_task(spec: dict) -> dict:
    """Runs one task in this process, on the current Keras backend."""
    if spec["task"] == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)
    backend = get_backend()
    if spec.get("backend") not in (None, backend.name):
        raise ValueError(
            f"The spec is for backend {spec['backend']!r} but Keras runs "
            f"{backend.name!r}. Received: spec['backend']={spec['backend']!r}"
        )
    result = TASKS[spec["task"]](spec, backend)
    result["environment"] = environment(backend)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m benchmarks.worker SPEC.json RESULT.json")
        return 2
    with open(argv[0]) as f:
        spec = json.load(f)
    result = run_task(spec)
    with open(argv[1], "w") as f:
        json.dump(result, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
