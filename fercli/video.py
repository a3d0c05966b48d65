"""`fercli video`: annotate video files (or a live camera) through the shared
pipeline, with frame skipping, IoU track ids and per-track smoothing. Files are
read and written through PyAV (fercli.videoio): every frame at its own time,
H.264 with the input's audio."""
from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from fercli.annotate import colour_for, draw_faces
from fercli.errors import UserError
from fercli.faces import Faces
from fercli.sinks import RecordSink
from fercli.videoio import CODECS, DEFAULT_CODEC, VideoFrame, VideoReader, VideoWriter

VIDEO_DETECT_SIDE = 960  # frames are detected at most this large: 720p at 0.75, as fast as haar at half size


def detection_scaling(detector: str, detect_scale: float | None) -> dict:
    """The detector option for video frames: `--detect-scale` if given, else
    centerface on the frame at most VIDEO_DETECT_SIDE px, haar at half size."""
    if detect_scale is not None:
        return {"detect_scale": detect_scale}
    return {"detect_scale": 0.5} if detector == "haar" else {"max_side": VIDEO_DETECT_SIDE}


VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp"}


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


@dataclass
class VideoInput:
    path: Path
    relative: Path   # where its outputs go under the output folder (the input tree mirrored)


def collect_videos(paths: tuple[str, ...]) -> list[VideoInput]:
    """The videos named or found in the folders named, each with the path its
    outputs take under -o: relative to the folder all of them share, so two
    videos of the same name in different folders keep different outputs."""
    videos: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
            if not found:
                raise UserError(f"no videos found in {path} (looked for {', '.join(sorted(VIDEO_SUFFIXES))}).")
            videos += found
        elif path.exists():
            videos.append(path)
        else:
            raise UserError(f"{path} does not exist.")
    if not videos:
        raise UserError("no video given: pass video files or a folder, or --camera N.")
    base = Path(os.path.commonpath([str(p.resolve().parent) for p in videos]))
    return [VideoInput(p, p.resolve().relative_to(base)) for p in videos]


def output_video_path(output: Path, item: VideoInput, inputs: set[Path], codec: str = DEFAULT_CODEC) -> Path:
    """The annotated copy's path: the input's place under `output`, in the
    codec's container; never one of the inputs."""
    path = output / item.relative.with_suffix(CODECS[codec][1])
    if path.resolve() in inputs:
        path = path.with_name(f"{path.stem}.annotated{path.suffix}")
    return path


class ThreadedCamera:
    """Reads a live device on its own thread, keeping only the newest frame,
    so capture never waits for inference. Frames are timed by the clock when
    they were read."""

    def __init__(self, index: int):
        self.capture = cv2.VideoCapture(index)
        if not self.capture.isOpened():
            raise UserError(f"camera {index} could not be opened (no such device, or it is busy).")
        fps = self.capture.get(cv2.CAP_PROP_FPS) or 0.0
        self.fps = fps if 0 < fps < 1000 else 30.0
        self.frames: queue.Queue = queue.Queue(maxsize=1)
        self.running = True
        self.start = time.monotonic()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while self.running:
            ok, frame = self.capture.read()
            if not ok:
                self.running = False
                break
            if self.frames.full():
                try:
                    self.frames.get_nowait()
                except queue.Empty:
                    pass
            self.frames.put((time.monotonic() - self.start, frame))
        self.frames.put(None)

    def __iter__(self):
        index = 0
        while True:
            item = self.frames.get()
            if item is None:
                return
            seconds, image = item
            yield VideoFrame(index, seconds, image, round(seconds * 1000))
            index += 1

    def release(self):
        self.running = False
        self.thread.join(timeout=1)
        self.capture.release()


def display_available() -> bool:
    return sys.platform in ("win32", "darwin") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def process_stream(frames, source: str, analyzer, sink: RecordSink, writer, every: int, smooth: int,
                   fps: float, total: int = 0, show: bool = False, max_frames: int | None = None,
                   on_error=None, progress: bool = True, draw_landmarks: bool = False) -> VideoReport:
    """Run every frame through the pipeline (classifying every `every`-th
    frame, carrying tracks in between), writing each annotated frame at its own
    time and one CSV row per face per frame. A frame that does not decode is
    reported and the previous annotated frame stands at its time."""
    from tqdm import tqdm

    report = VideoReport(source, fps=fps, output=str(writer.path if writer else ""))
    tracker = Tracker(analyzer.classes, smooth=smooth)
    faces, last_annotated, count = Faces.empty(analyzer.classes), None, 0
    start = time.perf_counter()
    bar = tqdm(total=total or None, desc=Path(source).name[:30], unit="frame", disable=not progress, file=sys.stderr)
    try:
        for frame in frames:
            if max_frames is not None and count >= max_frames:
                break
            count += 1
            bar.update(1)
            if frame.image is None:
                report.bad_frames.append(frame.index)
                if on_error:
                    on_error(source, f"frame {frame.index} unreadable, skipped (the previous frame is repeated)")
                sink.write(source, [], status="error: unreadable frame", frame=frame.index, time_s=frame.time_s)
                annotated = last_annotated
            else:
                if frame.index % every == 0:
                    faces = tracker.update(analyzer.classify(frame.image, analyzer.detect(frame.image)), frame.index)
                    report.analysed += 1
                sink.write(source, faces, frame=frame.index, time_s=frame.time_s)
                for face in faces:
                    report.timeline.setdefault(face.track, []).append((frame.time_s, [face.probabilities[c] for c in analyzer.classes]))
                annotated = draw_faces(frame.image, faces, draw_landmarks)
            if annotated is None:
                continue
            if writer is not None:
                writer.write(frame, annotated)
            if show:
                cv2.imshow(f"fercli - {Path(source).name} (q quits)", annotated)
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
            last_annotated = annotated
    finally:
        bar.close()
        if show:
            cv2.destroyAllWindows()
    report.frames = count
    report.wall_s = time.perf_counter() - start
    return report


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
    (output / f"{stem}.summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_videos(videos: list[VideoInput], analyzer, output: Path, every: int, smooth: int, show: bool,
               save_video: bool = True, jsonl: bool = False, on_error=None, progress: bool = True,
               draw_landmarks: bool = False, codec: str = DEFAULT_CODEC):
    """Every file in turn; an unreadable one is reported and the others go on.
    Returns ([(report, summary)], [(source, reason)])."""
    done, failed = [], []
    inputs = {item.path.resolve() for item in videos}

    def fail(source: str, reason: str, sink: RecordSink) -> None:
        failed.append((source, reason))
        sink.write(source, [], status=f"error: {reason}")
        if on_error:
            on_error(source, reason)

    with RecordSink(output / "predictions.csv", analyzer.classes, video=True,
                    jsonl_path=output / "predictions.jsonl" if jsonl else None) as sink:
        for item in videos:
            source = str(item.path)
            try:
                reader = VideoReader(item.path)
            except ValueError as exc:
                fail(source, str(exc), sink)
                continue
            out_path = output_video_path(output, item, inputs, codec) if save_video else None
            if out_path is not None and out_path.name != item.relative.with_suffix(out_path.suffix).name and on_error:
                on_error(source, f"its annotated copy is {out_path}, not to overwrite the input")
            with reader:
                writer = VideoWriter(out_path, reader, codec) if out_path is not None else None
                try:
                    report = process_stream(reader, source, analyzer, sink, writer, every, smooth, reader.fps,
                                            reader.frames_expected, show=show, on_error=on_error, progress=progress,
                                            draw_landmarks=draw_landmarks)
                finally:
                    if writer is not None:
                        writer.close()
            if report.frames == 0:
                fail(source, "no frame could be decoded", sink)
                continue
            if reader.error:
                fail(source, reader.error, sink)
            elif reader.frames_expected and report.frames < reader.frames_expected:
                fail(source, f"the video ends after {report.frames} of the {reader.frames_expected} frames its header "
                             "announces (truncated or damaged)", sink)
            elif report.bad_frames:
                failed.append((source, f"{len(report.bad_frames)} unreadable frame(s) skipped"))
            stem = (output / item.relative).with_suffix("")
            stem.parent.mkdir(parents=True, exist_ok=True)
            done.append((report, write_video_summary(report, analyzer.classes, stem.parent, stem.name)))
    return done, failed


def run_camera(index: int, analyzer, output: Path, every: int, smooth: int, show: bool,
               max_frames: int | None, save_video: bool = True, jsonl: bool = False, on_error=None,
               progress: bool = True, draw_landmarks: bool = False, codec: str = DEFAULT_CODEC):
    camera = ThreadedCamera(index)
    source = f"camera:{index}"
    try:
        with RecordSink(output / "predictions.csv", analyzer.classes, video=True,
                        jsonl_path=output / "predictions.jsonl" if jsonl else None) as sink:
            out_path = output / f"camera{index}{CODECS[codec][1]}" if save_video else None
            writer = VideoWriter(out_path, None, codec, fps=camera.fps, time_base=Fraction(1, 1000)) if out_path else None
            try:
                report = process_stream(camera, source, analyzer, sink, writer, every, smooth, camera.fps, show=show,
                                        max_frames=max_frames, on_error=on_error, progress=progress,
                                        draw_landmarks=draw_landmarks)
            finally:
                if writer is not None:
                    writer.close()
    finally:
        camera.release()
    return report, write_video_summary(report, analyzer.classes, output, f"camera{index}")
