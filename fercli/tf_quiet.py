"""Import TensorFlow without its start-up log lines on stderr.

TensorFlow's C++ side logs (oneDNN, CUDA probing) straight to file descriptor 2
before any Python-level setting applies, so stderr is pointed at /dev/null
while TensorFlow loads and finds its devices. Training also runs on Keras' JAX
backend (KERAS_BACKEND=jax, e.g. on a GPU machine without TensorFlow):
`load_keras` loads TensorFlow only when it is the backend.
"""
import os
import sys

_loaded = None


def tensorflow():
    global _loaded
    if _loaded is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            import tensorflow as tf
            import keras  # noqa: F401  (loads TensorFlow's plugins once, quietly)

            tf.constant(0)  # device initialisation logs too
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
        _loaded = tf
    return _loaded


def load_keras():
    """Keras, its TensorFlow backend loaded quietly first when that is the backend."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        tensorflow()
    import keras

    return keras
