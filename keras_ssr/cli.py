"""The ``keras-ssr`` command line.

    keras-ssr demo [options]   train U-Net and SSR-U-Net on built-in data
    keras-ssr cv [options]     the paper's K-fold cross-validation protocol

Each sub-command lives in its own module, which provides
``add_arguments(parser)`` and ``run_from_args(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = [
    "build_parser",
    "main",
]

#: sub-command -> (module, one-line help)
COMMANDS = {
    "demo": ("keras_ssr.demo", "train U-Net and SSR-U-Net on built-in data"),
    "cv": (
        "keras_ssr.cv",
        "K-fold cross-validation on ISIC-2018, Kvasir-SEG or a folder",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-ssr",
        description="Singularity Strength Recalibration for Keras 3.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(importlib.import_module(args._module).run_from_args(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
