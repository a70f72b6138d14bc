"""The maths of the follow-up's recalibration family, in ``keras.ops``.

Martins et al.'s "Multifractal Recalibration of Neural Networks for Medical
Imaging Segmentation" compares SSR with style (SRM), frequency (FCA) and
multifractal gates. The layers in :mod:`keras_ssr.layers.recalibration` and
:mod:`keras_ssr.layers.multifractal` compose these functions (the weighted
singularity strength of Mono and Multi is with the other strengths, in
:mod:`keras_ssr.ops.singularity`):

- :func:`soft_histogram`: a softmax soft assignment of every entry to ``K``
  learnable anchors;
- :func:`cosine_bases` / :func:`frequency_pool`: FcaNet's multi-spectral
  pooling, computed from separable one-dimensional bases;
- :func:`style_pool`: SRM's per-channel mean and standard deviation.

Every function works on one, two or three spatial axes, in either
``data_format``, and computes in float32 at least whatever the input dtype.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
from keras import ops as kops

from keras_ssr import _checks, distributed
from keras_ssr.ops._utils import (
    _as_float_tensor,
    _check_input,
    _float32_or_wider,
    _Recomputed,
    _written,
)
from keras_ssr.ops.reductions import (
    _axis_mean,
    _axis_sum,
    _count,
    centered_moments,
)

#: Added to the variance before SRM's square root (the follow-up's value).
STYLE_EPSILON = 1e-12
#: The two cosine bases FCA can use (see :func:`cosine_bases`).
BASES = ("transposed_dct", "dct")
#: Former names of :data:`BASES`, still accepted (deprecated).
RENAMED_BASES = {"followup": "transposed_dct"}
#: :func:`frequency_pool` weights the map by one table of the separable bases'
#: products up to this many entries (a constant of 16 MiB), and axis by axis
#: beyond.
FULL_TABLE_ENTRIES = 2**22

__all__ = [
    "BASES",
    "STYLE_EPSILON",
    "cosine_bases",
    "frequency_groups",
    "frequency_pool",
    "histogram_gate",
    "soft_histogram",
    "style_pool",
]


# --------------------------------------------------------------------------
# Soft histogram


def soft_histogram(x, anchors, widths, data_format: str = "channels_last"):
    """Soft assignment of every entry to ``K`` anchors (a soft histogram).

    For an entry ``a`` of channel ``c`` and anchor ``k``:
    ``softmax_k(-relu(widths[c', k]) * (a - anchors[c', k])**2)``, where
    ``c' = c`` when ``anchors`` has one row per channel and ``c' = 0`` when
    it has a single row shared by all channels. Sums to 1 over ``k``.

    Args:
        x: floating-point tensor ``(batch, *spatial, channels)`` or
            ``(batch, channels, *spatial)``, any number of spatial axes.
        anchors, widths: ``(A, K)`` tensors, ``A`` = 1 or the channel count.
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Returns:
        Tensor ``x.shape + (K,)``, float32 at least.
    """
    x, anchors, widths = _histogram_inputs(x, anchors, widths, data_format)
    return _assignments(x, anchors, widths)[0]


def _histogram_inputs(x, anchors, widths, data_format):
    """``x`` in float32 or wider, ``anchors`` and ``widths`` cast to it and
    shaped to broadcast against ``x[..., None]`` (:func:`_anchor_rows`)."""
    data_format = _checks.standardize_data_format(data_format)
    x = _float32_or_wider(_as_float_tensor("x", x))
    anchors = kops.cast(_as_float_tensor("anchors", anchors), x.dtype)
    widths = kops.cast(_as_float_tensor("widths", widths), x.dtype)
    if len(anchors.shape) != 2 or tuple(anchors.shape) != tuple(widths.shape):
        raise ValueError(
            "`anchors` and `widths` must both have shape (A, K). Received: "
            f"anchors.shape={tuple(anchors.shape)}, widths.shape={tuple(widths.shape)}"
        )
    shape = _anchor_rows(anchors.shape, len(x.shape), data_format)
    return x, kops.reshape(anchors, shape), kops.reshape(widths, shape)


def _anchor_rows(shape, ndim: int, data_format: str) -> tuple:
    """The shape of ``(A, K)`` anchors that broadcasts against an entry axis
    of ``K`` added to a rank-``ndim`` map: the row axis on the channel axis
    (``(A, 1, ..., 1, K)`` channels first), or ``(A, K)`` itself."""
    rows, k = shape
    if data_format == "channels_first" and rows != 1 and ndim > 2:
        return (rows,) + (1,) * (ndim - 2) + (k,)
    return (rows, k)


def _assignments(x, anchors, widths, fused: bool = False):
    """``(h, d, w)``: the soft assignments ``h = softmax_k(-w d**2)`` of
    ``x[..., None]``, with ``d = x - anchors`` and ``w = relu(widths)``.

    ``fused``: the softmax written out for XLA, ``e exp(-log(sum_k e))``
    with ``e = exp(logits - max_k logits)``: no constant is broadcast to the
    map's shape (``1 / sum`` would be), which XLA:CPU's library fusions
    would share between kernels, and so write out.
    """
    d = kops.expand_dims(x, -1) - anchors
    w = kops.relu(widths)
    logits = -w * kops.square(d)
    if fused:
        e = kops.exp(logits - kops.max(logits, axis=-1, keepdims=True))
        return e * kops.exp(-kops.log(kops.sum(e, axis=-1, keepdims=True))), d, w
    if len(logits.shape) <= 5:
        return kops.softmax(logits, axis=-1), d, w
    # TensorFlow's oneDNN CPU softmax refuses inputs of rank above 5, which a
    # 3-D map's (batch, d, h, w, c, K) is: a (entries, K) matrix.
    shape = kops.shape(logits)
    flat = kops.softmax(kops.reshape(logits, (-1, logits.shape[-1])), axis=-1)
    return kops.reshape(flat, shape), d, w


def histogram_gate(
    x,
    anchors,
    widths,
    gamma,
    beta,
    moments=None,
    epsilon: float = 1e-3,
    data_format: str = "channels_last",
    synchronized: bool = True,
):
    """The multifractal gate ``sigmoid(sum_k relu(BN_k(h_k)))`` of ``x``.

    ``h`` is :func:`soft_histogram` of ``x`` and ``BN_k`` a batch
    normalisation of anchor ``k`` over every entry of ``x`` (every axis of
    ``h`` but the last): ``(h_k - mean_k) gamma_k / sqrt(variance_k +
    epsilon) + beta_k``. Computed as one op with a hand-written gradient:
    ``h`` (``K`` values per entry of ``x``) is recomputed from ``x``
    wherever it is needed and never kept, so that the memory and, under
    XLA, the traffic stay those of a few maps of ``x``'s size.

    Args:
        x: floating-point tensor with 1, 2 or 3 spatial axes.
        anchors, widths: ``(A, K)`` tensors, ``A`` = 1 or the channel count
            (as :func:`soft_histogram`).
        gamma, beta: ``(K,)`` scale and offset of the normalisation.
        moments: ``None`` to normalise with the batch's mean and (biased,
            centred) variance of ``h``, or a ``(mean, variance)`` pair of
            ``(K,)`` tensors (moving statistics) to normalise with.
        epsilon: added to the variance.
        data_format: ``"channels_last"`` or ``"channels_first"``.
        synchronized: with batch moments under data parallelism, whether
            they are taken over the global batch (all replicas,
            :mod:`keras_ssr.distributed`).

    Returns:
        ``(gate, mean, variance)``: the gate, of ``x``'s shape (float32 at
        least), and the moments used, ``(K,)`` each (the batch's, which
        carry no gradient, or ``moments``).

    Raises:
        TypeError: for non-float arguments.
        ValueError: for ``anchors`` and ``widths`` of different shapes or
            not ``(A, K)``, ``gamma`` or ``beta`` not ``(K,)``, or a bad
            ``data_format``.
    """
    data_format = _checks.standardize_data_format(data_format)
    synchronized = _checks.check_bool("synchronized", synchronized)
    epsilon = _checks.check_real("epsilon", epsilon, 0.0)
    x = _as_float_tensor("x", x)
    _check_input(x, data_format)
    x, anchors, widths = _histogram_inputs(x, anchors, widths, data_format)
    k = anchors.shape[-1]
    params = []
    for name, value in (("gamma", gamma), ("beta", beta)):
        value = kops.cast(_as_float_tensor(name, value), x.dtype)
        if tuple(value.shape) != (k,):
            raise ValueError(
                f"`{name}` must have shape ({k},), one value per anchor. "
                f"Received: {name}.shape={tuple(value.shape)}"
            )
        params.append(value)
    entries = tuple(range(len(x.shape)))
    if moments is None:
        mean, variance = _histogram_moments(
            *(kops.stop_gradient(v) for v in (x, anchors, widths)),
            synchronized=synchronized,
        )
        count = (
            distributed.batch_count(x, entries)
            if distributed.spans_replicas(entries, synchronized)
            else kops.convert_to_tensor(_count(x, entries), x.dtype)
        )
        count = (kops.reshape(count, ()),)
    else:
        mean, variance = (
            kops.reshape(kops.cast(_as_float_tensor(n, v), x.dtype), (k,))
            for n, v in zip(("mean", "variance"), moments)
        )
        count = ()
    inv = kops.rsqrt(variance + epsilon)
    gate = _gate_with_gradient(
        bool(count), anchors.shape[0] != 1, data_format, synchronized
    )
    return gate(x, anchors, widths, *params, mean, inv, *count), mean, variance


def _histogram_moments(x, anchors, widths, synchronized):
    """The mean and centred variance of every anchor's soft assignments of
    ``x``, ``(K,)`` each (global under synchronized data parallelism)."""
    entries = tuple(range(len(x.shape)))
    if distributed.spans_replicas(entries, synchronized):
        count = kops.reshape(distributed.batch_count(x, entries), ())

        def mean_of(t):
            return distributed.replica_sum(_axis_sum(t, entries, False, True)) / count
    else:

        def mean_of(t):
            return _axis_mean(t, entries, False, True)

    assignments = _Recomputed(lambda *v: _assignments(*v)[0], x, anchors, widths)
    mean = mean_of(assignments())
    return mean, mean_of(assignments.then(lambda h, m: kops.square(h - m), mean)())


def _step(v):
    """``1`` where ``v > 0``, else ``0``, in ``v``'s dtype: ``sign(v + |v|)``.

    This and ``relu(v) = (v + |v|) / 2`` in :func:`_gate_terms` are
    arithmetic without constants, which XLA fuses where a comparison and a
    select, or a maximum with a broadcast zero that every kernel shares,
    would be written out.
    """
    return kops.sign(v + kops.abs(v))


def _gate_terms(x, anchors, widths, gamma, beta, mean, inv):
    """``(g, (r, h, d, w, c, z / 2, scale))``: the gate of
    :func:`histogram_gate` and its terms (:func:`_gate_with_gradient`)."""
    h, d, w = _assignments(x, anchors, widths, fused=True)
    c = h - mean
    scale = gamma * inv
    # z / 2, with z the normalised h: sum_k relu(z_k) = sum_k (z/2 + |z/2|),
    # arithmetic without a constant of the map's shape (see _assignments).
    half = c * (scale * 0.5) + beta * 0.5
    # sigmoid(s) of s = sum_k relu(z_k) >= 0 as exp(-log1p(r)), r = exp(-s):
    # XLA expands sigmoid into 1 / (1 + exp(-s)), two constants of the map's
    # shape; and g (1 - g) = g**2 r, free of cancellation as g nears 1.
    r = kops.exp(-kops.sum(half + kops.abs(half), axis=-1))
    g = kops.exp(-kops.log1p(r))
    return g, (r, h, d, w, c, half, scale)


@functools.cache
def _gate_with_gradient(
    batch_moments: bool, per_channel: bool, data_format, synchronized
):
    """:func:`histogram_gate`'s op and its gradient, for ``x``, the anchors,
    the widths, ``gamma`` and ``beta`` (``mean``, ``inv`` and ``count``
    take none: with batch moments their dependence on ``x`` is in the
    gradient of ``h``).

    With ``z = c s + beta`` (``c = h - mean``, ``s = gamma inv``), ``g =
    sigmoid(sum_k relu(z_k))`` and the upstream ``u``: ``p = u g (1 - g)
    [z > 0]``; with batch moments ``dh = s (p - (sum p + c inv**2 sum p c) /
    N)`` (the batch norm's), else ``dh = s p``; the softmax's ``dl = h (dh -
    sum_k h dh)``; and ``dx = -2 sum_k dl w d``, ``d anchors = 2 sum dl w
    d``, ``d widths = -sum dl d**2 [widths > 0]`` over the entries each
    anchor serves. ``sum p`` and ``sum p c`` are all-reduced under
    synchronized data parallelism (:func:`keras_ssr.distributed.reducer`).
    The soft assignments are recomputed from ``x`` for the gradient, and
    for each of its three reading kernels under XLA (:class:`_Recomputed`).
    """

    @kops.custom_gradient
    def gate(x, anchors, widths, gamma, beta, mean, inv, *count):
        reduce = distributed.reducer(synchronized) if batch_moments else None
        inputs = (x, anchors, widths, gamma, beta, mean, inv)
        g = _gate_terms(*inputs)[0]

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            u = kops.cast(upstream, x.dtype)

            def terms(u, *inputs):
                g, (r, h, d, w, c, z, scale) = _gate_terms(*inputs)
                p = kops.expand_dims(u * kops.square(g) * r, -1) * _step(z)
                return p, h, d, w, c, scale

            terms = _Recomputed(terms, u, *inputs)
            entries = tuple(range(len(x.shape)))
            total = _axis_sum(terms()[0], entries, True)
            moment = _axis_sum(terms.then(lambda v: v[0] * v[4])(), entries, True)
            sums = (total, moment)
            if batch_moments:
                sums = (reduce(total, "sum"), reduce(moment, "sum"), count[0])

            def adjoint(values, inv, *sums):
                p, h, d, w, c, scale = values
                dh = p
                if batch_moments:
                    total, moment, n = sums
                    dh = p - (total + c * (moment * kops.square(inv))) / n
                dh = dh * scale
                dl = h * (dh - kops.sum(h * dh, axis=-1, keepdims=True))
                return dl, d, w

            adjoint = terms.then(adjoint, inv, *sums)

            # dl d w times -2 (for dx) and 2 (the anchors), factors folded
            # into w: no constant of the map's shape (see _assignments)
            def slope(v, factor):
                dl, d, w = v
                return dl * d * (w * factor)

            one = kops.ones_like(gamma)
            inward = adjoint.then(slope, -2.0 * one)
            outward = adjoint.then(slope, 2.0 * one)
            curvature = adjoint.then(lambda v: v[0] * kops.square(v[1]))
            rows = _anchor_row_axes(len(x.shape), per_channel, data_format)
            dx = _written(kops.sum(inward(), axis=-1))
            d_anchors = _axis_sum(outward(), rows, True)
            d_widths = _axis_sum(curvature(), rows, True)
            d_anchors = kops.reshape(d_anchors, kops.shape(anchors))
            d_widths = kops.reshape(d_widths, kops.shape(widths)) * -_step(widths)
            d_gamma = kops.reshape(moment, (-1,)) * inv
            d_beta = kops.reshape(total, (-1,))
            grads = (dx, d_anchors, d_widths, d_gamma, d_beta, None, None)
            return grads + (None,) * len(count)

        return g, grad

    return gate


def _anchor_row_axes(ndim: int, per_channel: bool, data_format: str) -> tuple:
    """The axes of ``h`` (rank ``ndim + 1``) summed for the anchors' gradient:
    every axis of the entries, less the channel axis with one row per channel."""
    if not per_channel:
        return tuple(range(ndim))
    channel = _checks.channel_axis(data_format, ndim)
    return tuple(a for a in range(ndim) if a != channel)


# --------------------------------------------------------------------------
# Cosine bases and frequency pooling


def cosine_bases(size: int, low_freq: int, basis: str = "transposed_dct") -> np.ndarray:
    """The one-dimensional cosine bases of FCA, ``(low_freq, size)``, float64.

    Row ``u`` at position ``i``:

    - ``"transposed_dct"`` (the follow-up's code; formerly ``"followup"``):
      ``cos(pi * i * (u + 1/2) / size)``, the first rows of the transposed
      DCT-II matrix: position and frequency are swapped, so row 0 is not
      constant;
    - ``"dct"`` (FcaNet's DCT-II, Qin et al. 2021):
      ``cos(pi * u * (i + 1/2) / size)``; row 0 is all ones.

    A 2-D basis is the outer product of two rows, ``b_uv(i, j) =
    B_H[u, i] * B_W[v, j]``, so only ``low_freq`` rows per axis are needed.
    """
    size = _checks.check_int("size", size, 1)
    low_freq = _checks.check_int("low_freq", low_freq, 1)
    basis = _checks.check_choice("basis", basis, BASES, RENAMED_BASES)
    u = np.arange(low_freq, dtype=np.float64)[:, None]
    i = np.arange(size, dtype=np.float64)[None, :]
    if basis == "transposed_dct":
        return np.cos(np.pi * i * (u + 0.5) / size)
    return np.cos(np.pi * u * (i + 0.5) / size)


def frequency_groups(channels: int, low_freq: int, rank: int) -> np.ndarray:
    """The frequency of every channel on every spatial axis, ``(rank, channels)``.

    Channels are split into ``low_freq**rank`` contiguous groups of equal
    size; group ``g`` has the frequencies of ``g``'s base-``low_freq``
    digits, most significant first (in 2-D: ``g = u * low_freq + v``, the
    follow-up's order).
    """
    groups = low_freq**rank
    if channels % groups:
        raise ValueError(
            f"The channel count must be divisible by low_freq**{rank} = {groups}. "
            f"Received: channels={channels}, low_freq={low_freq}"
        )
    per_group = channels // groups
    digits = np.array(list(itertools.product(range(low_freq), repeat=rank)))
    return np.repeat(digits, per_group, axis=0).T


def frequency_pool(
    x,
    low_freq: int,
    basis: str = "transposed_dct",
    data_format: str = "channels_last",
):
    """FCA's multi-spectral pooling: one frequency component per channel.

    Channel ``c`` in group ``g`` (see :func:`frequency_groups`) gives
    ``sum_p b_g(p) x_c(p)`` over the spatial positions ``p``, with ``b_g``
    the separable cosine basis of :func:`cosine_bases`. Computed axis by
    axis: the input is weighted by one ``(size, channels)`` table and
    summed over one spatial axis at a time, so nothing larger than ``x`` is
    ever formed (the follow-up's code builds an ``H x H x C x C`` array).
    On square 2-D maps this equals the follow-up's result exactly; it also
    takes non-square, 1-D and 3-D maps (``low_freq**d`` groups in ``d``-D).

    Args:
        x: floating-point tensor with 1, 2 or 3 spatial axes of static size
            and ``channels`` divisible by ``low_freq**d``.
        low_freq: number of frequencies per spatial axis, at least 1.
        basis: ``"transposed_dct"`` or ``"dct"`` (:func:`cosine_bases`).
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Returns:
        Tensor ``(batch, channels)``, float32 at least.
    """
    data_format = _checks.standardize_data_format(data_format)
    low_freq = _checks.check_int("low_freq", low_freq, 1)
    basis = _checks.check_choice("basis", basis, BASES, RENAMED_BASES)
    x = _as_float_tensor("x", x)
    spatial = _check_input(x, data_format)
    sizes = [x.shape[a] for a in spatial]
    if any(size is None for size in sizes):
        raise ValueError(
            "frequency_pool needs static spatial sizes to build its bases. "
            f"Received: x.shape={tuple(x.shape)}"
        )
    channels = x.shape[_checks.channel_axis(data_format, len(x.shape))]
    freqs = frequency_groups(channels, low_freq, len(spatial))
    y = _float32_or_wider(x)
    tables = [cosine_bases(n, low_freq, basis)[f] for n, f in zip(sizes, freqs)]
    if math.prod(sizes) * len(freqs[0]) <= FULL_TABLE_ENTRIES:
        # One weighted sum: the product of the axes' tables, (C, *sizes).
        table = tables[0]
        for t in tables[1:]:
            table = table[..., None] * t.reshape(
                t.shape[:1] + (1,) * (table.ndim - 1) + t.shape[1:]
            )
        if data_format == "channels_last":
            table = np.moveaxis(table, 0, -1)
        table = kops.convert_to_tensor(table[None], dtype=y.dtype)
        return _axis_sum(y * table, spatial, False)
    # Axis by axis, the last spatial axis first so the others keep their places.
    for k in reversed(range(len(spatial))):
        table = tables[k]  # (C, size)
        ndim = len(y.shape)
        axis = spatial[k]
        channel = _checks.channel_axis(data_format, ndim)
        shape = [1] * ndim
        shape[axis] = sizes[k]
        shape[channel] = table.shape[0]
        order = (1, 0) if axis < channel else (0, 1)
        table = np.transpose(table, order).reshape(shape)
        y = kops.sum(y * kops.convert_to_tensor(table, dtype=y.dtype), axis=axis)
    return y


# --------------------------------------------------------------------------
# Style pooling


def style_pool(x, data_format: str = "channels_last"):
    """SRM's style statistics: per-channel spatial mean and standard deviation.

    ``mean_c`` and ``sqrt(var_c + 1e-12)`` with the biased variance, both
    over the spatial axes of each sample (two passes, axis by axis, so that
    float32 does not cancel).

    Returns:
        ``(mean, std)``, two ``(batch, channels)`` tensors, float32 at least.
    """
    data_format = _checks.standardize_data_format(data_format)
    x = _as_float_tensor("x", x)
    spatial = _check_input(x, data_format)
    x = _float32_or_wider(x)
    mean, variance = centered_moments(x, spatial)
    mean = kops.squeeze(mean, axis=spatial)
    variance = kops.squeeze(variance, axis=spatial)
    return mean, kops.sqrt(variance + STYLE_EPSILON)
