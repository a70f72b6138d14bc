"""What the benchmarks run: layers, shapes, models, compile modes.

Standard library only: the reference worker (TensorFlow 2.14, ``numpy<2``)
imports this module too.
"""

from __future__ import annotations

#: Per-sample shapes of the SSR-U-Net's first three levels for 224x224 inputs
#: (levels 32, 64, 128); the batch size is prepended.
LEVEL_SHAPES: tuple[tuple[int, int, int], ...] = (
    (224, 224, 32),
    (112, 112, 64),
    (56, 56, 128),
)
#: ``--quick`` keeps the deepest (cheapest) level only.
QUICK_LEVEL_SHAPES: tuple[tuple[int, int, int], ...] = ((56, 56, 128),)

DEFAULT_BATCH_SIZE = 4
#: ``--quick`` times the models on single images.
QUICK_MODEL_BATCH_SIZE = 1

#: Layer name -> constructor arguments, identical for keras_ssr and the
#: original (the SSR-U-Net's defaults: r=2, max_scale=3; Xu et al.'s
#: learnable measure with keras_ssr's default local_scale of 6).
LAYERS: dict[str, dict] = {
    "SqueezeExcite": {"r": 2},
    "LocalSingularityStrength": {"max_scale": 3},
    "SingularityStrengthRecalibration": {"r": 2, "max_scale": 3},
    "LearnableMeasure": {"max_scale": 6},
    # the follow-up's family (its builders' defaults), beside its own code
    "SpatialSqueezeExcite": {"r": 2},
    "StyleBasedRecalibration": {},
    "FrequencyChannelAttention": {"r": 2, "low_freq": 4},
    "MonofractalRecalibration": {"r": 2, "max_scale": 3},
    "MultifractalRecalibration": {"max_scale": 3, "k": 16, "per_channel": False},
}
#: The follow-up's family is timed at one shape of its U-Net's first level
#: (``--quick``: the quick level, as every layer).
FAMILY_LEVEL_SHAPES: tuple[tuple[int, int, int], ...] = ((112, 112, 32),)
#: Every public layer, counted (launches, traffic) in every backend: layer
#: name -> constructor arguments, the same for keras_ssr and the authors'
#: code (the follow-up builders' defaults for its family).
COUNTED_LAYERS: dict[str, dict] = {
    **LAYERS,
    "LocalSingularityStrengthXu": {"local_scale": 6},
    "SingularityStrengthRecalibrationXu": {"r": 2, "local_scale": 6},
    "WeightedLocalSingularityStrength": {"max_scale": 3},
    "SoftHistogram": {"num_anchors": 16},
}
#: The authors' class of each layer, by checkout: the SSR paper's
#: (miguelmartins/ssr) and the follow-up's
#: (miguelmartins/multifractal-recalibration). SSR-Xu has none.
ORIGINAL_CLASSES: dict[str, dict[str, str]] = {
    "ssr": {
        "SqueezeExcite": "attention.SqueezeExcite",
        "LocalSingularityStrength": "fractal_geometry.LocalSingularityStrength",
        "SingularityStrengthRecalibration": (
            "attention.SingularityStrengthRecalibration"
        ),
        "LearnableMeasure": "fractal_geometry.LearnableMeasure",
        "LocalSingularityStrengthXu": "fractal_geometry.LocalSingularityStrengthXu",
    },
    "followup": {
        "MonofractalRecalibration": "attention.MonofractalRecalibration",
        "WeightedLocalSingularityStrength": (
            "attention.WeightedLocalSingularityStrength"
        ),
        "SoftHistogram": "fractal_geometry.SoftHistogramLayer",
        "MultifractalRecalibration": "attention.MultifractalRecalibration",
        "SpatialSqueezeExcite": "attention.SpatialSqueezeExcite",
        "StyleBasedRecalibration": "attention.StyleBasedRecalibration",
        "FrequencyChannelAttention": "attention.FrequencyChannelAttention",
    },
}
#: What each compile mode counts, and at which shape: ``"launch"`` is
#: :data:`LAUNCH_SHAPE` (the models: :data:`MODEL_LAUNCH_INPUT`), ``"traffic"``
#: the run's first layer shape (the models: their timed input). Kernel
#: launches where nothing fuses (TF graphs, torch eager, and torch's peak of
#: live temporaries), bytes across kernels where XLA fuses.
COUNT_MODES: dict[str, dict[str, tuple[str, ...]]] = {
    "tensorflow": {"tf.function": ("launch",), "tf.function+XLA": ("traffic",)},
    "torch": {"eager": ("launch", "traffic")},
    "jax": {"jax.jit": ("traffic",)},
    "original": {"tf.function": ("launch",)},
}
LAUNCH_SHAPE = (2, 32, 32, 16)
MODEL_LAUNCH_INPUT = (2, 32, 32, 3)
#: Short names for tables and the chart.
SHORT_NAMES = {
    "SqueezeExcite": "SE",
    "LocalSingularityStrength": "LSS",
    "SingularityStrengthRecalibration": "SSR",
    "LearnableMeasure": "LM",
    "LocalSingularityStrengthXu": "LSS-Xu",
    "SingularityStrengthRecalibrationXu": "SSR-Xu",
    "MonofractalRecalibration": "Mono",
    "WeightedLocalSingularityStrength": "WLSS",
    "SoftHistogram": "SoftHist",
    "MultifractalRecalibration": "Multi",
    "SpatialSqueezeExcite": "scSE",
    "StyleBasedRecalibration": "SRM",
    "FrequencyChannelAttention": "FCA",
    "unet": "U-Net",
    "ssr_unet": "SSR-U-Net",
}
#: The models compared: U-Net and SSR-U-Net, both built with these.
MODEL = {
    "channels_per_level": [32, 64, 128, 256],
    "input_shape": [224, 224, 3],
    "n_classes": 2,
    "with_bn": True,
    "r": 2,
    "max_scale": 3,
}
MODELS = ("unet", "ssr_unet")

#: Compile modes per implementation, in the order they are reported. The
#: first one of each backend is the one ``--quick`` keeps.
MODES: dict[str, tuple[str, ...]] = {
    "tensorflow": ("tf.function+XLA", "tf.function"),
    "torch": ("eager", "torch.compile"),
    "jax": ("jax.jit",),
    "original": ("tf.function",),
}
BACKENDS = ("tensorflow", "torch", "jax")

#: Warm-up calls (the first one compiles) and timed repeats.
REPEATS = {"full": (3, 10), "quick": (1, 3)}
MODEL_REPEATS = {"full": (2, 5), "quick": (1, 2)}
#: Seconds of timed calls after which a slow benchmark stops repeating (at
#: least three timed calls all the same): layers, models.
BUDGET_S = {"full": (20.0, 40.0), "quick": (4.0, 8.0)}

#: The performance targets the report checks, held as data (see
#: docs/performance.md): the SSR layer's speed-up over the original at the
#: ``level`` shape (forward + backward per backend, and forward on the
#: fastest backend), and the SSR-U-Net's training step against the U-Net's.
TARGETS = {
    "level": (224, 224, 32),
    "ssr_forward_backward_speedup": {"tensorflow": 3.0, "jax": 3.0, "torch": 2.0},
    "ssr_fastest_forward_speedup": 4.0,
    "train_step_time_ratio": 1.15,
    "train_step_memory_ratio": 1.3,
}

#: The count targets the report checks (issue 17): every layer launches no
#: more kernels than the authors' code (TF graph and torch eager, forward and
#: forward + backward); these forward + backward launch ceilings on both; and
#: XLA traffic ceilings on JAX, in passes over the input.
LAUNCH_TARGETS = {
    "SingularityStrengthRecalibration": 80,
    "MonofractalRecalibration": 80,
}
TRAFFIC_TARGETS = {
    ("SingularityStrengthRecalibration", "forward"): 12,
    ("SingularityStrengthRecalibration", "forward+backward"): 35,
    ("MonofractalRecalibration", "forward"): 12,
    ("MonofractalRecalibration", "forward+backward"): 35,
    ("MultifractalRecalibration", "forward+backward"): 60,
    ("SqueezeExcite", "forward+backward"): 12,
    ("SpatialSqueezeExcite", "forward+backward"): 12,
    ("StyleBasedRecalibration", "forward+backward"): 12,
    ("FrequencyChannelAttention", "forward+backward"): 12,
}
#: Where launches are counted: (backend, mode).
LAUNCH_COLUMNS = (
    ("original", "tf.function"),
    ("tensorflow", "tf.function"),
    ("torch", "eager"),
)

#: The fixtures' agreement rule: max|a - e| <= RTOL * max(1, max|e|).
RTOL = 1e-4

PASSES = ("forward", "forward+backward")
MODEL_PASSES = ("train_step", "inference")


def source(layer_name: str) -> str | None:
    """Whose code the original of ``layer_name`` is (``"ssr"``,
    ``"followup"``), ``None`` for a layer of keras_ssr's own."""
    for name, classes in ORIGINAL_CLASSES.items():
        if layer_name in classes:
            return name
    return None


def shape_key(shape) -> str:
    """``(4, 224, 224, 32)`` -> ``"4x224x224x32"``."""
    return "x".join(str(int(s)) for s in shape)


def parse_shape(text: str) -> tuple[int, ...]:
    """``"4x224x224x32"`` -> ``(4, 224, 224, 32)``."""
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        shape = ()
    if not shape or any(s < 1 for s in shape):
        raise ValueError(
            f"A shape must be positive integers joined by 'x', e.g. 4x224x224x32. "
            f"Received: shape={text!r}"
        )
    return shape
