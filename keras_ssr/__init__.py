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
    reference,
)
from keras_ssr.layers import (
    LearnableMeasure,
    LocalSingularityStrength,
    LocalSingularityStrengthXu,
    SingularityStrengthRecalibration,
    SingularityStrengthRecalibrationXu,
    SqueezeExcite,
)

__version__ = "0.1.0"

__all__ = [
    "LearnableMeasure",
    "LocalSingularityStrength",
    "LocalSingularityStrengthXu",
    "SingularityStrengthRecalibration",
    "SingularityStrengthRecalibrationXu",
    "SqueezeExcite",
    "data",
    "initializers",
    "layers",
    "losses",
    "metrics",
    "models",
    "ops",
    "reference",
]
