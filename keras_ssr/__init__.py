"""keras_ssr: Singularity Strength Recalibration for Keras 3.

Multifractal channel attention for medical image segmentation, written once
in ``keras.ops`` for the TensorFlow, PyTorch and JAX backends.

The names below are imported on first use (``from keras_ssr import ...``,
``keras_ssr.layers``), so that ``import keras_ssr`` alone, and the
``keras-ssr`` command's ``--help``, load neither Keras nor a backend. The
layers register with Keras' serialisation when :mod:`keras_ssr.layers` is
first imported: before ``keras.saving.load_model`` of a model that holds
them, import them (``import keras_ssr.layers``, or any name of keras_ssr).
"""

from keras_ssr._lazy import attach

__version__ = "0.1.0"

_SUBMODULES = (
    "data",
    "initializers",
    "layers",
    "losses",
    "metrics",
    "models",
    "ops",
    "porting",
    "testing",
)
_LAYERS = (
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
    "WeightedLocalSingularityStrength",
)

__getattr__, __dir__, __all__ = attach(
    __name__,
    {**{name: name for name in _SUBMODULES}, **{name: "layers" for name in _LAYERS}},
    submodules=("cli", "cv", "demo", "distributed", "plot", "reference"),
)
