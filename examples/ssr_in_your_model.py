"""Put Singularity Strength Recalibration (SSR) into a model of your own.

SSR is an ordinary Keras layer: it takes a feature map and returns one of the
same shape whose channels are rescaled by gates computed from their local
singularity strength (a multifractal descriptor of texture regularity). Put
it wherever you would put a Squeeze-and-Excitation block: after a
convolutional block, before pooling or a skip connection.

This script shows two ways, and trains each model for one step on random
data, on whatever backend ``KERAS_BACKEND`` selects:

1. a small custom CNN with SSR after each convolutional block;
2. a ``keras.applications`` backbone (VGG16) rebuilt with SSR inserted after
   its first blocks. The backbone's own layer objects are reused, so with
   ``weights="imagenet"`` the pretrained weights come along (here
   ``weights=None`` avoids a download).

Run:
    KERAS_BACKEND=jax python examples/ssr_in_your_model.py [--quick] [--models cnn]

Notes:
    * ``max_scale`` dyadic box sizes ``2 .. 2**max_scale`` are used: give SSR
      feature maps at least that large (8x8 for the default 3).
    * The original SSR takes the min/max of each channel over the whole
      batch; ``scaling="sample"`` makes each sample's output depend on that
      sample only (useful at inference with batches of mixed images).
"""

from __future__ import annotations

import argparse

import keras
import numpy as np

from keras_ssr import SingularityStrengthRecalibration

SSR = SingularityStrengthRecalibration


def small_cnn(input_shape, n_classes: int, r: int = 2, max_scale: int = 3):
    """A 3-block CNN classifier with SSR after every block."""
    inputs = keras.Input(input_shape)
    x = inputs
    for i, filters in enumerate((16, 32, 64)):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = SingularityStrengthRecalibration(r, max_scale, name=f"ssr_{i}")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="small_cnn_ssr")


def vgg16_with_ssr(
    input_shape,
    n_classes: int,
    blocks=("block1", "block2", "block3"),
    r: int = 2,
    max_scale: int = 3,
    weights=None,
):
    """VGG16 with an SSR layer after the convolutions of each of ``blocks``.

    VGG16 is a chain of layers, so inserting a layer is re-calling the same
    layer objects on a new graph (for backbones with branches, such as
    ResNet, apply SSR to the feature maps you take out of them instead:
    ``backbone.get_layer(name).output``).
    """
    backbone = keras.applications.VGG16(
        include_top=False, weights=weights, input_shape=input_shape
    )
    inputs = keras.Input(input_shape)
    x = inputs
    for layer in backbone.layers[1:]:  # layers[0] is the InputLayer
        block = layer.name.split("_")[0]
        if block in blocks and layer.name == f"{block}_pool":
            # After the block's convolutions, before its pooling.
            x = SingularityStrengthRecalibration(r, max_scale, name=f"{block}_ssr")(x)
        x = layer(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="vgg16_ssr")


def train_one_step(model, input_shape, n_classes: int, batch: int = 4) -> float:
    """Compiles ``model`` and runs one training step on random data."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch, *input_shape)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, n_classes, batch), n_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy"
    )
    before = [np.copy(keras.ops.convert_to_numpy(w)) for w in model.trainable_weights]
    loss = model.train_on_batch(x, y)
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    changed = sum(not np.array_equal(a, b) for a, b in zip(before, after))
    loss = float(np.asarray(loss).ravel()[0])
    ssr_layers = sum(isinstance(layer, SSR) for layer in model.layers)
    print(
        f"{model.name}: {model.count_params():,} parameters, {ssr_layers} SSR "
        f"layers; one step: loss {loss:.4f}, {changed}/{len(before)} trainable "
        "tensors updated"
    )
    return loss


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="32x32 inputs (a smoke test)"
    )
    parser.add_argument(
        "--models",
        choices=("all", "cnn", "vgg16"),
        default="all",
        help="which of the two models to build and train",
    )
    args = parser.parse_args(argv)
    size = 32 if args.quick else 64
    print(f"Keras {keras.__version__} on {keras.backend.backend()}")

    shape = (size, size, 3)
    if args.models in ("all", "cnn"):
        train_one_step(small_cnn(shape, n_classes=3), shape, n_classes=3)
    if args.models in ("all", "vgg16"):
        train_one_step(vgg16_with_ssr(shape, n_classes=3), shape, n_classes=3)


if __name__ == "__main__":
    main()
