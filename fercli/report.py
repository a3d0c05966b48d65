"""What fercli prints: the summaries, tables and listings of the commands
(rich), kept apart from option parsing in cli.py."""
from __future__ import annotations

from pathlib import Path


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def show_predict_summary(summary, output: Path) -> None:
    from rich.table import Table

    table = Table(title="fercli predict", show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right")
    table.add_row("images processed", str(summary.images))
    table.add_row("faces", str(summary.faces))
    for emotion, count in summary.emotions.most_common():
        table.add_row(f"  {emotion}", str(count))
    if summary.already_done:
        table.add_row("already in the CSV (resume)", str(summary.already_done))
    table.add_row("skipped (not images)", str(summary.not_images))
    table.add_row("failed", str(len(summary.failed)))
    if summary.explained:
        table.add_row("heat maps written", str(summary.explained))
    rate = summary.images / summary.wall_s if summary.wall_s else 0.0
    table.add_row("wall time", f"{summary.wall_s:.1f} s ({rate:.1f} images/s)")
    table.add_row("results", str(output / "predictions.csv"))
    console(stderr=True).print(table)


def show_video_summary(done, output: Path) -> None:
    from rich.table import Table

    from fercli.charts import charts_available

    out = console(stderr=True)
    for report, summary in done:
        table = Table(title=f"{report.source}: {report.frames} frames, {report.analysed} analysed, "
                            f"{report.frames / report.wall_s if report.wall_s else 0:.1f} frames/s"
                            + (f", {len(report.bad_frames)} unreadable" if report.bad_frames else ""))
        table.add_column("track")
        table.add_column("seconds", justify="right")
        table.add_column("time in each emotion")
        for track, info in summary["tracks"].items():
            shares = ", ".join(f"{c} {s:.0%}" for c, s in sorted(info["share"].items(), key=lambda kv: -kv[1]))
            table.add_row(track, f"{info['seconds']}", shares)
        out.print(table)
    timeline = "*.timeline.png and .csv" if charts_available() else "*.timeline.csv"
    out.print(f"results in {output}/ (predictions.csv, {timeline}, *.summary.json)")


def show_scores(result: dict, model_name: str) -> None:
    from rich.table import Table

    out = console()
    skipped = f", {result['skipped']} unreadable image(s) skipped" if result.get("skipped") else ""
    table = Table(title=f"{model_name} on {result['data']}: accuracy {result['accuracy']:.2%} (n={result['n']}{skipped})")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, s in result["per_class"].items():
        table.add_row(name, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", str(s["support"]))
    out.print(table)
    matrix = Table(title="confusion matrix (rows: true, columns: predicted)")
    matrix.add_column("")
    for name in result["classes"]:
        matrix.add_column(name[:8], justify="right")
    for name, row in zip(result["classes"], result["confusion"]):
        matrix.add_row(name, *map(str, row))
    out.print(matrix)
    calibration = result.get("calibration")
    if calibration:
        figures = Table(title="calibration: can the confidence be trusted?", show_header=False)
        figures.add_column(justify="left")
        figures.add_column(justify="right")
        figures.add_column(justify="left", style="dim")
        figures.add_row("expected calibration error", f"{calibration['ece']:.2%}", "confidence vs accuracy; 0 is ideal")
        figures.add_row("mean confidence", f"{calibration['mean_confidence']:.1%}", f"accuracy {result['accuracy']:.1%}")
        figures.add_row("negative log-likelihood", f"{calibration['nll']:.3f}", "lower is better")
        figures.add_row("Brier score", f"{calibration['brier']:.3f}", "lower is better")
        for share, accuracy in calibration["selective_accuracy"].items():
            if share != "100%":
                figures.add_row(f"most confident {share}", f"{accuracy:.1%}", "their accuracy")
        out.print(figures)


def show_models(measure: bool = True) -> None:
    """The shipped models: accuracy recorded by `fercli eval`, crops/s measured now (batch 64)."""
    from rich.table import Table

    from fercli.inference import load_model
    from fercli.lite import measure_crops_per_s
    from fercli.modelfile import read_metadata, recorded_accuracy, shipped_model_names

    table = Table(title="shipped models (use with --model NAME)",
                  caption="accuracy: measured with `fercli eval` on the data named, in the precision this machine runs; "
                          "ECE: expected calibration error of the confidence where the calibration was fitted")
    for column in ("name", "precision", "accuracy", "on data", "ECE", "crops/s", "params", "classes"):
        table.add_column(column, justify="right" if column in ("accuracy", "ECE", "crops/s", "params") else "left",
                         no_wrap=column in ("name", "precision"))
    class_sets: dict[tuple, list[str]] = {}  # class lists below the table: too wide for a column
    for name in shipped_model_names():
        model = load_model(name)
        meta = read_metadata(model.path)
        speed = "" if not measure else f"{measure_crops_per_s(model):,.0f}"
        accuracy, data = recorded_accuracy(meta, model.precision)
        calibration = meta.get("calibration")
        calibrated = f"{calibration['ece_after']:.1%}" if calibration else "uncalibrated"
        table.add_row(name, model.precision, f"{accuracy:.2%}" if accuracy is not None else "-",
                      "/".join(Path(data).parts[-2:]), calibrated, speed, f"{meta.get('parameters', 0) / 1e6:.2f}M",
                      str(len(meta["classes"])))
        class_sets.setdefault(tuple(meta["classes"]), []).append(name)
    out = console()
    out.print(table)
    for classes, names in class_sets.items():
        out.print(f"classes of {', '.join(names)}: {', '.join(classes)}", soft_wrap=True)


def show_detectors() -> None:
    """The shipped face detectors: file, size, licence, source."""
    from fercli.detect import DEFAULT_DETECTOR, DETECTORS

    out = console()
    for info in DETECTORS.values():
        out.print(f"[bold]{info.name}[/bold]" + (" (default)" if info.name == DEFAULT_DETECTOR else ""))
        out.print(f"  file      {info.file}, {info.size_bytes() / 1e6:.1f} MB, shipped in fercli/cascades")
        out.print(f"  licence   {info.licence}")
        out.print(f"  source    {info.source}")
        out.print(f"  landmarks {'5 points (eyes, nose, mouth corners)' if info.landmarks else 'none'}")
        out.print(f"  finds     {info.summary}")
