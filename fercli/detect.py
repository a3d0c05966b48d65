"""Face detectors behind one small interface: `detect(gray) -> (N, 4) int boxes x, y, w, h`."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from fercli.errors import UserError
from fercli.resources import resource_dir

DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"


class FaceDetector(Protocol):
    def detect(self, gray: np.ndarray) -> np.ndarray: ...


def merge_overlapping(boxes: np.ndarray, overlap: float = 0.5) -> np.ndarray:
    """Drop boxes that mostly overlap a larger kept box (intersection / smaller area)."""
    if len(boxes) < 2:
        return boxes
    order = np.argsort(-(boxes[:, 2] * boxes[:, 3]))
    kept: list[np.ndarray] = []
    for box in boxes[order]:
        x, y, w, h = box
        duplicate = False
        for kx, ky, kw, kh in kept:
            iw = min(x + w, kx + kw) - max(x, kx)
            ih = min(y + h, ky + kh) - max(y, ky)
            if iw > 0 and ih > 0 and iw * ih > overlap * min(w * h, kw * kh):
                duplicate = True
                break
        if not duplicate:
            kept.append(box)
    kept.sort(key=lambda b: (b[0], b[1]))  # reading order, left to right
    return np.array(kept, dtype=np.int32).reshape(-1, 4)


class HaarDetector:
    """OpenCV Haar cascade. Images larger than `max_side` are detected on a
    downscaled copy (`detect_scale` forces a scale) and boxes scaled back."""

    def __init__(self, cascade: str | None = None, scale_factor: float = 1.1, min_neighbors: int = 5,
                 min_face: int = 30, max_side: int = 960, detect_scale: float | None = None):
        path = Path(cascade) if cascade else resource_dir("cascades") / DEFAULT_CASCADE
        if not path.is_file():
            raise UserError(f"cascade file {path} not found.")
        self.classifier = cv2.CascadeClassifier(str(path))
        if self.classifier.empty():
            raise UserError(f"{path} is not a valid OpenCV cascade file.")
        if scale_factor <= 1.0:
            raise UserError("--scale-factor must be greater than 1.0.")
        self.scale_factor, self.min_neighbors, self.min_face = scale_factor, min_neighbors, min_face
        self.max_side, self.detect_scale = max_side, detect_scale

    def detect(self, gray: np.ndarray) -> np.ndarray:
        height, width = gray.shape[:2]
        scale = self.detect_scale or min(1.0, self.max_side / max(height, width))
        small = gray if scale == 1.0 else cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
        min_side = max(8, round(self.min_face * scale))
        if min(small.shape[:2]) < min_side:
            return np.zeros((0, 4), np.int32)
        found = self.classifier.detectMultiScale(small, scaleFactor=self.scale_factor,
                                                 minNeighbors=self.min_neighbors, minSize=(min_side, min_side))
        boxes = np.round(np.asarray(found, dtype=np.float64).reshape(-1, 4) / scale).astype(np.int32)
        return merge_overlapping(boxes)
