"""fercli: find faces, tell their emotions, train and evaluate emotion models.

Python API (runs the shipped models on ONNX Runtime, without TensorFlow):

    from fercli import Analyzer
    faces = Analyzer().analyze(image)   # image: numpy array as cv2.imread gives; a Faces record
    for face in faces:                  # Face: box, emotion, confidence, probabilities, score, landmarks
        ...
"""
__version__ = "0.1.0"

__all__ = ["Analyzer", "Face", "Faces", "__version__"]


def __getattr__(name):
    if name == "Analyzer":
        from fercli.pipeline import Analyzer

        return Analyzer
    if name in ("Face", "Faces"):
        from fercli import faces

        return getattr(faces, name)
    raise AttributeError(name)
