import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import box_hits, run, scene_with_faces, write_image


def read_rows(output: Path) -> list[dict]:
    with open(output / "predictions.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_one_image_with_several_faces(tmp_path):
    scene, truth = scene_with_faces(3)
    image = write_image(tmp_path / "in" / "scene.jpg", scene)
    result = run("predict", "-p", image, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    rows = read_rows(tmp_path / "out")
    assert {"source", "frame", "time_s", "face", "x", "y", "w", "h", "emotion", "confidence", "status"} <= set(rows[0])
    boxes = [tuple(int(r[k]) for k in "xywh") for r in rows]
    assert all(any(box_hits(b, t) for b in boxes) for t in truth)          # every face found
    assert all(any(box_hits(b, t) for t in truth) for b in boxes)          # nothing else
    for row in rows:
        probabilities = [float(row[f"p_{c}"]) for c in ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")]
        assert sum(probabilities) == pytest.approx(1.0, abs=0.01)
        assert float(row["confidence"]) == pytest.approx(max(probabilities), abs=1e-3)
        assert row["status"] == "ok" and row["source"] == str(image)
    annotated = cv2.imread(str(tmp_path / "out" / "scene.jpg"))
    assert annotated.shape == scene.shape and not np.array_equal(annotated, scene)


def test_bad_inputs_each_reported_and_the_rest_processed(tmp_path):
    from PIL import Image

    scene, truth = scene_with_faces(2)
    folder = tmp_path / "in put ü"
    write_image(folder / "good face.jpg", scene)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image")
    jpeg = cv2.imencode(".jpg", scene)[1].tobytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    write_image(folder / "deep16.png", (scene.astype(np.uint16) * 257))
    write_image(folder / "rgba.png", cv2.cvtColor(scene, cv2.COLOR_BGR2BGRA))
    write_image(folder / "gray.png", cv2.cvtColor(scene, cv2.COLOR_BGR2GRAY))
    write_image(folder / "tiny.png", np.zeros((1, 1, 3), np.uint8))
    huge = np.zeros((6000, 8000, 3), np.uint8)
    huge[:4500] = cv2.resize(scene, (8000, 4500))  # 6.25x, aspect kept
    write_image(folder / "huge.jpg", huge)
    Image.fromarray(scene[:, :, ::-1].copy()).convert("CMYK").save(folder / "cmyk.jpg")
    (folder / "gone.jpg").symlink_to(tmp_path / "does-not-exist.jpg")  # unreadable
    (folder / "notes.txt").write_text("not an image suffix: skipped, counted")
    result = run("predict", "-p", folder, "-o", tmp_path / "out")
    assert result.exit_code == 1
    rows = read_rows(tmp_path / "out")
    by_source = {}
    for row in rows:
        by_source.setdefault(Path(row["source"]).name, []).append(row)
    assert sorted(by_source) == sorted(["good face.jpg", "empty.jpg", "text.jpg", "truncated.jpg", "deep16.png", "rgba.png",
                                        "gray.png", "tiny.png", "huge.jpg", "cmyk.jpg", "gone.jpg"])
    for name, reason in [("empty.jpg", "0 bytes"), ("text.jpg", "not a readable image"),
                         ("truncated.jpg", "truncated"), ("gone.jpg", "cannot read")]:
        assert by_source[name][0]["status"].startswith("error:") and reason in by_source[name][0]["status"]
        assert any(name in line and reason in line for line in result.stderr.splitlines())
    for name in ("good face.jpg", "deep16.png", "rgba.png", "gray.png", "cmyk.jpg", "huge.jpg"):
        assert len(by_source[name]) == len(truth) and {r["status"] for r in by_source[name]} == {"ok"}, name
    assert by_source["tiny.png"][0]["status"] == "no_face"
    huge = [tuple(int(r[k]) for k in "xywh") for r in by_source["huge.jpg"]]
    big_truth = [tuple(v * 6.25 for v in box) for box in truth]
    assert all(any(box_hits(b, t) for b in huge) for t in big_truth)  # boxes scaled back to full size
    assert (tmp_path / "out" / "good face.jpg").is_file() and not (tmp_path / "out" / "text.jpg").exists()
    assert "Traceback" not in result.stderr and "skipped (not images)" in result.stderr


def test_exif_orientation_is_respected(tmp_path):
    from PIL import Image

    scene, truth = scene_with_faces(1)
    rotated = np.ascontiguousarray(np.rot90(scene[:, :, ::-1]))  # stored sideways, EXIF says rotate back
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    Image.fromarray(rotated).save(tmp_path / "sideways.jpg", exif=exif)
    result = run("predict", "-p", tmp_path / "sideways.jpg", "-o", tmp_path / "out")
    assert result.exit_code == 0
    rows = read_rows(tmp_path / "out")
    assert rows[0]["status"] == "ok"
    assert any(box_hits(tuple(int(r[k]) for k in "xywh"), truth[0]) for r in rows)


def test_default_folder_and_its_absence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("predict")
    assert result.exit_code == 2 and "data/test" in result.stderr and "-p" in result.stderr
    scene, _ = scene_with_faces(1)
    write_image(tmp_path / "data" / "test" / "a.png", scene)
    result = run("predict")
    assert result.exit_code == 0
    assert read_rows(tmp_path / "output")[0]["source"] == os.path.join("data", "test", "a.png")
    assert (tmp_path / "output" / "a.png").is_file()


def test_outputs_are_never_inputs(tmp_path):
    scene, _ = scene_with_faces(1)
    write_image(tmp_path / "a.png", scene)
    for _ in range(2):  # the second run must not pick up the first run's annotated copy
        result = run("predict", "-p", tmp_path, "-r", "-o", tmp_path / "results")
        assert result.exit_code == 0
        assert [r["source"] for r in read_rows(tmp_path / "results")] == [str(tmp_path / "a.png")]
    result = run("predict", "-p", tmp_path / "results", "-o", tmp_path)
    assert result.exit_code == 2 and "choose another -o" in result.stderr


def test_resume_appends_without_duplicates(tmp_path):
    scene, truth = scene_with_faces(2)
    for name in ("a.png", "b.png", "c.png"):
        write_image(tmp_path / "in" / name, scene)
    assert run("predict", "-p", tmp_path / "in", "-o", tmp_path / "out", "--jsonl").exit_code == 0
    complete = read_rows(tmp_path / "out")
    # As if killed while writing the second image: its rows half written, the third missing.
    lines = (tmp_path / "out" / "predictions.csv").read_text().splitlines(keepends=True)
    kept = 1 + len(truth)
    (tmp_path / "out" / "predictions.csv").write_text("".join(lines[:kept]) + lines[kept][:20])
    result = run("predict", "-p", tmp_path / "in", "-o", tmp_path / "out", "--resume", "--jsonl")
    assert result.exit_code == 0  # a.png, the last input recorded before the cut, is done again: it may be incomplete
    assert read_rows(tmp_path / "out") == complete


def test_resume_redoes_an_image_cut_between_its_faces_and_retries_failures(tmp_path, monkeypatch):
    scene, truth = scene_with_faces(2)
    for name in ("a.png", "b.png"):
        write_image(tmp_path / "in" / name, scene)
    (tmp_path / "in" / "c.png").write_bytes(b"broken")
    assert run("predict", "-p", tmp_path / "in", "-o", tmp_path / "out", "--jsonl").exit_code == 1
    lines = (tmp_path / "out" / "predictions.csv").read_text().splitlines(keepends=True)
    # Killed after the first face row of b.png: whole lines, but b.png half recorded.
    (tmp_path / "out" / "predictions.csv").write_text("".join(lines[:1 + len(truth) + 1]))
    write_image(tmp_path / "in" / "c.png", scene)  # the user fixed the broken file
    monkeypatch.chdir(tmp_path)  # the same folder named by a relative path this time
    result = run("predict", "-p", "in", "-o", tmp_path / "out", "--resume", "--jsonl")
    assert result.exit_code == 0, result.stderr
    got = read_rows(tmp_path / "out")
    assert [Path(r["source"]).name for r in got] == ["a.png"] * 2 + ["b.png"] * 2 + ["c.png"] * 2
    assert all(r["status"] == "ok" for r in got) and "already in the CSV" in result.stderr
    records = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [Path(r["source"]).name for r in records] == [Path(r["source"]).name for r in got]


def test_jsonl_holds_the_same_records(tmp_path):
    scene, truth = scene_with_faces(2)
    write_image(tmp_path / "a.png", scene)
    assert run("predict", "-p", tmp_path / "a.png", "-o", tmp_path / "out", "--jsonl", "--no-images").exit_code == 0
    rows = read_rows(tmp_path / "out")
    records = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == len(rows) == len(truth)
    assert [r["emotion"] for r in records] == [r["emotion"] for r in rows]
    assert [r["x"] for r in records] == [int(r["x"]) for r in rows]
    assert not (tmp_path / "out" / "a.png").exists()  # --no-images


def test_glob_input(tmp_path):
    scene, _ = scene_with_faces(1)
    write_image(tmp_path / "x1.png", scene)
    write_image(tmp_path / "x2.png", scene)
    write_image(tmp_path / "y.png", scene)
    result = run("predict", "-p", str(tmp_path / "x*.png"), "-o", tmp_path / "out")
    assert result.exit_code == 0
    assert sorted(Path(r["source"]).name for r in read_rows(tmp_path / "out")) == ["x1.png", "x2.png"]


@pytest.mark.parametrize("case", ["missing path", "empty folder", "corrupt model"])
def test_usage_errors_exit_2(tmp_path, case):
    args = {"missing path": ["-p", tmp_path / "nope.jpg"], "empty folder": ["-p", tmp_path]}.get(case)
    if case == "corrupt model":
        write_image(tmp_path / "a.png", np.zeros((64, 64, 3), np.uint8))
        (tmp_path / "m.keras").write_bytes(b"garbage")
        args = ["-p", tmp_path / "a.png", "--model", tmp_path / "m.keras"]
    result = run("predict", *args, "-o", tmp_path / "out")
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def test_python_api(tmp_path):
    from fercli import Analyzer

    scene, truth = scene_with_faces(2)
    faces = Analyzer().analyze(scene)
    assert len(faces) == len(truth)
    assert all(face.emotion in face.probabilities and 0 < face.confidence <= 1 for face in faces)
