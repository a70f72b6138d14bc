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


def test_check_real_writes_the_interval_it_accepts():
    # The infinities and NaN are never accepted, so no bound is written "inf]".
    cases = [
        ((0.0, None), {"open_minimum": True}, float("inf"), r"\(0\.0, inf\)"),
        ((0.0, None), {}, -1.0, r"\[0\.0, inf\)"),
        ((0.0, 1.0), {}, 1.5, r"\[0\.0, 1\.0\]"),
        (
            (0.0, 1.0),
            {"open_minimum": True, "open_maximum": True},
            1.0,
            r"\(0\.0, 1\.0\)",
        ),
        ((None, None), {}, float("nan"), r"\(-inf, inf\)"),
        ((None, 2.0), {}, float("-inf"), r"\(-inf, 2\.0\]"),
    ]
    for (low, high), flags, value, interval in cases:
        with pytest.raises(ValueError, match=f"`x` must be in {interval}. Received"):
            _checks.check_real("x", value, low, high, **flags)
    # The bounds themselves, open and closed.
    assert _checks.check_real("x", 1.0, 0.0, 1.0) == 1.0
    assert _checks.check_real("x", 0.0, 0.0, 1.0, open_maximum=True) == 0.0
    with pytest.raises(ValueError, match=r"\(0\.0, 1\.0\)"):
        _checks.check_real("x", 0.0, 0.0, 1.0, open_minimum=True, open_maximum=True)


def test_check_text_names_the_argument_and_the_character():
    assert _checks.check_text("name", "ssr-kvasir 2") == "ssr-kvasir 2"
    assert _checks.check_text("path", "a\nb", control=False) == "a\nb"
    for value, control, what in [
        ("a\x00b", True, r"a NUL character \('\\x00' at position 1\)"),
        ("a\x00b", False, "a NUL character"),
        ("run\n", True, r"a control character \('\\n' at position 3\)"),
        ("x\ty", True, "a control character"),
        ("\x1b[31m", True, "a control character"),
    ]:
        with pytest.raises(ValueError, match=f"`name` must not contain {what}"):
            _checks.check_text("name", value, control=control)
    kt.check_bad_argument(
        lambda: _checks.check_text("name", 3), "name", 3, error=TypeError
    )
