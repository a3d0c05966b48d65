"""Video detection between full passes: emotion accuracy and faces found when
every analysed frame gets a full detector pass, against detect.FollowingDetector
(a full pass every 12th analysed frame, between them the frame scaled so that
the smallest known face is `margin` x the 48 px CenterFace finds reliably), on
generated two-face clips (640x480, faces of 80-180 px moving across a textured
background, every 3rd of 60 frames analysed). Faces are FER-2013 val crops
where ../shared/data has them (labelled), else the fixture face.

    python benchmarks/bench_following.py [--clips 30] [--margins 1.0 1.25 2.0]

Prints figures; asserts nothing."""
import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_frames(rng, pool, seed):
    """(analysed frames, true boxes per frame, the two faces' labels) of one clip."""
    from tests.scenes import load_face, textured_background

    side = int(rng.choice([80, 100, 140, 180]))
    picks = [load_face(pool[int(rng.integers(len(pool)))]) for _ in range(2)]
    faces = [cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC) for face, _ in picks]
    background = textured_background(480, 640, seed=seed)
    span = 640 - side - 40
    frames, truth = [], []
    for i in range(0, 60, 3):
        frame = background.copy()
        boxes = [(20 + (3 * i) % span, 40, side, side), (640 - side - 20 - (2 * i) % span, 480 - side - 40, side, side)]
        for (x, y, w, h), face in zip(boxes, faces):
            frame[y:y + h, x:x + w] = face
        frames.append(frame)
        truth.append(boxes)
    return frames, truth, [label for _, label in picks]


def main():
    from fercli.pipeline import Analyzer
    from fercli.resources import cpu_features
    from tests.scenes import face_pool, match

    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=30)
    parser.add_argument("--margins", type=float, nargs="+", default=[1.0, 1.25, 2.0])
    args = parser.parse_args()
    print(f"CPU: {cpu_features()}")
    pool, rng = face_pool("val"), np.random.default_rng(1)
    clips = [make_frames(rng, pool, seed) for seed in range(args.clips)]
    analyzer = Analyzer(max_side=640)   # what `fercli video` uses on a 640x480 frame
    modes = {"full pass on every analysed frame": None} | {f"following, margin {m:g}": m for m in args.margins}
    for label, margin in modes.items():
        right = found = total = 0
        start = time.perf_counter()
        for frames, truth, labels in clips:
            view = analyzer if margin is None else analyzer.following(12)
            if margin is not None:
                view.detector.margin = margin
            for frame, boxes in zip(frames, truth):
                faces = view.analyze(frame)
                assigned, _ = match(faces.boxes, boxes)
                for index, true_label in zip(assigned, labels):
                    total += 1
                    found += index is not None
                    right += index is not None and faces.emotions[index] == true_label
        elapsed = time.perf_counter() - start
        print(f"  {label}: emotion right {right / total:.3f}, found {found / total:.3f} of {total} faces, "
              f"{elapsed / sum(len(f) for f, _, _ in clips) * 1000:.0f} ms per analysed frame")


if __name__ == "__main__":
    main()
