"""keras_ssr layers: the original's class names and arguments, in Keras 3.

Base classes, for your own layers and for inspection: :class:`MapLayer`
(``data_format``, the input ranks it takes in ``ranks``), :class:`Recalibration`
(``layer(x, return_gates=True)``), :class:`ChannelGate` and :class:`MapGate`
(channel gates from a map sub-layer ``alpha``).
"""

from keras_ssr.layers._base import MapLayer, Recalibration
from keras_ssr.layers.attention import (
    ChannelGate,
    MapGate,
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
from keras_ssr.layers.upsampling import TrilinearUpSampling3D

__all__ = [
    "BatchNormalization",
    "ChannelGate",
    "FrequencyChannelAttention",
    "LearnableMeasure",
    "LocalSingularityStrength",
    "LocalSingularityStrengthXu",
    "MapGate",
    "MapLayer",
    "MonofractalRecalibration",
    "MultifractalRecalibration",
    "Recalibration",
    "SingularityStrengthRecalibration",
    "SingularityStrengthRecalibrationXu",
    "SoftHistogram",
    "SoftHistogramLayer",
    "SpatialSqueezeExcite",
    "SqueezeExcite",
    "StyleBasedRecalibration",
    "TrilinearUpSampling3D",
    "WeightedLocalSingularityStrength",
]
