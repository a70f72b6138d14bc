""":func:`run_demo`: train the compared models, score, write the table and figures."""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from typing import Any

from keras_ssr.demo.config import DEMO_BN_MOMENTUM, THRESHOLD, DemoConfig
from keras_ssr.demo.data import load_demo_data
from keras_ssr.demo.figures import predictions_figure, singularity_figures
from keras_ssr.demo.scores import format_table
from keras_ssr.demo.training import check_models, train_and_score

__all__ = ["CSV_COLUMNS", "run_demo"]

#: The columns of ``results.csv``.
CSV_COLUMNS = (
    "model",
    "attention",
    "params",
    "train_seconds",
    "dice_mean",
    "dice_std",
    "iou_mean",
    "iou_std",
    "dice_pooled",
    "iou_pooled",
)


def run_demo(
    config: DemoConfig | None = None,
    output: str | os.PathLike = "keras-ssr-demo",
    *,
    verbose: int | str = "auto",
    figures: bool = True,
    run_eagerly: bool = False,
    log=print,
) -> dict[str, Any]:
    """Trains the compared U-Nets on built-in data; writes table and figures.

    Every model (``config.models``: U-Net and SSR-U-Net by default) is
    trained on the same data with the same loss, optimiser and seed, then
    scored on the held-out images.

    Args:
        config: the run's settings (:data:`DEFAULTS` when ``None``,
            :data:`QUICK` or your own :class:`DemoConfig`).
        output: folder for ``results.csv``, ``results.json`` and the PNG
            figures (created if needed).
        verbose: ``model.fit``'s verbosity; ``"auto"`` is 1 (progress bars)
            on a terminal, else 2 (one line per epoch).
        figures: whether to draw the figures (needs matplotlib).
        run_eagerly: compile the models with ``run_eagerly`` (no
            ``tf.function``/``jax.jit`` tracing: slower steps, no compile
            time; for tiny smoke runs).
        log: where the table and messages go (``print`` by default).

    Returns:
        The content of ``results.json``: ``config``, ``backend``, ``rows``
        (one dict per model), ``table`` (the printed text), ``files``
        and ``total_seconds``.

    Raises:
        TypeError: if ``config`` is not a :class:`DemoConfig`.
        UnbuildableModelError: (a ``ValueError``) if a model of
            ``config.models`` cannot be built on the data; raised before any
            training, and before ``output`` is created.
        ImportError: if ``figures`` and matplotlib is missing, or the
            ``ihc`` data set and scikit-image is missing.
    """
    import keras

    start = time.perf_counter()
    if config is None:
        from keras_ssr.demo.config import DEFAULTS as config
    if not isinstance(config, DemoConfig):
        raise TypeError(f"`config` must be a DemoConfig. Received: config={config!r}")
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    if figures:
        from keras_ssr.plot import import_matplotlib

        import_matplotlib()  # fail before training, not after
    data = load_demo_data(
        config.dataset, config.size, config.samples, config.test_samples, config.seed
    )
    x_train, _, x_test, y_test = data
    check_models(config, x_train.shape[1:])
    output = os.fspath(output)
    os.makedirs(output, exist_ok=True)
    backend = keras.backend.backend()
    log(
        f"keras-ssr demo: dataset {config.dataset!r}, {config.size}x{config.size} "
        f"images, {len(x_train)} for training, {len(x_test)} held out; "
        f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}; "
        f"{config.architecture}; models {', '.join(config.models)}; "
        f"Keras {keras.__version__} on {backend}"
    )
    rows, trained, predictions = [], {}, {}
    for name in config.models:
        row, trained[name], probabilities = train_and_score(
            name, config, data, verbose, log, run_eagerly
        )
        rows.append(row)
        predictions[row["model"]] = probabilities

    table = format_table(rows)
    files = {
        "csv": os.path.join(output, "results.csv"),
        "json": os.path.join(output, "results.json"),
    }
    if figures:
        files.update(
            singularity_figures(trained, x_test, y_test, config.dataset, output)
        )
        files["predictions"] = os.path.join(output, "predictions.png")
        predictions_figure(x_test, y_test, predictions, files["predictions"])

    with open(files["csv"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    result = {
        "config": config.to_dict(),
        "backend": backend,
        "keras": keras.__version__,
        "bn_momentum": DEMO_BN_MOMENTUM,
        "threshold": THRESHOLD,
        "rows": rows,
        "table": table,
        "files": files,
        "total_seconds": round(time.perf_counter() - start, 2),
    }
    with open(files["json"], "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")

    log(
        "\nHeld-out scores, threshold 0.5 (per image: mean ± std over the "
        "held-out images; pooled: all their pixels together):\n"
    )
    log(table)
    log("")
    for name, path in files.items():
        log(f"{name:>24}: {path}")
    return result
