"""The singularity-strength maths, once, in ``keras.ops``.

Every function here is pure, works on the TensorFlow, PyTorch and JAX
backends, on inputs with one, two or three spatial axes, in either
``data_format``. The layers in :mod:`keras_ssr.layers` compose them.

For a feature map ``x`` with channels ``c`` the local singularity strength
(Hölder exponent) at pixel ``p`` is the least-squares slope

.. math::

    \\alpha_c(p) = \\frac{\\sum_j (l_j - \\bar l)\\,\\log(\\mu_{c,j}(p) + \\epsilon)}
                         {\\sum_j (l_j - \\bar l)^2},
    \\qquad l_j = \\log k_j,

of the log-measure against the log-scale, where ``mu_{c,j}(p)`` is the sum of
the min-max scaled map over the box of side ``k_j = 2**j`` (``j = 1 ..
max_scale``) around ``p``. Boxes use TensorFlow's ``"SAME"`` zero padding:
``(k - 1) // 2`` cells before ``p`` and ``k // 2`` after.

Box sums are computed exactly (no cumulative sums, which lose float32
precision on large maps) by dyadic doubling: a box of side ``2k`` is two
boxes of side ``k`` shifted by ``k``, so every scale costs one addition per
spatial axis instead of a ``k**d`` convolution.

Numerically sensitive steps (scaling, box sums, log and slope) run in
float32 at least, whatever the input dtype (``float16``/``bfloat16`` inputs
are upcast), as Keras does for batch normalisation.

Inputs: every array argument may be a backend tensor, a symbolic
``KerasTensor``, a ``keras.Variable``, a NumPy array, a (nested) Python list
or, where the op takes a scalar, a Python float; each is converted once with
``keras.ops.convert_to_tensor``. Values must be floating point: a list of
Python ints is refused with a ``TypeError`` like an int tensor (write
``1.0``). A list of floats becomes ``keras.config.floatx()`` (float32).

Dtypes: float64 in, float64 out, on TensorFlow and PyTorch. JAX holds every
float as float32 unless ``jax_enable_x64`` is on (``jax.config.update(
"jax_enable_x64", True)`` before the first computation): without it a
float64 input is computed, and returned, in float32.

Empty inputs: an empty batch (or spatial axis) gives the empty result on
every backend; a mean over an empty axis (:func:`accurate_mean`,
:func:`centered_moments`) is a ``ValueError``.
"""

from keras_ssr.ops.measures import (
    gaussian_kernel,
    learnable_measures,
)
from keras_ssr.ops.recalibration import (
    BASES,
    STYLE_EPSILON,
    cosine_bases,
    frequency_groups,
    frequency_pool,
    histogram_gate,
    soft_histogram,
    style_pool,
)
from keras_ssr.ops.reductions import (
    accurate_mean,
    accurate_sum,
    batch_normalize,
    centered_moments,
)
from keras_ssr.ops.singularity import (
    DENOMINATOR_RANGE,
    EPSILON,
    MAX_SCALE_LIMIT,
    MAXIMUM_VALUE,
    MINIMUM_VALUE,
    box_sums,
    dyadic_scales,
    learnable_singularity_strength,
    min_max_scale,
    ols_slope,
    ols_weights,
    singularity_strength,
    weighted_ols_coefficients,
    weighted_ols_slope,
    weighted_singularity_strength,
)

__all__ = [
    "BASES",
    "DENOMINATOR_RANGE",
    "EPSILON",
    "MAX_SCALE_LIMIT",
    "MAXIMUM_VALUE",
    "MINIMUM_VALUE",
    "STYLE_EPSILON",
    "accurate_mean",
    "accurate_sum",
    "batch_normalize",
    "box_sums",
    "centered_moments",
    "cosine_bases",
    "dyadic_scales",
    "frequency_groups",
    "frequency_pool",
    "gaussian_kernel",
    "histogram_gate",
    "learnable_measures",
    "learnable_singularity_strength",
    "min_max_scale",
    "ols_slope",
    "ols_weights",
    "singularity_strength",
    "soft_histogram",
    "style_pool",
    "weighted_ols_coefficients",
    "weighted_ols_slope",
    "weighted_singularity_strength",
]
