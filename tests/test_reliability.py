"""Calibrated probabilities, `uncertain` under --min-confidence / --min-quality,
and the reliability signals of each face (size, sharpness, head pose, quality)."""
import csv

import cv2
import numpy as np
import pytest

from tests.conftest import FIXTURE_FACE, run, synthetic_faces, textured_background, write_image
from tests.scenes import FIXTURE_FACE_BOX


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def _binned_ece(p, y, bins=15):
    conf, right = p.max(1), p.argmax(1) == y
    total = 0.0
    for b in range(bins):
        inside = (conf >= b / bins) & ((conf < (b + 1) / bins) if b < bins - 1 else (conf <= 1))
        if inside.any():
            total += inside.sum() * abs(right[inside].mean() - conf[inside].mean())
    return total / len(y)


def test_fit_undoes_a_known_miscalibration():
    """Labels drawn from softmax(z); the 'model' reports softmax(z / 2), too unsure:
    the fit finds W near 2 I and the calibrated probabilities are calibrated."""
    from fercli.calibration import calibrate, fit_calibration

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2.0, (6000, 5))
    labels = np.array([rng.choice(5, p=row) for row in _softmax(logits)])
    reported = _softmax(logits / 2)
    weights, bias = fit_calibration(reported, labels)
    assert np.allclose(np.diag(weights), 2.0, atol=0.25)
    assert np.abs(weights - np.diag(np.diag(weights))).max() < 0.15 and np.abs(bias).max() < 0.15
    calibrated = calibrate(reported, {"weights": weights, "bias": bias})
    assert _binned_ece(reported, labels) > 0.08
    assert _binned_ece(calibrated, labels) < 0.03
    assert (calibrated.argmax(1) == reported.argmax(1)).mean() > 0.98   # per-class weights may move a close call
    assert calibrate(reported, None) is reported


def test_shipped_models_carry_their_calibration():
    """Every shipped model is one .lite file, for both runtimes, holding its fitted calibration, which is applied."""
    from fercli.lite import LiteModel
    from fercli.modelfile import read_metadata, resolve_model_path, shipped_model_names

    crops = synthetic_faces(16, seed=2)
    for name in shipped_model_names():
        lite = resolve_model_path(name)
        assert resolve_model_path(name, keras=True) == lite, name   # Keras rebuilds from the same file
        entry = read_metadata(lite).get("calibration")
        assert entry and entry["method"] == "dirichlet", name
        assert entry["ece_after"] < entry["ece_before"], name
        if name == "default":
            model = LiteModel(lite)
            raw, calibrated = model.predict(crops, calibrated=False), model.predict(crops)
            assert np.abs(raw - calibrated).max() > 1e-3
            assert np.allclose(calibrated.sum(1), 1, atol=1e-5)


def test_calibrate_command_writes_one_calibration_for_both_runtimes(tmp_path):
    """`fercli calibrate FILE.keras --val DATA` stores the fit in the .keras file
    and in the .lite file exported from it; both then give the same probabilities."""
    pytest.importorskip("tensorflow", reason="a .keras model needs TensorFlow (the train extra)")
    from fercli.architectures import build_model
    from fercli.inference import EmotionModel
    from fercli.lite import LiteModel
    from fercli.modelfile import read_metadata, save_model

    save_model(build_model("vgg-small", 2, 16), tmp_path / "mine.keras",
               {"classes": ["happy", "sad"], "input_size": 16, "arch": "vgg-small"})
    assert run("export", tmp_path / "mine.keras").exit_code == 0
    rng = np.random.default_rng(4)
    for i in range(60):  # the class is the brightness: a model can be sure of it and be right
        label = i % 2
        image = np.clip(rng.normal(90 + 80 * label, 20, (16, 16)), 0, 255).astype(np.uint8)
        write_image(tmp_path / "val" / ("happy", "sad")[label] / f"{i}.png", image)
    result = run("calibrate", tmp_path / "mine.keras", "--val", tmp_path / "val")
    assert result.exit_code == 0, result.output + result.stderr
    assert "mine.lite" in result.output
    keras_entry, lite_entry = (read_metadata(tmp_path / f"mine.{s}")["calibration"] for s in ("keras", "lite"))
    assert keras_entry == lite_entry and keras_entry["n"] == 60
    assert keras_entry["nll_after"] <= keras_entry["nll_before"]
    crops = synthetic_faces(8, 16, seed=9)
    on_keras = EmotionModel(tmp_path / "mine.keras", "float32").predict(crops)
    assert np.abs(LiteModel(tmp_path / "mine.lite", "float32").predict(crops) - on_keras).max() < 1e-4
    assert run("calibrate", tmp_path / "mine.keras", "--val", tmp_path / "nowhere").exit_code == 2


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_min_confidence_and_min_quality_mark_faces_uncertain(tmp_path):
    """Under the threshold a face's emotion is `uncertain`; its probabilities stay in the row, status ok."""
    image = write_image(tmp_path / "in" / "face.jpg", cv2.imread(str(FIXTURE_FACE)))
    plain = run("predict", "-p", image, "-o", tmp_path / "plain", "--no-images")
    assert plain.exit_code == 0, plain.stderr
    (face,) = _rows(tmp_path / "plain" / "predictions.csv")
    assert face["emotion"] == "happy" and face["status"] == "ok"
    for option, value in (("--min-confidence", 0.999), ("--min-quality", 0.999)):
        out = tmp_path / option.strip("-")
        assert run("predict", "-p", image, "-o", out, "--no-images", option, value).exit_code == 0
        (unsure,) = _rows(out / "predictions.csv")
        assert unsure["emotion"] == "uncertain" and unsure["status"] == "ok"
        assert unsure["p_happy"] == face["p_happy"] and unsure["confidence"] == face["confidence"]
    assert run("predict", "-p", image, "--min-confidence", 1.5).exit_code == 2

    from fercli import Analyzer
    from fercli.errors import UserError

    faces = Analyzer(min_confidence=float(face["confidence"]) + 1e-3).analyze(cv2.imread(str(image)))   # the image predict read
    assert faces.emotions == ["uncertain"] and faces[0].emotion == "uncertain"
    assert faces[faces.confidences > 0].emotions == ["uncertain"]   # a filtered record keeps the threshold
    with pytest.raises(UserError):
        Analyzer(min_quality=2)


def test_records_carry_size_sharpness_pose_and_quality(tmp_path):
    image = write_image(tmp_path / "in" / "face.png", cv2.imread(str(FIXTURE_FACE)))
    for detector in ("centerface", "haar"):
        out = tmp_path / detector
        assert run("predict", "-p", image, "-o", out, "--no-images", "--jsonl", "--detector", detector).exit_code == 0
        (row,) = _rows(out / "predictions.csv")
        assert int(row["size_px"]) == max(int(row["w"]), int(row["h"]))
        assert float(row["sharpness"]) > 0 and 0 < float(row["quality"]) < 1
        if detector == "haar":
            assert row["yaw"] == row["pitch"] == row["roll"] == ""
        else:
            assert all(abs(float(row[k])) < 90 for k in ("yaw", "pitch", "roll"))
        assert '"quality"' in (out / "predictions.jsonl").read_text()


def _fixture_square():
    x, y, side = FIXTURE_FACE_BOX
    return cv2.imread(str(FIXTURE_FACE))[y:y + side, x:x + side]


def _canvas_with(face, side, angle=0.0):
    canvas = textured_background(480, 640, seed=5)
    face = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA if side < face.shape[0] else cv2.INTER_CUBIC)
    matrix = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
    matrix[:, 2] += (320 - side / 2, 240 - side / 2)
    warped = cv2.warpAffine(face, matrix, (640, 480))
    mask = cv2.warpAffine(np.full((side, side), 255, np.uint8), matrix, (640, 480)) > 0
    canvas[mask] = warped[mask]
    return canvas


def test_pose_near_zero_upright_and_signed_when_turned():
    from fercli import Analyzer

    analyzer = Analyzer()
    face = _fixture_square()
    (upright,) = analyzer.analyze(_canvas_with(face, 200))
    assert all(abs(v) < 10 for v in upright.pose), upright.pose
    (leaning,) = analyzer.analyze(_canvas_with(face, 200, angle=25))   # OpenCV turns counter-clockwise as seen
    # the five landmarks read this portrait's 25 degrees as 17-18 (float32 detector, int8 alike): about 0.7x
    assert -33 < leaning.pose[2] < -14, leaning.pose
    (mirrored,) = analyzer.analyze(_canvas_with(np.ascontiguousarray(face[:, ::-1]), 200))
    assert abs(mirrored.pose[0] + upright.pose[0]) < 6 and abs(mirrored.pose[2] + upright.pose[2]) < 6   # landmark noise: a few degrees


def _project(yaw=0.0, pitch=0.0):
    """The five landmarks of a generic 3D face (y up, z towards the camera) turned
    by `yaw` (towards the image's right) and `pitch` (chin up), seen from the front."""
    points = np.array([[-165, 170, -135], [165, 170, -135], [0, 0, 0], [-150, -150, -125], [150, -150, -125]], float)
    a, b = np.radians(yaw), np.radians(pitch)
    turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    tilt = np.array([[1, 0, 0], [0, np.cos(b), np.sin(b)], [0, -np.sin(b), np.cos(b)]])
    seen = points @ turn.T @ tilt.T
    return np.stack([300 + seen[:, 0] / 5, 300 - seen[:, 1] / 5], axis=1)[None]


def test_pose_geometry_on_a_projected_face():
    from fercli.quality import head_pose

    assert np.abs(head_pose(_project())).max() < 2
    for yaw in (-25, 15, 30):
        assert abs(head_pose(_project(yaw=yaw))[0, 0] - yaw) < 6
    for pitch in (-20, 20):
        assert abs(head_pose(_project(pitch=pitch))[0, 1] - pitch) < 6
    assert np.isnan(head_pose(np.full((1, 5, 2), np.nan))).all()


def test_quality_falls_for_a_small_blurred_face():
    from fercli import Analyzer

    analyzer = Analyzer()
    face = _fixture_square()
    (clear,) = analyzer.analyze(_canvas_with(face, 200))
    spoilt = _canvas_with(cv2.GaussianBlur(cv2.resize(face, (30, 30), interpolation=cv2.INTER_AREA), (0, 0), 1.2), 30)
    found = analyzer.analyze(spoilt)
    assert len(found) == 1, "the detector should still find the small face"
    assert found[0].sharpness < clear.sharpness and found[0].quality < clear.quality


def test_serve_takes_thresholds_per_request():
    pytest.importorskip("flask", reason="fercli serve needs Flask (the serve extra)")
    from fercli import Analyzer
    from fercli.serve import create_app

    client = create_app(Analyzer()).test_client()
    upload = FIXTURE_FACE.read_bytes()

    def post(query):
        import io

        return client.post(f"/api/predict{query}", data={"file": (io.BytesIO(upload), "face.jpg")},
                           content_type="multipart/form-data")

    assert post("").get_json()["records"][0]["emotion"] == "happy"
    record = post("?min_confidence=1").get_json()["records"][0]
    assert record["emotion"] == "uncertain" and record["p_happy"] > 0.3 and record["quality"] is not None
    assert post("?min_quality=abc").status_code == 400


def test_cli_default_min_quality_is_the_modules():
    from fercli.cli import DEFAULT_MIN_QUALITY
    from fercli.pipeline import Analyzer
    from fercli.quality import DEFAULT_MIN_QUALITY as module_default

    import inspect

    assert DEFAULT_MIN_QUALITY == module_default == inspect.signature(Analyzer).parameters["min_quality"].default
