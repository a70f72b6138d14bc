"""Kernel launches and XLA traffic against the authors' code (counts, never times).

The launches of the authors' TF 2.14 layers were counted once with the same
rule (``benchmarks/counts.py``, ``python -m benchmarks --reference-repo
... --followup-repo ...``): forward, and forward plus the VJP of a
cotangent, at (2, 32, 32, 16). keras_ssr's are counted here, on the backend
of the session, at the versions the sessions pin: TensorFlow graphs and
torch eager must launch no more kernels than the authors' graphs; on JAX,
the bytes across XLA's kernels stay under the targets of issue 17. Targets
still missed are strict expected failures, so that meeting one is noticed.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import keras_ssr  # noqa: E402
from benchmarks import common, config, counts  # noqa: E402
from benchmarks.backends import get_backend  # noqa: E402

BACKEND = __import__("keras").backend.backend()

#: The authors' layers (TF 2.14.1, miguelmartins/ssr @ 308317c and
#: miguelmartins/multifractal-recalibration @ 3b723cd): launches forward,
#: forward + backward.
ORIGINAL = {
    "SqueezeExcite": (9, 24),
    "LocalSingularityStrength": (27, 76),
    "SingularityStrengthRecalibration": (36, 99),
    "LearnableMeasure": (313, 813),
    "LocalSingularityStrengthXu": (333, 877),
    "MonofractalRecalibration": (36, 99),
    "WeightedLocalSingularityStrength": (32, 94),
    "SoftHistogram": (8, 27),
    "MultifractalRecalibration": (44, 128),
    "SpatialSqueezeExcite": (15, 43),
    "StyleBasedRecalibration": (21, 72),
    "FrequencyChannelAttention": (10, 25),
}

_TF_BN = (
    "TensorFlow trains batch norm on the keras.ops path (its fused kernel is "
    "less accurate without oneDNN): about 20 launches per training BN where "
    "the original's FusedBatchNormV3 takes 2"
)
_COEFFICIENTS = (
    "the weighted slope's coefficients (7 launches from the learnable "
    "weights) and the box sums of all three scales (9 launches)"
)
#: (backend, layer, pass) still above the authors' count, with why.
MISSED = {
    ("tensorflow", "WeightedLocalSingularityStrength", "forward"): _COEFFICIENTS,
    ("tensorflow", "MultifractalRecalibration", "forward"): _COEFFICIENTS,
    ("tensorflow", "WeightedLocalSingularityStrength", "forward+backward"): _TF_BN,
    ("tensorflow", "SoftHistogram", "forward+backward"): _TF_BN,
    ("tensorflow", "MultifractalRecalibration", "forward+backward"): _TF_BN,
    ("tensorflow", "StyleBasedRecalibration", "forward+backward"): _TF_BN,
}


def _compiled(name, shape, mode):
    backend = get_backend()
    layer = getattr(keras_ssr, name)(**config.COUNTED_LAYERS[name])
    layer.build(shape)
    compiled = backend.compile_layer(layer, mode, list(layer.trainable_variables))
    x, cotangent = common.layer_inputs(name, shape, np.random.default_rng(0))
    return backend, compiled, backend.tensor(x), backend.tensor(cotangent)


def _launches(name):
    mode = {"tensorflow": "tf.function", "torch": "eager"}[BACKEND]
    backend, compiled, x, cotangent = _compiled(name, config.LAUNCH_SHAPE, mode)
    result = backend.count(compiled, mode, x, cotangent)
    return [result[p]["launches"] for p in config.PASSES]


def _case(name, index):
    key = (BACKEND, name, config.PASSES[index])
    marks = (
        [pytest.mark.xfail(strict=True, reason=MISSED[key])] if key in MISSED else []
    )
    return pytest.param(name, index, marks=marks, id=f"{name}-{config.PASSES[index]}")


@pytest.mark.skipif(BACKEND == "jax", reason="XLA fuses: traffic is counted instead")
@pytest.mark.parametrize(
    "name, index", [_case(n, i) for n in ORIGINAL for i in range(2)]
)
def test_no_more_launches_than_the_original(name, index):
    ours = _launches(name)[index]
    assert ours <= ORIGINAL[name][index], (ours, ORIGINAL[name][index])


#: Shape of the traffic checks: passes barely depend on the size (the
#: padding of the boxes), compiling is quicker than at (4, 224, 224, 32).
TRAFFIC_SHAPE = (2, 112, 112, 32)


@pytest.mark.skipif(BACKEND != "jax", reason="traffic across XLA's kernels: JAX")
@pytest.mark.parametrize("name, pass_name", list(config.TRAFFIC_TARGETS))
def test_xla_traffic_within_the_targets(name, pass_name, request):
    if (name, pass_name) in TRAFFIC_MISSED:
        request.applymarker(
            pytest.mark.xfail(strict=True, reason=TRAFFIC_MISSED[(name, pass_name)])
        )
    backend, compiled, x, cotangent = _compiled(name, TRAFFIC_SHAPE, "jax.jit")
    index = config.PASSES.index(pass_name)
    program = compiled.programs[index](*((x,) if index == 0 else (x, cotangent)))
    moved = counts.xla_traffic(program)["bytes"] / (4 * np.prod(TRAFFIC_SHAPE))
    assert moved <= config.TRAFFIC_TARGETS[(name, pass_name)], moved


_MAP_FORWARD = (
    "min and max read the input once each, and each box measure is padded "
    "into its own buffer before pooling (XLA:CPU fuses the pad into neither "
    "the pool nor the reductions): about 14 passes"
)
_MAP_BACKWARD = (
    "the backward's adjoint pools, tie masks and per-channel sums are "
    "reductions XLA:CPU (YNNPACK) reads from written buffers: about 50 passes"
)
#: Traffic targets still missed, with why.
TRAFFIC_MISSED = {
    ("SingularityStrengthRecalibration", "forward"): _MAP_FORWARD,
    ("MonofractalRecalibration", "forward"): _MAP_FORWARD,
    ("SingularityStrengthRecalibration", "forward+backward"): _MAP_BACKWARD,
    ("MonofractalRecalibration", "forward+backward"): _MAP_BACKWARD,
    ("MultifractalRecalibration", "forward+backward"): (
        "the soft histogram holds 16 maps per input map (k = 16): each pass "
        "over it is 16 passes over the input"
    ),
    ("SpatialSqueezeExcite", "forward+backward"): (
        "the maximum of the two branches is taken over their stack (the "
        "follow-up's ties), which XLA writes out, with its gradient's masks"
    ),
    ("StyleBasedRecalibration", "forward+backward"): (
        "13 passes: the style's two passes and the gate, forward and back"
    ),
}


def test_hlo_traffic_counts_distinct_operands_once():
    """The traffic rule on a hand-written module: a fusion reading one
    operand twice counts it once; parameters, tuples and bitcasts move
    nothing."""
    hlo = "\n".join(
        [
            "HloModule m",
            "",
            "ENTRY %main (p: f32[4,8]) -> (f32[4,8], f32[8]) {",
            "  %p = f32[4,8]{1,0} parameter(0)",
            "  %a = f32[4,8]{1,0} fusion(f32[4,8]{1,0} %p, f32[4,8]{1,0} %p), "
            "kind=kLoop, calls=%f",
            "  %b = f32[32]{0} bitcast(f32[4,8]{1,0} %a)",
            "  %r = f32[8]{0} fusion(f32[4,8]{1,0} %a), kind=kInput, calls=%g",
            "  ROOT %t = (f32[4,8]{1,0}, f32[8]{0}) tuple(%a, %r)",
            "}",
        ]
    )
    traffic = counts.hlo_traffic(hlo)
    # %a: reads p (128 B) once, writes 128 B; %r: reads a (128 B), writes 32 B.
    assert traffic == {
        "bytes": 128 + 128 + 128 + 32,
        "kernels": 2,
        "kinds": {"fusion": 2},
    }


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow graphs")
def test_tf_launch_rule():
    """Reshapes, constants, shape arithmetic and variable reads launch
    nothing; an op nothing needs is pruned; a variable update counts."""
    import tensorflow as tf

    v = tf.Variable(tf.zeros(3))

    @tf.function
    def fn(x):
        unused = tf.exp(x)  # noqa: F841 (pruned)
        y = tf.reshape(x * 2.0, (-1,)) + tf.cast(tf.shape(x)[0], tf.float32)
        v.assign_add(y[:3] + v)
        return y

    result = counts.tf_launches(tf, fn, tf.ones((2, 3)))
    # Mul, AddV2 (y), StridedSlice, AddV2, AssignAddVariableOp
    assert result["ops"] == {
        "AddV2": 2,
        "AssignAddVariableOp": 1,
        "Mul": 1,
        "StridedSlice": 1,
    }


@pytest.mark.skipif(BACKEND != "torch", reason="torch eager")
def test_torch_launch_rule():
    """Views launch nothing; the peak counts the live storages a block made."""
    import torch

    x = torch.ones(4, 8)
    with counts.TorchLaunches() as counter:
        y = x.t()[1:] * 2.0  # a view, then one kernel: 7 x 4 floats
        z = (y + 1.0).sum()  # two kernels; y and y + 1 alive together
    del z
    assert counter.ops == {"aten::add": 1, "aten::mul": 1, "aten::sum": 1}
    assert counter.peak_bytes == 2 * 7 * 4 * 4 + 4  # y, y + 1, the sum
