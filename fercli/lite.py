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
  saves little. 1.6-1.9x float32's crops/s on an AVX2 CPU, within 0.2 point
  on FER-2013 PublicTest (benchmarks/bench_models.py). Left out where it
  measures more than INT8_TOLERANCE below float32 (`fercli export --val`),
- `keras.json`: the Keras architecture, from which `keras_model_from_lite`
  rebuilds the Keras model with the weights of `float32.onnx` (training from
  a shipped model, explaining, exporting again),
- `fercli.json`: the model's metadata, plus what was exported.

`fercli export` writes one from a .keras model (that needs TensorFlow,
`pip install "fercli[train]"`); the shipped models ship as .lite files only.
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
INT8_TOLERANCE = 0.003                  # the most accuracy int8 may lose against float32 to be kept
KERAS_MEMBER = "keras.json"             # the Keras architecture, for keras_model_from_lite


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


def carries_keras_model(path: str | os.PathLike) -> bool:
    """Whether a .lite file holds its Keras architecture (see keras_model_from_lite)."""
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


def onnx_network(model, size: int):
    """The Keras `model` as an ONNX network (through tf2onnx) whose
    initializers are its weights as Keras holds them, one per variable, named
    `NNN:path` in the order of `model.trainable_variables +
    model.non_trainable_variables`: the network is converted with its weights
    as inputs, so nothing is folded into them (ONNX Runtime folds the batch
    norms and transposes when a session starts; the same speed). That is what
    lets `keras_model_from_lite` rebuild the Keras model from the file. Weights
    that float16 holds exactly (a model saved with float16 weights) are stored
    so, cast back to float32 at load. Variables the network never reads
    (dropout's seeds) are left out."""
    import onnx
    import tf2onnx
    from onnx import TensorProto, helper, numpy_helper

    from fercli.tf_quiet import quietly, tensorflow

    tf = tensorflow()
    variables = list(model.trainable_variables) + list(model.non_trainable_variables)
    trainable = len(model.trainable_variables)
    names = [f"{i:03d}:{v.path}" for i, v in enumerate(variables)]
    signature = [tf.TensorSpec((None, size, size, 1), tf.float32, name="face")]
    signature += [tf.TensorSpec(v.shape, v.dtype, name=f"weight{i}") for i, v in enumerate(variables)]

    @tf.function(input_signature=signature)
    def forward(face, *weights):
        return model.stateless_call(list(weights[:trainable]), list(weights[trainable:]), face, training=False)[0]

    with quietly():
        network, _ = tf2onnx.convert.from_function(forward, input_signature=signature, opset=17)
    graph = network.graph
    read = {name for node in graph.node for name in node.input}
    face = [tensor for tensor in graph.input if tensor.name == "face"]
    del graph.input[:]
    graph.input.extend(face)
    casts = []
    for i, variable in enumerate(variables):
        if f"weight{i}" not in read:
            continue
        value = np.asarray(variable.numpy())
        half = value.astype(np.float16) if value.dtype == np.float32 else None
        if half is not None and np.array_equal(half.astype(np.float32), value):
            graph.initializer.append(numpy_helper.from_array(half, names[i]))
            casts.append(helper.make_node("Cast", [names[i]], [f"weight{i}"], to=TensorProto.FLOAT))
        else:
            graph.initializer.append(numpy_helper.from_array(value, names[i]))
            casts.append(helper.make_node("Identity", [names[i]], [f"weight{i}"]))
    nodes = casts + list(graph.node)   # nodes are stored in the order they run
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(network)
    return network


def keras_model_from_lite(path: str | os.PathLike):
    """The Keras model a .lite file was exported from, rebuilt from its
    `keras.json` (the architecture) and the weights in its float32 network (see
    `onnx_network`), for training from it, explaining and exporting. Needs
    TensorFlow and onnx (the train extra)."""
    from fercli.tf_quiet import load_keras

    keras = load_keras()
    import fercli.layers  # noqa: F401  (registers fercli's layers for deserialisation)
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise UserError('rebuilding the Keras model of a .lite file needs onnx: pip install "fercli[train]".') from None

    with zipfile.ZipFile(path) as archive:
        if KERAS_MEMBER not in archive.namelist():
            raise UserError(f"{path} holds only the networks that run it (made by an older fercli): training, explaining "
                            "and exporting need the .keras file it was exported from.")
        try:
            model = keras.models.model_from_json(archive.read(KERAS_MEMBER).decode())
            weights = {tensor.name: numpy_helper.to_array(tensor)
                       for tensor in onnx.load_from_string(archive.read("float32.onnx")).graph.initializer}
        except Exception as exc:  # Keras and onnx raise many types for a damaged file
            raise UserError(f"{path} could not be loaded as a Keras model ({type(exc).__name__}).") from None
    variables = list(model.trainable_variables) + list(model.non_trainable_variables)
    for i, variable in enumerate(variables):
        value = weights.get(f"{i:03d}:{variable.path}")
        if value is None:
            continue   # a variable the network does not read (a dropout's seed)
        if tuple(value.shape) != tuple(variable.shape):
            raise UserError(f"{path} is damaged: its weights do not fit its architecture.")
        variable.assign(value.astype(variable.dtype))
    return model


def calibration_sample(images: np.ndarray, count: int = CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """A fixed random sample of training crops for int8's activation ranges."""
    pick = np.random.default_rng(seed).choice(len(images), min(count, len(images)), replace=False)
    return images[np.sort(pick)]


def export_lite(keras_path: str | os.PathLike, out: str | os.PathLike, calibration_images: np.ndarray | None = None,
                calibration_data: str = "") -> dict:
    """Write `out` (.lite) from a model file (.keras, or a .lite file that
    carries its Keras model): the float32 network, and with
    `calibration_images` (uint8 crops, e.g. `calibration_sample` of the
    training data, read from `calibration_data`) the int8 one; the Keras
    architecture; and the metadata. Needs TensorFlow, tf2onnx and onnx (the
    train extra). Returns the written metadata."""
    import onnx

    from fercli import __version__
    from fercli.modelfile import METADATA_MEMBER, load_keras_model, read_metadata

    metadata = read_metadata(keras_path)
    size = int(metadata["input_size"])
    model = load_keras_model(keras_path)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    exported = dict(metadata, lite={"from": Path(keras_path).name, "fercli_version": __version__, "runtime": "ONNX Runtime"})
    if calibration_images is not None:
        exported["lite"]["int8"] = (f"static QDQ: int8 weights per channel, uint8 activations, ranges from "
                                    f"{len(calibration_images)} crops of {calibration_data or 'the training data'}; "
                                    "convolutions on the image itself in float32")
    exported.pop("measured", None)   # accuracies are measured again on the exported networks (`fercli eval --record`)
    exported.pop("precisions", None)
    partial, float_onnx, int8_onnx = (out.with_name(f".{out.name}.{part}") for part in ("partial", "float32.onnx", "int8.onnx"))
    try:
        if calibration_images is not None:
            from fercli.inference import inference_copy
            from fercli.tf_quiet import quietly

            # quantized from the network with its batch norms folded in Keras, so a
            # convolution that runs twice (an ensemble's mirrored view) has one int8 copy
            onnx.save(onnx_network(inference_copy(model), size), str(float_onnx))
            with quietly():
                quantize_int8(float_onnx, int8_onnx, calibration_images)
        onnx.save(onnx_network(model, size), str(float_onnx))
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(float_onnx, "float32.onnx")
            if calibration_images is not None:
                archive.write(int8_onnx, "int8.onnx")
            archive.writestr(KERAS_MEMBER, model.to_json())
            archive.writestr(METADATA_MEMBER, json.dumps(exported, indent=2))
        os.replace(partial, out)
    finally:
        for temp in (float_onnx, int8_onnx, partial):
            temp.unlink(missing_ok=True)
    return exported


def drop_int8(path: Path, reason: str) -> None:
    """Rewrite the .lite file at `path` without its int8 network, saying why in its metadata."""
    from fercli.modelfile import METADATA_MEMBER

    partial = path.with_name(f".{path.name}.partial")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            if item.filename == METADATA_MEMBER:
                metadata = json.loads(source.read(item))
                metadata["lite"]["int8"] = reason
                target.writestr(METADATA_MEMBER, json.dumps(metadata, indent=2))
            elif item.filename != "int8.onnx":
                target.writestr(item, source.read(item))
    os.replace(partial, path)


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
