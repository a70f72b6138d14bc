"""What both benchmark workers share: inputs, timing loops, comparison, CLI.

NumPy and the standard library only: :mod:`benchmarks.worker` (keras_ssr,
Keras 3) and :mod:`benchmarks.original_worker` (the original, tf.keras 2.14,
``numpy<2``) both import this module, and neither imports the other.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable

import numpy as np

from benchmarks import config, measure

#: A tiny SSR input that warms a process up before the first timing.
WARM_SHAPE = (2, 8, 8, 4)

#: Warms a model process up before its baseline memory is taken.
TINY_MODEL = {
    "channels_per_level": [4, 8],
    "input_shape": [16, 16, 3],
    "n_classes": 2,
    "with_bn": True,
    "r": 2,
    "max_scale": 3,
}

# --------------------------------------------------------------------------
# Inputs and files


def output_shape(layer_name: str, shape) -> tuple[int, ...]:
    """The layer's output shape for input ``shape`` (channels last)."""
    kwargs = config.COUNTED_LAYERS.get(layer_name, {})
    if layer_name == "LearnableMeasure":
        return (*shape, kwargs["max_scale"])
    if layer_name == "SoftHistogram":
        return (*shape, kwargs["num_anchors"])
    return tuple(shape)


def layer_inputs(layer_name: str, shape, rng) -> tuple[np.ndarray, np.ndarray]:
    """A standard-normal input and a cotangent of the output's shape."""
    x = rng.standard_normal(tuple(shape), dtype=np.float32)
    cotangent = rng.standard_normal(output_shape(layer_name, shape), dtype=np.float32)
    return x, cotangent


def model_data(model_config: dict, batch_size: int, seed: int = 0):
    """A standard-normal image batch and random binary masks."""
    rng = np.random.default_rng(seed)
    height, width, channels = model_config["input_shape"]
    outputs = 1 if model_config["n_classes"] <= 2 else model_config["n_classes"]
    x = rng.standard_normal((batch_size, height, width, channels), dtype=np.float32)
    y = (rng.random((batch_size, height, width, outputs)) > 0.5).astype(np.float32)
    return x, y


def unet_kwargs(model_config: dict) -> dict:
    """The builder arguments both implementations' ``get_unet`` take."""
    return {
        "channels_per_level": list(model_config["channels_per_level"]),
        "input_shape": list(model_config["input_shape"]),
        "n_classes": model_config["n_classes"],
        "with_bn": model_config["with_bn"],
    }


def live_paths(live_dir: str, layer_name: str, shape) -> dict:
    """The files of the live comparison of one layer at one shape."""
    key = config.shape_key(shape)
    return {
        "inputs": os.path.join(live_dir, f"inputs_{layer_name}_{key}.npz"),
        "weights": os.path.join(live_dir, f"weights_{layer_name}_{key}.npz"),
        "reference": os.path.join(live_dir, f"reference_{layer_name}_{key}.npz"),
        "float64": os.path.join(live_dir, f"float64_{layer_name}_{key}.npz"),
    }


def load_npz(path: str) -> dict:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def live_inputs(paths: dict | None, layer_name: str, shape, rng):
    """The shared live inputs where written, else fresh random ones."""
    if paths and os.path.exists(paths["inputs"]):
        inputs = load_npz(paths["inputs"])
        return inputs["x"], inputs["cotangent"]
    return layer_inputs(layer_name, shape, rng)


# --------------------------------------------------------------------------
# Recorded fixtures and comparison


def fixture_cases(fixtures_dir: str, layer_name: str):
    """``(case, arrays)`` of every recorded case of ``layer_name``."""
    with open(os.path.join(fixtures_dir, "manifest.json")) as f:
        manifest = json.load(f)
    for case in manifest["cases"]:
        if case.get("layer") != layer_name:
            continue
        with np.load(os.path.join(fixtures_dir, case["file"])) as data:
            yield case, {k: data[k] for k in data.files}


def recorded_outputs(arrays: dict) -> dict:
    """A fixture's outputs and gradients under the names the workers give."""
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


def constant_channels(case: dict) -> tuple[int, ...]:
    """Channels whose input gradient is only checked for finiteness."""
    return (0,) if case.get("input_kind") == "with_constant_channel" else ()


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


def summarize_cases(layer_name: str, mode: str, cases: list[dict]) -> dict:
    """One layer's fixture agreement: the worst error over its cases."""
    return {
        "layer": layer_name,
        "mode": mode,
        "cases": len(cases),
        "max_abs": max((c["max_abs"] for c in cases), default=None),
        "max_rel": max((c["max_rel"] for c in cases), default=None),
        "ok": bool(cases) and all(c["ok"] for c in cases),
        "details": cases,
    }


# --------------------------------------------------------------------------
# TensorFlow devices (tf.keras 2.14 and Keras 3 alike; ``tf`` is passed in so
# that this module imports no TensorFlow)


def tf_sync(tf, gpus, out) -> None:
    """Waits for the GPU work behind ``out``; on CPU a tf.function has
    finished when it returns."""
    if not gpus:
        return
    sync_devices = getattr(tf.test.experimental, "sync_devices", None)
    if sync_devices is not None:
        sync_devices()
        return
    for leaf in tf.nest.flatten(out):
        if leaf is not None:
            tf.reshape(leaf, [-1])[:1].numpy()


def tf_gpu_hooks(tf, gpus):
    """``(reset, peak)`` of TensorFlow's GPU allocator, ``(None, None)`` on CPU."""
    if not gpus:
        return None, None

    def reset():
        tf.config.experimental.reset_memory_stats("GPU:0")

    def peak():
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20

    return reset, peak


# --------------------------------------------------------------------------
# Timing


def short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 400 else text[:400] + " ..."


def error_record(where: str, exc: BaseException) -> dict:
    return {
        "where": where,
        "error": short_error(exc),
        "traceback": traceback.format_exc(limit=8)[-3000:],
    }


def failed_records(base: dict, passes, exc: BaseException) -> list[dict]:
    return [
        {**base, "pass": p, "status": "failed", "error": short_error(exc)}
        for p in passes
    ]


def progress(record: dict) -> None:
    """One line per timing on stderr (``KERAS_SSR_BENCH_QUIET`` silences)."""
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


def count_subject(suite, name, shape, spec, rng, make_layer, make_model):
    """``(subject, x, cotangent)`` of a ``"counts"`` task: a layer of
    ``config.COUNTED_LAYERS`` or a model of ``spec["model_config"]`` for the
    input ``shape``, with a standard-normal input and cotangent."""
    if suite == "layer":
        return (
            make_layer(name, config.COUNTED_LAYERS[name]),
            *layer_inputs(name, shape, rng),
        )
    model_config = dict(spec["model_config"], input_shape=list(shape[1:]))
    model = make_model(name, model_config)
    x = rng.standard_normal(tuple(shape), dtype=np.float32)
    cotangent = rng.standard_normal(
        (shape[0], *model.output_shape[1:]), dtype=np.float32
    )
    return model, x, cotangent


def count_records(base: dict, result: dict) -> list[dict]:
    """One record per pass of a count ``result`` (``{pass: measures}``)."""
    input_bytes = int(np.prod(base["shape"])) * 4
    records = [
        {**base, "pass": p, "input_bytes": input_bytes, **m} for p, m in result.items()
    ]
    count_progress(records)
    return records


def count_progress(records: list[dict]) -> None:
    """One line per count on stderr, as :func:`progress`."""
    if os.environ.get("KERAS_SSR_BENCH_QUIET"):
        return
    for record in records:
        measures = [
            f"{record[key]} {label}"
            for key, label in (("launches", "launches"), ("kernels", "kernels"))
            if key in record
        ]
        if "bytes" in record:
            measures.append(f"{record['bytes'] / record['input_bytes']:.1f} passes")
        print(
            f"  [{record['backend']:>10} {record['mode']:<16}] {record['name']:<33} "
            f"{config.shape_key(record['shape']):<14} {record['pass']:<16} "
            + ", ".join(measures),
            file=sys.stderr,
            flush=True,
        )


def time_passes(
    passes, base, *, sync, timing, gpu, label, errors, baseline=None
) -> list[dict]:
    """Times each ``(pass_name, fn)`` with its memory window: one record each.

    ``timing`` is ``(warmup, repeats, budget_s)`` and ``gpu`` the
    ``(reset, peak)`` hooks. With ``baseline`` (the RSS before the model was
    built) the record also gets the peak above it, so that weights,
    optimizer state and compiled code count too.
    """
    warmup, repeats, budget_s = timing
    records = []
    for pass_name, fn in passes:
        record = {**base, "pass": pass_name}
        try:
            with measure.MemoryWindow(*gpu) as memory:
                times = measure.time_calls(fn, sync, warmup, repeats, budget_s)
            result = memory.result()
            if result["peak_rss_mb"] is not None and baseline is not None:
                result["peak_rss_delta_mb"] = round(result["peak_rss_mb"] - baseline, 1)
            record.update(status="ok", **times, **result)
        except Exception as exc:  # noqa: BLE001 (reported, not hidden)
            errors.append(error_record(f"{label} {pass_name}", exc))
            record.update(status="failed", error=short_error(exc))
        records.append(record)
        progress(record)
    return records


def layer_passes(forward: Callable, vjp: Callable, x, cotangent):
    """The two timed passes of a layer benchmark."""
    return (
        ("forward", functools.partial(forward, x)),
        ("forward+backward", functools.partial(vjp, x, cotangent)),
    )


def bench_model(
    spec: dict,
    base: dict,
    compiled_model: Callable,
    *,
    sync: Callable,
    gpu: tuple,
    set_seed: Callable,
) -> dict:
    """The ``"model"`` task of either worker: one model, one compile mode.

    ``compiled_model(name, model_config)`` builds and compiles a model of
    the implementation at hand. On CPU a tiny U-Net first loads what loads
    lazily (compilers, kernels, data adapters), so that the RSS baseline
    leaves it out. Inference is timed before the training step, which needs
    more memory, so that its peak is not hidden by what inference left in
    the allocators.
    """
    name, model_config = spec["model"], spec["model_config"]
    x, y = model_data(model_config, spec["batch_size"], spec.get("seed", 0))
    errors: list[dict] = []
    try:
        if spec.get("warm_up_model", True) and gpu[1] is None:
            tiny = compiled_model("unet", TINY_MODEL)
            tiny_x, tiny_y = model_data(TINY_MODEL, 2)
            tiny.predict_on_batch(tiny_x)
            tiny.train_on_batch(tiny_x, tiny_y)
            del tiny
        set_seed(spec.get("seed", 0))
        measure.release_freed_memory()
        baseline = measure.rss_mb()
        model = compiled_model(name, model_config)
        parameters = int(model.count_params())
    except Exception as exc:  # noqa: BLE001
        errors.append(error_record(f"{base['implementation']} {name} build", exc))
        return {
            "records": failed_records(base, config.MODEL_PASSES, exc),
            "errors": errors,
        }
    records = time_passes(
        (
            ("inference", lambda: model.predict_on_batch(x)),
            ("train_step", lambda: model.train_on_batch(x, y)),
        ),
        {**base, "parameters": parameters},
        sync=sync,
        timing=(spec["warmup"], spec["repeats"], spec.get("budget_s")),
        gpu=gpu,
        baseline=baseline,
        label=f"{base['implementation']} {name} {base['mode']}",
        errors=errors,
    )
    return {"records": records, "errors": errors}


# --------------------------------------------------------------------------
# Entry points


def run_suite(tasks: dict, spec: dict, context) -> dict:
    """The ``"suite"`` task: several tasks in one process (``--quick``)."""
    merged: dict = {"records": [], "errors": []}
    for sub in spec["tasks"]:
        result = tasks[sub["task"]](sub, context)
        for key, value in result.items():
            if isinstance(value, list):
                merged.setdefault(key, []).extend(value)
    return merged


def main(run_task: Callable[[dict], dict], module: str, argv=None) -> int:
    """``python -m MODULE SPEC.json RESULT.json``: one task, its JSON result."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(f"usage: python -m {module} SPEC.json RESULT.json")
        return 2
    with open(argv[0]) as f:
        spec = json.load(f)
    result = run_task(spec)
    with open(argv[1], "w") as f:
        json.dump(result, f, indent=1, default=float)
    return 0
