"""Argument checks shared by the ops and the layers.

Every check raises ``ValueError`` or ``TypeError`` with a message that names
the argument and quotes the value it received, in the style of Keras
(``"... Received: max_scale=1"``).
"""

from __future__ import annotations

import math
import numbers
import unicodedata
import warnings
from collections.abc import Mapping, Sequence

# Keras is imported inside the checks that need it, so that modules which use
# only the plain checks (the command lines' configurations) load no backend.

DATA_FORMATS = ("channels_last", "channels_first")
SCALINGS = ("batch", "sample")
#: The names of :func:`keras_ssr.losses.get_loss` (here, with the other
#: choices, so that a configuration is checked without loading Keras).
LOSS_NAMES = ("ce", "dice", "weighted")
#: Largest ``max_scale`` accepted: boxes up to 65536 cells a side
#: (:data:`keras_ssr.ops.MAX_SCALE_LIMIT`).
MAX_SCALE_LIMIT = 16


def check_int(name: str, value, minimum: int, maximum: int | None = None) -> int:
    """Returns ``value`` as a Python ``int`` within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be an integer. Received: {name}={value!r} "
            f"(of type {type(value).__name__})"
        )
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"`{name}` must be {bounds}. Received: {name}={value}")
    return value


def check_bool(name: str, value) -> bool:
    """Returns ``value`` if it is a ``bool`` (not merely truthy)."""
    if not isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be a bool. Received: {name}={value!r} "
            f"(of type {type(value).__name__})"
        )
    return value


def check_int_sequence(
    name: str,
    value,
    minimum: int = 1,
    *,
    length: int | None = None,
    min_length: int = 1,
    allow_none: bool = False,
    what: str | None = None,
) -> tuple:
    """Returns ``value``, a sequence of integers ``>= minimum``, as a tuple.

    Args:
        name: the argument's name, for the messages.
        value: the sequence (a string is not one).
        minimum: the least each entry may be.
        length: the exact length required, if any.
        min_length: the least length otherwise.
        allow_none: whether entries may be ``None`` (unknown sizes).
        what: what the entries are, for the messages (default "integers
            >= minimum").

    Raises:
        TypeError: if ``value`` is not a sequence or holds a non-integer
            (a ``bool`` included).
        ValueError: for a wrong length or an entry below ``minimum``.
    """
    what = what or f"integers >= {minimum}" + (" or None" if allow_none else "")
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            f"`{name}` must be a sequence of {what}. Received: {name}={value!r}"
        )
    if length is not None and len(value) != length:
        raise ValueError(
            f"`{name}` must hold exactly {length} {what}. Received: {name}={value!r}"
        )
    if len(value) < min_length:
        raise ValueError(
            f"`{name}` must hold at least {min_length} {what}. "
            f"Received: {name}={value!r}"
        )
    for entry in value:
        if entry is None and allow_none:
            continue
        if isinstance(entry, bool) or not isinstance(entry, numbers.Integral):
            raise TypeError(f"`{name}` must hold {what}. Received: {name}={value!r}")
        if entry < minimum:
            raise ValueError(f"`{name}` must hold {what}. Received: {name}={value!r}")
    return tuple(None if v is None else int(v) for v in value)


def check_real(
    name: str,
    value,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    open_minimum: bool = False,
    open_maximum: bool = False,
) -> float:
    """Returns ``value`` as a finite ``float`` within the given bounds.

    ``None`` bounds are unbounded; ``open_minimum``/``open_maximum`` exclude
    the bound itself. NaN and the infinities are always refused, and the
    message writes the accepted interval exactly (``(0.0, inf)``).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a real number. Received: {name}={value!r} "
            f"(of type {type(value).__name__})"
        )
    value = float(value)
    too_low = minimum is not None and (
        value <= minimum if open_minimum else value < minimum
    )
    too_high = maximum is not None and (
        value >= maximum if open_maximum else value > maximum
    )
    if not math.isfinite(value) or too_low or too_high:
        raise ValueError(
            f"`{name}` must be in "
            f"{interval(minimum, maximum, open_minimum, open_maximum)}. "
            f"Received: {name}={value!r}"
        )
    return value


def interval(
    minimum: float | None,
    maximum: float | None,
    open_minimum: bool = False,
    open_maximum: bool = False,
) -> str:
    """The finite reals between two bounds, written as an interval.

    Example:
        >>> interval(0.0, None, open_minimum=True)
        '(0.0, inf)'
        >>> interval(0.0, 1.0)
        '[0.0, 1.0]'
    """
    low = "(-inf" if minimum is None else ("(" if open_minimum else "[") + f"{minimum}"
    high = "inf)" if maximum is None else f"{maximum}" + (")" if open_maximum else "]")
    return f"{low}, {high}"


def check_text(name: str, value, *, control: bool = True) -> str:
    """Returns ``value`` if it is a string that a file name can hold.

    A NUL character is always refused (no file system takes it; ``open``
    would fail with ``embedded null byte``, naming nothing). With
    ``control``, every other control character (a newline, a tab, an escape
    sequence: Unicode category ``Cc``) is refused as well.

    Raises:
        TypeError: if ``value`` is not a string.
        ValueError: for such a character, naming it and its position.
    """
    if not isinstance(value, str):
        raise TypeError(
            f"`{name}` must be a string. Received: {name}={value!r} "
            f"(of type {type(value).__name__})"
        )
    for position, character in enumerate(value):
        if character == "\0" or (control and unicodedata.category(character) == "Cc"):
            what = "a NUL character" if character == "\0" else "a control character"
            raise ValueError(
                f"`{name}` must not contain {what} ({character!r} at position "
                f"{position}). Received: {name}={value!r}"
            )
    return value


def check_choice(
    name: str, value, choices: Sequence[str], renamed: Mapping[str, str] | None = None
) -> str:
    """Returns ``value`` lower-cased if it is one of ``choices``.

    ``renamed`` maps former spellings to their choice: accepted, with a
    ``DeprecationWarning``, and returned as the choice, so that saved
    configurations keep loading.
    """
    if isinstance(value, str) and renamed and value.lower() in renamed:
        new = renamed[value.lower()]
        warnings.warn(
            f"{name}={value!r} is deprecated: it is now spelled {name}={new!r} "
            "(the same choice).",
            DeprecationWarning,
            stacklevel=3,
        )
        value = new
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(
            f"`{name}` must be one of {', '.join(repr(c) for c in choices)}. "
            f"Received: {name}={value!r}"
        )
    return value.lower()


def standardize_data_format(data_format) -> str:
    """Resolves ``None`` to ``keras.config.image_data_format()`` and checks."""
    if data_format is None:
        import keras

        data_format = keras.config.image_data_format()
    return check_choice("data_format", data_format, DATA_FORMATS)


def channel_axis(data_format: str, ndim: int | None = None) -> int:
    """The channel axis of a rank-``ndim`` tensor whose first axis is the batch.

    ``1`` for ``"channels_first"``; ``ndim - 1`` for ``"channels_last"``, or
    ``-1`` when ``ndim`` is ``None``. The one place keras_ssr says where the
    channels are (with :func:`spatial_axes`).
    """
    if data_format == "channels_first":
        return 1
    return -1 if ndim is None else ndim - 1


def spatial_axes(data_format: str, ndim: int) -> tuple[int, ...]:
    """The spatial axes of a rank-``ndim`` tensor whose first axis is the
    batch: every axis but the batch and the channels (:func:`channel_axis`)."""
    channels = channel_axis(data_format, ndim)
    return tuple(a for a in range(1, ndim) if a != channels)


def check_scaling(scaling) -> str:
    return check_choice("scaling", scaling, SCALINGS)


def check_float(name: str, x) -> None:
    """Raises ``TypeError`` unless ``x`` has a floating-point dtype."""
    import keras

    dtype = keras.backend.standardize_dtype(x.dtype)
    if not keras.backend.is_float_dtype(dtype):
        raise TypeError(
            f"`{name}` must be a floating-point tensor. Received: {name}.dtype={dtype}"
        )


def check_shape(
    owner: str,
    shape,
    ranks: Sequence[int],
    data_format: str,
) -> tuple[int, int]:
    """Checks an input shape; returns ``(channel_axis, channels)``.

    ``ranks`` lists the allowed numbers of dimensions, batch and channel
    axes included. The channel dimension must be known.
    """
    shape = tuple(shape)
    if len(shape) not in ranks:
        spatial = ", ".join(f"{r - 2}-D" for r in ranks)
        raise ValueError(
            f"{owner} expects inputs of rank {' or '.join(map(str, ranks))} "
            f"(batch, {spatial} spatial and channel axes). "
            f"Received: input_shape={shape}"
        )
    axis = channel_axis(data_format, len(shape))
    channels = shape[axis]
    if channels is None:
        raise ValueError(
            f"{owner} needs a known channel dimension (axis {axis} for "
            f"data_format={data_format!r}). Received: input_shape={shape}"
        )
    return axis, int(channels)


def wide_float(dtype) -> str:
    """``"float64"`` for float64, else ``"float32"``: the dtype of sensitive maths.

    ``float16``/``bfloat16`` are widened, as Keras does for normalisation.
    (Not ``keras.backend.result_type``, which gives float32 for float64 on
    the torch and JAX backends.)
    """
    import keras

    return (
        "float64" if keras.backend.standardize_dtype(dtype) == "float64" else "float32"
    )
