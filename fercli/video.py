"""`fercli video`: annotate video files (or a live camera) through the shared
pipeline, with frame skipping, IoU track ids and per-track smoothing."""
from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from fercli.annotate import colour_for, draw_faces
from fercli.errors import UserError
from fercli.pipeline import Face
from fercli.sinks import RecordSink

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
# Container -> codec OpenCV's bundled FFmpeg can write; anything else becomes .mp4.
WRITERS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
MAX_BAD_FRAMES = 25  # consecutive unreadable frames before a file counts as ended


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

    def update(self, faces: list[Face], frame: int) -> list[Face]:
        self.tracks = [t for t in self.tracks if frame - t.last_seen <= self.max_age]
        pairs = sorted(((iou(f.box, t.box), i, j) for i, f in enumerate(faces) for j, t in enumerate(self.tracks)), reverse=True)
        face_track: dict[int, Track] = {}
        used = set()
        for overlap, i, j in pairs:
            if overlap < self.min_iou:
                break
            if i not in face_track and j not in used:
                face_track[i] = self.tracks[j]
                used.add(j)
        out = []
        for i, face in enumerate(faces):
            track = face_track.get(i)
            if track is None:
                track = Track(self.next_id, face.box, deque(maxlen=self.smooth), frame)
                self.next_id += 1
                self.tracks.append(track)
            track.box, track.last_seen = face.box, frame
            track.history.append(np.array([face.probabilities[c] for c in self.classes]))
            mean = np.mean(track.history, axis=0)
            best = int(np.argmax(mean))
            out.append(replace(face, emotion=self.classes[best], confidence=float(mean[best]),
                               probabilities={c: float(p) for c, p in zip(self.classes, mean)}, track=track.id))
        return out


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


def collect_videos(paths: tuple[str, ...]) -> list[Path]:
    videos = []
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
    return videos


def output_video_path(output: Path, source: Path) -> Path:
    suffix = source.suffix.lower() if source.suffix.lower() in WRITERS else ".mp4"
    return output / f"{source.stem}{suffix}"


class ThreadedCamera:
    """Reads a live device on its own thread, keeping only the newest frame,
    so capture never waits for inference."""

    def __init__(self, index: int):
        self.capture = cv2.VideoCapture(index)
        if not self.capture.isOpened():
            raise UserError(f"camera {index} could not be opened (no such device, or it is busy).")
        self.frames: queue.Queue = queue.Queue(maxsize=1)
        self.running = True
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
            self.frames.put(frame)
        self.frames.put(None)

    def read(self):
        frame = self.frames.get()
        return (frame is not None), frame

    def get(self, prop):
        return self.capture.get(prop)

    def release(self):
        self.running = False
        self.thread.join(timeout=1)
        self.capture.release()


def display_available() -> bool:
    return sys.platform in ("win32", "darwin") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def process_stream(capture, source: str, analyzer, sink: RecordSink, out_path: Path | None, every: int,
                   smooth: int, show: bool = False, live: bool = False, max_frames: int | None = None,
                   on_error=None, progress: bool = True, draw_landmarks: bool = False) -> VideoReport:
    """Run every frame of `capture` through the pipeline (classifying every
    `every`-th frame, carrying tracks in between), writing the annotated video
    and one CSV row per face per frame."""
    from tqdm import tqdm

    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    fps = fps if 0 < fps < 1000 else 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if not live else 0
    report = VideoReport(source, fps=fps, output=str(out_path or ""))
    tracker = Tracker(analyzer.classes, smooth=smooth)
    writer, faces, last_frame, last_annotated, index, bad_run = None, [], None, None, 0, 0
    start = time.perf_counter()
    bar = tqdm(total=total or None, desc=Path(source).name[:30], unit="frame", disable=not progress, file=sys.stderr)
    try:
        while max_frames is None or index < max_frames:
            ok, frame = capture.read()
            if not ok or frame is None:
                # Past the end, or a broken frame: keep going a little when frames should remain.
                if live or index >= total or bad_run >= MAX_BAD_FRAMES or last_frame is None:
                    break
                bad_run += 1
                report.bad_frames.append(index)
                if on_error:
                    on_error(source, f"frame {index} unreadable, skipped (the previous frame is repeated)")
                sink.write(source, [], status="error: unreadable frame", frame=index, time_s=index / fps)
                frame = last_frame
                annotated = last_annotated
            else:
                bad_run = 0
                if index % every == 0:
                    faces = tracker.update(analyzer.classify(frame, analyzer.detect(frame)), index)
                    report.analysed += 1
                sink.write(source, faces, frame=index, time_s=index / fps)
                for face in faces:
                    report.timeline.setdefault(face.track, []).append((index / fps, [face.probabilities[c] for c in analyzer.classes]))
                annotated = draw_faces(frame, faces, draw_landmarks)
            if out_path is not None:
                if writer is None:
                    out_path.parent.mkdir(parents=True, exist_ok=True)
                    fourcc = cv2.VideoWriter_fourcc(*WRITERS.get(out_path.suffix.lower(), "mp4v"))
                    writer = cv2.VideoWriter(str(out_path), fourcc, fps, (frame.shape[1], frame.shape[0]))
                    if not writer.isOpened():
                        raise UserError(f"cannot write video {out_path}.")
                writer.write(annotated)
            if show:
                cv2.imshow(f"fercli - {Path(source).name} (q quits)", annotated)
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
            last_frame, last_annotated = frame, annotated
            index += 1
            bar.update(1)
    finally:
        bar.close()
        if writer is not None:
            writer.release()
        if show:
            cv2.destroyAllWindows()
    report.frames = index
    report.wall_s = time.perf_counter() - start
    return report


def timeline_plot(report: VideoReport, classes: list[str], path: Path) -> None:
    """Per track, each class's probability over time (one panel per track, at most 6)."""
    from fercli.charts import line_panel

    panels = []
    for track, points in sorted(report.timeline.items())[:6]:
        times = [t for t, _ in points]
        series = {c: [p[k] for _, p in points] for k, c in enumerate(classes)}
        panels.append(line_panel(f"track {track}: probability over time", series, width=760, height=300,
                                 x_label="time s", x_range=(round(times[0], 1), round(times[-1], 1)),
                                 colours={c: colour_for(c) for c in classes}, y_range=(0.0, 1.0)))
    if not panels:
        panels.append(line_panel("no faces found", {}, width=760, height=120, x_label="time s"))
    cv2.imwrite(str(path), np.concatenate(panels, axis=0))


def write_video_summary(report: VideoReport, classes: list[str], output: Path, stem: str) -> dict:
    summary = report.summary(classes)
    timeline_plot(report, classes, output / f"{stem}.timeline.png")
    (output / f"{stem}.summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def open_video(path: Path):
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise ValueError("not a readable video")
    return capture


def run_videos(videos: list[Path], analyzer, output: Path, every: int, smooth: int, show: bool,
               save_video: bool = True, jsonl: bool = False, on_error=None, progress: bool = True,
               draw_landmarks: bool = False):
    """Every file in turn; an unreadable one is reported and the others go on.
    Returns ([(report, summary)], [(source, reason)])."""
    done, failed = [], []
    with RecordSink(output / "predictions.csv", analyzer.classes, video=True,
                    jsonl_path=output / "predictions.jsonl" if jsonl else None) as sink:
        for path in videos:
            source = str(path)
            try:
                capture = open_video(path)
            except ValueError as exc:
                failed.append((source, str(exc)))
                sink.write(source, [], status=f"error: {exc}")
                if on_error:
                    on_error(source, str(exc))
                continue
            try:
                out_path = output_video_path(output, path) if save_video else None
                report = process_stream(capture, source, analyzer, sink, out_path, every, smooth, show=show,
                                        on_error=on_error, progress=progress, draw_landmarks=draw_landmarks)
            finally:
                capture.release()
            if report.frames == 0:
                failed.append((source, "no frame could be decoded"))
                sink.write(source, [], status="error: no frame could be decoded")
                if on_error:
                    on_error(source, "no frame could be decoded")
                continue
            if report.bad_frames:
                failed.append((source, f"{len(report.bad_frames)} unreadable frame(s) skipped"))
            done.append((report, write_video_summary(report, analyzer.classes, output, path.stem)))
    return done, failed


def run_camera(index: int, analyzer, output: Path, every: int, smooth: int, show: bool,
               max_frames: int | None, save_video: bool = True, on_error=None, draw_landmarks: bool = False):
    camera = ThreadedCamera(index)
    source = f"camera:{index}"
    try:
        with RecordSink(output / "predictions.csv", analyzer.classes, video=True) as sink:
            out_path = output / f"camera{index}.mp4" if save_video else None
            report = process_stream(camera, source, analyzer, sink, out_path, every, smooth, show=show, live=True,
                                    max_frames=max_frames, on_error=on_error, draw_landmarks=draw_landmarks)
    finally:
        camera.release()
    return report, write_video_summary(report, analyzer.classes, output, f"camera{index}")
