"""Face detector recall and precision on 1280x720 scenes with 1-4 real faces:
random (unfiltered) FER-2013 val crops, upscaled to 120-260 px and pasted on
textured backgrounds, as the tests build them. A face counts as found when a
box's centre lies on it and the box covers at least a quarter of it.

    python benchmarks/bench_detect.py [--scenes 60]

Tight 48x48 crops (foreheads and chins cut, tilted heads, hands on faces) are
harder for a Haar cascade than photos with a margin around each face, so these
figures are a lower bound. Prints figures; asserts nothing."""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SETTINGS = [(1.1, 5), (1.1, 4), (1.1, 3), (1.05, 4), (1.05, 3)]  # (scale factor, min neighbours)


def scenes(count: int, seed: int = 1):
    from tests.conftest import FER2013, scene_with_faces

    paths = sorted(p for c in (FER2013 / "val").iterdir() for p in c.iterdir())
    rng = np.random.default_rng(seed)
    for s in range(count):
        n, side = 1 + s % 4, int(rng.integers(120, 260))
        yield scene_with_faces(n, face_side=side, seed=1000 + s, faces=[paths[i] for i in rng.integers(len(paths), size=n)])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=60)
    args = parser.parse_args()

    from fercli.data import to_gray
    from fercli.detect import HaarDetector
    from tests.conftest import box_hits

    data = [(to_gray(image), truth) for image, truth in scenes(args.scenes)]
    print(f"{len(data)} scenes, {sum(len(t) for _, t in data)} faces")
    for scale_factor, min_neighbors in SETTINGS:
        detector = HaarDetector(scale_factor=scale_factor, min_neighbors=min_neighbors)
        found_faces = faces = false = 0
        start = time.perf_counter()
        for gray, truth in data:
            boxes = detector.detect(gray)
            found_faces += sum(any(box_hits(b, t) for b in boxes) for t in truth)
            faces += len(truth)
            false += sum(not any(box_hits(b, t) for t in truth) for b in boxes)
        ms = (time.perf_counter() - start) / len(data) * 1000
        print(f"--scale-factor {scale_factor} --min-neighbors {min_neighbors}: recall {found_faces / faces:.1%}, "
              f"precision {found_faces / max(found_faces + false, 1):.1%}, {ms:.0f} ms per image")


if __name__ == "__main__":
    main()
