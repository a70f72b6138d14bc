"""Import weights trained with the original TF 2.14 SSR code; compare outputs.

The original code (github.com/miguelmartins/ssr) saves weights with
``model.save_weights(path)``: an HDF5 file (``path`` ending in ``.h5``) or a
TF checkpoint (``weights.index`` + ``weights.data-*``; its experiments use
this, through ``ModelCheckpoint``). :func:`keras_ssr.porting.load_weights`
places either into the matching keras_ssr model by name, on any backend,
after checking every shape; the constant box-sum kernels of the original's
SSR are checked and dropped (keras_ssr needs no weights for them).

To check the import, give inputs and the original model's predictions for
them, made where the original code runs, e.g.::

    # in the original's environment (TF 2.14), from its repository root
    import numpy as np
    from models.ssr_unet import get_ssr_unet
    model = get_ssr_unet([32, 64, 128, 256], input_shape=[224, 224, 3],
                         with_bn=False)
    model.load_weights("logs/.../weights")
    x = np.load("inputs.npy")
    np.save("expected.npy", model.predict(x, batch_size=len(x)))

then::

    python examples/import_original_weights.py logs/.../weights \\
        --inputs inputs.npy --expected expected.npy --save ssr_unet.weights.h5

The architecture flags must match the original model: ``--model``,
``--channels-per-level``, ``--input-size``, ``--with-bn`` (the paper's runs used
``with_bn=False``), ``--r`` and ``--max-scale``. SSR normalises over the
whole batch, so predict with the same batch as the original (``--batch``,
default: all inputs at once).

The keras_ssr repository ships a small checkpoint of the original
(``tests/data/reference_tf214/checkpoints/ssr_unet.h5``: SSR-U-Net, levels
4-8-16, 32x32 inputs, ``with_bn=True``)::

    python examples/import_original_weights.py \\
        tests/data/reference_tf214/checkpoints/ssr_unet.h5 \\
        --channels-per-level 4,8,16 --input-size 32 --with-bn
"""

from __future__ import annotations

import argparse
import sys

import keras
import numpy as np

from keras_ssr import models, porting


def build(args) -> keras.Model:
    """The keras_ssr model with the original's architecture."""
    shape = [args.input_size, args.input_size, 3]
    if args.model == "unet":
        return models.get_unet(
            args.channels_per_level, input_shape=shape, with_bn=args.with_bn
        )
    return models.get_ssr_unet(
        args.channels_per_level,
        r=args.r,
        max_scale=args.max_scale,
        input_shape=shape,
        with_bn=args.with_bn,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "weights", help="the original's .h5 file or TF checkpoint (prefix/dir)"
    )
    parser.add_argument("--model", choices=("ssr_unet", "unet"), default="ssr_unet")
    parser.add_argument(
        "--channels-per-level",
        "--levels",
        type=lambda text: [int(v) for v in text.split(",")],
        default=[32, 64, 128, 256],
        help="filters per level (default 32,64,128,256; --levels: its former name)",
    )
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--with-bn", action="store_true")
    parser.add_argument("--r", type=int, default=2)
    parser.add_argument("--max-scale", type=int, default=3)
    parser.add_argument("--inputs", help=".npy inputs (N, H, W, 3)")
    parser.add_argument("--expected", help=".npy predictions of the original")
    parser.add_argument("--batch", type=int, help="prediction batch size")
    parser.add_argument("--save", help="save the weights as a Keras 3 .weights.h5")
    args = parser.parse_args(argv)

    model = build(args)
    mapping = porting.load_weights(model, args.weights)
    print(
        f"Keras {keras.__version__} on {keras.backend.backend()}: loaded "
        f"{len(mapping)} weights into {model.name} "
        f"({model.count_params():,} parameters)"
    )
    for source, target in list(mapping.items())[:3]:
        print(f"  {source}  ->  {target}")
    print("  ...")

    if args.inputs:
        x = np.load(args.inputs).astype("float32")
    else:
        x = np.random.default_rng(0).uniform(
            size=(2, args.input_size, args.input_size, 3)
        )
        x = x.astype("float32")
    predictions = model.predict(x, batch_size=args.batch or len(x), verbose=0)
    print(
        f"predictions: shape {predictions.shape}, range "
        f"[{predictions.min():.4f}, {predictions.max():.4f}]"
    )

    status = 0
    if args.expected:
        expected = np.load(args.expected)
        difference = float(np.max(np.abs(predictions - expected)))
        # The rule of the project's recorded fixtures (float32 round-off).
        tolerance = 1e-4 * max(1.0, float(np.max(np.abs(expected))))
        agrees = difference <= tolerance
        print(
            f"max |keras_ssr - original| = {difference:.3g} "
            f"(tolerance {tolerance:.1g}): {'agree' if agrees else 'DIFFER'}"
        )
        status = 0 if agrees else 1
    if args.save:
        model.save_weights(args.save)
        print(f"saved {args.save} (load with model.load_weights)")
    return status


if __name__ == "__main__":
    sys.exit(main())
