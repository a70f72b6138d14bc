"""keras_ssr: Singularity Strength Recalibration for Keras 3.

Multifractal channel attention for medical image segmentation, written once
in ``keras.ops`` for the TensorFlow, PyTorch and JAX backends.
"""

from keras_ssr import (
    data,
    initializers,
    layers,
    losses,
    metrics,
    models,
    ops,
    porting,
    testing,
)
from keras_ssr.layers import (
    FrequencyChannelAttention,
    LearnableMeasure,
    LocalSingularityStrength,
    LocalSingularityStrengthXu,
    MonofractalRecalibration,
    MultifractalRecalibration,
    SingularityStrengthRecalibration,
    SingularityStrengthRecalibrationXu,
    SoftHistogram,
    SoftHistogramLayer,
    SpatialSqueezeExcite,
    SqueezeExcite,
    StyleBasedRecalibration,
    WeightedLocalSingularityStrength,
)

__version__ = "0.1.0"

__all__ = [
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
    "data",
    "initializers",
    "layers",
    "losses",
    "metrics",
    "models",
    "ops",
    "porting",
    "testing",
]
