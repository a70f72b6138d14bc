"""Moving weights between keras_ssr and the original TF 2.14 implementation.

- :mod:`~keras_ssr.porting.names`: per-layer weights by *semantic name*
  (``squeeze.kernel``, ``alpha.bn.gamma``, ...), through the public
  ``semantic_variables()`` method every keras_ssr layer has:
  :func:`layer_weight_names`, :func:`get_layer_weights`,
  :func:`set_layer_weights`.
- :func:`load_weights`: the weights of the original's ``get_unet`` /
  ``get_ssr_unet`` models, from the ``.h5`` file or TF checkpoint its
  ``model.save_weights`` wrote or from a dict of its variable names, into a
  :mod:`keras_ssr.models` U-Net, by name (:mod:`~keras_ssr.porting.loading`).
- The readers, without TensorFlow: :func:`read_h5_weights` (``h5py``) and
  :func:`read_checkpoint_weights` (a self-contained TensorBundle / SSTable /
  protobuf reader, :mod:`~keras_ssr.porting.tensorbundle`). Both check what
  a file claims before they read it, and raise a :class:`WeightFileError`
  (a ``ValueError``) naming the file for a damaged one.
- The name parsers (:mod:`~keras_ssr.porting.keras_names`,
  :mod:`~keras_ssr.porting.checkpoint_keys`) and the registry of the
  original's attention scopes they consult
  (:func:`register_attention_scope`, :mod:`~keras_ssr.porting.scopes`).

See ``docs/porting.md`` for the name table and a walk-through.
"""

# family registers the recalibration family's attention scopes (in the
# follow-up's weight files) with the parsers.
from keras_ssr.porting import family as _family  # noqa: F401
from keras_ssr.porting._source import WeightFileError
from keras_ssr.porting.h5 import read_h5_weights
from keras_ssr.porting.loading import load_weights
from keras_ssr.porting.names import (
    SemanticLayer,
    get_layer_weights,
    layer_weight_names,
    set_layer_weights,
)
from keras_ssr.porting.scopes import (
    AttentionScope,
    attention_scopes,
    register_attention_scope,
)
from keras_ssr.porting.tensorbundle import read_checkpoint_weights

__all__ = [
    "AttentionScope",
    "SemanticLayer",
    "WeightFileError",
    "attention_scopes",
    "get_layer_weights",
    "layer_weight_names",
    "load_weights",
    "read_checkpoint_weights",
    "read_h5_weights",
    "register_attention_scope",
    "set_layer_weights",
]
