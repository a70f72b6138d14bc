"""``keras-ssr demo``: U-Nets with and without attention, side by side, built-in data.

Trains every compared model (``--models``; U-Net and SSR-U-Net by default)
with the same data, loss (``0.5 BCE + 0.5 soft Dice``), optimiser and seed,
scores them on held-out images, prints one table, and writes it as
``results.csv`` and ``results.json`` next to the figures: per model, its
feature maps per depth and their singularity-strength maps (and, for
Multifractal, its per-pixel gates): ``singularity_maps.png`` (SSR-U-Net),
``singularity_maps_unet.png`` (U-Net), ``singularity_maps_<name>.png``; and
``predictions.png``.

The data need no download (:mod:`keras_ssr.demo.data`): ``textures``
(default) are synthetic images whose objects differ from the background only
in local regularity; ``ihc`` are patches of the immunohistochemistry slide
that scikit-image ships, with classical DAB-stain masks.

Run it as ``keras-ssr demo`` (see ``keras-ssr demo --help``) or call
:func:`run_demo`. The modules: :mod:`~keras_ssr.demo.config` (settings),
:mod:`~keras_ssr.demo.data` (the data), :mod:`~keras_ssr.demo.training`,
:mod:`~keras_ssr.demo.scores`, :mod:`~keras_ssr.demo.figures`,
:mod:`~keras_ssr.demo.runner` and :mod:`~keras_ssr.demo.cli`. The names
below are imported on first use, so that ``keras-ssr demo --help`` loads no
backend.
"""

from keras_ssr._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "add_arguments": "cli",
        "config_from_args": "cli",
        "run_from_args": "cli",
        "DEFAULTS": "config",
        "QUICK": "config",
        "DemoConfig": "config",
        "model_label": "config",
        "load_demo_data": "data",
        "run_demo": "runner",
        "dice_and_iou": "scores",
        "format_table": "scores",
        "build_model": "training",
    },
    submodules=("cli", "config", "data", "figures", "runner", "scores", "training"),
)
