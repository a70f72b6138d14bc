"""The original TF 2.14 implementation's side of the benchmarks.

    python -m benchmarks.original_worker SPEC.json RESULT.json

Runs in its own virtual environment (``tensorflow-cpu==2.14.1``,
``numpy<2``; see :mod:`benchmarks.run`) with the original's checkout
(``miguelmartins/ssr``) named by ``spec["reference_repo"]`` put first on
``sys.path``: its ``neural_components`` and ``models`` packages are
imported from there. Nothing of the original is copied into this
repository.

Tasks, as in :mod:`benchmarks.worker`:

* ``"layers"``: times the authors' layers the way their users ran them
  (``tf.function``, no XLA): the SSR paper's (``spec["source"] ==
  "ssr"``, the default) or the follow-up's (``"followup"``, from a
  checkout of ``miguelmartins/multifractal-recalibration``). For the SSR
  paper's, checks that the weight mapping reproduces the recorded
  fixtures and, for the live comparison, loads keras_ssr's weights and
  inputs and writes the original's outputs and gradients for every
  backend to compare against.
* ``"counts"``: the TF graph launches of the authors' layers (and the SSR
  paper's U-Nets), as :func:`benchmarks.worker.count_task`.
* ``"model"``: its ``get_unet`` / ``get_ssr_unet``, an inference batch and a
  training step (``model.compile(Adam, binary cross-entropy)``).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from benchmarks import common, config, measure

BN_NAMES = ("gamma", "beta", "moving_mean", "moving_variance")


def _import_original(repo: str, source: str = "ssr") -> dict:
    """The authors' layer classes of ``source`` (a key of
    ``config.ORIGINAL_CLASSES``), imported from the checkout ``repo``."""
    import importlib

    repo = os.path.abspath(repo)
    if not os.path.isdir(os.path.join(repo, "neural_components")):
        raise ValueError(
            "The reference checkout must hold the original's neural_components/ "
            f"and models/ packages. Received: reference_repo={repo!r}"
        )
    if repo not in sys.path:
        sys.path.insert(0, repo)
    classes = {}
    for name, where in config.ORIGINAL_CLASSES[source].items():
        module, attribute = where.rsplit(".", 1)
        module = importlib.import_module(f"neural_components.{module}")
        classes[name] = getattr(module, attribute)
    return classes


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
        common.tf_sync(self.tf, self.gpus, out)

    def gpu_hooks(self):
        return common.tf_gpu_hooks(self.tf, self.gpus)


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
    """``forward(x)`` and ``vjp(x, cotangent)`` as tf.functions, no XLA. The
    follow-up's layers, whose weights keras_ssr does not map here, are
    differentiated with respect to all their trainable weights."""
    tf = ref.tf
    variables = original_variables(layer_name, layer)
    if variables:
        trainable = [(n, v) for n, v in variables.items() if v.trainable]
        state = [(n, v) for n, v in variables.items() if not v.trainable]
    else:  # a frozen layer's variables are trainable ones in tf.keras 2.14
        trainable = [(v.name, v) for v in layer.trainable_variables]
        state = [(v.name, v) for v in layer.non_trainable_variables]

    @tf.function
    def forward(x):
        return layer(x, training=False)

    @tf.function
    def vjp_all(x, cotangent):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
        grads = tape.gradient(
            y, [x] + [v for _, v in trainable], output_gradients=cotangent
        )
        return y, grads[0], grads[1:]  # None where a weight has no gradient

    return forward, vjp_all, trainable, state


def evaluate_original(layer_name, layer, compiled, x, cotangent) -> dict:
    """Same keys as :func:`benchmarks.worker.evaluate`."""
    forward, vjp, trainable, state = compiled
    out = {"y_inference": forward(x).numpy()}
    y, grad_x, grads = vjp(x, cotangent)
    out["y_training"] = y.numpy()
    out["grad_x"] = grad_x.numpy()
    for (name, variable), grad in zip(trainable, grads):
        grad = np.zeros(variable.shape) if grad is None else grad.numpy()
        out["grad." + name] = grad.reshape(_semantic_shape(name, variable.shape))
    for name, variable in state:
        out["after." + name] = variable.numpy()
    return out


def _semantic_shape(name: str, shape) -> tuple[int, ...]:
    """Measure kernels are ``(s, s, 1, 1)`` in the original, ``(s, s)`` here."""
    shape = tuple(int(s) for s in shape)
    if name.startswith("measure.kernel_"):
        return shape[:2]
    return shape


def original_fixtures(ref, classes, layer_name, fixtures_dir) -> dict:
    """The original against its own recorded cases: checks the mapping."""
    tf = ref.tf
    cases = []
    for case, arrays in common.fixture_cases(fixtures_dir, layer_name):
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
        expected = common.recorded_outputs(arrays)
        result = common.compare(ours, expected, common.constant_channels(case))
        cases.append({"case": case["case"], **result})
    return common.summarize_cases(layer_name, config.MODES["original"][0], cases)


def bench_layers(spec: dict, ref: Reference) -> dict:
    tf = ref.tf
    classes = _import_original(spec["reference_repo"], spec.get("source", "ssr"))
    timing = (spec["warmup"], spec["repeats"], spec.get("budget_s"))
    gpu = ref.gpu_hooks()
    mode = config.MODES["original"][0]
    rng = np.random.default_rng(spec.get("seed", 0))
    records, fixtures, errors, written = [], [], [], []
    try:  # as benchmarks.worker.warm_up_layers
        name = next(
            n
            for n in ("SingularityStrengthRecalibration", "MonofractalRecalibration")
            if n in classes
        )
        x, cotangent = common.layer_inputs(name, common.WARM_SHAPE, rng)
        layer = build_original(
            ref, classes, name, config.LAYERS[name], common.WARM_SHAPE
        )
        forward, vjp, _, _ = compile_original(ref, name, layer)
        ref.sync(forward(tf.constant(x)))
        ref.sync(vjp(tf.constant(x), tf.constant(cotangent)))
    except Exception as exc:  # noqa: BLE001
        errors.append(common.error_record("warm-up", exc))
    fixture_layers = spec.get("fixture_layers")
    for layer_name in spec["layers"]:
        kwargs = config.LAYERS[layer_name]
        if spec.get("fixtures_dir") and (
            fixture_layers is None or layer_name in fixture_layers
        ):
            try:
                fixtures.append(
                    original_fixtures(ref, classes, layer_name, spec["fixtures_dir"])
                )
            except Exception as exc:  # noqa: BLE001 (reported)
                errors.append(common.error_record(f"fixtures {layer_name}", exc))
        for shape in spec.get("layer_shapes", {}).get(layer_name, spec["shapes"]):
            shape = tuple(shape)
            label = f"{layer_name} {shape}"
            base = {
                "suite": "layer",
                "name": layer_name,
                "shape": list(shape),
                "implementation": "original",
                "backend": "original",
                "mode": mode,
            }
            paths = None
            if spec.get("live_dir"):
                paths = common.live_paths(spec["live_dir"], layer_name, shape)
            try:
                x_np, ct_np = common.live_inputs(paths, layer_name, shape, rng)
                x, cotangent = tf.constant(x_np), tf.constant(ct_np)
                layer = build_original(ref, classes, layer_name, kwargs, shape)
                compiled = compile_original(ref, layer_name, layer)
            except Exception as exc:  # noqa: BLE001
                errors.append(common.error_record(label, exc))
                records.extend(common.failed_records(base, config.PASSES, exc))
                continue
            records.extend(
                common.time_passes(
                    common.layer_passes(compiled[0], compiled[1], x, cotangent),
                    base,
                    sync=ref.sync,
                    timing=timing,
                    gpu=gpu,
                    label=label,
                    errors=errors,
                )
            )
            if paths and os.path.exists(paths["weights"]):
                # After the timings, as in benchmarks.worker.
                try:
                    weights = common.load_npz(paths["weights"])
                    set_original_weights(layer_name, layer, weights)
                    outputs = evaluate_original(
                        layer_name, layer, compiled, x, cotangent
                    )
                    np.savez(paths["reference"], **outputs)
                    written.append(paths["reference"])
                    del outputs
                except Exception as exc:  # noqa: BLE001
                    errors.append(common.error_record(f"live {label}", exc))
            del layer, compiled
    return {
        "records": records,
        "fixtures": fixtures,
        "written": written,
        "errors": errors,
    }


def _original_model(name: str, model_config: dict):
    """The SSR paper's ``get_unet`` or ``get_ssr_unet`` (its checkout is on
    ``sys.path`` already)."""
    from models.ssr_unet import get_ssr_unet
    from models.unet import get_unet

    kwargs = common.unet_kwargs(model_config)
    if name == "unet":
        return get_unet(**kwargs)
    return get_ssr_unet(
        r=model_config["r"], max_scale=model_config["max_scale"], **kwargs
    )


def bench_model(spec: dict, ref: Reference) -> dict:
    tf = ref.tf
    _import_original(spec["reference_repo"])

    def compiled_model(model_name, model_config):
        model = _original_model(model_name, model_config)
        model.compile(
            optimizer=tf.keras.optimizers.Adam(learning_rate=1e-3),
            loss=tf.keras.losses.BinaryCrossentropy(),
        )
        return model

    base = {
        "suite": "model",
        "name": spec["model"],
        "shape": [spec["batch_size"], *spec["model_config"]["input_shape"]],
        "implementation": "original",
        "backend": "original",
        "mode": config.MODES["original"][0],
    }
    return common.bench_model(
        spec,
        base,
        compiled_model,
        sync=ref.sync,
        gpu=ref.gpu_hooks(),
        set_seed=tf.keras.utils.set_random_seed,
    )


def count_task(spec: dict, ref: Reference) -> dict:
    """The ``"counts"`` task: the TF graph launches of the authors' layers of
    ``spec["source"]`` and, for the SSR paper's, its two U-Nets, counted
    as :func:`benchmarks.worker.count_task` counts keras_ssr's."""
    from benchmarks import counts

    tf = ref.tf
    source = spec.get("source", "ssr")
    classes = _import_original(spec["reference_repo"], source)
    rng = np.random.default_rng(spec.get("seed", 0))
    subjects = [("layer", n, config.LAUNCH_SHAPE) for n in spec["layers"]]
    subjects = [s for s in subjects if s[1] in classes]
    if source == "ssr":
        subjects += [
            ("model", n, config.MODEL_LAUNCH_INPUT) for n in spec.get("models", [])
        ]
    records, errors = [], []
    for suite, name, shape in subjects:
        base = {
            "suite": suite,
            "name": name,
            "shape": list(shape),
            "implementation": "original",
            "source": source,
            "backend": "original",
            "mode": config.MODES["original"][0],
        }
        try:
            layer, x, cotangent = common.count_subject(
                suite,
                name,
                shape,
                spec,
                rng,
                lambda n, kwargs, shape=shape: build_original(
                    ref, classes, n, kwargs, shape
                ),
                _original_model,
            )
            forward, vjp, _, _ = compile_original(ref, name, layer)
            x, cotangent = tf.constant(x), tf.constant(cotangent)
            result = {
                "forward": counts.tf_launches(tf, forward, x),
                "forward+backward": counts.tf_launches(tf, vjp, x, cotangent),
            }
        except Exception as exc:  # noqa: BLE001 (reported)
            errors.append(common.error_record(f"counts {name}", exc))
            continue
        records.extend(common.count_records(base, result))
    return {"counts": records, "errors": errors}


def run_suite(spec: dict, ref: Reference) -> dict:
    return common.run_suite(TASKS, spec, ref)


TASKS = {
    "layers": bench_layers,
    "model": bench_model,
    "counts": count_task,
    "suite": run_suite,
}


def run_task(spec: dict) -> dict:
    ref = Reference()
    result = TASKS[spec["task"]](spec, ref)
    result["environment"] = ref.environment(spec["reference_repo"])
    return result


if __name__ == "__main__":
    sys.exit(common.main(run_task, "benchmarks.original_worker"))
