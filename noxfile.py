"""Test matrix: one session per Keras backend, plus lint.

    nox                      # tests on tensorflow, torch and jax, then lint
    nox -s tests-jax         # one backend
    nox -s tests-torch -- -k parity   # pass arguments on to pytest

Backend builds are pinned to CPU wheels so that CI never pulls CUDA. Set
``KERAS_SSR_TORCH`` (e.g. ``torch==2.13.0``), ``KERAS_SSR_TENSORFLOW`` or
``KERAS_SSR_JAX`` to test against another build.
"""

from __future__ import annotations

import os
import sys

import nox

nox.options.sessions = ["tests-tensorflow", "tests-torch", "tests-jax", "lint"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"

# CPU builds. torch 2.13.0+cpu lies on the CI machine's disk; a bare "torch"
# would pull a multi-GB CUDA build from PyPI.
BACKENDS = {
    "tensorflow": os.environ.get("KERAS_SSR_TENSORFLOW", "tensorflow-cpu==2.21.*"),
    "torch": os.environ.get("KERAS_SSR_TORCH", "torch==2.13.0"),
    "jax": os.environ.get("KERAS_SSR_JAX", "jax[cpu]==0.10.2"),
}


#: keras-hub for the FeaturePyramidBackbone tests (tests/test_insertion.py,
#: tests/test_encoder_unet.py), without its tensorflow-text dependency, which
#: pulls the full tensorflow next to tensorflow-cpu (or into a torch or JAX
#: session); its vision backbones never import it. keras_hub imports regex
#: and tokenizers at import time (tokenizers' own dependencies, the Hugging
#: Face hub client, only for downloads); Keras brings the rest.
KERAS_HUB = ["keras-hub==0.32.0", "regex", "tokenizers"]


def install_backend(session: nox.Session, backend: str) -> None:
    session.install(BACKENDS[backend])
    # export-<backend>: the ONNX converter Keras uses there (tests/test_export.py).
    session.install("-e", f".[test,export-{backend}]")
    session.install("--no-deps", *KERAS_HUB)


def pytest_workers() -> list[str]:
    """pytest-xdist arguments: one worker per core, at most 4, whole files per
    worker (a module's fixtures, such as the distributed runs, start once).
    ``KERAS_SSR_TEST_WORKERS=0`` runs in one process."""
    workers = os.environ.get("KERAS_SSR_TEST_WORKERS", str(min(os.cpu_count(), 4)))
    return [] if workers == "0" else ["-n", workers, "--dist", "loadfile"]


def test_env(backend: str) -> dict[str, str]:
    """The tests' environment. TensorFlow's oneDNN CPU kernels are on by
    default on Intel CPUs only, and refuse some inputs the Eigen kernels take
    (a softmax of rank 6): the TensorFlow session turns them on wherever it
    runs, so that such a kernel cannot pass unnoticed on another CPU.
    ``TF_ENABLE_ONEDNN_OPTS=0 nox -s tests-tensorflow`` tests the Eigen ones."""
    return {
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1"),
    }


def _tests_session(backend: str):
    @nox.session(name=f"tests-{backend}", python=PYTHON)
    def tests(session: nox.Session) -> None:
        install_backend(session, backend)
        session.run(
            "pytest", *pytest_workers(), *session.posargs, env=test_env(backend)
        )

    tests.__doc__ = f"Runs the test suite on the {backend} backend."
    return tests


for _backend in BACKENDS:
    globals()[f"tests_{_backend}"] = _tests_session(_backend)

#: The lowest versions pyproject.toml admits for Keras and NumPy, on one
#: backend: JAX at its own floor, the smallest install, which takes NumPy 1.24.
MINIMUM_VERSIONS = ["keras==3.8.0", "numpy==1.24.4", "jax[cpu]==0.4.30"]


@nox.session(name="tests-min", python=PYTHON)
def tests_min(session: nox.Session) -> None:
    """Runs the test suite at the dependency floor (Keras 3.8, NumPy 1.24, JAX)."""
    # One resolve, so that the test extras cannot lift the pins.
    session.install(*MINIMUM_VERSIONS, "-e", ".[test]")
    session.run(
        "pytest",
        *pytest_workers(),
        *session.posargs,
        env=test_env("jax"),
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """`keras-ssr demo`: U-Net vs SSR-U-Net on built-in data, on a CPU backend.

    KERAS_BACKEND picks the backend: tensorflow by default, measured the
    quickest for this workload on 2 CPU cores (docs/demo.md, "Timing").
    Arguments go to the command:
    nox -s demo -- --dataset ihc --output out
    """
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend not in BACKENDS:
        session.error(f"KERAS_BACKEND must be one of {sorted(BACKENDS)}: {backend!r}")
    session.install(BACKENDS[backend])
    session.install("-e", ".[demo]")
    session.run(
        "keras-ssr",
        "demo",
        *session.posargs,
        env={"KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks (not in the default run): nox -s bench -- [--quick]
    [--reference-repo PATH] [--batch-size N]; see python -m benchmarks --help."""
    session.install(*BACKENDS.values())
    session.install("-e", ".", "matplotlib")
    session.run(
        "python",
        "-m",
        "benchmarks",
        *session.posargs,
        env={"TF_CPP_MIN_LOG_LEVEL": "2"},
    )


@nox.session(python=PYTHON)
def gpu(session: nox.Session) -> None:
    """On a CUDA machine (not in the default run): the CUDA builds of the three
    backends, the parity suite on the GPU (TF32 off), the quick benchmark, and
    benchmarks/results/gpu.{json,md,png}. nox -s gpu -- --dry-run prints the
    plan; see python -m benchmarks.gpu --help."""
    if "--dry-run" not in session.posargs:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from benchmarks.gpu import CUDA_PACKAGES

        session.install(*CUDA_PACKAGES.values())
        session.install("-e", ".[test]")
    session.run("python", "-m", "benchmarks.gpu", *session.posargs)
