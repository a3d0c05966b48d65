"""`fercli predict`: images, folders and globs through the shared pipeline,
annotated copies and one CSV (+ optional JSONL) of records."""
from __future__ import annotations

import glob
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from fercli.annotate import draw_faces
from fercli.data import IMAGE_SUFFIXES, read_image_file
from fercli.errors import UserError
from fercli.explain import explain_faces, explanation_paths
from fercli.sinks import RecordSink

DEFAULT_INPUT = Path("data") / "test"


@dataclass
class InputImage:
    path: Path
    relative: Path   # where its annotated copy goes under the output folder


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


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def collect_inputs(path: str | None, recursive: bool, output: Path) -> tuple[list[InputImage], int]:
    """(images to process, number of non-image files skipped). Files under the
    output folder are never inputs, so earlier results are not picked up."""
    if path is None:
        if not DEFAULT_INPUT.is_dir():
            raise UserError(f"no -p given and the default input folder {DEFAULT_INPUT}/ does not exist here; "
                            "pass -p with an image, a folder or a glob.")
        path = str(DEFAULT_INPUT)
    root = Path(path)
    if root.is_file():
        return [InputImage(root, Path(root.name))], 0
    if root.is_dir():
        if _inside(root, output) or root.resolve() == output.resolve():
            raise UserError(f"the output folder {output} contains the input {root}; choose another -o.")
        candidates = sorted(root.rglob("*") if recursive else root.iterdir())
        base = root
    elif glob.has_magic(path):
        candidates = sorted(Path(p) for p in glob.glob(path, recursive=recursive))
        base = Path(os.path.commonpath([str(p.parent) for p in candidates])) if candidates else Path(".")
    else:
        raise UserError(f"{path} does not exist.")
    inputs, not_images = [], 0
    for candidate in candidates:
        if not (candidate.is_file() or candidate.is_symlink()) or _inside(candidate, output):
            continue
        if candidate.suffix.lower() in IMAGE_SUFFIXES:
            inputs.append(InputImage(candidate, candidate.relative_to(base)))
        else:
            not_images += 1
    if not inputs:
        where = "matching " + path if glob.has_magic(path) else "in " + path
        raise UserError(f"no images found {where} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}"
                        + ("" if recursive else "; -r also searches subfolders") + ").")
    return inputs, not_images


def write_image(path: Path, image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(path.suffix, image)
    if not ok:
        raise ValueError(f"cannot encode {path.suffix} output")
    encoded.tofile(str(path))


def annotated_path(output: Path, item: InputImage) -> Path:
    return output / item.relative  # inputs have an image suffix OpenCV also writes


def run_predict(inputs: list[InputImage], analyzer, output: Path, save_images: bool = True,
                jsonl: bool = False, resume: bool = False, not_images: int = 0, progress: bool = True,
                on_error=None, explainer=None, explain_class: str | None = None, draw_landmarks: bool = False) -> Summary:
    from tqdm import tqdm

    summary = Summary(not_images=not_images)
    start = time.perf_counter()
    input_paths = {item.path.resolve() for item in inputs}
    with RecordSink(output / "predictions.csv", analyzer.classes, resume=resume,
                    jsonl_path=output / "predictions.jsonl" if jsonl else None) as sink:
        for item in tqdm(inputs, desc="images", unit="img", disable=not progress, file=sys.stderr):
            source = str(item.path)
            if source in sink.done:
                summary.already_done += 1
                continue
            try:
                image = read_image_file(item.path)
                faces = analyzer.analyze(image)
                target = annotated_path(output, item)
                if save_images:
                    if target.resolve() in input_paths:
                        raise ValueError(f"annotated copy would overwrite input {target}")
                    write_image(target, draw_faces(image, faces, draw_landmarks))
                if explainer is not None:
                    overlays = explain_faces(analyzer, explainer, image, faces, explain_class)
                    for path, picture in zip(explanation_paths(target, len(overlays)), overlays):
                        write_image(path, picture)
                    summary.explained += len(overlays)
            except (ValueError, cv2.error, MemoryError, OSError) as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                summary.failed.append((source, reason))
                sink.write(source, [], status=f"error: {reason}")
                if on_error:
                    on_error(source, reason)
                continue
            sink.write(source, faces)
            summary.images += 1
            summary.faces += len(faces)
            summary.emotions.update(face.emotion for face in faces)
    summary.wall_s = time.perf_counter() - start
    return summary
