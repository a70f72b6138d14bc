"""Test configuration shared by every backend session.

The backend is chosen by ``KERAS_BACKEND`` (nox sets it per session).
torch is imported before TensorFlow when both are installed, which avoids a
known crash, and TF32 is switched off on GPUs so that parity checks compare
real float32.
"""

from __future__ import annotations

import importlib.util
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if importlib.util.find_spec("torch") is not None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

if importlib.util.find_spec("tensorflow") is not None and (
    os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow"
):
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(False)

import keras  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

BACKEND = keras.backend.backend()

#: Test files that run in one session, not all three: what they test is the
#: same on every backend, and each backend is still exercised through them
#: elsewhere. The benchmark harness drives every backend through its own
#: subprocesses (TensorFlow). The cv runner's configuration, run folder,
#: resume, faults, protocols and tables, and processes sharing a run folder,
#: are file-system logic, and the command line's imports are checked in fresh
#: interpreters; tests/test_cv_distribute.py trains a fold through the
#: runner on every backend (torch: the fastest to train tiny models). The
#: demo end to end, on the backend `nox -s demo` uses (TensorFlow).
ONE_SESSION = {
    "test_benchmarks.py": "tensorflow",
    "test_cli.py": "torch",
    "test_cv.py": "torch",
    "test_cv_busi.py": "torch",
    "test_cv_concurrency.py": "torch",
    "test_cv_faults.py": "torch",
    "test_cv_options.py": "torch",
    "test_cv_protocol.py": "torch",
    "test_cv_tables.py": "torch",
    "test_demo.py": "tensorflow",
}
collect_ignore = [name for name, backend in ONE_SESSION.items() if backend != BACKEND]

# JAX compiles every op for every new shape in eager mode, which makes each
# hypothesis example ~10x dearer there; the maths is the same code.
settings.register_profile(
    "keras_ssr", deadline=None, max_examples=8 if BACKEND == "jax" else 25
)
settings.load_profile("keras_ssr")


@pytest.fixture
def attention_registry():
    """Restores the attention registry a test registers names in."""
    from keras_ssr import models

    saved = dict(models.registry._ATTENTION)
    yield
    models.registry._ATTENTION.clear()
    models.registry._ATTENTION.update(saved)


def _gpu_names() -> list[str]:
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices("GPU")]
    if BACKEND == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    import jax

    return [str(d) for d in jax.devices() if d.platform == "gpu"]


def pytest_sessionstart(session):
    """``KERAS_SSR_REQUIRE_GPU=1`` (``python -m benchmarks.gpu``): a backend
    that falls back to the CPU fails the run instead of passing for a GPU."""
    if os.environ.get("KERAS_SSR_REQUIRE_GPU") == "1" and not _gpu_names():
        pytest.exit(f"KERAS_SSR_REQUIRE_GPU=1 but {BACKEND} sees no GPU", returncode=3)


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {BACKEND}"


@pytest.fixture(autouse=True)
def _clean_keras_state():
    """Each test starts in float32 with a fixed seed and a fresh name scope."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session(free_memory=False)
