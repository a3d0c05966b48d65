"""THE loop: every Item of a source through the analyzer to the sinks.

    stats = run(image_items(files), analyzer, records, [AnnotatedImageSink(...)])
    stats = run(VideoReader(path), analyzer, records, [AnnotatedVideoSink(...)], every=3, tracker=Tracker(...))

Four stages overlap, each on its own thread, so that decoding, the two
networks and encoding use every core (the libraries release the GIL while
they work):
- reading: items are decoded ahead of their turn (READ_AHEAD of them),
- detection: faces are found item by item (photos: as many items at once
  as the analyzer's `detect_workers`, each on its own thread),
- classification: in batches across items (up to BATCH_FACES faces or
  BATCH_ITEMS analysed items or BATCH_PIXELS pixels held), so the classifier
  runs full batches on folders and video, while the next batch is detected,
- writing: each item, in order, goes to the sinks and the records.
Video frames are analysed every `every`-th frame, the frames between carrying
the last faces (and the tracker joining them across frames). An item that
cannot be read, analysed or written becomes one error row and the run goes
on. `batch_items` 1 (a live camera) runs them all in turn on the calling
thread: each frame is finished before the next, and a preview window stays
on the thread that made it.
"""
from __future__ import annotations

import queue
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import cv2

from fercli.errors import reason
from fercli.faces import Faces
from fercli.sinks import StopRun

BATCH_FACES = 64          # the classifier's full batch
BATCH_ITEMS = 8
BATCH_PIXELS = 30_000_000  # decoded pictures held at once (about 90 MB of BGR)
READ_AHEAD = 4             # items decoded before their turn
PIXELS_QUEUED = 20_000_000  # decoded pictures waiting to be analysed, and again to be written (60 MB of BGR each)
FAILURES = (ValueError, cv2.error, MemoryError, OSError)
DETECTION_FAILED = "detection failed"   # in place of an item's faces: its error says why
_END = object()


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


def _pixels(item) -> int:
    return 0 if item.image is None else item.image.size // 3


class _Stage:
    """A thread that does `work(entry)` for what the run hands it, in order,
    with at most `size` entries and PIXELS_QUEUED pixels (`pixels(entry)`)
    waiting; what `work` raises ends the stage (the rest is dropped) and is
    re-raised by `put` and kept in `failure`."""

    def __init__(self, work, size: int, name: str, pixels):
        self.inbox: queue.Queue = queue.Queue(maxsize=size)
        self.work, self.pixels, self.failure, self.budget = work, pixels, None, _PixelBudget()
        self.thread = threading.Thread(target=self._loop, name=f"fercli-{name}", daemon=True)
        self.thread.start()

    def _loop(self):
        while (entry := self.inbox.get()) is not _END:
            if self.failure is None:   # after a failure the rest is dropped
                try:
                    self.work(entry)
                except BaseException as exc:  # noqa: BLE001  (handed to the run's thread)
                    self.failure = exc
            self.budget.give_back(entry)

    def put(self, entry) -> None:
        self.budget.take(entry, self.pixels(entry), lambda: self.failure is not None)
        while self.failure is None:
            try:
                self.inbox.put(entry, timeout=0.1)
                return
            except queue.Full:
                continue
        raise self.failure

    def finish(self) -> None:
        """Wait until everything handed over is done, then end the thread."""
        self.inbox.put(_END)
        self.thread.join()


class _PixelBudget:
    """Decoded pictures waiting between two stages, in pixels: `take` waits
    while they would pass `limit` (one always passes), so memory follows the
    largest picture, not the number of pictures."""

    def __init__(self, limit: int = PIXELS_QUEUED):
        self.limit, self.held, self.changed = limit, 0, threading.Condition()
        self.taken: dict[int, int] = {}   # id(entry) -> its pixels

    def take(self, entry, pixels: int, stopped) -> None:
        with self.changed:
            while self.held and self.held + pixels > self.limit and not stopped():
                self.changed.wait(0.1)
            self.held += pixels
            self.taken[id(entry)] = pixels

    def give_back(self, entry) -> None:
        with self.changed:
            self.held -= self.taken.pop(id(entry), 0)
            self.changed.notify_all()


class _ReadAhead:
    """`items` decoded on their own thread, up to READ_AHEAD of them (and
    PIXELS_QUEUED pixels) ahead of the caller; `close` stops and joins the
    thread (before the source closes)."""

    def __init__(self, items):
        self.ready: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
        self.stop, self.problem, self.budget = threading.Event(), None, _PixelBudget()
        self.thread = threading.Thread(target=self._read, args=(items,), name="fercli-read", daemon=True)
        self.thread.start()

    def _read(self, items):
        try:
            for item in items:
                self.budget.take(item, _pixels(item), self.stop.is_set)
                while not self.stop.is_set():
                    try:
                        self.ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self.stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001  (re-raised on the caller's thread)
            self.problem = exc
        self.ready.put(_END)

    def __iter__(self):
        while (item := self.ready.get()) is not _END:
            self.budget.give_back(item)
            yield item
        if self.problem is not None:
            raise self.problem

    def close(self) -> None:
        self.stop.set()
        while self.thread.is_alive():
            try:
                self.ready.get(timeout=0.1)   # a reader waiting to hand over an item stops
            except queue.Empty:
                pass
        self.thread.join()


class _Detection:
    """(item, its faces) for each item in order: the detector's Faces, None
    for an item not analysed (a frame between analysed ones, or one that did
    not decode), DETECTION_FAILED where detection failed (`item.error` says
    why). With the analyzer's `detect_workers` above one, that many items are
    detected at once on their own threads, ahead of the caller."""

    def __init__(self, items, analyzer, every: int):
        from concurrent.futures import ThreadPoolExecutor

        self.items, self.analyzer, self.every = items, analyzer, every
        self.workers = getattr(analyzer, "detect_workers", 1)
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="fercli-detect") if self.workers > 1 else None

    def _detect(self, item):
        if item.image is None or (item.frame is not None and item.frame % self.every):
            return None
        try:
            return self.analyzer.detect(item.image)
        except FAILURES as exc:
            item.error = reason(exc)
            return DETECTION_FAILED

    def __iter__(self):
        if self.pool is None:
            for item in self.items:
                yield item, self._detect(item)
            return
        pending = deque()
        for item in self.items:
            pending.append((item, self.pool.submit(self._detect, item)))
            if len(pending) == self.workers:
                item, future = pending.popleft()
                yield item, future.result()
        while pending:
            item, future = pending.popleft()
            yield item, future.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def run(items, analyzer, records, sinks=(), every: int = 1, tracker=None, on_error=None, progress: bool = False,
        total: int | None = None, desc: str = "images", max_items: int | None = None,
        batch_items: int = BATCH_ITEMS) -> RunStats:
    import gc

    from tqdm import tqdm

    gc.freeze()   # the libraries' objects, loaded by now, are not scanned again by each collection
    stats = RunStats()
    held: list[tuple] = []   # (item, its detected faces or None when not analysed)
    last = [Faces.empty(analyzer.classes)]   # the faces that frames between analysed ones carry
    start = time.perf_counter()
    overlapped = batch_items > 1

    def write(entry):
        """An item and its faces to the sinks, then its row to the records."""
        item, faces, analysis_failed = entry
        try:
            if not analysis_failed:
                for sink in sinks:
                    sink.write(item, None if item.image is None else faces)
        except FAILURES as exc:
            item.error = reason(exc)
        records.write(item, faces)
        stats.count(item, faces, on_error)

    def classify(batch):
        """Classify a batch's faces in one pass, then each item, in order, to be written."""
        detected = [(item, faces) for item, faces in batch if isinstance(faces, Faces)]
        try:
            classified = dict(zip(map(id, (item for item, _ in detected)),
                                  analyzer.classify_many([(item.image, faces) for item, faces in detected])))
        except FAILURES as exc:
            for item, _ in detected:
                item.error = reason(exc)
            classified = {}
        for item, found in batch:
            faces = last[0]
            if id(item) in classified:
                faces = classified[id(item)]
                if tracker is not None:
                    faces = tracker.update(faces, item.frame)
                last[0] = faces
                stats.analysed += 1
            entry = (item, faces, found is not None and id(item) not in classified)  # detection or classification failed
            writer.put(entry) if writer else write(entry)

    writer = _Stage(write, 4 * batch_items, "write", lambda entry: _pixels(entry[0])) if overlapped else None
    # one batch waits while the one before is classified: detection goes on meanwhile
    classifier = _Stage(classify, 1, "classify", lambda batch: sum(_pixels(item) for item, _ in batch)) if overlapped else None
    source = _ReadAhead(items) if overlapped else items

    def finish_held():
        if held:
            classifier.put(list(held)) if classifier else classify(held)
        held.clear()

    detected = _Detection(source, analyzer, every)
    with tqdm(total=total or None, desc=desc[:30], unit="img" if desc == "images" else "frame",
              disable=not progress, file=sys.stderr) as bar:
        try:
            for item, found in detected:
                if max_items is not None and stats.items >= max_items:
                    break
                stats.items += 1
                bar.update(1)
                held.append((item, found))
                pixels = sum(item.image.size // 3 for item, _ in held if item.image is not None)
                analysed = [f for _, f in held if isinstance(f, Faces)]   # the frames between analysed ones cost nothing here
                if len(analysed) >= batch_items or sum(map(len, analysed)) >= BATCH_FACES or pixels >= BATCH_PIXELS:
                    finish_held()
            finish_held()
        except StopRun:
            pass
        finally:
            detected.close()
            if overlapped:
                source.close()
                classifier.finish()
                writer.finish()
        if overlapped:
            for failure in (classifier.failure, writer.failure):
                if failure is not None and not isinstance(failure, StopRun):
                    raise failure
    stats.wall_s = time.perf_counter() - start
    return stats
