"""`fercli eval`: accuracy, per-class precision/recall/F1, confusion matrix."""
from __future__ import annotations

import csv
import json
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


def evaluate(data_path: str, model_name: str | None, split: str | None = None, warn=None,
             precision: str | None = None) -> tuple[dict, "LiteModel | EmotionModel"]:
    """Scores of a model (a shipped name runs on the lean runtime) on labelled data."""
    from fercli.modelfile import load_model

    model = load_model(model_name, precision)  # fail fast, before reading data
    data = pick_split(read_dataset(data_path, model.input_size, warn=warn), split)
    data = data.remap(model.classes)
    probabilities = model.predict(data.images)
    result = scores(data.labels, probabilities.argmax(axis=1), model.classes)
    result.update(model=str(model.path), data=data.source, skipped=len(data.skipped))
    return result, model


def write_reports(result: dict, out_dir: Path, stem: str) -> list[Path]:
    """Confusion matrix as CSV and PNG under out_dir."""
    from fercli.charts import confusion_plot

    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out_dir / f"{stem}.confusion.csv", out_dir / f"{stem}.confusion.png"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *result["classes"]])
        for name, row in zip(result["classes"], result["confusion"]):
            writer.writerow([name, *row])
    confusion_plot(np.array(result["confusion"]), result["classes"], f"accuracy {result['accuracy']:.2%} (n={result['n']})", png_path)
    return [csv_path, png_path]


def write_json(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
