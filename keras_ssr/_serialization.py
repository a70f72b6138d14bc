"""Registration of keras_ssr objects with Keras' serialisation."""

import keras

PACKAGE = "keras_ssr"


def register(obj):
    """Registers ``obj`` as serialisable under the package ``keras_ssr``."""
    return keras.saving.register_keras_serializable(package=PACKAGE)(obj)
