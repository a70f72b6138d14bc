"""The original TF 2.14 implementation's side of the benchmarks.

    python -m benchmarks.reference_worker SPEC.json RESULT.json

Runs in its own virtual environment (``tensorflow-cpu==2.14.1``,
``numpy<2``; see :mod:`benchmarks.run`) with the original's checkout
(``miguelmartins/ssr``) named by ``spec["reference_repo"]`` put first on
``sys.path``: its ``neural_components`` and ``models`` packages are
imported from there. Nothing of the original is copied into this
repository.

Tasks, as in :mod:`benchmarks.worker`:

* ``"layers"``: times the original's ``SqueezeExcite``,
  ``LocalSingularityStrength``, ``SingularityStrengthRecalibration`` and
  ``LearnableMeasure`` the way its users ran them (``tf.function``, no
  XLA); checks that the weight mapping reproduces the recorded fixtures;
  and, for the live comparison, loads keras_ssr's weights and inputs,
  and writes the original's outputs and gradients for every backend to
  compare against.
* ``"model"``: its ``get_unet`` / ``get_ssr_unet``, an inference batch and a
  training step (``model.compile(Adam, binary cross-entropy)``).
"""

from __future__ import annotations

import functools
import json
import os
import sys

import numpy as np

from benchmarks import config, measure
from benchmarks.worker import (
    WARM_SHAPE,
    _error,
    _load,
    _progress,
    _short,
    compare,
    fixture_cases,
    layer_inputs,
    live_paths,
    time_model_passes,
)

BN_NAMES = ("gamma", "beta", "moving_mean", "moving_variance")


def _import_original(repo: str):
    repo = os.path.abspath(repo)
    if not os.path.isdir(os.path.join(repo, "neural_components")):
        raise ValueError(
            "The reference checkout must hold the original's neural_components/ "
            f"and models/ packages. Received: reference_repo={repo!r}"
        )
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from neural_components import attention, fractal_geometry

    return {
        "SqueezeExcite": attention.SqueezeExcite,
        "SingularityStrengthRecalibration": attention.SingularityStrengthRecalibration,
        "LocalSingularityStrength": fractal_geometry.LocalSingularityStrength,
        "LearnableMeasure": fractal_geometry.LearnableMeasure,
    }


class Reference:
    """TensorFlow 2.14 helpers: device, sync, memory hooks."""

    def __init__(self):
        import tensorflow as tf

        self.tf = tf
        tf.config.experimental.enable_tensor_float_32_execution(False)
        self.gpus = tf.config.list_physical_devices("GPU")

    def environment(self, repo: str) -> dict:
        tf = self.tf
        if self.gpus:
            details = tf.config.experimental.get_device_details(self.gpus[0])
            device = {"type": "gpu", "name": details.get("device_name", "GPU:0")}
        else:
            device = {"type": "cpu", "name": measure.cpu_name()}
        return {
            "backend": "original",
            "device": device,
            "versions": {
                "tensorflow": tf.__version__,
                "tf.keras": getattr(tf.keras, "__version__", tf.__version__),
                "numpy": np.__version__,
            },
            "reference_repo": os.path.abspath(repo),
        }

    def sync(self, out):
        if not self.gpus:
            return
        tf = self.tf
        sync_devices = getattr(tf.test.experimental, "sync_devices", None)
        if sync_devices is not None:
            sync_devices()
            return
        for leaf in tf.nest.flatten(out):
            if leaf is not None:
                tf.reshape(leaf, [-1])[:1].numpy()

    def gpu_hooks(self):
        if not self.gpus:
            return None, None
        tf = self.tf

        def reset():
            tf.config.experimental.reset_memory_stats("GPU:0")

        def peak():
            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20

        return reset, peak


def original_variables(layer_name: str, layer) -> dict:
    """The original layer's variables under keras_ssr's semantic names."""
    names = {}
    if layer_name in ("SqueezeExcite", "SingularityStrengthRecalibration"):
        names.update(
            {
                "squeeze.kernel": layer.w1.kernel,
                "squeeze.bias": layer.w1.bias,
                "excite.kernel": layer.w2.kernel,
                "excite.bias": layer.w2.bias,
            }
        )
    if layer_name == "SingularityStrengthRecalibration":
        bn = layer.alpha_layer.bn
        names.update({f"alpha.bn.{n}": getattr(bn, n) for n in BN_NAMES})
    if layer_name == "LocalSingularityStrength":
        names.update({f"bn.{n}": getattr(layer.bn, n) for n in BN_NAMES})
    if layer_name == "LearnableMeasure":
        for size, op in enumerate(layer.op_list, start=1):
            names[f"measure.kernel_{size}"] = op.shared_conv.kernel
    return names


def set_original_weights(layer_name: str, layer, arrays: dict) -> None:
    """Assigns keras_ssr-named arrays to the original layer."""
    variables = original_variables(layer_name, layer)
    missing = sorted(set(variables) - set(arrays))
    if missing:
        raise ValueError(f"No values for the original's weights {missing}")
    for name, variable in variables.items():
        variable.assign(np.asarray(arrays[name]).reshape(variable.shape))


def build_original(ref: Reference, classes: dict, layer_name: str, kwargs, shape):
    """Constructs and builds (by one inference call) an original layer."""
    layer = classes[layer_name](**kwargs)
    layer(ref.tf.zeros(shape), training=False)
    return layer


def compile_original(ref: Reference, layer_name: str, layer):
    """``forward(x)`` and ``vjp(x, cotangent)`` as tf.functions, no XLA."""
    tf = ref.tf
    variables = original_variables(layer_name, layer)
    trainable = [(n, v) for n, v in variables.items() if v.trainable]
    state = [(n, v) for n, v in variables.items() if not v.trainable]

    @tf.function
    def forward(x):
        return layer(x, training=False)

    @tf.function
    def vjp_all(x, cotangent):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * cotangent)
        grads = tape.gradient(loss, [x] + [v for _, v in trainable])
        weights = [
            tf.zeros_like(v) if g is None else g
            for (_, v), g in zip(trainable, grads[1:])
        ]
        return y, grads[0], weights

    return forward, vjp_all, trainable, state


def evaluate_original(layer_name, layer, compiled, x, cotangent) -> dict:
    """Same keys as :func:`benchmarks.worker.evaluate`."""
    forward, vjp, trainable, state = compiled
    out = {"y_inference": forward(x).numpy()}
    y, grad_x, grads = vjp(x, cotangent)
    out["y_training"] = y.numpy()
    out["grad_x"] = grad_x.numpy()
    for (name, variable), grad in zip(trainable, grads):
        out["grad." + name] = grad.numpy().reshape(
            _semantic_shape(name, variable.shape)
        )
    for name, variable in state:
        out["after." + name] = variable.numpy()
    return out


def _semantic_shape(name: str, shape) -> tuple[int, ...]:
    """Measure kernels are ``(s, s, 1, 1)`` in the original, ``(s, s)`` here."""
    shape = tuple(int(s) for s in shape)
    if name.startswith("measure.kernel_"):
        return shape[:2]
    return shape


def fixture_expected(case: dict, arrays: dict) -> dict:
    """The fixture's arrays under the names :func:`evaluate_original` gives."""
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
    for key, value in arrays.items():
        if key.startswith("grad.") and key != "grad_x":
            expected[key] = value
    return expected


def reference_fixtures(ref, classes, layer_name, fixtures_dir) -> dict:
    """The original against its own recorded cases: checks the mapping."""
    tf = ref.tf
    cases = []
    for case, arrays in fixture_cases(fixtures_dir, layer_name):
        layer = build_original(
            ref, classes, layer_name, case["kwargs"], arrays["x"].shape
        )
        names = original_variables(layer_name, layer)
        set_original_weights(layer_name, layer, {n: arrays[n] for n in names})
        compiled = compile_original(ref, layer_name, layer)
        ours = evaluate_original(
            layer_name,
            layer,
            compiled,
            tf.constant(arrays["x"]),
            tf.constant(arrays["cotangent"]),
        )
        skip = (0,) if case.get("input_kind") == "with_constant_channel" else ()
        cases.append(
            {
                "case": case["case"],
                **compare(ours, fixture_expected(case, arrays), skip),
            }
        )
    return {
        "layer": layer_name,
        "mode": config.MODES["original"][0],
        "cases": len(cases),
        "max_abs": max((c["max_abs"] for c in cases), default=None),
        "max_rel": max((c["max_rel"] for c in cases), default=None),
        "ok": bool(cases) and all(c["ok"] for c in cases),
        "details": cases,
    }


def bench_layers(spec: dict, ref: Reference) -> dict:
    tf = ref.tf
    classes = _import_original(spec["reference_repo"])
    warmup, repeats = spec["warmup"], spec["repeats"]
    gpu_reset, gpu_peak = ref.gpu_hooks()
    mode = config.MODES["original"][0]
    rng = np.random.default_rng(spec.get("seed", 0))
    records, fixtures, errors, written = [], [], [], []
    try:  # as benchmarks.worker.warm_up_layers
        name = "SingularityStrengthRecalibration"
        x, cotangent = layer_inputs(name, WARM_SHAPE, rng)
        layer = build_original(ref, classes, name, config.LAYERS[name], WARM_SHAPE)
        forward, vjp, _, _ = compile_original(ref, name, layer)
        ref.sync(forward(tf.constant(x)))
        ref.sync(vjp(tf.constant(x), tf.constant(cotangent)))
    except Exception as exc:  # noqa: BLE001
        errors.append(_error("warm-up", exc))
    for layer_name in spec["layers"]:
        kwargs = config.LAYERS[layer_name]
        fixture_layers = spec.get("fixture_layers")
        if spec.get("fixtures_dir") and (
            fixture_layers is None or layer_name in fixture_layers
        ):
            try:
                fixtures.append(
                    reference_fixtures(ref, classes, layer_name, spec["fixtures_dir"])
                )
            except Exception as exc:  # noqa: BLE001 (reported)
                errors.append(_error(f"fixtures {layer_name}", exc))
        for shape in spec["shapes"]:
            shape = tuple(shape)
            base = {
                "suite": "layer",
                "name": layer_name,
                "shape": list(shape),
                "implementation": "original",
                "backend": "original",
                "mode": mode,
            }
            paths = (
                live_paths(spec["live_dir"], layer_name, shape)
                if spec.get("live_dir")
                else None
            )
            try:
                if paths and os.path.exists(paths["inputs"]):
                    inputs = _load(paths["inputs"])
                    x_np, ct_np = inputs["x"], inputs["cotangent"]
                else:
                    x_np, ct_np = layer_inputs(layer_name, shape, rng)
                x, cotangent = tf.constant(x_np), tf.constant(ct_np)
                layer = build_original(ref, classes, layer_name, kwargs, shape)
                compiled = compile_original(ref, layer_name, layer)
            except Exception as exc:  # noqa: BLE001
                errors.append(_error(f"{layer_name} {shape}", exc))
                records.extend(
                    {**base, "pass": p, "status": "failed", "error": _short(exc)}
                    for p in config.PASSES
                )
                continue
            forward, vjp = compiled[0], compiled[1]
            for pass_name, fn in (
                ("forward", functools.partial(forward, x)),
                ("forward+backward", functools.partial(vjp, x, cotangent)),
            ):
                record = {**base, "pass": pass_name}
                try:
                    with measure.MemoryWindow(gpu_reset, gpu_peak) as memory:
                        timing = measure.time_calls(
                            fn, ref.sync, warmup, repeats, spec.get("budget_s")
                        )
                    record.update(status="ok", **timing, **memory.result())
                except Exception as exc:  # noqa: BLE001
                    errors.append(_error(f"{layer_name} {shape}", exc))
                    record.update(status="failed", error=_short(exc))
                records.append(record)
                _progress(record)
            if paths and os.path.exists(paths["weights"]):
                # After the timings, as in benchmarks.worker.
                try:
                    set_original_weights(layer_name, layer, _load(paths["weights"]))
                    outputs = evaluate_original(
                        layer_name, layer, compiled, x, cotangent
                    )
                    np.savez(paths["reference"], **outputs)
                    written.append(paths["reference"])
                    del outputs
                except Exception as exc:  # noqa: BLE001
                    errors.append(_error(f"live {layer_name} {shape}", exc))
            del layer, compiled
    return {
        "records": records,
        "fixtures": fixtures,
        "written": written,
        "errors": errors,
    }


def bench_model(spec: dict, ref: Reference) -> dict:
    tf = ref.tf
    repo = os.path.abspath(spec["reference_repo"])
    _import_original(repo)
    from models.ssr_unet import get_ssr_unet
    from models.unet import get_unet

    from benchmarks.worker import TINY_MODEL, model_data

    name = spec["model"]
    model_config = spec["model_config"]
    batch_size = spec["batch_size"]
    warmup, repeats = spec["warmup"], spec["repeats"]
    gpu_reset, gpu_peak = ref.gpu_hooks()
    base = {
        "suite": "model",
        "name": name,
        "shape": [batch_size, *model_config["input_shape"]],
        "implementation": "original",
        "backend": "original",
        "mode": config.MODES["original"][0],
    }
    x, y = model_data(model_config, batch_size, spec.get("seed", 0))
    records, errors = [], []

    def compiled_model(model_name, model_config):
        common = {
            "channels_per_level": list(model_config["channels_per_level"]),
            "input_shape": list(model_config["input_shape"]),
            "n_classes": model_config["n_classes"],
            "with_bn": model_config["with_bn"],
        }
        if model_name == "unet":
            model = get_unet(**common)
        else:
            model = get_ssr_unet(
                r=model_config["r"], max_scale=model_config["max_scale"], **common
            )
        model.compile(
            optimizer=tf.keras.optimizers.Adam(learning_rate=1e-3),
            loss=tf.keras.losses.BinaryCrossentropy(),
        )
        return model

    try:
        if spec.get("warm_up_model", True) and gpu_peak is None:
            tiny = compiled_model("unet", TINY_MODEL)
            tiny_x, tiny_y = model_data(TINY_MODEL, 2)
            tiny.predict_on_batch(tiny_x)
            tiny.train_on_batch(tiny_x, tiny_y)
            del tiny
        tf.keras.utils.set_random_seed(spec.get("seed", 0))
        measure.release_freed_memory()
        baseline = measure.rss_mb()
        model = compiled_model(name, model_config)
        parameters = int(model.count_params())
    except Exception as exc:  # noqa: BLE001
        errors.append(_error(f"original {name} build", exc))
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
            sync=ref.sync,
            timing=(warmup, repeats, spec.get("budget_s")),
            gpu=(gpu_reset, gpu_peak),
            baseline=baseline,
            label=f"original {name}",
            errors=errors,
        )
    )
    return {"records": records, "errors": errors}


def run_suite(spec: dict, ref: Reference) -> dict:
    """Several tasks in one process (``--quick``)."""
    merged: dict = {"records": [], "errors": []}
    for sub in spec["tasks"]:
        result = TASKS[sub["task"]](sub, ref)
        for key, value in result.items():
            if isinstance(value, list):
                merged.setdefault(key, []).extend(value)
    return merged


TASKS = {"layers": bench_layers, "model": bench_model, "suite": run_suite}


def run_task(spec: dict) -> dict:
    ref = Reference()
    result = TASKS[spec["task"]](spec, ref)
    result["environment"] = ref.environment(spec["reference_repo"])
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m benchmarks.reference_worker SPEC.json RESULT.json")
        return 2
    with open(argv[0]) as f:
        spec = json.load(f)
    result = run_task(spec)
    with open(argv[1], "w") as f:
        json.dump(result, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
