"""Initialisers of keras_ssr's learnable weights."""

from __future__ import annotations

import keras

from keras_ssr import ops as ssr_ops
from keras_ssr._serialization import register

__all__ = [
    "GaussianKernel",
]


@register
class GaussianKernel(keras.initializers.Initializer):
    """The original's Gaussian kernel for Xu et al.'s learnable measures.

    Fills a square ``(s, s)`` weight with :func:`keras_ssr.ops.gaussian_kernel`
    (normalised to sum 1, evaluated on the original's grid, which is off
    centre for even ``s``).

    Args:
        sigma: standard deviation of the Gaussian, in cells; ``None`` takes
            ``s / 2`` from the shape, as the original does.

    Example:
        >>> GaussianKernel()((3, 3)).shape
        (3, 3)
    """

    def __init__(self, sigma: float | None = None):
        if sigma is not None and not float(sigma) > 0:
            raise ValueError(f"`sigma` must be positive. Received: sigma={sigma!r}")
        self.sigma = None if sigma is None else float(sigma)

    def __call__(self, shape, dtype=None):
        shape = tuple(shape)
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(
                f"GaussianKernel fills square 2-D weights. Received: shape={shape}"
            )
        kernel = ssr_ops.gaussian_kernel(shape[0], self.sigma)
        return keras.ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {"sigma": self.sigma}
