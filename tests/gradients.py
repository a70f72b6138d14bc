"""Backend-specific autodiff for the tests: one function, three backends.

``vjp(layer, x, cotangent, training)`` runs ``layer`` on ``x`` and returns
its output, the gradient of ``sum(output * cotangent)`` w.r.t. ``x`` and
w.r.t. every trainable variable (keyed by ``variable.path``). Non-trainable
state (BatchNormalization moving statistics) is updated as a training call
would update it, on every backend.

``float64_mode()`` lets float64 stay float64 inside its block: JAX narrows it
to float32 unless x64 is on; the other backends need nothing.
"""

from __future__ import annotations

import contextlib
import inspect

import keras
import numpy as np

from tests.helpers import to_numpy


def float64_mode():
    """A context where JAX computes float64 (a no-op on the other backends).

    ``jax.enable_x64`` on current JAX, which no longer has the experimental
    spelling; ``jax.experimental.enable_x64`` at the floor (JAX 0.4.30).
    """
    if keras.backend.backend() != "jax":
        return contextlib.nullcontext()
    import jax

    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64

    return enable_x64()


def _kw(training):
    return {} if training is None else {"training": training}


def vjp(layer, x, cotangent, training=True):
    backend = keras.backend.backend()
    if not layer.built:
        layer.build(x.shape)
    if "training" not in inspect.signature(layer.call).parameters:
        training = None
    return {"tensorflow": _vjp_tf, "torch": _vjp_torch, "jax": _vjp_jax}[backend](
        layer, np.asarray(x), np.asarray(cotangent), training
    )


def _vjp_tf(layer, x, cotangent, training):
    import tensorflow as tf

    x_t = tf.constant(x)
    variables = layer.trainable_variables
    with tf.GradientTape() as tape:
        tape.watch(x_t)
        y = layer(x_t, **_kw(training))
        loss = tf.reduce_sum(tf.cast(y, cotangent.dtype) * cotangent)
    grads = tape.gradient(loss, [x_t] + [v.value for v in variables])
    return (
        to_numpy(y),
        to_numpy(grads[0]),
        {v.path: to_numpy(g) for v, g in zip(variables, grads[1:])},
    )


def _vjp_torch(layer, x, cotangent, training):
    import torch

    x_t = torch.tensor(x, requires_grad=True)
    variables = layer.trainable_variables
    for v in variables:
        v.value.grad = None
    y = layer(x_t, **_kw(training))
    loss = (
        y.to(torch.float64 if x.dtype == np.float64 else y.dtype)
        * torch.tensor(cotangent)
    ).sum()
    loss.backward()
    grads = {
        v.path: (
            np.zeros(v.shape, x.dtype)
            if v.value.grad is None
            else to_numpy(v.value.grad)
        )
        for v in variables
    }
    return to_numpy(y.detach()), to_numpy(x_t.grad), grads


def _vjp_jax(layer, x, cotangent, training):
    import jax
    import jax.numpy as jnp

    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def loss_fn(trainable, x, non_trainable, cotangent):
        y, new_non_trainable = layer.stateless_call(
            trainable, non_trainable, x, **_kw(training)
        )
        return jnp.sum(y * cotangent), (y, new_non_trainable)

    # One XLA program: eager JAX would compile every primitive separately.
    grad_fn = jax.jit(jax.grad(loss_fn, argnums=(0, 1), has_aux=True))
    (grad_t, grad_x), (y, new_non_trainable) = grad_fn(
        trainable, jnp.asarray(x), non_trainable, jnp.asarray(cotangent)
    )
    for v, value in zip(layer.non_trainable_variables, new_non_trainable):
        v.assign(value)
    return (
        to_numpy(y),
        to_numpy(grad_x),
        {v.path: to_numpy(g) for v, g in zip(layer.trainable_variables, grad_t)},
    )


def vjp_function(fn, x, cotangent):
    """``fn(x)`` and the gradient of ``sum(fn(x) * cotangent)`` w.r.t. ``x``."""
    backend = keras.backend.backend()
    x = np.asarray(x)
    cotangent = np.asarray(cotangent)
    if backend == "tensorflow":
        import tensorflow as tf

        x_t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x_t)
            y = fn(x_t)
            loss = tf.reduce_sum(y * cotangent)
        return to_numpy(y), to_numpy(tape.gradient(loss, x_t))
    if backend == "torch":
        import torch

        x_t = torch.tensor(x, requires_grad=True)
        y = fn(x_t)
        (y * torch.tensor(cotangent)).sum().backward()
        return to_numpy(y.detach()), to_numpy(x_t.grad)
    import jax
    import jax.numpy as jnp

    def forward_and_back(x, cotangent):
        y, pullback = jax.vjp(fn, x)
        return y, pullback(cotangent)[0]

    # One XLA program: eager JAX would compile every primitive separately.
    y, grad = jax.jit(forward_and_back)(jnp.asarray(x), jnp.asarray(cotangent))
    return to_numpy(y), to_numpy(grad)


def compiled(fn):
    """``fn`` as one XLA program on JAX (``jax.jit``), where eager calls
    compile every primitive for every new shape; ``fn`` itself elsewhere."""
    if keras.backend.backend() != "jax":
        return fn
    import jax

    return jax.jit(fn)


def assert_matches_float64_twin(cls, kwargs, layer, x, cotangent, weights, rtol=None):
    """The training-mode output and gradients of ``layer`` (a built float32
    ``cls(**kwargs)`` holding ``weights``, float32 arrays by semantic name)
    against its float64 twin holding the same values: output and weight
    gradients under the fixtures' rule, the input gradient per channel.

    ``rtol`` is the weight gradients' tolerance (default: the fixtures'
    ``RTOL``). Returns the float64 twin.
    """
    from keras_ssr import porting
    from tests import fixtures as fx

    shape = x.shape
    y32, gx32, gw32 = vjp(layer, x, cotangent, training=True)
    with float64_mode():
        layer64 = cls(**kwargs, dtype="float64")
        layer64.build(shape)
        porting.set_layer_weights(
            layer64, {k: v.astype("float64") for k, v in weights.items()}
        )
        y64, gx64, gw64 = vjp(
            layer64, x.astype("float64"), cotangent.astype("float64"), training=True
        )
    assert y64.dtype == np.float64 and gx64.dtype == np.float64

    channel_axis = 1 if kwargs.get("data_format") == "channels_first" else -1
    fx.assert_agrees(y32, y64, "output")
    fx.assert_agrees_per_channel(gx32, gx64, "grad_x", channel_axis=channel_axis)
    names32 = {v.path: n for n, v in layer.semantic_variables().items()}
    names64 = {v.path: n for n, v in layer64.semantic_variables().items()}
    grads64 = {names64[p]: g for p, g in gw64.items()}
    assert len(gw32) == len(grads64) > 0
    for path, grad in gw32.items():
        name = names32[path]
        fx.assert_agrees(grad, grads64[name], f"grad.{name}", rtol=rtol or fx.RTOL)
    return layer64
