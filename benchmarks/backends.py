"""What differs between TensorFlow, PyTorch and JAX in the benchmarks.

Each :class:`Backend` turns a keras_ssr layer into compiled ``forward`` and
``vjp`` functions for one compile mode, synchronises devices and reads the
allocator's peak memory.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from benchmarks import common, counts, measure


@dataclass
class Compiled:
    """A layer compiled one way.

    ``forward(x) -> y``; ``vjp(x, cotangent) -> (y, grad_x, grads, state)``
    with ``grads`` the gradients of the trainable weights in the order of
    ``names`` and ``state`` the non-trainable values after the call (``None``
    where the layer's variables were updated in place). ``programs``: the
    ``(forward, vjp)`` programs behind them for the counts:
    ``tf.function`` objects on TensorFlow, functions of ``(x[, cotangent])``
    returning the compiled XLA program on JAX.
    """

    forward: Callable
    vjp: Callable
    programs: tuple = ()


def _kwargs(has_training: bool, training: bool) -> dict:
    return {"training": training} if has_training else {}


def _has_training(layer) -> bool:
    return "training" in inspect.signature(layer.call).parameters


class Backend:
    """What differs between TensorFlow, PyTorch and JAX."""

    name = ""

    def setup(self) -> None:
        """float32 throughout: TensorFloat-32 off on GPUs."""

    def device(self) -> dict:
        raise NotImplementedError

    def versions(self) -> dict:
        raise NotImplementedError

    def tensor(self, array: np.ndarray):
        raise NotImplementedError

    def numpy(self, value) -> np.ndarray:
        import keras

        return np.asarray(keras.ops.convert_to_numpy(value))

    def sync(self, out) -> None:
        raise NotImplementedError

    def gpu_hooks(self) -> tuple[Callable | None, Callable | None]:
        return None, None

    def compile_layer(self, layer, mode: str, variables: list) -> Compiled:
        raise NotImplementedError

    def model_jit_compile(self, mode: str) -> bool:
        raise NotImplementedError

    def count(self, compiled: Compiled, mode: str, x, cotangent) -> dict:
        """``{pass: counts}`` of a compiled layer (:mod:`benchmarks.counts`)."""
        raise NotImplementedError


class TensorFlowBackend(Backend):
    name = "tensorflow"

    def setup(self):
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
        self.gpus = tf.config.list_physical_devices("GPU")

    def device(self):
        import tensorflow as tf

        if self.gpus:
            details = tf.config.experimental.get_device_details(self.gpus[0])
            return {"type": "gpu", "name": details.get("device_name", "GPU:0")}
        return {"type": "cpu", "name": measure.cpu_name()}

    def versions(self):
        import tensorflow as tf

        return {"tensorflow": tf.__version__}

    def tensor(self, array):
        import tensorflow as tf

        return tf.constant(array)

    def sync(self, out):
        import tensorflow as tf

        common.tf_sync(tf, self.gpus, out)

    def gpu_hooks(self):
        import tensorflow as tf

        return common.tf_gpu_hooks(tf, self.gpus)

    def compile_layer(self, layer, mode, variables):
        import tensorflow as tf

        xla = mode == "tf.function+XLA"
        has_training = _has_training(layer)

        @tf.function(jit_compile=xla)
        def forward(x):
            return layer(x, **_kwargs(has_training, False))

        @tf.function(jit_compile=xla)
        def vjp_all(x, cotangent):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, **_kwargs(has_training, True))
            grads = tape.gradient(
                y, [x] + [v.value for v in variables], output_gradients=cotangent
            )
            return y, grads[0], grads[1:]  # None where a weight has no gradient

        def run_vjp(x, cotangent):
            y, grad_x, grads = vjp_all(x, cotangent)
            weights = [
                tf.zeros_like(v.value) if g is None else g
                for v, g in zip(variables, grads)
            ]
            return y, grad_x, weights, None

        return Compiled(forward, run_vjp, (forward, vjp_all))

    def model_jit_compile(self, mode):
        return mode == "tf.function+XLA"

    def count(self, compiled, mode, x, cotangent):
        import tensorflow as tf

        out = {}
        for pass_name, program, args in zip(
            ("forward", "forward+backward"), compiled.programs, ((x,), (x, cotangent))
        ):
            if mode == "tf.function+XLA":
                hlo = program.experimental_get_compiler_ir(*args)(stage="optimized_hlo")
                out[pass_name] = counts.hlo_traffic(hlo)
            else:
                out[pass_name] = counts.tf_launches(tf, program, *args)
        return out


class TorchBackend(Backend):
    name = "torch"

    def setup(self):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self.cuda = torch.cuda.is_available()

    def device(self):
        import torch

        if self.cuda:
            return {"type": "gpu", "name": torch.cuda.get_device_name(0)}
        return {
            "type": "cpu",
            "name": measure.cpu_name(),
            "threads": torch.get_num_threads(),
        }

    def versions(self):
        import torch

        return {"torch": torch.__version__}

    def tensor(self, array):
        import torch

        return torch.tensor(array, device="cuda" if self.cuda else "cpu")

    def numpy(self, value):
        return np.asarray(value.detach().cpu().numpy())

    def sync(self, out):
        import torch

        if self.cuda:
            torch.cuda.synchronize()

    def gpu_hooks(self):
        import torch

        if not self.cuda:
            return None, None

        def reset():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

        def peak():
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20

        return reset, peak

    def compile_layer(self, layer, mode, variables):
        import torch

        has_training = _has_training(layer)
        params = [v.value for v in variables]

        def forward(x):
            with torch.no_grad():
                return layer(x, **_kwargs(has_training, False))

        def train(x):
            return layer(x, **_kwargs(has_training, True))

        if mode == "torch.compile":
            # Fresh caches: every layer and shape compiles on its own, and
            # never falls back to eager on dynamo's recompilation limit.
            torch._dynamo.reset()
            forward = torch.compile(forward)
            train = torch.compile(train)

        def vjp(x, cotangent):
            x = x.detach().requires_grad_(True)
            y = train(x)
            grads = torch.autograd.grad(
                y, [x, *params], grad_outputs=cotangent, allow_unused=True
            )
            weights = [
                torch.zeros_like(p) if g is None else g
                for p, g in zip(params, grads[1:])
            ]
            return y.detach(), grads[0], weights, None

        return Compiled(forward, vjp)

    def model_jit_compile(self, mode):
        return mode == "torch.compile"

    def count(self, compiled, mode, x, cotangent):
        out = {}
        for pass_name, call in common.layer_passes(
            compiled.forward, compiled.vjp, x, cotangent
        ):
            with counts.TorchLaunches() as counter:
                result = call()
            del result
            out[pass_name] = {
                "launches": counter.launches,
                "ops": counter.ops,
                "peak_bytes": counter.peak_bytes,
            }
        return out


class JaxBackend(Backend):
    name = "jax"

    def setup(self):
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
        self.platform = jax.devices()[0].platform

    def device(self):
        import jax

        device = jax.devices()[0]
        if self.platform == "cpu":
            return {"type": "cpu", "name": measure.cpu_name()}
        return {"type": self.platform, "name": device.device_kind}

    def versions(self):
        import jax
        import jaxlib

        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}

    def tensor(self, array):
        import jax

        return jax.device_put(array)

    def sync(self, out):
        import jax

        jax.block_until_ready(out)

    def gpu_hooks(self):
        import jax

        if self.platform == "cpu":
            return None, None
        device = jax.devices()[0]

        def peak():
            stats = device.memory_stats() or {}
            value = stats.get("peak_bytes_in_use")
            return None if value is None else value / 2**20

        # XLA's peak cannot be reset: it is the process' peak so far.
        return (lambda: None), peak

    def compile_layer(self, layer, mode, variables):
        import jax

        has_training = _has_training(layer)
        order = [
            next(i for i, v in enumerate(layer.trainable_variables) if v is w)
            for w in variables
        ]

        @jax.jit
        def forward_(trainable, non_trainable, x):
            y, _ = layer.stateless_call(
                trainable, non_trainable, x, **_kwargs(has_training, False)
            )
            return y

        @jax.jit
        def vjp_(trainable, non_trainable, x, cotangent):
            def call(trainable, x):
                return layer.stateless_call(
                    trainable, non_trainable, x, **_kwargs(has_training, True)
                )

            y, pullback, state = jax.vjp(call, trainable, x, has_aux=True)
            grad_t, grad_x = pullback(cotangent)
            return y, grad_x, grad_t, state

        def values():
            return (
                [v.value for v in layer.trainable_variables],
                [v.value for v in layer.non_trainable_variables],
            )

        def forward(x):
            return forward_(*values(), x)

        def vjp(x, cotangent):
            y, grad_x, grad_t, state = vjp_(*values(), x, cotangent)
            return y, grad_x, [grad_t[i] for i in order], state

        def programs(fn):
            return lambda *args: fn.lower(*values(), *args).compile()

        return Compiled(forward, vjp, (programs(forward_), programs(vjp_)))

    def model_jit_compile(self, mode):
        return True

    def count(self, compiled, mode, x, cotangent):
        forward, vjp = compiled.programs
        return {
            "forward": counts.xla_traffic(forward(x)),
            "forward+backward": counts.xla_traffic(vjp(x, cotangent)),
        }


BACKEND_CLASSES = {
    "tensorflow": TensorFlowBackend,
    "torch": TorchBackend,
    "jax": JaxBackend,
}


def get_backend() -> Backend:
    import keras

    backend = BACKEND_CLASSES[keras.backend.backend()]()
    backend.setup()
    return backend


def environment(backend: Backend) -> dict:
    import keras

    import keras_ssr

    return {
        "backend": backend.name,
        "device": backend.device(),
        "versions": {
            "keras": keras.__version__,
            "keras_ssr": keras_ssr.__version__,
            "numpy": np.__version__,
            **backend.versions(),
        },
    }
