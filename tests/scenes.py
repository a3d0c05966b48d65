"""Generated scenes with known faces, for the tests and benchmarks/bench_detect.py:
face crops pasted on textured backgrounds, upright or rotated, small, dim,
blurred or in crowds. Faces come from FER-2013 val crops where ../shared/data
has them (tight 48x48 crops, labelled), else from the public-domain portrait in
tests/fixtures (NASA photo of Eileen Collins, via scikit-image's sample data)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("FERCLI_SHARED_DATA", REPO.parent / "shared" / "data"))
FER2013 = SHARED_DATA / "fer2013"
FIXTURE_FACE = Path(__file__).resolve().parent / "fixtures" / "astronaut_face.jpg"
# The fixture's face square (x, y, side) and its expression.
FIXTURE_FACE_BOX, FIXTURE_FACE_CLASS = (55, 62, 100), "happy"

KINDS = ("tight", "rotated", "small", "dim", "blurred", "crowd")


@dataclass
class Scene:
    image: np.ndarray                                   # BGR
    boxes: list[tuple[int, int, int, int]]              # true face squares x, y, w, h
    labels: list[str]                                   # emotion of each face
    kind: str = ""
    angles: list[float] = field(default_factory=list)   # in-plane rotation of each face, degrees


def textured_background(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur((rng.random((height, width, 3)) * 255).astype(np.uint8), (0, 0), 4)
    for _ in range(12):  # a few straight edges, like furniture and walls
        p1 = tuple(int(v) for v in rng.integers(0, [width, height]))
        p2 = tuple(int(v) for v in rng.integers(0, [width, height]))
        cv2.line(noise, p1, p2, tuple(int(c) for c in rng.integers(0, 255, 3)), int(rng.integers(2, 9)))
    return noise


def face_pool(split: str = "val") -> list[tuple[np.ndarray, str]]:
    """(BGR face square, emotion) pairs: FER-2013 `split` crops if present, else the fixture face."""
    folder = FER2013 / split
    if folder.is_dir():
        return [(path, class_dir.name) for class_dir in sorted(folder.iterdir()) if class_dir.is_dir()
                for path in sorted(class_dir.iterdir())]
    return [(FIXTURE_FACE, FIXTURE_FACE_CLASS)]


def load_face(entry) -> tuple[np.ndarray, str]:
    path, label = entry
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if Path(path) == FIXTURE_FACE:
        x, y, side = FIXTURE_FACE_BOX
        image = image[y:y + side, x:x + side]
    return image, label


def paste(canvas: np.ndarray, face: np.ndarray, cx: float, cy: float, side: int, angle: float = 0.0) -> None:
    """The face square scaled to `side` px, rotated by `angle` degrees about its
    centre, pasted with its centre at (cx, cy); only the rotated square is drawn."""
    face = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA if side < face.shape[0] else cv2.INTER_CUBIC)
    height, width = canvas.shape[:2]
    matrix = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
    matrix[:, 2] += (cx - side / 2, cy - side / 2)
    warped = cv2.warpAffine(face, matrix, (width, height), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.full((side, side), 255, np.uint8), matrix, (width, height), flags=cv2.INTER_NEAREST)
    canvas[mask > 0] = warped[mask > 0]


def place(rng, sides: list[int], height: int, width: int, margin: float = 1.5):
    """Non-overlapping centres for faces of the given sides (rejection sampling)."""
    centres: list[tuple[float, float, int]] = []
    for side in sides:
        for _ in range(500):
            reach = side * 0.75
            cx, cy = rng.uniform(reach, width - reach), rng.uniform(reach, height - reach)
            if all(abs(cx - x) > margin * (side + s) / 2 or abs(cy - y) > margin * (side + s) / 2 for x, y, s in centres):
                centres.append((cx, cy, side))
                break
    return centres


def make_scene(kind: str, pool, rng, size=(720, 1280)) -> Scene:
    height, width = size
    canvas = textured_background(height, width, seed=int(rng.integers(1 << 30)))
    count = {"crowd": 8, "small": 4}.get(kind, int(rng.integers(1, 5)))
    if kind == "small":
        sides = [int(rng.integers(26, 45)) for _ in range(count)]
    elif kind == "crowd":
        sides = [int(rng.integers(50, 91)) for _ in range(count)]
    else:
        sides = [int(rng.integers(70, 160)) for _ in range(count)]
    scene = Scene(canvas, [], [], kind)
    for cx, cy, side in place(rng, sides, height, width):
        face, label = load_face(pool[int(rng.integers(len(pool)))])
        if len(pool) == 1:  # one fixture face: vary it a little
            face = face[:, ::-1] if rng.random() < 0.5 else face
        angle = float(rng.uniform(15, 40) * rng.choice([-1, 1])) if kind == "rotated" else 0.0
        if kind == "blurred":  # out of focus or moving: 0.7-1.4 px of blur at FER-2013's 48 px
            face = cv2.GaussianBlur(cv2.resize(face, (side, side)), (0, 0), side / 48 * rng.uniform(0.7, 1.4))
        paste(canvas, face, cx, cy, side, angle)
        scene.boxes.append((round(cx - side / 2), round(cy - side / 2), side, side))
        scene.labels.append(label)
        scene.angles.append(angle)
    if kind == "dim":  # a dim room: the whole frame at a third of its light, with sensor noise
        noisy = canvas.astype(np.float32) * rng.uniform(0.25, 0.45) + rng.normal(0, 3, canvas.shape)
        scene.image = np.clip(noisy, 0, 255).astype(np.uint8)
    return scene


def hard_scenes(per_kind: int = 8, seed: int = 7, split: str = "val", size=(720, 1280)) -> list[Scene]:
    pool = face_pool(split)
    rng = np.random.default_rng(seed)
    return [make_scene(kind, pool, rng, size) for kind in KINDS for _ in range(per_kind)]


def box_hits(found, truth) -> bool:
    """A found box counts for a true face when its centre lies on the face and it is not a sliver of it."""
    fx, fy, fw, fh = found
    tx, ty, tw, th = truth
    cx, cy = fx + fw / 2, fy + fh / 2
    return tx <= cx <= tx + tw and ty <= cy <= ty + th and fw * fh >= 0.25 * tw * th


def match(found_boxes, true_boxes) -> tuple[list[int | None], int]:
    """(for each true face the index of the box that found it or None, number of
    false boxes). Each box finds at most one face; a second box on a face is false."""
    assigned: list[int | None] = [None] * len(true_boxes)
    used = set()
    for i, truth in enumerate(true_boxes):
        for j, box in enumerate(found_boxes):
            if j not in used and box_hits(box, truth):
                assigned[i] = j
                used.add(j)
                break
    return assigned, len(found_boxes) - len(used)
