"""THE loop: every Item of a source through the analyzer to the sinks.

    stats = run(image_items(files), analyzer, records, [AnnotatedImageSink(...)])
    stats = run(VideoReader(path), analyzer, records, [AnnotatedVideoSink(...)], every=3, tracker=Tracker(...))

Faces are found item by item and classified in batches across items (up to
BATCH_FACES faces or BATCH_ITEMS items or BATCH_PIXELS pixels held), so the
classifier runs full batches on folders and video; then each item, in order,
goes to the tracker, the sinks and the records. Video frames are analysed
every `every`-th frame, the frames between carrying the last faces (and the
tracker joining them across frames). An item that cannot be read, analysed or
written becomes one error row and the run goes on.
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import cv2

from fercli.errors import reason
from fercli.faces import Faces
from fercli.sinks import StopRun

BATCH_FACES = 64          # the classifier's full batch
BATCH_ITEMS = 8
BATCH_PIXELS = 30_000_000  # decoded pictures held at once (about 90 MB of BGR)
FAILURES = (ValueError, cv2.error, MemoryError, OSError)
DETECTION_FAILED = "detection failed"   # in place of an item's faces: its error says why


@dataclass
class RunStats:
    items: int = 0                  # images, or video frames
    analysed: int = 0               # items the analyzer saw
    faces: int = 0
    emotions: Counter = field(default_factory=Counter)
    failed: list[tuple[str, str]] = field(default_factory=list)   # (source, reason) of images that failed
    bad_frames: list[int] = field(default_factory=list)           # video frames that did not decode
    wall_s: float = 0.0

    def count(self, item, faces, on_error=None) -> None:
        """A finished item's faces, or its failure (said through `on_error`)."""
        if item.error is None:
            self.faces += len(faces)
            self.emotions.update(faces.emotions)
        elif item.frame is not None and item.image is None:
            self.bad_frames.append(item.frame)
            if on_error:
                on_error(item.source, f"frame {item.frame} unreadable, skipped (the previous frame stands at its time)")
        else:
            self.failed.append((item.source, item.error))
            if on_error:
                on_error(item.source, item.error)


def run(items, analyzer, records, sinks=(), every: int = 1, tracker=None, on_error=None, progress: bool = False,
        total: int | None = None, desc: str = "images", max_items: int | None = None,
        batch_items: int = BATCH_ITEMS) -> RunStats:
    """`batch_items` 1: each item is finished before the next is read (a live camera)."""
    from tqdm import tqdm

    stats = RunStats()
    held: list[tuple] = []   # (item, its detected faces or None when not analysed)
    last = [Faces.empty(analyzer.classes)]   # the faces that frames between analysed ones carry
    start = time.perf_counter()

    def finish_held():
        """Classify the held items' faces in one batch, then each item to the tracker, sinks and records."""
        detected = [(item, faces) for item, faces in held if isinstance(faces, Faces)]
        try:
            classified = dict(zip(map(id, (item for item, _ in detected)),
                                  analyzer.classify_many([(item.image, faces) for item, faces in detected])))
        except FAILURES as exc:
            for item, _ in detected:
                item.error = reason(exc)
            classified = {}
        for item, found in held:
            faces = last[0]
            if id(item) in classified:
                faces = classified[id(item)]
                if tracker is not None:
                    faces = tracker.update(faces, item.frame)
                last[0] = faces
                stats.analysed += 1
            finish(item, faces, analysis_failed=found is not None and id(item) not in classified)  # detection or classification
        held.clear()

    def finish(item, faces, analysis_failed: bool):
        try:
            if not analysis_failed:
                for sink in sinks:
                    sink.write(item, None if item.image is None else faces)
        except FAILURES as exc:
            item.error = reason(exc)
        records.write(item, faces)
        stats.count(item, faces, on_error)

    with tqdm(total=total or None, desc=desc[:30], unit="img" if desc == "images" else "frame",
              disable=not progress, file=sys.stderr) as bar:
        try:
            for item in items:
                if max_items is not None and stats.items >= max_items:
                    break
                stats.items += 1
                bar.update(1)
                found = None
                if item.image is not None and (item.frame is None or item.frame % every == 0):
                    try:
                        found = analyzer.detect(item.image)
                    except FAILURES as exc:
                        item.error, found = reason(exc), DETECTION_FAILED
                held.append((item, found))
                pixels = sum(item.image.size // 3 for item, _ in held if item.image is not None)
                faces = sum(len(f) for _, f in held if isinstance(f, Faces))
                if len(held) >= batch_items or faces >= BATCH_FACES or pixels >= BATCH_PIXELS:
                    finish_held()
            finish_held()
        except StopRun:
            pass
    stats.wall_s = time.perf_counter() - start
    return stats
