"""THE shared path: image -> faces (detector: boxes, scores, landmarks) ->
upright crops (training's preprocessing) -> one batched forward pass -> Face
records. `predict`, `video`, `explain` and `serve` all use it.

    from fercli import Analyzer
    faces = Analyzer().analyze(cv2.imread("photo.jpg"))
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from fercli.data import face_crop, to_gray


@dataclass
class Face:
    box: tuple[int, int, int, int]          # x, y, w, h in image pixels
    emotion: str
    confidence: float
    probabilities: dict[str, float] = field(default_factory=dict)
    track: int | None = None                # set by video tracking
    score: float | None = None              # the detector's score (None: the detector gives none)
    landmarks: tuple | None = None          # 5 (x, y): left eye, right eye, nose, mouth left, mouth right


class Analyzer:
    """Detector + emotion model, loaded once; `analyze(image)` gives the Faces.

    `detector`: a name (`centerface`, the default, or `haar`) or a detector
    object; `detector_options` go to it (min_face, min_score, detect_scale;
    cascade, scale_factor, min_neighbors for haar). `align`: turn each face
    upright by its eye line before classifying it (detectors with landmarks).
    `analyze` may be called from several threads: calls take turns on `lock`
    (re-entrant, for callers that need several steps in one turn)."""

    def __init__(self, model=None, detector=None, align: bool = True, **detector_options):
        from fercli.detect import DEFAULT_DETECTOR, make_detector
        from fercli.inference import EmotionModel

        self.model = model if isinstance(model, EmotionModel) else EmotionModel(model)
        if detector is None or isinstance(detector, str):
            detector = make_detector(detector or DEFAULT_DETECTOR, **detector_options)
        self.detector = detector
        self.align = align
        self.lock = threading.RLock()

    @property
    def classes(self) -> list[str]:
        return self.model.classes

    def detect(self, image: np.ndarray):
        """The Detections of one image (boxes, scores, landmarks)."""
        return self.detector.detect(image)

    def classify(self, image: np.ndarray, detections) -> list[Face]:
        """One forward pass for all faces of one image."""
        if len(detections) == 0:
            return []
        probabilities = self.model.predict(self.crops(image, detections.boxes, detections.landmarks))
        return [self._face(box, p, score, points)
                for box, p, score, points in zip(detections.boxes, probabilities, detections.scores, detections.landmarks)]

    def crops(self, image: np.ndarray, boxes, landmarks=None) -> np.ndarray:
        """The model's input for each face: uint8 (N, S, S), upright where
        landmarks are given and `align` is on, preprocessed as in training."""
        gray = to_gray(image)
        size = self.model.input_size
        if landmarks is None or not self.align:
            landmarks = [None] * len(boxes)
        return np.stack([face_crop(gray, box, points, size) for box, points in zip(boxes, landmarks)])

    def face_crops(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        """The model's input for Faces found earlier (as `classify` made it)."""
        return self.crops(image, [f.box for f in faces],
                          [np.full((5, 2), np.nan) if f.landmarks is None else f.landmarks for f in faces])

    def analyze(self, image: np.ndarray) -> list[Face]:
        with self.lock:
            return self.classify(image, self.detect(image))

    def _face(self, box, probabilities: np.ndarray, score, points) -> Face:
        best = int(np.argmax(probabilities))
        has_points = np.isfinite(points).all()
        return Face(tuple(int(v) for v in box), self.classes[best], float(probabilities[best]),
                    {c: float(p) for c, p in zip(self.classes, probabilities)},
                    score=float(score) if np.isfinite(score) else None,
                    landmarks=tuple((float(x), float(y)) for x, y in points) if has_points else None)
