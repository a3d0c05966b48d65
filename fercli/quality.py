"""How far to trust each face's emotion: head pose from the five landmarks,
sharpness of the crop the classifier saw, and one `quality` number in 0-1.

- Pose (degrees; NaN for a detector without landmarks, e.g. Haar), from the
  landmarks' geometry on a generic face (nose tip 0.82 half eye-distances in
  front of the eyes and mouth; Martins & Batista's 3D face points):
  yaw > 0 when the face turns towards the image's right (the nose moves
  right of the eye-mouth midline), pitch > 0 when the face tilts up (the
  nose moves towards the eye line), roll > 0 when it leans clockwise as seen
  (the eye on the image's right lower).
- Sharpness: variance of the Laplacian of the 48x48 crop divided by the
  crop's own variance, so blur (and a face too small for its upscaled crop)
  lowers it and lighting does not; a sharp frontal FER-2013 crop scores
  about 1.
- Quality: the probability that the box is a face (a logistic regression
  on the detector's score and the box's size) times the probability that the
  emotion is right if it is (one on the model's confidence and the face's
  size, sharpness and pose), both fitted on generated scenes of FER-2013
  validation faces, the first with the detector's false boxes down to score
  0.1, by `python benchmarks/bench_calibration.py --fit-quality`.
"""
from __future__ import annotations

import cv2
import numpy as np

NOSE_DEPTH = 0.82          # nose tip in front of the eye/mouth plane, in half eye-distances
FRONTAL_NOSE_HEIGHT = 0.53  # nose between the eye line (0) and the mouth line (1) on a frontal face
PITCH_GAIN = 2.37           # d(nose height)/d(tan pitch) on the generic face, inverted

# quality = P(the box is a face | score, size) x P(the emotion is right | a face: confidence, size, sharpness, pose),
# both logistic regressions fitted by benchmarks/bench_calibration.py --fit-quality.
FACE_FEATURES = ("score", "log2_size")
FACE_COEFFICIENTS, FACE_INTERCEPT = (8.08, 1.506), -11.08
EMOTION_FEATURES = ("confidence", "log2_size", "log_sharpness", "abs_yaw", "abs_pitch", "abs_roll", "no_landmarks")
EMOTION_COEFFICIENTS, EMOTION_INTERCEPT = (5.764, 0.1835, 0.1489, 0.002612, 0.01963, -0.002237, 0.1196), -4.135
HAAR_SCORE = 0.9           # stands for the score of a detector that gives none (Haar)
# The --min-quality default (fercli's CLI repeats it): on generated scenes it marks 35% of the detector's
# false boxes on face-like things (the smaller, lower-scored ones) and 2% of the true faces; 0.2 would
# mark 72% and 6%, and cost hard scenes 1-3 points of faces named right
# (benchmarks/bench_calibration.py --fit-quality prints the trade-off).
DEFAULT_MIN_QUALITY = 0.1


def head_pose(landmarks: np.ndarray) -> np.ndarray:
    """(N, 5, 2) landmarks (LANDMARK_NAMES order) -> float32 (N, 3) yaw, pitch, roll in degrees."""
    points = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    left_eye, right_eye, nose = points[:, 0], points[:, 1], points[:, 2]
    eyes, mouth = (left_eye + right_eye) / 2, (points[:, 3] + points[:, 4]) / 2
    across = right_eye - left_eye
    eye_distance = np.linalg.norm(across, axis=1)
    roll = np.degrees(np.arctan2(across[:, 1], across[:, 0]))
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = across / eye_distance[:, None]
        down = np.stack([-unit[:, 1], unit[:, 0]], axis=1)          # perpendicular, towards the mouth
        to_nose, to_mouth = nose - eyes, mouth - eyes
        height = np.einsum("ij,ij->i", to_nose, down) / np.einsum("ij,ij->i", to_mouth, down)
        # the nose's offset from the eye-mouth midline at the nose's height, in half eye-distances
        offset = (np.einsum("ij,ij->i", to_nose, unit) - height * np.einsum("ij,ij->i", to_mouth, unit)) / (eye_distance / 2)
        yaw = np.degrees(np.arctan(offset / NOSE_DEPTH))
        pitch = np.degrees(np.arctan((FRONTAL_NOSE_HEIGHT - height) * PITCH_GAIN))
    return np.stack([yaw, pitch, roll], axis=1).astype(np.float32)


def sharpness(crops: np.ndarray) -> np.ndarray:
    """uint8 (N, S, S) classifier crops -> float32 (N,): Laplacian variance / pixel variance."""
    values = []
    for crop in crops:
        crop = crop.astype(np.float32)
        spread = float(crop.var())
        values.append(float(cv2.Laplacian(crop, cv2.CV_32F).var()) / spread if spread > 1.0 else 0.0)
    return np.asarray(values, np.float32)


def quality_features(confidence, sizes, sharp, pose, scores) -> dict[str, np.ndarray]:
    """The named inputs of the quality model, one value per face. Faces without
    landmarks count as frontal (and say so in `no_landmarks`), without a
    detector score as scored HAAR_SCORE."""
    pose = np.asarray(pose, np.float64).reshape(-1, 3)
    missing = ~np.isfinite(pose).all(axis=1)
    pose = np.where(np.isfinite(pose), np.abs(pose), 0.0)
    scores = np.asarray(scores, np.float64)
    return {"confidence": np.asarray(confidence, np.float64),
            "log2_size": np.log2(np.maximum(np.asarray(sizes, np.float64), 1.0)),
            "log_sharpness": np.log(np.maximum(np.asarray(sharp, np.float64), 1e-3)),
            "abs_yaw": pose[:, 0], "abs_pitch": pose[:, 1], "abs_roll": pose[:, 2],
            "score": np.where(np.isfinite(scores), scores, HAAR_SCORE), "no_landmarks": missing.astype(np.float64)}


def logistic(features: dict, names, coefficients, intercept) -> np.ndarray:
    z = sum(c * features[name] for name, c in zip(names, coefficients)) + intercept
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def quality(features: dict) -> np.ndarray:
    """Estimated probability that each face's emotion is right: that the box
    is a face at all, times that its emotion is right if it is."""
    face = logistic(features, FACE_FEATURES, FACE_COEFFICIENTS, FACE_INTERCEPT)
    right = logistic(features, EMOTION_FEATURES, EMOTION_COEFFICIENTS, EMOTION_INTERCEPT)
    return (face * right).astype(np.float32)
