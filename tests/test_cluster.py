"""`--engine ray`: the rows of the local engine, from a Ray cluster started for
the command (2 CPUs here). Skipped with the reason where the ray extra is missing."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.clips import phone_clip
from tests.conftest import scene_with_faces, write_image
from tests.test_hardening import fercli

try:
    import ray  # noqa: F401
    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False
requires_ray = pytest.mark.skipif(not HAVE_RAY, reason='Ray is not installed (pip install "fercli[ray]")')


def sorted_rows(output: Path, name: str = "predictions.csv") -> tuple[list[str], list[tuple]]:
    with open(output / name, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], sorted(map(tuple, rows[1:]))


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """14 photos with 0-2 faces each, one in a subfolder, and a file that is no image."""
    folder = tmp_path_factory.mktemp("photos")
    for i in range(14):
        image, _ = scene_with_faces(i % 3, size=(360, 480), face_side=120, seed=i)
        write_image(folder / ("sub" if i == 5 else "") / f"p{i:02d}.jpg", image)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


@pytest.fixture(scope="module")
def local_run(photo_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    done = fercli("predict", "-p", photo_folder, "-r", "-o", out, "-q", "--jsonl")
    assert done.returncode == 1, done.stderr   # the broken file
    return out


@requires_ray
def test_ray_engine_writes_the_rows_of_the_local_engine(photo_folder, local_run, tmp_path):
    out = tmp_path / "ray"
    done = fercli("predict", "-p", photo_folder, "-r", "-o", out, "-q", "--jsonl", "--parquet", "--engine", "ray")
    assert done.returncode == 1, done.stderr
    assert "broken.jpg" in done.stderr and "Traceback" not in done.stderr
    header, rows = sorted_rows(out)
    assert (header, rows) == sorted_rows(local_run)
    assert sum(row[header.index("status")] == "ok" for row in rows) >= 12
    # JSON Lines and Parquet hold the same records; annotated copies mirror the input tree.
    assert len((out / "predictions.jsonl").read_text().splitlines()) == len(rows)
    import pyarrow.parquet

    table = pyarrow.parquet.read_table(out / "predictions.parquet")
    assert table.num_rows == len(rows) and table.column_names == header
    assert sorted(p.relative_to(out) for p in out.rglob("*.jpg")) == sorted(p.relative_to(local_run) for p in local_run.rglob("*.jpg"))


@requires_ray
def test_ray_engine_resumes_and_reads_uris(photo_folder, local_run, tmp_path):
    """--resume sends only what the CSV lacks (the last recorded input again);
    a file:// URI goes through the object-storage path (PyArrow's filesystems)."""
    part = tmp_path / "part"
    for path in sorted(photo_folder.glob("p0*.jpg"))[:6]:
        (part / path.name).parent.mkdir(parents=True, exist_ok=True)
        (part / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "ray"
    first = fercli("predict", "-p", f"file://{part}", "-o", out, "-q", "--no-images", "--engine", "ray")
    assert first.returncode == 0, first.stderr
    _, first_rows = sorted_rows(out)
    assert {row[0] for row in first_rows} == {f"file://{p}" for p in part.iterdir()}
    for path in sorted(photo_folder.glob("p1*.jpg")):
        (part / path.name).write_bytes(path.read_bytes())
    second = fercli("predict", "-p", f"file://{part}", "-o", out, "--no-images", "--engine", "ray", "--resume")
    assert second.returncode == 0, second.stderr
    assert "5" in next(line for line in second.stderr.splitlines() if "already in the CSV" in line)
    header, rows = sorted_rows(out)
    assert len({row[0] for row in rows}) == len(list(part.iterdir()))
    assert all(row in rows for row in first_rows)
    strip = {f"file://{part}/{p.name}": str(photo_folder / p.name) for p in part.iterdir()}
    local = [row for row in sorted_rows(local_run)[1] if row[0] in strip.values()]
    assert sorted((strip[row[0]],) + row[1:] for row in rows) == local


def _actor_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"AnalyzeImages" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


@requires_ray
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds Ray's worker processes through /proc")
def test_a_worker_killed_mid_run_loses_no_input(photo_folder, local_run, tmp_path):
    """SIGKILL the actor after the first rows: Ray restarts it and retries its
    batches; every input still gets exactly its local rows."""
    out = tmp_path / "ray"
    command = [sys.executable, "-m", "fercli", "predict", "-p", str(photo_folder), "-r", "-o", str(out), "-q",
               "--no-images", "--engine", "ray"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, deadline = [], time.time() + 240
    while not killed and process.poll() is None and time.time() < deadline:
        pids = _actor_pids()
        if pids and (out / "predictions.csv").is_file() and len((out / "predictions.csv").read_text().splitlines()) > 1:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
        time.sleep(0.05)
    stdout, stderr = process.communicate(timeout=300)
    assert killed, "the run ended before a worker could be killed: " + stderr
    assert process.returncode == 1, stderr
    assert sorted_rows(out) == sorted_rows(local_run)


@requires_ray
def test_video_on_ray_gives_the_local_outputs(tmp_path):
    face = cv2.resize(scene_with_faces(1, size=(240, 320), face_side=120)[0], (320, 240))
    clips = tmp_path / "clips"
    (clips / "more").mkdir(parents=True)
    phone_clip(clips / "a.mp4", frames=24, picture=lambda i: np.roll(face, 2 * i, axis=1))
    phone_clip(clips / "more" / "b.mp4", frames=24, seed=1, picture=lambda i: np.roll(face, -2 * i, axis=1))
    (clips / "broken.mp4").write_bytes(b"not a video" * 50)
    outputs = {}
    for engine in ("local", "ray"):
        outputs[engine] = tmp_path / engine
        done = fercli("video", clips, "-o", outputs[engine], "-q", "--engine", engine)
        assert done.returncode == 1 and "broken.mp4" in done.stderr, done.stderr
    assert sorted_rows(outputs["ray"]) == sorted_rows(outputs["local"])
    files = {engine: sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) for engine, out in outputs.items()}
    assert files["ray"] == files["local"] and "more/b.mp4" in files["ray"] and "a.summary.json" in files["ray"]
    for name in ("a.timeline.csv", "more/b.timeline.csv"):
        assert (outputs["ray"] / name).read_text() == (outputs["local"] / name).read_text()
    summaries = [json.loads((outputs[engine] / "a.summary.json").read_text()) for engine in ("local", "ray")]
    assert summaries[0]["tracks"] == summaries[1]["tracks"] and summaries[0]["tracks"]


def test_engine_ray_without_ray_says_how_to_install_it(tmp_path):
    """Where Ray is missing (here: hidden), one sentence and exit 2, before any work."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "ray.py").write_text("raise ImportError('hidden for this test')\n")
    image = write_image(tmp_path / "in" / "a.jpg", np.zeros((50, 50, 3), np.uint8))
    done = subprocess.run([sys.executable, "-m", "fercli", "predict", "-p", str(image), "-o", str(tmp_path / "out"),
                           "--engine", "ray"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")])})
    assert done.returncode == 2
    assert done.stderr.strip() == 'error: --engine ray needs Ray, which is not installed: pip install "fercli[ray]".'


@pytest.mark.parametrize("args, message", [
    (["--engine", "ray", "--explain"], "--explain runs on the local engine only"),
    (["-p", "s3://bucket/photos"], "is a URI: object storage is read by the Ray engine"),
])
def test_engine_usage_errors(tmp_path, args, message):
    image = write_image(tmp_path / "a.jpg", np.zeros((50, 50, 3), np.uint8))
    done = fercli("predict", "-p", image, "-o", tmp_path / "out", *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr


@requires_ray
def test_an_address_where_no_cluster_listens_is_one_sentence_in_seconds(tmp_path):
    """Ray retries a missing head for minutes; fercli looks first."""
    image = write_image(tmp_path / "a.jpg", np.zeros((50, 50, 3), np.uint8))
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1"):
        start = time.time()
        done = fercli("predict", "-p", image, "-o", tmp_path / "out", "--engine", "ray", "--address", address)
        assert done.returncode == 2 and f"cannot reach the Ray cluster at {address}" in done.stderr, done.stderr
        assert time.time() - start < 60
