"""Small PNG charts drawn with OpenCV (no plotting library needed)."""
from __future__ import annotations

import cv2
import numpy as np

SERIES_COLOURS = [(200, 90, 30), (30, 130, 230), (60, 170, 60), (180, 60, 180)]


def line_panel(title: str, series: dict[str, list[float]], width=600, height=340, x_label: str = "epoch",
               x_range: tuple[float, float] | None = None, colours: dict | None = None,
               y_range: tuple[float, float] | None = None) -> np.ndarray:
    """One panel: several named series against an evenly spaced x (epochs, or time)."""
    canvas = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 60, 120, 35, 40  # legend in the right margin, clear of the curves
    values = [v for vs in series.values() for v in vs if np.isfinite(v)]
    lo, hi = y_range or ((min(values), max(values)) if values else (0.0, 1.0))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    n = max((len(v) for v in series.values()), default=1)
    to_x = lambda i: int(left + (width - left - right) * (i / max(n - 1, 1)))
    to_y = lambda v: int(top + (height - top - bottom) * (1 - (v - lo) / (hi - lo)))
    cv2.rectangle(canvas, (left, top), (width - right, height - bottom), (180, 180, 180), 1)
    for frac in np.linspace(0, 1, 5):
        value = lo + frac * (hi - lo)
        cv2.putText(canvas, f"{value:.3g}", (4, to_y(value) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (80, 80, 80), 1, cv2.LINE_AA)
    cv2.putText(canvas, title, (left, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    first, last = x_range or (1, n)
    cv2.putText(canvas, f"{x_label} ({first:g}..{last:g})", (width // 2 - 60, height - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (80, 80, 80), 1, cv2.LINE_AA)
    for k, (name, vs) in enumerate(series.items()):
        colour = (colours or {}).get(name, SERIES_COLOURS[k % len(SERIES_COLOURS)])
        points = np.array([(to_x(i), to_y(v)) for i, v in enumerate(vs) if np.isfinite(v)], np.int32)
        if len(points):
            cv2.polylines(canvas, [points], False, colour, 2, cv2.LINE_AA)
        cv2.putText(canvas, name, (width - right + 8, top + 12 + 18 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return canvas


def history_plot(history: dict[str, list[float]], path) -> None:
    """Loss and accuracy curves (train and val) side by side."""
    loss = line_panel("loss", {k: history[k] for k in ("loss", "val_loss") if k in history})
    accuracy = line_panel("accuracy", {k: history[k] for k in ("accuracy", "val_accuracy") if k in history})
    cv2.imwrite(str(path), np.concatenate([loss, accuracy], axis=1))


def matrix_image(matrix: np.ndarray, classes: list[str], title: str, path) -> None:
    """A confusion matrix as a heat map with counts (rows: true, columns: predicted)."""
    cell, margin = 64, 110
    k = len(classes)
    canvas = np.full((margin + cell * k + 20, margin + cell * k + 20, 3), 255, np.uint8)
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    for i in range(k):
        for j in range(k):
            shade = int(255 - 200 * rows[i, j])
            x0, y0 = margin + j * cell, margin + i * cell
            cv2.rectangle(canvas, (x0, y0), (x0 + cell, y0 + cell), (255, shade, shade), -1)
            cv2.rectangle(canvas, (x0, y0), (x0 + cell, y0 + cell), (200, 200, 200), 1)
            colour = (255, 255, 255) if rows[i, j] > 0.6 else (0, 0, 0)
            cv2.putText(canvas, str(int(matrix[i, j])), (x0 + 8, y0 + 38), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
        cv2.putText(canvas, classes[i][:10], (5, margin + i * cell + 38), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(canvas, classes[i][:8], (margin + i * cell + 4, margin - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, title + "  (rows: true, columns: predicted)", (5, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), canvas)
