"""The paper's splits: K contiguous folds, the validation tail of each."""

from __future__ import annotations

import numpy as np

from keras_ssr import _checks

__all__ = ["fold_splits", "kfold_indices", "validation_split"]


def kfold_indices(n: int, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """K-fold split without shuffling: ``[(train_indices, test_indices), ...]``.

    Fold ``k`` tests on the ``k``-th contiguous chunk of ``range(n)``; the
    first ``n % folds`` chunks have ``n // folds + 1`` samples, the others
    ``n // folds`` (scikit-learn's ``KFold(folds, shuffle=False)``). The
    training indices are the rest, in increasing order.

    Args:
        n: number of samples, at least ``folds``.
        folds: number of folds, at least 2.

    Returns:
        A list of ``folds`` pairs of ``int64`` arrays.

    Raises:
        ValueError: if ``folds < 2`` or ``n < folds``.
        TypeError: if an argument is not an integer.

    Example:
        >>> [test.tolist() for _, test in kfold_indices(5, 2)]
        [[0, 1, 2], [3, 4]]
    """
    folds = _checks.check_int("folds", folds, 2)
    n = _checks.check_int("n", n, 0)
    if n < folds:
        raise ValueError(
            f"Cannot split {n} samples into {folds} folds: need n >= folds. "
            f"Received: n={n}, folds={folds}"
        )
    sizes = np.full(folds, n // folds, dtype=np.int64)
    sizes[: n % folds] += 1
    stops = np.cumsum(sizes)
    indices = np.arange(n, dtype=np.int64)
    out = []
    for stop, size in zip(stops, sizes):
        start = stop - size
        out.append(
            (np.concatenate([indices[:start], indices[stop:]]), indices[start:stop])
        )
    return out


def validation_split(
    train_indices: np.ndarray, fraction: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Splits a training fold into ``(fit, validation)``: validation is the tail.

    The last ``int(len(train_indices) * fraction)`` indices (the original's
    ``dev_size``) are for validation, the others for fitting.

    Args:
        train_indices: the training fold's indices, in order.
        fraction: the held-out fraction, in ``(0, 1)``.

    Returns:
        ``(fit_indices, validation_indices)``.

    Raises:
        ValueError: if ``fraction`` is not in ``(0, 1)``.

    Example:
        >>> fit, val = validation_split(np.arange(20), 0.1)
        >>> val.tolist()
        [18, 19]
    """
    fraction = _checks.check_real("fraction", fraction, 0.0, 1.0, open_minimum=True)
    if fraction >= 1.0:
        raise ValueError(f"`fraction` must be in (0, 1). Received: fraction={fraction}")
    train_indices = np.asarray(train_indices)
    size = int(len(train_indices) * fraction)
    cut = len(train_indices) - size
    return train_indices[:cut], train_indices[cut:]


def fold_splits(n: int, folds: int, val_fraction: float) -> list[dict[str, np.ndarray]]:
    """Every fold's ``{"fit", "val", "test"}`` indices, checked non-empty.

    Raises:
        ValueError: if some fold would have nothing to fit or to validate.
    """
    splits = []
    for k, (train, test) in enumerate(kfold_indices(n, folds)):
        fit, val = validation_split(train, val_fraction)
        if len(val) == 0 or len(fit) == 0:
            raise ValueError(
                f"Fold {k} has {len(train)} training samples, so "
                f"int({len(train)} * val_fraction) leaves "
                f"{len(fit)} to fit and {len(val)} to validate. Use more "
                "samples, fewer folds or another val_fraction. Received: "
                f"n={n}, folds={folds}, val_fraction={val_fraction}"
            )
        splits.append({"fit": fit, "val": val, "test": test})
    return splits
