"""keras_ssr layers: the original's class names and arguments, in Keras 3."""

from keras_ssr.layers.attention import (
    ChannelGate,
    SingularityStrengthRecalibration,
    SingularityStrengthRecalibrationXu,
    SqueezeExcite,
)
from keras_ssr.layers.singularity import (
    LearnableMeasure,
    LocalSingularityStrength,
    LocalSingularityStrengthXu,
)

__all__ = [
    "ChannelGate",
    "LearnableMeasure",
    "LocalSingularityStrength",
    "LocalSingularityStrengthXu",
    "SingularityStrengthRecalibration",
    "SingularityStrengthRecalibrationXu",
    "SqueezeExcite",
]
