"""`fercli video`: annotate video files (or a live camera) through the shared
pipeline, with frame skipping, IoU track ids and per-track smoothing. Files are
read and written through PyAV (fercli.videoio): every frame at its own time,
H.264 with the input's audio."""
from __future__ import annotations

import json
import os
import sys
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from fercli.annotate import colour_for
from fercli.faces import Faces
from fercli.run import BATCH_ITEMS, run
from fercli.sinks import AnnotatedVideoSink, PreviewSink, RecordSink, TimelineSink, write_text_atomically
from fercli.sources import InputFile, Item, ThreadedCamera, real_path
from fercli.videoio import CODECS, DEFAULT_CODEC, VideoReader, VideoWriter

VIDEO_DETECT_SIDE = 960  # frames are detected at most this large: 720p at 0.75, near haar's speed at half size


def detection_scaling(detector: str, detect_scale: float | None) -> dict:
    """The detector option for video frames: `--detect-scale` if given, else
    centerface on the frame at most VIDEO_DETECT_SIDE px, haar at half size."""
    if detect_scale is not None:
        return {"detect_scale": detect_scale}
    return {"detect_scale": 0.5} if detector == "haar" else {"max_side": VIDEO_DETECT_SIDE}


@dataclass
class VideoOptions:
    """How `fercli video` treats each video (or the camera); one object from
    the command line through run_videos, analyze_video and the Ray actors."""
    every: int = 3                  # detect and classify every Nth frame; the frames between carry the last faces
    smooth: int = 3                 # average a track's probabilities over its last N analysed frames
    show: bool = False              # a preview window
    save_video: bool = True         # the annotated copy
    jsonl: bool = False             # predictions.jsonl beside the CSV
    draw_landmarks: bool = False
    codec: str = DEFAULT_CODEC
    max_frames: int | None = None   # the camera: stop after this many frames
    progress: bool = True
    full_detection_every: int = 12  # analysed frames per full detection pass (detect.FollowingDetector); 1: all full


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


@dataclass
class Track:
    id: int
    box: tuple
    history: deque
    last_seen: int


class Tracker:
    """Greedy IoU matching of each analysed frame's faces to the tracks of the
    previous ones; `smooth` > 1 averages a track's last probabilities."""

    def __init__(self, classes: list[str], smooth: int = 1, min_iou: float = 0.25, max_age: int = 30):
        self.classes, self.smooth, self.min_iou, self.max_age = classes, max(1, smooth), min_iou, max_age
        self.tracks: list[Track] = []
        self.next_id = 1

    def update(self, faces: Faces, frame: int) -> Faces:
        """The faces with their track ids and their tracks' mean probabilities."""
        self.tracks = [t for t in self.tracks if frame - t.last_seen <= self.max_age]
        boxes = [tuple(int(v) for v in box) for box in faces.boxes]
        pairs = sorted(((iou(box, t.box), i, j) for i, box in enumerate(boxes) for j, t in enumerate(self.tracks)), reverse=True)
        face_track: dict[int, Track] = {}
        used = set()
        for overlap, i, j in pairs:
            if overlap < self.min_iou:
                break
            if i not in face_track and j not in used:
                face_track[i] = self.tracks[j]
                used.add(j)
        ids, smoothed = np.zeros(len(faces), np.int64), np.zeros((len(faces), len(self.classes)), np.float32)
        for i, (box, probabilities) in enumerate(zip(boxes, faces.probabilities)):
            track = face_track.get(i)
            if track is None:
                track = Track(self.next_id, box, deque(maxlen=self.smooth), frame)
                self.next_id += 1
                self.tracks.append(track)
            track.box, track.last_seen = box, frame
            track.history.append(probabilities)
            ids[i], smoothed[i] = track.id, np.mean(track.history, axis=0)
        return faces.tracked(ids, smoothed)


@dataclass
class VideoReport:
    source: str
    frames: int = 0
    analysed: int = 0
    fps: float = 0.0
    bad_frames: list[int] = field(default_factory=list)
    wall_s: float = 0.0
    output: str = ""
    timeline: dict = field(default_factory=dict)   # track -> list of (time_s, probabilities)

    def summary(self, classes: list[str]) -> dict:
        """Share of time each track spends in each (dominant) emotion."""
        tracks = {}
        for track, points in sorted(self.timeline.items()):
            dominant = Counter(classes[int(np.argmax(p))] for _, p in points)
            seen = sum(dominant.values())
            tracks[str(track)] = {"frames": seen, "seconds": round(seen / self.fps, 2) if self.fps else None,
                                  "share": {c: round(dominant[c] / seen, 4) for c in classes if dominant[c]}}
        return {"source": self.source, "frames": self.frames, "analysed_frames": self.analysed, "fps": self.fps,
                "bad_frames": self.bad_frames, "output": self.output, "tracks": tracks,
                "processing_fps": round(self.frames / self.wall_s, 1) if self.wall_s else None}


def output_video_path(output: Path, item: InputFile, inputs: set[Path], codec: str = DEFAULT_CODEC) -> Path:
    """The annotated copy's path: the input's place under `output`, in the
    codec's container; never one of the inputs."""
    path = output / item.relative.with_suffix(CODECS[codec][1])
    if real_path(path) in inputs:
        path = path.with_name(f"{path.stem}.annotated{path.suffix}")
    return path


def display_available() -> bool:
    return sys.platform in ("win32", "darwin") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def opencv_has_windows() -> bool:
    """Whether this OpenCV can open a window: opencv-python can, opencv-python-headless
    (the plain install's) cannot. Asks the build, opening nothing."""
    import cv2

    if hasattr(cv2, "currentUIFramework"):   # "" without a GUI backend
        return bool(cv2.currentUIFramework())
    return "NONE" not in cv2.getBuildInformation().partition("GUI:")[2].split("\n", 1)[0]


def preview_unavailable() -> str | None:
    """Why `--show` cannot open its preview window here, in one sentence; None when it can."""
    if not display_available():
        return "--show needs a display and none was found here"
    if not opencv_has_windows():
        return ("--show needs OpenCV with window support "
                "(pip uninstall opencv-python-headless && pip install opencv-python)")
    return None


def write_timeline_csv(report: VideoReport, classes: list[str], path: Path) -> None:
    """The timeline plot's data: one row per track per analysed or carried frame."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["track", "time_s"] + [f"p_{c}" for c in classes])
        for track, points in sorted(report.timeline.items()):
            for seconds, probabilities in points:
                writer.writerow([track, round(seconds, 4)] + [round(p, 4) for p in probabilities])


def write_video_summary(report: VideoReport, classes: list[str], output: Path, stem: str) -> dict:
    summary = report.summary(classes)
    from fercli.charts import timeline_plot

    colours = {c: "#{2:02x}{1:02x}{0:02x}".format(*colour_for(c)) for c in classes}  # BGR -> matplotlib's RGB
    timeline_plot(report.timeline, classes, colours, output / f"{stem}.timeline.png")
    write_timeline_csv(report, classes, output / f"{stem}.timeline.csv")
    write_text_atomically(output / f"{stem}.summary.json", json.dumps(summary, indent=2))
    return summary


def _run_stream(items, analyzer, records, output: Path, relative: Path, options: VideoOptions, writer, fps: float,
                total: int = 0, on_error=None):
    """One video or camera through the loop: annotated video, timeline and
    summary beside the records. Returns (report, summary)."""
    from fercli.charts import load_in_background

    load_in_background()   # matplotlib, for the timeline at the end
    timeline = TimelineSink(analyzer.classes)
    sinks = ([AnnotatedVideoSink(writer, options.draw_landmarks)] if writer else []) + [timeline]
    if options.show:
        sinks.append(PreviewSink(f"fercli - {relative.name} (q quits)", options.draw_landmarks))
    try:
        # a live camera finishes each frame before the next (preview, no delay); files batch across frames
        stats = run(items, analyzer.following(options.full_detection_every), records, sinks, options.every,
                    Tracker(analyzer.classes, smooth=options.smooth), on_error, options.progress, total,
                    desc=relative.name, max_items=options.max_frames,
                    batch_items=1 if isinstance(items, ThreadedCamera) else BATCH_ITEMS)
    finally:
        for sink in sinks:
            sink.close()
    source = str(getattr(items, "source", relative))
    report = VideoReport(source, stats.items, stats.analysed, fps, stats.bad_frames, stats.wall_s,
                         str(writer.path) if writer else "", timeline.timeline)
    stem = (output / relative).with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    return report, write_video_summary(report, analyzer.classes, stem.parent, stem.name)


def _records(output: Path, classes: list[str], options: VideoOptions) -> RecordSink:
    return RecordSink(output / "predictions.csv", classes, video=True,
                      jsonl_path=output / "predictions.jsonl" if options.jsonl else None)


def run_videos(videos: list[InputFile], analyzer, output: Path, options: VideoOptions, on_error=None):
    """Every file in turn; an unreadable one is reported and the others go on.
    `analyzer`: an Analyzer, or a fercli.cluster.RayEngine (one video per Ray
    actor call). Returns ([(report, summary)], [(source, reason)])."""
    done, failed = [], []
    inputs = {real_path(file.path) for file in videos}
    with _records(output, analyzer.classes, options) as records:
        if hasattr(analyzer, "analyze_videos"):
            return analyzer.analyze_videos(videos, records, output, replace(options, show=False), on_error=on_error,
                                           progress=options.progress)
        for file in videos:
            result, problems = analyze_video(file, analyzer, records, output, inputs, options, on_error)
            failed += problems
            if result is not None:
                done.append(result)
    return done, failed


def analyze_video(file: InputFile, analyzer, records, output: Path, inputs: set[Path], options: VideoOptions,
                  on_error=None):
    """One video file: its annotated copy, timeline and summary under `output`,
    its rows to `records`. Returns ((report, summary) or None when no frame
    could be read, [(source, reason)] of what went wrong); every engine runs
    each video through this."""
    failed = []

    def fail(source: str, reason: str) -> None:
        failed.append((source, reason))
        records.write(Item(source, Path(source), None, error=reason), None)
        if on_error:
            on_error(source, reason)

    try:
        reader = VideoReader(file.path, file.relative)
    except ValueError as exc:
        fail(str(file.path), str(exc))
        return None, failed
    out_path = output_video_path(output, file, inputs, options.codec) if options.save_video else None
    if out_path is not None and out_path.stem.endswith(".annotated") and on_error:
        on_error(str(file.path), f"its annotated copy is {out_path}, not to overwrite the input")
    with reader:
        writer = VideoWriter(out_path, reader, options.codec) if out_path is not None else None
        report, summary = _run_stream(reader, analyzer, records, output, file.relative, options, writer,
                                      reader.fps, reader.frames_expected, on_error=on_error)
    if report.frames == 0:
        fail(report.source, "no frame could be decoded")
        return None, failed
    if reader.error:
        fail(report.source, reader.error)
    elif reader.cut_short:
        fail(report.source, reader.cut_short)
    elif report.bad_frames:
        failed.append((report.source, f"{len(report.bad_frames)} unreadable frame(s) skipped"))
    if reader.frames_note and on_error:   # a note, not a failure: nothing is missing from the file
        on_error(report.source, reader.frames_note)
    return (report, summary), failed


def run_camera(index: int, analyzer, output: Path, options: VideoOptions, on_error=None):
    camera = ThreadedCamera(index)
    relative = Path(f"camera{index}{CODECS[options.codec][1]}")
    try:
        with _records(output, analyzer.classes, options) as records:
            writer = (VideoWriter(output / relative, None, options.codec, fps=camera.fps, time_base=Fraction(1, 1000))
                      if options.save_video else None)
            return _run_stream(camera, analyzer, records, output, relative, options, writer, camera.fps,
                               on_error=on_error)
    finally:
        camera.release()
