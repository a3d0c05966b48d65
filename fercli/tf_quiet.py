"""Import TensorFlow without its start-up log lines on stderr.

TensorFlow's C++ side logs (oneDNN, CUDA probing) straight to file descriptor 2
before any Python-level setting applies, so stderr is pointed at /dev/null
while TensorFlow loads and finds its devices. Training also runs on Keras' JAX
backend (KERAS_BACKEND=jax, e.g. on a GPU machine without TensorFlow):
`load_keras` loads TensorFlow only when it is the backend.
"""
import os
import signal
import sys
import threading
from contextlib import contextmanager, nullcontext

_loaded = None


@contextmanager
def interrupts_deferred(stderr: int = 2):
    """Ctrl-C while TensorFlow (and JAX, where installed) load would land inside
    their C extensions' initialisation and surface as an ImportError, or be lost;
    meanwhile it ends the process at once, as fercli's own Ctrl-C does (exit 130)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    def stop_now(*_):
        os.write(stderr, b"interrupted.\n")
        os._exit(130)  # nothing is written yet while the libraries load: nothing to finish

    previous = signal.signal(signal.SIGINT, stop_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def quietly(defer_interrupts: bool = True):
    """File descriptor 2 points at /dev/null meanwhile: what C and C++ code
    (TensorFlow, ONNX Runtime, Ray, libpng) prints there bypasses Python. With
    `defer_interrupts`, Ctrl-C meanwhile ends the process (interrupts_deferred)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        with interrupts_deferred(stderr=saved) if defer_interrupts else nullcontext():
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:   # a finder that refuses it
        return False


def tensorflow_available() -> bool:
    return installed("tensorflow")


def require_tensorflow(what: str) -> None:
    """TensorFlow is in the train extra: the lean install runs predict, video, serve and eval without it."""
    if not tensorflow_available():
        from fercli.errors import UserError

        raise UserError(f'{what} needs TensorFlow, which this installation leaves out: pip install "fercli[train]".')


def require_keras_backend(what: str, jax: bool = False) -> None:
    """Keras and its backend are there: JAX where asked for (KERAS_BACKEND=jax), else TensorFlow."""
    if jax or os.environ.get("KERAS_BACKEND") == "jax":
        if not (installed("jax") and installed("keras")):
            from fercli.errors import UserError

            raise UserError(f"{what} on the JAX backend needs jax and keras: pip install jax keras.")
    else:
        require_tensorflow(what)


def tensorflow():
    global _loaded
    if _loaded is None:
        require_tensorflow("this command")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with quietly():
            import tensorflow as tf
            import keras  # noqa: F401  (loads TensorFlow's plugins once, quietly)

            tf.constant(0)  # device initialisation logs too
        _loaded = tf
    return _loaded


def load_keras():
    """Keras, its TensorFlow backend loaded quietly first when that is the backend."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        tensorflow()
    with interrupts_deferred():
        import keras

    return keras
