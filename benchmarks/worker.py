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

import os
import sys

import numpy as np

from benchmarks import common, config
from benchmarks.backends import Backend, Compiled, environment, get_backend

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


def fixture_expected(case: dict, arrays: dict, layer) -> dict:
    """The fixture's arrays under the names :func:`evaluate` gives, with the
    batch-norm statistics after the training call."""
    expected = common.recorded_outputs(arrays)
    names = layer.semantic_variables()
    for key, value in arrays.items():
        if key.startswith("after_training_call."):
            suffix = key[len("after_training_call.") :]
            matches = [n for n in names if n == suffix or n.endswith("." + suffix)]
            if len(matches) == 1:
                expected["after." + matches[0]] = value
    return expected


def fixture_agreement(
    backend: Backend, layer_name: str, mode: str, fixtures_dir: str
) -> dict:
    """Worst error of ``layer_name`` over its recorded cases in ``mode``."""
    from keras_ssr.porting import layer_weight_names, set_layer_weights

    cases = []
    for case, arrays in common.fixture_cases(fixtures_dir, layer_name):
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
        expected = fixture_expected(case, arrays, layer)
        result = common.compare(ours, expected, common.constant_channels(case))
        cases.append({"case": case["case"], **result})
    return common.summarize_cases(layer_name, mode, cases)


def bench_layers(spec: dict, backend: Backend) -> dict:
    """The ``"layers"`` task."""
    from keras_ssr.porting import set_layer_weights

    timing = (spec["warmup"], spec["repeats"], spec.get("budget_s"))
    gpu = backend.gpu_hooks()
    records, fixtures, live, errors = [], [], [], []
    rng = np.random.default_rng(spec.get("seed", 0))
    for mode in spec["modes"] if spec.get("warm_up", True) else ():
        try:
            warm_up_layers(backend, mode)
        except Exception as exc:  # noqa: BLE001
            errors.append(common.error_record(f"warm-up {mode}", exc))
    fixture_layers = spec.get("fixture_layers")
    for layer_name in spec["layers"]:
        if (
            spec.get("fixtures_dir")
            and (fixture_layers is None or layer_name in fixture_layers)
            and any(common.fixture_cases(spec["fixtures_dir"], layer_name))
        ):
            for mode in spec["modes"]:
                try:
                    fixtures.append(
                        fixture_agreement(
                            backend, layer_name, mode, spec["fixtures_dir"]
                        )
                    )
                except Exception as exc:  # noqa: BLE001 (reported, not hidden)
                    errors.append(
                        common.error_record(f"fixtures {layer_name} {mode}", exc)
                    )
        for shape in spec.get("layer_shapes", {}).get(layer_name, spec["shapes"]):
            shape = tuple(shape)
            paths = None
            if spec.get("live_dir"):
                paths = common.live_paths(spec["live_dir"], layer_name, shape)
            x_np, ct_np = common.live_inputs(paths, layer_name, shape, rng)
            x, cotangent = backend.tensor(x_np), backend.tensor(ct_np)
            for mode in spec["modes"]:
                label = f"{layer_name} {shape} {mode}"
                base = {
                    "suite": "layer",
                    "name": layer_name,
                    "shape": list(shape),
                    "implementation": "keras_ssr",
                    "backend": backend.name,
                    "mode": mode,
                }
                try:
                    layer = make_layer(layer_name, config.LAYERS[layer_name])
                    layer.build(shape)
                    weights = None
                    if paths and os.path.exists(paths["weights"]):
                        weights = common.load_npz(paths["weights"])
                        set_layer_weights(layer, weights)
                    _, variables, _ = named_variables(layer)
                    compiled = backend.compile_layer(layer, mode, variables)
                except Exception as exc:  # noqa: BLE001
                    errors.append(common.error_record(label, exc))
                    records.extend(common.failed_records(base, config.PASSES, exc))
                    continue
                # Timed first, so that the comparison's buffers (which pooling
                # allocators keep) do not hide the benchmark's own memory.
                records.extend(
                    common.time_passes(
                        common.layer_passes(
                            compiled.forward, compiled.vjp, x, cotangent
                        ),
                        base,
                        sync=backend.sync,
                        timing=timing,
                        gpu=gpu,
                        label=label,
                        errors=errors,
                    )
                )
                if weights is not None and os.path.exists(paths["reference"]):
                    try:
                        # The timed training calls moved the batch-norm
                        # statistics: back to the shared weights first.
                        set_layer_weights(layer, weights)
                        ours = evaluate(backend, layer, compiled, x, cotangent)
                        result = common.compare(
                            ours, common.load_npz(paths["reference"])
                        )
                        if os.path.exists(paths["float64"]):
                            result["vs_float64"] = common.compare(
                                ours, common.load_npz(paths["float64"])
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
                        errors.append(common.error_record(f"live {label}", exc))
                del layer, compiled
    return {
        "records": records,
        "fixtures": fixtures,
        "live": live,
        "errors": errors,
    }


def count_task(spec: dict, backend: Backend) -> dict:
    """The ``"counts"`` task: launches and traffic of every layer and model.

    For every compile mode of ``config.COUNT_MODES[backend]``, every layer of
    ``spec["layers"]`` (built fresh, default weights) and model of
    ``spec["models"]`` is counted at the shapes the mode names; see
    :mod:`benchmarks.counts`. Nothing is timed.
    """
    records, errors = [], []
    rng = np.random.default_rng(spec.get("seed", 0))
    shapes = {"launch": config.LAUNCH_SHAPE, "traffic": tuple(spec["traffic_shape"])}
    model_shapes = {
        "launch": config.MODEL_LAUNCH_INPUT,
        "traffic": tuple(spec["model_traffic_input"]),
    }
    subjects = [("layer", n, shapes) for n in spec["layers"]]
    subjects += [("model", n, model_shapes) for n in spec.get("models", [])]
    for mode, kinds in config.COUNT_MODES[backend.name].items():
        for suite, name, where in subjects:
            for kind in kinds:
                shape = where[kind]
                base = {
                    "suite": suite,
                    "name": name,
                    "shape": list(shape),
                    "implementation": "keras_ssr",
                    "backend": backend.name,
                    "mode": mode,
                }
                try:
                    subject, x, cotangent = common.count_subject(
                        suite, name, shape, spec, rng, make_layer, build_model
                    )
                    if not subject.built:
                        subject.build(shape)
                    compiled = backend.compile_layer(
                        subject, mode, list(subject.trainable_variables)
                    )
                    result = backend.count(
                        compiled, mode, backend.tensor(x), backend.tensor(cotangent)
                    )
                except Exception as exc:  # noqa: BLE001 (reported, not hidden)
                    errors.append(common.error_record(f"counts {name} {mode}", exc))
                    continue
                records.extend(common.count_records(base, result))
                del subject, compiled
    return {"counts": records, "errors": errors}


def warm_up_layers(backend: Backend, mode: str) -> None:
    """Runs a tiny SSR once, so that lazily loaded libraries (compilers,
    kernels) are not charged to the first benchmark's time or memory."""
    name = "SingularityStrengthRecalibration"
    layer = make_layer(name, config.LAYERS[name])
    layer.build(common.WARM_SHAPE)
    _, variables, _ = named_variables(layer)
    compiled = backend.compile_layer(layer, mode, variables)
    x, cotangent = common.layer_inputs(
        name, common.WARM_SHAPE, np.random.default_rng(0)
    )
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
    from keras_ssr.porting import get_layer_weights

    live_dir = spec["live_dir"]
    os.makedirs(live_dir, exist_ok=True)
    rng = np.random.default_rng(spec.get("seed", 0))
    written = []
    for shape in spec["shapes"]:
        shape = tuple(shape)
        for layer_name in spec["layers"]:
            paths = common.live_paths(live_dir, layer_name, shape)
            x, cotangent = common.layer_inputs(layer_name, shape, rng)
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
    from keras_ssr.porting import set_layer_weights

    if backend.name != "jax":
        raise ValueError(
            f"The float64 task runs on JAX. Received: backend={backend.name!r}"
        )
    results, written, errors = [], [], []
    for layer_name in spec["layers"]:
        for shape in spec["shapes"]:
            shape = tuple(shape)
            paths = common.live_paths(spec["live_dir"], layer_name, shape)
            try:
                inputs, weights = (
                    common.load_npz(paths["inputs"]),
                    common.load_npz(paths["weights"]),
                )
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
                            **common.compare(
                                common.load_npz(paths["reference"]), truth
                            ),
                        }
                    )
                del truth, layer, compiled
            except Exception as exc:  # noqa: BLE001
                errors.append(common.error_record(f"float64 {layer_name} {shape}", exc))
    return {
        "records": [],
        "original_vs_float64": results,
        "written": written,
        "errors": errors,
    }


def build_model(name: str, model_config: dict):
    from keras_ssr import models

    kwargs = common.unet_kwargs(model_config)
    if name == "unet":
        return models.get_unet(**kwargs)
    return models.get_ssr_unet(
        r=model_config["r"], max_scale=model_config["max_scale"], **kwargs
    )


def bench_model(spec: dict, backend: Backend) -> dict:
    """The ``"model"`` task: one model, one compile mode."""
    import keras

    mode = spec["mode"]

    def compiled_model(model_name, model_config):
        model = build_model(model_name, model_config)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=1e-3),
            loss="binary_crossentropy",
            jit_compile=backend.model_jit_compile(mode),
        )
        return model

    base = {
        "suite": "model",
        "name": spec["model"],
        "shape": [spec["batch_size"], *spec["model_config"]["input_shape"]],
        "implementation": "keras_ssr",
        "backend": backend.name,
        "mode": mode,
    }
    return common.bench_model(
        spec,
        base,
        compiled_model,
        sync=backend.sync,
        gpu=backend.gpu_hooks(),
        set_seed=keras.utils.set_random_seed,
    )


# --------------------------------------------------------------------------
# Entry points


def run_suite(spec: dict, backend: Backend) -> dict:
    return common.run_suite(TASKS, spec, backend)


TASKS = {
    "layers": bench_layers,
    "model": bench_model,
    "prepare": prepare,
    "float64": float64_truth,
    "counts": count_task,
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


__all__ = ["Compiled", "TASKS", "run_task"]

if __name__ == "__main__":
    sys.exit(common.main(run_task, "benchmarks.worker"))
