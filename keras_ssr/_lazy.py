"""Public names of a package, imported on first use (PEP 562).

``keras-ssr --help`` must not load Keras and a backend (seconds of imports
and log banners), yet Python runs ``keras_ssr/__init__.py``, and
``keras_ssr/cv/__init__.py``, before any module inside them. Those packages
therefore name what they export and where it lives, and :func:`attach`
imports a name's module the first time the name is used:
``from keras_ssr import SqueezeExcite`` and ``keras_ssr.layers`` work as
before.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence


def attach(
    package: str, exports: Mapping[str, str], submodules: Sequence[str] = ()
) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` of a lazy package.

    Args:
        package: the package's ``__name__``.
        exports: each public name (``__all__``) and the submodule, relative
            to the package, that defines it; a submodule exported under its
            own name maps to itself.
        submodules: further submodules reachable as attributes
            (``keras_ssr.cv.runner``), as after an eager import of them,
            but not in ``__all__``.

    Returns:
        ``(__getattr__, __dir__, __all__)`` for the package's namespace.
    """
    where = {**{name: name for name in submodules}, **exports}

    def __getattr__(name: str):
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        loaded = importlib.import_module(f"{package}.{module}")
        value = loaded if module == name else getattr(loaded, name)
        setattr(sys.modules[package], name, value)  # later uses skip this hook
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__, sorted(exports)
