import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from fercli.cli import main

from tests.scenes import (FER2013, FIXTURE_FACE, FIXTURE_FACE_CLASS, REPO, SHARED_DATA, box_hits,  # noqa: F401 (shared)
                          load_face, textured_background)

CKPLUS = SHARED_DATA / "ckplus48"

requires_fer2013 = pytest.mark.skipif(not (FER2013 / "train").is_dir(), reason=f"FER-2013 not found at {FER2013} (only in a project checkout beside ../shared)")
requires_ckplus = pytest.mark.skipif(not CKPLUS.is_dir(), reason=f"CK+ not found at {CKPLUS} (only in a project checkout beside ../shared)")


def run(*args):
    """Run the CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)
    assert "Traceback" not in result.output + result.stderr, result.output + result.stderr
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def copy_sample(source: Path, dest: Path, per_class: int, rename: dict | None = None) -> Path:
    """First `per_class` images of every class folder of `source`, copied to dest/<class>."""
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        target = dest / (rename or {}).get(class_dir.name, class_dir.name)
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(class_dir.iterdir())[:per_class]:
            shutil.copy(path, target / path.name)
    return dest


@pytest.fixture(scope="session")
def fer_sample(tmp_path_factory):
    """A small FER-2013 tree: train/<class>/ (40 each) and val/<class>/ (15 each)."""
    if not (FER2013 / "train").is_dir():
        pytest.skip(f"FER-2013 not found at {FER2013}")
    root = tmp_path_factory.mktemp("fer_sample")
    copy_sample(FER2013 / "train", root / "train", 40)
    copy_sample(FER2013 / "val", root / "val", 15)
    return root


@pytest.fixture(scope="session")
def tiny_model(fer_sample, tmp_path_factory):
    """A model trained for one epoch on fer_sample through the CLI."""
    out = tmp_path_factory.mktemp("tiny_model") / "tiny.keras"
    result = run("train", fer_sample, "--epochs", 1, "--batch-size", 32, "--out", out)
    assert result.exit_code == 0, result.output + result.stderr
    return out


def synthetic_faces(n: int, size: int = 48, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size), dtype=np.uint8)


def write_image(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(path.suffix, image)
    assert ok
    encoded.tofile(str(path))
    return path


SCENE_CLASSES = ["happy", "surprise", "neutral", "angry", "sad", "fear"]
_findable: list[Path] = []


def findable_faces(n: int, face_side: int = 200) -> list[np.ndarray]:
    """n face squares (BGR) that both detectors find when pasted alone,
    upscaled, on a textured canvas: the first such FER-2013 val faces (cycling
    through SCENE_CLASSES) where ../shared/data has them (not every tight
    48x48 crop is a clear face: hands, profiles, watermarks), else the
    public-domain fixture portrait's face, mirrored every other time."""
    from fercli.detect import make_detector

    if not (FER2013 / "val").is_dir():
        face, _ = load_face((FIXTURE_FACE, FIXTURE_FACE_CLASS))
        return [face if i % 2 == 0 else np.ascontiguousarray(face[:, ::-1]) for i in range(n)]
    detectors = [make_detector("centerface"), make_detector("haar")]
    pools = [iter(sorted((FER2013 / "val" / c).iterdir())) for c in SCENE_CLASSES]
    backgrounds = [textured_background(720, 1280, seed=seed) for seed in (97, 98, 99)]
    turn = len(_findable)
    while len(_findable) < n:
        path = next(pools[turn % len(pools)])
        turn += 1
        face = cv2.resize(cv2.imread(str(path)), (face_side, face_side), interpolation=cv2.INTER_CUBIC)
        found_everywhere = True
        for k, background in enumerate(backgrounds):  # robust faces only: found on every background
            canvas = background.copy()
            x, y = 200 + 350 * k, 150 + 100 * k
            canvas[y:y + face_side, x:x + face_side] = face
            found_everywhere &= all(any(box_hits(b, (x, y, face_side, face_side)) for b in d.detect(canvas).boxes)
                                    for d in detectors)
        if found_everywhere:
            _findable.append(path)
    return [cv2.imread(str(p)) for p in _findable[:n]]


def scene_with_faces(n_faces: int = 2, size=(720, 1280), face_side: int = 200, seed: int = 0):
    """A textured canvas with n findable faces pasted on it, spread out;
    returns (BGR image, true boxes x, y, w, h)."""
    height, width = size
    canvas = textured_background(height, width, seed)
    boxes = []
    for i, face in enumerate(findable_faces(n_faces, face_side)):
        face = cv2.resize(face, (face_side, face_side), interpolation=cv2.INTER_CUBIC)
        x = 30 + i * (width - face_side - 60) // max(n_faces - 1, 1)
        y = (height - face_side) // 2 + (height // 6 if i % 2 else -height // 6)
        canvas[y:y + face_side, x:x + face_side] = face
        boxes.append((x, y, face_side, face_side))
    return canvas, boxes
