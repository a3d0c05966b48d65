"""`fercli eval`: accuracy, per-class precision/recall/F1, confusion matrix,
calibration (fercli.calibration), and optionally every image's probabilities."""
from __future__ import annotations

import json
import os
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from fercli.data import Dataset, read_dataset
from fercli.errors import UserError

if TYPE_CHECKING:
    from fercli.inference import EmotionModel
    from fercli.lite import LiteModel

CSV_SPLIT_NAMES = {"privatetest": "test", "publictest": "val", "training": "train",
                   "test": "test", "val": "val", "train": "train"}


def pick_split(splits: dict[str, Dataset], split: str | None) -> Dataset:
    """The split to evaluate: the one asked for, else test, else val, else the whole tree."""
    if split:
        key = CSV_SPLIT_NAMES.get(split.lower(), split.lower())
        if key not in splits:
            raise UserError(f"the data has no {split} split (it has: {', '.join(sorted(splits))}).")
        return splits[key]
    for key in ("test", "val", "all"):
        if key in splits:
            return splits[key]
    raise UserError("the data has only a train split; pass --split train to evaluate on it.")


def scores(labels: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, confusion matrix and per-class precision/recall/F1/support."""
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {}
    for i, name in enumerate(classes):
        tp = int(confusion[i, i])
        support, predicted_n = int(confusion[i].sum()), int(confusion[:, i].sum())
        precision = tp / predicted_n if predicted_n else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    n = int(len(labels))
    return {"accuracy": float(np.trace(confusion) / n) if n else 0.0, "n": n, "classes": list(classes),
            "per_class": per_class, "confusion": confusion.tolist()}


# Decimals of the probabilities everything is computed from (and --predictions writes):
# the file then holds exactly the numbers eval's figures come from.
PROBABILITY_DECIMALS = 6
RELIABILITY_COLUMNS = ("low", "high", "n", "confidence", "accuracy")


def evaluate(data_path: str, model_name: str | None, split: str | None = None, warn=None,
             precision: str | None = None, predictions: str | os.PathLike | None = None) -> tuple[dict, "LiteModel | EmotionModel"]:
    """Scores of a model (a shipped name runs on the lean runtime) on labelled data:
    accuracy, per-class table, confusion matrix and calibration figures. With
    `predictions`, every image's probabilities are also written there as CSV
    (`write_predictions`)."""
    from fercli.calibration import calibration_scores
    from fercli.inference import load_model

    if predictions is not None:
        check_predictions_path(Path(predictions), [data_path])
    from fercli.resources import cpu_threads

    model = load_model(model_name, precision, threads=cpu_threads())  # the classifier alone: every CPU; fail fast, before reading data
    data = pick_split(read_dataset(data_path, model.input_size, warn=warn), split)
    data = data.remap(model.classes)
    if predictions is not None:
        check_predictions_path(Path(predictions), [data_path, model.path, *data.sources])
    probabilities = np.round(np.asarray(model.predict(data.images), np.float64), PROBABILITY_DECIMALS)
    result = scores(data.labels, probabilities.argmax(axis=1), model.classes)
    result.update(model=str(model.path), data=data.source, skipped=len(data.skipped),
                  calibration=calibration_scores(probabilities, data.labels))
    if predictions is not None:
        write_predictions(Path(predictions), data.sources, data.labels, probabilities, model.classes)
    return result, model


def check_predictions_path(path: Path, inputs: list) -> None:
    """Refuse a --predictions file that is a folder or one of the inputs (it would be overwritten)."""
    if path.is_dir():
        raise UserError(f"--predictions {path} is a folder; give a file name such as {path / 'predictions.csv'}.")
    if not path.exists():  # a new file cannot be an input
        return
    target = os.stat(path)
    for item in inputs:
        try:
            found = os.stat(item)
        except (OSError, ValueError):  # e.g. a fer2013.csv row, "<csv>:<line>": its file is among the inputs
            continue
        if (found.st_dev, found.st_ino) == (target.st_dev, target.st_ino):
            raise UserError(f"--predictions {path} is one of the inputs ({item}); give another file name.")


def write_predictions(path: Path, sources: list[str], labels: np.ndarray, probabilities: np.ndarray,
                      classes: list[str]) -> None:
    """One row per image: source,label,predicted,confidence,p_<class>... (the model's
    class order), written whole to a side file and renamed over `path`."""
    from fercli.sinks import write_csv_atomically

    if len(sources) != len(labels):  # a Dataset built without sources
        sources = [""] * len(labels)
    number = f"{{:.{PROBABILITY_DECIMALS}f}}".format
    rows = [["source", "label", "predicted", "confidence", *(f"p_{c}" for c in classes)]]
    for source, label, row in zip(sources, labels, probabilities):
        top = int(row.argmax())
        rows.append([source, classes[label], classes[top], number(row[top]), *map(number, row)])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv_atomically(path, rows)


def write_reports(result: dict, out_dir: Path, stem: str) -> list[Path]:
    """Confusion matrix and reliability diagram, each as CSV and (with matplotlib)
    PNG, under out_dir; returns the files written."""
    from fercli.charts import confusion_plot, reliability_plot
    from fercli.sinks import write_csv_atomically

    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out_dir / f"{stem}.confusion.csv", out_dir / f"{stem}.confusion.png"
    write_csv_atomically(csv_path, [["true \\ predicted", *result["classes"]]]
                         + [[name, *row] for name, row in zip(result["classes"], result["confusion"])])
    written = [csv_path]
    if confusion_plot(np.array(result["confusion"]), result["classes"], f"accuracy {result['accuracy']:.2%} (n={result['n']})", png_path):
        written.append(png_path)
    calibration = result.get("calibration")
    if calibration:
        bins = calibration["reliability"]
        bins_csv, bins_png = out_dir / f"{stem}.reliability.csv", out_dir / f"{stem}.reliability.png"
        write_csv_atomically(bins_csv, [list(RELIABILITY_COLUMNS)]
                             + [["" if b[k] is None else b[k] for k in RELIABILITY_COLUMNS] for b in bins])
        written.append(bins_csv)
        if reliability_plot(bins, f"expected calibration error {calibration['ece']:.2%} (n={result['n']})", bins_png):
            written.append(bins_png)
    return written


def write_json(result: dict, path: Path) -> None:
    from fercli.sinks import write_text_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(result, indent=2))
