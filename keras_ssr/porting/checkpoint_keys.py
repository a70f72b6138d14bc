"""Places the entries of the original's TF-format checkpoints.

A checkpoint written by ``model.save_weights("dir/weights")`` stores
object-graph paths: ``layer_with_weights-K/<attributes>/.ATTRIBUTES/
VARIABLE_VALUE``, where ``layer_with_weights-K`` is the model's K-th layer
that has weights, in the original's creation order (encoder block, its
attention, ..., bottleneck, decoder blocks, head), and the attribute path
names the variable inside it (``conv1/kernel``, ``bn2/gamma``, ``w1/bias``,
``alpha_layer/bn/beta``). A layer's kind follows from its first-level
attributes; attention kinds come from :mod:`keras_ssr.porting.scopes`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from keras_ssr.porting._source import SourceWeight, StoredArray, unplaceable
from keras_ssr.porting.scopes import BN_VARIABLES, CONV_VARIABLES, attention_scopes

__all__ = [
    "parse_checkpoint_keys",
]

_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_BLOCK_ATTRIBUTES = {"conv1": "conv_0", "conv2": "conv_1", "bn1": "bn_0", "bn2": "bn_1"}


def _kind(attributes: frozenset[str]) -> str | None:
    if {"conv1", "conv2"} <= attributes <= set(_BLOCK_ATTRIBUTES):
        return "block"
    if attributes == {"kernel", "bias"}:
        return "head"
    for scope in attention_scopes():
        if scope.checkpoint_attributes(attributes):
            return scope.kind
    return None


def _block_prefixes(blocks: list[int]) -> dict[int, str]:
    """Encoder levels, bottleneck, then decoder levels from the deepest."""
    contracting = (len(blocks) + 1) // 2
    prefixes = {}
    for rank, k in enumerate(blocks):
        if rank < contracting - 1:
            prefixes[k] = f"encoder_{rank}"
        elif rank == contracting - 1:
            prefixes[k] = "bottleneck"
        else:
            prefixes[k] = f"decoder_{len(blocks) - 1 - rank}"
    return prefixes


def _block_name(path: tuple[str, ...]) -> str | None:
    if len(path) == 2 and path[0] in _BLOCK_ATTRIBUTES:
        names = CONV_VARIABLES if path[0].startswith("conv") else BN_VARIABLES
        if path[1] in names:
            return f"{_BLOCK_ATTRIBUTES[path[0]]}/{path[1]}"
    return None


def parse_checkpoint_keys(weights: Mapping[str, StoredArray]) -> list[SourceWeight]:
    """The slots of the original's TF checkpoint entries.

    Keys outside ``layer_with_weights-*`` (the object graph, the optimizer
    and its slots, the save counter) are ignored.

    Raises:
        ValueError: for a checkpoint without model variables, or naming the
            first entry with no place in a U-Net.
    """
    groups: dict[int, list[tuple[str, tuple[str, ...], StoredArray]]] = {}
    for key, value in weights.items():
        match = re.fullmatch(r"layer_with_weights-(\d+)/(.+)", key)
        if match is None or not key.endswith(_SUFFIX) or ".OPTIMIZER_SLOT" in key:
            continue
        path = tuple(match.group(2)[: -len(_SUFFIX)].split("/"))
        groups.setdefault(int(match.group(1)), []).append((key, path, value))
    if not groups:
        raise ValueError(
            "The checkpoint holds no layer_with_weights-* variables: it is not the "
            "original's model.save_weights(..., save_format='tf') output."
        )

    kinds = {}
    for k, entries in groups.items():
        attributes = frozenset(path[0] for _, path, _ in entries)
        kinds[k] = _kind(attributes)
        if kinds[k] is None:
            why = f"unknown layer with attributes {sorted(attributes)}"
            raise unplaceable(entries[0][0], why)
    blocks = [k for k in sorted(groups) if kinds[k] == "block"]
    heads = [k for k in sorted(groups) if kinds[k] == "head"]
    attentions = [k for k in sorted(groups) if kinds[k] not in ("block", "head")]
    mixed = [k for k in attentions if kinds[k] != kinds[attentions[0]]]
    if mixed:
        raise unplaceable(
            groups[mixed[0]][0][0],
            f"the source mixes attention blocks of kinds {kinds[attentions[0]]!r} "
            f"and {kinds[mixed[0]]!r}",
        )
    if len(heads) > 1:
        raise unplaceable(groups[heads[1]][0][0], "more than one head convolution")
    if len(blocks) % 2 == 0:
        raise unplaceable(
            groups[blocks[-1]][0][0] if blocks else groups[heads[0]][0][0],
            f"a U-Net has an odd number of conv blocks; the source has {len(blocks)}",
        )
    prefixes = _block_prefixes(blocks)
    for rank, k in enumerate(attentions):
        prefixes[k] = f"encoder_{rank}_attention"
    scopes = {scope.kind: scope for scope in attention_scopes()}

    result = []
    for k in sorted(groups):
        for key, path, value in groups[k]:
            slot = None
            if kinds[k] == "head":
                if len(path) == 1:
                    slot = f"head/{path[0]}"
            elif kinds[k] == "block":
                name = _block_name(path)
                slot = None if name is None else f"{prefixes[k]}_{name}"
            else:
                name = scopes[kinds[k]].checkpoint_name(path)
                slot = None if name is None else f"{prefixes[k]}/{name}"
            if slot is None:
                raise unplaceable(key, "unknown variable path")
            result.append(SourceWeight(key, slot, value))
    return result
