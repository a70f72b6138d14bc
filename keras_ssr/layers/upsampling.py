"""Linear 2x upsampling along one axis, and the trilinear 3-D layer built on it."""

from __future__ import annotations

import keras
from keras import ops

from keras_ssr import _checks
from keras_ssr._serialization import register

__all__ = ["TrilinearUpSampling3D"]


def _linear_upsample_2x(x, axis: int):
    """Doubles ``axis`` by linear interpolation at half-pixel centres.

    Output ``2i`` is ``0.75 x[i] + 0.25 x[i - 1]`` and output ``2i + 1`` is
    ``0.75 x[i] + 0.25 x[i + 1]``, with the edges repeated: what
    ``tf.image.resize(..., "bilinear")`` and ``torch`` (``align_corners=
    False``) give along one axis for a factor of 2.
    """
    ndim = len(x.shape)
    axis = axis % ndim

    def part(start, stop):
        index = [slice(None)] * ndim
        index[axis] = slice(start, stop)
        return x[tuple(index)]

    previous = ops.concatenate([part(0, 1), part(0, -1)], axis=axis)
    following = ops.concatenate([part(1, None), part(-1, None)], axis=axis)
    even = 0.75 * x + 0.25 * previous
    odd = 0.75 * x + 0.25 * following
    both = ops.stack([even, odd], axis=axis + 1)
    dims = list(both.shape)
    if sum(d is None for d in dims) <= 1:
        shape = [-1 if d is None else d for d in dims]
        shape[axis : axis + 2] = [-1 if dims[axis] is None else 2 * dims[axis]]
    else:
        dynamic = ops.shape(both)
        shape = [*dynamic[:axis], dynamic[axis] * 2, *dynamic[axis + 2 :]]
    return ops.reshape(both, shape)


@register
class TrilinearUpSampling3D(keras.layers.Layer):
    """2x trilinear upsampling of a volume (half-pixel centres, edge clamp).

    The 3-D counterpart of ``keras.layers.UpSampling2D(2, interpolation=
    "bilinear")``, which ``keras.layers.UpSampling3D`` (nearest only) lacks:
    each spatial axis is doubled by linear interpolation, output ``2i``
    taking ``0.75 x[i] + 0.25 x[i - 1]`` and ``2i + 1`` taking ``0.75 x[i] +
    0.25 x[i + 1]``, the first and last entries repeated at the borders.

    Args:
        data_format: ``"channels_last"`` or ``"channels_first"``; ``None``
            takes ``keras.config.image_data_format()``.
        **kwargs: base ``Layer`` arguments.

    Input shape:
        ``(batch, depth, height, width, channels)`` (or channels first).

    Output shape:
        Every spatial size doubled.

    Raises:
        ValueError: for an unknown ``data_format`` or an input not of rank 5.

    Example:
        >>> TrilinearUpSampling3D()(keras.ops.ones((1, 2, 3, 4, 5))).shape
        (1, 4, 6, 8, 5)
    """

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = _checks.standardize_data_format(data_format)
        self.input_spec = keras.layers.InputSpec(ndim=5)

    def call(self, inputs):
        x = inputs
        for axis in _checks.spatial_axes(self.data_format, 5):
            x = _linear_upsample_2x(x, axis)
        return x

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        for axis in _checks.spatial_axes(self.data_format, 5):
            shape[axis] = None if shape[axis] is None else 2 * shape[axis]
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config["data_format"] = self.data_format
        return config
