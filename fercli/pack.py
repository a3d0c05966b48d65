"""`fercli pack`: a data set, in any layout `data.read_dataset` reads, as one
file that `read_dataset` (so `fercli train` and `fercli eval`) reads as it
reads the data set itself: the same splits, classes, labels, images and
per-image sources. One file moves to another machine (an accelerator) in one
piece and loads in seconds.

The file is a zip archive in NumPy's .npz layout (np.load opens it):
fercli_pack.json (format, version, and per split its classes, source and
per-image sources) and per split `<split>.encoded.npy` (every image's encoded
bytes one after another, uint8), `<split>.ends.npy` (where each image's bytes
end) and `<split>.labels.npy`. An image read from a file is kept as that
file's bytes, so the pack decodes to exactly what the folder does, at any
input size; a fer2013.csv row is kept as a lossless PNG of its pixels. The
archive's deflate takes out what the files share (all FER-2013 JPEGs begin
with the same 330-byte header); the JPEG data itself does not compress, and
no lossless form of the pixels measured smaller (README: `fercli pack`).
"""
from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np

from fercli import __version__
from fercli.data import FER2013_CSV_CLASSES, Dataset, _stderr_silenced, fer2013_rows, prepare_face, read_dataset
from fercli.errors import UserError

FORMAT = "fercli-pack"
VERSION = 1
INDEX = "fercli_pack.json"
ZIP_MAGIC = b"PK\x03\x04"
MEMBERS = ("encoded", "ends", "labels")


def is_pack(path: str | os.PathLike) -> bool:
    """Whether the file is a zip archive, as a pack is (read_pack then says if it is not one)."""
    with open(path, "rb") as handle:
        return handle.read(4) == ZIP_MAGIC


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _splits_with_bytes(data: Path, warn=None) -> dict[str, tuple[Dataset, list[np.ndarray]]]:
    """{split: (Dataset without images, each image's encoded bytes)} of any layout read_dataset reads."""
    if data.is_file() and data.suffix.lower() == ".csv":
        rows: dict[str, tuple[list, list, list]] = {}
        for split, label, pixels, source in fer2013_rows(data):
            encoded, labels, sources = rows.setdefault(split, ([], [], []))
            encoded.append(cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1])
            labels.append(label)
            sources.append(source)
        if not rows:
            raise UserError(f"{data} has no data rows.")
        return {split: (Dataset(np.empty((0, 0, 0), np.uint8), np.array(labels, np.int64), list(FER2013_CSV_CLASSES),
                                f"{data} [{split}]", sources=sources), encoded)
                for split, (encoded, labels, sources) in rows.items()}
    if data.is_file() and is_pack(data):
        raise UserError(f"{data} is a pack already; `fercli train` and `fercli eval` read it as it is.")
    # read_dataset decodes every image: the unreadable ones are skipped (and warned about) here, not packed.
    return {split: (ds, [np.fromfile(source, np.uint8) for source in ds.sources])
            for split, ds in read_dataset(data, warn=warn).items()}


def _refuse_inputs(out: Path, data: Path, splits) -> None:
    if not out.exists():
        return
    inputs = [data] if data.is_file() else [Path(s) for ds, _ in splits.values() for s in ds.sources]
    for item in inputs:
        if item.exists() and os.path.samefile(item, out):
            raise UserError(f"{out} is one of the inputs ({item}); give the pack another name.")


def write_pack(data_path: str | os.PathLike, out: str | os.PathLike, warn=None) -> dict:
    """Pack the data set at `data_path` into the file `out` (written whole to a
    side file, then renamed over it); returns what was packed."""
    data, out = Path(data_path), Path(out)
    if out.is_dir():
        raise UserError(f"{out} is a folder; give the pack a file name such as {out / 'data.npz'}.")
    if not data.exists():
        raise UserError(f"{data} does not exist.")
    splits = _splits_with_bytes(data, warn)
    _refuse_inputs(out, data, splits)
    index = {"format": FORMAT, "version": VERSION, "fercli_version": __version__, "packed_from": str(data), "splits": {}}
    partial = out.with_name(out.name + ".partial")
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for split, (ds, encoded) in splits.items():
                index["splits"][split] = {"classes": ds.classes, "source": ds.source, "images": len(ds),
                                          "sources": ds.sources}
                ends = np.cumsum([e.size for e in encoded], dtype=np.int64)
                arrays = {"encoded": np.concatenate(encoded).astype(np.uint8), "ends": ends, "labels": ds.labels.astype(np.int64)}
                for name in MEMBERS:
                    archive.writestr(f"{split}.{name}.npy", _npy(arrays[name]))
            archive.writestr(INDEX, json.dumps(index))
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return {"splits": {split: len(ds) for split, (ds, _) in splits.items()}, "classes": next(iter(splits.values()))[0].classes,
            "encoded_bytes": sum(e.size for _, encoded in splits.values() for e in encoded), "pack_bytes": out.stat().st_size,
            "skipped": sum(len(ds.skipped) for ds, _ in splits.values())}


def read_pack(path: str | os.PathLike, size: int = 48) -> dict[str, Dataset]:
    """A pack file -> {split: Dataset}, as read_dataset gives for the data packed."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            if INDEX not in archive.namelist():
                raise UserError(f"{path} is a zip archive but not a fercli pack (it has no {INDEX}); "
                                "make one with `fercli pack DATA OUT`.")
            index = json.loads(archive.read(INDEX))
            if not isinstance(index, dict) or index.get("format") != FORMAT:
                raise UserError(f"{path} is not a fercli pack (its {INDEX} names another format); make one with `fercli pack DATA OUT`.")
            if int(index.get("version", 0)) > VERSION:
                raise UserError(f"{path} is a pack of a newer format (version {index['version']}) than this fercli reads "
                                f"({VERSION}); upgrade fercli or pack the data again.")
            return {split: _split(path, archive, split, entry, size) for split, entry in index["splits"].items()}
    except (zipfile.BadZipFile, zlib.error, EOFError, struct.error, ValueError, KeyError, TypeError, AttributeError,
            IndexError, NotImplementedError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if reason == "File is not a zip file":   # the archive's directory, at its end, is missing
            reason = "it ends early, as a copy cut short does"
        raise UserError(f"{path} is a damaged fercli pack ({reason}); pack the data again with `fercli pack`.") from None


def _split(path: Path, archive: zipfile.ZipFile, split: str, entry: dict, size: int) -> Dataset:
    encoded, ends, labels = (np.load(io.BytesIO(archive.read(f"{split}.{name}.npy")), allow_pickle=False) for name in MEMBERS)
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
