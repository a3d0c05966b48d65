"""`fercli pack` on a data set: its size and time against reading the folder,
and what other lossless forms of the same images would weigh (measured on
every Nth image, scaled up).

    python benchmarks/bench_pack.py [--data ../shared/data/fer2013] [--every 10]

Prints figures and asserts nothing."""
import argparse
import bz2
import lzma
import sys
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fercli.data import read_dataset  # noqa: E402
from fercli.pack import write_pack  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fer2013"))
    parser.add_argument("--every", type=int, default=10, help="Measure the other forms on every Nth image.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        pack = Path(folder) / "data.npz"
        start = time.perf_counter()
        result = write_pack(args.data, pack)
        packing = time.perf_counter() - start
        start = time.perf_counter()
        packed = read_dataset(pack)
        reading_pack = time.perf_counter() - start
    start = time.perf_counter()
    splits = read_dataset(args.data)
    reading_folder = time.perf_counter() - start
    n = sum(len(ds) for ds in splits.values())
    pixels = sum(ds.images.nbytes for ds in splits.values())
    print(f"{n:,} images; their files {result['encoded_bytes'] / 1e6:.1f} MB, their pixels (uint8) {pixels / 1e6:.1f} MB")
    print(f"pack: {result['pack_bytes'] / 1e6:.1f} MB, made in {packing:.1f} s; read in {reading_pack:.2f} s "
          f"(the folder: {reading_folder:.2f} s); the same images: "
          f"{all(np.array_equal(packed[s].images, splits[s].images) for s in splits)}")
    sources = [s for ds in splits.values() for s in ds.sources][::args.every]
    images = np.concatenate([ds.images for ds in splits.values()])[::args.every]
    scale = n / len(images)
    files = b"".join(Path(s).read_bytes() for s in sources) if all(Path(s).is_file() for s in sources) else None
    forms = {"pixels, zlib 9": lambda: zlib.compress(images.tobytes(), 9),
             "pixels, bz2 9": lambda: bz2.compress(images.tobytes(), 9),
             "pixels, lzma 6": lambda: lzma.compress(images.tobytes()),
             "pixels, PNG per image": lambda: b"".join(cv2.imencode(".png", i, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()
                                                       for i in images),
             "pixels, lossless WebP per image": lambda: b"".join(cv2.imencode(".webp", i, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
                                                                 for i in images)}
    if files is not None:
        forms.update({"files' bytes, zlib 9 (the pack)": lambda: zlib.compress(files, 9),
                      "files' bytes, lzma 6": lambda: lzma.compress(files)})
    print(f"other forms, on every {args.every}th image ({len(images):,}), scaled to all {n:,}:")
    for name, make in forms.items():
        start = time.perf_counter()
        size = len(make())
        print(f"  {name:34s} {size * scale / 1e6:6.1f} MB  ({time.perf_counter() - start:.1f} s for the sample)")


if __name__ == "__main__":
    main()
