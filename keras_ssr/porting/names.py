"""Per-layer weights by semantic name: the protocol and the get/set functions.

A layer takes part in weight import by having a ``semantic_variables()``
method that returns ``{semantic name: keras.Variable}``, one entry per
weight (:class:`SemanticLayer`). Every keras_ssr layer has one; the names
are those of the recorded reference cases
(``tests/data/reference_tf214/manifest.json``):

=================================  =========================================
layer                              names
=================================  =========================================
``SqueezeExcite``                  ``squeeze.kernel``, ``squeeze.bias``,
                                   ``excite.kernel``, ``excite.bias``
``LocalSingularityStrength``       ``bn.gamma``, ``bn.beta``,
                                   ``bn.moving_mean``, ``bn.moving_variance``
``SingularityStrengthRecalibration`` the SE names and ``alpha.bn.*``
``LearnableMeasure``               ``measure.kernel_1`` .. ``measure.kernel_N``
``LocalSingularityStrengthXu``     ``measure.kernel_*`` and (``with_bn``)
                                   ``bn.*``
=================================  =========================================

Kernels have the original's layout: Dense kernels ``(in, out)``, measure
kernels ``(s, s)``. A layer of your own joins in by defining the method.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import keras
import numpy as np

from keras_ssr.porting._source import as_weight

__all__ = [
    "SemanticLayer",
    "get_layer_weights",
    "layer_weight_names",
    "semantic_variables",
    "set_layer_weights",
]


@runtime_checkable
class SemanticLayer(Protocol):
    """A layer whose weights have semantic (implementation-free) names."""

    def semantic_variables(self) -> dict[str, keras.Variable]:
        """``{semantic name: variable}``, every weight of the layer once."""


def semantic_variables(layer) -> dict[str, keras.Variable]:
    """The semantic variables of a built :class:`SemanticLayer`.

    Raises:
        TypeError: if ``layer`` has no ``semantic_variables()`` method.
        ValueError: if it is not built.
    """
    if not isinstance(layer, SemanticLayer):
        raise TypeError(
            "`layer` must have a semantic_variables() method (every keras_ssr "
            f"layer has). Received: layer={layer!r} (of type {type(layer).__name__})"
        )
    if not getattr(layer, "built", True):
        raise ValueError(
            f"`layer` must be built before its weights are read or set: call it "
            f"once or call layer.build(input_shape). Received: layer={layer.name!r}"
        )
    return layer.semantic_variables()


def layer_weight_names(layer) -> dict[str, tuple[int, ...]]:
    """The semantic weight names of a built layer, with their shapes.

    Example:
        >>> layer = keras_ssr.SqueezeExcite(r=2)
        >>> layer.build((None, 8, 8, 4))
        >>> layer_weight_names(layer)["squeeze.kernel"]
        (4, 2)
    """
    return {name: tuple(v.shape) for name, v in semantic_variables(layer).items()}


def get_layer_weights(layer) -> dict[str, np.ndarray]:
    """The weights of a built layer as NumPy arrays, by semantic name."""
    return {
        name: keras.ops.convert_to_numpy(v.value)
        for name, v in semantic_variables(layer).items()
    }


def set_layer_weights(layer, arrays: Mapping[str, np.ndarray]) -> None:
    """Assigns the original's weights to a built layer, by semantic name.

    Args:
        layer: a built :class:`SemanticLayer` (any keras_ssr layer).
        arrays: a mapping from every semantic name of the layer (see the
            module docstring, or :func:`layer_weight_names`) to an array of
            the original's shape.

    Raises:
        ValueError: listing unknown names, missing names and wrong shapes,
            all at once, or naming a weight that is not floating-point or
            holds NaN or infinite values; nothing is assigned then.
        TypeError: if ``layer`` has no semantic names.
    """
    variables = semantic_variables(layer)
    arrays = {name: np.asarray(value) for name, value in arrays.items()}
    unknown = sorted(set(arrays) - set(variables))
    missing = sorted(set(variables) - set(arrays))
    wrong = sorted(
        f"{name}: expected {tuple(variables[name].shape)}, "
        f"received {arrays[name].shape}"
        for name in set(arrays) & set(variables)
        if tuple(arrays[name].shape) != tuple(variables[name].shape)
    )
    problems = []
    if unknown:
        problems.append(f"unknown names {unknown}")
    if missing:
        problems.append(f"missing names {missing}")
    if wrong:
        problems.append(f"wrong shapes [{'; '.join(wrong)}]")
    if problems:
        raise ValueError(
            f"Cannot set the weights of {type(layer).__name__} "
            f"{layer.name!r}: {', '.join(problems)}. Expected names: "
            f"{sorted(variables)}"
        )
    converted = {
        name: as_weight(f"The weight {name!r} of {layer.name!r}", arrays[name], v.dtype)
        for name, v in variables.items()
    }
    for name, variable in variables.items():
        variable.assign(converted[name])
