"""The ``>>>`` examples in keras_ssr's docstrings run, and print what they say.

Each docstring with examples is one test. They run once, in the JAX session:
the examples print shapes as tuples, which JAX's arrays give (TensorFlow and
torch print their own shape classes), and the maths is the same code on
every backend.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import keras
import numpy as np
import pytest

import keras_ssr
from keras_ssr import models
from keras_ssr.models import registry

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="the docstring examples run once, in the JAX session",
)

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# Examples are written as in Keras' docs: `keras`, `np` and keras_ssr's public
# names are at hand.
GLOBS = {
    "keras": keras,
    "keras_ssr": keras_ssr,
    "np": np,
    **{name: getattr(models, name) for name in models.__all__},
}

# Examples that read a file the reader has and the tests do not; the functions
# are tested on real files in tests/test_load_weights.py and the porting tests.
NEEDS_A_FILE = {
    "keras_ssr.porting.h5.read_h5_weights": "reads the user's ssr_unet.h5",
    "keras_ssr.porting.loading.load_weights": "reads the user's weight files",
    "keras_ssr.porting.tensorbundle.read_checkpoint_weights": "reads a TF checkpoint",
}


def _module_names() -> list[str]:
    names = [keras_ssr.__name__]
    for info in pkgutil.walk_packages(keras_ssr.__path__, keras_ssr.__name__ + "."):
        names.append(info.name)
    return sorted(names)


def _doctests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = {}
    for name in _module_names():
        module = importlib.import_module(name)
        for test in finder.find(module, name):
            # A name re-exported by a package is found twice: keep one.
            if test.examples and test.name.startswith(module.__name__):
                tests.setdefault((test.filename, test.lineno), test)
    return sorted(tests.values(), key=lambda t: t.name)


DOCTESTS = _doctests() if keras.backend.backend() == "jax" else []


def test_the_package_has_docstring_examples():
    assert sum(len(t.examples) for t in DOCTESTS) >= 18


@pytest.mark.parametrize("test", DOCTESTS, ids=[t.name for t in DOCTESTS])
def test_docstring_example(test, tmp_path, monkeypatch):
    if test.name in NEEDS_A_FILE:
        pytest.skip(f"the example {NEEDS_A_FILE[test.name]}")
    test.globs = {**GLOBS, **test.globs}
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    # Examples may register attention names: keep them out of later tests.
    monkeypatch.setattr(registry, "_ATTENTION", dict(registry._ATTENTION))
    keras.utils.set_random_seed(0)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = []
    runner.run(test, out=report.append, clear_globs=True)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, "".join(report)
