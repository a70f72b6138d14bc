"""Batch normalisation that keeps float32 gradients accurate."""

from __future__ import annotations

import keras
from keras import ops

from keras_ssr import _checks, distributed
from keras_ssr import ops as ssr_ops
from keras_ssr._serialization import register
from keras_ssr.layers._base import BN_EPSILON, BN_MOMENTUM, full_precision_policy


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

    def call(self, inputs, training=None, mask=None):
        # Batch renormalisation (``renorm``) came in Keras 3.14; the floor,
        # Keras 3.8, has no such attribute.
        if mask is not None or getattr(self, "renorm", False):
            return super().call(inputs, training=training, mask=mask)
        dtype = _checks.wide_float(inputs.dtype)
        x = ops.cast(inputs, dtype)
        ndim = len(x.shape)
        axis = self.axis % ndim
        shape = [1] * ndim
        shape[axis] = x.shape[axis]

        def reshape(v):
            return None if v is None else ops.reshape(ops.cast(v, dtype), shape)

        axes = [a for a in range(ndim) if a != axis]
        # An empty batch has no moments: it is normalised with the moving
        # statistics, which it leaves as they are.
        empty = any(x.shape[a] == 0 for a in axes) and not (
            distributed.spans_replicas(axes, self.synchronized)
        )
        if training and self.trainable and not empty:
            mean, variance = ssr_ops.centered_moments(x, axes, self.synchronized)
            flat_mean = ops.reshape(mean, (-1,))
            flat_variance = ops.reshape(variance, (-1,))
            self.moving_mean.assign(
                ops.cast(self.moving_mean, dtype) * self.momentum
                + flat_mean * (1.0 - self.momentum)
            )
            self.moving_variance.assign(
                ops.cast(self.moving_variance, dtype) * self.momentum
                + flat_variance * (1.0 - self.momentum)
            )
        else:
            mean = reshape(self.moving_mean)
            variance = reshape(self.moving_variance)
        outputs = ssr_ops.batch_normalize(
            x,
            mean,
            variance,
            scale=reshape(self.gamma) if self.scale else None,
            offset=reshape(self.beta) if self.center else None,
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)


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
