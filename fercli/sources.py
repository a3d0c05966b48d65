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


def _common_parent(paths) -> Path:
    """The folder all of `paths` lie in (as given: relative stays relative)."""
    paths = [str(p) for p in paths]
    if not paths:
        return Path(".")
    try:
        return Path(os.path.commonpath(paths))
    except ValueError:   # relative and absolute mixed
        return Path(os.path.commonpath([os.path.abspath(p) for p in paths]))


def _relative_to(path: Path, base: Path) -> Path:
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(base))
    except ValueError:   # another drive: the path without it
        return Path(*Path(os.path.abspath(path)).parts[1:])


def _once(paths: list[Path]) -> list[Path]:
    """Each real file once (a symlink or ./name is the file it names), where it was first met."""
    seen, once = set(), []
    for path in paths:
        if real_path(path) not in seen:
            seen.add(real_path(path))
            once.append(path)
    return once


def _named(path: str, recursive: bool, output: Path, alone: bool) -> tuple[list[Path], Path, bool]:
    """(the files a path names, the folder their outputs' paths are relative
    to, whether it names one file itself). Refuses a path that is not there."""
    root = Path(path)
    if path == "-":
        candidates = [Path(os.path.abspath(line.strip())) for line in sys.stdin if line.strip()]
        return candidates, _common_parent(p.parent for p in candidates), False
    if root.is_file():
        if alone and root.suffix.lower() not in IMAGE_SUFFIXES:
            raise UserError(f"{root} is not an image type fercli reads ({', '.join(sorted(IMAGE_SUFFIXES))}).")
        return [root], root.parent, True
    if root.is_dir():
        if _inside(root, output) or real_path(root) == real_path(output):
            raise UserError(f"the output folder {output} contains the input {root}; choose another -o.")
        return _folder_entries(root, recursive), root, False
    if glob.has_magic(path):
        candidates = sorted(Path(p) for p in glob.glob(path, recursive=recursive))
        if not candidates and not alone:
            raise UserError(f"no file matches {path}.")
        return candidates, _common_parent(p.parent for p in candidates), False
    raise UserError(f"{path} does not exist.")


def collect_images(paths, recursive: bool, output: Path) -> tuple[list[InputFile], int]:
    """(images to read, number of non-image files skipped) for the paths
    given (one, or a list): image files, folders, globs, or `-` (paths on
    standard input, one per line); none: the default folder. Every path is
    checked before any is read. A file named twice, or also found in a folder
    or glob given, is read once. Outputs mirror the inputs: relative to the
    one folder or glob given, or with several, to the folder they share, so
    files of the same name in different folders stay apart. Files under the
    output folder are never inputs, so earlier results are not picked up
    (unless named on their own)."""
    if paths is None or isinstance(paths, (str, os.PathLike)):
        paths = [] if paths is None else [paths]
    given = list(dict.fromkeys(str(p) for p in paths))   # the same path twice (`-` too) is read once
    if not given:
        if not DEFAULT_INPUT.is_dir():
            raise UserError(f"no path or -p given and the default input folder {DEFAULT_INPUT}/ does not exist here; "
                            "pass an image, a folder or a glob.")
        given = [str(DEFAULT_INPUT)]
    alone = len(given) == 1
    named = [_named(path, recursive, output, alone) for path in given]   # a missing path stops the run here
    common = None if alone else _common_parent(os.path.abspath(base) for _, base, _ in named)
    inputs, seen, not_images = [], set(), 0
    for candidates, base, one_file in named:
        for candidate in candidates:
            if not one_file and _inside(candidate, output):
                continue
            if candidate.suffix.lower() in IMAGE_SUFFIXES and (candidate.is_file() or candidate.is_symlink()):
                if real_path(candidate) in seen:
                    continue
                seen.add(real_path(candidate))
                inputs.append(InputFile(candidate, candidate.relative_to(base) if alone else _relative_to(candidate, common)))
            else:
                not_images += 1
    if not inputs:
        path = given[0]
        where = ("in " + ", ".join(given) if not alone else "matching " + path if glob.has_magic(path)
                 else "on standard input" if path == "-" else "in " + path)
        raise UserError(f"no images found {where} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}"
                        + ("" if recursive or given == ["-"] else "; -r also searches subfolders") + ").")
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
    """The videos named, matching the globs named (as a shell would have
    expanded them) or found in the folders named, each once, each with the
    path its outputs take under -o: relative to the folder all of them share,
    so two videos of the same name in different folders keep different
    outputs. Every path is checked before any video is read."""
    videos: list[Path] = []
    for given in dict.fromkeys(paths):
        path = Path(given)
        if path.exists():
            named = [path]
        elif glob.has_magic(given):
            named = sorted(Path(p) for p in glob.glob(given))
            if not named:
                raise UserError(f"no file matches {given}.")
        else:
            raise UserError(f"{path} does not exist.")
        for path in named:
            if path.is_dir():
                found = sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
                if not found:
                    raise UserError(f"no videos found in {path} (looked for {', '.join(sorted(VIDEO_SUFFIXES))}).")
                videos += found
            else:
                videos.append(path)
    videos = _once(videos)
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
