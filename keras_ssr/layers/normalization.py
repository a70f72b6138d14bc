"""keras_ssr's batch normalisation: centred float32 moments, global on request.

:class:`BatchNormalization` normalises the attention layers' maps (their
``bn`` sub-layers) and, with ``synchronized_bn=True``, the U-Nets' blocks.
``CenteredBatchNormalization`` and ``SynchronizedBatchNormalization``, the
two classes it replaces, remain as deprecated, registered subclasses, so
that saved models and code that name them load and run.
"""

from __future__ import annotations

import warnings

import keras
from keras import ops

from keras_ssr import _checks, distributed
from keras_ssr import ops as ssr_ops
from keras_ssr._serialization import register
from keras_ssr.layers._base import BN_EPSILON, BN_MOMENTUM, full_precision_policy
from keras_ssr.ops.reductions import _train_normalize, _train_pool_normalize

__all__ = [
    "BatchNormalization",
    "CenteredBatchNormalization",
    "SynchronizedBatchNormalization",
]

#: The keys Keras 3.14 added to ``BatchNormalization``'s config (batch
#: renormalisation), which Keras 3.8 does not take.
_RENORM_KEYS = ("renorm", "renorm_clipping", "renorm_momentum")


@register
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` with centred float32 arithmetic,
    and moments over the global batch on every backend.

    Same arguments, weights (``gamma``, ``beta``, ``moving_mean``,
    ``moving_variance``), moving-average updates and results as the Keras
    layer, but the batch variance is a two-pass centred mean square
    (:func:`keras_ssr.ops.centered_moments`) and the output is formed as
    ``(x - mean) * gamma / sqrt(var + eps) + beta``
    (:func:`keras_ssr.ops.batch_normalize`). Keras' backends form
    ``x * inv + (beta - mean * inv)`` (and the torch backend takes
    ``E[x**2] - E[x]**2``), which for maps like the singularity strength,
    narrow and far from zero, loses the gradient with respect to ``gamma``
    to cancellation: about 3e-4 relative against float64, where the
    original's fused TF kernel reaches 4e-5. The arithmetic runs in float32
    (float64 for float64 inputs) under any dtype policy, as Keras' does.

    An empty batch in training is normalised with the moving statistics and
    leaves them unchanged (it has no mean to add to them). With a ``mask``
    the layer is Keras' own (its masked moments, per replica).

    Args:
        synchronized: under data parallelism (``tf.distribute``,
            ``torch.distributed``), whether the training moments are taken
            over the global batch (:mod:`keras_ssr.distributed`, on every
            backend, where Keras' ``synchronized=True`` is TensorFlow's
            only) or per replica (``False``, the default, as Keras'). Under
            JAX's ``keras.distribution`` they are global either way.
        fused: whether a backend's fused kernel normalises where one keeps
            float32 accuracy (the default; one launch forward and one
            backward where the ``keras.ops`` path takes up to a dozen):
            PyTorch's ``torch.native_batch_norm`` (training and inference,
            on the map moved channels first and contiguous, where its sums
            are cascaded) and TensorFlow's ``FusedBatchNormV3`` (inference,
            channels last, rank 5 or less). TensorFlow trains on the
            ``keras.ops`` path: without oneDNN its fused kernel adds float32
            sums in order, and an SSR-Xu fixture's measure gradient lands
            2e-4 off float64 with it (9e-5 without). JAX always takes the
            ``keras.ops`` path (XLA fuses it). ``False``: the ``keras.ops``
            path everywhere. Both paths agree within float32 rounding
            (tested, outputs, moving statistics and gradients, in training
            and inference).
        **kwargs: the arguments of ``keras.layers.BatchNormalization``
            (``axis``, ``momentum``, ``epsilon``, ``center``, ``scale``,
            initialisers, regularisers, constraints) and of the base
            ``Layer``.

    Call arguments:
        inputs: a floating-point tensor of any rank.
        training: whether to normalise with the batch's moments (and move
            the moving statistics towards them) or with the moving ones.
        mask: optional; as Keras' layer.

    Raises:
        ValueError: for ``renorm=True`` (batch renormalisation, Keras 3.14's
            ``keras.layers.BatchNormalization`` has it; Keras 3.8 does not).
        TypeError: for a non-bool ``synchronized`` or ``fused``.

    Example:
        >>> bn = BatchNormalization(synchronized=True)
        >>> bn(keras.random.normal((4, 8, 8, 3)), training=True).shape
        (4, 8, 8, 3)

    The moving statistics move in place where the backend allows it (one
    ``lerp_`` on PyTorch, one ``ResourceApplyGradientDescent`` on
    TensorFlow, per variable: 6 and 4 fewer launches per training call than
    ``Variable.assign``), through the public ``Variable.value``; under a
    ``keras.StatelessScope`` (JAX, ``stateless_call``, symbolic tracing) and
    ``tf.distribute`` they are assigned (see :func:`move_towards`).
    """

    def __init__(self, *args, synchronized=False, fused=True, **kwargs):
        renorm = {key: kwargs.pop(key) for key in _RENORM_KEYS if key in kwargs}
        if renorm.get("renorm"):
            raise ValueError(
                "keras_ssr's BatchNormalization does no batch renormalisation; "
                "use keras.layers.BatchNormalization(renorm=True) (Keras >= 3.14). "
                f"Received: renorm={renorm['renorm']!r}"
            )
        # Keras' own `synchronized` stays False: it is TensorFlow's only, and
        # this layer's moments are its own (see `call`).
        super().__init__(*args, **kwargs)
        self.synchronized = _checks.check_bool("synchronized", synchronized)
        self.fused = _checks.check_bool("fused", fused)

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            return super().call(inputs, training=training, mask=mask)
        x, axes, scale, offset, reshape = self._prepare(inputs)
        if self._batch_statistics(x, axes, training):
            if distributed.spans_replicas(axes, self.synchronized):
                mean, variance = ssr_ops.centered_moments(x, axes, True)
                outputs = ssr_ops.batch_normalize(
                    x, mean, variance, scale, offset, self.epsilon
                )
            elif self._fusable(x):
                outputs, mean, variance = _fused_batch_norm(
                    x, self.axis % len(x.shape), scale, offset, self.epsilon
                )
            else:
                outputs, mean, variance = _train_normalize(
                    x, axes, self.epsilon, scale, offset
                )
            self.update_moving_statistics(mean, variance)
        else:
            mean = reshape(self.moving_mean)
            variance = reshape(self.moving_variance)
            if self._fusable(x, inference=True):
                outputs = _fused_batch_norm(
                    x,
                    self.axis % len(x.shape),
                    scale,
                    offset,
                    self.epsilon,
                    (mean, variance),
                )
            else:
                outputs = ssr_ops.batch_normalize(
                    x, mean, variance, scale, offset, self.epsilon
                )
        return ops.cast(outputs, self.compute_dtype)

    def _prepare(self, inputs):
        """``(x, axes, scale, offset, reshape)``: ``inputs`` in float32 (or
        wider), the reduced axes, the parameters shaped to broadcast."""
        dtype = _checks.wide_float(inputs.dtype)
        x = ops.cast(inputs, dtype)
        ndim = len(x.shape)
        axis = self.axis % ndim
        shape = [1] * ndim
        shape[axis] = x.shape[axis]

        def reshape(v):
            return None if v is None else ops.reshape(ops.cast(v, dtype), shape)

        axes = [a for a in range(ndim) if a != axis]
        scale = reshape(self.gamma) if self.scale else None
        offset = reshape(self.beta) if self.center else None
        return x, axes, scale, offset, reshape

    def _batch_statistics(self, x, axes, training) -> bool:
        """Whether a call normalises with the batch's moments. An empty batch
        has none: it is normalised with the moving statistics, which it
        leaves as they are."""
        empty = any(x.shape[a] == 0 for a in axes) and not (
            distributed.spans_replicas(axes, self.synchronized)
        )
        return bool(training) and self.trainable and not empty

    def _fusable(self, x, inference=False) -> bool:
        """Whether a fused kernel takes ``x`` (see ``fused``)."""
        if not self.fused or _checks.wide_float(x.dtype) != "float32":
            return False
        backend = keras.backend.backend()
        if backend == "tensorflow":
            last = self.axis % len(x.shape) == len(x.shape) - 1
            return inference and last and len(x.shape) <= 5
        return backend == "torch"

    def pooled(self, inputs, spatial_axes, training=None):
        """``mean(self(inputs, training), spatial_axes)``, ``(batch, channels)``.

        ``spatial_axes`` are every axis but the batch and the normalised one.
        Where the whole map is not normalised by a fused kernel, the
        normalisation, affine per channel, is applied to the spatial means of
        ``inputs`` (:func:`keras_ssr.ops.reductions._train_pool_normalize` in
        training), never to the whole map: XLA then moves a fraction of the
        bytes. The moving statistics move as in :meth:`call`.
        """
        x, axes, scale, offset, reshape = self._prepare(inputs)
        spatial = tuple(sorted(a % len(x.shape) for a in spatial_axes))
        plain = (
            spatial != tuple(a for a in axes if a != 0)
            or self._fusable(x)
            or distributed.spans_replicas(axes, self.synchronized)
        )
        if plain:
            return ssr_ops.accurate_mean(self(inputs, training=training), spatial)
        if self._batch_statistics(x, axes, training):
            pooled, mean, variance = _train_pool_normalize(
                x, spatial, self.epsilon, scale, offset
            )
            self.update_moving_statistics(mean, variance)
        else:
            pooled = ssr_ops.batch_normalize(
                ssr_ops.accurate_mean(x, spatial, keepdims=True),
                reshape(self.moving_mean),
                reshape(self.moving_variance),
                scale,
                offset,
                self.epsilon,
            )
        pooled = ops.squeeze(pooled, axis=spatial)
        return ops.cast(pooled, self.compute_dtype)

    def update_moving_statistics(self, mean, variance):
        """Moves the moving mean and variance towards a batch's (any shape
        holding one value per channel) by ``1 - momentum``."""
        rate = 1.0 - self.momentum
        move_towards(self.moving_mean, mean, rate)
        move_towards(self.moving_variance, variance, rate)

    def get_config(self):
        config = super().get_config()
        config["fused"] = self.fused
        return config


def _deprecated(old: str, new: str) -> None:
    warnings.warn(
        f"{old} is deprecated: use {new}. It remains registered, so that "
        "saved models naming it load.",
        DeprecationWarning,
        stacklevel=3,
    )


@register
class CenteredBatchNormalization(BatchNormalization):
    """Deprecated: :class:`BatchNormalization` (whose ``synchronized``
    defaults to ``False``; this name's to ``True``).

    Registered under its own name, so that models saved with it load.
    """

    def __init__(self, *args, synchronized=True, **kwargs):
        _deprecated(
            "keras_ssr.layers.normalization.CenteredBatchNormalization",
            "keras_ssr.layers.BatchNormalization",
        )
        super().__init__(*args, synchronized=synchronized, **kwargs)


@register
class SynchronizedBatchNormalization(BatchNormalization):
    """Deprecated: ``keras_ssr.layers.BatchNormalization(synchronized=True)``.

    The class ``build_unet(synchronized_bn=True)`` used to build; registered
    under its own name, so that models saved with it (whose configs have no
    ``synchronized`` entry) load, global moments on every backend.
    """

    def __init__(self, *args, synchronized=True, **kwargs):
        _deprecated(
            "keras_ssr.distributed.SynchronizedBatchNormalization",
            "keras_ssr.layers.BatchNormalization(synchronized=True)",
        )
        super().__init__(*args, synchronized=synchronized, **kwargs)


def _in_place_storage(variable):
    """The backend variable behind ``variable`` that an update may change in
    place, or ``None`` where it must be ``variable.assign``-ed.

    ``Variable.value`` is public: on PyTorch it is the tensor that Keras'
    own ``assign`` copies into, on TensorFlow the ``tf.Variable``. Keras'
    one private function used here, ``in_stateless_scope``, tells whether a
    ``keras.StatelessScope`` is recording assignments (JAX's training,
    ``Layer.stateless_call``, symbolic tracing): Keras 3 (3.8 to 3.15) has
    no public way to ask, and an in-place update there would change the
    variable (or a tensor the caller passed) instead of recording a new
    value. ``tf.distribute`` variables are assigned too.
    """
    from keras.src.backend.common.stateless_scope import in_stateless_scope

    backend = keras.backend.backend()
    if backend not in ("torch", "tensorflow") or in_stateless_scope():
        return None
    value = variable.value
    if backend == "torch":
        import torch

        return value if isinstance(value, torch.Tensor) else None
    import tensorflow as tf

    if tf.distribute.has_strategy() or not isinstance(value, tf.Variable):
        return None
    return value


def move_towards(variable, target, rate: float) -> None:
    """``variable += rate * (target - variable)``, a moving average.

    ``target`` holds ``variable``'s values in any shape. One ``lerp_`` on
    PyTorch, a subtraction and one ``ResourceApplyGradientDescent`` on
    TensorFlow, where the storage may change in place
    (:func:`_in_place_storage`); else ``variable.assign``: three launches
    more per variable on PyTorch, two on TensorFlow, which would put
    ``SoftHistogram``, ``WeightedLocalSingularityStrength`` and
    ``MultifractalRecalibration`` above the authors' launch counts on
    PyTorch, and ``LocalSingularityStrength`` and SSR on TensorFlow
    (``tests/test_counts.py``).
    """
    target = ops.cast(ops.reshape(target, (-1,)), variable.dtype)
    storage = _in_place_storage(variable)
    if storage is None:
        variable.assign(variable + (target - variable) * rate)
    elif keras.backend.backend() == "torch":
        import torch

        with torch.no_grad():
            storage.lerp_(target, rate)
    else:
        _apply_descent(storage, target - storage, rate)


def add_scaled(variable, delta, rate: float) -> None:
    """``variable += rate * delta`` (``delta`` in any shape holding
    ``variable``'s values): one launch where the storage may change in place
    (see :func:`move_towards`), else ``variable.assign``."""
    delta = ops.cast(ops.reshape(delta, (-1,)), variable.dtype)
    storage = _in_place_storage(variable)
    if storage is None:
        variable.assign(variable + delta * rate)
    elif keras.backend.backend() == "torch":
        import torch

        with torch.no_grad():
            storage.add_(delta, alpha=rate)
    else:
        _apply_descent(storage, delta, rate)


def _apply_descent(storage, delta, rate: float) -> None:
    """``storage += rate * delta`` in one TensorFlow op."""
    import tensorflow as tf

    tf.raw_ops.ResourceApplyGradientDescent(
        var=storage.handle,
        alpha=tf.constant(-rate, storage.dtype),
        delta=tf.cast(delta, storage.dtype),
    )


def _fused_batch_norm(x, axis, scale, offset, epsilon, moments=None):
    """Batch normalisation of float32 ``x`` over every axis but ``axis`` by
    ``torch.native_batch_norm``, with its registered gradient.

    Training (``moments=None``): returns ``(y, mean, variance)``, the biased
    variance (Keras'; the kernel's running variance would be Bessel's, so it
    is kept out of it). With the moving ``moments``: returns ``y``.
    """
    channels = x.shape[axis]
    scale = (
        ops.reshape(scale, (channels,))
        if scale is not None
        else ops.ones((channels,), x.dtype)
    )
    offset = (
        ops.reshape(offset, (channels,))
        if offset is not None
        else ops.zeros((channels,), x.dtype)
    )
    if keras.backend.backend() == "tensorflow":  # inference, channels last
        import tensorflow as tf

        shape = tf.shape(x)
        ndim = len(x.shape)
        flat = (
            x
            if ndim >= 4
            else tf.reshape(x, tf.concat([shape[:-1], [1] * (4 - ndim), shape[-1:]], 0))
        )
        mean, variance = (ops.reshape(m, (channels,)) for m in moments)
        y = tf.raw_ops.FusedBatchNormV3(
            x=flat,
            scale=scale,
            offset=offset,
            mean=mean,
            variance=variance,
            epsilon=epsilon,
            data_format="NHWC" if len(flat.shape) == 4 else "NDHWC",
            is_training=False,
        )[0]
        return tf.reshape(y, shape)
    import torch

    # Channels first and contiguous in training: the kernel's sums over a
    # contiguous plane are cascaded; over channels-last rows they run in
    # order (beta's gradient 1.5e-4 off float64 on an SSR fixture). With the
    # moving moments there is no sum, and the kernel takes a 4-D or 5-D map
    # channels last as it is (torch's channels_last formats): no copy, where
    # Multi's histogram holds 16 maps per input map.
    flat = torch.movedim(x, axis, 1)
    if moments is None or flat.ndim not in (4, 5):
        flat = flat.contiguous()
    if moments is None:
        y, mean, inv = torch.native_batch_norm(
            flat, scale, offset, None, None, True, 0.0, epsilon
        )
        variance = inv.pow(-2) - epsilon
    else:
        mean, variance = (ops.reshape(m, (channels,)) for m in moments)
        y = torch.native_batch_norm(
            flat, scale, offset, mean, variance, False, 0.0, epsilon
        )[0]
    y = torch.movedim(y, 1, axis)
    return y if moments is not None else (y, mean, variance)


def map_batch_norm(layer, axis: int | None = None) -> BatchNormalization:
    """The BN of a map layer: the original's and the follow-up's
    ``BatchNormalization()`` (tf.keras defaults, momentum 0.99, epsilon
    1e-3), named ``bn``, in float32 under 16-bit policies, over ``axis``
    (default the layer's channel axis), its moments global under data
    parallelism unless ``layer.synchronized`` is false."""
    return BatchNormalization(
        axis=layer.channel_axis if axis is None else axis,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        synchronized=layer.synchronized,
        name="bn",
        dtype=full_precision_policy(layer.dtype_policy),
    )


def bn_variables(bn, prefix: str = "bn.") -> dict:
    """A BN's variables by the semantic names the weight files use."""
    return {
        prefix + "gamma": bn.gamma,
        prefix + "beta": bn.beta,
        prefix + "moving_mean": bn.moving_mean,
        prefix + "moving_variance": bn.moving_variance,
    }
