"""fercli: find faces, tell their emotions, train and evaluate emotion models.

Python API (TensorFlow loads on first use, not on import):

    from fercli import Analyzer
    faces = Analyzer().analyze(image)   # image: numpy array as cv2.imread gives
"""
__version__ = "0.1.0"

__all__ = ["Analyzer", "Face", "__version__"]


def __getattr__(name):
    if name in ("Analyzer", "Face"):
        from fercli import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
