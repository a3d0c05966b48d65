"""`fercli pack`: a data set, in any layout `data.read_dataset` reads, as one
file that `read_dataset` (so `fercli train` and `fercli eval`) reads as it
reads the data set itself (`data.read_pack`): the same splits, classes,
labels, images and per-image sources. One file moves to another machine (an
accelerator) in one piece and loads in seconds.

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
import zipfile
from pathlib import Path

import cv2
import numpy as np

from fercli import __version__
from fercli.data import (FER2013_CSV_CLASSES, PACK_FORMAT, PACK_INDEX, PACK_MEMBERS, PACK_VERSION, Dataset, fer2013_rows,
                         is_pack, read_dataset)
from fercli.errors import UserError


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
    index = {"format": PACK_FORMAT, "version": PACK_VERSION, "fercli_version": __version__, "packed_from": str(data), "splits": {}}
    partial = out.with_name(out.name + ".partial")
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for split, (ds, encoded) in splits.items():
                index["splits"][split] = {"classes": ds.classes, "source": ds.source, "images": len(ds),
                                          "sources": ds.sources}
                ends = np.cumsum([e.size for e in encoded], dtype=np.int64)
                arrays = {"encoded": np.concatenate(encoded).astype(np.uint8), "ends": ends, "labels": ds.labels.astype(np.int64)}
                for name in PACK_MEMBERS:
                    archive.writestr(f"{split}.{name}.npy", _npy(arrays[name]))
            archive.writestr(PACK_INDEX, json.dumps(index))
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return {"splits": {split: len(ds) for split, (ds, _) in splits.items()}, "classes": next(iter(splits.values()))[0].classes,
            "encoded_bytes": sum(e.size for _, encoded in splits.values() for e in encoded), "pack_bytes": out.stat().st_size,
            "skipped": sum(len(ds.skipped) for ds, _ in splits.values())}
