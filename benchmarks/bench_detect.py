"""Face detectors on generated hard scenes: recall, precision and ms per image
for each detector, recall by kind of face, emotion accuracy on rotated and
upright faces with and without alignment, and `fercli predict` as a whole
command per detector.

Scenes (tests/scenes.py): 1280x720 (`--size`) textured backgrounds with face crops
pasted on them, eight scenes of each kind: tight crops (70-160 px, upright),
rotated 15-40 degrees in the image plane, small (26-44 px), dim (the whole
frame at 25-45% light with sensor noise), blurred, crowds of 8. Faces are
FER-2013 val crops where ../shared/data has them (labelled, tight 48x48 crops:
the hard case), else the public-domain portrait in tests/fixtures. A face counts
as found when a box's centre lies on it and the box covers at least a quarter
of it; a second box on the same face counts as a false one.

    python benchmarks/bench_detect.py [--per-kind 8] [--seed 7] [--no-command]
    python benchmarks/bench_detect.py --fit-crop   # refit the crop registration (needs FER-2013)
    python benchmarks/bench_detect.py --centerface /tmp/centerface32.onnx   # beside another CenterFace file
    python benchmarks/bench_detect.py --size 1280x960 --no-command   # scenes of another size
    python benchmarks/bench_detect.py --probe-reach 1.5 --no-command   # beside probe windows of another reach

Prints figures; asserts nothing."""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DETECTORS = {  # label -> (detector name, options)
    "haar (defaults)": ("haar", {}),
    "haar --scale-factor 1.05 --min-neighbors 3 --min-face 20": ("haar", {"scale_factor": 1.05, "min_neighbors": 3, "min_face": 20}),
    "centerface (default)": ("centerface", {}),
    "centerface --min-face 24 (24 px whatever the picture's size)": ("centerface", {"min_face": 24}),
    "centerface --min-score 0.5": ("centerface", {"min_score": 0.5}),
    "centerface, one pass on the whole image at the fine scale (2x)": ("centerface", {"detect_scale": 2.0}),
}


def detection_table(scenes):
    from fercli.detect import make_detector
    from tests.scenes import KINDS, match

    print(f"{len(scenes)} scenes, {sum(len(s.boxes) for s in scenes)} faces; recall by kind: "
          + ", ".join(f"{k} ({sum(len(s.boxes) for s in scenes if s.kind == k)})" for k in KINDS))
    for label, (name, options, *settings) in DETECTORS.items():
        detector = make_detector(name, **options)
        for setting, value in (settings[0] if settings else {}).items():   # a class constant tried on this detector
            setattr(detector, setting, value)
        detector.detect(scenes[0].image)  # warm-up
        found, false, elapsed = {k: [0, 0] for k in KINDS}, 0, 0.0
        for scene in scenes:
            start = time.perf_counter()
            boxes = detector.detect(scene.image).boxes
            elapsed += time.perf_counter() - start
            assigned, wrong = match(boxes, scene.boxes)
            found[scene.kind][0] += sum(a is not None for a in assigned)
            found[scene.kind][1] += len(scene.boxes)
            false += wrong
        hits, total = sum(v[0] for v in found.values()), sum(v[1] for v in found.values())
        print(f"  {label}: recall {hits / total:.3f}, precision {hits / max(hits + false, 1):.3f}, "
              f"{elapsed / len(scenes) * 1000:.0f} ms/image | "
              + " ".join(f"{k} {v[0] / v[1]:.2f}" for k, v in found.items()))


def emotion_accuracy(count: int, seed: int, model_path: str | None = None):
    """Emotion accuracy of the default model on the faces centerface finds in
    `count` scenes of rotated and of upright faces, aligned or not (missed faces
    count as wrong)."""
    from fercli.detect import CenterFaceDetector
    from fercli.pipeline import Analyzer
    from tests.scenes import face_pool, make_scene, match

    analyzer, pool = Analyzer(detector=CenterFaceDetector(model_path=model_path)), face_pool("val")
    if model_path:
        print(f"  with {model_path}:")
    for kind in ("rotated", "tight"):
        rng = np.random.default_rng(seed)
        scenes = [make_scene(kind, pool, rng) for _ in range(count)]
        for align in (True, False):
            analyzer.align = align
            right = total = 0
            for scene in scenes:
                faces = analyzer.analyze(scene.image)
                assigned, _ = match([f.box for f in faces], scene.boxes)
                for index, label in zip(assigned, scene.labels):
                    total += 1
                    right += index is not None and faces[index].emotion == label
            print(f"  emotion accuracy, {'rotated' if kind == 'rotated' else 'upright'} faces, "
                  f"{'aligned' if align else 'not aligned'}: {right / max(total, 1):.3f} ({right}/{total})")


def whole_command(scenes):
    """`fercli predict` on the scenes as JPEG files, once per detector, start-up included."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "scenes"
        folder.mkdir()
        for i, scene in enumerate(scenes):
            cv2.imwrite(str(folder / f"{scene.kind}_{i:03d}.jpg"), scene.image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        times = {}
        for name in ("haar", "centerface"):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "fercli", "predict", "-p", str(folder), "-o", str(Path(tmp) / name),
                            "--detector", name, "-q"], check=True, capture_output=True)
            times[name] = time.perf_counter() - start
        print(f"  fercli predict on the {len(scenes)} scenes: haar {times['haar']:.1f} s, centerface {times['centerface']:.1f} s "
              f"= {times['centerface'] / times['haar']:.2f}x")


def fit_crop(count: int = 60):
    """Where FER-2013 training crops lie relative to CenterFace's landmarks:
    the constants of fercli.data.face_crop."""
    from fercli.detect import make_detector
    from tests.scenes import FER2013, face_pool, make_scene, match

    if not (FER2013 / "train").is_dir():
        sys.exit(f"--fit-crop needs FER-2013 at {FER2013}")
    detector = make_detector("centerface")
    pool, rng, rows = face_pool("train"), np.random.default_rng(5), []
    for _ in range(count):
        scene = make_scene("tight", pool, rng)
        found = detector.detect(scene.image)
        assigned, _ = match(found.boxes, scene.boxes)
        for (x, y, side, _), index in zip(scene.boxes, assigned):
            if index is None:
                continue
            points = found.landmarks[index]
            eyes, mouth = points[:2].mean(axis=0), points[3:].mean(axis=0)
            eye_to_mouth = np.linalg.norm(mouth - eyes)
            centre = np.array([x + side / 2, y + side / 2])
            rows.append((side / eye_to_mouth, (centre - eyes) @ (mouth - eyes) / eye_to_mouth ** 2))
    side_ratio, along = np.median(np.array(rows), axis=0)
    print(f"{len(rows)} faces: crop side = {side_ratio:.2f} x eye-to-mouth distance; "
          f"crop centre {along:.2f} of the way from the eyes to the mouth")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-kind", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--accuracy-scenes", type=int, default=60, help="scenes of each kind for the emotion accuracy")
    parser.add_argument("--no-command", action="store_true", help="skip timing the whole `fercli predict` command")
    parser.add_argument("--size", default="1280x720", help="the scenes' width x height")
    parser.add_argument("--probe-reach", type=float, default=None,
                        help="also centerface with probe windows reaching this many faces beyond a faint place")
    parser.add_argument("--fit-crop", action="store_true", help="refit the crop registration constants (needs FER-2013)")
    parser.add_argument("--centerface", default=None, help="another CenterFace ONNX file to compare, e.g. the wheel's float32 "
                        "network (docs/make_centerface_onnx.py --float32)")
    args = parser.parse_args()
    from fercli.resources import cpu_features

    print(f"CPU: {cpu_features()}")   # the figures below depend on its instruction sets
    if args.fit_crop:
        return fit_crop()

    from tests.scenes import FER2013, hard_scenes

    width, height = (int(side) for side in args.size.lower().split("x"))
    scenes = hard_scenes(args.per_kind, args.seed, size=(height, width))
    source = "FER-2013 val crops" if (FER2013 / "val").is_dir() else "the fixture portrait (no FER-2013 here)"
    print(f"faces from {source}")
    if args.centerface:
        DETECTORS[f"centerface --model-path {args.centerface}"] = ("centerface", {"model_path": args.centerface})
    if args.probe_reach is not None:
        DETECTORS[f"centerface, probe windows reaching {args.probe_reach:g}"] = ("centerface", {}, {"PROBE_REACH": args.probe_reach})
    detection_table(scenes)
    emotion_accuracy(args.accuracy_scenes, args.seed + 1)
    if args.centerface:
        emotion_accuracy(args.accuracy_scenes, args.seed + 1, model_path=args.centerface)
    if not args.no_command:
        whole_command(scenes)


if __name__ == "__main__":
    main()
