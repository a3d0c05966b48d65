"""THE shared path: image -> faces (detector) -> crops (training's preprocessing)
-> one batched forward pass -> Face records. `predict` and `video` both use it.

    from fercli import Analyzer
    faces = Analyzer().analyze(cv2.imread("photo.jpg"))
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from fercli.data import prepare_face, to_gray


@dataclass
class Face:
    box: tuple[int, int, int, int]          # x, y, w, h in image pixels
    emotion: str
    confidence: float
    probabilities: dict[str, float] = field(default_factory=dict)
    track: int | None = None                # set by video tracking

    def as_dict(self) -> dict:
        x, y, w, h = self.box
        return {"x": x, "y": y, "w": w, "h": h, "emotion": self.emotion, "confidence": self.confidence,
                "probabilities": self.probabilities, "track": self.track}


class Analyzer:
    """Detector + emotion model, loaded once; `analyze(image)` gives the Faces.
    `analyze` may be called from several threads: OpenCV's cascade is not
    thread-safe, so calls take turns on `lock` (re-entrant, for callers that
    need several steps in one turn)."""

    def __init__(self, model=None, detector=None, **detector_options):
        from fercli.detect import HaarDetector
        from fercli.model import EmotionModel

        self.model = model if isinstance(model, EmotionModel) else EmotionModel(model)
        self.detector = detector or HaarDetector(**detector_options)
        self.lock = threading.RLock()

    @property
    def classes(self) -> list[str]:
        return self.model.classes

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(grayscale image, boxes)."""
        gray = to_gray(image)
        return gray, self.detector.detect(gray)

    def classify(self, gray: np.ndarray, boxes: np.ndarray) -> list[Face]:
        """One forward pass for all boxes of one image."""
        if len(boxes) == 0:
            return []
        probabilities = self.model.predict(self.crops(gray, boxes))
        return [self._face(box, p) for box, p in zip(boxes, probabilities)]

    def crops(self, gray: np.ndarray, boxes) -> np.ndarray:
        """The model's input for each box: uint8 (N, S, S), preprocessed as in training."""
        size = self.model.input_size
        return np.stack([prepare_face(gray[y:y + h, x:x + w], size) for x, y, w, h in boxes])

    def analyze(self, image: np.ndarray) -> list[Face]:
        with self.lock:
            gray, boxes = self.detect(image)
            return self.classify(gray, boxes)

    def _face(self, box, probabilities: np.ndarray) -> Face:
        best = int(np.argmax(probabilities))
        return Face(tuple(int(v) for v in box), self.classes[best], float(probabilities[best]),
                    {c: float(p) for c, p in zip(self.classes, probabilities)})
