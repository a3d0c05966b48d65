"""Drawing faces onto images: box, `emotion NN%` label, a colour per emotion."""
from __future__ import annotations

import zlib

import cv2
import numpy as np

from fercli.data import to_bgr

EMOTION_COLOURS = {  # BGR
    "angry": (40, 40, 220), "disgust": (40, 150, 60), "fear": (170, 60, 150), "happy": (0, 200, 255),
    "neutral": (170, 170, 170), "sad": (200, 110, 30), "surprise": (0, 140, 255), "contempt": (150, 150, 0),
}


def colour_for(emotion: str) -> tuple[int, int, int]:
    if emotion in EMOTION_COLOURS:
        return EMOTION_COLOURS[emotion]
    rng = np.random.default_rng(zlib.crc32(emotion.encode()))
    return tuple(int(v) for v in rng.integers(60, 230, 3))


LANDMARK_COLOURS = [(255, 255, 0), (255, 255, 0), (0, 255, 0), (255, 0, 255), (255, 0, 255)]  # eyes, nose, mouth


def draw_faces(image: np.ndarray, faces, landmarks: bool = False) -> np.ndarray:
    """A BGR copy of `image` with every face drawn (and its five landmarks with
    `landmarks`, where the detector gives them); sizes follow the image size."""
    canvas = to_bgr(image).copy()  # never drawn on the caller's image
    height, width = canvas.shape[:2]
    unit = max(min(height, width) / 600.0, 0.35)
    thickness = max(1, round(2 * unit))
    font_scale = 0.6 * unit
    for face in faces:
        x, y, w, h = face.box
        colour = colour_for(face.emotion)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, thickness, cv2.LINE_AA)
        if landmarks and face.landmarks:
            radius = max(2, round(min(w, h) / 40))
            for (px, py), dot in zip(face.landmarks, LANDMARK_COLOURS):
                cv2.circle(canvas, (round(px), round(py)), radius, dot, -1, cv2.LINE_AA)
        label = f"{face.emotion} {face.confidence:.0%}" + (f" #{face.track}" if face.track is not None else "")
        (tw, th), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(1, thickness // 2))
        top = y - th - baseline - 2 * thickness
        if top < 0:  # no room above the box: put the label inside it
            top = y
        cv2.rectangle(canvas, (x, top), (x + tw + 2 * thickness, top + th + baseline + 2 * thickness), colour, -1)
        text_colour = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
        cv2.putText(canvas, label, (x + thickness, top + th + thickness), cv2.FONT_HERSHEY_SIMPLEX,
                    font_scale, text_colour, max(1, thickness // 2), cv2.LINE_AA)
    return canvas
