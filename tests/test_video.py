import csv
import json

import cv2
import numpy as np
import pytest

from fercli.faces import Faces
from fercli.video import Tracker, iou
from tests.clips import clip_starting_between_key_frames, phone_clip, video_streams
from tests.conftest import box_hits, findable_faces, run, textured_background


def make_clip(path, frames=60, fps=25, size=(640, 480), fourcc="MJPG", face_side=140):
    """Two real faces moving across a textured background; returns the true boxes per frame."""
    faces = [cv2.resize(face, (face_side, face_side), interpolation=cv2.INTER_CUBIC) for face in findable_faces(2, face_side)]
    width, height = size
    background = textured_background(height, width, seed=7)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    span = width - face_side - 40  # faces go back and forth across the frame

    def bounce(step):
        step %= 2 * span
        return step if step < span else 2 * span - step

    truth = []
    for i in range(frames):
        frame = background.copy()
        boxes = [(20 + bounce(3 * i), 40, face_side, face_side),
                 (width - face_side - 20 - bounce(2 * i), height - face_side - 40, face_side, face_side)]
        for (x, y, w, h), face in zip(boxes, faces):
            frame[y:y + h, x:x + w] = face
        writer.write(frame)
        truth.append(boxes)
    writer.release()
    return truth


def rows_of(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_video_file_annotated_with_every_frame_and_tracks(tmp_path):
    truth = make_clip(tmp_path / "clip.avi", frames=60)
    result = run("video", tmp_path / "clip.avi", "-o", tmp_path / "out", "--jsonl")
    assert result.exit_code == 0, result.stderr
    annotated = video_streams(tmp_path / "out" / "clip.mp4")
    assert annotated["video_codec"] == "h264" and annotated["size"] == (640, 480)
    assert annotated["times"] == pytest.approx([i / 25 for i in range(60)], abs=1e-3)
    rows = rows_of(tmp_path / "out" / "predictions.csv")
    assert {"frame", "time_s", "track", "emotion", "confidence", "status"} <= set(rows[0])
    covered = sum(any(box_hits(tuple(int(r[k]) for k in "xywh"), box) for r in rows if int(r["frame"]) == f)
                  for f, boxes in enumerate(truth) for box in boxes)
    assert covered >= 0.9 * 2 * 60
    assert len({r["track"] for r in rows}) == 2  # each moving face keeps one id
    assert float(rows[-1]["time_s"]) == pytest.approx(int(rows[-1]["frame"]) / 25, abs=1e-3)
    summary = json.loads((tmp_path / "out" / "clip.summary.json").read_text())
    assert summary["frames"] == 60 and len(summary["tracks"]) == 2
    for info in summary["tracks"].values():
        assert sum(info["share"].values()) == pytest.approx(1.0, abs=1e-3)
    assert (tmp_path / "out" / "clip.timeline.png").stat().st_size > 1000
    timeline = rows_of(tmp_path / "out" / "clip.timeline.csv")
    assert {r["track"] for r in timeline} == {r["track"] for r in rows}
    assert len((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()) == len(rows)


def test_phone_clip_keeps_its_audio_and_every_frame_time(tmp_path):
    """H.264 + AAC with irregular frame times in, H.264 + the same audio out, each frame at its own time."""
    times = phone_clip(tmp_path / "phone.mp4", frames=48)
    result = run("video", tmp_path / "phone.mp4", "-o", tmp_path / "out", "--every", 1)
    assert result.exit_code == 0, result.stderr
    source, annotated = video_streams(tmp_path / "phone.mp4"), video_streams(tmp_path / "out" / "phone.mp4")
    assert annotated["video_codec"] == "h264" and annotated["audio_codec"] == "aac"
    assert annotated["audio_packets"] == source["audio_packets"] > 0
    assert annotated["times"] == pytest.approx(times, abs=0.002) and len(annotated["times"]) == 48
    rows = rows_of(tmp_path / "out" / "predictions.csv")
    assert [float(r["time_s"]) for r in rows] == pytest.approx(times, abs=0.002)


def test_outputs_never_overwrite_inputs_and_same_names_stay_apart(tmp_path):
    (tmp_path / "v").mkdir()
    phone_clip(tmp_path / "v" / "clip.mp4", frames=10)
    before = (tmp_path / "v" / "clip.mp4").read_bytes()
    result = run("video", tmp_path / "v" / "clip.mp4", "-o", tmp_path / "v")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "v" / "clip.mp4").read_bytes() == before
    assert len(video_streams(tmp_path / "v" / "clip.annotated.mp4")["times"]) == 10
    for name in ("a", "b"):
        (tmp_path / "two" / name).mkdir(parents=True)
        phone_clip(tmp_path / "two" / name / "clip.mp4", frames=6 if name == "a" else 8)
    result = run("video", tmp_path / "two", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert len(video_streams(tmp_path / "out" / "a" / "clip.mp4")["times"]) == 6
    assert len(video_streams(tmp_path / "out" / "b" / "clip.mp4")["times"]) == 8
    assert (tmp_path / "out" / "a" / "clip.summary.json").is_file() and (tmp_path / "out" / "b" / "clip.summary.json").is_file()


def test_unreadable_video_does_not_stop_the_others(tmp_path):
    make_clip(tmp_path / "good.mp4", frames=20, fourcc="mp4v")
    (tmp_path / "broken.avi").write_bytes(b"this is not a video at all")
    result = run("video", tmp_path / "broken.avi", tmp_path / "good.mp4", "-o", tmp_path / "out", "--every", 1)
    assert result.exit_code == 1
    assert "broken.avi" in result.stderr and "Traceback" not in result.stderr
    rows = rows_of(tmp_path / "out" / "predictions.csv")
    assert any(r["source"].endswith("broken.avi") and r["status"].startswith("error") for r in rows)
    assert {int(r["frame"]) for r in rows if r["source"].endswith("good.mp4")} == set(range(20))
    assert len(video_streams(tmp_path / "out" / "good.mp4")["times"]) == 20


def mjpeg_clip_bytes(tmp_path, frames=30) -> bytearray:
    make_clip(tmp_path / "clip.avi", frames=frames)
    return bytearray((tmp_path / "clip.avi").read_bytes())


def test_broken_frame_in_the_middle_is_skipped(tmp_path):
    """An MJPEG frame overwritten with garbage: reported, the rest of the video goes on."""
    data = mjpeg_clip_bytes(tmp_path)
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    middle = starts[15]
    data[middle:middle + 4000] = bytes(4000)  # frame 15 no longer decodes
    (tmp_path / "clip.avi").write_bytes(bytes(data))
    result = run("video", tmp_path / "clip.avi", "-o", tmp_path / "out", "--every", 1)
    rows = rows_of(tmp_path / "out" / "predictions.csv")
    frames = {int(r["frame"]) for r in rows if r["frame"]}
    assert max(frames) == 29 and "Traceback" not in result.stderr
    assert result.exit_code == 1 and "frame 15 unreadable" in result.stderr
    assert [r["status"] for r in rows if r["frame"] == "15"] == ["error: unreadable frame"]
    assert len(video_streams(tmp_path / "out" / "clip.mp4")["times"]) == 30  # frame 15 shows frame 14 at its time


def test_truncated_video_says_how_many_frames_it_had_and_invents_none(tmp_path):
    data = mjpeg_clip_bytes(tmp_path, frames=30)
    (tmp_path / "clip.avi").write_bytes(bytes(data[:len(data) // 2]))
    result = run("video", tmp_path / "clip.avi", "-o", tmp_path / "out", "--every", 1)
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    rows = rows_of(tmp_path / "out" / "predictions.csv")
    read = {int(r["frame"]) for r in rows if r["frame"]}
    assert 5 < len(read) < 30 and read == set(range(len(read)))
    assert rows[-1]["status"] == f"error: the video ends after {len(read)} of the 30 frames its header announces (truncated or damaged)"
    assert len(video_streams(tmp_path / "out" / "clip.mp4")["times"]) == len(read)


def moving_texture(i):
    return np.roll(textured_background(240, 320, seed=3), 4 * i, axis=1)


def test_frames_the_decoder_drops_at_the_start_are_no_failure(tmp_path):
    """A clip starting 3 frames before a key frame, as phones and cut clips do: the decoder drops those
    (as players do) though the header counts them; nothing is missing: exit 0 and a note."""
    announced = clip_starting_between_key_frames(tmp_path / "phone.mp4", frames=40, dropped=3, picture=moving_texture)
    result = run("video", tmp_path / "phone.mp4", "-o", tmp_path / "out", "--every", 1, "-q")
    assert result.exit_code == 0, result.stderr
    assert "dropped the stream's first 3 frames" in result.stderr and f"{announced - 3} of the {announced} frames" in result.stderr
    rows = rows_of(tmp_path / "out" / "predictions.csv")
    assert {int(r["frame"]) for r in rows} == set(range(announced - 3))
    assert not any(r["status"].startswith("error") for r in rows)
    assert len(video_streams(tmp_path / "out" / "phone.mp4")["times"]) == announced - 3


def test_the_same_clip_cut_short_still_fails_with_its_status_row(tmp_path):
    announced = clip_starting_between_key_frames(tmp_path / "phone.mp4", frames=40, dropped=3, picture=moving_texture)
    data = (tmp_path / "phone.mp4").read_bytes()
    (tmp_path / "phone.mp4").write_bytes(data[:len(data) * 6 // 10])
    result = run("video", tmp_path / "phone.mp4", "-o", tmp_path / "out", "--every", 1, "-q")
    assert result.exit_code == 1 and "dropped" not in result.stderr
    rows = rows_of(tmp_path / "out" / "predictions.csv")
    read = {int(r["frame"]) for r in rows if r["frame"]}
    assert 0 < len(read) < announced - 3 and read == set(range(len(read)))
    assert rows[-1]["status"] == (f"error: the video ends after {len(read)} of the {announced} frames its header "
                                  "announces (truncated or damaged)")


def test_a_header_counting_more_frames_than_a_whole_file_holds_is_a_note(tmp_path):
    """An AVI whose header says 40 frames while the whole file (its index after the frames) holds 30."""
    import struct

    data = mjpeg_clip_bytes(tmp_path, frames=30)
    for tag, offset in ((b"avih", 16), (b"strh", 32)):   # dwTotalFrames, the stream's dwLength
        struct.pack_into("<I", data, data.find(tag) + 8 + offset, 40)
    (tmp_path / "clip.avi").write_bytes(bytes(data))
    result = run("video", tmp_path / "clip.avi", "-o", tmp_path / "out", "--every", 1, "-q")
    assert result.exit_code == 0, result.stderr
    assert "its header announces 40 frames but the file holds 30" in result.stderr
    assert {int(r["frame"]) for r in rows_of(tmp_path / "out" / "predictions.csv")} == set(range(30))


def test_codec_choices_match_the_writer():
    import fercli.videoio
    from fercli.cli import video

    choices = next(p for p in video.params if p.name == "codec").type.choices
    assert list(choices) == list(fercli.videoio.CODECS)


def test_show_without_window_support_says_what_to_install_and_writes_the_files(tmp_path, monkeypatch):
    """opencv-python-headless (the plain install's) opens no window: --show is a note, not a failure."""
    import fercli.video

    monkeypatch.setattr(fercli.video, "display_available", lambda: True)
    monkeypatch.setattr(fercli.video, "opencv_has_windows", lambda: False)
    phone_clip(tmp_path / "clip.mp4", frames=6)
    result = run("video", tmp_path / "clip.mp4", "-o", tmp_path / "out", "-q", "--show")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("note: --show needs OpenCV with window support (pip uninstall opencv-python-headless "
                               "&& pip install opencv-python); writing files only.") == 1
    assert (tmp_path / "out" / "clip.mp4").is_file()


def test_no_video_given_and_missing_camera(tmp_path):
    result = run("video", "-o", tmp_path)
    assert result.exit_code == 2 and "no video given" in result.stderr
    result = run("video", "--camera", 97, "-o", tmp_path)
    assert result.exit_code == 2 and "camera 97" in result.stderr


def test_tracker_keeps_ids_and_smooths():
    classes = ["happy", "sad"]
    tracker = Tracker(classes, smooth=2)

    def faces(*boxes_and_happy):
        boxes = [box for box, _ in boxes_and_happy]
        return Faces.from_boxes(boxes).classified([[p, 1 - p] for _, p in boxes_and_happy], classes)

    first = tracker.update(faces(((0, 0, 50, 50), 0.9), ((200, 0, 50, 50), 0.2)), frame=0)
    second = tracker.update(faces(((205, 2, 50, 50), 0.4), ((3, 1, 50, 50), 0.3)), frame=3)
    assert first.tracks.tolist() == [1, 2] and second.tracks.tolist() == [2, 1]
    assert second[1].probabilities["happy"] == pytest.approx(0.6)  # (0.9 + 0.3) / 2
    assert second[1].emotion == "happy" and second[0].emotion == "sad" and second[1].track == 1
    third = tracker.update(faces(((400, 300, 50, 50), 0.5)), frame=4)
    assert third[0].track == 3
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


@pytest.mark.parametrize("codec, suffix, name", [("mpeg4", ".mp4", "mpeg4"), ("mjpeg", ".avi", "mjpeg"), ("hevc", ".mp4", "hevc")])
def test_other_codecs_keep_every_frame_and_the_audio(tmp_path, codec, suffix, name):
    times = phone_clip(tmp_path / "phone.mp4", frames=8)
    result = run("video", tmp_path / "phone.mp4", "-o", tmp_path / "out", "--codec", codec, "-q")
    assert result.exit_code == 0, result.stderr
    annotated = video_streams(tmp_path / "out" / f"phone{suffix}")
    assert annotated["video_codec"] == name and annotated["audio_codec"] is not None
    assert annotated["times"] == pytest.approx(times, abs=0.002)


def test_following_detector_looks_at_the_faces_resolution_and_keeps_every_face(tmp_path):
    """Between full passes the frame is looked at scaled to the faces' size
    (here about half), and every frame still has both faces, where a full
    pass finds them."""
    from fercli.detect import CenterFaceDetector, FollowingDetector
    from fercli.videoio import VideoReader

    truth = make_clip(tmp_path / "clip.avi", frames=24)
    detector = CenterFaceDetector(max_side=960)
    scales = []
    original = detector.detect_at
    detector.detect_at = lambda image, scale: scales.append(scale) or original(image, scale)
    following = FollowingDetector(detector, full_every=6)
    with VideoReader(tmp_path / "clip.avi") as reader:
        frames = [item.image for item in reader]
    for image, boxes in zip(frames, truth):
        found = following.detect(image)
        assert len(found) == 2 and all(any(box_hits(tuple(map(int, f)), box) for f in found.boxes) for box in boxes)
    reduced = [s for s in scales if s < 1.0]
    assert len(reduced) >= 24 * 4 // 6 and max(reduced) < 0.6   # 140 px faces: 1.5 x 48 px is a scale of about 0.51
