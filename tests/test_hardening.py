"""Bad input, hostile files and interruptions: one clear sentence, a status row
where a batch goes on, the right exit code, bounded memory, nothing lost.
Every fixture is made here; no data set is needed."""
import csv
import os
import re
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from fercli.data import decode_image, header_size, jpeg_is_cut_off
from tests.conftest import REPO, run
from tests.scenes import FIXTURE_FACE


def png_bomb(path: Path, side: int = 30000) -> Path:
    """A small PNG whose header promises side x side grey pixels (~1 MB on disk)."""
    stream, data = zlib.compressobj(9), bytearray()
    row = b"\x00" * (side + 1)
    for _ in range(side):
        data += stream.compress(row)
    data += stream.flush()

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", bytes(data)) + chunk(b"IEND", b""))
    return path


def rows_of(output: Path) -> list[dict]:
    with open(output / "predictions.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def fercli(*args, cwd=REPO):
    """The real command in its own process: what it prints on the terminal, file descriptors included."""
    return subprocess.run([sys.executable, "-m", "fercli", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_decompression_bomb_is_refused_from_its_header_and_the_batch_goes_on(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    png_bomb(folder / "bomb.png")
    (folder / "good.jpg").write_bytes(FIXTURE_FACE.read_bytes())
    # The peak resident memory of this process image (VmHWM; getrusage would count the forking parent's too).
    code = ("import sys; from fercli.cli import main; sys.argv = ['fercli'] + sys.argv[1:]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n"
            "    print('PEAK', next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM'))); raise")
    out = subprocess.run([sys.executable, "-c", code, "predict", "-p", str(folder), "-o", str(tmp_path / "out"), "-q"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "bomb.png: 30000x30000 pixels, over the limit of 100 megapixels" in out.stderr
    statuses = {Path(r["source"]).name: r["status"] for r in rows_of(tmp_path / "out")}
    assert statuses["good.jpg"] == "ok" and statuses["bomb.png"].startswith("error: 30000x30000 pixels")
    peak_mb = int(out.stdout.split("PEAK")[1]) / 1024
    assert peak_mb < 1500, peak_mb
    monkeypatch.setenv("FERCLI_MAX_PIXELS", "100000000")  # restored after the test, whatever --max-pixels sets
    result = run("--max-pixels", 2e9, "predict", "-p", folder / "good.jpg", "-o", tmp_path / "out2")
    assert result.exit_code == 0


def test_header_size_reads_what_pillow_reads_without_decoding():
    """JPEG (baseline, progressive, with an EXIF thumbnail holding a frame of its own) and PNG headers read by hand
    give Pillow's size; other formats go to Pillow; a header too damaged to read is None."""
    import io

    from PIL import Image

    picture = np.random.default_rng(0).integers(0, 255, (37, 53, 3), np.uint8)
    thumbnail = cv2.imencode(".jpg", picture[:9, :11])[1].tobytes()
    baseline = cv2.imencode(".jpg", picture)[1].tobytes()
    exif = b"\xff\xe1" + (len(thumbnail) + 8).to_bytes(2, "big") + b"Exif\x00\x00" + thumbnail   # APP1 before the frame
    encoded = {"baseline": baseline, "exif thumbnail": baseline[:2] + exif + baseline[2:],
               "progressive": cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes(),
               "png": cv2.imencode(".png", picture)[1].tobytes(), "bmp": cv2.imencode(".bmp", picture)[1].tobytes()}
    for kind, data in encoded.items():
        assert header_size(data) == Image.open(io.BytesIO(data)).size == (53, 37), kind
    assert header_size(b"\xff\xd8\xff\xc0\x00") is None and header_size(b"not an image") is None


def test_jpeg_with_bytes_after_its_end_marker_is_read_and_a_cut_one_is_not():
    encoded = FIXTURE_FACE.read_bytes()
    trailing = encoded + os.urandom(8192)  # phones and editors append metadata after the image
    assert not jpeg_is_cut_off(trailing) and decode_image(np.frombuffer(trailing, np.uint8)).shape[:2] == (220, 210)
    assert jpeg_is_cut_off(encoded[: len(encoded) // 2])
    with pytest.raises(ValueError, match="truncated JPEG"):
        decode_image(np.frombuffer(encoded[: len(encoded) // 2], np.uint8))


def test_corrupt_png_gives_fercli_s_sentence_and_no_library_noise(tmp_path):
    ok, encoded = cv2.imencode(".png", np.full((50, 50, 3), 90, np.uint8))
    damaged = bytearray(encoded.tobytes())
    damaged[60:80] = bytes(20)
    (tmp_path / "bad.png").write_bytes(bytes(damaged))
    out = fercli("predict", "-p", tmp_path / "bad.png", "-o", tmp_path / "out", "-q")
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if line.strip() and not line.startswith(("┌", "│", "└", " "))]
    assert lines == [f"warning: {tmp_path / 'bad.png'}: not a readable image"], out.stderr


def test_symlink_loop_in_a_folder_does_not_stop_the_run(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "good.jpg").write_bytes(FIXTURE_FACE.read_bytes())
    (folder / "sub" / "up").symlink_to(folder)            # a folder loop
    (folder / "a").symlink_to(folder / "b")               # a link loop
    (folder / "b").symlink_to(folder / "a")
    (folder / "x.jpg").symlink_to(folder / "x.jpg")       # a link to itself, named like an image
    result = run("predict", "-p", folder, "-r", "-o", tmp_path / "out")
    assert result.exit_code == 1
    statuses = {Path(r["source"]).name: r["status"] for r in rows_of(tmp_path / "out")}
    assert statuses["good.jpg"] == "ok" and statuses["x.jpg"].startswith("error: cannot read file")


def test_unwritable_output_folder_is_a_sentence(tmp_path):
    from tests.clips import phone_clip

    (tmp_path / "file").write_text("not a folder")
    phone_clip(tmp_path / "clip.mp4", frames=4)
    (tmp_path / "locked").mkdir(mode=0o555)  # read-only, as a user makes it (root included)
    for command in (["predict", "-p", FIXTURE_FACE], ["video", tmp_path / "clip.mp4"]):
        for output in (tmp_path / "file" / "out", tmp_path / "locked", tmp_path / "locked" / "new"):
            result = run(*command, "-o", output)
            assert result.exit_code == 2 and "cannot write to the output folder" in result.stderr, result.stderr
            assert "Traceback" not in result.stderr


def test_image_types_are_judged_alike_named_or_found(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "anim.gif").write_bytes(b"GIF89a" + bytes(20))
    (tmp_path / "in" / "folder.jpg").mkdir()
    (tmp_path / "in" / "good.jpg").write_bytes(FIXTURE_FACE.read_bytes())
    result = run("predict", "-p", tmp_path / "in" / "anim.gif", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "not an image type fercli reads" in result.stderr
    result = run("predict", "-p", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 0 and [Path(r["source"]).name for r in rows_of(tmp_path / "out")] == ["good.jpg"]
    assert re.search(r"skipped \(not images\)\s*│\s*2\s*│", result.stderr), result.stderr


def test_serve_on_a_busy_port_is_a_usage_error():
    pytest.importorskip("flask")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = fercli("serve", "--port", port)
    assert out.returncode == 2 and "cannot listen on 127.0.0.1" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("metadata", ['{"classes": ["happy", "sad"]}', '{"classes": "happy", "input_size": 48}',
                                      '[1, 2]', '{"classes": [], "input_size": 48}', 'not json'])
def test_malformed_model_metadata_is_a_sentence(tmp_path, metadata):
    import zipfile

    from fercli.modelfile import METADATA_MEMBER, resolve_model_path

    model = tmp_path / "m.keras"
    with zipfile.ZipFile(resolve_model_path("fast")) as source, zipfile.ZipFile(model, "w") as target:
        for member in source.namelist():
            if member != METADATA_MEMBER:
                target.writestr(member, source.read(member))
        target.writestr(METADATA_MEMBER, metadata)
    result = run("predict", "-p", FIXTURE_FACE, "--model", model, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "m.keras" in result.stderr and "Traceback" not in result.stderr, result.stderr
    (tmp_path / "cut.keras").write_bytes(model.read_bytes()[:5000])
    result = run("predict", "-p", FIXTURE_FACE, "--model", tmp_path / "cut.keras", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "not a valid fercli model file" in result.stderr


@pytest.mark.parametrize("after_s", [0.3, 1.0, 1.8])
def test_ctrl_c_while_the_libraries_load_ends_the_run_with_its_sentence(tmp_path, after_s):
    import signal
    import time

    pytest.importorskip("tensorflow", reason="TensorFlow is in the train extra")
    from fercli.architectures import build_model
    from fercli.modelfile import save_model

    # A .keras model runs on Keras: TensorFlow loads (the lean .lite path starts in well under a second).
    keras_file = tmp_path / "mine.keras"
    save_model(build_model("vgg-small", 2, 16), keras_file, {"classes": ["happy", "sad"], "input_size": 16})
    process = subprocess.Popen([sys.executable, "-m", "fercli", "predict", "-p", str(FIXTURE_FACE), "-o", str(tmp_path / "out"),
                                "-q", "--model", str(keras_file)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(after_s)  # within TensorFlow's start-up, which takes seconds
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and err.strip().splitlines()[-1] == "interrupted." and "Traceback" not in err, err
