"""What the parsers produce: a source weight and the U-Net slot it goes to."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SourceWeight:
    """A weight of the source file and its *slot* in a keras_ssr U-Net.

    A slot is ``"<keras_ssr layer name>/<weight>"``: ``"encoder_0_conv_1/
    kernel"``, ``"bottleneck_bn_0/moving_mean"``, ``"head/kernel"``, or for
    an attention layer ``"encoder_0_attention/<semantic name>"``
    (``".../alpha.bn.gamma"``). The original's constant box-sum kernels go to
    ``"encoder_{i}_attention/alpha.box_{j}.kernel"`` / ``".bias"``: checked,
    not stored.
    """

    origin: str  # the name (or checkpoint key) in the source
    slot: str
    value: np.ndarray


def unplaceable(origin: str, why: str) -> ValueError:
    return ValueError(
        f"Cannot place the source's weight {origin!r}: {why}. The source must hold "
        "the weights of the original's get_unet/get_ssr_unet model."
    )
