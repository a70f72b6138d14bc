"""Dataset loaders for the experiments (Kvasir-SEG, ISIC 2018, BUSI, image folders).

Every loader returns NumPy ``float32`` arrays ``(x, y)`` that any Keras
backend takes in ``model.fit``; nothing here needs TensorFlow's ``tf.data``.
Images come out in ``[0, 1]`` and masks in ``{0, 1}`` by default; see each
function for the options that reproduce the original scripts' raw values.

How each mask and image is interpreted is decided per file (or per array
sample), never for the whole dataset at once: the rules are in
:mod:`keras_ssr.data.masks` and ``docs/data.md``. Each loader prints one
line saying what it found (``verbose=False`` silences it).

Image folders are read with Pillow, an optional dependency
(``pip install keras-ssr[data]``).
"""

from keras_ssr.data._files import IMAGE_EXTENSIONS
from keras_ssr.data.busi import BUSI_CLASSES, busi_splits, load_busi
from keras_ssr.data.folders import load_image_mask_folders, load_kvasir_seg
from keras_ssr.data.isic import ISIC_SCALES, load_isic2018
from keras_ssr.data.masks import MAX_LABELS, interpret_mask

__all__ = [
    "BUSI_CLASSES",
    "IMAGE_EXTENSIONS",
    "ISIC_SCALES",
    "MAX_LABELS",
    "busi_splits",
    "interpret_mask",
    "load_busi",
    "load_image_mask_folders",
    "load_isic2018",
    "load_kvasir_seg",
]
