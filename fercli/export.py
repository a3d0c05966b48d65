"""Writing model files for the runtimes: `fercli export` (a Keras model to a
.lite file: lite.py says what one holds) and `fercli calibrate` (a fitted
calibration stored in a model file). Needs TensorFlow, tf2onnx and onnx for
export (the train extra); calibrating a .lite file runs on the lean install."""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from fercli.errors import UserError
from fercli.lite import KERAS_MEMBER, LITE_SUFFIX, weight_name
from fercli.metadata import METADATA_MEMBER
from fercli.modelfile import load_keras_model, read_metadata, resolve_model_path, update_metadata

CALIBRATION_IMAGES = 2048   # training crops that set int8's activation ranges
INT8_TOLERANCE = 0.003      # export --val says so where int8 loses more accuracy than this against float32


def onnx_network(model, size: int):
    """The Keras `model` as an ONNX network (through tf2onnx) whose
    initializers are its weights as Keras holds them, one per variable, named
    by lite.weight_name: the network is converted with its weights
    as inputs, so nothing is folded into them (ONNX Runtime folds the batch
    norms and transposes when a session starts; the same speed). That is what
    lets modelfile.load_keras_model rebuild the Keras model from the file. Weights
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
    names = [weight_name(i, v) for i, v in enumerate(variables)]
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
        onnx.save(float_until_first_convolutions(onnx.load(str(out))), str(out))
    finally:
        prepared.unlink(missing_ok=True)


def float_until_first_convolutions(network):
    """The quantized network (onnx ModelProto) with the steps between its input
    and the convolutions on the image (rescaling; an ensemble's mirrored and
    zoomed views) in float again, as the convolutions are: the picture is not
    quantized and dequantized on the way, which saves ONNX Runtime its slow
    element-wise int8 kernels on a one-channel image (`default` with AVX2
    kernels: 338 against 281 crops/s, benchmarks/bench_models.py), whose
    rounding differed between AVX2 and VNNI CPUs (models/MODEL.md). The
    rescaled values were exact in int8 as in float, so the answers move by
    rounding only."""
    graph = network.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    on_the_way, frontier = {graph.input[0].name}, [graph.input[0].name]
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if node.op_type != "Conv":
                fresh = [name for name in node.output if name not in on_the_way]
                on_the_way.update(fresh)
                frontier.extend(fresh)
    dropped = set()   # ids: nodes need not have names
    for quantize in [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in on_the_way]:
        for dequantize in [n for n in consumers.get(quantize.output[0], []) if n.op_type == "DequantizeLinear"]:
            for node in consumers.get(dequantize.output[0], []):
                node.input[:] = [quantize.input[0] if name == dequantize.output[0] else name for name in node.input]
            dropped.add(id(dequantize))
        dropped.add(id(quantize))
    kept = [n for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in kept for name in node.input}
    for initializer in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(initializer)
    return network


def calibration_sample(images: np.ndarray, count: int = CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """A fixed random sample of training crops for int8's activation ranges."""
    pick = np.random.default_rng(seed).choice(len(images), min(count, len(images)), replace=False)
    return images[np.sort(pick)]


def export_lite(keras_path: str | os.PathLike, out: str | os.PathLike, calibration_images: np.ndarray | None = None,
                calibration_data: str = "", without_int8: str | None = None) -> dict:
    """Write `out` (.lite) from a model file (.keras, or a .lite file that
    carries its Keras model): the float32 network, and with
    `calibration_images` (uint8 crops, e.g. `calibration_sample` of the
    training data, read from `calibration_data`) the int8 one (else the
    metadata says `without_int8`, why there is none); the Keras
    architecture; and the metadata. Needs TensorFlow, tf2onnx and onnx (the
    train extra). Returns the written metadata."""
    import onnx

    from fercli import __version__

    metadata = read_metadata(keras_path)
    size = int(metadata["input_size"])
    model = load_keras_model(keras_path)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    exported = dict(metadata, lite={"from": Path(keras_path).name, "fercli_version": __version__, "runtime": "ONNX Runtime"})
    if without_int8:
        exported["lite"]["int8"] = without_int8
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


def calibrate_model_file(name_or_path, data_path: str, split: str | None = None, warn=None) -> tuple[dict, list]:
    """Fit a calibration for a model file on labelled data (its val split, else
    all of it) and store it in the file's metadata, and in its counterpart
    beside it (the .keras file a .lite file was exported from, or the .lite
    file exported from a .keras file), so both runtimes give the same
    probabilities. Returns (the calibration entry, the files written)."""
    from fercli.calibration import fitted_calibration
    from fercli.data import read_dataset
    from fercli.inference import load_model

    path = resolve_model_path(name_or_path)
    model = load_model(path)
    splits = read_dataset(data_path, model.input_size, warn=warn)
    key = split or next((k for k in ("val", "all") if k in splits), None)
    if key not in splits:
        raise UserError(f"{data_path} has no {split or 'val'} split to calibrate on (it has: {', '.join(sorted(splits))}); "
                        "pass --split NAME.")
    data = splits[key].remap(model.classes)
    present = np.unique(data.labels)
    if len(present) < 2 or len(data) < 50:
        raise UserError(f"calibrating needs at least 50 labelled images of two or more classes; {data.source} has "
                        f"{len(data)} of {len(present)}.")
    entry = dict(fitted_calibration(model.predict(data.images, calibrated=False), data.labels, data.source),
                 split=key, fitted_with=f"{path.name} ({model.precision})")
    written = [path]
    if path.name.endswith(LITE_SUFFIX):
        source = model.metadata.get("lite", {}).get("from")
        counterpart = path.with_name(source) if source else None
    else:
        counterpart = path.with_name(path.stem + LITE_SUFFIX)
        if counterpart.is_file() and read_metadata(counterpart).get("lite", {}).get("from") != path.name:
            counterpart = None
    if counterpart is not None and counterpart.is_file():
        written.append(counterpart)
    for target in written:
        update_metadata(target, calibration=entry)
    return entry, [Path(p) for p in written]
