"""U-Net and SSR-U-Net builders (2-D and 3-D), in Keras 3.

:func:`build_unet` builds the original's U-Net as a functional
``keras.Model``, with an optional channel-attention layer after every encoder
block (Squeeze-and-Excitation, SSR, Xu et al.'s SSR, or your own).
:func:`get_unet` and :func:`get_ssr_unet` keep the original's builder
signatures. Layer names are fixed and readable, so that
:func:`keras_ssr.porting.load_weights` can place the original's weights:

=============================  ==============================================
layer                          role
=============================  ==============================================
``encoder_{i}_conv_{j}``       ``j``-th 3x3 conv of encoder level ``i``
``encoder_{i}_bn_{j}``         its BatchNormalization (``with_bn=True``)
``encoder_{i}_relu_{j}``       its ReLU
``encoder_{i}_attention``      attention after the block (before the skip)
``encoder_{i}_pool``           2x2 max-pooling
``bottleneck_conv_{j}``, ...   the block of the deepest level
``decoder_{i}_upsample``       2x bilinear (trilinear) upsampling
``decoder_{i}_concat``         ``[upsampled, skip of encoder_{i}]``
``decoder_{i}_conv_{j}``, ...  the block of decoder level ``i``
``head``                       1x1 conv to the class scores
``head_activation``            sigmoid (1 channel) or softmax, in float32
=============================  ==============================================

Level ``i`` counts from the full-resolution level ``0``; decoder level ``i``
has ``channels_per_level[i]`` filters and runs after decoder level ``i + 1``.
"""

from keras_ssr.models.encoders import (
    ENCODERS,
    adapt_input_channels,
    encoder_names,
    encoder_options,
)
from keras_ssr.models.family import (
    get_fca_encoder_unet,
    get_monofractal_unet,
    get_multifractal_unet,
    get_sc_encoder_unet,
    get_se_unet,
    get_srm_encoder_unet,
)
from keras_ssr.models.insertion import (
    FeaturePyramidModel,
    insert_attention,
    stage_layers,
    wide_reduction_ratio,
)
from keras_ssr.models.registry import (
    attention_names,
    attention_options,
    attention_reference,
    get_attention,
    register_attention,
)
from keras_ssr.models.unet import build_unet, get_ssr_unet, get_unet

__all__ = [
    "ENCODERS",
    "FeaturePyramidModel",
    "adapt_input_channels",
    "attention_names",
    "attention_options",
    "attention_reference",
    "build_unet",
    "encoder_names",
    "encoder_options",
    "get_attention",
    "get_fca_encoder_unet",
    "get_monofractal_unet",
    "get_multifractal_unet",
    "get_sc_encoder_unet",
    "get_se_unet",
    "get_srm_encoder_unet",
    "get_ssr_unet",
    "get_unet",
    "insert_attention",
    "register_attention",
    "stage_layers",
    "wide_reduction_ratio",
]

#: Names that ``keras_ssr.models`` exported before it held builders, the
#: registry and insertion only: where each lives now.
_MOVED = {
    "TrilinearUpSampling3D": (
        "keras_ssr.layers.upsampling",
        "keras_ssr.layers.TrilinearUpSampling3D",
    ),
    "BN_MOMENTUM": (
        "keras_ssr.layers._base",
        "0.99, keras.layers.BatchNormalization's default momentum",
    ),
    "BN_EPSILON": (
        "keras_ssr.layers._base",
        "1e-3, keras.layers.BatchNormalization's default epsilon",
    ),
    "AttentionFactory": (
        "keras_ssr.models.registry",
        "a layer class or a callable returning a layer (the type alias is "
        "keras_ssr.models.registry.AttentionFactory)",
    ),
}


def __getattr__(name: str):
    # PEP 562: the moved names, with a DeprecationWarning.
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    import warnings

    module, instead = _MOVED[name]
    warnings.warn(
        f"keras_ssr.models.{name} is deprecated: use {instead}.",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(module), name)
