"""keras_ssr._checks: each check names the argument and the value it received."""

from __future__ import annotations

import pytest

from keras_ssr import _checks
from keras_ssr import testing as kt


def test_check_bool():
    assert _checks.check_bool("flag", True) is True
    assert _checks.check_bool("flag", False) is False
    for value in (1, 0, "yes", None, 1.0):
        kt.check_bad_argument(
            lambda v=value: _checks.check_bool("flag", v),
            "flag",
            value,
            error=TypeError,
        )


def test_check_int_sequence():
    assert _checks.check_int_sequence("sizes", [3, 4]) == (3, 4)
    assert _checks.check_int_sequence("sizes", (0, 2), 0, length=2) == (0, 2)
    cases = [
        ("34", TypeError),
        (34, TypeError),
        ((3, True), TypeError),
        ((3, 2.0), TypeError),
        ((3, 0), ValueError),
        ((), ValueError),
        ((1, 2, 3), ValueError),  # length=2 below
    ]
    for value, error in cases:
        kt.check_bad_argument(
            lambda v=value: _checks.check_int_sequence("sizes", v, length=2),
            "sizes",
            value,
            error=error,
        )
    with pytest.raises(ValueError, match="at least 2 channels"):
        _checks.check_int_sequence("c", [4], min_length=2, what="channels")
