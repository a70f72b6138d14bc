"""keras_ssr layers: the original's class names and arguments, in Keras 3."""

from keras_ssr.layers.attention import (
    ChannelGate,
    SingularityStrengthRecalibration,
    SingularityStrengthRecalibrationXu,
    SqueezeExcite,
)
from keras_ssr.layers.multifractal import (
    MonofractalRecalibration,
    MultifractalRecalibration,
    SoftHistogram,
    SoftHistogramLayer,
    WeightedLocalSingularityStrength,
)
from keras_ssr.layers.normalization import BatchNormalization
from keras_ssr.layers.recalibration import (
    FrequencyChannelAttention,
    SpatialSqueezeExcite,
    StyleBasedRecalibration,
)
from keras_ssr.layers.singularity import (
    LearnableMeasure,
    LocalSingularityStrength,
    LocalSingularityStrengthXu,
)

__all__ = [
    "BatchNormalization",
    "ChannelGate",
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
]
