"""The keras_ssr test suite, a package so that its shared modules import as
``from tests import helpers`` (pyproject.toml puts the repository root on
pytest's ``pythonpath``)."""
