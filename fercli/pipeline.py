"""THE shared path: image -> faces (detector: boxes, scores, landmarks) ->
upright crops (training's preprocessing) -> one batched forward pass (for one
image, or for several: `classify_many`) -> a Faces record with class
probabilities. `predict`, `video`, `explain`, `serve` and the Ray engine all use it.

    from fercli import Analyzer
    faces = Analyzer().analyze(cv2.imread("photo.jpg"))
    for face in faces:
        print(face.box, face.emotion, face.confidence)
"""
from __future__ import annotations

import threading

import numpy as np

from fercli.data import face_crop, to_gray
from fercli.faces import Faces


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
        from fercli.modelfile import load_model

        # a loaded model (lite.LiteModel, inference.EmotionModel), or its name or file for modelfile.load_model
        self.model = model if hasattr(model, "predict") else load_model(model)
        if detector is None or isinstance(detector, str):
            detector = make_detector(detector or DEFAULT_DETECTOR, **detector_options)
        self.detector = detector
        self.align = align
        self.lock = threading.RLock()

    @property
    def classes(self) -> list[str]:
        return self.model.classes

    def detect(self, image: np.ndarray) -> Faces:
        """The faces of one image, not yet classified (boxes, scores, landmarks)."""
        return self.detector.detect(image)

    def classify(self, image: np.ndarray, faces: Faces) -> Faces:
        """One forward pass for all faces of one image."""
        return self.classify_many([(image, faces)])[0]

    def classify_many(self, detected: list[tuple[np.ndarray, Faces]]) -> list[Faces]:
        """One forward pass for the faces of several images or frames (full
        batches for the classifier); [(image, faces)] -> the faces classified."""
        crops = [self.crops(image, faces) for image, faces in detected if len(faces)]
        probabilities = self.model.predict(np.concatenate(crops)) if crops else np.zeros((0, len(self.classes)), np.float32)
        ends = np.cumsum([len(faces) for _, faces in detected])
        return [faces.classified(probabilities[end - len(faces):end], self.classes) for (_, faces), end in zip(detected, ends)]

    def crops(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        """The model's input for each face: uint8 (N, S, S), upright where the
        faces have landmarks and `align` is on, preprocessed as in training."""
        size = self.model.input_size
        if len(faces) == 0:
            return np.zeros((0, size, size), np.uint8)
        gray = to_gray(image)
        landmarks = faces.landmarks if self.align else [None] * len(faces)
        return np.stack([face_crop(gray, box, points, size) for box, points in zip(faces.boxes, landmarks)])

    def analyze(self, image: np.ndarray) -> Faces:
        with self.lock:
            return self.classify(image, self.detect(image))
