"""Charts drawn with matplotlib (Agg: no display needed). Each chart's data is
also written as CSV by its caller, for users who plot themselves."""
from __future__ import annotations

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    figure.savefig(path, dpi=100)
    plt.close(figure)


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
    figure.savefig(path, dpi=100)
    plt.close(figure)


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
    figure.savefig(path, dpi=100)
    plt.close(figure)
