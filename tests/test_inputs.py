"""Inputs as people type them: `fercli predict photos/*.jpg` (the shell's
expansion: many paths), -p given several times, both together, the same file
twice, quoted globs, and a path that is not there; `fercli video` likewise."""
import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fercli.errors import UserError
from fercli.sources import collect_images, collect_videos
from tests.clips import phone_clip
from tests.conftest import run, scene_with_faces, write_image


@pytest.fixture(scope="module")
def scene():
    """A small picture with one face the detectors find."""
    image, truth = scene_with_faces(1, size=(360, 640), face_side=150)
    return image


@pytest.fixture
def photos(tmp_path, scene):
    """photos/a/x.png, photos/b/x.png (the same name in two folders), photos/c.png, photos/notes.txt."""
    root = tmp_path / "photos"
    for name in ("a/x.png", "b/x.png", "c.png"):
        write_image(root / name, scene)
    (root / "notes.txt").write_text("not an image")
    return root


def sources(output: Path) -> Counter:
    """How many rows each input got (one per face found; the scene has one face)."""
    with open(output / "predictions.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert all(r["status"] == "ok" for r in rows), rows
    return Counter(Path(r["source"]).resolve() for r in rows)


def test_predict_takes_every_path_a_shell_gives(photos, tmp_path):
    out = tmp_path / "out"
    result = run("predict", photos / "a" / "x.png", photos / "b" / "x.png", photos / "c.png", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert sources(out) == {photos / "a" / "x.png": 1, photos / "b" / "x.png": 1, photos / "c.png": 1}
    # the input tree mirrored from the folder the inputs share: the two x.png stay apart
    assert all((out / name).is_file() for name in ("a/x.png", "b/x.png", "c.png"))


def test_repeated_p_and_paths_together(photos, tmp_path):
    result = run("predict", "-p", photos / "a" / "x.png", "-p", photos / "c.png", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert sources(tmp_path / "out") == {photos / "a" / "x.png": 1, photos / "c.png": 1}
    result = run("predict", photos / "b", "-p", photos / "c.png", "-o", tmp_path / "out2", "--no-images")
    assert result.exit_code == 0, result.stderr
    assert sources(tmp_path / "out2") == {photos / "b" / "x.png": 1, photos / "c.png": 1}


def test_a_file_given_twice_is_read_once(photos, tmp_path, monkeypatch):
    monkeypatch.chdir(photos)
    (photos / "link.png").symlink_to(photos / "c.png")
    result = run("predict", "c.png", "./c.png", "-p", "c.png", "link.png", ".", "a/x.png", "a", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert sources(tmp_path / "out") == {photos / "c.png": 1, photos / "a" / "x.png": 1}
    assert (tmp_path / "out" / "c.png").is_file() and (tmp_path / "out" / "a" / "x.png").is_file()


def test_quoted_glob_among_other_paths(photos, tmp_path):
    result = run("predict", str(photos / "*" / "x.png"), photos / "c.png", "-o", tmp_path / "out", "--no-images")
    assert result.exit_code == 0, result.stderr
    assert sources(tmp_path / "out") == {photos / "a" / "x.png": 1, photos / "b" / "x.png": 1, photos / "c.png": 1}


def test_a_shell_glob_that_takes_other_files_skips_them(photos, tmp_path):
    """`fercli predict photos/*` names notes.txt too: skipped and counted, as in a folder (alone it is refused)."""
    result = run("predict", photos / "c.png", photos / "notes.txt", "-o", tmp_path / "out", "--no-images")
    assert result.exit_code == 0, result.stderr
    assert sources(tmp_path / "out") == {photos / "c.png": 1} and "skipped (not images)" in result.stderr
    result = run("predict", photos / "notes.txt", "-o", tmp_path / "out2")
    assert result.exit_code == 2 and "is not an image type" in result.stderr


@pytest.mark.parametrize("missing", ["nope.jpg", "*.jpeg"])
def test_a_missing_path_among_several_is_refused_before_any_work(photos, tmp_path, missing):
    result = run("predict", photos / "c.png", photos / missing, "-p", photos / "a", "-o", tmp_path / "out")
    assert result.exit_code == 2
    said = result.stderr.strip().splitlines()
    assert len(said) == 1 and said[0].startswith("error: ") and str(photos / missing) in said[0]
    assert not (tmp_path / "out").exists()


def test_explain_takes_the_same_paths(photos, tmp_path):
    pytest.importorskip("tensorflow", reason="explain needs TensorFlow (pip install \".[train]\")")
    result = run("explain", photos / "a" / "x.png", photos / "b" / "x.png", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "out" / "a" / "x.face0.cam.png").is_file() and (tmp_path / "out" / "b" / "x.face0.cam.png").is_file()


def test_collect_images_relative_paths_and_duplicates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("a/x.png", "b/x.png", "a/y.png"):
        write_image(tmp_path / name, np.zeros((8, 8, 3), np.uint8))
    files, _ = collect_images(["a/x.png", "b/x.png"], False, Path("out"))
    assert [(str(f.path), f.relative) for f in files] == [("a/x.png", Path("a/x.png")), ("b/x.png", Path("b/x.png"))]
    files, _ = collect_images(["a/x.png", "./a/x.png", "a"], False, Path("out"))
    assert [f.relative for f in files] == [Path("x.png"), Path("y.png")]
    files, _ = collect_images(["a/*.png"], False, Path("out"))   # one glob: as before
    assert [f.relative for f in files] == [Path("x.png"), Path("y.png")]
    with pytest.raises(UserError, match="no file matches a/\\*.jpg"):
        collect_images(["a/x.png", "a/*.jpg"], False, Path("out"))


def test_video_takes_quoted_globs_folders_and_each_file_once(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "v").mkdir(exist_ok=True)
        phone_clip(tmp_path / "v" / f"{name}.mp4", frames=4, size=(96, 64))
    result = run("video", str(tmp_path / "v" / "*.mp4"), tmp_path / "v" / "a.mp4", tmp_path / "v", "-o", tmp_path / "out",
                 "--every", 1, "--no-video", "-q")
    assert result.exit_code == 0, result.stderr
    with open(tmp_path / "out" / "predictions.csv", newline="") as handle:
        frames = Counter((Path(r["source"]).name, r["frame"]) for r in csv.DictReader(handle))
    assert set(frames) == {(n, str(f)) for n in ("a.mp4", "b.mp4") for f in range(4)} and set(frames.values()) == {1}
    assert [f.relative for f in collect_videos((str(tmp_path / "v" / "b.mp4"), str(tmp_path / "v")))] == \
        [Path("b.mp4"), Path("a.mp4")]
    for missing in ("nope.mp4", "*.mkv"):
        result = run("video", tmp_path / "v" / "a.mp4", tmp_path / "v" / missing, "-o", tmp_path / "out2")
        assert result.exit_code == 2 and str(tmp_path / "v" / missing) in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out2").exists()
