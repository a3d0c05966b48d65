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

import copy
import threading

import numpy as np

from fercli.data import face_crop, to_gray
from fercli.errors import UserError
from fercli.faces import Faces
from fercli.quality import DEFAULT_MIN_QUALITY, head_pose, quality, quality_features, sharpness


class Analyzer:
    """Detector + emotion model, loaded once; `analyze(image)` gives the Faces.

    `detector`: a name (`centerface`, the default, or `haar`) or a detector
    object; `detector_options` go to it (min_face, min_score, detect_scale;
    cascade, scale_factor, min_neighbors for haar). `align`: turn each face
    upright by its eye line before classifying it (detectors with landmarks).
    `min_confidence`, `min_quality`: faces under either get the emotion
    `uncertain` (fercli.faces.UNCERTAIN; their probabilities are kept); the
    quality default (0.1) marks the detector's smaller, lower-scored false boxes.
    `threads`: ONNX Runtime's, for the detector and the classifier each
    (default resources.stage_threads(), half the CPUs, as video decodes and
    encodes beside them; photos, where detection is nearly all the work, give
    every CPU: resources.cpu_threads()).
    `detect_workers`: images fercli.run detects at once, each on its own
    thread, sharing the detector's `threads` (ONNX Runtime runs one session
    from several threads; the Haar cascade, which spreads one image over the
    CPUs itself, stays at one).
    `analyze` may be called from several threads: calls take turns on `lock`
    (re-entrant, for callers that need several steps in one turn)."""

    def __init__(self, model=None, detector=None, align: bool = True, min_confidence: float = 0.0,
                 min_quality: float = DEFAULT_MIN_QUALITY, threads: int | None = None, detect_workers: int = 1,
                 **detector_options):
        from fercli.detect import DEFAULT_DETECTOR, make_detector
        from fercli.inference import load_model
        from fercli.resources import stage_threads

        # a loaded model (lite.LiteModel, inference.EmotionModel), or its name or file for inference.load_model
        self.model = model if hasattr(model, "predict") else load_model(model, threads=threads)
        if detector is None or isinstance(detector, str):
            # images detected side by side share the threads
            per_image = max(1, (threads or stage_threads()) // max(1, detect_workers))
            detector = make_detector(detector or DEFAULT_DETECTOR, threads=per_image, **detector_options)
        self.detector = detector
        self.detect_workers = max(1, detect_workers) if getattr(detector, "runs_concurrently", False) else 1
        self.align = align
        for name, value in (("min_confidence", min_confidence), ("min_quality", min_quality)):
            if not 0.0 <= float(value) <= 1.0:
                raise UserError(f"{name} must lie between 0 and 1 (got {value}).")
        self.min_confidence, self.min_quality = float(min_confidence), float(min_quality)
        self.lock = threading.RLock()

    @property
    def classes(self) -> list[str]:
        return self.model.classes

    def following(self, full_every: int) -> "Analyzer":
        """This analyzer for the frames of one video in order: the same model,
        its detector looking at the resolution the faces need between full
        passes every `full_every` calls (detect.FollowingDetector)."""
        from fercli.detect import FollowingDetector

        view = copy.copy(self)
        view.detector = FollowingDetector(self.detector, full_every)
        view.detect_workers = 1   # each frame's detection depends on the one before
        return view

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
        crops = np.concatenate(crops) if crops else np.zeros((0, self.model.input_size, self.model.input_size), np.uint8)
        probabilities = self.model.predict(crops) if len(crops) else np.zeros((0, len(self.classes)), np.float32)
        everyone = Faces.concatenate([faces for _, faces in detected]) if detected else Faces.empty()
        sharp, poses = sharpness(crops), head_pose(everyone.landmarks)
        trust = quality(quality_features(probabilities.max(axis=1) if len(crops) else np.zeros(0), everyone.sizes,
                                         sharp, poses, everyone.scores))
        ends = np.cumsum([len(faces) for _, faces in detected])
        return [faces.classified(probabilities[end - len(faces):end], self.classes, sharpness=sharp[end - len(faces):end],
                                 poses=poses[end - len(faces):end], quality=trust[end - len(faces):end],
                                 min_confidence=self.min_confidence, min_quality=self.min_quality)
                for (_, faces), end in zip(detected, ends)]

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
