"""Record writers: CSV (and JSON Lines), one row per face and one per input
with no face or an error. Rows are flushed as they are written, so a killed run
keeps everything done so far; `resume=True` appends to an earlier file."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from fercli.faces import LANDMARK_NAMES
from fercli.errors import UserError

STATUS_OK, STATUS_NO_FACE = "ok", "no_face"


# After `status`, so that the columns before it keep their places: the detector's
# score, then x and y of each landmark (empty where the detector gives none).
DETECTOR_COLUMNS = ["score"] + [f"{name}_{axis}" for name in LANDMARK_NAMES for axis in "xy"]


def columns_for(classes: list[str], video: bool = False) -> list[str]:
    return (["source", "frame", "time_s"] + (["track"] if video else []) + ["face", "x", "y", "w", "h", "emotion", "confidence"]
            + [f"p_{c}" for c in classes] + ["status"] + DETECTOR_COLUMNS)


def _detector_fields(face) -> dict:
    points = [round(v, 1) for point in face.landmarks for v in point] if face.landmarks else [None] * 10
    return {"score": None if face.score is None else round(face.score, 4), **dict(zip(DETECTOR_COLUMNS[1:], points))}


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


def _drop_partial_last_line(path: Path) -> None:
    """A run killed mid-write can leave half a line: cut it before appending."""
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


class RecordSink:
    def __init__(self, csv_path: Path, classes: list[str], video: bool = False, resume: bool = False,
                 jsonl_path: Path | None = None):
        self.columns = columns_for(classes, video)
        self.classes = classes
        self.done: set[str] = set()
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        appending = resume and csv_path.is_file() and csv_path.stat().st_size > 0
        if appending:
            _drop_partial_last_line(csv_path)
            with open(csv_path, newline="", encoding="utf-8") as handle:
                reader = csv.reader(handle)
                header = next(reader, [])
                if header != self.columns:
                    raise UserError(f"{csv_path} was written with other columns (another model or mode); "
                                    "use another --output folder or drop --resume.")
                self.done = {row[0] for row in reader if row}
        self.csv_file = open(csv_path, "a" if appending else "w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.csv_file)
        if not appending:
            self.writer.writerow(self.columns)
        self.jsonl_file = None
        if jsonl_path:
            if appending and jsonl_path.is_file():
                _drop_partial_last_line(jsonl_path)
            self.jsonl_file = open(jsonl_path, "a" if appending else "w", encoding="utf-8")
        self.flush()

    def write(self, source: str, faces, status: str | None = None, frame: int | None = None,
              time_s: float | None = None) -> None:
        """All rows of one input (or one video frame): a row per face, or one status row."""
        for record in records_for(source, faces, self.classes, status, frame, time_s):
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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
