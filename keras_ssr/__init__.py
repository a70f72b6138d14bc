"""keras_ssr: Singularity Strength Recalibration for Keras 3.

Multifractal channel attention for medical image segmentation, written once
in ``keras.ops`` for the TensorFlow, PyTorch and JAX backends.

``import keras_ssr`` imports the layers, which registers them with Keras'
serialisation (``keras.saving.load_model`` then finds them); the other
names are imported on first use (``keras_ssr.cv``, ``keras_ssr.plot``, ...).
The ``keras-ssr`` command alone defers every import, so that its ``--help``
and argument errors load neither Keras nor a backend.
"""

import os
import sys

from keras_ssr._lazy import attach

__version__ = "0.1.0"

_SUBMODULES = (
    "cv",
    "data",
    "demo",
    "distributed",
    "initializers",
    "layers",
    "losses",
    "metrics",
    "models",
    "ops",
    "plot",
    "porting",
    "testing",
)
_LAYERS = (
    "BatchNormalization",
    "FrequencyChannelAttention",
    "LearnableMeasure",
    "LocalSingularityStrength",
    "LocalSingularityStrengthXu",
    "MonofractalRecalibration",
    "MultifractalRecalibration",
    "SingularityStrengthRecalibration",
    "SingularityStrengthRecalibrationXu",
    "SoftHistogram",
    "SoftHistogramLayer",
    "SpatialSqueezeExcite",
    "SqueezeExcite",
    "StyleBasedRecalibration",
    "TrilinearUpSampling3D",
    "WeightedLocalSingularityStrength",
)

__getattr__, __dir__, __all__ = attach(
    __name__,
    {**{name: name for name in _SUBMODULES}, **{name: "layers" for name in _LAYERS}},
    submodules=("cli", "reference"),
)


def _is_the_command() -> bool:
    """Whether this process is the ``keras-ssr`` command: its console script,
    or ``python -m keras_ssr.cli``."""
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    if script.split(".")[0] == "keras-ssr":
        return True
    argv = getattr(sys, "orig_argv", ())
    return "-m" in argv[:-1] and argv[argv.index("-m") + 1] == "keras_ssr.cli"


if not _is_the_command():
    from keras_ssr import layers as layers  # registers the layers with Keras
