"""Sources: what the user gave (an image, a folder, a glob, a list of paths on
standard input, video files, a camera) turned into Items, one per image or
video frame, each with its real time. Every Item goes through the same loop
(fercli.run) to the sinks.

    files, skipped = collect_images("photos/", recursive=True, output=Path("output"))
    for item in image_items(files): ...
    with VideoReader(path) as reader:
        for item in reader: ...          # fercli.videoio: frames at their presentation times
    for item in ThreadedCamera(0): ...   # frames at the clock time they were read
"""
from __future__ import annotations

import glob
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fercli.data import IMAGE_SUFFIXES, read_image_file
from fercli.errors import UserError

DEFAULT_INPUT = Path("data") / "test"
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp"}


@dataclass
class InputFile:
    path: Path
    relative: Path   # where its outputs go under the output folder (the input tree mirrored)


@dataclass
class Item:
    """One image or one video frame."""
    source: str                      # the file as given, or camera:N
    relative: Path                   # its outputs' place under the output folder
    image: np.ndarray | None         # BGR; None when it could not be read or decoded
    error: str | None = None         # why not
    frame: int | None = None         # video: index in presentation order
    time_s: float | None = None      # video: presentation time in seconds
    pts: int | None = None           # video: presentation time in the stream's time base


def real_path(path: Path) -> Path:
    """The absolute path with symlinks followed; a symlink loop gives the path itself, never an error."""
    return Path(os.path.realpath(path))


def _inside(path: Path, folder: Path) -> bool:
    try:
        real_path(path).relative_to(real_path(folder))
        return True
    except ValueError:
        return False


def _folder_entries(root: Path, recursive: bool) -> list[Path]:
    """Everything in a folder (and its subfolders with `recursive`), without
    following symlinked folders: a symlink loop cannot trap the walk."""
    if not recursive:
        try:
            return sorted(root.iterdir())
        except OSError as exc:
            raise UserError(f"cannot read the folder {root} ({exc.strerror or exc}).") from None
    entries = []
    for folder, subfolders, files in os.walk(root, followlinks=False):
        entries += [Path(folder) / name for name in files]
        # A folder whose name looks like an image is listed too, so that it is counted as skipped.
        entries += [Path(folder) / name for name in subfolders if Path(name).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(entries)


def collect_images(path: str | None, recursive: bool, output: Path) -> tuple[list[InputFile], int]:
    """(images to read, number of non-image files skipped) for a file, a folder,
    a glob, or `-` (paths on standard input, one per line). Files under the
    output folder are never inputs, so earlier results are not picked up."""
    if path is None:
        if not DEFAULT_INPUT.is_dir():
            raise UserError(f"no -p given and the default input folder {DEFAULT_INPUT}/ does not exist here; "
                            "pass -p with an image, a folder or a glob.")
        path = str(DEFAULT_INPUT)
    root = Path(path)
    if path == "-":
        candidates = [Path(line.strip()) for line in sys.stdin if line.strip()]
        candidates = [Path(os.path.abspath(p)) for p in candidates]
        base = Path(os.path.commonpath([str(p.parent) for p in candidates])) if candidates else Path(".")
    elif root.is_file():
        if root.suffix.lower() not in IMAGE_SUFFIXES:
            raise UserError(f"{root} is not an image type fercli reads ({', '.join(sorted(IMAGE_SUFFIXES))}).")
        return [InputFile(root, Path(root.name))], 0
    elif root.is_dir():
        if _inside(root, output) or real_path(root) == real_path(output):
            raise UserError(f"the output folder {output} contains the input {root}; choose another -o.")
        candidates = _folder_entries(root, recursive)
        base = root
    elif glob.has_magic(path):
        candidates = sorted(Path(p) for p in glob.glob(path, recursive=recursive))
        base = Path(os.path.commonpath([str(p.parent) for p in candidates])) if candidates else Path(".")
    else:
        raise UserError(f"{path} does not exist.")
    inputs, not_images = [], 0
    for candidate in candidates:
        if _inside(candidate, output):
            continue
        if candidate.suffix.lower() in IMAGE_SUFFIXES and (candidate.is_file() or candidate.is_symlink()):
            inputs.append(InputFile(candidate, candidate.relative_to(base)))
        else:
            not_images += 1
    if not inputs:
        where = "matching " + path if glob.has_magic(path) else "on standard input" if path == "-" else "in " + path
        raise UserError(f"no images found {where} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}"
                        + ("" if recursive or path == "-" else "; -r also searches subfolders") + ").")
    return inputs, not_images


def image_items(files: list[InputFile], read=read_image_file):
    """One Item per image file, decoded by `read` when its turn comes; an
    unreadable file gives an Item with the reason instead of an image."""
    for file in files:
        try:
            yield Item(str(file.path), file.relative, read(file.path))
        except ValueError as exc:
            yield Item(str(file.path), file.relative, None, error=str(exc))


def collect_videos(paths: tuple[str, ...]) -> list[InputFile]:
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
    base = Path(os.path.commonpath([os.path.abspath(p.parent) for p in videos]))
    return [InputFile(p, Path(os.path.abspath(p)).relative_to(base)) for p in videos]


class ThreadedCamera:
    """A live device read on its own thread, keeping only the newest frame, so
    capture never waits for inference; Items are timed by the clock when they
    were read (pts in milliseconds)."""

    def __init__(self, index: int):
        import cv2

        self.capture = cv2.VideoCapture(index)
        if not self.capture.isOpened():
            raise UserError(f"camera {index} could not be opened (no such device, or it is busy).")
        fps = self.capture.get(cv2.CAP_PROP_FPS) or 0.0
        self.fps = fps if 0 < fps < 1000 else 30.0
        self.source = f"camera:{index}"
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
            got = self.frames.get()
            if got is None:
                return
            seconds, image = got
            yield Item(self.source, Path(self.source.replace(":", "")), image, frame=index, time_s=seconds,
                       pts=round(seconds * 1000))
            index += 1

    def release(self):
        self.running = False
        self.thread.join(timeout=1)
        self.capture.release()
