"""Speed, memory and agreement benchmarks of keras_ssr.

Run ``nox -s bench`` (or ``python -m benchmarks``; ``--help`` lists the
options). Every backend (TensorFlow, PyTorch, JAX) runs in its own process;
with ``--reference-repo PATH`` the original TF 2.14 implementation runs
beside them in its own virtual environment.

This package imports neither Keras nor a backend at import time: its
``measure`` and ``config`` modules are also used by the reference worker,
which runs under TensorFlow 2.14 with ``numpy<2``.
"""
