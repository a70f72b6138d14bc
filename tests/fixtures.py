"""The recorded numbers of the original TF 2.14 implementation.

``tests/data/reference_tf214`` is a copy of the fixtures recorded by
running ``miguelmartins/ssr`` @ 308317c under TensorFlow 2.14.1 (see its
README). This module loads its cases and states its agreement rule.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

DATA = pathlib.Path(__file__).parent / "data" / "reference_tf214"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
CASES = {case["case"]: case for case in MANIFEST["cases"]}

#: The fixtures' rule: max|actual - expected| <= RTOL * max(1, max|expected|).
RTOL = 1e-4


def load(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest entry and the arrays of case ``name``."""
    case = CASES[name]
    with np.load(DATA / case["file"]) as arrays:
        return case, {key: arrays[key] for key in arrays.files}


def names(kind: str) -> list[str]:
    """Case names whose ``layer``/``op``/``model`` entry is ``kind``."""
    return sorted(
        name
        for name, case in CASES.items()
        if kind in (case.get("layer"), case.get("op"), case.get("model"))
    )


def error(actual, expected) -> float:
    """The fixtures' relative error: ``max|a - e| / max(1, max|e|)``."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {actual.shape} != expected {expected.shape}")
    if actual.size == 0:
        return 0.0
    return float(np.max(np.abs(actual - expected)) / max(1.0, np.max(np.abs(expected))))


def assert_agrees(actual, expected, what: str, rtol: float = RTOL, twin=None) -> float:
    """Asserts the fixtures' agreement rule (and finiteness); returns the error.

    With ``twin`` (the same expected value evaluated independently in
    float64, ``f64.<key>`` of the follow-up's fixtures), ``actual`` agrees
    when it meets the rule against ``expected`` **or** against ``twin``.
    """
    actual = np.asarray(actual)
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values"
    err = error(actual, expected)
    if twin is not None:
        err = min(err, error(actual, twin))
    against = "" if twin is None else " (recorded and f64)"
    assert err <= rtol, f"{what}: error {err:.3g} > {rtol:g}{against}"
    return err


def assert_agrees_per_channel(
    actual, expected, what: str, skip_channels=(), channel_axis: int = -1, twin=None
) -> float:
    """The rule applied to each channel separately (input gradients).

    ``skip_channels`` are checked for finiteness only (a constant channel's
    gradient is rounding noise in the reference too); ``twin`` as in
    :func:`assert_agrees`, channel by channel.
    """
    actual, expected = (
        np.moveaxis(np.asarray(a), channel_axis, -1) for a in (actual, expected)
    )
    if twin is not None:
        twin = np.moveaxis(np.asarray(twin), channel_axis, -1)
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values"
    worst = 0.0
    for channel in range(actual.shape[-1]):
        if channel in skip_channels:
            continue
        err = assert_agrees(
            actual[..., channel],
            expected[..., channel],
            f"{what}[ch {channel}]",
            twin=None if twin is None else twin[..., channel],
        )
        worst = max(worst, err)
    return worst


def constant_channels(case: dict) -> tuple[int, ...]:
    """Channels whose input is constant over the batch (finiteness only)."""
    return (0,) if case.get("input_kind") == "with_constant_channel" else ()
