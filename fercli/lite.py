"""The lean runtime: emotion models exported to LiteRT (TensorFlow Lite with
XNNPACK) run without TensorFlow, for predict, video, serve and eval.

A `.lite` model file is a zip archive of
- `float32.tflite`: the network with its batch norms folded (the Keras
  model's probabilities to 2e-6),
- `int8.tflite`: the same with int8 weights and dynamically quantized
  activations (2.2-3.5x the crops/s; FER-2013 PublicTest within 0.2 point,
  benchmarks/bench_models.py),
- `fercli.json`: the Keras file's metadata, plus what was exported.

`fercli export` writes one from any .keras model (that needs TensorFlow,
`pip install "fercli[train]"`); the shipped models ship as both.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from fercli.errors import UserError
from fercli.resources import cpu_threads
from fercli.tf_quiet import quietly

LITE_SUFFIX = ".lite"
LITE_PRECISIONS = ("int8", "float32")   # the first present is the default
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)  # each batch is padded up to one of these (one interpreter each)


def read_lite_metadata(path: str | os.PathLike) -> dict:
    """The fercli metadata of a .lite file, checked as modelfile.read_metadata checks a .keras file's."""
    from fercli.modelfile import METADATA_MEMBER, check_metadata

    try:
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read(METADATA_MEMBER))
            metadata["precisions"] = [p for p in LITE_PRECISIONS if f"{p}.tflite" in archive.namelist()]
    except (zipfile.BadZipFile, OSError, ValueError, KeyError):
        raise UserError(f"{path} is not a valid fercli .lite model file (corrupt, or not made by `fercli export`).") from None
    if not metadata["precisions"]:
        raise UserError(f"{path} holds no network (float32.tflite or int8.tflite).")
    return check_metadata(metadata, path)


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
    """A .lite model on LiteRT: the same interface as inference.EmotionModel
    (classes, input_size, metadata, name, path, precision, predict)."""

    def __init__(self, path: str | os.PathLike, precision: str | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise UserError("the lean runtime needs ai-edge-litert: pip install ai-edge-litert (a dependency of fercli).") from None
        self._interpreter_class = Interpreter
        self.path = Path(path)
        self.metadata = read_lite_metadata(self.path)
        self.classes: list[str] = list(self.metadata["classes"])
        self.input_size: int = int(self.metadata["input_size"])
        self.precision = lite_precision(precision, self.metadata["precisions"], self.path)
        with zipfile.ZipFile(self.path) as archive:
            self._network = archive.read(f"{self.precision}.tflite")
        self._threads = cpu_threads()
        self._interpreters: dict[int, tuple] = {}
        self._runner(1)   # fails here, with the reason, if the network does not load

    @property
    def name(self) -> str:
        return self.path.name[:-len(LITE_SUFFIX)] if self.path.name.endswith(LITE_SUFFIX) else self.path.stem

    def _runner(self, batch: int):
        """(interpreter, input index, output index) for batches of `batch` crops."""
        if batch not in self._interpreters:
            try:
                with quietly():   # LiteRT notes its XNNPACK delegate on stderr
                    interpreter = self._interpreter_class(model_content=self._network, num_threads=self._threads)
                    source = interpreter.get_input_details()[0]["index"]
                    interpreter.resize_tensor_input(source, [batch, self.input_size, self.input_size, 1])
                    interpreter.allocate_tensors()
                    interpreter.invoke()
            except (ValueError, RuntimeError) as exc:
                raise UserError(f"{self.path} could not be loaded ({str(exc).splitlines()[0]}).") from None
            self._interpreters[batch] = (interpreter, source, interpreter.get_output_details()[0]["index"])
        return self._interpreters[batch]

    def predict(self, faces: np.ndarray, batch_size: int = BATCH_SIZES[-1], calibrated: bool = True) -> np.ndarray:
        """uint8 (N, S, S) prepared crops -> float32 (N, classes) probabilities,
        calibrated by the file's calibration unless `calibrated` is False."""
        from fercli.calibration import calibrate

        out = []
        for start in range(0, len(faces), batch_size):
            batch = faces[start:start + batch_size].astype(np.float32)[..., None]
            padded = next(size for size in BATCH_SIZES if size >= len(batch)) if len(batch) <= BATCH_SIZES[-1] else len(batch)
            if padded > len(batch):
                batch = np.concatenate([batch, np.zeros((padded - len(batch), *batch.shape[1:]), np.float32)])
            interpreter, source, result = self._runner(padded)
            interpreter.set_tensor(source, batch)
            interpreter.invoke()
            out.append(interpreter.get_tensor(result)[:min(batch_size, len(faces) - start)].copy())
        raw = np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)
        return calibrate(raw, self.metadata.get("calibration")) if calibrated else raw


def export_lite(keras_path: str | os.PathLike, out: str | os.PathLike) -> dict:
    """Write `out` (.lite) from a .keras model file: float32 (float16-stored
    weights stay float16, losing nothing) and int8 networks, and the
    metadata. Needs TensorFlow. Returns the written metadata."""
    from fercli.inference import inference_copy
    from fercli.modelfile import METADATA_MEMBER, load_keras_model, read_metadata
    from fercli.tf_quiet import tensorflow

    tf = tensorflow()
    metadata = read_metadata(keras_path)
    size = int(metadata["input_size"])
    network = inference_copy(load_keras_model(keras_path))
    signature = [tf.TensorSpec((None, size, size, 1), tf.float32, name="face")]
    float16_weights = metadata.get("weights_dtype") == "float16"
    variants = {
        "float32": ({"optimizations": [tf.lite.Optimize.DEFAULT], "target_spec": {"supported_types": [tf.float16]}}
                    if float16_weights else {}),
        "int8": {"optimizations": [tf.lite.Optimize.DEFAULT]},   # dynamic range: int8 weights, no calibration data
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    from fercli import __version__

    exported = dict(metadata, lite={"from": Path(keras_path).name, "fercli_version": __version__, "runtime": "LiteRT",
                                    "float32_weights_stored_as": "float16" if float16_weights else "float32",
                                    "int8": "dynamic-range quantization: int8 weights, each crop's activations quantized as they come"})
    exported.pop("measured", None)   # accuracies are measured again on the exported networks (`fercli eval --record`)
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for precision, options in variants.items():
            temp = out.with_name(f".{out.name}.{precision}.tflite")
            try:
                with quietly():
                    network.export(str(temp), format="litert", input_signature=signature, verbose=False, **options)
                archive.write(temp, f"{precision}.tflite")
            finally:
                temp.unlink(missing_ok=True)
        archive.writestr(METADATA_MEMBER, json.dumps(exported, indent=2))
    os.replace(partial, out)
    return exported


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
