"""Deprecated alias of :mod:`keras_ssr.porting` (the weight import's old name).

``keras_ssr.reference.load_weights`` and the other public functions still
work and warn; import them from :mod:`keras_ssr.porting` instead.
"""

from __future__ import annotations

import warnings

from keras_ssr import porting as _porting

__all__ = [  # noqa: F822 (served by __getattr__)
    "get_layer_weights",
    "layer_weight_names",
    "load_weights",
    "read_checkpoint_weights",
    "read_h5_weights",
    "set_layer_weights",
]


def __getattr__(name: str):
    if name in __all__:
        warnings.warn(
            f"keras_ssr.reference.{name} is deprecated; use keras_ssr.porting.{name}.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_porting, name)
    raise AttributeError(f"module 'keras_ssr.reference' has no attribute {name!r}")
