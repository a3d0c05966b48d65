"""Fuzzing: mutated images and videos (truncated, bit-flipped, wrong
extension, header sizes made huge, 16-bit, CMYK, RGBA, one pixel) through
predict's, video's and serve's paths. Never an exception, one row (or more,
one per face) for every input, memory bounded. Examples are drawn by
hypothesis with a fixed seed, so every run checks the same cases."""
import csv
import functools
import io
import resource
import shutil
import tempfile
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install \".[test]\")")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.scenes import FIXTURE_FACE  # noqa: E402

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
EXTENSIONS = [".jpg", ".png", ".bmp", ".tif", ".webp", ".jpeg"]
MEMORY_LIMIT_MB = 3000  # the model and TensorFlow take about 1 GB of it


def _png_with_size(width: int, height: int) -> bytes:
    """A tiny PNG whose (valid, checksummed) header claims width x height."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _seeds() -> list[bytes]:
    from PIL import Image

    face = cv2.imread(str(FIXTURE_FACE))
    seeds = [FIXTURE_FACE.read_bytes()]
    for extension, image in ((".png", cv2.cvtColor(face, cv2.COLOR_BGR2BGRA)), (".png", face.astype(np.uint16) * 257),
                             (".bmp", cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)), (".png", face[:1, :1]),
                             (".webp", face), (".tif", face)):
        seeds.append(cv2.imencode(extension, image)[1].tobytes())
    cmyk = io.BytesIO()
    Image.fromarray(face[:, :, ::-1]).convert("CMYK").save(cmyk, "JPEG")
    seeds += [cmyk.getvalue(), _png_with_size(60000, 60000), _png_with_size(1, 400_000_000)]
    return seeds


SEEDS = _seeds()


@st.composite
def mutated_file(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    kind = draw(st.sampled_from(["as is", "truncate", "flip", "both", "garbage"]))
    if kind in ("truncate", "both"):
        data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    if kind in ("flip", "both") and data:
        for _ in range(draw(st.integers(1, 8))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= 1 << draw(st.integers(0, 7))
    if kind == "garbage":
        data = bytearray(draw(st.binary(max_size=300)))
    return bytes(data), draw(st.sampled_from(EXTENSIONS))


@pytest.fixture(scope="module")
def analyzer():
    from fercli.pipeline import Analyzer

    return Analyzer()


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@FUZZ
@given(files=st.lists(mutated_file(), min_size=1, max_size=4))
def test_predict_gives_one_row_or_more_per_input_whatever_the_bytes(analyzer, tmp_path_factory, files):
    from fercli.predict import run_predict
    from fercli.sources import collect_images

    folder = tmp_path_factory.mktemp("fuzz")
    for i, (data, extension) in enumerate(files):
        (folder / "in").mkdir(exist_ok=True)
        (folder / "in" / f"f{i}{extension}").write_bytes(data)
    inputs, _ = collect_images(str(folder / "in"), False, folder / "out")
    summary = run_predict(inputs, analyzer, folder / "out", progress=False)
    with open(folder / "out" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["source"] for r in rows} == {str(f.path) for f in inputs}
    assert all(r["status"] in ("ok", "no_face") or r["status"].startswith("error: ") for r in rows)
    assert len(summary.failed) == len({r["source"] for r in rows if r["status"].startswith("error")})
    assert _peak_mb() < MEMORY_LIMIT_MB


@FUZZ
@given(file=mutated_file())
def test_serve_answers_every_upload_with_json(analyzer, file):
    pytest.importorskip("flask", reason="Flask is not installed (pip install \".[serve]\")")
    from fercli.serve import create_app

    data, extension = file
    client = create_app(analyzer).test_client()
    response = client.post("/api/predict", data={"file": (io.BytesIO(data), f"upload{extension}")},
                           content_type="multipart/form-data")
    body = response.get_json()
    assert (response.status_code, "records" in body) == (200, True) or (response.status_code == 400 and body["error"])
    assert _peak_mb() < MEMORY_LIMIT_MB


@functools.lru_cache(maxsize=1)
def _clip_bytes() -> tuple[bytes, bytes]:
    """The two clips the video fuzzing mutates, made once (encoders need not give the same bytes twice)."""
    from tests.clips import phone_clip

    tmp = Path(tempfile.mkdtemp(prefix="fercli_fuzz_"))
    phone_clip(tmp / "phone.mp4", frames=10, size=(96, 64))
    writer = cv2.VideoWriter(str(tmp / "mjpeg.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (96, 64))
    for i in range(10):
        writer.write(np.full((64, 96, 3), i * 20, np.uint8))
    writer.release()
    clips = ((tmp / "phone.mp4").read_bytes(), (tmp / "mjpeg.avi").read_bytes())
    shutil.rmtree(tmp)
    return clips


@FUZZ
@given(data=st.data())
def test_video_never_breaks_on_damaged_files(analyzer, tmp_path_factory, data):
    from fercli.sources import collect_videos
    from fercli.video import VideoOptions, run_videos

    folder = tmp_path_factory.mktemp("fuzzvideo")
    clip = bytearray(data.draw(st.sampled_from(_clip_bytes())))
    if data.draw(st.booleans()):
        clip = clip[: data.draw(st.integers(0, len(clip)))]
    for _ in range(data.draw(st.integers(0, 20))):
        if clip:
            clip[data.draw(st.integers(0, len(clip) - 1))] ^= 0xFF
    (folder / "in").mkdir()
    (folder / "in" / f"clip{data.draw(st.sampled_from(['.mp4', '.avi', '.mkv']))}").write_bytes(bytes(clip))
    done, failed = run_videos(collect_videos((str(folder / "in"),)), analyzer, folder / "out",
                              VideoOptions(every=1, smooth=1, progress=False))
    with open(folder / "out" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and len(done) + len({s for s, _ in failed} - {r.source for r, _ in done}) == 1
    frames = [int(r["frame"]) for r in rows if r["frame"]]
    assert frames == sorted(frames) and len(frames) == len(set(frames))  # no frame twice, none invented out of order
