"""Photo folders: wall time and peak resident memory of the whole `fercli
predict` command on a folder of large photographs (default 16 photos of 12
megapixels, 4000x3000 JPEG, each with 1-3 faces of a tenth to a third of the
photo's height on a textured background; `--megapixels 1.2` is the median size
of a folder of real portraits), start-up included; with the CPU's instruction sets beside the
figures. Runs on a clone without data sets (the faces come from the test
fixture when ../shared/data is missing).

    python benchmarks/bench_photos.py [--photos 16] [--megapixels 12] [--model default]

Prints figures; asserts nothing (timings on shared machines are noisy)."""
import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_photos(folder: Path, count: int, megapixels: float, seed: int = 0) -> int:
    """`count` JPEG photos of about `megapixels` (4:3) with faces; returns the number of faces."""
    from tests.scenes import face_pool, load_face, paste, textured_background

    pool = face_pool()
    rng = np.random.default_rng(seed)
    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    height = width * 3 // 4
    small = textured_background(height // 4, width // 4, seed=seed)   # texture at a quarter size, enlarged: fast
    faces = 0
    for i in range(count):
        canvas = cv2.resize(np.roll(small, 37 * i, axis=1), (width, height), interpolation=cv2.INTER_LINEAR)
        n = int(rng.integers(1, 4))
        for k in range(n):
            face, _ = load_face(pool[int(rng.integers(len(pool)))])
            side = int(height * rng.uniform(0.1, 0.33))
            paste(canvas, face, (k + 0.5) * width / n, height * float(rng.uniform(0.35, 0.65)), side)
        cv2.imwrite(str(folder / f"photo{i:03d}.jpg"), canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
        faces += n
    return faces


def main():
    from fercli.resources import cpu_features

    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--model", default="default")
    parser.add_argument("--runs", type=int, default=2, help="runs of the command; the fastest is printed")
    args = parser.parse_args()
    print(f"CPU: {cpu_features()}")
    with tempfile.TemporaryDirectory(prefix="fercli_bench_photos_") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        faces = make_photos(tmp / "in", args.photos, args.megapixels)
        walls = []
        for _ in range(args.runs):
            start = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "fercli", "predict", "-p", str(tmp / "in"), "-o", str(tmp / "out"),
                                     "--model", args.model, "-q"], capture_output=True, text=True, cwd=REPO)
            walls.append(time.perf_counter() - start)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024   # Linux: kilobytes
        rows = (tmp / "out" / "predictions.csv").read_text().count("\n") - 1 if (tmp / "out" / "predictions.csv").exists() else 0
        wall = min(walls)
        print(f"{args.photos} photos of {args.megapixels:g} MP ({faces} faces): fercli predict {wall:.1f} s wall "
              f"({args.photos / wall:.2f} photos/s, start-up included), peak resident memory {peak_mb:.0f} MB, "
              f"{rows} rows, exit {result.returncode}")
        if result.returncode:
            print(result.stderr[-2000:])


if __name__ == "__main__":
    main()
