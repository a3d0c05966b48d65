"""Photo folders: wall time and peak resident memory of the whole `fercli
predict` command on a folder of large photographs (default 16 photos of 12
megapixels, 4000x3000 JPEG, each with 1-3 faces of a tenth to a third of the
photo's height on a textured background; `--megapixels 1.2` is the median size
of a folder of real portraits), start-up included; with the CPU's instruction sets beside the
figures. Runs on a clone without data sets (the faces come from the test
fixture when ../shared/data is missing).

    python benchmarks/bench_photos.py [--photos 16] [--megapixels 12] [--mixed] [--model default] [--fer-python PY]
        [--avx2-kernels]

`--fer-python`: the Python of an environment with the `fer` package (e.g.
`python3 -m venv /tmp/fer && /tmp/fer/bin/pip install fer==25.10.3`), which
runs fer's `detect_emotions` (Haar) over the same files, imports included.
`--avx2-kernels`: both as on a CPU without AVX-512 (benchmarks/avx2_kernels.py; fercli under gdb, fer with
its libraries limited by their variables).

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

FER_LOOP = r"""
import glob, sys
import cv2
from fer.fer import FER
detector = FER(mtcnn=False)
print(sum(len(detector.detect_emotions(cv2.imread(f))) for f in sorted(glob.glob(sys.argv[1] + "/*.jpg"))))
"""


def make_photos(folder: Path, count: int, megapixels: float, seed: int = 0, mixed: bool = False) -> int:
    """`count` JPEG photos of about `megapixels` (4:3) with faces, or with
    `mixed` of sizes spread as in a real folder (log-normal about that median,
    0.3-14 MP); returns the number of faces."""
    from tests.scenes import face_pool, load_face, paste, textured_background

    pool = face_pool()
    rng = np.random.default_rng(seed)
    faces = 0
    for i in range(count):
        size = float(np.clip(np.exp(rng.normal(np.log(megapixels), 0.9)), 0.3, 14)) if mixed else megapixels
        width = int(round((size * 1e6 * 4 / 3) ** 0.5))
        height = width * 3 // 4
        small = textured_background(height // 4, width // 4, seed=seed + i)   # texture at a quarter size, enlarged: fast
        canvas = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
        n = int(rng.integers(1, 4))
        for k in range(n):
            face, _ = load_face(pool[int(rng.integers(len(pool)))])
            side = int(height * rng.uniform(0.1, 0.33))
            paste(canvas, face, (k + 0.5) * width / n, height * float(rng.uniform(0.35, 0.65)), side)
        cv2.imwrite(str(folder / f"photo{i:03d}.jpg"), canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
        faces += n
    return faces


def main():
    from avx2_kernels import benchmark_setting

    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--megapixels", type=float, default=12.0, help="each photo's size, or with --mixed the median")
    parser.add_argument("--mixed", action="store_true", help="sizes spread as in a folder of real photos (0.3-14 MP)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--runs", type=int, default=2, help="runs of the command; the fastest is printed")
    parser.add_argument("--fer-python", default=None, help="Python of an environment with fer 25.x, to time it on the same photos")
    parser.add_argument("--avx2-kernels", action="store_true", help="run both commands with AVX2 kernels only (avx2_kernels.py)")
    args = parser.parse_args()
    prefix, fer_env, cpu_line = benchmark_setting(args.avx2_kernels)
    print(cpu_line)
    with tempfile.TemporaryDirectory(prefix="fercli_bench_photos_") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        faces = make_photos(tmp / "in", args.photos, args.megapixels, mixed=args.mixed)
        walls = []
        command = prefix([sys.executable, "-m", "fercli", "predict", "-p", str(tmp / "in"), "-o", str(tmp / "out"), "--model", args.model, "-q"])
        for _ in range(args.runs):
            start = time.perf_counter()
            result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
            walls.append(time.perf_counter() - start)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024   # Linux: kilobytes
        rows = (tmp / "out" / "predictions.csv").read_text().count("\n") - 1 if (tmp / "out" / "predictions.csv").exists() else 0
        wall = min(walls)
        print(f"{args.photos} photos of {'a median ' if args.mixed else ''}{args.megapixels:g} MP ({faces} faces): fercli predict {wall:.1f} s wall "
              f"({args.photos / wall:.2f} photos/s, start-up included), peak resident memory {peak_mb:.0f} MB, "
              f"{rows} rows, exit {result.returncode}")
        if result.returncode:
            print(result.stderr[-2000:])
        if args.fer_python:
            walls, command = [], [args.fer_python, "-c", FER_LOOP, str(tmp / "in")]
            for _ in range(args.runs):
                start = time.perf_counter()
                # the fer package's own folder must not be shadowed by a folder named fer in the working directory
                fer = subprocess.run(command, capture_output=True, text=True, cwd=tmp, env=fer_env)
                walls.append(time.perf_counter() - start)
            if fer.returncode:
                print(f"fer failed: {fer.stderr[-1000:]}")
            else:
                print(f"fer (Haar) detect_emotions on the same photos: {min(walls):.1f} s wall, {fer.stdout.split()[-1]} faces; "
                      f"fercli {min(walls) / wall:.2f}x as fast")


if __name__ == "__main__":
    main()
