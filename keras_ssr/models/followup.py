"""Deprecated: the follow-up's builders live in :mod:`keras_ssr.models.family`
(and are :mod:`keras_ssr.models`' own names)."""

import warnings

from keras_ssr.models import family
from keras_ssr.models.family import *  # noqa: F403 (the same names, one list)

__all__ = list(family.__all__)

warnings.warn(
    "keras_ssr.models.followup is deprecated: import the builders from "
    "keras_ssr.models.",
    DeprecationWarning,
    stacklevel=2,
)
