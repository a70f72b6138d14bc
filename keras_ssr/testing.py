"""The Keras layer contract, as checks you can run on any layer.

keras_ssr's own layers are tested with these functions, and they work for a
layer of your own, for example one you hand to
:func:`keras_ssr.models.register_attention`. :func:`check_layer` runs them
all; each ``check_*`` function runs one and raises ``AssertionError`` with a
message saying what broke. They need NumPy and Keras only (no pytest), on
every backend.

A layer is given as a *factory* (a layer class, or any callable returning a
new layer) and the keyword arguments to call it with; the checks build fresh
layers from it as they need them, passing ``dtype=`` for the mixed-precision
check. The contract:

- **config**: ``get_config`` holds every constructor argument,
  ``from_config`` rebuilds an equal layer, and the serialised layer survives
  a JSON round trip (the class must be registered with
  ``keras.saving.register_keras_serializable``);
- **build**: ``build(input_shape)`` builds the layer; a layer with a
  ``semantic_variables()`` method (as keras_ssr's have) names each of its
  weights exactly once;
- **call**: ``compute_output_shape``, a symbolic call on a ``keras.Input``
  and an eager call on an array all give the output shape the caller
  expects (``expected_output_shape``), and finite values;
- **save**: a model holding the layer, saved to ``.keras`` and reloaded,
  gives identical outputs;
- **fit**: one ``fit`` step (XLA-compiled on TensorFlow and JAX, eager on
  torch) gives a finite loss and moves the trainable weights;
- **mixed_precision**: under ``mixed_float16`` and ``mixed_bfloat16``, with
  the float32 layer's weights, the output has the policy's compute dtype and
  stays within a relative tolerance of float32 (inference, and training
  when ``call`` takes ``training``).

:func:`check_bad_argument` checks the other half of a layer's interface:
that bad input raises a ``ValueError`` or ``TypeError`` whose message names
the argument and the value received.

Example:
    >>> import keras_ssr.testing as kt
    >>> config = kt.check_config_round_trip(keras_ssr.SqueezeExcite, {"r": 2})
    >>> errors = kt.check_layer(
    ...     keras_ssr.SqueezeExcite,
    ...     (2, 8, 8, 4),
    ...     {"r": 2},
    ...     expected_output_shape=(2, 8, 8, 4),
    ... )
    >>> sorted(errors)[0]
    'mixed_bfloat16/inference'
    >>> kt.check_bad_argument(lambda: keras_ssr.SqueezeExcite(r=0), "r", 0)
    ValueError('`r` must be >= 1. Received: r=0')
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import keras
import numpy as np

__all__ = [
    "CHECKS",
    "MIXED_POLICIES",
    "MIXED_PRECISION_TOLERANCE",
    "check_bad_argument",
    "check_build",
    "check_config_round_trip",
    "check_fit_step",
    "check_layer",
    "check_mixed_precision",
    "check_save_and_reload",
    "check_symbolic_and_eager",
    "random_input",
]

#: The checks :func:`check_layer` runs, in order.
CHECKS = ("config", "build", "call", "save", "fit", "mixed_precision")
#: The 16-bit policies the mixed-precision check runs under.
MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")
#: ``max|mixed - float32| / max|float32|`` allowed by the mixed-precision check.
MIXED_PRECISION_TOLERANCE = 2e-2

LayerFactory = Callable[..., keras.layers.Layer]
_NOTHING = object()


def _fail(message: str):
    raise AssertionError(message)


def _numpy(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


def random_input(shape, seed: int = 0, dtype: str = "float32") -> np.ndarray:
    """A standard-normal array of ``shape`` from a seeded NumPy generator."""
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def _make(factory: LayerFactory, init_kwargs, **extra) -> keras.layers.Layer:
    layer = factory(**dict(init_kwargs or {}), **extra)
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(
            "`layer_factory` must be a layer class or a callable returning a "
            f"keras.layers.Layer; it returned {layer!r}. "
            f"Received: layer_factory={factory!r}"
        )
    return layer


def _name(factory) -> str:
    return getattr(factory, "__name__", repr(factory))


def _as_json(value):
    """``value`` as it comes back from JSON (tuples become lists, ...)."""
    return json.loads(json.dumps(value, default=str))


def _accepts_training(layer) -> bool:
    return "training" in inspect.signature(layer.call).parameters


def _model(factory, init_kwargs, input_shape) -> keras.Model:
    inputs = keras.Input(shape=tuple(input_shape)[1:])
    return keras.Model(inputs, _make(factory, init_kwargs)(inputs))


def check_config_round_trip(
    layer_factory: LayerFactory, init_kwargs: Mapping[str, Any] | None = None
) -> dict:
    """Checks ``get_config`` / ``from_config`` and the JSON round trip.

    When ``layer_factory`` is a class, every key of ``init_kwargs`` must be
    in the config with the value given.

    Returns:
        The layer's config.
    """
    init_kwargs = dict(init_kwargs or {})
    layer = _make(layer_factory, init_kwargs)
    cls = type(layer)
    config = layer.get_config()
    if isinstance(layer_factory, type):
        for key, value in init_kwargs.items():
            if key not in config:
                _fail(f"{cls.__name__}.get_config() lost the argument {key!r}")
            if _as_json(config[key]) != _as_json(value):
                _fail(
                    f"{cls.__name__}.get_config() has {key}={config[key]!r}; "
                    f"the layer was made with {key}={value!r}"
                )
    clone = cls.from_config(config)
    if _as_json(clone.get_config()) != _as_json(config):
        _fail(
            f"{cls.__name__}.from_config(config).get_config() differs from config: "
            f"{clone.get_config()!r} != {config!r}"
        )
    _check_registered(cls)
    serialized = json.dumps(keras.saving.serialize_keras_object(layer))
    try:
        restored = keras.saving.deserialize_keras_object(json.loads(serialized))
    except (TypeError, ValueError) as error:
        _fail(
            f"{cls.__name__} does not deserialise from JSON ({error}); register the "
            "class with @keras.saving.register_keras_serializable(package=...)"
        )
    if type(restored) is not cls:
        _fail(f"JSON round trip gave a {type(restored).__name__}, not a {cls.__name__}")
    if _as_json(restored.get_config()) != _as_json(config):
        _fail(f"{cls.__name__}: the config changed in the JSON round trip")
    return config


def _check_registered(cls) -> None:
    """A class from outside Keras must be registered to load from ``.keras``.

    Asked of the registry itself: Keras 3.8 also finds an unregistered class
    by importing its module, which later Keras no longer does (3.15 loads
    only Keras' own modules that way), so the JSON round trip alone would pass
    such a layer on an old Keras only.
    """
    if cls.__module__.split(".")[0] == "keras":
        return
    registered = keras.saving.get_registered_object(
        keras.saving.get_registered_name(cls)
    )
    if registered is not cls:
        _fail(
            f"{cls.__name__} is not registered; register the class with "
            "@keras.saving.register_keras_serializable(package=...)"
        )


def check_build(
    layer_factory: LayerFactory,
    input_shape,
    init_kwargs: Mapping[str, Any] | None = None,
) -> keras.layers.Layer:
    """Checks ``build(input_shape)``, and the semantic names when there are any.

    A layer with a ``semantic_variables()`` method must name every one of
    its weights exactly once there.

    Returns:
        The built layer.
    """
    layer = _make(layer_factory, init_kwargs)
    layer.build(tuple(input_shape))
    if not layer.built:
        _fail(f"{type(layer).__name__}.build({tuple(input_shape)}) left it unbuilt")
    if hasattr(layer, "semantic_variables"):
        named = list(layer.semantic_variables().values())
        if len({id(v) for v in named}) != len(named):
            _fail(f"{type(layer).__name__}: a variable has two semantic names")
        unnamed = [v.path for v in layer.weights if all(v is not n for n in named)]
        if unnamed or len(named) != len(layer.weights):
            _fail(
                f"{type(layer).__name__}.semantic_variables() does not name every "
                f"weight exactly once; unnamed: {unnamed}"
            )
    return layer


def check_symbolic_and_eager(
    layer_factory: LayerFactory,
    input_shape,
    init_kwargs: Mapping[str, Any] | None = None,
    *,
    expected_output_shape,
) -> np.ndarray:
    """Checks ``compute_output_shape``, a symbolic and an eager call against
    the output shape the caller expects.

    Args:
        layer_factory, input_shape, init_kwargs: the layer.
        expected_output_shape: the output shape for ``input_shape``, batch
            axis included, as the caller knows it (as in Keras'
            ``run_layer_test``): not asked of the layer, so that a wrong
            ``compute_output_shape`` cannot vouch for itself.

    Returns:
        The eager output, as a NumPy array.
    """
    input_shape = tuple(input_shape)
    expected = tuple(expected_output_shape)
    layer = _make(layer_factory, init_kwargs)
    name = type(layer).__name__
    promised = tuple(layer.compute_output_shape(input_shape))
    if promised != expected:
        _fail(f"{name}: compute_output_shape {promised} != expected {expected}")
    symbolic = layer(keras.Input(batch_shape=input_shape))
    if tuple(symbolic.shape) != expected:
        _fail(
            f"{name}: symbolic output shape {tuple(symbolic.shape)} "
            f"!= expected {expected}"
        )
    eager = _numpy(layer(random_input(input_shape)))
    if eager.shape != expected:
        _fail(f"{name}: eager output shape {eager.shape} != expected {expected}")
    if not np.all(np.isfinite(eager)):
        _fail(f"{name}: non-finite values in the eager output")
    return eager


def check_save_and_reload(
    layer_factory: LayerFactory,
    input_shape,
    init_kwargs: Mapping[str, Any] | None = None,
    directory: str | os.PathLike | None = None,
) -> None:
    """Checks that a ``.keras`` file of a model holding the layer reloads exactly.

    Batch statistics and weights are first moved off their initial values
    (one training-mode call, then noise on the trainable weights), so that
    the check sees the weights, not the initialisers.

    Args:
        layer_factory, input_shape, init_kwargs: the layer.
        directory: where to write ``model.keras``; a temporary directory
            (removed afterwards) when ``None``.
    """
    if directory is None:
        with tempfile.TemporaryDirectory() as temporary:
            return check_save_and_reload(
                layer_factory, input_shape, init_kwargs, temporary
            )
    model = _model(layer_factory, init_kwargs, input_shape)
    x = random_input(input_shape, seed=1)
    model(x, training=True)
    rng = np.random.default_rng(2)
    for variable in model.trainable_variables:
        noise = 0.01 * rng.normal(size=variable.shape)
        variable.assign((_numpy(variable.value) + noise).astype(variable.dtype))
    before = _numpy(model(x, training=False))
    path = os.path.join(os.fspath(directory), "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    after = _numpy(reloaded(x, training=False))
    np.testing.assert_array_equal(after, before, err_msg="outputs after reload")
    original, inner = model.layers[-1], reloaded.layers[-1]
    if type(inner) is not type(original):
        _fail(f"reloaded a {type(inner).__name__}, not a {type(original).__name__}")
    if _as_json(inner.get_config()) != _as_json(original.get_config()):
        _fail(f"{type(original).__name__}: the config changed on reload")
    return None


class _Batches(keras.utils.PyDataset):
    """One batch ``(x, y)``, served the way training code feeds data."""

    def __init__(self, x, y):
        super().__init__()
        self.batch = (x, y)

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return self.batch


def check_fit_step(
    layer_factory: LayerFactory,
    input_shape,
    init_kwargs: Mapping[str, Any] | None = None,
) -> float:
    """Checks one ``fit`` step: jit-compiled on TensorFlow and JAX, eager on
    torch; on TensorFlow also as a ``tf.function`` graph without XLA. The
    batch comes from a ``keras.utils.PyDataset``, as in most training code,
    so TensorFlow traces it with an unknown batch size.

    Returns:
        The step's (finite) loss (the last one's on TensorFlow).
    """
    backend = keras.backend.backend()
    modes = {"tensorflow": (True, False), "jax": (True,)}.get(backend, (False,))
    for jit_compile in modes:
        model = _model(layer_factory, init_kwargs, input_shape)
        x = random_input(input_shape, seed=3)
        y = np.zeros(tuple(model(x).shape), "float32")
        model.compile(
            optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=jit_compile
        )
        before = [_numpy(v.value).copy() for v in model.trainable_variables]
        history = model.fit(_Batches(x, y), epochs=1, verbose=0)
        loss = float(history.history["loss"][0])
        if not np.isfinite(loss):
            _fail(f"{_name(layer_factory)}: non-finite loss {loss} in a fit step")
        after = [_numpy(v.value) for v in model.trainable_variables]
        if before and all(np.array_equal(a, b) for a, b in zip(after, before)):
            _fail(
                f"{_name(layer_factory)}: a fit step left every trainable weight alone"
            )
    return loss


def check_mixed_precision(
    layer_factory: LayerFactory,
    input_shape,
    init_kwargs: Mapping[str, Any] | None = None,
    policy: str = "mixed_float16",
    training: bool = False,
    tolerance: float = MIXED_PRECISION_TOLERANCE,
) -> float:
    """Checks the layer under a mixed policy against float32 with the same weights.

    The factory is called with ``dtype=policy``. The output must have the
    policy's compute dtype, be finite, and be within ``tolerance``
    (``max|mixed - float32| / max|float32|``) of the float32 layer's.

    Returns:
        The relative error.
    """
    input_shape = tuple(input_shape)
    x = random_input(input_shape, seed=4)
    full = _make(layer_factory, init_kwargs, dtype="float32")
    full.build(input_shape)
    expected = _numpy(full(x, training=training))

    layer = _make(layer_factory, init_kwargs, dtype=policy)
    layer.build(input_shape)
    layer.set_weights(full.get_weights())
    out = layer(x, training=training)
    compute = keras.dtype_policies.DTypePolicy(policy).compute_dtype
    got = keras.backend.standardize_dtype(out.dtype)
    if got != compute:
        _fail(f"{type(layer).__name__} under {policy} returned {got}, not {compute}")
    out = _numpy(keras.ops.cast(out, "float32"))
    if not np.all(np.isfinite(out)):
        _fail(f"{type(layer).__name__}: non-finite values under {policy}")
    error = float(np.max(np.abs(out - expected)) / max(np.max(np.abs(expected)), 1e-30))
    if error > tolerance:
        _fail(
            f"{type(layer).__name__} under {policy} (training={training}): relative "
            f"error {error:.3g} > {tolerance:g}"
        )
    return error


def check_layer(
    layer_factory: LayerFactory,
    input_shape,
    init_kwargs: Mapping[str, Any] | None = None,
    *,
    expected_output_shape=None,
    checks: Iterable[str] = CHECKS,
    policies: Iterable[str] = MIXED_POLICIES,
    tolerance: float = MIXED_PRECISION_TOLERANCE,
    directory: str | os.PathLike | None = None,
) -> dict[str, float]:
    """Runs the layer contract (see the module docstring) on one layer.

    Args:
        layer_factory: a layer class, or a callable returning a new layer,
            that accepts ``init_kwargs`` (and ``dtype=`` for the
            mixed-precision check).
        input_shape: the full input shape, batch axis included; keep it
            small (a batch of 2, a few pixels, a few channels).
        init_kwargs: keyword arguments of the factory.
        expected_output_shape: the output shape for ``input_shape``, batch
            axis included, which the call check asserts (required when
            ``checks`` holds ``"call"``).
        checks: the checks to run, a subset of :data:`CHECKS`.
        policies: the mixed policies of the mixed-precision check.
        tolerance: its relative tolerance.
        directory: where the save check writes (a temporary directory when
            ``None``).

    Returns:
        ``{"<policy>/inference": error, "<policy>/training": error}``: the
        mixed-precision errors measured (empty if that check did not run).

    Raises:
        AssertionError: naming the first check that fails.
        ValueError: for an unknown check name, or no
            ``expected_output_shape`` for the call check.

    Example:
        >>> import keras_ssr.testing as kt
        >>> errors = kt.check_layer(
        ...     keras_ssr.SqueezeExcite, (2, 8, 8, 4), {"r": 2}, checks=("config",)
        ... )
    """
    checks = tuple(checks)
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise ValueError(
            f"`checks` must be a subset of {CHECKS}. Received: checks={checks!r}"
        )
    if "call" in checks and expected_output_shape is None:
        raise ValueError(
            "The call check needs the output shape the layer should give: pass "
            "`expected_output_shape`. Received: expected_output_shape=None"
        )
    input_shape = tuple(input_shape)
    errors: dict[str, float] = {}
    if "config" in checks:
        check_config_round_trip(layer_factory, init_kwargs)
    if "build" in checks:
        check_build(layer_factory, input_shape, init_kwargs)
    if "call" in checks:
        check_symbolic_and_eager(
            layer_factory,
            input_shape,
            init_kwargs,
            expected_output_shape=expected_output_shape,
        )
    if "save" in checks:
        check_save_and_reload(layer_factory, input_shape, init_kwargs, directory)
    if "fit" in checks:
        check_fit_step(layer_factory, input_shape, init_kwargs)
    if "mixed_precision" in checks:
        modes = [False]
        if _accepts_training(_make(layer_factory, init_kwargs)):
            modes.append(True)
        for policy in policies:
            for training in modes:
                key = f"{policy}/{'training' if training else 'inference'}"
                errors[key] = check_mixed_precision(
                    layer_factory, input_shape, init_kwargs, policy, training, tolerance
                )
    return errors


def check_bad_argument(
    call: Callable[[], Any],
    argument: str,
    value: Any = _NOTHING,
    *,
    error: type[Exception] | tuple[type[Exception], ...] = (ValueError, TypeError),
) -> Exception:
    """Checks that ``call()`` rejects bad input with a message naming it.

    Args:
        call: a function of no arguments that should raise, for example
            ``lambda: MyLayer(ratio=0)`` or ``lambda: layer(int_tensor)``.
        argument: the argument's name; the message must contain it.
        value: when given, the message must contain ``f"{argument}={value!r}"``
            (Keras' ``"Received: ratio=0"`` style).
        error: the exception class(es) expected, by default ``ValueError``
            or ``TypeError``.

    Returns:
        The exception raised, for further checks.

    Raises:
        AssertionError: if nothing is raised, or the message does not name
            the argument (and value). Any other exception propagates.
    """
    try:
        call()
    except error as raised:
        message = str(raised)
        wanted = argument if value is _NOTHING else f"{argument}={value!r}"
        if wanted not in message:
            _fail(f"the {type(raised).__name__} does not say {wanted!r}: {message!r}")
        return raised
    names = error if isinstance(error, tuple) else (error,)
    expected = " or ".join(e.__name__ for e in names)
    _fail(f"no {expected} raised for a bad {argument!r}")
