"""The ``keras-ssr`` command's parsing, and ``import keras_ssr``, load no backend.

Each check runs a fresh interpreter (``python -X importtime``, which logs
every module it imports) and looks for Keras and the backends in that log.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("keras", "tensorflow", "torch", "jax")


def _python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def _imported(stderr: str) -> set[str]:
    """The top-level packages ``-X importtime`` logged."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            module = line.rsplit("|", 1)[1].strip()
            names.add(module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "argv, status",
    [
        (["--help"], 0),
        (["cv", "--help"], 0),
        (["cv", "summarize", "--help"], 0),
        (["cv", "compare", "--help"], 0),
        (["demo", "--help"], 0),
        (["cv", "--epochs", "x"], 2),  # argument errors too
        (["cv", "--no-such-flag"], 2),
        (["demo", "--dataset", "coco"], 2),
    ],
)
def test_parsing_the_command_line_loads_no_backend(argv, status):
    process = _python("-m", "keras_ssr.cli", *argv)
    assert process.returncode == status, process.stderr[-2000:]
    imported = _imported(process.stderr)
    assert "keras_ssr" in imported  # the log is read right
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
    if status == 0:
        assert process.stdout.startswith("usage: keras-ssr")


def test_the_console_script_loads_no_backend_for_help():
    """The installed ``keras-ssr`` script (the package's entry point)."""
    script = Path(sys.executable).with_name("keras-ssr")
    if not script.exists():
        pytest.skip(f"no console script beside {sys.executable}")
    process = _python(str(script), "cv", "--help")
    assert process.returncode == 0, process.stderr[-2000:]
    imported = _imported(process.stderr)
    assert "keras_ssr" in imported
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_import_registers_the_layers_and_the_rest_on_first_use():
    """``import keras_ssr`` registers the layers with Keras' serialisation
    (``load_model`` needs nothing else); cv, plot and the rest load on use."""
    script = """
import sys
import keras_ssr
import keras
assert keras.saving.get_registered_object("keras_ssr>SqueezeExcite") is not None
assert "keras_ssr.cv" not in sys.modules and "keras_ssr.plot" not in sys.modules
assert keras_ssr.__version__
names = {names}
assert sorted(keras_ssr.__all__) == sorted(names), keras_ssr.__all__
assert set(names) <= set(dir(keras_ssr))
from keras_ssr import SqueezeExcite
assert SqueezeExcite.__module__.startswith("keras_ssr.layers")
# The layers registered with Keras' serialisation when they were imported.
assert keras.saving.get_registered_object("keras_ssr>SqueezeExcite") is SqueezeExcite
assert keras_ssr.layers.SqueezeExcite is keras_ssr.SqueezeExcite is SqueezeExcite
assert keras_ssr.cv.runner.run_cv is keras_ssr.cv.run_cv
try:
    keras_ssr.no_such_name
except AttributeError as error:
    assert "no_such_name" in str(error)
else:
    raise AssertionError("no AttributeError")
print("ok")
""".format(
        names=[
            "BatchNormalization", "FrequencyChannelAttention", "LearnableMeasure",
            "LocalSingularityStrength", "LocalSingularityStrengthXu",
            "MonofractalRecalibration", "MultifractalRecalibration",
            "SingularityStrengthRecalibration", "SingularityStrengthRecalibrationXu",
            "SoftHistogram", "SoftHistogramLayer", "SpatialSqueezeExcite",
            "SqueezeExcite", "StyleBasedRecalibration", "TrilinearUpSampling3D",
            "WeightedLocalSingularityStrength", "cv", "data", "demo", "distributed",
            "initializers", "layers", "losses", "metrics", "models", "ops", "plot",
            "porting", "testing",
        ],
    )  # fmt: skip
    process = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert process.stdout.strip() == "ok"
