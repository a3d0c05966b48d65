"""`fercli predict`: images, folders, globs and path lists through the one
loop (fercli.run): annotated copies, heat maps on request, and one CSV
(+ optional JSONL) of records."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fercli.run import run
from fercli.sinks import AnnotatedImageSink, ExplanationSink, RecordSink, write_parquet
from fercli.sources import InputFile, image_items, real_path


@dataclass
class Summary:
    images: int = 0
    faces: int = 0
    emotions: Counter = field(default_factory=Counter)
    not_images: int = 0
    already_done: int = 0
    explained: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    wall_s: float = 0.0


def run_predict(files: list[InputFile], analyzer, output: Path, save_images: bool = True,
                jsonl: bool = False, resume: bool = False, not_images: int = 0, progress: bool = True,
                on_error=None, explainer=None, explain_class: str | None = None, draw_landmarks: bool = False,
                parquet: bool = False) -> Summary:
    """`analyzer`: an Analyzer (this process runs the loop) or a
    fercli.cluster.RayEngine (Ray actors run it; this process writes the records)."""
    with RecordSink(output / "predictions.csv", analyzer.classes, resume=resume,
                    jsonl_path=output / "predictions.jsonl" if jsonl else None) as records:
        todo = [f for f in files if real_path(f.path) not in records.done]
        sinks = []
        if hasattr(analyzer, "analyze_images"):
            stats = analyzer.analyze_images(todo, records, output if save_images else None, draw_landmarks,
                                            on_error=on_error, progress=progress)
        else:
            if save_images:
                sinks.append(AnnotatedImageSink(output, {real_path(f.path) for f in files}, draw_landmarks))
            if explainer is not None:
                sinks.append(ExplanationSink(analyzer, explainer, output, explain_class))
            stats = run(image_items(todo), analyzer, records, sinks, on_error=on_error, progress=progress, total=len(todo))
    if parquet:
        write_parquet(output / "predictions.csv", output / "predictions.parquet")
    return Summary(images=stats.items - len(stats.failed), faces=stats.faces, emotions=stats.emotions,
                   not_images=not_images, already_done=len(files) - len(todo),
                   explained=sum(getattr(s, "written", 0) for s in sinks), failed=stats.failed, wall_s=stats.wall_s)
