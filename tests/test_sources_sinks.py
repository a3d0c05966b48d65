"""Sources, sinks and the loop, each driven on its own with fixtures made
here (no model, no data set): a stand-in analyzer gives fixed faces."""
import csv
import io
from pathlib import Path

import cv2
import numpy as np
import pytest

from fercli.errors import UserError
from fercli.faces import Faces
from fercli.run import run
from fercli.sinks import (AnnotatedImageSink, AnnotatedVideoSink, RecordSink, StopRun, TimelineSink,
                          write_image)
from fercli.sources import Item, collect_images, collect_videos, image_items
from tests.clips import phone_clip, video_streams

CLASSES = ["happy", "sad"]


class FixedAnalyzer:
    """Finds one face at the same place in every image, 'happy' with 0.8;
    counts detector calls and the batch sizes the classifier is given."""
    classes = CLASSES

    def __init__(self):
        self.calls, self.batches = 0, []

    def detect(self, image):
        self.calls += 1
        return Faces.from_boxes([[4, 4, 8, 8]])

    def classify_many(self, detected):
        self.batches.append(sum(len(faces) for _, faces in detected))
        return [faces.classified([[0.8, 0.2]] * len(faces), CLASSES) for _, faces in detected]

    def analyze(self, image):
        return self.classify_many([(image, self.detect(image))])[0]


def picture(value=128, size=(16, 20)):
    return np.full((*size, 3), value, np.uint8)


def rows(path: Path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_collect_images_from_folder_glob_and_standard_input(tmp_path, monkeypatch):
    for name in ("a.png", "sub/b.jpg", "notes.txt"):
        if name.endswith("txt"):
            (tmp_path / name).write_text("x")
        else:
            write_image(tmp_path / name, picture())
    files, skipped = collect_images(str(tmp_path), recursive=True, output=tmp_path / "out")
    assert [f.relative for f in files] == [Path("a.png"), Path("sub/b.jpg")] and skipped == 1
    files, _ = collect_images(str(tmp_path / "*.png"), recursive=False, output=tmp_path / "out")
    assert [f.relative for f in files] == [Path("a.png")]
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{tmp_path / 'a.png'}\n\n{tmp_path / 'sub' / 'b.jpg'}\n"))
    files, _ = collect_images("-", recursive=False, output=tmp_path / "out")
    assert [f.relative for f in files] == [Path("a.png"), Path("sub/b.jpg")]
    with pytest.raises(UserError, match="does not exist"):
        collect_images(str(tmp_path / "nothing"), False, tmp_path / "out")


def test_image_items_carry_the_reason_of_an_unreadable_file(tmp_path):
    write_image(tmp_path / "good.png", picture())
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    files, _ = collect_images(str(tmp_path), recursive=False, output=tmp_path / "out")
    items = list(image_items(files))
    assert [(Path(i.source).name, i.image is None, i.error) for i in items] == [
        ("bad.jpg", True, "not a readable image"), ("good.png", False, None)]


def test_collect_videos_mirrors_folders(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "clip.mp4").write_bytes(b"")
    assert [f.relative for f in collect_videos((str(tmp_path),))] == [Path("a/clip.mp4"), Path("b/clip.mp4")]


def test_video_reader_gives_frames_at_their_times(tmp_path):
    from fercli.videoio import VideoReader

    times = phone_clip(tmp_path / "phone.mp4", frames=12)
    with VideoReader(tmp_path / "phone.mp4") as reader:
        items = list(reader)
    assert [i.frame for i in items] == list(range(12)) and [i.time_s for i in items] == pytest.approx(times, abs=1e-4)
    assert all(i.image.shape == (240, 320, 3) for i in items) and reader.audio is not None


def test_record_sink_rows_and_resume(tmp_path):
    faces = FixedAnalyzer().analyze(None)
    with RecordSink(tmp_path / "p.csv", CLASSES) as sink:
        sink.write(Item("a.png", Path("a.png"), picture()), faces)
        sink.write(Item("b.png", Path("b.png"), picture()), Faces.empty(CLASSES))
        sink.write(Item("c.png", Path("c.png"), None, error="not a readable image"), None)
    got = rows(tmp_path / "p.csv")
    assert [(r["source"], r["emotion"], r["status"]) for r in got] == [
        ("a.png", "happy", "ok"), ("b.png", "", "no_face"), ("c.png", "", "error: not a readable image")]
    assert got[0]["p_happy"] == "0.8" and got[0]["x"] == "4"
    with RecordSink(tmp_path / "p.csv", CLASSES) as sink:
        for name in ("a.png", "b.png", "c.png", "d.png"):
            failed = name == "b.png"
            sink.write(Item(str(tmp_path / name), Path(name), None if failed else picture(),
                            error="not a readable image" if failed else None), None if failed else faces)
    with RecordSink(tmp_path / "p.csv", CLASSES, resume=True) as sink:
        # b.png failed: tried again; d.png was the last one written: it may be incomplete, so done again
        assert sink.done == {tmp_path / "a.png", tmp_path / "c.png"}
    assert [Path(r["source"]).name for r in rows(tmp_path / "p.csv")] == ["a.png", "c.png"]


def test_annotated_image_sink_draws_and_never_overwrites_an_input(tmp_path):
    image = picture(200, (40, 40))
    source = write_image(tmp_path / "in.png", image) or tmp_path / "in.png"
    sink = AnnotatedImageSink(tmp_path / "out", {source.resolve()})
    sink.write(Item(str(source), Path("in.png"), image), FixedAnalyzer().analyze(image))
    assert not np.array_equal(cv2.imread(str(tmp_path / "out" / "in.png")), image)
    with pytest.raises(ValueError, match="overwrite input"):
        AnnotatedImageSink(tmp_path, {source.resolve()}).write(Item(str(source), Path("in.png"), image),
                                                                FixedAnalyzer().analyze(image))


def test_annotated_video_sink_keeps_each_frame_time_and_repeats_a_broken_one(tmp_path):
    from fercli.videoio import VideoWriter

    faces = FixedAnalyzer().analyze(None)
    with AnnotatedVideoSink(VideoWriter(tmp_path / "out.mp4", fps=25, time_base=None)) as sink:
        for index, seconds in enumerate([0.0, 0.05, 0.07, 0.2]):
            image = None if index == 2 else picture(60 * index, (32, 48))
            sink.write(Item("x", Path("x"), image, frame=index, time_s=seconds, pts=None), faces)
    assert video_streams(tmp_path / "out.mp4")["times"] == pytest.approx([0.0, 0.05, 0.07, 0.2], abs=1e-3)


def test_loop_carries_faces_between_analysed_frames_and_reports_each_failure(tmp_path):
    analyzer, timeline = FixedAnalyzer(), TimelineSink(CLASSES)
    frames = [Item("v.mp4", Path("v.mp4"), picture() if i != 4 else None, "unreadable frame" if i == 4 else None,
                   frame=i, time_s=i / 10) for i in range(7)]
    failures = []
    with RecordSink(tmp_path / "p.csv", CLASSES, video=True) as records:
        stats = run(iter(frames), analyzer, records, [timeline], every=3, on_error=lambda s, r: failures.append(r))
    assert analyzer.calls == 3 and stats.analysed == 3 and stats.items == 7   # frames 0, 3, 6
    assert stats.bad_frames == [4] and stats.failed == [] and failures and "frame 4 unreadable" in failures[0]
    got = rows(tmp_path / "p.csv")
    assert [r["status"] for r in got] == ["ok"] * 4 + ["error: unreadable frame"] + ["ok"] * 2
    assert len(timeline.timeline[None]) == 6   # untracked faces, every frame that had them

    class StopAtThird:
        def write(self, item, faces):
            if item.frame == 2:
                raise StopRun

        def close(self):
            pass

    with RecordSink(tmp_path / "q.csv", CLASSES, video=True) as records:   # a live source: one item at a time
        stats = run(iter(frames), FixedAnalyzer(), records, [StopAtThird()], batch_items=1)
    assert stats.items == 3 and len(rows(tmp_path / "q.csv")) == 2


def test_loop_classifies_across_items_and_writes_them_in_order(tmp_path):
    """Faces of several images go to the classifier in one batch (BATCH_ITEMS
    images at most), and the rows still come out in input order."""
    from fercli.run import BATCH_ITEMS

    analyzer = FixedAnalyzer()
    items = [Item(f"{i}.png", Path(f"{i}.png"), picture(i)) for i in range(2 * BATCH_ITEMS + 3)]
    with RecordSink(tmp_path / "p.csv", CLASSES) as records:
        stats = run(iter(items), analyzer, records)
    assert analyzer.batches == [BATCH_ITEMS, BATCH_ITEMS, 3] and stats.faces == len(items)
    assert [r["source"] for r in rows(tmp_path / "p.csv")] == [item.source for item in items]


def test_loop_detects_several_items_at_once_in_order(tmp_path):
    """With the analyzer's detect_workers at 2, two items are detected at the
    same time (the first two meet at a barrier, which times out otherwise),
    a detection that fails is that item's error row, and rows keep input order."""
    import threading
    import time

    class TwoAtOnce(FixedAnalyzer):
        detect_workers = 2

        def __init__(self):
            super().__init__()
            self.meet = threading.Barrier(2, timeout=10)

        def detect(self, image):
            value = int(image[0, 0, 0])
            if value < 2:
                self.meet.wait()
            time.sleep(0.001 * (value % 3))    # later items may finish first
            if value == 5:
                raise ValueError("detector broke")
            return Faces.from_boxes([[4, 4, 8, 8]] * (value % 2 + 1))

    items = [Item(f"{i}.png", Path(f"{i}.png"), picture(i)) for i in range(12)]
    with RecordSink(tmp_path / "p.csv", CLASSES) as records:
        stats = run(iter(items), TwoAtOnce(), records)
    written = rows(tmp_path / "p.csv")
    assert [r["source"] for r in written] == [s for i in range(12) for s in [f"{i}.png"] * (1 if i == 5 else i % 2 + 1)]
    assert stats.failed == [("5.png", "detector broke")] and written[7]["status"] == "error: detector broke"


def test_loop_turns_a_failing_sink_into_an_error_row(tmp_path):
    class Broken:
        def write(self, item, faces):
            raise OSError("disk full")

    with RecordSink(tmp_path / "p.csv", CLASSES) as records:
        stats = run(iter([Item("a.png", Path("a.png"), picture())]), FixedAnalyzer(), records, [Broken()])
    assert stats.failed == [("a.png", "disk full")]
    assert [r["status"] for r in rows(tmp_path / "p.csv")] == ["error: disk full"]


def test_overlapped_loop_stops_on_a_sink_and_raises_what_breaks(tmp_path):
    """With reading and writing on their own threads (files), a sink's StopRun
    still ends the run soon after, and an unexpected error reaches the caller
    with the rest of the source left unread."""
    read = []

    def source(n):
        for i in range(n):
            read.append(i)
            yield Item(f"{i}.png", Path(f"{i}.png"), picture())

    class StopAt:
        def __init__(self, at, error):
            self.at, self.error = at, error

        def write(self, item, faces):
            if item.source == f"{self.at}.png":
                raise self.error

    with RecordSink(tmp_path / "p.csv", CLASSES) as records:
        stats = run(source(200), FixedAnalyzer(), records, [StopAt(5, StopRun())])
    assert 5 <= len(rows(tmp_path / "p.csv")) < 100 and stats.items < 100 and len(read) < 100
    read.clear()
    with RecordSink(tmp_path / "q.csv", CLASSES) as records, pytest.raises(RuntimeError, match="sink broke"):
        run(source(200), FixedAnalyzer(), records, [StopAt(5, RuntimeError("sink broke"))])
    assert len(read) < 100


def test_overlapped_loop_holds_a_bounded_number_of_pictures(tmp_path):
    """Pictures read but not yet written stay bounded by the loop's pixel
    budgets (memory follows the largest picture), whatever the source's length."""
    from fercli.run import BATCH_PIXELS, PIXELS_QUEUED

    alive, most = [0], [0]

    def source(n):
        for i in range(n):
            alive[0] += 1
            most[0] = max(most[0], alive[0])
            yield Item(f"{i}.jpg", Path(f"{i}.jpg"), np.zeros((2000, 3000, 3), np.uint8))   # 6 megapixels

    class Forget:
        def write(self, item, faces):
            alive[0] -= 1

    with RecordSink(tmp_path / "p.csv", CLASSES) as records:
        stats = run(source(60), FixedAnalyzer(), records, [Forget()])
    assert stats.items == 60 and alive[0] == 0
    per_queue, per_batch = PIXELS_QUEUED // 6_000_000 + 1, BATCH_PIXELS // 6_000_000 + 1
    # read ahead, the batch being gathered, the one being classified, waiting to be written, one in each thread
    assert most[0] <= 2 * per_queue + 2 * per_batch + 3
