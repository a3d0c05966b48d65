"""Calibration and robustness per model: expected calibration error (15 bins),
negative log-likelihood and accuracy, raw and calibrated; and, through the
whole pipeline on generated hard scenes (tests/scenes.py), emotion accuracy
on the faces found by kind of face, on turned faces, and for the better and
worse half of the faces by `quality`.

Runs on a clone without data sets: the faces then come from the
public-domain fixture portrait (one happy face, varied by blur, noise, JPEG,
scale and rotation), so accuracies say how robust the prediction is to the
photograph, not how good the model is. With ../shared/data it adds
FER-2013 PublicTest (where the calibration was fitted: in-sample), CK+
(another data set; `default` trained on 70% of its subjects, MODEL.md) and
scenes of FER-2013 val faces.

    python benchmarks/bench_calibration.py [--models default fast accurate] [--per-kind 8]
    python benchmarks/bench_calibration.py --fit-quality [--per-kind 60]   # refit fercli.quality (needs FER-2013)

Prints figures; asserts nothing."""
import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fercli.calibration import calibrate, expected_calibration_error, negative_log_likelihood  # noqa: E402
from fercli.resources import cpu_features  # noqa: E402
from tests import scenes  # noqa: E402

CKPLUS = scenes.SHARED_DATA / "ckplus48"
FIT_SEED_OFFSET = 1000


def figures(model, images, labels, name):
    raw = model.predict(images, calibrated=False)
    calibrated = calibrate(raw, model.metadata.get("calibration"))
    accuracy = float((calibrated.argmax(1) == labels).mean())
    print(f"  {name:34s} n={len(labels):5d}  accuracy {accuracy:6.2%}  ECE raw {expected_calibration_error(raw, labels):6.2%}"
          f" -> calibrated {expected_calibration_error(calibrated, labels):6.2%}  NLL {negative_log_likelihood(raw, labels):.3f}"
          f" -> {negative_log_likelihood(calibrated, labels):.3f}  mean confidence {calibrated.max(1).mean():.2f}")


def labelled_sets(model):
    """(name, uint8 crops, labels in the model's class order) for each data set at hand."""
    from fercli.data import read_class_folders

    sets = []
    if (scenes.FER2013 / "val").is_dir():
        data = read_class_folders(scenes.FER2013 / "val", model.input_size).remap(model.classes)
        sets.append(("FER-2013 PublicTest (fitted here)", data.images, data.labels))
    if CKPLUS.is_dir():
        data, _ = read_class_folders(CKPLUS, model.input_size).within(model.classes)
        sets.append(("CK+ (927 crops, no contempt)", data.images, data.labels))
    sets.extend(fixture_variants(model))
    return sets


def fixture_variants(model, copies: int = 40, seed: int = 3):
    """The fixture face (happy) as photographs spoil it: each variant `copies` times with random strength."""
    from fercli.data import prepare_face

    image = cv2.imread(str(scenes.FIXTURE_FACE), cv2.IMREAD_GRAYSCALE)
    x, y, side = scenes.FIXTURE_FACE_BOX
    face = image[y:y + side, x:x + side]
    rng = np.random.default_rng(seed)
    label = model.classes.index(scenes.FIXTURE_FACE_CLASS)

    def blurred(f):
        return cv2.GaussianBlur(f, (0, 0), rng.uniform(1.0, 3.0))

    def noisy(f):
        return np.clip(f + rng.normal(0, rng.uniform(8, 20), f.shape), 0, 255).astype(np.uint8)

    def jpeg(f):
        return cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(8, 30))])[1], cv2.IMREAD_GRAYSCALE)

    def small(f):
        tiny = int(rng.integers(14, 24))
        return cv2.resize(cv2.resize(f, (tiny, tiny), interpolation=cv2.INTER_AREA), f.shape[::-1])

    def dark(f):
        return np.clip(f * rng.uniform(0.2, 0.4), 0, 255).astype(np.uint8)

    variants = {"fixture face, as is": lambda f: f, "blurred (sigma 1-3 px)": blurred, "noise (sigma 8-20)": noisy,
                "JPEG quality 8-30": jpeg, "14-24 px, upscaled": small, "dark (20-40% light)": dark}
    sets = []
    for name, spoil in variants.items():
        crops = np.stack([prepare_face(spoil(face[:, ::-1] if i % 2 else face), model.input_size) for i in range(copies)])
        sets.append((name, crops, np.full(copies, label)))
    return sets


def scene_faces(analyzer, per_kind: int, seed: int):
    """Per found face of generated scenes: quality features, kind, angle, whether it is a true face, right or not."""
    from fercli.quality import quality_features

    rows = []
    for scene in scenes.hard_scenes(per_kind, seed=seed):
        faces = analyzer.analyze(scene.image)
        assigned, _ = scenes.match(faces.boxes.tolist(), scene.boxes)
        truth = {j: i for i, j in enumerate(assigned) if j is not None}
        features = quality_features(faces.confidences, faces.sizes, faces.sharpness, faces.poses, faces.scores)
        for j in range(len(faces)):
            i = truth.get(j)
            right = i is not None and faces.classes[int(faces.probabilities[j].argmax())] == scene.labels[i]
            rows.append({"features": {name: values[j] for name, values in features.items()}, "quality": float(faces.quality[j]), "kind": scene.kind,
                         "angle": scene.angles[i] if i is not None else 0.0, "true": i is not None, "right": right,
                         "pose": faces.poses[j]})
    return rows


def fit_logistic(x: np.ndarray, y: np.ndarray, strength: float = 1e-3) -> tuple[np.ndarray, float]:
    """Logistic regression by Newton steps (features standardised inside, coefficients returned in raw units)."""
    mean, scale = x.mean(0), x.std(0) + 1e-9
    z = np.concatenate([(x - mean) / scale, np.ones((len(x), 1))], axis=1)
    w = np.zeros(z.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-z @ w))
        gradient = z.T @ (p - y) / len(y) + strength * np.r_[w[:-1], 0]
        hessian = (z * (p * (1 - p))[:, None]).T @ z / len(y) + strength * np.diag(np.r_[np.ones(len(w) - 1), 0])
        w -= np.linalg.solve(hessian, gradient)
    coefficients = w[:-1] / scale
    return coefficients, float(w[-1] - (coefficients * mean).sum())


def decoy_boxes(analyzer, count: int, seed: int):
    """Quality features of the boxes the detector puts on things that are not
    faces but look a little like one (as earrings, hands and sleeves do in
    photographs): halves of faces, faces upside down, blurred face shading,
    16-60 px, twelve to a generated scene."""
    from fercli.quality import quality_features

    pool, rng, rows = scenes.face_pool("val"), np.random.default_rng(seed), []
    for _ in range(count):
        canvas = scenes.textured_background(720, 1280, seed=int(rng.integers(1 << 30)))
        for cx, cy, side in scenes.place(rng, [int(rng.integers(16, 60)) for _ in range(12)], 720, 1280):
            face, _ = scenes.load_face(pool[int(rng.integers(len(pool)))])
            half = face.shape[0] // 2
            fragment = (face[:half], face[half:], face[::-1], cv2.GaussianBlur(face, (0, 0), 6))[int(rng.integers(4))]
            x0, y0 = int(cx - side / 2), int(cy - side / 2)
            canvas[y0:y0 + side, x0:x0 + side] = cv2.resize(fragment, (side, side))
        faces = analyzer.analyze(canvas)
        features = quality_features(faces.confidences, faces.sizes, faces.sharpness, faces.poses, faces.scores)
        rows += [{"features": {name: values[j] for name, values in features.items()}, "true": False} for j in range(len(faces))]
    return rows


def fit_quality(args):
    """Refit fercli.quality: P(face) on CenterFace's boxes down to score 0.1
    (true faces against false boxes on scenes and decoys), P(emotion right) on the true faces that
    CenterFace (with landmarks) and Haar (without) find."""
    from fercli import quality as q
    from fercli.pipeline import Analyzer

    if not (scenes.FER2013 / "val").is_dir():
        sys.exit("--fit-quality needs FER-2013 val faces under ../shared/data.")
    start = time.perf_counter()
    probe = Analyzer(args.models[0], min_score=0.1)
    seed = args.seed + FIT_SEED_OFFSET   # other scenes than the ones the figures are measured on
    low = scene_faces(probe, args.per_kind, seed) + decoy_boxes(probe, 5 * args.per_kind, seed)
    haar = scene_faces(Analyzer(args.models[0], detector="haar"), args.per_kind // 2, seed)

    def matrix(rows, names):
        return np.stack([[r["features"][name] for name in names] for r in rows])

    face_c, face_i = fit_logistic(matrix(low, q.FACE_FEATURES), np.array([r["true"] for r in low], float))
    found = [r for r in low if r["true"] and r["features"]["score"] >= 0.25] + [r for r in haar if r["true"]]
    emotion_c, emotion_i = fit_logistic(matrix(found, q.EMOTION_FEATURES), np.array([r["right"] for r in found], float))
    print(f"P(face): {len(low)} CenterFace boxes at score >= 0.1 ({sum(not r['true'] for r in low)} false); "
          f"P(emotion right): {len(found)} true faces ({sum(r['right'] for r in found)} right); "
          f"{args.per_kind * len(scenes.KINDS)} scenes, {time.perf_counter() - start:.0f} s")
    print("FACE_COEFFICIENTS, FACE_INTERCEPT = (" + ", ".join(f"{c:.4g}" for c in face_c) + f"), {face_i:.4g}")
    print("EMOTION_COEFFICIENTS, EMOTION_INTERCEPT = (" + ", ".join(f"{c:.4g}" for c in emotion_c) + f"), {emotion_i:.4g}")
    def with_fit(features):   # quality with the coefficients just fitted
        return (q.logistic(features, q.FACE_FEATURES, face_c, face_i)
                * q.logistic(features, q.EMOTION_FEATURES, emotion_c, emotion_i))

    true = [r for r in low if r["true"] and r["features"]["score"] >= 0.25]
    false = [r for r in low if not r["true"] and r["features"]["score"] >= 0.25]
    for threshold in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3):
        def under(rows):
            return np.mean([with_fit({k: np.array([v]) for k, v in r["features"].items()})[0] < threshold for r in rows])
        print(f"  --min-quality {threshold:.2f}: false boxes (score >= 0.25) under it {under(false):6.1%} of {len(false)}, "
              f"true faces {under(true):6.1%} of {len(true)}")
    upright = np.stack([r["pose"] for r in low if r["true"] and r["angle"] == 0 and np.isfinite(r["pose"]).all()])
    print(f"median pose of upright scene faces (yaw, pitch, roll): {np.round(np.median(upright, axis=0), 1).tolist()}")


def report_scenes(rows):
    found = [r for r in rows if r["true"]]
    if not found:
        print("  no true face found")
        return
    print(f"  faces found {len(found)}, false boxes {len(rows) - len(found)}")
    for kind in scenes.KINDS:
        these = [r["right"] for r in found if r["kind"] == kind]
        if these:
            print(f"    {kind:8s} emotion right on {np.mean(these):6.1%} of {len(these)}")
    turned = [r["right"] for r in found if abs(r["angle"]) >= 18]
    print(f"    all      emotion right on {np.mean([r['right'] for r in found]):6.1%}; turned 18-40 degrees {np.mean(turned) if turned else float('nan'):6.1%} of {len(turned)}")
    ordered = sorted(found, key=lambda r: -r["quality"])
    half = len(ordered) // 2
    if half:
        better, worse = np.mean([r["right"] for r in ordered[:half]]), np.mean([r["right"] for r in ordered[half:]])
        print(f"    by quality: better half {better:6.1%}, worse half {worse:6.1%} ({(better - worse) * 100:+.1f} points)")
    false = [r["quality"] for r in rows if not r["true"]]
    if false:
        print(f"    false boxes' quality: median {np.median(false):.3f}, max {np.max(false):.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["default", "fast", "accurate"])
    parser.add_argument("--per-kind", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fit-quality", action="store_true", help="Refit fercli.quality's coefficients on scenes of FER-2013 val faces.")
    args = parser.parse_args()
    print(f"CPU: {cpu_features()}")
    from fercli.inference import load_model
    from fercli.pipeline import Analyzer

    if args.fit_quality:
        fit_quality(args)
        return
    for name in args.models:
        model = load_model(name)
        print(f"\n{name} ({model.precision}); calibration: {model.metadata.get('calibration', {}).get('method', 'none')}")
        for set_name, images, labels in labelled_sets(model):
            figures(model, images, labels, set_name)
        start = time.perf_counter()
        print(f"  generated hard scenes ({args.per_kind} of each kind: {', '.join(scenes.KINDS)}), whole pipeline:")
        report_scenes(scene_faces(Analyzer(model), args.per_kind, args.seed))
        print(f"  ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
