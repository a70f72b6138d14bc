"""What the readers and parsers produce, and the checks every weight passes.

A reader lists a file's arrays as :class:`StoredArray`: shape and dtype
from the file's metadata, data read only on demand, so that the loader can
check every shape against the model before it reads anything. A parser maps
each array's name to its :class:`SourceWeight` slot in a U-Net.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np


class WeightFileError(ValueError):
    """A weight file that is damaged or inconsistent.

    Raised by :func:`~keras_ssr.porting.read_h5_weights`,
    :func:`~keras_ssr.porting.read_checkpoint_weights` and
    :func:`~keras_ssr.porting.load_weights` for a file whose structure, or a
    dimension, offset or size it claims, does not hold; the message names the
    file, and the weight where there is one.
    """


@dataclasses.dataclass(frozen=True)
class StoredArray:
    """An array of a weight file, known by shape and dtype before it is read.

    ``read()`` reads the data, checking that the file still holds what its
    metadata claimed; it raises :class:`WeightFileError` naming the file and
    the array otherwise.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    read: Callable[[], np.ndarray]

    @classmethod
    def in_memory(cls, value: np.ndarray) -> StoredArray:
        return cls(tuple(value.shape), value.dtype, lambda: value)


@dataclasses.dataclass(frozen=True)
class SourceWeight:
    """A weight of the source file and its *slot* in a keras_ssr U-Net.

    A slot is ``"<keras_ssr layer name>/<weight>"``: ``"encoder_0_conv_1/
    kernel"``, ``"bottleneck_bn_0/moving_mean"``, ``"head/kernel"``, or for
    an attention layer ``"encoder_0_attention/<semantic name>"``
    (``".../alpha.bn.gamma"``). The original's constant box-sum kernels go to
    ``"encoder_{i}_attention/alpha.box_{j}.kernel"`` / ``".bias"``: checked,
    not stored.
    """

    origin: str  # the name (or checkpoint key) in the source
    slot: str
    value: StoredArray | np.ndarray  # a parser passes on what it is given


def unplaceable(origin: str, why: str) -> ValueError:
    return ValueError(
        f"Cannot place the source's weight {origin!r}: {why}. The source must hold "
        "the weights of the original's get_unet/get_ssr_unet model."
    )


_KINDS = {"b": "boolean", "i": "integer", "u": "unsigned integer", "c": "complex",
          "S": "bytes", "U": "string", "O": "object (string)", "V": "raw or record",
          "M": "datetime", "m": "timedelta"}  # fmt: skip


def check_float_dtype(what: str, dtype) -> None:
    """Raises ValueError, naming ``what``, unless ``dtype`` is floating-point."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(
            f"{what} has dtype {dtype} ({_KINDS.get(dtype.kind, dtype.kind)}); a "
            "weight must be floating-point (float16, float32 or float64)."
        )


def as_weight(what: str, value, dtype) -> np.ndarray:
    """``value`` as a ``dtype`` array, refusing non-float and non-finite values.

    Raises:
        ValueError: naming ``what``, for a non-float dtype, or for NaN or
            infinite values after the conversion (so also for float64 values
            beyond the float32 range).
    """
    value = np.asarray(value)
    check_float_dtype(what, value.dtype)
    with np.errstate(over="ignore"):  # an overflow is reported below
        converted = value.astype(dtype)
    bad = converted.size - int(np.count_nonzero(np.isfinite(converted)))
    if bad:
        raise ValueError(
            f"{what} holds {bad} NaN or infinite value(s) of {converted.size} "
            f"(as {converted.dtype}); a weight must be finite."
        )
    return converted
