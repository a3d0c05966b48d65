"""The lean runtime: emotion models exported for ONNX Runtime (the runtime the
face detector already uses) run without TensorFlow, for predict, video, serve
and eval.

A `.lite` model file is a zip archive of
- `float32.onnx`: the network, its initializers the Keras model's weights as
  they are (float16 where the model stores float16 weights), so that the file
  is the model's one copy of its weights (`onnx_network`); ONNX Runtime folds
  the batch norms when a session starts,
- `int8.onnx`: the same statically quantized (QDQ: int8 weights per channel,
  uint8 activations with ranges measured on training images); the convolutions
  on the image itself stay float32, where int8 costs a point of accuracy and
  saves little, and so do the steps before them
  (export.float_until_first_convolutions). 1.6-1.9x float32's crops/s on an
  AVX2 CPU, within 0.3 point on FER-2013 PublicTest
  (benchmarks/bench_models.py). Left out by
  `fercli export --no-int8` (a smaller file),
- `keras.json`: the Keras architecture, from which modelfile.load_keras_model
  rebuilds the Keras model with the weights of `float32.onnx` (training from
  a shipped model, explaining, exporting again),
- `fercli.json`: the model's metadata, plus what was exported.

`fercli export` (fercli/export.py) writes one from a .keras model (that needs
TensorFlow, `pip install "fercli[train]"`); the shipped models ship as .lite
files only.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from fercli.errors import UserError
from fercli.metadata import METADATA_MEMBER, check_metadata
from fercli.resources import onnx_session

LITE_SUFFIX = ".lite"
LITE_PRECISIONS = ("int8", "float32")   # the first present is the default
BATCH_SIZE = 64
KERAS_MEMBER = "keras.json"             # the Keras architecture (modelfile.load_keras_model rebuilds the model)


def weight_name(index: int, variable) -> str:
    """The name in float32.onnx of a Keras variable, `index` its place in
    `model.trainable_variables + model.non_trainable_variables`."""
    return f"{index:03d}:{variable.path}"


def read_lite_metadata(path: str | os.PathLike) -> dict:
    """The fercli metadata of a .lite file, checked as modelfile.read_metadata checks a .keras file's."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            metadata = json.loads(archive.read(METADATA_MEMBER))
            metadata["precisions"] = [p for p in LITE_PRECISIONS if f"{p}.onnx" in names]
    except (zipfile.BadZipFile, OSError, ValueError, KeyError):
        raise UserError(f"{path} is not a valid fercli .lite model file (corrupt, or not made by `fercli export`).") from None
    if not metadata["precisions"]:
        if any(name.endswith(".tflite") for name in names):
            raise UserError(f"{path} was made by an older fercli for LiteRT; export it again from its .keras file "
                            "(`fercli export MODEL.keras`).")
        raise UserError(f"{path} holds no network (float32.onnx or int8.onnx).")
    return check_metadata(metadata, path)


def carries_keras_model(path: str | os.PathLike) -> bool:
    """Whether a .lite file holds its Keras architecture (modelfile.load_keras_model rebuilds the model from it)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return KERAS_MEMBER in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def lite_precision(requested: str | None, available: list[str], path) -> str:
    """`requested`, else $FERCLI_PRECISION, else int8 where the file has it."""
    requested = requested or os.environ.get("FERCLI_PRECISION") or None
    if requested is None:
        return available[0]
    if requested == "bfloat16":
        requested = "float32"   # bfloat16 is the Keras path's; the lean runtime's exact arithmetic is float32
    if requested not in available:
        raise UserError(f"precision {requested!r} is not in {path} (it has {', '.join(available)}).")
    return requested


class LiteModel:
    """A .lite model on ONNX Runtime: the same interface as inference.EmotionModel
    (classes, input_size, metadata, name, path, precision, predict). `threads`:
    ONNX Runtime's threads (default: resources.stage_threads(), for a network
    that runs beside the other stages of fercli.run; eval gives all CPUs)."""

    def __init__(self, path: str | os.PathLike, precision: str | None = None, threads: int | None = None):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UserError("the lean runtime needs ONNX Runtime: pip install onnxruntime (a dependency of fercli).") from None
        self.path = Path(path)
        self.metadata = read_lite_metadata(self.path)
        self.classes: list[str] = list(self.metadata["classes"])
        self.input_size: int = int(self.metadata["input_size"])
        self.precision = lite_precision(precision, self.metadata["precisions"], self.path)
        with zipfile.ZipFile(self.path) as archive:
            network = archive.read(f"{self.precision}.onnx")
        try:
            self._session = onnx_session(network, threads)
        except Exception as exc:  # ONNX Runtime raises its own types for a damaged network
            raise UserError(f"{self.path} could not be loaded ({str(exc).splitlines()[0][:200]}).") from None
        self._input = self._session.get_inputs()[0].name

    @property
    def name(self) -> str:
        return self.path.name[:-len(LITE_SUFFIX)] if self.path.name.endswith(LITE_SUFFIX) else self.path.stem

    def predict(self, faces: np.ndarray, batch_size: int = BATCH_SIZE, calibrated: bool = True) -> np.ndarray:
        """uint8 (N, S, S) prepared crops -> float32 (N, classes) probabilities,
        calibrated by the file's calibration unless `calibrated` is False."""
        from fercli.calibration import calibrate

        out = [self._session.run(None, {self._input: faces[start:start + batch_size].astype(np.float32)[..., None]})[0]
               for start in range(0, len(faces), batch_size)]
        raw = np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)
        return calibrate(raw, self.metadata.get("calibration")) if calibrated else raw


def measure_crops_per_s(model, batch: int = 64, seconds: float = 1.0) -> float:
    """Classifier throughput on random crops (after one warm-up call), for a
    LiteModel or a Keras EmotionModel alike."""
    import time

    crops = np.random.default_rng(0).integers(0, 256, (batch, model.input_size, model.input_size), dtype=np.uint8)
    model.predict(crops)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.predict(crops)
        done += batch
    return done / (time.perf_counter() - start)
