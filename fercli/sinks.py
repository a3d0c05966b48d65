"""Sinks: where the faces of each Item go. Each is a context manager with one
verb, `write(item, faces)` (`faces` is None for an item that failed), used
alike by predict, video, the camera and the Python API:

- RecordSink: CSV (and JSON Lines), one row per face and one per item with no
  face or an error. Rows are flushed as they are written, so a killed run keeps
  everything done so far; `resume=True` appends to an earlier file.
- AnnotatedImageSink, ExplanationSink: the annotated copy of an image and the
  heat maps of its faces, under the output folder, never over an input.
- AnnotatedVideoSink: each frame with its faces drawn, at the frame's time.
- TimelineSink: each track's probabilities over time (plot, CSV, summary).
- PreviewSink: a window showing the annotated frames (`q` stops the run).
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import cv2
import numpy as np

from fercli.annotate import draw_faces
from fercli.errors import UserError
from fercli.faces import LANDMARK_NAMES
from fercli.sources import real_path

STATUS_OK, STATUS_NO_FACE = "ok", "no_face"


# After `status`, so that the columns before it keep their places: the detector's
# score, then x and y of each landmark (empty where the detector gives none).
DETECTOR_COLUMNS = ["score"] + [f"{name}_{axis}" for name in LANDMARK_NAMES for axis in "xy"]
# Then how far to trust the emotion (fercli.quality): the face's side in pixels,
# the crop's sharpness, the head pose in degrees (empty without landmarks), quality 0-1.
RELIABILITY_COLUMNS = ["size_px", "sharpness", "yaw", "pitch", "roll", "quality"]


def columns_for(classes: list[str], video: bool = False) -> list[str]:
    return (["source", "frame", "time_s"] + (["track"] if video else []) + ["face", "x", "y", "w", "h", "emotion", "confidence"]
            + [f"p_{c}" for c in classes] + ["status"] + DETECTOR_COLUMNS + RELIABILITY_COLUMNS)


def _rounded(value, digits: int):
    return None if value is None else round(value, digits)


def _detector_fields(face) -> dict:
    points = [round(v, 1) for point in face.landmarks for v in point] if face.landmarks else [None] * 10
    pose = [round(v, 1) for v in face.pose] if face.pose else [None] * 3
    return {"score": _rounded(face.score, 4), **dict(zip(DETECTOR_COLUMNS[1:], points)),
            "size_px": face.size, "sharpness": _rounded(face.sharpness, 3), **dict(zip(("yaw", "pitch", "roll"), pose)),
            "quality": _rounded(face.quality, 4)}


def records_for(source: str, faces, classes: list[str], status: str | None = None, frame: int | None = None,
                time_s: float | None = None) -> list[dict]:
    """The output records of one input: one per face, or one with the status."""
    base = {"source": source, "frame": frame, "time_s": None if time_s is None else round(time_s, 3)}
    records = [{**base, "track": face.track, "face": i, "x": face.box[0], "y": face.box[1],
                "w": face.box[2], "h": face.box[3], "emotion": face.emotion,
                "confidence": round(face.confidence, 4),
                **{f"p_{c}": round(face.probabilities.get(c, 0.0), 4) for c in classes},
                "status": STATUS_OK, **_detector_fields(face)}
               for i, face in enumerate(faces or [])]
    return records or [{**base, "status": status or STATUS_NO_FACE}]


def write_text_atomically(path: Path, text: str) -> None:
    """Written whole to a side file, then renamed over `path`: a kill leaves the old file or the new one."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def write_csv_atomically(path: Path, rows: list[list]) -> None:
    """A CSV written whole, as write_text_atomically does."""
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    write_text_atomically(path, text.getvalue())


def _drop_partial_last_line(path: Path) -> None:
    """A run killed mid-write can leave half a line: cut it before appending."""
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


def prepare_output_folder(folder: Path) -> None:
    """Make the output folder, or say in one sentence why it cannot be written.
    A folder (or the nearest existing folder above it) without any write
    permission counts as unwritable even for root, who could write there:
    the user made it read-only."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing.is_dir() and not existing.stat().st_mode & 0o222:
        raise UserError(f"cannot write to the output folder {folder} ({existing} is read-only).")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".fercli-write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to the output folder {folder} ({exc.strerror or exc}).") from None


class StopRun(Exception):
    """A sink asks the run to stop (the preview window's q)."""


class Sink:
    """The sink protocol: `write(item, faces)`; closing finishes the output."""

    def write(self, item, faces) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RecordSink(Sink):
    def __init__(self, csv_path: Path, classes: list[str], video: bool = False, resume: bool = False,
                 jsonl_path: Path | None = None):
        self.columns = columns_for(classes, video)
        self.classes = classes
        self.done: set[Path] = set()   # with resume: the inputs already recorded, by their real path
        prepare_output_folder(csv_path.parent)
        appending = resume and csv_path.is_file() and csv_path.stat().st_size > 0
        if appending:
            self.done = self._keep_finished(csv_path, jsonl_path)
        self.csv_file = open(csv_path, "a" if appending else "w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.csv_file)
        if not appending:
            self.writer.writerow(self.columns)
        self.jsonl_file = None
        if jsonl_path:
            self.jsonl_file = open(jsonl_path, "a" if appending and jsonl_path.is_file() else "w", encoding="utf-8")
        self.flush()

    def _keep_finished(self, csv_path: Path, jsonl_path: Path | None) -> set[Path]:
        """Before a resumed run appends: keep the rows of the inputs that were
        finished and did not fail, rewritten atomically; the last input's rows
        go too (a kill may have cut it between two of its faces), and failed
        inputs are tried again. Returns the kept inputs' real paths."""
        _drop_partial_last_line(csv_path)
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            if next(reader, []) != self.columns:
                raise UserError(f"{csv_path} was written with other columns (another model or mode); "
                                "use another --output folder or drop --resume.")
            rows = [row for row in reader if row]
        status = self.columns.index("status")
        last = rows[-1][0] if rows else None
        failed = {row[0] for row in rows if row[status].startswith("error")}
        kept = [row for row in rows if row[0] != last and row[0] not in failed]
        if len(kept) < len(rows):
            write_csv_atomically(csv_path, [self.columns] + kept)
            if jsonl_path and jsonl_path.is_file():
                _drop_partial_last_line(jsonl_path)
                sources = {row[0] for row in kept}
                lines = [line for line in jsonl_path.read_text(encoding="utf-8").splitlines()
                         if line and json.loads(line)["source"] in sources]
                write_text_atomically(jsonl_path, "".join(line + "\n" for line in lines))
        return {real_path(Path(row[0])) for row in kept}

    def write(self, item, faces) -> None:
        """All rows of one item: a row per face, or one status row (no face, or the item's error)."""
        status = f"error: {item.error}" if item.error else None
        for record in records_for(item.source, None if item.error else faces, self.classes, status, item.frame, item.time_s):
            self.writer.writerow(["" if record.get(c) is None else record[c] for c in self.columns])
            if self.jsonl_file:
                self.jsonl_file.write(json.dumps({c: record.get(c) for c in self.columns}, ensure_ascii=False) + "\n")
        self.flush()

    def flush(self) -> None:
        """Hand rows to the OS now: a killed process loses nothing it reported."""
        for handle in (self.csv_file, self.jsonl_file):
            if handle:
                handle.flush()

    def close(self) -> None:
        for handle in (self.csv_file, self.jsonl_file):
            if handle:
                handle.close()


def require_pyarrow(option: str) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise UserError(f'{option} needs PyArrow: pip install pyarrow (or "fercli[ray]").') from None


def write_parquet(csv_path: Path, parquet_path: Path) -> None:
    """The records of `csv_path` as a Parquet file (written aside, then renamed):
    for runs too big to load a CSV comfortably. Needs PyArrow (in fercli[ray])."""
    require_pyarrow("--parquet")
    import pyarrow.csv
    import pyarrow.parquet

    table = pyarrow.csv.read_csv(csv_path, convert_options=pyarrow.csv.ConvertOptions(
        column_types={"source": pyarrow.string(), "status": pyarrow.string(), "emotion": pyarrow.string()}))
    partial = parquet_path.with_name(parquet_path.name + ".partial")
    pyarrow.parquet.write_table(table, partial)
    os.replace(partial, parquet_path)


def write_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(path.suffix, image)
    if not ok:
        raise ValueError(f"cannot encode {path.suffix} output")
    encoded.tofile(str(path))


class AnnotatedImageSink(Sink):
    """Each image with its faces drawn, at the image's relative path under `output`."""

    def __init__(self, output: Path, inputs: set[Path], landmarks: bool = False):
        self.output, self.inputs, self.landmarks = output, inputs, landmarks

    def write(self, item, faces) -> None:
        if faces is None:
            return
        target = self.output / item.relative
        if real_path(target) in self.inputs:
            raise ValueError(f"annotated copy would overwrite input {target}")
        write_image(target, draw_faces(item.image, faces, self.landmarks))


class ExplanationSink(Sink):
    """A class activation map per face, `<image>.face<N>.cam.png` beside the annotated copy."""

    def __init__(self, analyzer, explainer, output: Path, target_class: str | None = None):
        self.analyzer, self.explainer, self.output, self.target_class = analyzer, explainer, output, target_class
        self.written = 0

    def write(self, item, faces) -> None:
        from fercli.explain import explain_faces, explanation_paths

        if faces is None:
            return
        overlays = explain_faces(self.analyzer, self.explainer, item.image, faces, self.target_class)
        for path, picture in zip(explanation_paths(self.output / item.relative, len(overlays)), overlays):
            write_image(path, picture)
        self.written += len(overlays)


class AnnotatedVideoSink(Sink):
    """Each frame with its faces drawn, at the frame's own time; a frame that
    did not decode shows the previous annotated frame at its time."""

    def __init__(self, writer, landmarks: bool = False):
        self.writer, self.landmarks, self.last = writer, landmarks, None

    def write(self, item, faces) -> None:
        annotated = self.last if item.image is None else draw_faces(item.image, faces, self.landmarks)
        if annotated is not None:
            self.writer.write(item, annotated)
            self.last = annotated

    def close(self) -> None:
        self.writer.close()


class TimelineSink(Sink):
    """Each track's class probabilities at each frame's time."""

    def __init__(self, classes: list[str]):
        self.classes = classes
        self.timeline: dict[int, list] = {}   # track -> [(time_s, probabilities)]

    def write(self, item, faces) -> None:
        for face in faces or []:
            self.timeline.setdefault(face.track, []).append((item.time_s, [face.probabilities[c] for c in self.classes]))


class PreviewSink(Sink):
    """The annotated frames in a window; q or Esc stops the run."""

    def __init__(self, title: str, landmarks: bool = False):
        self.title, self.landmarks = title, landmarks

    def write(self, item, faces) -> None:
        if item.image is None:
            return
        cv2.imshow(self.title, draw_faces(item.image, faces, self.landmarks))
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            raise StopRun

    def close(self) -> None:
        cv2.destroyAllWindows()
