"""Deprecated: :mod:`keras_ssr.porting.family` (``FOLLOWUP_SCOPES`` is its
``FAMILY_SCOPES``)."""

import warnings

from keras_ssr.porting.family import FAMILY_SCOPES

FOLLOWUP_SCOPES = FAMILY_SCOPES

__all__ = ["FOLLOWUP_SCOPES"]

warnings.warn(
    "keras_ssr.porting.followup is deprecated: use keras_ssr.porting.family "
    "(FOLLOWUP_SCOPES is its FAMILY_SCOPES).",
    DeprecationWarning,
    stacklevel=2,
)
