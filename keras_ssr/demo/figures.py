"""The demo's figures: singularity maps per model, and the predictions."""

from __future__ import annotations

import os

import numpy as np

from keras_ssr.demo.config import THRESHOLD, model_label

__all__ = ["figure_filename", "predictions_figure", "singularity_figures"]


def figure_filename(name: str) -> str:
    """The singularity-maps file of the model with attention ``name``.

    The SSR-U-Net's is ``singularity_maps.png`` and the U-Net's
    ``singularity_maps_unet.png``, as before ``--models``; the others'
    ``singularity_maps_<name>.png``.
    """
    special = {"ssr": "singularity_maps.png", "none": "singularity_maps_unet.png"}
    return special.get(name, f"singularity_maps_{name}.png")


def singularity_figures(trained: dict, x_test, y_test, dataset: str, output) -> dict:
    """Draws :func:`keras_ssr.plot.singularity_maps` for every trained model.

    The image is the first held-out one with more than 5 % foreground.
    Returns ``{"figure_<name>": path}``.
    """
    from keras_ssr.plot import singularity_maps

    index = int(np.argmax(y_test.reshape(len(y_test), -1).mean(axis=1) > 0.05))
    files = {}
    for name, model in trained.items():
        path = os.path.join(output, figure_filename(name))
        singularity_maps(
            model,
            x_test[index],
            y_test[index],
            title=f"{model_label(name)}, held-out image {index} ({dataset}): "
            "feature maps (top) and their singularity strength (below)",
            path=path,
        )
        files[f"figure_{name}"] = path
    return files


def predictions_figure(x_test, y_test, predictions: dict, path, count=4) -> None:
    """Held-out images, their masks and each model's thresholded prediction."""
    from keras_ssr.plot import display_image, import_matplotlib

    Figure, FigureCanvasAgg = import_matplotlib()
    count = min(count, len(x_test))
    columns = ["input", "mask", *predictions]
    figure = Figure(
        figsize=(2.0 * len(columns), 2.0 * count + 0.3), layout="constrained"
    )
    FigureCanvasAgg(figure)
    grid = figure.subplots(count, len(columns), squeeze=False)
    for i in range(count):
        shown, cmap = display_image(x_test[i])
        grid[i, 0].imshow(shown, cmap=cmap, interpolation="nearest")
        grid[i, 1].imshow(y_test[i, ..., 0], cmap="gray", vmin=0, vmax=1)
        for j, probabilities in enumerate(predictions.values(), start=2):
            grid[i, j].imshow(
                probabilities[i, ..., 0] >= THRESHOLD, cmap="gray", vmin=0, vmax=1
            )
    for j, name in enumerate(columns):
        grid[0, j].set_title(name, fontsize=9)
    for axis in grid.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    figure.savefig(path, dpi=100, format="png")
