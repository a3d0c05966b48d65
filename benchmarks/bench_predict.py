"""Predict speed: `fercli --help` wall time, classifier crops/s (batch 1 and 64),
and images/s for a folder of 1280x720 scenes with 1-4 real faces.

    python benchmarks/bench_predict.py [--model default] [--images 40]

Scenes are built from FER-2013 val faces in ../shared/data (as the tests do).
Prints figures; asserts nothing (timings on shared machines are noisy)."""
import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def best_of(runs, fn):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args()
    from fercli.resources import cpu_features

    print(f"CPU: {cpu_features()}")   # the figures below depend on its instruction sets

    help_s = best_of(5, lambda: subprocess.run([sys.executable, "-m", "fercli", "--help"], capture_output=True, cwd=REPO))
    print(f"fercli --help: {help_s * 1000:.0f} ms (best of 5)")

    from fercli.inference import load_model
    model = load_model(args.model)   # what predict runs: the .lite file, int8 unless FERCLI_PRECISION=float32
    size = model.input_size
    for batch in (1, 64):
        crops = np.random.default_rng(0).integers(0, 256, (batch, size, size), dtype=np.uint8)
        model.predict(crops)  # warm-up / trace
        reps = max(1, 2000 // batch)
        seconds = best_of(3, lambda: [model.predict(crops) for _ in range(reps)])
        print(f"classifier {model.name} ({model.precision}): batch {batch:>2}: {batch * reps / seconds:,.0f} crops/s")

    from tests.conftest import scene_with_faces, write_image
    folder = Path(tempfile.mkdtemp(prefix="fercli_bench_"))
    try:
        faces = 0
        for i in range(args.images):
            n = 1 + i % 4
            scene, _ = scene_with_faces(n, seed=i)
            write_image(folder / "in" / f"scene{i:03d}.jpg", scene)
            faces += n
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "fercli", "predict", "-p", str(folder / "in"), "-o", str(folder / "out"), "-q"]
                             + (["--model", args.model] if args.model else []), capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - start
        rows = (folder / "out" / "predictions.csv").read_text().count("\n") - 1
        print(f"predict: {args.images} images of 1280x720 ({faces} faces, {rows} rows) in {wall:.1f} s including start-up "
              f"= {args.images / wall:.1f} images/s; exit {out.returncode}")
        for line in out.stderr.splitlines():
            if "wall time" in line:
                print("  in-loop:", line.strip("│ ").replace("│", "").strip())
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
