"""Train U-Net / SSR-U-Net on Kvasir-SEG with the paper's 10-fold protocol.

(Or the authors' follow-up protocol with ``--protocol followup``: 5 folds,
400 epochs, random flips every epoch, per-image Dice and foreground IoU.)

Kvasir-SEG (https://datasets.simula.no/kvasir-seg/) unpacks to a folder
``Kvasir-SEG/`` holding ``images/*.jpg`` and ``masks/*.jpg``; pass that
folder. This script drives :func:`keras_ssr.cv.run_cv`, the Python side of
``keras-ssr cv`` (see ``keras-ssr cv --help`` for every option):

* 10 folds in file-name order, no shuffling; the last 10% of each training
  fold validates (the checkpoint keeps the lowest ``val_loss``);
* Adam 1e-4, batch 16, 100 epochs, 0.5 BCE + 0.5 Dice, 224x224 inputs,
  channels per level 32-64-128-256 without BatchNormalization (the original's runs);
* per fold: ``best.weights.h5``, ``log.csv``, ``metrics.json`` under
  ``<output>/<model>-kvasir/fold_<k>/``; ``summary.csv``/``summary.json``
  with mean and std over folds.

Interrupted? Run the same command again: finished folds are skipped.

Run:
    python examples/train_kvasir.py /data/Kvasir-SEG                # SSR-U-Net
    python examples/train_kvasir.py /data/Kvasir-SEG --model unet   # baseline
    python examples/train_kvasir.py /data/Kvasir-SEG --quick        # minutes on CPU
    python examples/train_kvasir.py /data/Kvasir-SEG --only-fold 0  # one split
    python examples/train_kvasir.py /data/Kvasir-SEG --protocol followup

See docs/cross_validation.md for the protocols, the files written, what
happens to a fold that diverges, and running folds in parallel.
"""

from __future__ import annotations

import argparse

from keras_ssr.cv import CVConfig, run_cv

#: ``--quick``: a smoke run (2 folds of the first 60 images, 64x64, 2 epochs).
QUICK = {
    "folds": 2,
    "epochs": 2,
    "max_samples": 60,
    "target_size": (64, 64),
    "channels_per_level": (8, 16, 32, 64),
    "batch_size": 8,
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the Kvasir-SEG folder (images/ and masks/)")
    parser.add_argument(
        "--model", default="ssr_unet", help="ssr_unet (default), unet, se, ..."
    )
    parser.add_argument(
        "--protocol", choices=("paper", "followup"), default="paper",
        help="the SSR paper's (default) or the follow-up's",
    )  # fmt: skip
    parser.add_argument("--epochs", type=int, help="(default: the protocol's)")
    parser.add_argument("--folds", type=int, help="(default: the protocol's)")
    parser.add_argument("--output-dir", default="runs")
    parser.add_argument(
        "--only-fold",
        type=int,
        action="append",
        help="train only this fold (repeatable), e.g. 0 for a single split",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny settings for a smoke run"
    )
    args = parser.parse_args(argv)

    settings = dict(QUICK) if args.quick else {}
    for key in ("epochs", "folds"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    suffix = ("-followup" if args.protocol == "followup" else "") + (
        "-quick" if args.quick else ""
    )
    config = CVConfig.from_dict(
        {},
        protocol=args.protocol,
        dataset="kvasir",
        data_root=args.root,
        model=args.model,
        output_dir=args.output_dir,
        name=f"{args.model}-kvasir{suffix}",
        **settings,
    )
    result = run_cv(config, folds=args.only_fold)

    # The result is also there for further analysis:
    dice_name = "dice_score" if config.metrics == "per_image" else "dice_coefficient"
    if not result.mean:
        print(f"\nNo fold to average (diverged: {result.diverged}).")
        return
    dice = result.metric(dice_name)
    print(f"\nDice per fold: {[round(float(d), 4) for d in dice]}")
    print(
        f"Dice {result.mean[dice_name]:.4f} ± "
        f"{result.std[dice_name]:.4f}, IoU "
        f"{result.mean['binary_io_u']:.4f} ± {result.std['binary_io_u']:.4f} "
        f"over {len(result.folds) - len(result.diverged)} fold(s); files in "
        f"{result.run_dir}"
    )


if __name__ == "__main__":
    main()
