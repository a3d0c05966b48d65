"""THE loop: every Item of a source through the analyzer to the sinks.

    stats = run(image_items(files), analyzer, records, [AnnotatedImageSink(...)])
    stats = run(VideoReader(path), analyzer, records, [AnnotatedVideoSink(...)], every=3, tracker=Tracker(...))

Still images are analysed one by one; video frames every `every`-th frame,
the frames between carrying the last faces (and the tracker joining them
across frames). An item that cannot be read, analysed or written becomes one
error row and the run goes on.
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


@dataclass
class RunStats:
    items: int = 0                  # images, or video frames
    analysed: int = 0               # items the analyzer saw
    faces: int = 0
    emotions: Counter = field(default_factory=Counter)
    failed: list[tuple[str, str]] = field(default_factory=list)   # (source, reason) of images that failed
    bad_frames: list[int] = field(default_factory=list)           # video frames that did not decode
    wall_s: float = 0.0


def run(items, analyzer, records, sinks=(), every: int = 1, tracker=None, on_error=None, progress: bool = False,
        total: int | None = None, desc: str = "images", max_items: int | None = None) -> RunStats:
    from tqdm import tqdm

    stats, faces = RunStats(), Faces.empty(analyzer.classes)
    start = time.perf_counter()
    with tqdm(total=total or None, desc=desc[:30], unit="img" if desc == "images" else "frame",
              disable=not progress, file=sys.stderr) as bar:
        for item in items:
            if max_items is not None and stats.items >= max_items:
                break
            stats.items += 1
            bar.update(1)
            try:
                if item.image is not None and (item.frame is None or item.frame % every == 0):
                    faces = analyzer.analyze(item.image)
                    if tracker is not None:
                        faces = tracker.update(faces, item.frame)
                    stats.analysed += 1
                for sink in sinks:
                    sink.write(item, None if item.image is None else faces)
            except StopRun:
                break
            except (ValueError, cv2.error, MemoryError, OSError) as exc:
                item.error = reason(exc)
            records.write(item, faces)
            if item.error is None:
                stats.faces += len(faces)
                stats.emotions.update(faces.emotions)
            elif item.frame is not None and item.image is None:
                stats.bad_frames.append(item.frame)
                if on_error:
                    on_error(item.source, f"frame {item.frame} unreadable, skipped (the previous frame stands at its time)")
            else:
                stats.failed.append((item.source, item.error))
                if on_error:
                    on_error(item.source, item.error)
    stats.wall_s = time.perf_counter() - start
    return stats
