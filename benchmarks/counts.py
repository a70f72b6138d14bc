"""Counts that do not depend on load: kernel launches, memory traffic, peaks.

On a GPU these layers are bound by kernel launches where nothing fuses (TF
``tf.function`` graphs, torch eager) and by memory traffic where XLA fuses
(JAX, TF + XLA). Both are counted here exactly, on a CPU:

* :func:`tf_launches`: the compute ops of a ``tf.function``'s graph, less
  the ops that launch nothing (:data:`TF_FREE`) and the shape arithmetic
  that Grappler folds (ops whose inputs all come from constants or shape
  ops). Function calls are counted by their bodies.
* :class:`TorchLaunches`: the ATen ops torch eager dispatches, views
  excluded, with the peak of the bytes held by the tensors they made.
* :func:`xla_traffic`: the bytes that cross kernel boundaries in the
  optimised HLO's ``ENTRY`` computation: every kernel (a fusion, a dot, a
  copy, ...) reads each distinct operand once and writes its result once.
  XLA's ``cost_analysis()["bytes accessed"]`` counts every shifted read of
  a stencil again, reads that a GPU serves from cache.

Standard library only at import time: the reference worker (TensorFlow
2.14) imports this module too, and every backend is passed in or imported
where it is used.
"""

from __future__ import annotations

import collections
import re

#: TensorFlow ops that launch no kernel: constants, placeholders, identities,
#: variable handles and reads, shape queries, and the reshapes that only
#: relabel a buffer.
TF_FREE = frozenset(
    {
        "Const",
        "Placeholder",
        "NoOp",
        "Identity",
        "IdentityN",
        "StopGradient",
        "VarHandleOp",
        "ReadVariableOp",
        "Shape",
        "ShapeN",
        "Size",
        "Rank",
        "BroadcastGradientArgs",
        "Reshape",
        "ExpandDims",
        "Squeeze",
    }
)
#: Ops whose value is known when the graph is built (with the constants):
#: what depends on them alone is shape arithmetic, folded by Grappler.
_TF_STATIC = frozenset({"Const", "Shape", "ShapeN", "Size", "Rank"})
_TF_CALLS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})


def tf_launches(tf, function, *args) -> dict:
    """Kernel launches of ``function`` (a ``tf.function``) traced on ``args``.

    Only the ops that the outputs or a stateful op (a variable update)
    depend on run, as TensorFlow prunes the rest.

    Returns:
        ``{"launches": n, "ops": {op type: count}}``.
    """
    from tensorflow.python.framework.function_def_to_graph import (
        function_def_to_graph,
    )

    graph = function.get_concrete_function(*args).graph
    library = {f.signature.name: f for f in graph.as_graph_def().library.function}
    ops = collections.Counter()

    def walk(graph):
        static, needed = set(), _needed_ops(graph)
        for op in graph.get_operations():
            if op.name not in needed:
                continue
            sources = [t.op.name for t in op.inputs]
            if op.type in _TF_STATIC or (
                sources
                and all(s in static for s in sources)
                and op.type != "ReadVariableOp"
            ):
                static.add(op.name)
                continue
            if op.type in _TF_CALLS:
                walk(function_def_to_graph(library[op.get_attr("f").name]))
            elif op.type not in TF_FREE:
                ops[op.type] += 1

    walk(graph)
    return {"launches": sum(ops.values()), "ops": dict(sorted(ops.items()))}


def _needed_ops(graph) -> set:
    """Names of the ops a call runs: what the outputs and the stateful ops
    (variable updates) depend on. TensorFlow prunes the rest."""
    stack = [t.op for t in graph.outputs]
    stack += list(getattr(graph, "control_outputs", []))
    stack += [op for op in graph.get_operations() if op._is_stateful]
    needed = set()
    while stack:
        op = stack.pop()
        if op.name in needed:
            continue
        needed.add(op.name)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return needed


class TorchLaunches:
    """A ``TorchDispatchMode`` (built on first use) counting ATen launches.

    Views launch nothing and are not counted; nor are ``detach`` and the
    allocations that fill nothing (``empty``). ``peak_bytes`` is the largest
    total of the storages ops made inside the block that were alive at once
    (checked after every op, through weak references to the storages, so
    that tensors autograd saved count too): the temporaries and outputs of
    the block, its inputs excluded.

    Example::

        with TorchLaunches() as counter:
            layer(x)
        counter.launches, counter.ops, counter.peak_bytes
    """

    FREE = frozenset({"aten::detach", "aten::lift_fresh", "aten::empty_strided"})

    def __new__(cls):
        import torch
        from torch.multiprocessing.reductions import StorageWeakRef
        from torch.utils._python_dispatch import TorchDispatchMode

        free = cls.FREE

        class Mode(TorchDispatchMode):
            def __init__(self):
                super().__init__()
                self.counts = collections.Counter()
                self.live = {}
                self.peak_bytes = 0

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                name = func._schema.name
                if func.is_view:  # no kernel, no new storage
                    return out
                if name not in free and not name.startswith("aten::empty"):
                    self.counts[name] += 1
                for leaf in torch.utils._pytree.tree_leaves(out):
                    if isinstance(leaf, torch.Tensor):
                        storage = leaf.untyped_storage()
                        ref = StorageWeakRef(storage)
                        self.live.setdefault(ref.cdata, (ref, storage.nbytes()))
                self.live = {k: v for k, v in self.live.items() if not v[0].expired()}
                total = sum(size for _, size in self.live.values())
                self.peak_bytes = max(self.peak_bytes, total)
                return out

            @property
            def launches(self):
                return sum(self.counts.values())

            @property
            def ops(self):
                return dict(sorted(self.counts.items()))

        return Mode()


_BYTES = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
}
#: HLO instructions that move no data: they name, regroup or reinterpret
#: buffers.
_HLO_FREE = frozenset(
    {"parameter", "constant", "get-tuple-element", "tuple", "bitcast"}
)
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s+([\w\-]+)\((.*?)\)(?:,|$)"
)


def _shape_bytes(text: str) -> int:
    total = 0
    for dtype, dims in re.findall(r"\b(\w+)\[([\d,]*)\]", text):
        if dtype in _BYTES:
            count = 1
            for d in dims.split(","):
                if d:
                    count *= int(d)
            total += count * _BYTES[dtype]
    return total


def hlo_traffic(hlo_text: str) -> dict:
    """Bytes across kernel boundaries in an optimised HLO module's ENTRY.

    Returns:
        ``{"bytes": n, "kernels": k, "kinds": {opcode: count}}``.
    """
    start = hlo_text.index("\nENTRY")
    body = hlo_text[start:].split("\n}", 1)[0].splitlines()[2:]
    sizes, kinds, total = {}, collections.Counter(), 0
    for line in body:
        match = _INSTRUCTION.match(line)
        if match is None:
            continue
        name, shape, opcode, operands = match.groups()
        sizes[name] = _shape_bytes(shape)
        if opcode in _HLO_FREE:
            continue
        kinds[opcode] += 1
        sources = set(re.findall(r"%([\w.\-]+)", operands))
        if not sources:  # HLO text without the % sigil
            sources = {s for s in re.findall(r"([\w.\-]+)", operands) if s in sizes}
        total += sizes[name] + sum(sizes.get(s, 0) for s in sources)
    return {
        "bytes": total,
        "kernels": sum(kinds.values()),
        "kinds": dict(sorted(kinds.items())),
    }


def xla_traffic(compiled) -> dict:
    """:func:`hlo_traffic` of a compiled JAX program, with XLA's own
    ``bytes accessed`` and the temporaries of its buffer assignment."""
    result = hlo_traffic(compiled.as_text())
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX: one dict per device
        analysis = analysis[0]
    result["bytes_accessed"] = float((analysis or {}).get("bytes accessed", 0.0))
    memory = compiled.memory_analysis()
    result["temp_bytes"] = getattr(memory, "temp_size_in_bytes", None)
    return result
