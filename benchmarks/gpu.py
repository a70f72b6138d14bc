"""One command for a CUDA machine: parity on the GPU, the quick benchmark, a report.

    nox -s gpu                       # installs the CUDA builds, then runs this
    python -m benchmarks.gpu         # the backends are installed already
    python -m benchmarks.gpu --dry-run   # prints the plan, runs nothing

For each backend (TensorFlow, PyTorch, JAX) it first checks that the backend
sees a GPU, then runs the recorded-fixture parity tests on it with
TensorFloat-32 off (``NVIDIA_TF32_OVERRIDE=0``; ``tests/conftest.py`` also
switches TF32 off in TensorFlow and PyTorch, and JAX's matrix products run at
``highest`` precision), so that the fixtures' 1e-4 rule compares real
float32. ``KERAS_SSR_REQUIRE_GPU=1`` makes the test session fail when the
backend falls back to the CPU, so that a CPU run cannot pass for a GPU one.
Then the quick benchmark (``python -m benchmarks --quick``) runs with the
allocators' peak memory, and ``benchmarks/results/gpu.{json,md,png}`` are
written, the parity results included. Every step has a time limit; together
they fit in 5 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

from benchmarks import config

REPO = pathlib.Path(__file__).resolve().parent.parent

#: The CUDA builds ``nox -s gpu`` installs (PyPI's Linux torch wheels are
#: CUDA builds).
CUDA_PACKAGES = {
    "tensorflow": "tensorflow[and-cuda]==2.21.*",
    "torch": "torch==2.13.0",
    "jax": "jax[cuda12]==0.10.2",
}

#: The parity suite: every recorded-fixture test (layers and ops of both
#: fixture sets, models, checkpoints) and the float64 gradient checks.
PARITY_TESTS = (
    "tests/test_parity.py",
    "tests/test_load_weights.py",
    "tests/test_float64_gradients.py",
)

#: Environment of every step: float32 without TF32, memory on demand.
GPU_ENV = {
    "NVIDIA_TF32_OVERRIDE": "0",
    "JAX_DEFAULT_MATMUL_PRECISION": "highest",
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
    "TF_FORCE_GPU_ALLOW_GROWTH": "true",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "KERAS_SSR_REQUIRE_GPU": "1",
}

#: Seconds per step: GPU probe, parity per backend, the quick benchmark.
TIME_LIMITS = {"probe": 15, "parity": 50, "benchmark": 100}
TOTAL_LIMIT_S = 300


def gpu_names() -> list[str]:
    """The GPUs the current ``KERAS_BACKEND`` sees."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices("GPU")]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    import jax

    return [str(d) for d in jax.devices() if d.platform == "gpu"]


@dataclasses.dataclass
class Step:
    name: str
    backend: str | None
    argv: list[str]
    timeout_s: int

    def describe(self) -> str:
        env = f"KERAS_BACKEND={self.backend} " if self.backend else ""
        return f"[{self.timeout_s:>3} s] {self.name}: {env}{' '.join(self.argv)}"


def plan(backends, out_dir: pathlib.Path, python: str = sys.executable) -> list[Step]:
    """The steps of a GPU check, in order."""
    tests = [t for t in PARITY_TESTS if (REPO / t).exists()]
    steps = []
    for backend in backends:
        steps.append(
            Step(
                f"probe {backend}",
                backend,
                [python, "-m", "benchmarks.gpu", "--probe"],
                TIME_LIMITS["probe"],
            )
        )
        steps.append(
            Step(
                f"parity {backend}",
                backend,
                [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                TIME_LIMITS["parity"],
            )
        )
    steps.append(
        Step(
            "benchmark",
            None,
            [
                python,
                "-m",
                "benchmarks",
                "--quick",
                "--backends",
                ",".join(backends),
                "--output-dir",
                str(out_dir),
                "--name",
                "gpu",
                "--timeout",
                str(TIME_LIMITS["benchmark"]),
            ],
            TIME_LIMITS["benchmark"],
        )
    )
    return steps


def run_step(step: Step) -> dict:
    env = {**os.environ, **GPU_ENV}
    if step.backend:
        env["KERAS_BACKEND"] = step.backend
    started = time.perf_counter()
    try:
        done = subprocess.run(
            step.argv,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=step.timeout_s,
        )
        status = "passed" if done.returncode == 0 else "failed"
        output = done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        status = "timed out"
        output = (exc.stdout or b"").decode(errors="replace") if exc.stdout else ""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return {
        "step": step.name,
        "backend": step.backend,
        "status": status,
        "seconds": round(time.perf_counter() - started, 1),
        "summary": lines[-1] if lines else "",
    }


def _merge_report(out_dir: pathlib.Path, results: list[dict]) -> None:
    """Adds the parity results to ``gpu.json`` and ``gpu.md``."""
    json_path, md_path = out_dir / "gpu.json", out_dir / "gpu.md"
    document = json.loads(json_path.read_text()) if json_path.exists() else {}
    document["gpu_check"] = results
    json_path.write_text(json.dumps(document, indent=1))
    rows = [
        "## GPU check (python -m benchmarks.gpu)",
        "",
        "| step | status | seconds | last line |",
        "| --- | --- | --- | --- |",
        *(
            f"| {r['step']} | {r['status']} | {r['seconds']} | "
            f"{r['summary'].replace('|', '/')} |"
            for r in results
        ),
        "",
    ]
    previous = md_path.read_text() if md_path.exists() else ""
    md_path.write_text("\n".join(rows) + "\n" + previous)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--backends",
        default=",".join(config.BACKENDS),
        help="comma-separated backends (default: all three)",
    )
    parser.add_argument(
        "--output-dir",
        default=str(REPO / "benchmarks" / "results"),
        help="where gpu.{json,md,png} go (default benchmarks/results)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan and run nothing"
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="print the GPUs KERAS_BACKEND sees; exit 1 if there are none",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.probe:
        names = gpu_names()
        print(names)
        return 0 if names else 1
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(config.BACKENDS))
    if unknown or not backends:
        print(
            f"--backends must name some of {', '.join(config.BACKENDS)}. "
            f"Received: backends={args.backends!r}",
            file=sys.stderr,
        )
        return 2
    out_dir = pathlib.Path(args.output_dir)
    steps = plan(backends, out_dir)
    total = sum(s.timeout_s for s in steps)
    print(f"GPU check: {len(steps)} steps, at most {total} s")
    print("environment: " + " ".join(f"{k}={v}" for k, v in GPU_ENV.items()))
    for step in steps:
        print("  " + step.describe())
    print(
        f"writes: {out_dir / 'gpu.json'}, {out_dir / 'gpu.md'}, {out_dir / 'gpu.png'}"
    )
    if args.dry_run:
        return 0
    if shutil.which("nvidia-smi") is None:
        print(
            "No NVIDIA GPU here (nvidia-smi not found): run this on a CUDA "
            "machine, or pass --dry-run to see the plan.",
            file=sys.stderr,
        )
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    results, skip = [], set()
    for step in steps:
        if step.backend in skip:
            results.append(
                {
                    "step": step.name,
                    "backend": step.backend,
                    "status": "skipped",
                    "seconds": 0.0,
                    "summary": "the backend sees no GPU",
                }
            )
            continue
        result = run_step(step)
        results.append(result)
        print(
            f"{result['status']:>9}  {step.name}  ({result['seconds']} s)  "
            f"{result['summary']}",
            flush=True,
        )
        if step.name.startswith("probe") and result["status"] != "passed":
            skip.add(step.backend)
    _merge_report(out_dir, results)
    return 0 if all(r["status"] == "passed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
