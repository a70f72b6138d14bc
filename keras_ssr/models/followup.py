"""Deprecated: the follow-up's builders live in :mod:`keras_ssr.models.family`
(and are :mod:`keras_ssr.models`' own names)."""

import warnings

from keras_ssr.models.family import (
    get_fca_encoder_unet,
    get_monofractal_unet,
    get_multifractal_unet,
    get_sc_encoder_unet,
    get_se_unet,
    get_srm_encoder_unet,
)

__all__ = [
    "get_fca_encoder_unet",
    "get_monofractal_unet",
    "get_multifractal_unet",
    "get_sc_encoder_unet",
    "get_se_unet",
    "get_srm_encoder_unet",
]

warnings.warn(
    "keras_ssr.models.followup is deprecated: import the builders from "
    "keras_ssr.models.",
    DeprecationWarning,
    stacklevel=2,
)
