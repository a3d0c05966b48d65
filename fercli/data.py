"""Dataset readers. Every reader returns a `Dataset`: uint8 images (N, H, W),
int labels (N,), class names in order.

Images are converted exactly as `prepare_face` converts a face crop at
prediction time (grayscale, area/linear resize), so training and inference see
the same thing.
"""
from __future__ import annotations

import csv
import io
import json
import os
import struct
import threading
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# A picture of more pixels than this is refused from its header, before decoding.
# FERCLI_MAX_PIXELS (which `fercli --max-pixels N` sets) changes it; OpenCV's own
# limit, read once when it first decodes, backs it up.
DEFAULT_MAX_PIXELS = 100_000_000


def max_pixels() -> int:
    return int(float(os.environ.get("FERCLI_MAX_PIXELS", DEFAULT_MAX_PIXELS)))


os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(max_pixels()))
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

import cv2  # noqa: E402  (after the environment above, which OpenCV reads)
import numpy as np  # noqa: E402

from fercli.errors import UserError  # noqa: E402
from fercli.tf_quiet import quietly  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
SPLIT_NAMES = ("train", "val", "test")

# fer2013.csv emotion codes 0..6, and which split each Usage value belongs to.
FER2013_CSV_CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
FER2013_USAGE_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
FER2013_CSV_HEADER = ["emotion", "pixels", "Usage"]

# Spellings seen in public emotion data sets, mapped to one canonical name.
CLASS_ALIASES = {
    "anger": "angry", "angry": "angry", "mad": "angry",
    "contempt": "contempt",
    "disgust": "disgust", "disgusted": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy",
    "neutral": "neutral", "natural": "neutral", "calm": "neutral",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise",
}


def canonical_class(name: str) -> str:
    """The canonical spelling of a class name (unknown names are kept, lower-cased)."""
    key = name.strip().lower()
    return CLASS_ALIASES.get(key, key)


@dataclass
class Dataset:
    images: np.ndarray                      # uint8 (N, H, W)
    labels: np.ndarray                      # int64 (N,)
    classes: list[str]
    source: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    sources: list[str] = field(default_factory=list)  # per image, where it was read (empty: not known)

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.classes))

    def subset(self, index: np.ndarray) -> "Dataset":
        sources = np.asarray(self.sources, dtype=object)[index].tolist() if self.sources else []
        return Dataset(self.images[index], self.labels[index], list(self.classes), self.source, sources=sources)

    def within(self, classes: list[str]) -> tuple["Dataset", list[str]]:
        """The images of the classes that `classes` has, relabelled to its order,
        and the names of this data's classes it lacks (their images left out)."""
        dropped = [c for c in self.classes if c not in classes]
        keep = np.isin(self.labels, [i for i, c in enumerate(self.classes) if c in classes])
        kept = self.subset(np.nonzero(keep)[0])
        table = np.array([classes.index(c) if c in classes else -1 for c in self.classes], dtype=np.int64)
        return Dataset(kept.images, table[kept.labels], list(classes), self.source, sources=kept.sources), dropped

    def remap(self, classes: list[str]) -> "Dataset":
        """Relabel to another class order (e.g. a model's); every class must be known there."""
        lookup = {c: i for i, c in enumerate(classes)}
        missing = [c for c in self.classes if c not in lookup]
        if missing:
            raise UserError(
                f"class {', '.join(repr(m) for m in missing)} in {self.source} matches none of "
                f"the model's classes ({', '.join(classes)})."
            )
        table = np.array([lookup[c] for c in self.classes], dtype=np.int64)
        return Dataset(self.images, table[self.labels], list(classes), self.source, self.skipped, list(self.sources))


def to_gray(image: np.ndarray) -> np.ndarray:
    """Any decoded image (gray, BGR, BGRA; 8 or 16 bit) -> uint8 grayscale."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    return image


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Any decoded image (gray, BGR, BGRA; 8 or 16 bit) -> 8-bit BGR (the image itself when it is that already)."""
    if image.dtype != np.uint8:
        image = to_gray(image)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def prepare_face(image: np.ndarray, size: int) -> np.ndarray:
    """A face crop (any size, gray or colour) -> uint8 (size, size) grayscale: the
    one conversion used by training, evaluation and prediction."""
    gray = to_gray(image)
    if gray.shape != (size, size):
        shrinking = gray.shape[0] > size or gray.shape[1] > size
        gray = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return gray


# Where a FER-2013 crop lies relative to five face landmarks, fitted on CenterFace's
# landmarks for FER-2013 training crops pasted into scenes (benchmarks/bench_detect.py
# --fit-crop): its side is 2.7 times the eye-to-mouth distance and its centre
# lies 30% of the way from the eyes' midpoint to the mouth's.
CROP_SIDE_PER_EYE_MOUTH = 2.7
CROP_CENTRE_FROM_EYES = 0.3


def face_crop(gray: np.ndarray, box, landmarks=None, size: int = 48) -> np.ndarray:
    """The model's input for one face: uint8 (size, size). With landmarks
    (left eye, right eye, nose, mouth left, mouth right; NaN when the detector
    gives none) the face is turned upright by its eye line and cropped with the
    registration of FER-2013's crops; without, the square around the box (as
    tall as the box: a CenterFace box is narrower than a FER-2013 crop) is cropped."""
    x, y, w, h = (int(v) for v in box)
    points = None if landmarks is None else np.asarray(landmarks, np.float64).reshape(5, 2)
    if points is None or not np.isfinite(points).all():
        if w == h:
            return prepare_face(gray[max(y, 0):y + h, max(x, 0):x + w], size)
        side, centre, angle = float(max(w, h)), np.array([x + w / 2, y + h / 2]), 0.0
    else:
        eyes, mouth = points[:2].mean(axis=0), points[3:].mean(axis=0)
        eye_to_mouth = np.linalg.norm(mouth - eyes)
        # Implausible landmarks (a profile, a face cut by the frame): stay near the box's size.
        side = float(np.clip(CROP_SIDE_PER_EYE_MOUTH * eye_to_mouth, 0.6 * max(w, h), 1.6 * max(w, h)))
        centre = eyes + CROP_CENTRE_FROM_EYES * (mouth - eyes)
        dx, dy = points[1] - points[0]
        angle = float(np.degrees(np.arctan2(dy, dx)))
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, 1.0)
    matrix[:, 2] += (side / 2 - centre[0], side / 2 - centre[1])
    square = max(1, round(side))
    upright = cv2.warpAffine(gray, matrix, (square, square), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return prepare_face(upright, size)


def read_image_file(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to 8-bit BGR, EXIF orientation applied (unicode paths
    fine); raises ValueError with the reason it cannot."""
    try:
        raw = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ValueError(f"cannot read file ({exc.strerror or exc})") from None
    return decode_image(raw)


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an encoded image's header, without decoding it;
    None where the header cannot be read. JPEG and PNG headers are read here
    (Pillow's parser takes longer than OpenCV takes to decode a 48x48 crop),
    other formats by Pillow."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"\xff\xd8":
        frame, _ = _jpeg_walk(data)
        if frame:
            return frame
    import io

    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # fercli's own limit applies (max_pixels)
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # Pillow raises many types for a damaged header; OpenCV then has its say
        return None


_FRAME_MARKERS = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}   # start of frame (not DHT, JPG, DAC)


def _jpeg_walk(raw: bytes) -> tuple[tuple[int, int] | None, int | None]:
    """A JPEG's segments before its first scan, walked by their lengths (an
    EXIF thumbnail inside one has markers of its own): the frame's (width,
    height) where a start-of-frame segment gives them, and where the first
    scan starts (None when there is none, or the segments run past the end)."""
    frame, position, length = None, 2, len(raw)
    while position + 4 <= length and raw[position] == 0xFF:
        marker = raw[position + 1]
        if marker == 0xDA:  # start of scan: the entropy-coded data follows
            return frame, position
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            position += 2
            continue
        if marker in _FRAME_MARKERS and frame is None and position + 9 <= length:
            height, width = struct.unpack(">HH", raw[position + 5:position + 9])
            frame = (width, height) if width and height else None   # height 0: given later (DNL)
        position += 2 + ((raw[position + 2] << 8) | raw[position + 3])
    return frame, None


def jpeg_is_cut_off(raw: bytes) -> bool:
    """A JPEG whose main image has no end-of-image marker after its scan data
    (libjpeg decodes such a file silently, with a grey bottom). Bytes after the
    marker, as phones and editors append, are fine: the marker is looked for
    after the main image's first scan."""
    _, scan = _jpeg_walk(raw)
    return scan is None or raw.find(b"\xff\xd9", scan) < 0


_decoding = threading.Lock()


@contextmanager
def _stderr_silenced():
    """libpng and libjpeg print their own complaints on stderr (file
    descriptor 2) from inside OpenCV; fercli says what went wrong in one
    sentence instead. One decode at a time holds the descriptor."""
    with _decoding, quietly(defer_interrupts=False):
        yield


def decode_image(raw: np.ndarray, pixel_limit: int | None = None) -> np.ndarray:
    """Encoded image bytes (uint8 array) -> 8-bit BGR, EXIF orientation applied;
    raises ValueError with the reason it cannot. The size in the header is
    checked against `pixel_limit` (default max_pixels()) before anything is
    decoded, so a small file that would decode to gigabytes is refused."""
    if raw.size == 0:
        raise ValueError("empty file (0 bytes)")
    limit = pixel_limit or max_pixels()
    data = raw.tobytes()
    size = header_size(data)
    if size and size[0] * size[1] > limit:
        raise ValueError(f"{size[0]}x{size[1]} pixels, over the limit of {limit / 1e6:g} megapixels "
                         "(fercli --max-pixels raises it)")
    if data[:2] == b"\xff\xd8" and jpeg_is_cut_off(data):
        raise ValueError("truncated JPEG (no end-of-image marker)")
    try:
        with _stderr_silenced():
            image = cv2.imdecode(raw, cv2.IMREAD_COLOR)
    except cv2.error:  # OpenCV's own size limit, for a header Pillow could not read
        image = None
    if image is None or image.size == 0:
        raise ValueError("not a readable image")
    return image


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_dirs(folder: Path) -> list[Path]:
    """Class folders, ordered by canonical class name (the class order of the data set)."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: canonical_class(p.name))


def read_class_folders(folder: str | os.PathLike, size: int = 48, warn=None) -> Dataset:
    """`folder/<class>/*` -> Dataset. Unreadable images are skipped, reported
    through `warn(path, reason)` and listed in `Dataset.skipped`."""
    folder = Path(folder)
    class_dirs = _class_dirs(folder)
    if not class_dirs:
        raise UserError(f"{folder} has no class folders (expected {folder}/<class>/<images>).")
    names = [canonical_class(d.name) for d in class_dirs]
    if len(set(names)) != len(names):
        raise UserError(f"{folder} has two folders for the same class: {', '.join(d.name for d in class_dirs)}.")
    images, labels, skipped, sources = [], [], [], []
    for label, class_dir in enumerate(class_dirs):
        for path in _image_files(class_dir):
            try:
                images.append(prepare_face(read_image_file(path), size))
                labels.append(label)
                sources.append(str(path))
            except ValueError as exc:
                skipped.append((str(path), str(exc)))
                if warn:
                    warn(str(path), str(exc))
    if not labels:
        raise UserError(f"{folder} holds no readable images.")
    return Dataset(np.stack(images), np.array(labels, dtype=np.int64), names, str(folder), skipped, sources)


def fer2013_rows(path: str | os.PathLike):
    """The rows of the challenge file `emotion,pixels,Usage`, in order: (split,
    label, uint8 pixels (side, side), source `<path>:<line>`; the header is line 1)."""
    path = Path(path)
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        if header[:2] != FER2013_CSV_HEADER[:2]:
            raise UserError(
                f"{path} is not a FER-2013 file: its header is {','.join(header) or '(empty)'!r}, "
                f"expected 'emotion,pixels,Usage'."
            )
        usage_column = 2 if len(header) > 2 else None
        for line_number, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                label = int(row[0])
                pixels = np.array(row[1].split(), dtype=np.uint8)
                side = int(round(np.sqrt(pixels.size)))
                if not 0 <= label < len(FER2013_CSV_CLASSES) or side * side != pixels.size:
                    raise ValueError
            except (ValueError, IndexError):
                raise UserError(f"{path}, line {line_number}: not a valid 'emotion,pixels,Usage' row.") from None
            usage = row[usage_column].strip() if usage_column is not None and len(row) > usage_column else "Training"
            yield FER2013_USAGE_SPLIT.get(usage, usage.lower()), label, pixels.reshape(side, side), f"{path}:{line_number}"


def read_fer2013_csv(path: str | os.PathLike, size: int = 48) -> dict[str, Dataset]:
    """The challenge file `emotion,pixels,Usage` -> {"train"|"val"|"test": Dataset}.
    Each image's source is `<path>:<line>`, its line in the file (the header is line 1)."""
    path = Path(path)
    rows: dict[str, tuple[list, list, list]] = {}
    for split, label, pixels, source in fer2013_rows(path):
        images, labels, sources = rows.setdefault(split, ([], [], []))
        images.append(prepare_face(pixels, size))
        labels.append(label)
        sources.append(source)
    if not rows:
        raise UserError(f"{path} has no data rows.")
    return {
        split: Dataset(np.stack(images), np.array(labels, dtype=np.int64), list(FER2013_CSV_CLASSES), f"{path} [{split}]",
                       sources=sources)
        for split, (images, labels, sources) in rows.items()
    }


def read_dataset(path: str | os.PathLike, size: int = 48, warn=None) -> dict[str, Dataset]:
    """Any supported layout -> {split: Dataset}. A class-folder tree without
    split folders comes back as {"all": Dataset}; a pack file (`fercli pack`)
    comes back as the data it was packed from."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist.")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return read_fer2013_csv(path, size)
        if is_pack(path):
            return read_pack(path, size)
        raise UserError(f"{path} is not a data set: pass a folder of class folders, a fer2013.csv file "
                        "or a pack made by `fercli pack`.")
    splits = {name: path / name for name in SPLIT_NAMES if (path / name).is_dir()}
    if splits:
        datasets = {name: read_class_folders(folder, size, warn) for name, folder in splits.items()}
        reference = datasets.get("train", next(iter(datasets.values()))).classes
        return {name: ds.remap(reference) if ds.classes != reference else ds for name, ds in datasets.items()}
    return {"all": read_class_folders(path, size, warn)}


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held_out) with `fraction` of every class held out."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for label in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == label))
        n_held = int(round(len(index) * fraction))
        held.append(index[:n_held])
        train.append(index[n_held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """k disjoint index arrays, each holding about 1/k of every class."""
    rng = np.random.default_rng(seed)
    folds = [[] for _ in range(k)]
    offset = 0
    for label in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == label))
        for i, item in enumerate(index):
            folds[(i + offset) % k].append(item)
        offset += len(index)
    return [np.sort(np.array(f, dtype=np.int64)) for f in folds]


# Pack files (`fercli pack`, written by fercli/pack.py, whose docstring gives the layout), read here
PACK_FORMAT = "fercli-pack"
PACK_VERSION = 1
PACK_INDEX = "fercli_pack.json"
PACK_MEMBERS = ("encoded", "ends", "labels")
_ZIP_MAGIC = b"PK\x03\x04"


def is_pack(path: str | os.PathLike) -> bool:
    """Whether the file is a zip archive, as a pack is (read_pack then says if it is not one)."""
    with open(path, "rb") as handle:
        return handle.read(4) == _ZIP_MAGIC


def read_pack(path: str | os.PathLike, size: int = 48) -> dict[str, Dataset]:
    """A pack file -> {split: Dataset}, as read_dataset gives for the data packed."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            if PACK_INDEX not in archive.namelist():
                raise UserError(f"{path} is a zip archive but not a fercli pack (it has no {PACK_INDEX}); "
                                "make one with `fercli pack DATA OUT`.")
            index = json.loads(archive.read(PACK_INDEX))
            if not isinstance(index, dict) or index.get("format") != PACK_FORMAT:
                raise UserError(f"{path} is not a fercli pack (its {PACK_INDEX} names another format); make one with `fercli pack DATA OUT`.")
            if int(index.get("version", 0)) > PACK_VERSION:
                raise UserError(f"{path} is a pack of a newer format (version {index['version']}) than this fercli reads "
                                f"({PACK_VERSION}); upgrade fercli or pack the data again.")
            return {split: _pack_split(path, archive, split, entry, size) for split, entry in index["splits"].items()}
    except (zipfile.BadZipFile, zlib.error, EOFError, struct.error, ValueError, KeyError, TypeError, AttributeError,
            IndexError, NotImplementedError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if reason == "File is not a zip file":   # the archive's directory, at its end, is missing
            reason = "it ends early, as a copy cut short does"
        raise UserError(f"{path} is a damaged fercli pack ({reason}); pack the data again with `fercli pack`.") from None


def _pack_split(path: Path, archive: zipfile.ZipFile, split: str, entry: dict, size: int) -> Dataset:
    encoded, ends, labels = (np.load(io.BytesIO(archive.read(f"{split}.{name}.npy")), allow_pickle=False) for name in PACK_MEMBERS)
    classes, sources = list(entry["classes"]), list(entry["sources"])
    if (encoded.dtype != np.uint8 or encoded.ndim != 1 or not len(labels) == len(ends) == len(sources) == entry["images"]
            or (len(ends) and (ends[-1] != encoded.size or np.any(np.diff(ends) <= 0) or ends[0] <= 0))
            or (len(labels) and not 0 <= labels.min() <= labels.max() < len(classes))):
        raise ValueError(f"the {split} split's arrays do not fit together")
    images, start = [], 0
    with _stderr_silenced():
        for number, end in enumerate(ends.tolist()):
            image = cv2.imdecode(encoded[start:end], cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"image {number + 1} of the {split} split ({sources[number]}) does not decode")
            images.append(prepare_face(image, size))
            start = end
    return Dataset(np.stack(images) if images else np.empty((0, size, size), np.uint8), labels.astype(np.int64), classes,
                   str(path) if split == "all" else f"{path} [{split}]", sources=sources)
