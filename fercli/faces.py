"""All faces of one image or video frame as one record of arrays, in the spirit
of supervision's Detections: the detector fills boxes, scores and landmarks,
the analyzer adds class probabilities, the video tracker adds track ids.

    faces = Analyzer().analyze(image)       # a Faces record
    faces.boxes, faces.probabilities        # arrays, one row per face
    faces[faces.confidences > 0.5]          # filtered: a Faces record again
    faces[0]                                # one Face: box, emotion, confidence, ...
    for face in faces: ...                  # Face by Face

A face whose top probability is under `min_confidence`, or whose quality is
under `min_quality`, has the emotion UNCERTAIN (its probabilities are kept).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np

# Landmark order as CenterFace gives it, left and right as seen in the image.
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
UNCERTAIN = "uncertain"


@dataclass
class Face:
    """One face, as the Python API and the sinks see it."""
    box: tuple[int, int, int, int]          # x, y, w, h in image pixels
    emotion: str
    confidence: float
    probabilities: dict[str, float] = field(default_factory=dict)
    track: int | None = None                # set by video tracking
    score: float | None = None              # the detector's score (None: the detector gives none)
    landmarks: tuple | None = None          # 5 (x, y) in LANDMARK_NAMES order
    size: int = 0                           # the face's side in pixels (the box's longer side)
    sharpness: float | None = None          # of the crop the classifier saw (fercli.quality)
    pose: tuple | None = None               # yaw, pitch, roll in degrees (None without landmarks)
    quality: float | None = None            # 0-1: how likely the emotion is right (fercli.quality)


@dataclass
class Faces:
    boxes: np.ndarray                       # int32 (N, 4) x, y, w, h
    scores: np.ndarray                      # float32 (N,), NaN where the detector gives none
    landmarks: np.ndarray                   # float32 (N, 5, 2), NaN where the detector gives none
    probabilities: np.ndarray | None = None  # float32 (N, C) over `classes`, once classified
    classes: list[str] = field(default_factory=list)
    tracks: np.ndarray | None = None        # int64 (N,), -1 where untracked
    sharpness: np.ndarray | None = None     # float32 (N,), NaN until classified
    poses: np.ndarray | None = None         # float32 (N, 3) yaw, pitch, roll, NaN without landmarks
    quality: np.ndarray | None = None       # float32 (N,), NaN until classified
    min_confidence: float = 0.0             # under it (or under min_quality) the emotion is UNCERTAIN
    min_quality: float = 0.0

    def __post_init__(self):
        n = len(self.boxes)
        if self.probabilities is None:
            self.probabilities = np.zeros((n, len(self.classes)), np.float32)
        if self.tracks is None:
            self.tracks = np.full(n, -1, np.int64)
        for name, shape in (("sharpness", (n,)), ("poses", (n, 3)), ("quality", (n,))):
            if getattr(self, name) is None:
                setattr(self, name, np.full(shape, np.nan, np.float32))

    @classmethod
    def empty(cls, classes: list[str] | None = None) -> "Faces":
        return cls(np.zeros((0, 4), np.int32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32),
                   classes=list(classes or []))

    @classmethod
    def from_boxes(cls, boxes) -> "Faces":
        """Boxes of a detector that gives no score and no landmarks."""
        boxes = np.asarray(boxes, np.int32).reshape(-1, 4)
        n = len(boxes)
        return cls(boxes, np.full(n, np.nan, np.float32), np.full((n, 5, 2), np.nan, np.float32))

    @classmethod
    def concatenate(cls, parts: list["Faces"]) -> "Faces":
        if not parts:
            return cls.empty()
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) if f.name in PER_FACE_FIELDS
                      else getattr(parts[0], f.name) for f in fields(cls)})

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index):
        """An int gives one Face; a slice, index array or boolean mask gives a Faces record."""
        if isinstance(index, (int, np.integer)):
            return self.face(int(index))
        return replace(self, classes=list(self.classes), **{name: getattr(self, name)[index] for name in PER_FACE_FIELDS})

    def __iter__(self):
        return (self.face(i) for i in range(len(self)))

    @property
    def confidences(self) -> np.ndarray:
        return self.probabilities.max(axis=1) if self.classes else np.zeros(len(self), np.float32)

    @property
    def sizes(self) -> np.ndarray:
        return self.boxes[:, 2:].max(axis=1) if len(self) else np.zeros(0, np.int32)

    @property
    def uncertain(self) -> np.ndarray:
        """True where the emotion is UNCERTAIN: confidence under min_confidence or quality under min_quality."""
        return self._unsure(self.confidences, self.quality)

    def _unsure(self, confidence, quality):
        below = confidence < self.min_confidence
        if self.min_quality > 0:
            below = below | ~(quality >= self.min_quality)   # an unknown (NaN) quality counts as under
        return below

    @property
    def emotions(self) -> list[str]:
        if not self.classes:
            return [""] * len(self)
        return [UNCERTAIN if unsure else self.classes[i] for i, unsure in zip(self.probabilities.argmax(axis=1), self.uncertain)]

    def face(self, i: int) -> Face:
        probabilities = self.probabilities[i]
        best = int(np.argmax(probabilities)) if self.classes else 0
        points, pose = self.landmarks[i], self.poses[i]
        return Face(tuple(int(v) for v in self.boxes[i]),
                    (UNCERTAIN if self._unsure(probabilities[best], self.quality[i]) else self.classes[best])
                    if self.classes else "", float(probabilities[best]) if self.classes else 0.0,
                    {c: float(p) for c, p in zip(self.classes, probabilities)},
                    track=int(self.tracks[i]) if self.tracks[i] >= 0 else None,
                    score=_number(self.scores[i]),
                    landmarks=tuple((float(x), float(y)) for x, y in points) if np.isfinite(points).all() else None,
                    size=int(self.sizes[i]), sharpness=_number(self.sharpness[i]),
                    pose=tuple(float(v) for v in pose) if np.isfinite(pose).all() else None,
                    quality=_number(self.quality[i]))

    def classified(self, probabilities: np.ndarray, classes: list[str], **signals) -> "Faces":
        """The same faces with class probabilities (N, len(classes)) and any of
        sharpness, poses, quality, min_confidence, min_quality."""
        return replace(self, probabilities=np.asarray(probabilities, np.float32).reshape(len(self), len(classes)),
                       classes=list(classes), **signals)

    def tracked(self, tracks: np.ndarray, probabilities: np.ndarray) -> "Faces":
        """The same faces with track ids and (smoothed) probabilities."""
        return replace(self, probabilities=np.asarray(probabilities, np.float32), tracks=np.asarray(tracks, np.int64))

    def scaled(self, factor: float) -> "Faces":
        """The same faces in an image `factor` times the size."""
        return replace(self, boxes=np.round(self.boxes * factor).astype(np.int32), landmarks=self.landmarks * factor)

    def shifted(self, dx: int, dy: int) -> "Faces":
        """The same faces in an image whose origin lies at (-dx, -dy)."""
        return replace(self, boxes=self.boxes + np.array([dx, dy, 0, 0], np.int32),
                       landmarks=self.landmarks + np.array([dx, dy], np.float32))

    def in_reading_order(self) -> "Faces":
        return self[np.lexsort((self.boxes[:, 1], self.boxes[:, 0]))] if len(self) > 1 else self


# The fields that hold one row per face (filtered and concatenated together).
PER_FACE_FIELDS = ("boxes", "scores", "landmarks", "probabilities", "tracks", "sharpness", "poses", "quality")


def _number(value) -> float | None:
    return float(value) if np.isfinite(value) else None
