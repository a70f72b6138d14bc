"""Moving numbers between keras_ssr and the original TF 2.14 implementation.

The original's weights are addressed by *semantic names*, the ones used in
the recorded reference cases (``tests/data/reference_tf214/manifest.json``):

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
kernels ``(s, s)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

__all__ = ["get_layer_weights", "layer_weight_names", "set_layer_weights"]


def _variables(layer) -> dict:
    if not hasattr(layer, "_reference_variables"):
        raise TypeError(
            "`layer` must be a keras_ssr layer with reference weight names. "
            f"Received: layer={layer!r} (of type {type(layer).__name__})"
        )
    if not layer.built:
        raise ValueError(
            f"`layer` must be built before its weights are set: call it once "
            f"or call layer.build(input_shape). Received: layer={layer.name!r}"
        )
    return layer._reference_variables()


def layer_weight_names(layer) -> dict[str, tuple[int, ...]]:
    """The semantic weight names of a built layer, with their shapes."""
    return {name: tuple(v.shape) for name, v in _variables(layer).items()}


def get_layer_weights(layer) -> dict[str, np.ndarray]:
    """The weights of a built layer as NumPy arrays, by semantic name."""
    return {
        name: keras.ops.convert_to_numpy(v.value)
        for name, v in _variables(layer).items()
    }


def set_layer_weights(layer, arrays: Mapping[str, np.ndarray]) -> None:
    """Assigns the original's weights to a built keras_ssr layer, by name.

    Args:
        layer: a built keras_ssr layer.
        arrays: a mapping from every semantic name of the layer (see the
            module docstring, or :func:`layer_weight_names`) to an array of
            the original's shape.

    Raises:
        ValueError: listing unknown names, missing names and wrong shapes,
            all at once; nothing is assigned then.
        TypeError: if ``layer`` is not a keras_ssr layer.
    """
    variables = _variables(layer)
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
    for name, variable in variables.items():
        variable.assign(arrays[name].astype(variable.dtype))
