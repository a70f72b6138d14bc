"""The recalibration family's U-Nets: the follow-up's builders, names and signatures.

``miguelmartins/multifractal-recalibration`` ("Multifractal Recalibration of
Neural Networks for Medical Imaging Segmentation") builds the original SSR
U-Net with one recalibration layer after every encoder block, in six
variants. The builders here keep its names and positional signatures, so
that its scripts port by changing the import, and assemble the model with
:func:`~keras_ssr.models.build_unet` and the attention registry:

=========================  ==================  ===============================
builder                    registry name       layer after every encoder block
=========================  ==================  ===============================
``get_monofractal_unet``   ``"mono"``          ``MonofractalRecalibration``
``get_se_unet``            ``"se"``            ``SqueezeExcite``
``get_sc_encoder_unet``    ``"scse"``          ``SpatialSqueezeExcite``
``get_srm_encoder_unet``   ``"srm"``           ``StyleBasedRecalibration``
``get_fca_encoder_unet``   ``"fca"``           ``FrequencyChannelAttention``
``get_multifractal_unet``  ``"multifractal"``  ``MultifractalRecalibration``
=========================  ==================  ===============================

(the layers are in :mod:`keras_ssr.layers`).

Where the follow-up's signature takes an argument its model does not use
(``max_scale`` of ``get_se_unet``, ``r`` and ``max_scale`` of
``get_srm_encoder_unet``, ``r`` of ``get_fca_encoder_unet``, whose FCA is
always built with ``r=2``), the builder accepts it and ignores it too, as
documented on each, with a ``UserWarning`` when it is given a value other
than what the model uses (its default). Every layer is named as in
:mod:`keras_ssr.models` (``encoder_{i}_attention`` for the recalibration), so
:func:`keras_ssr.porting.load_weights` places the follow-up's weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_ssr.models.unet import build_named_unet, named_builder, warn_ignored

__all__ = [
    "get_fca_encoder_unet",
    "get_monofractal_unet",
    "get_multifractal_unet",
    "get_sc_encoder_unet",
    "get_se_unet",
    "get_srm_encoder_unet",
]

_DEFAULT_SHAPE = (224, 224, 3)
#: Why the follow-up's SE and SRM builders ignore some of their arguments.
_UNUSED = "the follow-up's builder takes it for its signature and does not use it"


@named_builder
def get_monofractal_unet(
    channels_per_level: Sequence[int],
    r: int = 2,
    max_scale: int = 3,
    input_shape: Sequence[int | None] = _DEFAULT_SHAPE,
    n_classes: int = 2,
    with_bn: bool = True,
    **options,
) -> keras.Model:
    """The follow-up's ``get_monofractal_unet``: SSR after every encoder block.

    The same model as :func:`~keras_ssr.models.get_ssr_unet`, with
    :class:`~keras_ssr.layers.MonofractalRecalibration` (the follow-up's
    name for SSR) as the attention.

    Args:
        channels_per_level: filters per level, the last the bottleneck's.
        r: reduction ratio of the excitation MLP.
        max_scale: number of dyadic box-sum scales of the singularity map.
        {shared args}

    Returns:
        A functional ``keras.Model`` named ``"monofractal_unet"``.

    Raises:
        ValueError, TypeError: as :func:`~keras_ssr.models.build_unet` and
            the layer.

    Example:
        >>> model = get_monofractal_unet([4, 8, 16], input_shape=[32, 32, 3])
        >>> type(model.get_layer("encoder_0_attention")).__name__
        'MonofractalRecalibration'
    """
    args = (channels_per_level, input_shape, n_classes, with_bn)
    kwargs = {"r": r, "max_scale": max_scale}
    return build_named_unet("monofractal_unet", "mono", kwargs, args, options)


@named_builder
def get_se_unet(
    channels_per_level: Sequence[int],
    r: int = 2,
    max_scale: int = 3,
    input_shape: Sequence[int | None] = _DEFAULT_SHAPE,
    n_classes: int = 2,
    with_bn: bool = True,
    **options,
) -> keras.Model:
    """The follow-up's ``get_se_unet``: Squeeze-and-Excitation (cSE) blocks.

    Args:
        channels_per_level: filters per level, the last the bottleneck's.
        r: reduction ratio of the excitation MLP.
        max_scale: accepted for the follow-up's signature and unused (as
            there); a value other than 3 warns.
        {shared args}

    Returns:
        A functional ``keras.Model`` named ``"se_unet"``.

    Raises:
        ValueError, TypeError: as :func:`~keras_ssr.models.build_unet` and
            :class:`~keras_ssr.layers.SqueezeExcite`.

    Example:
        >>> model = get_se_unet([4, 8, 16], r=4, input_shape=[32, 32, 3])
        >>> model.get_layer("encoder_1_attention").r
        4
    """
    warn_ignored("se_unet", "max_scale", max_scale, 3, _UNUSED)
    args = (channels_per_level, input_shape, n_classes, with_bn)
    kwargs = {"r": r}
    return build_named_unet("se_unet", "se", kwargs, args, options)


@named_builder
def get_sc_encoder_unet(
    channels_per_level: Sequence[int],
    r: int = 2,
    input_shape: Sequence[int | None] = _DEFAULT_SHAPE,
    n_classes: int = 2,
    with_bn: bool = True,
    *,
    combine: str = "max",
    **options,
) -> keras.Model:
    """The follow-up's ``get_sc_encoder_unet``: scSE after every encoder block.

    Args:
        channels_per_level: filters per level, the last the bottleneck's.
        r: reduction ratio of the channel branch's MLP.
        {shared args}
        combine: keyword-only; how the two branches combine: ``"max"`` (the
            follow-up's elementwise maximum) or ``"add"`` (Roy et al.'s
            sum); see :class:`~keras_ssr.layers.SpatialSqueezeExcite`.

    Returns:
        A functional ``keras.Model`` named ``"sc_encoder_unet"``.

    Raises:
        ValueError, TypeError: as :func:`~keras_ssr.models.build_unet` and
            :class:`~keras_ssr.layers.SpatialSqueezeExcite`.

    Example:
        >>> model = get_sc_encoder_unet([4, 8, 16], input_shape=[32, 32, 3])
        >>> model.get_layer("encoder_0_attention").combine
        'max'
    """
    args = (channels_per_level, input_shape, n_classes, with_bn)
    kwargs = {"r": r, "combine": combine}
    return build_named_unet("sc_encoder_unet", "scse", kwargs, args, options)


@named_builder
def get_srm_encoder_unet(
    channels_per_level: Sequence[int],
    r: int = 2,
    max_scale: int = 3,
    input_shape: Sequence[int | None] = _DEFAULT_SHAPE,
    n_classes: int = 2,
    with_bn: bool = True,
    *,
    style_weights: str = "shared",
    **options,
) -> keras.Model:
    """The follow-up's ``get_srm_encoder_unet``: SRM after every encoder block.

    Args:
        channels_per_level: filters per level, the last the bottleneck's.
        r: accepted for the follow-up's signature and unused (as there); a
            value other than 2 warns.
        max_scale: accepted for the follow-up's signature and unused; a
            value other than 3 warns.
        {shared args}
        style_weights: keyword-only; ``"shared"`` (the follow-up's one
            ``(2, 1)`` kernel for all channels) or the SRM paper's one per
            channel; see :class:`~keras_ssr.layers.StyleBasedRecalibration`.

    Returns:
        A functional ``keras.Model`` named ``"srm_encoder_unet"``.

    Raises:
        ValueError, TypeError: as :func:`~keras_ssr.models.build_unet` and
            :class:`~keras_ssr.layers.StyleBasedRecalibration`.

    Example:
        >>> model = get_srm_encoder_unet([4, 8, 16], input_shape=[32, 32, 3])
        >>> type(model.get_layer("encoder_0_attention")).__name__
        'StyleBasedRecalibration'
    """
    warn_ignored("srm_encoder_unet", "r", r, 2, _UNUSED)
    warn_ignored("srm_encoder_unet", "max_scale", max_scale, 3, _UNUSED)
    args = (channels_per_level, input_shape, n_classes, with_bn)
    kwargs = {"style_weights": style_weights}
    return build_named_unet("srm_encoder_unet", "srm", kwargs, args, options)


@named_builder
def get_fca_encoder_unet(
    channels_per_level: Sequence[int],
    r: int = 2,
    low_freq: int = 4,
    input_shape: Sequence[int | None] = _DEFAULT_SHAPE,
    n_classes: int = 2,
    with_bn: bool = True,
    *,
    basis: str = "transposed_dct",
    **options,
) -> keras.Model:
    """The follow-up's ``get_fca_encoder_unet``: FCA after every encoder block.

    As in the follow-up, every FCA layer is built with ``r=2`` whatever
    ``r`` is given. FCA needs static spatial sizes, and every encoder
    level's channels divisible by ``low_freq**2``.

    Args:
        channels_per_level: filters per level, the last the bottleneck's.
        r: accepted for the follow-up's signature and ignored (its FCA
            always has ``r=2``; another value warns); build with
            ``build_unet(..., attention="fca", attention_kwargs={"r": r})``
            for another ratio.
        low_freq: the ``low_freq x low_freq`` lowest frequencies are used.
        {shared args}
        basis: keyword-only; the cosine basis, ``"transposed_dct"`` (the
            follow-up's, position and frequency swapped) or ``"dct"``; see
            :class:`~keras_ssr.layers.FrequencyChannelAttention`.

    Returns:
        A functional ``keras.Model`` named ``"fca_encoder_unet"``.

    Raises:
        ValueError, TypeError: as :func:`~keras_ssr.models.build_unet` and
            :class:`~keras_ssr.layers.FrequencyChannelAttention`.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     model = get_fca_encoder_unet([16, 16, 32], r=8, input_shape=[32, 32, 3])
        >>> model.get_layer("encoder_0_attention").r, caught[0].category.__name__
        (2, 'UserWarning')
    """
    warn_ignored(
        "fca_encoder_unet",
        "r",
        r,
        2,
        "the follow-up builds every FCA with r=2; for another ratio, "
        "build_unet(..., attention='fca', attention_kwargs={'r': r})",
    )
    args = (channels_per_level, input_shape, n_classes, with_bn)
    kwargs = {"r": 2, "low_freq": low_freq, "basis": basis}
    return build_named_unet("fca_encoder_unet", "fca", kwargs, args, options)


@named_builder
def get_multifractal_unet(
    channels_per_level: Sequence[int],
    max_scale: int = 3,
    k: int = 16,
    per_channel: bool = False,
    input_shape: Sequence[int | None] = _DEFAULT_SHAPE,
    n_classes: int = 2,
    with_bn: bool = True,
    *,
    scaling: str = "batch",
    **options,
) -> keras.Model:
    """The follow-up's ``get_multifractal_unet``: multifractal recalibration.

    :class:`~keras_ssr.layers.MultifractalRecalibration` after every
    encoder block: an additive, per-pixel gate from the soft histogram of
    a weighted singularity-strength map.

    Args:
        channels_per_level: filters per level, the last the bottleneck's.
        max_scale: number of dyadic box-sum scales of the singularity map.
        k: number of anchors of the soft histogram.
        per_channel: whether the histogram has one row of anchors per
            channel.
        {shared args}
        scaling: keyword-only; ``"batch"`` (the follow-up's batch-wide
            min-max) or ``"sample"`` (per sample, batch-independent).

    Returns:
        A functional ``keras.Model`` named ``"multifractal_unet"``.

    Raises:
        ValueError, TypeError: as :func:`~keras_ssr.models.build_unet` and
            :class:`~keras_ssr.layers.MultifractalRecalibration`.

    Example:
        >>> model = get_multifractal_unet([4, 8, 16], k=8, input_shape=[32, 32, 3])
        >>> model.get_layer("encoder_1_attention").k
        8
    """
    args = (channels_per_level, input_shape, n_classes, with_bn)
    kwargs = dict(max_scale=max_scale, k=k, per_channel=per_channel, scaling=scaling)
    return build_named_unet("multifractal_unet", "multifractal", kwargs, args, options)
