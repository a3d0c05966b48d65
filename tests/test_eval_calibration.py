"""`fercli eval`'s calibration figures, reliability diagram and --predictions file,
and fercli.calibration's metrics on cases worked out by hand."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from fercli.calibration import (brier_score, calibration_scores, expected_calibration_error, negative_log_likelihood,
                                reliability_bins, selective_accuracy)
from fercli.data import Dataset, read_class_folders, read_fer2013_csv
from tests.conftest import requires_fer2013, run, synthetic_faces


def read_rows(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, [dict(zip(header, row)) for row in reader]


def straightforward_ece(confidence: list[float], correct: list[bool], bins: int = 15) -> float:
    """Expected calibration error written out plainly: bin k holds k/bins <= c < (k+1)/bins
    (the last bin also c = 1); sum over bins of |accuracy - mean confidence| x share of faces."""
    total = 0.0
    for k in range(bins):
        low, high = k / bins, (k + 1) / bins
        inside = [i for i, c in enumerate(confidence) if low <= c < high or (k == bins - 1 and c == 1.0)]
        if inside:
            accuracy = sum(correct[i] for i in inside) / len(inside)
            mean_confidence = sum(confidence[i] for i in inside) / len(inside)
            total += len(inside) / len(confidence) * abs(accuracy - mean_confidence)
    return total


# --- eval through the CLI, on the tiny model and the small FER-2013 tree of conftest ---

@pytest.fixture(scope="module")
def evaluated(tiny_model, fer_sample, tmp_path_factory):
    """One `fercli eval --predictions --json` run: (result, folder, predictions CSV, JSON report)."""
    folder = tmp_path_factory.mktemp("eval_calibration")
    result = run("eval", fer_sample / "val", "--model", tiny_model, "--json", folder / "r.json",
                 "--predictions", folder / "p.csv", "-o", folder / "out")
    assert result.exit_code == 0, result.output + result.stderr
    return result, folder, folder / "p.csv", json.loads((folder / "r.json").read_text())


@requires_fer2013
def test_predictions_file_reproduces_accuracy_and_ece(evaluated, fer_sample):
    result, _, predictions, report = evaluated
    header, rows = read_rows(predictions)
    classes = report["classes"]
    assert header == ["source", "label", "predicted", "confidence", *(f"p_{c}" for c in classes)]
    assert len(rows) == report["n"] == 105
    # every source is a file of the tree, in its class folder, each once
    sources = [Path(r["source"]) for r in rows]
    assert len(set(sources)) == 105 and all(s.is_file() and s.parent.parent == fer_sample / "val" for s in sources)
    assert all(s.parent.name == r["label"] for s, r in zip(sources, rows))
    probabilities = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])
    confidence = [float(r["confidence"]) for r in rows]
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    assert confidence == probabilities.max(axis=1).tolist()
    assert [r["predicted"] for r in rows] == [classes[i] for i in probabilities.argmax(axis=1)]
    correct = [r["label"] == r["predicted"] for r in rows]
    assert sum(correct) / len(rows) == pytest.approx(report["accuracy"], abs=1e-12)
    assert f"accuracy {report['accuracy']:.2%}" in result.output
    # the per-class supports match the labels in the file
    assert {c: sum(r["label"] == c for r in rows) for c in classes} == {c: s["support"] for c, s in report["per_class"].items()}
    figures = report["calibration"]
    assert straightforward_ece(confidence, correct) == pytest.approx(figures["ece"], abs=1e-4)
    assert np.mean(confidence) == pytest.approx(figures["mean_confidence"], abs=1e-6)
    labels = [classes.index(r["label"]) for r in rows]
    nll = -np.mean([math.log(max(p[y], 1e-12)) for p, y in zip(probabilities, labels)])
    assert nll == pytest.approx(figures["nll"], abs=1e-4)
    assert np.mean([sum((p[k] - (k == y)) ** 2 for k in range(len(classes))) for p, y in zip(probabilities, labels)]) \
        == pytest.approx(figures["brier"], abs=1e-4)
    # the most confident half, counted from the file
    ranked = sorted(zip(confidence, correct), key=lambda pair: -pair[0])
    half = round(0.5 * len(ranked))
    assert sum(c for _, c in ranked[:half]) / half == pytest.approx(figures["selective_accuracy"]["50%"], abs=1e-12)
    assert set(figures["selective_accuracy"]) == {"100%", "90%", "80%", "50%"}


@requires_fer2013
def test_eval_prints_the_calibration_figures(evaluated):
    result, _, _, report = evaluated
    figures = report["calibration"]
    assert f"{figures['ece']:.2%}" in result.output and "expected calibration error" in result.output
    assert f"{figures['nll']:.3f}" in result.output and f"{figures['brier']:.3f}" in result.output
    assert "most confident 90%" in result.output and f"{figures['selective_accuracy']['90%']:.1%}" in result.output
    assert "p.csv" in result.output


@requires_fer2013
def test_reliability_diagram_and_its_csv(evaluated):
    _, folder, _, report = evaluated
    png, table = folder / "out" / "eval_tiny.reliability.png", folder / "out" / "eval_tiny.reliability.csv"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    header, rows = read_rows(table)
    assert header == ["low", "high", "n", "confidence", "accuracy"]
    assert len(rows) == 15 and sum(int(r["n"]) for r in rows) == report["n"] == 105
    assert float(rows[0]["low"]) == 0 and float(rows[-1]["high"]) == pytest.approx(1)
    for r in rows:
        if int(r["n"]):
            assert float(r["low"]) <= float(r["confidence"]) <= float(r["high"]) and 0 <= float(r["accuracy"]) <= 1
        else:
            assert r["confidence"] == r["accuracy"] == ""
    assert not list((folder / "out").glob("*.partial")) and not list(folder.glob("*.partial"))


@requires_fer2013
def test_predictions_refuses_an_input_or_a_folder(tiny_model, fer_sample, tmp_path):
    image = sorted((fer_sample / "val" / "happy").iterdir())[0]
    before = image.read_bytes()
    for target, words in ((image, "is one of the inputs"), (tiny_model, "is one of the inputs"), (tmp_path, "is a folder")):
        result = run("eval", fer_sample / "val", "--model", tiny_model, "--predictions", target, "-o", tmp_path / "o")
        assert result.exit_code == 2, result.output + result.stderr
        assert words in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert image.read_bytes() == before and not (tmp_path / "o").exists()


@requires_fer2013
def test_predictions_of_a_fer2013_csv_name_its_rows(tiny_model, tmp_path):
    faces = synthetic_faces(6, seed=3)
    lines = ["emotion,pixels,Usage"] + [f"{i % 7},{' '.join(map(str, face.ravel()))},{usage}"
                                        for i, (face, usage) in enumerate(zip(faces, ["Training", "PublicTest"] * 3))]
    data = tmp_path / "fer2013.csv"
    data.write_text("\n".join(lines) + "\n")
    result = run("eval", data, "--model", tiny_model, "--split", "PublicTest", "--predictions", tmp_path / "p.csv",
                 "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output + result.stderr
    _, rows = read_rows(tmp_path / "p.csv")
    # PublicTest rows are the 2nd, 4th and 6th data rows: lines 3, 5, 7 of the file (the header is line 1)
    assert [r["source"] for r in rows] == [f"{data}:{line}" for line in (3, 5, 7)]
    assert [r["label"] for r in rows] == ["disgust", "happy", "surprise"]  # codes 1, 3, 5
    result = run("eval", data, "--model", tiny_model, "--predictions", data, "-o", tmp_path / "o")
    assert result.exit_code == 2 and "is one of the inputs" in result.stderr
    assert data.read_text() == "\n".join(lines) + "\n"


# --- per-image sources in Dataset ---

def test_dataset_sources_follow_subset_and_remap(tmp_path):
    from tests.conftest import write_image

    for name in ("sad", "happy"):
        for i in range(3):
            write_image(tmp_path / name / f"{i}.png", synthetic_faces(1, seed=i)[0])
    data = read_class_folders(tmp_path)
    assert data.classes == ["happy", "sad"]
    assert data.sources == [str(tmp_path / c / f"{i}.png") for c in ("happy", "sad") for i in range(3)]
    picked = data.subset(np.array([5, 0]))
    assert picked.sources == [str(tmp_path / "sad" / "2.png"), str(tmp_path / "happy" / "0.png")]
    assert data.subset(data.labels == 1).sources == data.sources[3:]
    remapped = data.remap(["sad", "happy"])
    assert remapped.sources == data.sources and remapped.labels.tolist() == [1, 1, 1, 0, 0, 0]
    plain = Dataset(synthetic_faces(4), np.arange(4) % 2, ["a", "b"])  # built without sources, as train.py does
    assert plain.sources == [] and plain.subset(np.array([1, 2])).sources == []


def test_fer2013_csv_sources_are_file_lines(tmp_path):
    path = tmp_path / "f.csv"
    pixels = " ".join(["7"] * 48 * 48)
    path.write_text(f"emotion,pixels,Usage\n0,{pixels},Training\n\n1,{pixels},PrivateTest\n2,{pixels},Training\n")
    splits = read_fer2013_csv(path)
    assert splits["train"].sources == [f"{path}:2", f"{path}:5"]
    assert splits["test"].sources == [f"{path}:4"]


# --- fercli.calibration's figures on hand-made cases ---

def test_perfectly_confident_and_right_is_perfectly_calibrated():
    labels = np.array([0, 2, 1, 2])
    probabilities = np.eye(3)[labels]
    figures = calibration_scores(probabilities, labels)
    assert figures["ece"] == 0 and figures["brier"] == 0 and figures["nll"] == pytest.approx(0, abs=1e-12)
    assert figures["mean_confidence"] == 1
    assert figures["selective_accuracy"] == {"100%": 1.0, "90%": 1.0, "80%": 1.0, "50%": 1.0}
    assert [b["n"] for b in figures["reliability"]] == [0] * 14 + [4]  # confidence 1.0 lies in the last bin
    json.dumps(figures)  # what --json writes


def test_perfectly_confident_and_wrong():
    labels = np.array([0, 1])
    probabilities = np.eye(2)[[1, 0]]
    assert expected_calibration_error(probabilities, labels) == 1.0
    assert brier_score(probabilities, labels) == 2.0  # (1 - 0)^2 + (0 - 1)^2 per face
    assert negative_log_likelihood(probabilities, labels) == pytest.approx(-math.log(1e-12))  # the log(0) floor


def test_a_two_bin_case_worked_by_hand():
    # three faces at confidence 0.9, all right (bin 13: 0.867-0.933), one at 0.35, wrong (bin 5: 0.333-0.4)
    probabilities = np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9], [0.35, 0.33, 0.32]])
    labels = np.array([0, 1, 2, 1])
    # ECE = 3/4 x |1 - 0.9| + 1/4 x |0 - 0.35| = 0.075 + 0.0875
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.1625)
    # Brier: each right face 0.1^2 + 2 x 0.05^2 = 0.015; the wrong one 0.35^2 + 0.67^2 + 0.32^2 = 0.6738
    assert brier_score(probabilities, labels) == pytest.approx((3 * 0.015 + 0.6738) / 4)
    assert negative_log_likelihood(probabilities, labels) == pytest.approx(-(3 * math.log(0.9) + math.log(0.33)) / 4)
    # most confident 100% and 90% (round(3.6) = 4 faces): 3 of 4 right; 80% (3 faces) and 50% (2): all right
    assert selective_accuracy(probabilities, labels) == {"100%": 0.75, "90%": 0.75, "80%": 1.0, "50%": 1.0}
    table = reliability_bins(probabilities, labels)
    assert len(table) == 15 and [k for k, b in enumerate(table) if b["n"]] == [5, 13]
    assert table[13]["n"] == 3 and table[13]["confidence"] == pytest.approx(0.9) and table[13]["accuracy"] == 1.0
    assert table[5]["n"] == 1 and table[5]["confidence"] == pytest.approx(0.35) and table[5]["accuracy"] == 0.0
    assert (table[5]["low"], table[5]["high"]) == pytest.approx((5 / 15, 6 / 15))
    assert table[0]["confidence"] is None and table[0]["accuracy"] is None
    assert calibration_scores(probabilities, labels)["mean_confidence"] == pytest.approx((3 * 0.9 + 0.35) / 4)


def test_underconfident_and_right():
    # every face right at confidence 0.6: the gap is 0.4 everywhere
    probabilities = np.tile([0.6, 0.4], (10, 1))
    labels = np.zeros(10, dtype=int)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.4)
    assert brier_score(probabilities, labels) == pytest.approx(2 * 0.4 ** 2)
    assert negative_log_likelihood(probabilities, labels) == pytest.approx(-math.log(0.6))


def test_predictions_of_the_shipped_model_without_data_sets(tmp_path):
    """On a clone without FER-2013: the shipped default (lean runtime) on a
    labelled folder made here; the file's rows give eval's accuracy and ECE."""
    import cv2

    from tests.conftest import FIXTURE_FACE, write_image
    from tests.scenes import FIXTURE_FACE_BOX

    x, y, side = FIXTURE_FACE_BOX
    face = cv2.imread(str(FIXTURE_FACE), cv2.IMREAD_GRAYSCALE)[y:y + side, x:x + side]
    rng = np.random.default_rng(3)
    for i in range(12):   # the smiling face, more or less spoilt, is happy; noise is labelled sad
        spoilt = np.clip(cv2.GaussianBlur(face, (0, 0), 0.5 + i / 4) + rng.normal(0, 2 * i, face.shape), 0, 255)
        write_image(tmp_path / "data" / "happy" / f"{i}.png", spoilt.astype(np.uint8))
        write_image(tmp_path / "data" / "sad" / f"{i}.png", synthetic_faces(1, 48, seed=i)[0])
    result = run("eval", tmp_path / "data", "--json", tmp_path / "r.json", "--predictions", tmp_path / "p.csv",
                 "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    header, rows = read_rows(tmp_path / "p.csv")
    assert header[:4] == ["source", "label", "predicted", "confidence"] and len(rows) == 24
    correct = [r["label"] == r["predicted"] for r in rows]
    assert sum(correct) / len(rows) == pytest.approx(report["accuracy"])
    assert sum(r["label"] == r["predicted"] == "happy" for r in rows) >= 10
    confidence = [float(r["confidence"]) for r in rows]
    assert straightforward_ece(confidence, correct) == pytest.approx(report["calibration"]["ece"], abs=1e-4)
    assert (tmp_path / "out" / "eval_default.reliability.png").stat().st_size > 1000
