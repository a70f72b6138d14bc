"""The recorded numbers of the follow-up's TF 2.14 implementation.

``tests/data/reference_mfr_tf214`` is a copy of the fixtures recorded by
running ``miguelmartins/multifractal-recalibration`` under TensorFlow 2.14.1
(see its README). Every layer case also holds ``f64.<array>``, the same
maths evaluated independently in float64: an array agrees when it meets
the fixtures' rule against the recorded array **or** against that twin
(``tests.fixtures.assert_agrees(..., twin=...)``).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

DATA = pathlib.Path(__file__).parent / "data" / "reference_mfr_tf214"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
CASES = {case["case"]: case for case in MANIFEST["cases"] if "case" in case}


def load(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest entry and the arrays of case ``name``."""
    case = CASES[name]
    with np.load(DATA / case["file"]) as arrays:
        return case, {key: arrays[key] for key in arrays.files}
