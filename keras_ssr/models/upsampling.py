"""Deprecated: :class:`~keras_ssr.layers.TrilinearUpSampling3D` lives in
:mod:`keras_ssr.layers` (:mod:`keras_ssr.layers.upsampling`)."""

import warnings

from keras_ssr.layers.upsampling import TrilinearUpSampling3D

__all__ = ["TrilinearUpSampling3D"]

warnings.warn(
    "keras_ssr.models.upsampling is deprecated: import TrilinearUpSampling3D "
    "from keras_ssr.layers.",
    DeprecationWarning,
    stacklevel=2,
)
