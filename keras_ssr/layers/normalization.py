"""Batch normalisation that keeps float32 gradients accurate."""

from __future__ import annotations

import keras
from keras import ops

from keras_ssr import _checks, distributed
from keras_ssr import ops as ssr_ops
from keras_ssr._serialization import register
from keras_ssr.layers._base import BN_EPSILON, BN_MOMENTUM, full_precision_policy
from keras_ssr.ops.reductions import _train_normalize, _train_pool_normalize


@register
class CenteredBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` with centred float32 arithmetic.

    Same arguments, weights, moving-average updates and results as the
    Keras layer, but the batch variance is a two-pass centred mean square
    (:func:`keras_ssr.ops.centered_moments`) and the output is formed as
    ``(x - mean) * gamma / sqrt(var + eps) + beta``
    (:func:`keras_ssr.ops.batch_normalize`). Keras' backends form
    ``x * inv + (beta - mean * inv)`` (and the torch backend takes
    ``E[x**2] - E[x]**2``), which for maps like the singularity strength,
    narrow and far from zero, loses the gradient with respect to ``gamma``
    to cancellation: about 3e-4 relative against float64, where the
    original's fused TF kernel reaches 4e-5. Masks and batch
    renormalisation fall back to the Keras implementation. An empty batch
    in training is normalised with the moving statistics and leaves them
    unchanged (it has no mean to add to them).

    ``synchronized=True`` (the default, unlike Keras') takes the training
    moments over the global batch under ``tf.distribute`` and
    ``torch.distributed`` (:mod:`keras_ssr.distributed`; on every backend,
    not only TensorFlow); ``False`` takes them per replica. Under JAX's
    ``keras.distribution`` they are global either way.
    """

    def __init__(self, *args, synchronized=True, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(synchronized, bool):
            raise TypeError(
                "`synchronized` must be a bool. "
                f"Received: synchronized={synchronized!r}"
            )
        self.synchronized = synchronized

    def _moments(self, inputs, mask):
        if mask is not None:
            return super()._moments(inputs, mask)
        axes = self._reduction_axes
        mean, variance = ssr_ops.centered_moments(inputs, axes, self.synchronized)
        return ops.reshape(mean, (-1,)), ops.reshape(variance, (-1,))

    #: Whether PyTorch normalises with its fused kernel
    #: (``torch.native_batch_norm``), and TensorFlow with its own
    #: (``FusedBatchNormV3``) in inference, channels last: one launch forward
    #: and one backward, where the ``keras.ops`` path takes up to a dozen.
    #: Set ``False`` (on the class or a layer) for the ``keras.ops`` path.
    #: TensorFlow trains on the ``keras.ops`` path: without oneDNN its fused
    #: kernel's float32 sums run in order, and an SSR-Xu fixture's measure
    #: gradient lands 2e-4 off float64 (the ``keras.ops`` path: 9e-5).
    fused = True

    def call(self, inputs, training=None, mask=None):
        # Batch renormalisation (``renorm``) came in Keras 3.14; the floor,
        # Keras 3.8, has no such attribute.
        if mask is not None or getattr(self, "renorm", False):
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
        """Whether a fused kernel takes ``x`` (see :attr:`fused`)."""
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
            getattr(self, "renorm", False)
            or spatial != tuple(a for a in axes if a != 0)
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
        for moving, value in (
            (self.moving_mean, mean),
            (self.moving_variance, variance),
        ):
            value = ops.cast(ops.reshape(value, (-1,)), moving.dtype)
            inner = getattr(moving, "_value", None)
            if keras.backend.backend() == "torch" and inner is not None:
                import torch

                with torch.no_grad():  # one launch
                    inner.lerp_(value, 1.0 - self.momentum)
            else:
                _add_scaled(moving, value - moving, 1.0 - self.momentum)


def _add_scaled(variable, delta, rate: float) -> None:
    """``variable += rate * delta`` in one launch where the backend has the op
    (TensorFlow's ``ResourceApplyGradientDescent``, torch's in-place
    ``add_``), where Keras' ``assign(variable + rate * delta)`` takes three.
    Keras' assignment under a stateless scope (JAX, ``stateless_call``) or a
    ``tf.distribute`` strategy."""
    from keras.src.backend.common.stateless_scope import in_stateless_scope

    backend = keras.backend.backend()
    inner = None if in_stateless_scope() else getattr(variable, "_value", None)
    if backend == "tensorflow" and inner is not None:
        import tensorflow as tf

        if not tf.distribute.has_strategy() and hasattr(inner, "handle"):
            tf.raw_ops.ResourceApplyGradientDescent(
                var=inner.handle,
                alpha=tf.constant(-rate, inner.dtype),
                delta=tf.cast(delta, inner.dtype),
            )
            return
    elif backend == "torch" and inner is not None:
        import torch

        with torch.no_grad():
            inner.add_(delta, alpha=rate)
        return
    variable.assign(variable + delta * rate)


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

    # Channels first and contiguous: the kernel's sums over a contiguous
    # plane are cascaded; over channels-last rows they run in order (beta's
    # gradient 1.5e-4 off float64 on an SSR fixture).
    flat = torch.movedim(x, axis, 1).contiguous()
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


def map_batch_norm(layer, axis: int | None = None) -> CenteredBatchNormalization:
    """The BN of a map layer: the original's and the follow-up's
    ``BatchNormalization()`` (tf.keras defaults, momentum 0.99, epsilon
    1e-3), named ``bn``, in float32 under 16-bit policies, over ``axis``
    (default the layer's channel axis), its moments global under data
    parallelism unless ``layer.synchronized`` is false."""
    return CenteredBatchNormalization(
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
