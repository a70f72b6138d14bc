"""The public API a user can predict: modules as attributes, an ``__all__``
in every module, each name in one home, one rule for the axes."""

from __future__ import annotations

import importlib
import inspect
import pathlib
import pkgutil
import re
import sys
import warnings

import keras
import pytest

import keras_ssr
from keras_ssr import _checks, layers, models

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _modules():
    """Every module of keras_ssr, the private ones (``_name``) left out."""
    names = []
    for info in pkgutil.walk_packages(keras_ssr.__path__, "keras_ssr."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def test_the_modules_the_readme_names_are_attributes_of_the_package():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`keras_ssr\.([a-z_]+)`", readme))
    assert {"cv", "distributed", "plot", "models", "layers", "ops"} <= named
    for name in named:
        module = getattr(keras_ssr, name)
        assert inspect.ismodule(module) and module.__name__ == f"keras_ssr.{name}"
        assert name in keras_ssr.__all__
    assert "demo" in keras_ssr.__all__ and "distributed" in dir(keras_ssr)


@pytest.mark.parametrize("name", _modules())
def test_every_module_has_an_all_of_names_it_has(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the moved modules
        module = importlib.import_module(name)
    exported = module.__dict__.get("__all__")
    assert isinstance(exported, (list, tuple)) and exported, name
    assert len(set(exported)) == len(exported), name
    for symbol in exported:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            assert getattr(module, symbol) is not None, (name, symbol)


def test_models_exports_builders_registry_and_insertion_only():
    for name in models.__all__:
        value = getattr(models, name)
        assert not (
            inspect.isclass(value) and issubclass(value, keras.layers.Layer)
        ) or (issubclass(value, keras.Model)), name
        assert not name.startswith("BN_"), name


@pytest.mark.parametrize(
    "name, home",
    [
        ("TrilinearUpSampling3D", layers.TrilinearUpSampling3D),
        ("BN_MOMENTUM", 0.99),
        ("BN_EPSILON", 1e-3),
        ("AttentionFactory", models.registry.AttentionFactory),
    ],
)
def test_names_that_moved_out_of_models_still_work_and_warn(name, home):
    with pytest.warns(DeprecationWarning, match=f"keras_ssr.models.{name}"):
        value = getattr(models, name)
    assert value == home
    assert name not in models.__all__
    with pytest.raises(AttributeError):
        models.NotAName  # noqa: B018


def test_trilinear_upsampling_loads_under_its_registered_name():
    config = keras.saving.serialize_keras_object(layers.TrilinearUpSampling3D())
    assert config["registered_name"] == "keras_ssr>TrilinearUpSampling3D"
    config["module"] = "keras_ssr.models.upsampling"  # as saved before the move
    restored = keras.saving.deserialize_keras_object(config)
    assert isinstance(restored, layers.TrilinearUpSampling3D)


@pytest.mark.parametrize(
    "data_format, ndim, channel, spatial",
    [
        ("channels_last", 3, 2, (1,)),
        ("channels_last", 4, 3, (1, 2)),
        ("channels_last", 5, 4, (1, 2, 3)),
        ("channels_first", 3, 1, (2,)),
        ("channels_first", 4, 1, (2, 3)),
        ("channels_first", 5, 1, (2, 3, 4)),
    ],
)
def test_one_rule_for_the_channel_and_spatial_axes(data_format, ndim, channel, spatial):
    assert _checks.channel_axis(data_format, ndim) == channel
    assert _checks.spatial_axes(data_format, ndim) == spatial
    assert _checks.channel_axis(data_format) == (-1 if channel == ndim - 1 else 1)
    # The layers read it from there.
    layer = layers.SqueezeExcite(2, data_format=data_format)
    assert layer.spatial_axes(ndim) == spatial
    assert layer.channel_axis % ndim == channel


def test_no_module_computes_the_axes_itself():
    """The axes come from ``_checks.channel_axis`` and ``spatial_axes`` only:
    no module spells out which axis the channels are for a data format."""
    pattern = re.compile(
        r"(-1|len\([^)]*\) - 1|ndim - 1|range\(1,|\[1:-1\]|\[1:3\]|slice\(1, 3\)"
        r"|\(1, 2(, 3)?\))"
        r"[^\n]*if[^\n]*data_format == \"channels_last\""
    )
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "keras_ssr").rglob("*.py")
        if path.name != "_checks.py" and pattern.search(path.read_text("utf-8"))
    ]
    assert not offenders


@pytest.mark.parametrize(
    "old, name, new, new_name",
    [
        ("keras_ssr.models.followup", "get_se_unet", "keras_ssr.models", "get_se_unet"),
        (
            "keras_ssr.models.upsampling",
            "TrilinearUpSampling3D",
            "keras_ssr.layers",
            "TrilinearUpSampling3D",
        ),
        (
            "keras_ssr.porting.followup",
            "FOLLOWUP_SCOPES",
            "keras_ssr.porting.family",
            "FAMILY_SCOPES",
        ),
    ],
)
def test_moved_modules_still_import_and_warn(old, name, new, new_name):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=old):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), new_name)


@pytest.mark.parametrize(
    "old, new",
    [
        ("followup_segmentation_metrics", "per_image_segmentation_metrics"),
        ("FOLLOWUP_METRIC_NAMES", "PER_IMAGE_METRIC_NAMES"),
    ],
)
def test_renamed_metrics_still_resolve_and_warn(old, new):
    from keras_ssr import metrics

    with pytest.warns(DeprecationWarning, match=new):
        assert getattr(metrics, old) is getattr(metrics, new)
    assert old not in metrics.__all__
