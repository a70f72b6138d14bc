"""Runs the benchmarks and writes the report.

    nox -s bench                                    # all backends, full run
    nox -s bench -- --quick                         # < 3 min on 2 CPU cores
    nox -s bench -- --reference-repo ../ssr         # beside the original
    nox -s bench -- --reference-repo ../ssr --followup-repo ../mfr  # both papers
    python -m benchmarks --help                     # every option

Each backend runs in its own process (``KERAS_BACKEND`` set), the layers in
one process per backend and every model in a fresh process (so that its
peak memory is its own). With ``--reference-repo PATH`` the original TF 2.14
implementation (a checkout of ``miguelmartins/ssr``) runs in a separate
virtual environment with ``tensorflow-cpu==2.14.1`` and ``numpy<2``
(``tensorflow[and-cuda]==2.14.1`` where ``nvidia-smi`` finds a GPU), built
under ``.nox/bench-reference`` on first use and reused after; or give its
interpreter with ``--reference-python``. With ``--followup-repo PATH`` (a
checkout of ``miguelmartins/multifractal-recalibration``) the follow-up's
layers run beside keras_ssr's family in that environment too, in their own
processes (both checkouts name their package ``neural_components``).

Besides the timings, every backend counts what does not depend on load
(:mod:`benchmarks.counts`): kernel launches, XLA traffic and torch's peak.

The report (``report.json``, ``report.md``, ``report.png``) goes to
``benchmarks/results/<name>/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

from benchmarks import config, measure, report

REPO = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "data" / "reference_tf214"
DEFAULT_REFERENCE_VENV = REPO / ".nox" / "bench-reference"
REFERENCE_TF_VERSION = "2.14.1"


# --------------------------------------------------------------------------
# Arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time keras_ssr's layers and models on TensorFlow, PyTorch "
        "and JAX, optionally beside the original TF 2.14 implementation, and "
        "measure their agreement.",
    )
    parser.add_argument(
        "--reference-repo",
        metavar="PATH",
        help="checkout of the original implementation (miguelmartins/ssr): "
        "time it beside keras_ssr and compare outputs live",
    )
    parser.add_argument(
        "--followup-repo",
        metavar="PATH",
        help="checkout of the follow-up's code "
        "(miguelmartins/multifractal-recalibration): count its layers' "
        "launches beside keras_ssr's (run in the original's environment)",
    )
    parser.add_argument(
        "--reference-python",
        metavar="PATH",
        help="interpreter with TensorFlow 2.14 and numpy<2 for the original "
        f"(default: build or reuse {DEFAULT_REFERENCE_VENV.relative_to(REPO)})",
    )
    parser.add_argument(
        "--reference-venv",
        metavar="DIR",
        default=str(DEFAULT_REFERENCE_VENV),
        help="where to build the original's virtual environment",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one level shape (N x 56 x 56 x 128), the models on single "
        "images, Keras' default compile mode per backend, fewer repeats, the "
        "SSR's fixtures only, no float64 check, one process per implementation",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help=f"batch of the layer shapes and the models (default "
        f"{config.DEFAULT_BATCH_SIZE}; --quick: models "
        f"{config.QUICK_MODEL_BATCH_SIZE})",
    )
    parser.add_argument(
        "--backends",
        default=",".join(config.BACKENDS),
        help="comma-separated subset of tensorflow,torch,jax",
    )
    parser.add_argument(
        "--modes",
        help="comma-separated compile modes to run (e.g. "
        "'tf.function+XLA,eager,jax.jit'); default: all (--quick: the first "
        "of each backend)",
    )
    parser.add_argument(
        "--layers",
        default=",".join(config.LAYERS),
        help="comma-separated layers to time",
    )
    parser.add_argument(
        "--shapes",
        help="comma-separated layer input shapes, e.g. 4x224x224x32,4x56x56x128 "
        "(overrides the level shapes and --batch-size for the layers)",
    )
    parser.add_argument("--warmup", type=int, help="warm-up calls per layer")
    parser.add_argument("--repeats", type=int, help="timed calls per layer")
    parser.add_argument(
        "--budget",
        type=float,
        help="seconds of timed calls per layer benchmark after which a slow one "
        "stops repeating (models: twice that); default 20 (--quick: 4)",
    )
    parser.add_argument("--model-warmup", type=int, help="warm-up steps per model")
    parser.add_argument("--model-repeats", type=int, help="timed steps per model")
    parser.add_argument(
        "--model-levels",
        help="comma-separated channels per level of both U-Nets "
        f"(default {','.join(map(str, config.MODEL['channels_per_level']))})",
    )
    parser.add_argument(
        "--model-input",
        help="model input shape HxWxC (default "
        f"{config.shape_key(config.MODEL['input_shape'])})",
    )
    parser.add_argument("--skip-layers", action="store_true", help="no layer timings")
    parser.add_argument(
        "--count-layers",
        help="comma-separated layers whose launches and traffic are counted "
        "(default: every public layer)",
    )
    parser.add_argument(
        "--skip-counts",
        action="store_true",
        help="no launch, traffic and peak counts (benchmarks/counts.py)",
    )
    parser.add_argument("--skip-models", action="store_true", help="no model timings")
    parser.add_argument(
        "--fixture-layers",
        help="comma-separated layers whose recorded fixtures are checked "
        "(default: every timed layer; --quick: SingularityStrengthRecalibration)",
    )
    parser.add_argument(
        "--no-fixtures",
        action="store_true",
        help="skip the agreement with the recorded TF 2.14 fixtures",
    )
    parser.add_argument(
        "--output-dir",
        metavar="DIR",
        help="where the report goes (default benchmarks/results/<name>)",
    )
    parser.add_argument(
        "--name",
        help="report file stem and default folder name (default: a timestamp)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds one worker process may run (default 3600)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the current KERAS_BACKEND only, in this process (for tests; "
        "memory figures then share one process)",
    )
    parser.add_argument(
        "--keep-live",
        action="store_true",
        help="keep the live comparison's arrays (large) in the output folder",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    return parser


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def resolve_settings(args: argparse.Namespace) -> dict:
    """The run's settings from the arguments (validated)."""
    backends = _csv(args.backends)
    unknown = sorted(set(backends) - set(config.BACKENDS))
    if unknown or not backends:
        raise ValueError(
            f"--backends must name some of {list(config.BACKENDS)}. "
            f"Received: backends={args.backends!r}"
        )
    if args.in_process:
        import keras

        backends = [keras.backend.backend()]
    layers = _csv(args.layers)
    unknown = sorted(set(layers) - set(config.LAYERS))
    if unknown:
        raise ValueError(
            f"--layers must name some of {list(config.LAYERS)}. "
            f"Received: layers={args.layers!r}"
        )
    kind = "quick" if args.quick else "full"
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(
            f"--batch-size must be at least 1. Received: batch_size={args.batch_size}"
        )
    batch = args.batch_size or config.DEFAULT_BATCH_SIZE
    if args.shapes:
        shapes = [list(config.parse_shape(s)) for s in _csv(args.shapes)]
    else:
        levels = config.QUICK_LEVEL_SHAPES if args.quick else config.LEVEL_SHAPES
        shapes = [[batch, *level] for level in levels]
    layer_shapes = {
        name: [[batch, *level] for level in config.FAMILY_LEVEL_SHAPES]
        if config.source(name) == "followup" and not (args.shapes or args.quick)
        else shapes
        for name in layers
    }
    model_batch = args.batch_size or (
        config.QUICK_MODEL_BATCH_SIZE if args.quick else config.DEFAULT_BATCH_SIZE
    )
    model = dict(config.MODEL)
    if args.model_levels:
        model["channels_per_level"] = [int(c) for c in _csv(args.model_levels)]
    if args.model_input:
        model["input_shape"] = list(config.parse_shape(args.model_input))
    requested = _csv(args.modes)
    all_modes = {m for b in config.BACKENDS for m in config.MODES[b]}
    unknown = sorted(set(requested) - all_modes)
    if unknown:
        raise ValueError(
            f"--modes must name some of {sorted(all_modes)}. Received: modes={unknown}"
        )
    modes = {}
    for backend in backends:
        available = config.MODES[backend]
        if requested:
            chosen = [m for m in available if m in requested]
        elif args.quick:
            chosen = [_default_mode(backend)]
        else:
            chosen = list(available)
        if chosen:
            modes[backend] = chosen
    if not modes:
        raise ValueError(
            f"No compile mode left to run for backends {backends}. "
            f"Received: modes={args.modes!r}"
        )
    count_layers = _csv(args.count_layers) or list(config.COUNTED_LAYERS)
    unknown = sorted(set(count_layers) - set(config.COUNTED_LAYERS))
    if unknown:
        raise ValueError(
            f"--count-layers must name some of {list(config.COUNTED_LAYERS)}. "
            f"Received: count_layers={args.count_layers!r}"
        )
    fixture_layers = _csv(args.fixture_layers) or (
        ["SingularityStrengthRecalibration"] if args.quick else None
    )
    unknown = sorted(set(fixture_layers or ()) - set(config.LAYERS))
    if unknown:
        raise ValueError(
            f"--fixture-layers must name some of {list(config.LAYERS)}. "
            f"Received: fixture_layers={args.fixture_layers!r}"
        )
    warmup, repeats = config.REPEATS[kind]
    budget, model_budget = config.BUDGET_S[kind]
    if args.budget is not None:
        if args.budget <= 0:
            raise ValueError(
                f"--budget must be positive. Received: budget={args.budget}"
            )
        budget, model_budget = args.budget, 2 * args.budget
    model_warmup, model_repeats = config.MODEL_REPEATS[kind]
    return {
        "quick": bool(args.quick),
        "backends": list(modes),
        "modes": modes,
        "layers": {name: config.LAYERS[name] for name in layers},
        "shapes": shapes,
        "layer_shapes": layer_shapes,
        "model": model,
        "models": [] if args.skip_models else list(config.MODELS),
        "model_batch_size": model_batch,
        "warmup": args.warmup or warmup,
        "repeats": args.repeats or repeats,
        "model_warmup": args.model_warmup or model_warmup,
        "model_repeats": args.model_repeats or model_repeats,
        "budget_s": budget,
        "model_budget_s": model_budget,
        "skip_layers": bool(args.skip_layers),
        "counts": not args.skip_counts,
        "count_layers": count_layers,
        "launch_shape": list(config.LAUNCH_SHAPE),
        "model_launch_input": list(config.MODEL_LAUNCH_INPUT),
        "traffic_shape": shapes[0],
        "model_traffic_input": [model_batch, *model["input_shape"]],
        "fixtures": not args.no_fixtures,
        # --quick checks the SSR's recorded cases only (they cover SE, LSS
        # and the batch normalisation); each case compiles anew.
        "fixture_layers": fixture_layers,
        "float64": not args.quick,
        "seed": args.seed,
        "in_process": bool(args.in_process),
        "precision": "float32 throughout (TensorFloat-32 off on GPUs)",
    }


def _default_mode(backend: str) -> str:
    """The compile mode Keras picks by default (``jit_compile="auto"``)."""
    if backend == "tensorflow":
        return "tf.function+XLA" if _has_nvidia_gpu() else "tf.function"
    return config.MODES[backend][0]


# --------------------------------------------------------------------------
# The original's environment


@functools.cache
def _has_nvidia_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def _reference_ok(python: pathlib.Path) -> bool:
    check = (
        "import numpy, tensorflow as tf; "
        f"assert tf.__version__ == {REFERENCE_TF_VERSION!r}, tf.__version__; "
        "assert int(numpy.__version__.split('.')[0]) < 2"
    )
    try:
        result = subprocess.run(
            [str(python), "-c", check],
            capture_output=True,
            timeout=300,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def ensure_reference_python(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The original's interpreter: given, reused, or built. Returns notes too."""
    if args.reference_python:
        python = pathlib.Path(args.reference_python)
        if not _reference_ok(python):
            raise RuntimeError(
                f"--reference-python must have tensorflow=={REFERENCE_TF_VERSION} "
                f"and numpy<2. Received: reference_python={str(python)!r}"
            )
        return str(python), [f"original run with {python}"]
    venv = pathlib.Path(args.reference_venv)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if python.exists() and _reference_ok(python):
        return str(python), [f"original run in the reused environment {venv}"]
    if sys.version_info[:2] > (3, 11) or sys.version_info[:2] < (3, 9):
        raise RuntimeError(
            "TensorFlow 2.14 needs Python 3.9-3.11 to build the reference "
            f"environment; this is Python {sys.version.split()[0]}. Pass "
            "--reference-python with such an interpreter."
        )
    gpu = _has_nvidia_gpu()
    tensorflow = os.environ.get(
        "KERAS_SSR_REFERENCE_TF",
        f"tensorflow[and-cuda]=={REFERENCE_TF_VERSION}"
        if gpu
        else f"tensorflow-cpu=={REFERENCE_TF_VERSION}",
    )
    print(f"Building the original's environment in {venv} ({tensorflow})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", tensorflow, "numpy<2"],
        check=True,
    )
    if not _reference_ok(python):
        raise RuntimeError(f"The environment {venv} does not import TensorFlow 2.14")
    return str(python), [f"original run in the new environment {venv} ({tensorflow})"]


def git_commit(path: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", path, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# --------------------------------------------------------------------------
# Workers


class WorkerError(RuntimeError):
    pass


def _stream(pipe, sinks) -> None:
    for line in iter(pipe.readline, ""):
        for sink in sinks:
            sink.write(line)
            sink.flush()
    pipe.close()


def run_worker(
    python: str,
    module: str,
    spec: dict,
    work: pathlib.Path,
    label: str,
    env: dict,
    timeout: float,
) -> dict:
    """Runs ``python -m module SPEC RESULT`` and returns the result."""
    work.mkdir(parents=True, exist_ok=True)
    spec_path = work / f"{label}.spec.json"
    result_path = work / f"{label}.result.json"
    log_path = work / f"{label}.log"
    spec_path.write_text(json.dumps(spec, indent=1))
    if result_path.exists():
        result_path.unlink()
    python_path = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p
    )
    environment = {
        # Idle OpenMP threads sleep instead of spinning: on a machine shared
        # with other processes, spinning threads stall PyTorch's parallel
        # regions by orders of magnitude (measured: SE forward 64 ms vs 0.8 ms
        # on 2 busy cores). Set OMP_WAIT_POLICY yourself to override.
        "OMP_WAIT_POLICY": "PASSIVE",
        **os.environ,
        "PYTHONPATH": python_path,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        "TF_FORCE_GPU_ALLOW_GROWTH": "true",
        **env,
    }
    print(f"- {label}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [python, "-m", module, str(spec_path), str(result_path)],
            cwd=str(REPO),
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        reader = threading.Thread(
            target=_stream, args=(process.stdout, [log, _ProgressOnly()])
        )
        reader.start()
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            reader.join()
            raise WorkerError(
                f"{label}: timed out after {timeout:.0f} s (log: {log_path})"
            ) from None
        reader.join()
    elapsed = time.perf_counter() - start
    if code != 0 or not result_path.exists():
        tail = log_path.read_text()[-2000:]
        raise WorkerError(f"{label}: exit code {code} (log: {log_path})\n{tail}")
    result = json.loads(result_path.read_text())
    result["wall_s"] = round(elapsed, 1)
    return result


class _ProgressOnly:
    """Forwards the workers' progress lines (and errors) to stderr."""

    def write(self, line: str) -> None:
        if line.startswith("  [") or "Error" in line:
            sys.stderr.write(line)

    def flush(self) -> None:
        sys.stderr.flush()


def run_in_process(spec: dict) -> dict:
    from benchmarks import worker

    start = time.perf_counter()
    result = worker.run_task(spec)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


# --------------------------------------------------------------------------
# The run


def layer_spec(settings: dict, backend: str, live_dir: str | None, layers=None) -> dict:
    return {
        "task": "layers",
        "backend": None if settings["in_process"] else backend,
        "layers": list(settings["layers"]) if layers is None else layers,
        "shapes": settings["shapes"],
        "layer_shapes": settings["layer_shapes"],
        "modes": settings["modes"].get(backend, []),
        "warmup": settings["warmup"],
        "repeats": settings["repeats"],
        "budget_s": settings["budget_s"],
        "fixtures_dir": str(FIXTURES) if settings["fixtures"] else None,
        "fixture_layers": settings["fixture_layers"],
        "warm_up": not settings["in_process"],
        "live_dir": live_dir,
        "seed": settings["seed"],
    }


def count_spec(settings: dict, backend: str) -> dict:
    return {
        "task": "counts",
        "backend": None if settings["in_process"] else backend,
        "layers": settings["count_layers"],
        "models": list(config.MODELS),
        "model_config": settings["model"],
        "traffic_shape": settings["traffic_shape"],
        "model_traffic_input": settings["model_traffic_input"],
        "seed": settings["seed"],
    }


def model_spec(settings: dict, backend: str, model: str, mode: str) -> dict:
    return {
        "task": "model",
        "backend": None if settings["in_process"] else backend,
        "model": model,
        "mode": mode,
        "model_config": settings["model"],
        "batch_size": settings["model_batch_size"],
        "warmup": settings["model_warmup"],
        "repeats": settings["model_repeats"],
        "budget_s": settings["model_budget_s"],
        "warm_up_model": not (settings["quick"] or settings["in_process"]),
        "seed": settings["seed"],
    }


def execute(args: argparse.Namespace, settings: dict, out_dir: pathlib.Path) -> dict:
    """Runs every worker; returns the raw results for the report."""
    work = out_dir / "work"
    raw = {"workers": [], "errors": [], "notes": []}

    def call(label, implementation, python, module, spec, env):
        entry = {"label": label, "implementation": implementation}
        try:
            if settings["in_process"]:
                result = run_in_process(spec)
            else:
                result = run_worker(
                    python, module, spec, work, label, env, args.timeout
                )
        except (WorkerError, OSError, RuntimeError, ValueError) as exc:
            raw["errors"].append({"where": label, "error": str(exc)[-1500:]})
            entry["failed"] = str(exc)[-1500:]
            raw["workers"].append(entry)
            return None
        entry.update(result)
        raw["workers"].append(entry)
        return result

    def run_jobs(jobs, implementation, python, module, env, group):
        """Runs ``(label, spec)`` jobs, in one process when ``group``."""
        if group and len(jobs) > 1:
            label = f"{jobs[0][0].split('-')[0]}-suite"
            call(
                label,
                implementation,
                python,
                module,
                {
                    "task": "suite",
                    "backend": jobs[0][1].get("backend"),
                    "reference_repo": jobs[0][1].get("reference_repo"),
                    "tasks": [spec for _, spec in jobs],
                },
                env,
            )
            return
        for label, spec in jobs:
            call(label, implementation, python, module, spec, env)

    reference_python = None
    raw["reference"] = {"requested": bool(args.reference_repo)}
    if args.followup_repo:
        repo = os.path.abspath(args.followup_repo)
        raw["followup"] = {"repo": repo, "commit": git_commit(repo)}
    if args.reference_repo:
        repo = os.path.abspath(args.reference_repo)
        raw["reference"].update(repo=repo, commit=git_commit(repo))
        try:
            reference_python, notes = ensure_reference_python(args)
            raw["notes"].extend(notes)
            raw["reference"]["python"] = reference_python
            raw["reference"]["status"] = "ok"
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            raw["reference"]["status"] = f"failed: {exc}"
            raw["errors"].append({"where": "reference environment", "error": str(exc)})
    else:
        raw["reference"]["status"] = "not requested"

    layer_names = list(settings["layers"])
    run_layers = bool(layer_names) and not settings["skip_layers"]
    by_source = {
        source: [n for n in layer_names if config.source(n) == source]
        for source in config.ORIGINAL_CLASSES
    }
    live_dir = None
    if reference_python and run_layers:
        live_dir = str(out_dir / "live")
        first = settings["backends"][0]
        prepared = call(
            "prepare",
            "keras_ssr",
            sys.executable,
            "benchmarks.worker",
            {
                "task": "prepare",
                "backend": first,
                "layers": by_source["ssr"],
                "shapes": settings["shapes"],
                "live_dir": live_dir,
                "seed": settings["seed"],
            },
            {"KERAS_BACKEND": first},
        )
        if prepared is None:
            live_dir = None

    # One process per task; --quick runs each implementation's tasks in one
    # process (JAX's GPU peak cannot be reset, so not there).
    group = settings["quick"] and not settings["in_process"]
    gpu = _has_nvidia_gpu()
    if reference_python:
        jobs = []
        if run_layers and by_source["ssr"]:
            jobs.append(
                (
                    "original-layers",
                    {
                        **layer_spec(settings, "original", live_dir, by_source["ssr"]),
                        "reference_repo": args.reference_repo,
                        "backend": "original",
                    },
                )
            )
        for model in settings["models"]:
            jobs.append(
                (
                    f"original-{model}",
                    {
                        **model_spec(settings, "original", model, "tf.function"),
                        "reference_repo": args.reference_repo,
                        "backend": "original",
                    },
                )
            )
        if settings["counts"]:
            jobs.append(
                (
                    "original-counts",
                    {
                        **count_spec(settings, "original"),
                        "reference_repo": args.reference_repo,
                        "source": "ssr",
                        "backend": "original",
                    },
                )
            )
        run_jobs(
            jobs, "original", reference_python, "benchmarks.original_worker", {}, group
        )
    if reference_python and args.followup_repo:
        repo = os.path.abspath(args.followup_repo)
        jobs = []
        if run_layers and by_source["followup"]:
            spec = layer_spec(settings, "original", None, by_source["followup"])
            jobs.append(("followup-layers", {**spec, "fixtures_dir": None}))
        if settings["counts"]:
            jobs.append(("followup-counts", count_spec(settings, "original")))
        jobs = [
            (label, {**spec, "reference_repo": repo, "source": "followup"})
            for label, spec in jobs
        ]
        run_jobs(
            jobs, "original", reference_python, "benchmarks.original_worker", {}, group
        )
    if live_dir and settings["float64"] and "jax" in settings["backends"]:
        call(
            "float64",
            "keras_ssr",
            sys.executable,
            "benchmarks.worker",
            {
                "task": "float64",
                "backend": "jax",
                "layers": by_source["ssr"],
                "shapes": settings["shapes"],
                "live_dir": live_dir,
                "seed": settings["seed"],
            },
            {"KERAS_BACKEND": "jax"},
        )
    for backend in settings["backends"]:
        jobs = []
        if settings["counts"]:
            jobs.append((f"{backend}-counts", count_spec(settings, backend)))
        if run_layers:
            jobs.append((f"{backend}-layers", layer_spec(settings, backend, live_dir)))
        for model in settings["models"]:
            for mode in settings["modes"][backend]:
                jobs.append(
                    (
                        f"{backend}-{model}-{mode}",
                        model_spec(settings, backend, model, mode),
                    )
                )
        run_jobs(
            jobs,
            "keras_ssr",
            sys.executable,
            "benchmarks.worker",
            {"KERAS_BACKEND": backend},
            group and not (gpu and backend == "jax"),
        )
    if live_dir and not args.keep_live:
        shutil.rmtree(live_dir, ignore_errors=True)
    return raw


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = resolve_settings(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.reference_repo and args.in_process:
        parser.error(
            "--in-process runs the current backend only; the original needs its "
            "own process. Received: --reference-repo with --in-process"
        )
    for option in ("reference_repo", "followup_repo"):
        value = getattr(args, option)
        if value and not os.path.isdir(value):
            parser.error(
                f"--{option.replace('_', '-')} must be a directory. "
                f"Received: {option}={value!r}"
            )
    if args.followup_repo and not args.reference_repo:
        parser.error(
            "--followup-repo runs in the original's environment: give "
            "--reference-repo too. Received: --followup-repo alone"
        )
    started = dt.datetime.now(dt.timezone.utc)
    name = args.name or started.strftime("%Y%m%d-%H%M%S")
    out_dir = pathlib.Path(args.output_dir or REPO / "benchmarks" / "results" / name)
    out_dir.mkdir(parents=True, exist_ok=True)
    load_start = _load_average()
    clock = time.perf_counter()
    raw = execute(args, settings, out_dir)
    raw["wall_s"] = round(time.perf_counter() - clock, 1)
    raw["load_average"] = {"start": load_start, "end": _load_average()}
    raw["started"] = started.isoformat(timespec="seconds")
    raw["command"] = " ".join(["python -m benchmarks", *(argv or sys.argv[1:])])
    raw["host"] = measure.host_info()
    document = report.build(settings, raw)
    paths = report.write(document, out_dir, args.name or "report")
    if not raw["errors"]:
        # Worker specs and logs are kept only when something failed.
        shutil.rmtree(out_dir / "work", ignore_errors=True)
    print(f"Report: {', '.join(str(p) for p in paths)} ({raw['wall_s']:.0f} s)")
    return 0


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None
