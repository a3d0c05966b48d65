"""The network builders: the VGG-style classifiers and the averaging (ensemble + TTA) model."""
from __future__ import annotations

from fercli.errors import UserError


def _conv_bn(x, filters, layers):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    # momentum 0.9 (PyTorch's default): Keras' 0.99 needs thousands of steps before the
    # moving statistics are usable, which small data sets (CK+, ~8 steps an epoch) never reach.
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.Activation("relu")(x)


def build_vgg(num_classes: int, size: int, widths=(32, 64, 128, 256), dropout=0.4, head="gap"):
    """VGG-style: per stage two 3x3 conv+BN+ReLU, max-pool; then global average
    pooling ("gap": position-free, fewer weights) or flattening ("flatten":
    keeps where a feature is) and a small dense head."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 1), name="face")
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    for filters in widths:
        x = _conv_bn(x, filters, layers)
        x = _conv_bn(x, filters, layers)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x) if head == "gap" else layers.Flatten()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="fercli_vgg")


TTA_VIEWS = {"none": ("image",), "flip": ("image", "mirror"), "zoom-mirror": ("image", "zoom+mirror"),
             "flip-zoom": ("image", "mirror", "zoom", "zoom+mirror"), "crossed": ("image", "zoom+mirror", "mirror", "zoom")}
CROSSED = "crossed"   # the views of TTA_VIEWS[CROSSED] dealt out in turn: member 1 the image, member 2 the enlarged mirror, ...


def member_views(tta: str, members: int) -> list[tuple[str, ...]]:
    """The views each of `members` networks sees under `tta`: all of
    TTA_VIEWS[tta], or for `crossed` one each in turn (two networks on two
    views for the price of one network on both; their errors differ more)."""
    views = TTA_VIEWS[tta]
    if tta == CROSSED:
        return [(views[i % len(views)],) for i in range(members)]
    return [views] * members


def build_average(members, size: int, tta: str = "zoom-mirror", name: str = "fercli_ensemble"):
    """One model averaging the probabilities of `members`, each on its test-time
    views `member_views(tta, ...)` (the image, its mirror image, its centre
    enlarged 1.1x, and that mirrored): ensembling and test-time augmentation in
    a single file that every command loads like any other model."""
    import keras

    from fercli.layers import CenterZoom, FlipHorizontal

    inputs = keras.Input((size, size, 1), name="face")
    seen_by = member_views(tta, len(members))
    needed = {view for seen in seen_by for view in seen}
    views = {"image": inputs}
    if "mirror" in needed:
        views["mirror"] = FlipHorizontal(name="mirror")(inputs)
    if needed & {"zoom", "zoom+mirror"}:
        views["zoom"] = CenterZoom(1.1, name="zoom")(inputs)
        views["zoom+mirror"] = FlipHorizontal(name="zoom_mirror")(views["zoom"])
    outputs = []
    for i, (member, seen) in enumerate(zip(members, seen_by)):
        member = keras.Model(member.input, member.output, name=f"member{i + 1}")
        outputs += [member(views[view]) for view in seen]
    averaged = keras.layers.Average(name="probabilities")(outputs) if len(outputs) > 1 else outputs[0]
    return keras.Model(inputs, averaged, name=name)


ARCHITECTURES = {
    "vgg": lambda n, s: build_vgg(n, s),
    "vgg-small": lambda n, s: build_vgg(n, s, widths=(16, 32, 64, 128), dropout=0.3),
    "vgg-wide": lambda n, s: build_vgg(n, s, widths=(48, 96, 192, 384)),
    "vgg-flat": lambda n, s: build_vgg(n, s, head="flatten"),
    "vgg-small-flat": lambda n, s: build_vgg(n, s, widths=(16, 32, 64, 128), dropout=0.3, head="flatten"),
    "vgg-wide-flat": lambda n, s: build_vgg(n, s, widths=(48, 96, 192, 384), head="flatten"),
}


def build_model(arch: str, num_classes: int, size: int):
    if arch not in ARCHITECTURES:
        raise UserError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}.")
    return ARCHITECTURES[arch](num_classes, size)
