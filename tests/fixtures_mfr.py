"""The recorded numbers of the follow-up's TF 2.14 implementation.

``tests/data/reference_mfr_tf214`` is a copy of the fixtures recorded by
running ``miguelmartins/multifractal-recalibration`` under TensorFlow 2.14.1
(see its README). Every layer case also holds ``f64.<array>``, the same
maths evaluated independently in float64: an array agrees when it meets
the fixtures' rule against the recorded array **or** against that twin.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from tests.fixtures import RTOL, error

DATA = pathlib.Path(__file__).parent / "data" / "reference_mfr_tf214"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
CASES = {case["case"]: case for case in MANIFEST["cases"] if "case" in case}
LAYER_CASES = sorted(name for name, case in CASES.items() if "layer" in case)


def load(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest entry and the arrays of case ``name``."""
    case = CASES[name]
    with np.load(DATA / case["file"]) as arrays:
        return case, {key: arrays[key] for key in arrays.files}


def _either(actual, arrays, key) -> float:
    errors = [error(actual, arrays[key])]
    if "f64." + key in arrays:
        errors.append(error(actual, arrays["f64." + key]))
    return min(errors)


def assert_agrees(actual, arrays, key: str, what: str) -> float:
    """The rule against ``arrays[key]`` or ``arrays["f64." + key]``; the error."""
    actual = np.asarray(actual)
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values"
    err = _either(actual, arrays, key)
    assert err <= RTOL, f"{what}: error {err:.3g} > {RTOL:g} (recorded and f64)"
    return err


def assert_agrees_per_channel(actual, arrays, key, what, skip_channels=()) -> float:
    """The rule per channel (last axis), finiteness only on ``skip_channels``."""
    actual = np.asarray(actual)
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values"
    worst = 0.0
    for channel in range(actual.shape[-1]):
        if channel in skip_channels:
            continue
        sliced = {k: v[..., channel] for k, v in arrays.items() if k.endswith(key)}
        worst = max(
            worst,
            assert_agrees(actual[..., channel], sliced, key, f"{what}[ch {channel}]"),
        )
    return worst


def constant_channels(case: dict) -> tuple[int, ...]:
    """Channels whose input is constant over the batch (finiteness only)."""
    return (0,) if case.get("input_kind") == "with_constant_channel" else ()
