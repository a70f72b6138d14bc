"""The benchmark report: JSON, Markdown and a PNG bar chart.

:func:`build` turns the workers' raw results into one JSON-able document
(settings, machine, versions, every timing, speed-ups against the original,
the SSR-U-Net's cost over the U-Net, the targets, the agreement);
:func:`write` writes ``<stem>.json``, ``<stem>.md`` and ``<stem>.png``.
"""

from __future__ import annotations

import json
import math
import pathlib

from benchmarks import config

SCHEMA_VERSION = 1
ORIGINAL = ("original", "tf.function")


# --------------------------------------------------------------------------
# Building the document


def _columns(records: list[dict]) -> list[tuple[str, str]]:
    """(backend, mode) pairs in report order: original, then each backend."""
    present = {(r["backend"], r["mode"]) for r in records}
    order = [ORIGINAL] + [
        (backend, mode) for backend in config.BACKENDS for mode in config.MODES[backend]
    ]
    return [c for c in order if c in present]


def column_label(column: tuple[str, str]) -> str:
    backend, mode = column
    if backend == "original":
        return "original (TF 2.14)"
    return f"{backend} ({mode})"


def _key(record: dict) -> tuple:
    return (record["suite"], record["name"], tuple(record["shape"]), record["pass"])


def _ok(record: dict | None) -> bool:
    return bool(record) and record.get("status") == "ok"


def memory_mb(record: dict) -> float | None:
    """GPU allocator peak where measured, else the RSS peak over the baseline."""
    if record.get("gpu_peak_mb") is not None:
        return record["gpu_peak_mb"]
    return record.get("peak_rss_delta_mb")


def _index(records: list[dict]) -> dict:
    return {(*_key(r), r["backend"], r["mode"]): r for r in records}


def speedups(records: list[dict]) -> list[dict]:
    """Every keras_ssr timing as a ratio to the original's (original / ours)."""
    index = _index(records)
    out = []
    for record in records:
        if record["backend"] == "original" or not _ok(record):
            continue
        original = index.get((*_key(record), *ORIGINAL))
        if not _ok(original):
            continue
        out.append(
            {
                "suite": record["suite"],
                "name": record["name"],
                "shape": record["shape"],
                "pass": record["pass"],
                "backend": record["backend"],
                "mode": record["mode"],
                "ours_ms": record["median_ms"],
                "original_ms": original["median_ms"],
                "speedup": round(original["median_ms"] / record["median_ms"], 3),
            }
        )
    return out


def model_overhead(records: list[dict]) -> list[dict]:
    """SSR-U-Net over U-Net, per implementation and pass: time and memory."""
    index = _index(records)
    out = []
    for record in records:
        if record["suite"] != "model" or record["name"] != "unet":
            continue
        ssr = index.get(
            (
                "model",
                "ssr_unet",
                tuple(record["shape"]),
                record["pass"],
                record["backend"],
                record["mode"],
            )
        )
        if not (_ok(record) and _ok(ssr)):
            continue
        unet_mem, ssr_mem = memory_mb(record), memory_mb(ssr)
        out.append(
            {
                "backend": record["backend"],
                "mode": record["mode"],
                "pass": record["pass"],
                "unet_ms": record["median_ms"],
                "ssr_unet_ms": ssr["median_ms"],
                "time_ratio": round(ssr["median_ms"] / record["median_ms"], 3),
                "unet_memory_mb": unet_mem,
                "ssr_unet_memory_mb": ssr_mem,
                "memory_ratio": round(ssr_mem / unet_mem, 3)
                if unet_mem and ssr_mem is not None
                else None,
                "memory_measure": "gpu_peak_mb"
                if record.get("gpu_peak_mb") is not None
                else "peak_rss_delta_mb",
            }
        )
    return out


def _target_shape(settings: dict) -> list[int] | None:
    shapes = settings.get("shapes") or []
    for shape in shapes:
        if tuple(shape[1:]) == tuple(config.TARGETS["level"]):
            return list(shape)
    return list(shapes[0]) if shapes else None


def _best(rows: list[dict], **match) -> dict | None:
    rows = [r for r in rows if all(r[k] == v for k, v in match.items())]
    return max(rows, key=lambda r: r["speedup"]) if rows else None


def targets(settings: dict, ratios: list[dict], overhead: list[dict]) -> list[dict]:
    """``config.TARGETS``, each met, missed or not measured (``None``)."""
    goals = config.TARGETS
    fastest_forward = goals["ssr_fastest_forward_speedup"]
    time_ratio = goals["train_step_time_ratio"]
    memory_ratio = goals["train_step_memory_ratio"]
    shape = _target_shape(settings)
    out = []
    name = "SingularityStrengthRecalibration"
    where = f" at {config.shape_key(shape)}" if shape else ""
    pass_name = "forward+backward"
    for backend, threshold in goals["ssr_forward_backward_speedup"].items():
        best = _best(
            ratios, name=name, shape=shape, backend=backend, **{"pass": pass_name}
        )
        out.append(
            {
                "target": f"SSR {pass_name} >= {threshold:g}x faster than the "
                f"original on {backend}{where}",
                "threshold": threshold,
                "value": best["speedup"] if best else None,
                "met": None if best is None else best["speedup"] >= threshold,
                "detail": f"best mode {best['mode']}: {best['ours_ms']:.1f} ms vs "
                f"{best['original_ms']:.1f} ms"
                if best
                else "not measured",
            }
        )
    best = _best(ratios, name=name, shape=shape, **{"pass": "forward"})
    out.append(
        {
            "target": f"SSR forward >= {fastest_forward:g}x faster than the "
            f"original on the fastest backend{where}",
            "threshold": fastest_forward,
            "value": best["speedup"] if best else None,
            "met": None if best is None else best["speedup"] >= fastest_forward,
            "detail": f"{best['backend']} ({best['mode']}): {best['ours_ms']:.1f} ms "
            f"vs {best['original_ms']:.1f} ms"
            if best
            else "not measured",
        }
    )
    for row in overhead:
        if row["pass"] != "train_step":
            continue
        label = column_label((row["backend"], row["mode"]))
        out.append(
            {
                "target": f"SSR-U-Net training step <= {time_ratio:g}x the "
                f"U-Net's, {label}",
                "threshold": time_ratio,
                "value": row["time_ratio"],
                "met": row["time_ratio"] <= time_ratio,
                "detail": f"{row['ssr_unet_ms']:.0f} ms vs {row['unet_ms']:.0f} ms",
            }
        )
        out.append(
            {
                "target": f"SSR-U-Net training-step peak memory <= "
                f"{memory_ratio:g}x the U-Net's, {label}",
                "threshold": memory_ratio,
                "value": row["memory_ratio"],
                "met": None
                if row["memory_ratio"] is None
                else row["memory_ratio"] <= memory_ratio,
                "detail": f"{row['ssr_unet_memory_mb']} MiB vs "
                f"{row['unet_memory_mb']} MiB ({row['memory_measure']})",
            }
        )
    return out


def _count_key(record: dict, kind: str) -> bool:
    """Whether ``record`` is at the shape the report reads ``kind`` at:
    launches at the launch shapes, traffic and peaks at the others."""
    at_launch = tuple(record["shape"]) in (
        tuple(config.LAUNCH_SHAPE),
        tuple(config.MODEL_LAUNCH_INPUT),
    )
    return at_launch == (kind == "launch")


def count_lookup(counts: list[dict]):
    """``get(name, backend, mode, pass, kind) -> record | None``."""
    index = {}
    for r in counts:
        for kind in ("launch", "traffic"):
            if _count_key(r, kind):
                index[(r["name"], r["backend"], r["mode"], r["pass"], kind)] = r

    def get(name, backend, mode, pass_name, kind):
        return index.get((name, backend, mode, pass_name, kind))

    return get


def passes(record: dict | None, key: str = "bytes") -> float | None:
    if not record or record.get(key) is None:
        return None
    return record[key] / record["input_bytes"]


def count_targets(counts: list[dict]) -> list[dict]:
    """The launch and traffic targets (``config``), met or missed."""
    get = count_lookup(counts)
    names = list(dict.fromkeys(r["name"] for r in counts if r["suite"] == "layer"))
    out = []
    for name in names:
        for backend, mode in config.LAUNCH_COLUMNS[1:]:
            for pass_name in config.PASSES:
                ours = get(name, backend, mode, pass_name, "launch")
                theirs = get(name, *config.LAUNCH_COLUMNS[0], pass_name, "launch")
                if ours is None or theirs is None:
                    continue
                out.append(
                    {
                        "target": f"{config.SHORT_NAMES.get(name, name)} {pass_name} "
                        f"launches <= the original's, {backend} ({mode})",
                        "threshold": theirs["launches"],
                        "value": ours["launches"],
                        "met": ours["launches"] <= theirs["launches"],
                    }
                )
            ceiling = config.LAUNCH_TARGETS.get(name)
            ours = get(name, backend, mode, "forward+backward", "launch")
            if ceiling is not None and ours is not None:
                out.append(
                    {
                        "target": f"{config.SHORT_NAMES.get(name, name)} "
                        f"forward+backward launches <= {ceiling}, {backend} ({mode})",
                        "threshold": ceiling,
                        "value": ours["launches"],
                        "met": ours["launches"] <= ceiling,
                    }
                )
    for (name, pass_name), ceiling in config.TRAFFIC_TARGETS.items():
        value = passes(get(name, "jax", "jax.jit", pass_name, "traffic"))
        if value is None:
            continue
        out.append(
            {
                "target": f"{config.SHORT_NAMES.get(name, name)} {pass_name} XLA "
                f"traffic <= {ceiling} passes (JAX)",
                "threshold": ceiling,
                "value": round(value, 1),
                "met": value <= ceiling,
            }
        )
    return out


def _agreement(workers: list[dict]) -> dict:
    fixtures, live, reference, float64 = [], [], [], []
    for worker in workers:
        backend = worker.get("environment", {}).get("backend")
        for entry in worker.get("fixtures", []):
            row = {"backend": backend, **entry}
            (reference if backend == "original" else fixtures).append(row)
        for entry in worker.get("live", []):
            live.append({"backend": backend, **entry})
        for entry in worker.get("original_vs_float64", []):
            float64.append({"backend": "original", **entry})
    for entry in live:
        if "vs_float64" in entry:
            float64.append(
                {
                    "backend": entry["backend"],
                    "mode": entry["mode"],
                    "layer": entry["layer"],
                    "shape": entry["shape"],
                    **entry["vs_float64"],
                }
            )
    return {
        "rule": "max|ours - expected| / max(1, max|expected|) per array (input "
        "gradients per channel), worst array reported; agrees when <= "
        f"{config.RTOL:g}",
        "fixtures": fixtures,
        "live": live,
        "original_vs_fixtures": reference,
        "float64": float64,
        "float64_note": "keras_ssr evaluated in float64 (JAX, jax_enable_x64) on "
        "the live inputs and weights: the float32 result closer to it is the "
        "more accurate one where keras_ssr and the original disagree",
    }


def build(settings: dict, raw: dict) -> dict:
    """The report document from the settings and the workers' raw results."""
    workers = raw.get("workers", [])
    records = [r for w in workers for r in w.get("records", [])]
    environments = {}
    for worker in workers:
        environment = worker.get("environment")
        if environment:
            environments.setdefault(environment["backend"], environment)
    errors = list(raw.get("errors", []))
    for worker in workers:
        for error in worker.get("errors", []):
            errors.append(
                {
                    "where": f"{worker['label']}: {error['where']}",
                    "error": error["error"],
                }
            )
    ratios = speedups(records)
    overhead = model_overhead(records)
    counts = [c for w in workers for c in w.get("counts", [])]
    notes = list(raw.get("notes", []))
    reference = raw.get("reference", {"requested": False, "status": "not requested"})
    if not reference.get("requested"):
        notes.append(
            "No reference run (--reference-repo not given): backends are compared "
            "with each other only; no speed-up against the original and no live "
            "agreement."
        )
    if settings.get("quick"):
        notes.append(
            "Quick run: one level shape, the models on single images, Keras' "
            "default compile mode per backend, the SSR's fixtures only, no float64 "
            "check; each implementation's layers and models share one process, so "
            "CPU memory figures are indicative only (run without --quick for them)."
        )
    notes.append(
        "Times are medians of the timed repeats after warm-up; the first call "
        "(tracing and compilation) is reported separately as first_call_ms."
    )
    notes.append(
        "Memory on CPU: peak_rss_mb is the process' resident-set high-water mark "
        "during a benchmark (reset before it via /proc/self/clear_refs); "
        "peak_rss_delta_mb is that peak minus the RSS before it (layers: inputs "
        "allocated; models: before the model was built, so weights, optimizer "
        "state and compiled code count). Every model runs in a fresh process; "
        "the layers of one implementation share one, and TensorFlow keeps freed "
        "CPU memory in its own pools, so its later layer figures read low (0). "
        "On GPU: the allocator's peak (gpu_peak_mb; JAX's cannot be reset, so "
        "there it is the process' peak so far)."
    )
    load = raw.get("load_average")
    if load and load.get("start"):
        notes.append(
            f"Load average at start {load['start']}, at end {load.get('end')}: "
            "other processes shared the machine when it is above the core count."
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "started": raw.get("started"),
        "command": raw.get("command"),
        "wall_s": raw.get("wall_s"),
        "settings": settings,
        "host": raw.get("host"),
        "load_average": load,
        "environments": environments,
        "reference": reference,
        "results": records,
        "speedups": ratios,
        "model_overhead": overhead,
        "targets": targets(settings, ratios, overhead),
        "counts": counts,
        "count_targets": count_targets(counts),
        "followup": raw.get("followup"),
        "agreement": _agreement(workers),
        "errors": errors,
        "notes": notes,
        "workers": [
            {
                "label": w.get("label"),
                "wall_s": w.get("wall_s"),
                "failed": w.get("failed"),
            }
            for w in workers
        ],
    }


# --------------------------------------------------------------------------
# Markdown


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _num(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _timing_rows(document: dict, suite: str, columns, with_memory: bool):
    records = [r for r in document["results"] if r["suite"] == suite]
    index = _index(records)
    keys = []
    for r in records:
        key = _key(r)
        if key not in keys:
            keys.append(key)
    order = list(config.LAYERS) + list(config.MODELS)
    passes = list(config.PASSES) + list(config.MODEL_PASSES)
    keys.sort(
        key=lambda k: (
            order.index(k[1]) if k[1] in order else 99,
            -math.prod(k[2]),
            passes.index(k[3]),
        )
    )
    rows = []
    for key in keys:
        row = [config.SHORT_NAMES.get(key[1], key[1]), config.shape_key(key[2]), key[3]]
        original = index.get((*key, *ORIGINAL))
        for column in columns:
            record = index.get((*key, *column))
            if record is None:
                row.append("")
                continue
            if not _ok(record):
                row.append("failed")
                continue
            if with_memory:
                row.append(_num(memory_mb(record), 4))
                continue
            cell = _ms(record["median_ms"])
            if column != ORIGINAL and _ok(original):
                cell += f" ({original['median_ms'] / record['median_ms']:.1f}x)"
            row.append(cell)
        rows.append(row)
    return rows


def markdown(document: dict) -> str:
    """The report as Markdown tables."""
    settings = document["settings"]
    records = document["results"]
    columns = _columns(records)
    lines = ["# keras_ssr benchmarks", ""]
    host = document.get("host") or {}
    lines.append(
        f"Run {document.get('started')} on {host.get('cpu')} "
        f"({host.get('usable_cpus')} usable cores, {host.get('memory_gib')} GiB), "
        f"Python {host.get('python')}, {document.get('wall_s')} s in all. "
        f"{'Quick run. ' if settings.get('quick') else ''}"
        f"Precision: {settings.get('precision')}."
    )
    lines.append("")
    lines.append(f"Command: `{document.get('command')}`")
    lines.append("")
    env_rows = []
    for name, env in document["environments"].items():
        versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
        device = env.get("device", {})
        env_rows.append([name, f"{device.get('type')}: {device.get('name')}", versions])
    lines += _table(["implementation", "device", "versions"], env_rows)
    lines.append("")
    reference = document["reference"]
    if reference.get("requested"):
        lines.append(
            f"Original: `{reference.get('repo')}` at commit "
            f"`{reference.get('commit')}`, status {reference.get('status')}. "
            "Ratios in parentheses: original time / keras_ssr time (speed-up)."
        )
    else:
        lines.append(
            "**No reference run** (`--reference-repo` not given): the backends are "
            "compared with each other only."
        )
    lines.append("")
    layer_text = ", ".join(
        f"{config.SHORT_NAMES[n]} = {n}({', '.join(f'{k}={v}' for k, v in kw.items())})"
        for n, kw in settings["layers"].items()
    )
    lines.append(
        f"Layers: {layer_text}. Forward: `training=False`; forward+backward: "
        "`training=True` and the gradient of `sum(y * cotangent)` with respect to "
        f"the input and every trainable weight. Warm-up {settings['warmup']}, "
        f"median of {settings['repeats']} repeats (fewer, but at least 3, where "
        f"they take over {settings.get('budget_s')} s)."
    )
    lines.append("")
    header = ["layer", "shape", "pass"] + [column_label(c) for c in columns]
    layer_rows = _timing_rows(document, "layer", columns, with_memory=False)
    if layer_rows:
        lines += ["## Layers: median ms", ""]
        lines += _table(header, layer_rows) + [""]
        lines += [
            "## Layers: peak memory (MiB above the inputs; GPU: allocator peak)",
            "",
        ]
        lines += _table(header, _timing_rows(document, "layer", columns, True)) + [""]
    model = settings["model"]
    model_rows = _timing_rows(document, "model", columns, with_memory=False)
    if model_rows:
        lines += [
            "## Models: median ms",
            "",
            f"U-Net and SSR-U-Net (r={model['r']}, max_scale={model['max_scale']}), "
            f"levels {model['channels_per_level']}, input "
            f"{config.shape_key(model['input_shape'])}, batch "
            f"{settings['model_batch_size']}, with_bn={model['with_bn']}. Training "
            "step: `train_on_batch` (Adam, binary cross-entropy); inference: "
            f"`predict_on_batch`. Warm-up {settings['model_warmup']}, median of "
            f"{settings['model_repeats']} (at least 3 past "
            f"{settings.get('model_budget_s')} s).",
            "",
        ]
        header_m = ["model", "input", "pass"] + [column_label(c) for c in columns]
        lines += _table(header_m, model_rows) + [""]
        lines += [
            "## Models: peak memory (MiB; CPU: RSS above the pre-build baseline, "
            "GPU: allocator peak)",
            "",
        ]
        lines += _table(header_m, _timing_rows(document, "model", columns, True))
        lines.append("")
    if document["model_overhead"]:
        lines += ["## SSR-U-Net cost over U-Net (same implementation)", ""]
        rows = [
            [
                column_label((r["backend"], r["mode"])),
                r["pass"],
                _ms(r["unet_ms"]),
                _ms(r["ssr_unet_ms"]),
                f"{r['time_ratio']:.2f}",
                _num(r["unet_memory_mb"], 4),
                _num(r["ssr_unet_memory_mb"], 4),
                "-" if r["memory_ratio"] is None else f"{r['memory_ratio']:.2f}",
            ]
            for r in document["model_overhead"]
        ]
        lines += _table(
            [
                "implementation",
                "pass",
                "U-Net ms",
                "SSR-U-Net ms",
                "time ratio",
                "U-Net MiB",
                "SSR-U-Net MiB",
                "memory ratio",
            ],
            rows,
        )
        lines.append("")
    if document["targets"]:
        lines += ["## Targets", ""]
        rows = [
            [
                t["target"],
                _num(t["value"], 3),
                {True: "met", False: "**missed**", None: "not measured"}[t["met"]],
                t["detail"],
            ]
            for t in document["targets"]
        ]
        lines += _table(["target", "value", "result", "detail"], rows) + [""]
    lines += count_tables(document)
    agreement = document["agreement"]
    lines += ["## Agreement", "", f"Rule: {agreement['rule']}.", ""]
    if agreement["fixtures"]:
        lines += [
            "Against the recorded TF 2.14 fixtures (tests/data/reference_tf214):",
            "",
        ]
        rows = [
            [
                f"{a['backend']} ({a['mode']})",
                config.SHORT_NAMES.get(a["layer"], a["layer"]),
                str(a["cases"]),
                _num(a["max_abs"]),
                _num(a["max_rel"]),
                "yes" if a["ok"] else "**no**",
            ]
            for a in agreement["fixtures"]
        ]
        lines += _table(
            ["implementation", "layer", "cases", "max abs", "max rel", "agrees"], rows
        ) + [""]
    if agreement["original_vs_fixtures"]:
        worst = max((a["max_rel"] or 0.0) for a in agreement["original_vs_fixtures"])
        lines += [
            f"The original, run here with keras_ssr's weight mapping, against the "
            f"same fixtures: worst relative error {_num(worst)}.",
            "",
        ]
    if agreement["live"]:
        lines += [
            "Against the original run live (same random inputs, keras_ssr's "
            "weights set on the original):",
            "",
        ]
        rows = [
            [
                f"{a['backend']} ({a['mode']})",
                config.SHORT_NAMES.get(a["layer"], a["layer"]),
                config.shape_key(a["shape"]),
                _num(a["max_abs"]),
                _num(a["max_rel"]),
                _worst_array(a),
                "yes" if a["ok"] else "**no**",
            ]
            for a in agreement["live"]
        ]
        lines += _table(
            [
                "implementation",
                "layer",
                "shape",
                "max abs",
                "max rel",
                "worst array",
                "agrees",
            ],
            rows,
        ) + [""]
    elif reference.get("requested"):
        lines += ["No live comparison was made (see errors).", ""]
    if agreement.get("float64"):
        lines += [
            "Against float64 (" + agreement["float64_note"] + "):",
            "",
        ]
        rows = [
            [
                column_label((a["backend"], a["mode"])),
                config.SHORT_NAMES.get(a["layer"], a["layer"]),
                config.shape_key(a["shape"]),
                _num(a["max_rel"]),
                _worst_array(a),
                "yes" if a["ok"] else "**no**",
            ]
            for a in sorted(
                agreement["float64"],
                key=lambda a: (
                    a["layer"],
                    -math.prod(a["shape"]),
                    a["backend"] != "original",
                ),
            )
        ]
        lines += _table(
            [
                "implementation",
                "layer",
                "shape",
                "max rel",
                "worst array",
                "within 1e-4",
            ],
            rows,
        ) + [""]
    if document["errors"]:
        lines += ["## Errors", ""]
        lines += [
            f"- {e['where']}: {e['error'].splitlines()[0][:300]}"
            for e in document["errors"]
        ]
        lines.append("")
    lines += ["## Notes", ""] + [f"- {n}" for n in document["notes"]] + [""]
    return "\n".join(lines)


def _pair(values, fmt="{}") -> str:
    if all(v is None for v in values):
        return ""
    return " / ".join("-" if v is None else fmt.format(v) for v in values)


def count_tables(document: dict) -> list[str]:
    """The counts as Markdown: launches, XLA traffic and peaks, targets."""
    counts = document.get("counts") or []
    if not counts:
        return []
    get = count_lookup(counts)
    names = list(dict.fromkeys(r["name"] for r in counts))
    settings = document["settings"]
    lines = [
        "## Kernel launches (where nothing fuses)",
        "",
        "Forward / forward + backward (the gradient of `sum(y * cotangent)` with "
        "respect to the input and every weight), layers at "
        f"{config.shape_key(config.LAUNCH_SHAPE)}, models at "
        f"{config.shape_key(config.MODEL_LAUNCH_INPUT)}. TF graph: the ops of the "
        "`tf.function` that run (what the outputs and variable updates need), "
        "less constants, identities, variable reads, shape ops and reshapes "
        "(`benchmarks/counts.py`); torch eager: ATen ops, views excluded.",
        "",
    ]
    rows = []
    for name in names:
        row = [config.SHORT_NAMES.get(name, name)]
        for backend, mode in config.LAUNCH_COLUMNS:
            row.append(
                _pair(
                    [
                        (get(name, backend, mode, p, "launch") or {}).get("launches")
                        for p in config.PASSES
                    ]
                )
            )
        rows.append(row)
    header = ["layer", "original (TF 2.14)", "TF graph", "torch eager"]
    lines += _table(header, rows) + [""]
    traffic = settings.get("traffic_shape")
    if traffic:
        one = 4 * math.prod(traffic) / 1e6
        lines += [
            "## Memory traffic across XLA kernels, peaks",
            "",
            f"Layers at {config.shape_key(traffic)} (one pass over the input: "
            f"{one:.1f} MB), models at "
            f"{config.shape_key(settings.get('model_traffic_input') or [])} (passes "
            "over the model input). Passes: in the optimised HLO's ENTRY, every "
            "kernel reads each distinct operand once and writes its result once; "
            "XLA's own `bytes accessed` counts every shifted read of a stencil "
            "again. Temporaries: XLA's buffer assignment. torch peak: the most "
            "bytes held at once by the tensors an eager call made.",
            "",
        ]
        rows = []
        for name in names:
            jax_ = [get(name, "jax", "jax.jit", p, "traffic") for p in config.PASSES]
            tf_ = [
                get(name, "tensorflow", "tf.function+XLA", p, "traffic")
                for p in config.PASSES
            ]
            torch_ = [get(name, "torch", "eager", p, "traffic") for p in config.PASSES]
            rows.append(
                [
                    config.SHORT_NAMES.get(name, name),
                    _pair([passes(r) for r in jax_], "{:.1f}"),
                    _pair([(r or {}).get("kernels") for r in jax_]),
                    _pair([passes(r, "bytes_accessed") for r in jax_], "{:.1f}"),
                    _pair([passes(r, "temp_bytes") for r in jax_], "{:.1f}"),
                    _pair([passes(r) for r in tf_], "{:.1f}"),
                    _pair([passes(r, "peak_bytes") for r in torch_], "{:.1f}"),
                ]
            )
        header = [
            "layer",
            "JAX passes",
            "JAX kernels",
            "XLA bytes accessed (passes)",
            "JAX temporaries (inputs)",
            "TF+XLA passes",
            "torch eager peak (inputs)",
        ]
        lines += _table(header, rows) + [""]
    if document.get("count_targets"):
        lines += ["## Count targets", ""]
        rows = [
            [
                t["target"],
                _num(t["value"], 4),
                "met" if t["met"] else "**missed**",
            ]
            for t in document["count_targets"]
        ]
        lines += _table(["target", "value", "result"], rows) + [""]
    return lines


def _worst_array(entry: dict) -> str:
    arrays = entry.get("arrays") or {}
    if not arrays:
        return "-"
    name = max(arrays, key=lambda k: arrays[k]["max_rel"])
    return name


# --------------------------------------------------------------------------
# Chart


def chart(document: dict, path: pathlib.Path) -> bool:
    """Bar chart of the median times; ``False`` when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    records = [r for r in document["results"] if _ok(r)]
    columns = _columns(records)
    shape = _target_shape(document["settings"])
    panels = []
    layer_records = [
        r for r in records if r["suite"] == "layer" and r["shape"] == shape
    ]
    if layer_records:
        panels.append(
            ("layer", layer_records, f"layers, input {config.shape_key(shape)}")
        )
    model_records = [r for r in records if r["suite"] == "model"]
    if model_records:
        panels.append(
            (
                "model",
                model_records,
                f"U-Net vs SSR-U-Net, batch {document['settings']['model_batch_size']}",
            )
        )
    if not panels:
        panels.append(("none", [], "no successful timing"))
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(max(8, 1.1 * len(columns) + 6), 4.2 * len(panels)),
        squeeze=False,
    )
    colors = plt.get_cmap("tab10")
    for ax, (_, subset, title) in zip(axes[:, 0], panels):
        index = _index(subset)
        groups = []
        for r in subset:
            group = (r["name"], r["pass"])
            if group not in groups:
                groups.append(group)
        width = 0.8 / max(1, len(columns))
        for j, column in enumerate(columns):
            xs, heights = [], []
            for i, (name, pass_name) in enumerate(groups):
                record = next(
                    (
                        v
                        for k, v in index.items()
                        if k[1] == name and k[3] == pass_name and k[4:] == column
                    ),
                    None,
                )
                if record is not None:
                    xs.append(i + (j - (len(columns) - 1) / 2) * width)
                    heights.append(record["median_ms"])
            if xs:
                ax.bar(xs, heights, width, label=column_label(column), color=colors(j))
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(
            [f"{config.SHORT_NAMES.get(n, n)}\n{p}" for n, p in groups], fontsize=8
        )
        ax.set_ylabel("median ms (log)")
        if groups:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        if columns and groups:
            ax.legend(fontsize=7, ncol=2)
    host = document.get("host") or {}
    fig.suptitle(f"keras_ssr benchmarks ({host.get('cpu')}), lower is better")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(document: dict, out_dir: pathlib.Path, stem: str = "report") -> list:
    """Writes ``stem``.json, .md and .png into ``out_dir``; returns the paths."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{stem}.png"
    if chart(document, png):
        document["chart"] = png.name
    else:
        document["chart"] = None
        document["notes"].append("matplotlib is not installed: no chart written.")
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    paths[0].write_text(
        json.dumps(_finite(document), indent=1, default=_json_default, allow_nan=False)
        + "\n"
    )
    paths[1].write_text(markdown(document))
    if document["chart"]:
        paths.append(png)
    return paths


def _finite(value):
    """Non-finite floats as strings: strict JSON has no NaN or Infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
