import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from fercli.cli import main

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("FERCLI_SHARED_DATA", REPO.parent / "shared" / "data"))
FER2013 = SHARED_DATA / "fer2013"
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
