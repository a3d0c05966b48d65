"""Local engine vs Ray engine: the same `fercli predict` on the same folder,
whole commands (model loading and, for Ray, the cluster's start included),
and the rows compared.

    python benchmarks/bench_ray.py [--images 200] [--runs 2] [--workers N --cpus-per-worker C]

Generates 640x480 photos with 0-2 faces (FER-2013 val faces where
../shared/data has them, else the fixture portrait); needs `fercli[ray]`.
Prints images/s per engine, the ratio, images/s per core, and what a
million images would take on this machine and on a cluster of that many cores.
Asserts nothing (timings on shared machines are noisy)."""
import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def rows(output: Path) -> list[tuple]:
    with open(output / "predictions.csv", newline="") as handle:
        return sorted(map(tuple, csv.reader(handle)))


def timed_predict(folder: Path, out: Path, extra: list[str]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fercli", "predict", "-p", str(folder), "-o", str(out), "-q", *extra],
                          capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        sys.exit(f"fercli predict {' '.join(extra)} failed:\n{done.stderr}")
    return seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--runs", type=int, default=2, help="runs per engine, alternating; the best is kept")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--cpus-per-worker", type=float, default=None)
    args = parser.parse_args()
    from fercli.resources import cpu_features

    print(f"CPU: {cpu_features()}")   # the figures below depend on its instruction sets

    from tests.conftest import scene_with_faces, write_image

    ray_options = ["--engine", "ray"]
    if args.workers:
        ray_options += ["--workers", str(args.workers)]
    if args.cpus_per_worker:
        ray_options += ["--cpus-per-worker", str(args.cpus_per_worker)]
    folder = Path(tempfile.mkdtemp(prefix="fercli_bench_ray_"))
    try:
        for i in range(args.images):
            scene, _ = scene_with_faces(i % 3, size=(480, 640), face_side=140, seed=i)
            write_image(folder / "in" / f"photo{i:04d}.jpg", scene)
        times = {"local": [], "ray": []}
        for _ in range(args.runs):
            times["local"].append(timed_predict(folder / "in", folder / "local", []))
            times["ray"].append(timed_predict(folder / "in", folder / "ray", ray_options))
        same = rows(folder / "local") == rows(folder / "ray")
        cores = os.cpu_count()
        best = {engine: min(t) for engine, t in times.items()}
        print(f"{args.images} photos 640x480, {cores} cores, whole commands (best of {args.runs}):")
        for engine, seconds in best.items():
            print(f"  {engine:5}: {seconds:6.1f} s  {args.images / seconds:6.1f} images/s  "
                  f"({args.images / seconds / cores:.1f} images/s per core)   runs: {', '.join(f'{t:.1f}' for t in times[engine])} s")
        print(f"ray / local time: {best['ray'] / best['local']:.2f}x; rows identical: {same}")
        per_core = args.images / best["ray"] / cores
        print(f"one million images at {per_core:.1f} images/s per core: {1e6 / per_core / 3600:,.0f} core-hours; "
              f"{1e6 / (per_core * cores) / 3600:,.1f} h on this machine, {1e6 / (per_core * 64) / 3600:,.1f} h on 64 cores "
              "(start-up included here, so larger runs do better per core)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
