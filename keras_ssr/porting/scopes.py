"""How the original's attention blocks are named in its weight files.

Both name parsers (:mod:`~keras_ssr.porting.keras_names` for ``.h5`` files
and variable-name dicts, :mod:`~keras_ssr.porting.checkpoint_keys` for TF
checkpoints) place the U-Net's own conv blocks and head themselves and ask
this registry about the attention blocks. An :class:`AttentionScope` says,
for one kind of attention layer of the original code:

- which Keras top scope its variables live under
  (``singularity_strength_recalibration[_N]/...``), and how a variable path
  inside that scope becomes a keras_ssr semantic name
  (``dense_1/bias`` -> ``excite.bias``);
- which attributes its object has in a TF checkpoint (``w1``, ``w2``,
  ``alpha_layer``), and how an attribute path becomes a semantic name
  (``alpha_layer/bn/gamma`` -> ``alpha.bn.gamma``).

:func:`register_attention_scope` adds a kind, e.g. for the follow-up
code's attention layers.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Collection, Sequence

__all__ = [
    "BN_VARIABLES",
    "CONV_VARIABLES",
    "AttentionScope",
    "attention_scopes",
    "register_attention_scope",
    "scope_of",
]

#: Variables of a convolution / Dense layer and of a BatchNormalization.
CONV_VARIABLES = ("kernel", "bias")
BN_VARIABLES = ("gamma", "beta", "moving_mean", "moving_variance")

#: ``rank(depth, part)``: the rank of a sub-scope ``part`` (e.g. ``dense_3``)
#: among the sub-scopes of the same base name (``dense``, ``dense_1``, ...) at
#: that depth of the same block, in ascending suffix; depth 0 is the first
#: sub-scope below the top scope.
Ranker = Callable[[int, str], int]

_SCOPE = re.compile(r"(.*?)(?:_(\d+))?")


def split_scope(part: str) -> tuple[str, int]:
    """``("conv2d", 3)`` for ``"conv2d_3"``, ``("conv2d", 0)`` for ``"conv2d"``."""
    base, number = _SCOPE.fullmatch(part).groups()
    return base, int(number or 0)


def is_scope(base: str, part: str) -> bool:
    """Whether ``part`` is ``base`` or ``base_N``."""
    return re.fullmatch(rf"{re.escape(base)}(?:_\d+)?", part) is not None


@dataclasses.dataclass(frozen=True)
class AttentionScope:
    """One kind of the original's attention blocks, as its files name it.

    Attributes:
        kind: a short name (``"ssr"``); blocks of two kinds in one file are
            rejected.
        scope: the Keras top scope without suffix
            (``"singularity_strength_recalibration"``).
        variable_name: ``(path, rank) -> semantic name or None``, where
            ``path`` is the variable name's parts below the top scope
            (``("dense_1", "bias")``) and ``rank`` a :data:`Ranker`.
        checkpoint_attributes: ``attributes -> bool``: whether a checkpoint
            object with these first-level attribute names is of this kind.
        checkpoint_name: ``path -> semantic name or None`` for an attribute
            path (``("w2", "kernel")``) of such an object.
    """

    kind: str
    scope: str
    variable_name: Callable[[Sequence[str], Ranker], str | None]
    checkpoint_attributes: Callable[[frozenset[str]], bool]
    checkpoint_name: Callable[[Sequence[str]], str | None]


_SCOPES: dict[str, AttentionScope] = {}


def register_attention_scope(scope: AttentionScope, *, overwrite: bool = False) -> None:
    """Makes the name parsers place the weights of one more attention kind.

    Raises:
        TypeError: if ``scope`` is not an :class:`AttentionScope`.
        ValueError: if its kind is registered already and not ``overwrite``.
    """
    if not isinstance(scope, AttentionScope):
        raise TypeError(f"`scope` must be an AttentionScope. Received: scope={scope!r}")
    if scope.kind in _SCOPES and not overwrite:
        raise ValueError(
            f"An attention scope of kind {scope.kind!r} is already registered; pass "
            f"overwrite=True to replace it. Received: scope.kind={scope.kind!r}"
        )
    _SCOPES[scope.kind] = scope


def attention_scopes() -> tuple[AttentionScope, ...]:
    """The registered attention scopes, in registration order."""
    return tuple(_SCOPES.values())


def scope_of(top: str) -> AttentionScope | None:
    """The attention scope whose Keras top scope is ``top`` (suffix allowed)."""
    for scope in _SCOPES.values():
        if is_scope(scope.scope, top):
            return scope
    return None


# -- the original's SqueezeExcite and SingularityStrengthRecalibration ----------

_DENSE_NAMES = ("squeeze", "excite")


def gate_variable_name(path: Sequence[str], rank: Ranker) -> str | None:
    """``dense/kernel`` -> ``squeeze.kernel``, ``dense_1/bias`` -> ``excite.bias``."""
    if len(path) == 2 and is_scope("dense", path[0]) and path[1] in CONV_VARIABLES:
        index = rank(0, path[0])
        if index < 2:
            return f"{_DENSE_NAMES[index]}.{path[1]}"
    return None


def ssr_variable_name(path: Sequence[str], rank: Ranker) -> str | None:
    """SSR's names: the gate's Dense layers, ``alpha.bn.*`` and ``alpha.box_J.*``.

    ``local_singularity_strength/batch_normalization/gamma`` ->
    ``alpha.bn.gamma``; ``local_singularity_strength/depthwise_conv2d_1/
    depthwise_kernel`` -> ``alpha.box_2.kernel`` (the J-th by ascending
    suffix); otherwise as :func:`gate_variable_name`.
    """
    if len(path) == 3 and is_scope("local_singularity_strength", path[0]):
        sub, variable = path[1], path[2]
        if is_scope("batch_normalization", sub) and variable in BN_VARIABLES:
            return f"alpha.bn.{variable}"
        if is_scope("depthwise_conv2d", sub) and variable in (
            "depthwise_kernel",
            "bias",
        ):
            part = "kernel" if variable == "depthwise_kernel" else "bias"
            return f"alpha.box_{rank(1, sub) + 1}.{part}"
        return None
    return gate_variable_name(path, rank)


def gate_checkpoint_name(path: Sequence[str]) -> str | None:
    """``w1/kernel`` -> ``squeeze.kernel``, ``w2/bias`` -> ``excite.bias``."""
    if len(path) == 2 and path[0] in ("w1", "w2") and path[1] in CONV_VARIABLES:
        return f"{'squeeze' if path[0] == 'w1' else 'excite'}.{path[1]}"
    return None


def ssr_checkpoint_name(path: Sequence[str]) -> str | None:
    """``alpha_layer/bn/*`` and ``alpha_layer/conv_list/J/*``, else the gate's."""
    if len(path) == 3 and path[:2] == ("alpha_layer", "bn") and path[2] in BN_VARIABLES:
        return f"alpha.bn.{path[2]}"
    if (
        len(path) == 4
        and path[:2] == ("alpha_layer", "conv_list")
        and path[2].isdigit()
        and path[3] in ("depthwise_kernel", "bias")
    ):
        part = "kernel" if path[3] == "depthwise_kernel" else "bias"
        return f"alpha.box_{int(path[2]) + 1}.{part}"
    return gate_checkpoint_name(path)


def attributes_within(required: Collection[str], allowed: Collection[str]):
    """A ``checkpoint_attributes`` test: ``required <= attributes <= allowed``."""

    def match(attributes: frozenset[str]) -> bool:
        return set(required) <= attributes <= set(allowed)

    return match


register_attention_scope(
    AttentionScope(
        kind="ssr",
        scope="singularity_strength_recalibration",
        variable_name=ssr_variable_name,
        checkpoint_attributes=attributes_within(
            {"alpha_layer"}, {"alpha_layer", "w1", "w2"}
        ),
        checkpoint_name=ssr_checkpoint_name,
    )
)
register_attention_scope(
    AttentionScope(
        kind="se",
        scope="squeeze_excite",
        variable_name=gate_variable_name,
        checkpoint_attributes=attributes_within({"w1", "w2"}, {"w1", "w2"}),
        checkpoint_name=gate_checkpoint_name,
    )
)
