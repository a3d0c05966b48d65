"""Charts drawn with matplotlib's object API (a Figure rendered by Agg, without
pyplot: no display, no GUI backend, a third of the import time). Each chart's data is
also written as CSV by its caller, for users who plot themselves. Every PNG is
written whole to a side file and renamed over its path, so a killed run leaves
the old chart or the new one. matplotlib is the extra fercli[plots]: without it
each draw function writes nothing and returns False, and the commands print
NO_CHARTS once."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

NO_CHARTS = 'note: charts need matplotlib (pip install "fercli[plots]"); wrote the CSV data only.'


def charts_available() -> bool:
    """Whether matplotlib is installed (found, not imported: that is left to the chart)."""
    import importlib.util

    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


def _drawn(draw):
    """`draw` returns True once its PNG is written; False, writing nothing, without matplotlib."""
    @functools.wraps(draw)
    def drawn(*args, **kwargs) -> bool:
        if not charts_available():
            return False
        draw(*args, **kwargs)
        return True

    return drawn


def load_in_background() -> None:
    """Import matplotlib on a thread of its own now, while other work runs,
    for a chart drawn at the end (video's timeline)."""
    import threading

    if charts_available():
        threading.Thread(target=_load, name="fercli-charts", daemon=True).start()


def _load():
    import matplotlib.backends.backend_agg  # noqa: F401  (what savefig renders PNG with)
    from matplotlib.figure import Figure

    return Figure


def _figure(layout: str | None = "constrained", **options):
    return _load()(layout=layout, **options)


def _save(figure, path) -> None:
    """figure -> PNG at `path`, atomically."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        figure.savefig(partial, dpi=100, format="png")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


@_drawn
def history_plot(history: dict[str, list[float]], path) -> None:
    """Loss and accuracy per epoch, training and validation, side by side."""
    figure = _figure(figsize=(11, 4))
    axes = figure.subplots(1, 2)
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if key in history:
                axis.plot(np.arange(1, len(history[key]) + 1), history[key], label=label)
        axis.set(title=metric, xlabel="epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    _save(figure, path)


@_drawn
def confusion_plot(matrix: np.ndarray, classes: list[str], title: str, path) -> None:
    """A confusion matrix: counts, shaded by the share of each true class."""
    matrix = np.asarray(matrix)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.75 * len(classes)
    figure = _figure(figsize=(size + 1.5, size))
    axis = figure.subplots()
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


@_drawn
def reliability_plot(bins: list[dict], title: str, path) -> None:
    """A reliability diagram: per bin of the top probability (`bins`: dicts of low,
    high, n, confidence, accuracy as fercli.calibration.reliability_bins gives),
    the accuracy of its faces as a bar against the diagonal (perfect calibration),
    with the faces' mean confidence marked; below, how many faces each bin holds."""
    figure = _figure(figsize=(6, 6.5))
    axis, counts = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
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


@_drawn
def timeline_plot(tracks: dict, classes: list[str], colours: dict[str, str], path, max_tracks: int = 6) -> None:
    """Per track (at most `max_tracks` panels), each class's probability against time in seconds.
    `tracks`: {track id: [(time_s, [probability per class]), ...]}."""
    shown = sorted(tracks.items())[:max_tracks]
    height = 2.6 * max(len(shown), 1)
    figure = _figure(None, figsize=(9, height))   # laid out by hand: half the time of the constrained layout
    axes = figure.subplots(max(len(shown), 1), 1, squeeze=False)
    figure.subplots_adjust(left=0.08, right=0.85, bottom=0.55 / height, top=1 - 0.35 / height, hspace=0.6 * 2.6 / height * len(shown))
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
