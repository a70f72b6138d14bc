"""Seeded random flips of image and mask together, without ``tf.data``.

The follow-up's protocol flips every training batch at random, horizontally
and vertically, image and mask alike, anew every epoch. :class:`FlipDataset`
does that as a ``keras.utils.PyDataset`` of NumPy arrays, so it runs on every
backend. Each sample is flipped left-right with probability 1/2 and
up-down with probability 1/2, independently; the draws depend only on
``(seed, epoch, batch index)``, so a fold sees the same flips whatever the
order in which Keras asks for the batches.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from keras_ssr import _checks

__all__ = ["FlipDataset"]


class FlipDataset(keras.utils.PyDataset):
    """Batches of ``(x, y)`` with random horizontal and vertical flips.

    Args:
        x: images, ``(N, H, W, C)`` or ``(N, C, H, W)``.
        y: masks, the same layout and spatial size.
        batch_size: samples per batch (the last batch may be smaller).
        seed: the seed of the flips (and of the order, with ``shuffle``).
        data_format: ``"channels_last"`` or ``"channels_first"``.
        shuffle: visit the samples in a new seeded order every epoch;
            otherwise in order (the follow-up's unshuffled pipeline).
        flip: draw the flips; ``False`` gives the batches unflipped (the
            seeded order alone, used by ``--distribute`` without
            augmentation).
        **kwargs: ``keras.utils.PyDataset``'s (``workers``, ...).

    Example:
        >>> x = np.arange(8, dtype="float32").reshape(2, 2, 2, 1)
        >>> batch_x, batch_y = FlipDataset(x, x > 3, batch_size=2, seed=0)[0]
        >>> bool(np.all((batch_x > 3) == batch_y))
        True
    """

    def __init__(
        self,
        x,
        y,
        batch_size: int,
        seed: int = 0,
        data_format: str = "channels_last",
        shuffle: bool = False,
        flip: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.x, self.y = np.asarray(x), np.asarray(y)
        if self.x.ndim != 4 or self.y.ndim != 4 or len(self.x) != len(self.y):
            raise ValueError(
                "`x` and `y` must be batches of images and masks of rank 4 with "
                f"as many samples. Received: x.shape={self.x.shape}, "
                f"y.shape={self.y.shape}"
            )
        self.data_format = _checks.standardize_data_format(data_format)
        self._rows, self._cols = _checks.spatial_axes(self.data_format, 4)
        spatial = slice(self._rows, self._cols + 1)
        if self.x.shape[spatial] != self.y.shape[spatial]:
            raise ValueError(
                "`x` and `y` must have the same spatial size. Received: "
                f"x.shape={self.x.shape}, y.shape={self.y.shape}"
            )
        self.batch_size = _checks.check_int("batch_size", batch_size, 1)
        self.seed = _checks.check_int("seed", seed, 0)
        self.shuffle = bool(shuffle)
        self.flip = _checks.check_bool("flip", flip)
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.x))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))

    def _rows_of(self, index: int) -> np.ndarray:
        return self._order()[index * self.batch_size : (index + 1) * self.batch_size]

    def flips(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The batch's ``(left_right, up_down)`` draws, one bool per sample."""
        size = len(
            self._order()[index * self.batch_size : (index + 1) * self.batch_size]
        )
        rng = np.random.default_rng([self.seed, self.epoch, index])
        draws = rng.random((2, size)) < 0.5
        return draws[0], draws[1]

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range [0, {len(self)})")
        rows = self._rows_of(index)
        x, y = self.x[rows].copy(), self.y[rows].copy()
        if not self.flip:
            return x, y
        left_right, up_down = self.flips(index)
        for array in (x, y):
            array[left_right] = np.flip(array[left_right], axis=self._cols)
            array[up_down] = np.flip(array[up_down], axis=self._rows)
        return x, y

    def on_epoch_end(self) -> None:
        self.epoch += 1
