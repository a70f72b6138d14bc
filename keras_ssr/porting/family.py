"""The recalibration family's blocks, as the follow-up's weight files name them.

``miguelmartins/multifractal-recalibration`` (TF 2.14) adds five attention
layers to the original's. Importing this module registers their scopes with
:func:`~keras_ssr.porting.register_attention_scope`, so that
:func:`~keras_ssr.porting.load_weights` places the weights of the
follow-up's U-Nets (``.h5`` files, TF checkpoints and dicts of variable
names) in the models of :mod:`keras_ssr.models.family`:

=================================  ==============================
Keras scope (``.h5``, dicts)       keras_ssr semantic names
=================================  ==============================
``monofractal_recalibration``      as SSR
``spatial_squeeze_excite``         ``squeeze.*``, ``excite.*``,
                                   ``spatial.kernel``, ``spatial.bias``
``style_based_recalibration``      ``style.kernel``, ``bn.*``
``frequency_channel_attention``    ``squeeze.*``, ``excite.*``
``multifractal_recalibration``     ``alpha.ols.weights``, ``alpha.bn.*``,
                                   ``histogram.anchors``, ``histogram.widths``,
                                   ``histogram.bn.*``
=================================  ==============================

In TF checkpoints the blocks' attributes are ``alpha_layer``, ``w1``,
``w2`` (monofractal, as SSR), ``w1``, ``w2``, ``conv`` (scSE), ``w``, ``bn``
(SRM), ``w1``, ``w2`` (FCA, as SE) and ``alpha_layer``, ``soft_histogram``
(multifractal).

Inside the scopes: ``.../dense`` and ``.../dense_1`` (ascending suffix) are
the squeeze and excite layers; scSE's ``.../conv2d`` is its spatial 1x1
convolution; SRM's ``.../dense`` (no bias) its style kernel; Multifractal's
``weighted_local_singularity_strength/weighted_ordinary_least_squares/
weights_ols`` the slope weights, ``soft_histogram_layer/anchor_tensor`` and
``membership_weights`` the anchors and widths. The constant box-sum kernels
of the monofractal and multifractal maps (``depthwise_conv2d[_k]``,
``conv_list/J``) are checked, not stored, as for SSR.

A follow-up checkpoint's FCA blocks have the same attributes as SE blocks
(the cosine bases are constants, not variables) and its monofractal blocks
the same as SSR blocks, so such checkpoints are read as SE / SSR ones: the
semantic names, and therefore the placement, are the same.
"""

from __future__ import annotations

from collections.abc import Sequence

from keras_ssr.porting.scopes import (
    BN_VARIABLES,
    CONV_VARIABLES,
    AttentionScope,
    Ranker,
    attributes_within,
    gate_checkpoint_name,
    gate_variable_name,
    is_scope,
    register_attention_scope,
    ssr_checkpoint_name,
    ssr_variable_name,
)

__all__ = ["FAMILY_SCOPES"]

_BOX_VARIABLES = {"depthwise_kernel": "kernel", "bias": "bias"}
_HISTOGRAM_VARIABLES = {"anchor_tensor": "anchors", "membership_weights": "widths"}


def _never(attributes: frozenset[str]) -> bool:
    """For kinds whose checkpoints are read as another kind's (same names)."""
    del attributes
    return False


# -- scSE --------------------------------------------------------------------


def _scse_variable(path: Sequence[str], rank: Ranker) -> str | None:
    if len(path) == 2 and is_scope("conv2d", path[0]) and path[1] in CONV_VARIABLES:
        return f"spatial.{path[1]}"
    return gate_variable_name(path, rank)


def _scse_checkpoint_name(path: Sequence[str]) -> str | None:
    if len(path) == 2 and path[0] == "conv" and path[1] in CONV_VARIABLES:
        return f"spatial.{path[1]}"
    return gate_checkpoint_name(path)


# -- SRM ---------------------------------------------------------------------


def _srm_variable(path: Sequence[str], rank: Ranker) -> str | None:
    del rank
    if len(path) == 2 and is_scope("dense", path[0]) and path[1] == "kernel":
        return "style.kernel"
    if len(path) == 2 and is_scope("batch_normalization", path[0]):
        if path[1] in BN_VARIABLES:
            return f"bn.{path[1]}"
    return None


def _srm_checkpoint_name(path: Sequence[str]) -> str | None:
    if tuple(path) == ("w", "kernel"):
        return "style.kernel"
    if len(path) == 2 and path[0] == "bn" and path[1] in BN_VARIABLES:
        return f"bn.{path[1]}"
    return None


# -- Multifractal -------------------------------------------------------------


def _multifractal_variable(path: Sequence[str], rank: Ranker) -> str | None:
    if len(path) == 3 and is_scope("weighted_local_singularity_strength", path[0]):
        sub, variable = path[1], path[2]
        if is_scope("batch_normalization", sub) and variable in BN_VARIABLES:
            return f"alpha.bn.{variable}"
        if is_scope("weighted_ordinary_least_squares", sub) and variable == (
            "weights_ols"
        ):
            return "alpha.ols.weights"
        if is_scope("depthwise_conv2d", sub) and variable in _BOX_VARIABLES:
            return f"alpha.box_{rank(1, sub) + 1}.{_BOX_VARIABLES[variable]}"
        return None
    if len(path) >= 2 and is_scope("soft_histogram_layer", path[0]):
        if len(path) == 2 and path[1] in _HISTOGRAM_VARIABLES:
            return f"histogram.{_HISTOGRAM_VARIABLES[path[1]]}"
        if (
            len(path) == 3
            and is_scope("batch_normalization", path[1])
            and path[2] in BN_VARIABLES
        ):
            return f"histogram.bn.{path[2]}"
    return None


def _multifractal_checkpoint_name(path: Sequence[str]) -> str | None:
    path = tuple(path)
    if path == ("alpha_layer", "weighted_ols", "weights_ols"):
        return "alpha.ols.weights"
    if path[:1] == ("alpha_layer",):
        # The box sums and BN of the map are stored as SSR's.
        name = ssr_checkpoint_name(path)
        return name if name is not None and name.startswith("alpha.") else None
    if path[:1] == ("soft_histogram",):
        if len(path) == 2 and path[1] in _HISTOGRAM_VARIABLES:
            return f"histogram.{_HISTOGRAM_VARIABLES[path[1]]}"
        if len(path) == 3 and path[1] == "bn" and path[2] in BN_VARIABLES:
            return f"histogram.bn.{path[2]}"
    return None


#: The follow-up's attention scopes, registered when this module is imported.
FAMILY_SCOPES = (
    AttentionScope(
        kind="mono",
        scope="monofractal_recalibration",
        variable_name=ssr_variable_name,
        checkpoint_attributes=_never,
        checkpoint_name=ssr_checkpoint_name,
    ),
    AttentionScope(
        kind="scse",
        scope="spatial_squeeze_excite",
        variable_name=_scse_variable,
        checkpoint_attributes=attributes_within(
            {"w1", "w2", "conv"}, {"w1", "w2", "conv"}
        ),
        checkpoint_name=_scse_checkpoint_name,
    ),
    AttentionScope(
        kind="srm",
        scope="style_based_recalibration",
        variable_name=_srm_variable,
        checkpoint_attributes=attributes_within({"w", "bn"}, {"w", "bn"}),
        checkpoint_name=_srm_checkpoint_name,
    ),
    AttentionScope(
        kind="fca",
        scope="frequency_channel_attention",
        variable_name=gate_variable_name,
        checkpoint_attributes=_never,
        checkpoint_name=gate_checkpoint_name,
    ),
    AttentionScope(
        kind="multifractal",
        scope="multifractal_recalibration",
        variable_name=_multifractal_variable,
        checkpoint_attributes=attributes_within(
            {"alpha_layer", "soft_histogram"}, {"alpha_layer", "soft_histogram"}
        ),
        checkpoint_name=_multifractal_checkpoint_name,
    ),
)

for _scope in FAMILY_SCOPES:
    register_attention_scope(_scope, overwrite=True)
