"""The lean runtime: emotion models exported for ONNX Runtime (the runtime the
face detector already uses) run without TensorFlow, for predict, video, serve
and eval.

A `.lite` model file is a zip archive of
- `float32.onnx`: the network with its batch norms folded (the Keras model's
  probabilities to 1e-4; its weights stored as float16 where the Keras file
  stores them so and the folded weights move no probability by more than 1e-4),
- `int8.onnx`: the same statically quantized (QDQ: int8 weights per channel,
  uint8 activations with ranges measured on training images); the convolutions
  on the image itself stay float32, where int8 costs a point of accuracy and
  saves little. 1.6-1.9x float32's crops/s on an AVX2 CPU, within 0.2 point
  on FER-2013 PublicTest (benchmarks/bench_models.py),
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
from fercli.resources import onnx_session

LITE_SUFFIX = ".lite"
LITE_PRECISIONS = ("int8", "float32")   # the first present is the default
BATCH_SIZE = 64
CALIBRATION_IMAGES = 2048               # training crops that set int8's activation ranges


def read_lite_metadata(path: str | os.PathLike) -> dict:
    """The fercli metadata of a .lite file, checked as modelfile.read_metadata checks a .keras file's."""
    from fercli.modelfile import METADATA_MEMBER, check_metadata

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


def quantize_int8(float_onnx: Path, out: Path, images: np.ndarray) -> None:
    """`out`: the float network statically quantized to QDQ int8, activation
    ranges from `images` (uint8 (N, S, S) crops); convolutions reading the image
    itself (one input channel) stay float."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out.with_name(f".{out.name}.prepared.onnx")
    quant_pre_process(str(float_onnx), str(prepared), skip_symbolic_shape=True)
    graph = onnx.load(str(prepared)).graph
    shapes = {tensor.name: tuple(tensor.dims) for tensor in graph.initializer}
    on_the_image = [node.name for node in graph.node
                    if node.op_type == "Conv" and len(shapes.get(node.input[1], ())) == 4 and shapes[node.input[1]][1] == 1]
    input_name = graph.input[0].name

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(images[i:i + 16].astype(np.float32)[..., None] for i in range(0, len(images), 16))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    try:
        quantize_static(str(prepared), str(out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=on_the_image)
    finally:
        prepared.unlink(missing_ok=True)


def store_float16(path: Path) -> None:
    """The ONNX file at `path` with its float32 weights stored as float16, each
    cast back to float32 at load (ONNX Runtime folds the casts when the session
    starts, so the arithmetic stays float32): half the size, losing nothing for a
    model whose weights are float16 already."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    casts = []
    for weight in [w for w in graph.initializer if w.data_type == TensorProto.FLOAT and np.prod(w.dims) >= 256]:
        half = numpy_helper.from_array(numpy_helper.to_array(weight).astype(np.float16), f"{weight.name}.float16")
        graph.initializer.remove(weight)
        graph.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [weight.name], to=TensorProto.FLOAT))
    nodes = casts + list(graph.node)   # the casts first: nodes are stored in the order they run
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(path))


FLOAT16_TOLERANCE = 1e-4   # the most a probability may move for float32 weights to be stored as float16


def _store_float16_if_exact(path: Path, images: np.ndarray | None, size: int) -> bool:
    """Store the network's weights as float16 where that moves no probability
    by more than FLOAT16_TOLERANCE on `images` (random crops without them):
    true of a float16 model whose batch norms folded into little, not of one
    whose folded weights float16 cannot hold. Returns whether it did."""
    if images is None:
        images = np.random.default_rng(0).integers(0, 256, (64, size, size), dtype=np.uint8)
    crops = images[:256].astype(np.float32)[..., None]
    original = path.read_bytes()
    before = _run_onnx(original, crops)
    store_float16(path)
    if np.abs(_run_onnx(path.read_bytes(), crops) - before).max() <= FLOAT16_TOLERANCE:
        return True
    path.write_bytes(original)
    return False


def _run_onnx(network: bytes, crops: np.ndarray) -> np.ndarray:
    session = onnx_session(network)
    return session.run(None, {session.get_inputs()[0].name: crops})[0]


def calibration_sample(images: np.ndarray, count: int = CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """A fixed random sample of training crops for int8's activation ranges."""
    pick = np.random.default_rng(seed).choice(len(images), min(count, len(images)), replace=False)
    return images[np.sort(pick)]


def export_lite(keras_path: str | os.PathLike, out: str | os.PathLike, calibration_images: np.ndarray | None = None,
                calibration_data: str = "") -> dict:
    """Write `out` (.lite) from a .keras model file: the float32 network, and
    with `calibration_images` (uint8 crops, e.g. `calibration_sample` of the
    training data, read from `calibration_data`) the int8 one; and the metadata.
    Needs TensorFlow and tf2onnx (the train extra). Returns the written metadata."""
    from fercli.inference import inference_copy
    from fercli.modelfile import METADATA_MEMBER, load_keras_model, read_metadata
    from fercli.tf_quiet import quietly, tensorflow

    tf = tensorflow()
    metadata = read_metadata(keras_path)
    size = int(metadata["input_size"])
    network = inference_copy(load_keras_model(keras_path))
    signature = [tf.TensorSpec((None, size, size, 1), tf.float32, name="face")]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    from fercli import __version__

    float16_weights = metadata.get("weights_dtype") == "float16"
    exported = dict(metadata, lite={"from": Path(keras_path).name, "fercli_version": __version__, "runtime": "ONNX Runtime",
                                    "float32_weights_stored_as": "float16" if float16_weights else "float32"})
    if calibration_images is not None:
        exported["lite"]["int8"] = (f"static QDQ: int8 weights per channel, uint8 activations, ranges from "
                                    f"{len(calibration_images)} crops of {calibration_data or 'the training data'}; "
                                    "convolutions on the image itself in float32")
    exported.pop("measured", None)   # accuracies are measured again on the exported networks (`fercli eval --record`)
    float_onnx, int8_onnx = (out.with_name(f".{out.name}.{p}.onnx") for p in ("float32", "int8"))
    try:
        try:
            with quietly():
                network.export(str(float_onnx), format="onnx", input_signature=signature, verbose=False)
        except ImportError:
            raise UserError('exporting needs tf2onnx and onnx: pip install "fercli[train]".') from None
        if calibration_images is not None:
            with quietly():
                quantize_int8(float_onnx, int8_onnx, calibration_images)
        if float16_weights:
            float16_weights = _store_float16_if_exact(float_onnx, calibration_images, size)
            exported["lite"]["float32_weights_stored_as"] = "float16" if float16_weights else "float32"
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(float_onnx, "float32.onnx")
            if calibration_images is not None:
                archive.write(int8_onnx, "int8.onnx")
            archive.writestr(METADATA_MEMBER, json.dumps(exported, indent=2))
        os.replace(partial, out)
    finally:
        for temp in (float_onnx, int8_onnx, partial):
            temp.unlink(missing_ok=True)
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
