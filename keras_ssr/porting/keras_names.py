"""Places weights named as the original's Keras variables.

The ``.h5`` files of ``tf.keras`` 2 and the dicts a user builds from
``model.weights`` name each variable by its scopes:
``contracting_layer_1/conv2d_3/kernel:0``. The top scope gives the block
kind and, by ascending suffix among the blocks of that kind, its place;
inside a block the first and second conv (BN) are told apart by ascending
suffix too. So the names decide, never the positions, and a file from a
session that built other models first (all suffixes shifted) still loads.
Attention scopes come from :mod:`keras_ssr.porting.scopes`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from keras_ssr.porting._source import SourceWeight, StoredArray, unplaceable
from keras_ssr.porting.scopes import (
    BN_VARIABLES,
    CONV_VARIABLES,
    attention_scopes,
    is_scope,
    scope_of,
    split_scope,
)

__all__ = [
    "block_prefixes",
    "parse_variable_names",
]

_CONV_BLOCK = "contracting_layer"
_EXPANDING_BLOCK = "upsample_expanding_layer"
_BUILT_IN = ("head", "contracting", "expanding")


def _ranks(numbers) -> dict[int, int]:
    """Rank of each (distinct) number in ascending order."""
    return {n: i for i, n in enumerate(sorted(set(numbers)))}


def block_prefixes(kind: str, numbers) -> dict[int, str]:
    """keras_ssr layer prefixes of the original's blocks, by scope number.

    Contracting blocks in creation order are the encoder levels then the
    bottleneck; expanding blocks run from the deepest decoder level to 0;
    attention blocks belong to the encoder levels in order.
    """
    ranks = _ranks(numbers)
    count = len(ranks)
    prefixes = {}
    for number, rank in ranks.items():
        if kind == "contracting":
            prefixes[number] = "bottleneck" if rank == count - 1 else f"encoder_{rank}"
        elif kind == "expanding":
            prefixes[number] = f"decoder_{count - 1 - rank}"
        else:
            prefixes[number] = f"encoder_{rank}_attention"
    return prefixes


def _classify(origin: str, parts: list[str]) -> tuple[str, int]:
    top = parts[0]
    if is_scope(_CONV_BLOCK, top):
        return "contracting", split_scope(top)[1]
    if is_scope(_EXPANDING_BLOCK, top):
        return "expanding", split_scope(top)[1]
    scope = scope_of(top)
    if scope is not None:
        return scope.kind, split_scope(top)[1]
    if is_scope("conv2d", top) and len(parts) == 2:
        return "head", split_scope(top)[1]
    known = ", ".join(
        [_CONV_BLOCK, _EXPANDING_BLOCK, *(s.scope for s in attention_scopes())]
    )
    raise unplaceable(
        origin, f"unknown scope {top!r} (expected {known} or the head conv2d_N)"
    )


def _block_slot(origin, prefix, parts, rank) -> str:
    if len(parts) != 3:
        raise unplaceable(origin, "expected <block>/<layer>/<variable>")
    layer, variable = parts[1], parts[2]
    if is_scope("conv2d", layer):
        sub, names, short = "conv2d", CONV_VARIABLES, "conv"
    elif is_scope("batch_normalization", layer):
        sub, names, short = "batch_normalization", BN_VARIABLES, "bn"
    else:
        raise unplaceable(origin, f"unknown layer {layer!r} in a conv block")
    index = rank(0, layer)
    if index > 1 or variable not in names:
        raise unplaceable(
            origin, f"a conv block has two {sub} layers with variables {names}"
        )
    return f"{prefix}_{short}_{index}/{variable}"


def parse_variable_names(weights: Mapping[str, StoredArray]) -> list[SourceWeight]:
    """The slots of weights named as the original's variables.

    Raises:
        TypeError: for a key that is not a string.
        ValueError: naming the first weight with no place in a U-Net.
    """
    parsed = []  # (origin, kind, scope number, parts, value)
    for origin, value in weights.items():
        if not isinstance(origin, str):
            raise TypeError(
                "`source` must map the original's variable names (strings) to "
                f"arrays. Received a key {origin!r} (of type {type(origin).__name__})"
            )
        parts = re.sub(r":\d+$", "", origin).split("/")
        kind, number = _classify(origin, parts)
        parsed.append((origin, kind, number, parts, value))

    heads = sorted({n for _, k, n, _, _ in parsed if k == "head"})
    if len(heads) > 1:
        first = next(o for o, k, n, _, _ in parsed if k == "head" and n == heads[1])
        raise unplaceable(first, "more than one top-level conv2d (head)")
    attention_kinds = [k for _, k, _, _, _ in parsed if k not in _BUILT_IN]
    if len(set(attention_kinds)) > 1:
        second = next(k for k in attention_kinds if k != attention_kinds[0])
        first = next(o for o, k, _, _, _ in parsed if k == second)
        raise unplaceable(
            first,
            f"the source mixes attention blocks of kinds {attention_kinds[0]!r} "
            f"and {second!r}",
        )
    prefixes = {
        kind: block_prefixes(
            kind if kind in _BUILT_IN else "attention",
            [n for _, k, n, _, _ in parsed if k == kind],
        )
        for kind in {k for _, k, _, _, _ in parsed}
    }

    # Suffix numbers of the sub-scopes of each block, per depth and base name.
    sub_numbers: dict[tuple, list[int]] = {}
    for _, kind, number, parts, _ in parsed:
        for depth, part in enumerate(parts[1:-1]):
            base, n = split_scope(part)
            sub_numbers.setdefault((kind, number, depth, base), []).append(n)
    sub_ranks = {key: _ranks(numbers) for key, numbers in sub_numbers.items()}

    result = []
    for origin, kind, number, parts, value in parsed:

        def rank(depth, part, kind=kind, number=number):
            base, n = split_scope(part)
            return sub_ranks[(kind, number, depth, base)][n]

        if kind == "head":
            if parts[-1] not in CONV_VARIABLES:
                raise unplaceable(origin, f"unknown head variable {parts[-1]!r}")
            slot = f"head/{parts[-1]}"
        elif kind in ("contracting", "expanding"):
            slot = _block_slot(origin, prefixes[kind][number], parts, rank)
        else:
            name = scope_of(parts[0]).variable_name(tuple(parts[1:]), rank)
            if name is None:
                raise unplaceable(origin, "unknown variable of an attention block")
            slot = f"{prefixes[kind][number]}/{name}"
        result.append(SourceWeight(origin, slot, value))
    return result
