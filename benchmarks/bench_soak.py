"""Soak: a folder of generated images (half with the public-domain fixture
face pasted in, half without) through `fercli predict`, with the process's
resident memory sampled every 0.2 s; then the same folder again, killed with
SIGKILL at random moments and continued with --resume each time, and its CSV
compared with the uninterrupted run's: exactly one row per face and per
faceless image, none twice, none lost.

    python benchmarks/bench_soak.py [--images 10000] [--kills 5] [--seed 0]

Prints figures; asserts nothing."""
import argparse
import csv
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_images(folder: Path, count: int, seed: int) -> None:
    from tests.scenes import FIXTURE_FACE, FIXTURE_FACE_BOX, textured_background

    x, y, side = FIXTURE_FACE_BOX
    face = cv2.imread(str(FIXTURE_FACE))[y:y + side, x:x + side]
    rng = np.random.default_rng(seed)
    backgrounds = [textured_background(240, 320, seed=s) for s in range(8)]
    folder.mkdir(parents=True)
    for i in range(count):
        image = backgrounds[i % 8].copy()
        if i % 2 == 0:
            size = int(rng.integers(70, 120))
            left, top = int(rng.integers(0, 320 - size)), int(rng.integers(0, 240 - size))
            image[top:top + size, left:left + size] = cv2.resize(face, (size, size))
        cv2.imwrite(str(folder / f"img{i:05d}.jpg"), image)


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def predict(folder: Path, out: Path, resume: bool, kill_after: float | None = None) -> list[float]:
    """Runs predict; returns its memory samples (MB). Killed with SIGKILL after `kill_after` seconds if given."""
    command = [sys.executable, "-m", "fercli", "predict", "-p", str(folder), "-o", str(out), "-q", "--no-images"]
    process = subprocess.Popen(command + (["--resume"] if resume else []), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples, start = [], time.perf_counter()
    while process.poll() is None:
        samples.append(rss_mb(process.pid))
        if kill_after is not None and time.perf_counter() - start > kill_after:
            process.send_signal(signal.SIGKILL)
            process.wait()
            break
        time.sleep(0.2)
    return samples


def rows(out: Path) -> list[tuple]:
    with open(out / "predictions.csv", newline="") as handle:
        return sorted((r["source"], r["face"], r["x"], r["y"], r["emotion"], r["status"]) for r in csv.DictReader(handle))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from fercli.resources import cpu_features

    print(f"CPU: {cpu_features()}")   # the figures below depend on its instruction sets
    with tempfile.TemporaryDirectory(prefix="fercli_soak_") as tmp:
        tmp = Path(tmp)
        make_images(tmp / "in", args.images, args.seed)
        start = time.perf_counter()
        samples = predict(tmp / "in", tmp / "whole", resume=False)
        wall = time.perf_counter() - start
        steady = samples[len(samples) // 5:] or samples
        print(f"{args.images} images in {wall:.0f} s ({args.images / wall:.1f} images/s); resident memory: "
              f"peak {max(samples):.0f} MB, first fifth of the run left out: {min(steady):.0f}-{max(steady):.0f} MB, "
              f"at the end {steady[-1]:.0f} MB")
        reference = rows(tmp / "whole")
        rng = random.Random(args.seed)
        for _ in range(args.kills):
            predict(tmp / "in", tmp / "killed", resume=True, kill_after=rng.uniform(3, max(4, wall / (args.kills + 1))))
        predict(tmp / "in", tmp / "killed", resume=True)
        resumed = rows(tmp / "killed")
        print(f"killed {args.kills} times with SIGKILL and resumed: {len(resumed)} rows against {len(reference)} "
              f"uninterrupted; identical: {resumed == reference}; rows twice: {len(resumed) - len(set(resumed))}")


if __name__ == "__main__":
    main()
