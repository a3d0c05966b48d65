"""Charts drawn with matplotlib (Agg: no display needed). Each chart's data is
also written as CSV by its caller, for users who plot themselves. Every PNG is
written whole to a side file and renamed over its path, so a killed run leaves
the old chart or the new one."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path) -> None:
    """figure -> PNG at `path`, atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        figure.savefig(partial, dpi=100, format="png")
        os.replace(partial, path)
    finally:
        plt.close(figure)
        partial.unlink(missing_ok=True)


def history_plot(history: dict[str, list[float]], path) -> None:
    """Loss and accuracy per epoch, training and validation, side by side."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if key in history:
                axis.plot(np.arange(1, len(history[key]) + 1), history[key], label=label)
        axis.set(title=metric, xlabel="epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    _save(figure, path)


def confusion_plot(matrix: np.ndarray, classes: list[str], title: str, path) -> None:
    """A confusion matrix: counts, shaded by the share of each true class."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.75 * len(classes)
    figure, axis = plt.subplots(figsize=(size + 1.5, size), layout="constrained")
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            axis.text(j, i, str(int(matrix[i, j])), ha="center", va="center",
                      color="white" if shares[i, j] > 0.6 else "black", fontsize=9)
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set(xlabel="predicted", ylabel="true", title=title)
    figure.colorbar(image, ax=axis, label="share of the true class")
    _save(figure, path)


def reliability_plot(bins: list[dict], title: str, path) -> None:
    """A reliability diagram: per bin of the top probability (`bins`: dicts of low,
    high, n, confidence, accuracy as fercli.calibration.reliability_bins gives),
    the accuracy of its faces as a bar against the diagonal (perfect calibration),
    with the faces' mean confidence marked; below, how many faces each bin holds."""
    plt = _pyplot()
    figure, (axis, counts) = plt.subplots(2, 1, figsize=(6, 6.5), sharex=True, layout="constrained",
                                          gridspec_kw={"height_ratios": [3, 1]})
    filled = [b for b in bins if b["n"]]
    low = np.array([b["low"] for b in filled])
    width = np.array([b["high"] - b["low"] for b in filled])
    accuracy = np.array([b["accuracy"] for b in filled])
    confidence = np.array([b["confidence"] for b in filled])
    axis.bar(low, accuracy, width=width, align="edge", color="tab:blue", edgecolor="white", label="accuracy")
    axis.bar(low, confidence - accuracy, bottom=accuracy, width=width, align="edge", color="tab:red", alpha=0.3,
             edgecolor="tab:red", hatch="//", label="gap to the mean confidence")
    axis.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=1, zorder=3, label="perfect calibration")
    axis.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left", fontsize=8)
    n = np.array([b["n"] for b in bins])
    bars = counts.bar([b["low"] for b in bins], n, width=[b["high"] - b["low"] for b in bins], align="edge",
                      color="tab:grey", edgecolor="white")
    counts.bar_label(bars, labels=[str(v) if v else "" for v in n], fontsize=7, padding=1)
    counts.set(xlabel="confidence (top probability)", ylabel="faces", ylim=(0, max(int(n.max()) if len(n) else 0, 1) * 1.25))
    counts.grid(alpha=0.3, axis="y")
    _save(figure, path)


def timeline_plot(tracks: dict, classes: list[str], colours: dict[str, str], path, max_tracks: int = 6) -> None:
    """Per track (at most `max_tracks` panels), each class's probability against time in seconds.
    `tracks`: {track id: [(time_s, [probability per class]), ...]}."""
    plt = _pyplot()
    shown = sorted(tracks.items())[:max_tracks]
    figure, axes = plt.subplots(max(len(shown), 1), 1, figsize=(9, 2.6 * max(len(shown), 1)),
                                layout="constrained", squeeze=False)
    if not shown:
        axes[0, 0].set(title="no faces found", xlabel="time (s)")
    for axis, (track, points) in zip(axes[:, 0], shown):
        times = np.array([t for t, _ in points])
        values = np.array([p for _, p in points])
        for k, name in enumerate(classes):
            axis.plot(times, values[:, k], label=name, color=colours.get(name))
        axis.set(title=f"track {track}", xlabel="time (s)", ylabel="probability", ylim=(0, 1))
        axis.grid(alpha=0.3)
        axis.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    _save(figure, path)
