"""Architectures, saving/loading a model with its metadata, batched inference.

A fercli model is a Keras `.keras` file with one extra member, `fercli.json`,
holding the metadata (classes, input size, preprocessing, data, accuracy...).
The metadata can be read without importing TensorFlow.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from fercli.errors import UserError
from fercli.resources import resource_dir
from fercli.tf_quiet import load_keras, tensorflow

METADATA_MEMBER = "fercli.json"
WEIGHTS_MEMBER = "model.weights.h5"  # where Keras keeps the weights in a .keras archive
WEIGHT_DTYPES = ("float32", "float16")
DEFAULT_MODEL = "default"


# ---------------------------------------------------------------- architectures

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
             "flip-zoom": ("image", "mirror", "zoom", "zoom+mirror")}


def build_average(members, size: int, tta: str = "zoom-mirror", name: str = "fercli_ensemble"):
    """One model averaging the probabilities of `members`, each on the test-time
    views `TTA_VIEWS[tta]` (the image, its mirror image, its centre enlarged 1.1x,
    and that mirrored): ensembling and test-time augmentation in a single file
    that every command loads like any other model."""
    import keras

    from fercli.layers import CenterZoom, FlipHorizontal

    inputs = keras.Input((size, size, 1), name="face")
    views = {"image": inputs}
    if "mirror" in TTA_VIEWS[tta]:
        views["mirror"] = FlipHorizontal(name="mirror")(inputs)
    if "zoom+mirror" in TTA_VIEWS[tta]:
        views["zoom"] = CenterZoom(1.1, name="zoom")(inputs)
        views["zoom+mirror"] = FlipHorizontal(name="zoom_mirror")(views["zoom"])
    outputs = []
    for i, member in enumerate(members):
        member = keras.Model(member.input, member.output, name=f"member{i + 1}")
        outputs += [member(views[view]) for view in TTA_VIEWS[tta]]
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


# ---------------------------------------------------------------- save / load

def save_model(model, path: str | os.PathLike, metadata: dict, weights_dtype: str = "float32") -> None:
    """Write `model` with `metadata` to `path` atomically (temp file, then rename).
    weights_dtype "float16" stores the weights in half the space; they load
    back into float32 variables (probabilities move by under 1e-3)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.stem}.tmp.keras")
    if getattr(model, "optimizer", None) is not None:
        # An inference file needs no optimizer state: save an uncompiled copy (a third the size).
        import keras

        copy = keras.Model.from_config(model.get_config())
        copy.set_weights(model.get_weights())
        model = copy
    model.save(temp)
    replacements = {METADATA_MEMBER: json.dumps(metadata, indent=2)}
    if weights_dtype == "float16":
        with zipfile.ZipFile(temp) as archive:
            replacements[WEIGHTS_MEMBER] = _float16_weights(archive.read(WEIGHTS_MEMBER))
    _rewrite_archive(temp, replacements)
    os.replace(temp, path)


def _float16_weights(h5_bytes: bytes) -> bytes:
    """Keras' weights file with every float32 array stored as float16."""
    import h5py  # a Keras dependency

    target = io.BytesIO()
    with h5py.File(io.BytesIO(h5_bytes), "r") as old, h5py.File(target, "w") as new:
        def copy(name, item):
            if isinstance(item, h5py.Dataset):
                data = item[()]
                new.create_dataset(name, data=data.astype(np.float16) if data.dtype == np.float32 else data)
            else:
                new.require_group(name)
            new[name].attrs.update(item.attrs)

        old.visititems(copy)
        new.attrs.update(old.attrs)
    return target.getvalue()


def _rewrite_archive(path: Path, replacements: dict[str, str | bytes]) -> None:
    """Rewrite the zip archive at `path` (atomically) with members replaced or added."""
    temp = path.with_name(f".{path.stem}.rewrite.tmp")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(temp, "w") as target:
        for item in source.infolist():
            if item.filename not in replacements:
                target.writestr(item, source.read(item.filename))
        for name, data in replacements.items():
            target.writestr(name, data)
    os.replace(temp, path)


def resolve_model_path(name_or_path: str | os.PathLike | None) -> Path:
    """A shipped model's name ("default", "accurate") or a file path -> the file."""
    name = str(name_or_path or DEFAULT_MODEL)
    shipped = resource_dir("models") / f"{name}.keras"
    if os.sep not in name and "/" not in name and not name.endswith(".keras") and shipped.is_file():
        return shipped
    path = Path(name)
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in resource_dir("models").glob("*.keras"))) or "none"
        raise UserError(f"model {name} not found: give a .keras file or a shipped model name ({known}).")
    if path.is_dir():
        raise UserError(f"model {name} is a folder: give a .keras model file.")
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    """The fercli metadata of a model file, without loading the network."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            if METADATA_MEMBER not in archive.namelist():
                raise UserError(f"{path} is a Keras model without fercli metadata (class names); train it with `fercli train`.")
            return json.loads(archive.read(METADATA_MEMBER))
    except (zipfile.BadZipFile, OSError, ValueError, KeyError):
        raise UserError(f"{path} is not a valid fercli model file (corrupt or not a .keras archive).") from None


class EmotionModel:
    """A loaded model: metadata plus a compiled forward pass on uint8 face crops.

    precision None: `default_precision()` (bfloat16 where the CPU computes it
    natively: 1.9x the crops/s of float32 at batch 64 here, PublicTest within
    0.2 point; benchmarks/bench_models.py). Batches under 4 crops always run in float32.
    `keras_model` stays float32 (training, Grad-CAM)."""

    def __init__(self, name_or_path=None, precision: str | None = None):
        self.path = resolve_model_path(name_or_path)
        self.metadata = read_metadata(self.path)
        self.classes: list[str] = list(self.metadata["classes"])
        self.input_size: int = int(self.metadata["input_size"])
        self.keras_model = load_keras_model(self.path)
        tf = tensorflow()
        self.precision = check_precision(precision) if precision else default_precision()
        signature = [tf.TensorSpec((None, self.input_size, self.input_size, 1), tf.float32)]

        def compiled(network):
            return tf.function(lambda x: network(x, training=False), input_signature=signature, reduce_retracing=True)

        self._forward_float32 = compiled(inference_copy(self.keras_model))
        self._forward_bfloat16 = compiled(inference_copy(self.keras_model, "bfloat16")) if self.precision == "bfloat16" else None

    @property
    def name(self) -> str:
        return self.path.stem

    def predict(self, faces: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """uint8 (N, S, S) prepared crops -> float32 (N, classes) probabilities."""
        if len(faces) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        out = []
        for start in range(0, len(faces), batch_size):
            batch = faces[start:start + batch_size].astype(np.float32)[..., None]
            # bfloat16 pays a cast per call: below 4 crops float32 is faster (benchmarks/bench_models.py)
            forward = self._forward_bfloat16 if self._forward_bfloat16 and len(batch) >= 4 else self._forward_float32
            out.append(forward(batch).numpy())
        return np.concatenate(out)


def load_keras_model(path):
    keras = load_keras()
    import fercli.layers  # noqa: F401  (registers fercli's layers for deserialisation)

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a damaged file
        raise UserError(f"{path} could not be loaded as a model ({type(exc).__name__}).") from None


PRECISIONS = ("float32", "bfloat16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose float32 or bfloat16.")
    return precision


def default_precision() -> str:
    """$FERCLI_PRECISION if set; else bfloat16 where the CPU has native bfloat16
    arithmetic (AVX512-BF16 or AMX), float32 elsewhere (emulated bfloat16 is slower)."""
    if os.environ.get("FERCLI_PRECISION"):
        return check_precision(os.environ["FERCLI_PRECISION"])
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "bfloat16" if "avx512_bf16" in flags or "amx_bf16" in flags else "float32"


def _layers_within(model):
    """Every layer of `model`, nested models' layers included, in clone order."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers_within(layer)


def _batch_norms_to_fold(model) -> dict:
    """{id(conv): batch norm} for each batch norm that is the only reader of a
    Conv2D's output, {id(batch norm): None} for the batch norm itself."""
    import keras

    folds = {}
    for layer in _layers_within(model):
        if not isinstance(layer, keras.layers.BatchNormalization) or len(layer._inbound_nodes) != 1:
            continue
        source = layer._inbound_nodes[0].parent_nodes
        conv = source[0].operation if len(source) == 1 else None
        if (isinstance(conv, keras.layers.Conv2D) and len(conv._outbound_nodes) == 1
                and layer.axis in (-1, [-1], [3], 3) and layer.center and layer.scale):
            folds[id(conv)], folds[id(layer)] = layer, None
    return folds


def inference_copy(model, precision: str = "float32"):
    """The network as `EmotionModel` runs it: each batch norm folded into the
    convolution before it (the same function in fewer operations: 1.6x the
    crops/s in bfloat16, 1.15x in float32 here, benchmarks/bench_models.py), and
    for "bfloat16" computing in bfloat16 with float32 weights, as Keras' mixed
    precision does; the output layer stays float32."""
    import keras

    from fercli.layers import FoldedBatchNorm

    folds = _batch_norms_to_fold(model)

    def clone(layer):
        config = layer.get_config()
        if precision == "bfloat16" and layer.name != "probabilities" and not isinstance(layer, keras.layers.InputLayer):
            config["dtype"] = "mixed_bfloat16"
        if id(layer) in folds:
            if folds[id(layer)] is None:
                return FoldedBatchNorm(name=layer.name, dtype=config["dtype"])
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new in zip(_layers_within(model), _layers_within(copy), strict=True):
        if hasattr(old, "layers") or not old.weights:
            continue
        norm = folds.get(id(old))
        if id(old) in folds and norm is None:
            continue  # a folded batch norm: its weights went into the convolution
        weights = old.get_weights()
        if norm is not None:
            gamma, beta, mean, variance = norm.get_weights()
            scale = gamma / np.sqrt(variance + norm.epsilon)
            bias = weights[1] if old.use_bias else 0.0
            weights = [weights[0] * scale, beta + (bias - mean) * scale]
        new.set_weights(weights)
    return copy


def shipped_models() -> list[Path]:
    return sorted(resource_dir("models").glob("*.keras"), key=lambda p: (p.stem != DEFAULT_MODEL, p.stem))


def measure_crops_per_s(model: "EmotionModel", batch: int = 64, seconds: float = 1.0) -> float:
    """Classifier throughput on random crops (after one warm-up call)."""
    import time

    crops = np.random.default_rng(0).integers(0, 256, (batch, model.input_size, model.input_size), dtype=np.uint8)
    model.predict(crops)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.predict(crops)
        done += batch
    return done / (time.perf_counter() - start)


ENSEMBLE_SHARED_KEYS = ("classes", "input_size", "channels", "preprocessing", "data", "split", "train_images", "val_images")
ENSEMBLE_MEMBER_KEYS = ("arch", "parameters", "val_accuracy", "epochs_trained", "best_epoch", "train_wall_s", "config")


def make_ensemble(paths: list[str], out: str | os.PathLike, tta: str = "zoom-mirror", weights_dtype: str = "float32") -> "EmotionModel":
    """Average several models (same classes and input size), each on the
    test-time views of `tta`, into one model file (its weights stored as
    `weights_dtype`); returns it loaded."""
    from fercli import __version__

    members = [EmotionModel(p) for p in paths]
    first = members[0]
    for member in members[1:]:
        if member.classes != first.classes or member.input_size != first.input_size:
            raise UserError(f"{member.path} has other classes or input size than {first.path}; cannot ensemble them.")
    if tta not in TTA_VIEWS:
        raise UserError(f"unknown test-time augmentation {tta!r}; choose one of {', '.join(TTA_VIEWS)}.")
    if weights_dtype not in WEIGHT_DTYPES:
        raise UserError(f"unknown weights dtype {weights_dtype!r}; choose one of {', '.join(WEIGHT_DTYPES)}.")
    averaged = build_average([m.keras_model for m in members], first.input_size, tta=tta)
    # The data description is shared; training records stay with each member.
    metadata = {key: first.metadata[key] for key in ENSEMBLE_SHARED_KEYS if key in first.metadata}
    metadata.update(arch="ensemble", fercli_version=__version__, val_accuracy=None,
                    parameters=int(averaged.count_params()), weights_dtype=weights_dtype,
                    ensemble={"tta": list(TTA_VIEWS[tta]), "members": [
                        {"model": str(m.path), **{key: m.metadata.get(key) for key in ENSEMBLE_MEMBER_KEYS}}
                        for m in members]})
    save_model(averaged, out, metadata, weights_dtype)
    return EmotionModel(out)


def update_metadata(path: str | os.PathLike, **changes) -> None:
    """Rewrite a model file's metadata (e.g. to record a measured accuracy)."""
    metadata = dict(read_metadata(path), **changes)
    _rewrite_archive(Path(path), {METADATA_MEMBER: json.dumps(metadata, indent=2)})


def record_accuracy(path: str | os.PathLike, result: dict, precision: str) -> None:
    """Store an `evaluate` result's accuracy in the model's metadata, per
    inference precision (bfloat16 and float32 differ by a few tenths of a point)."""
    metadata = read_metadata(path)
    measured = dict(metadata.get("measured", {}))
    measured[precision] = {"accuracy": result["accuracy"], "data": result["data"], "n": result["n"]}
    changes = {"measured": measured}
    if metadata.get("val_accuracy") is None:  # an ensemble: no validation during training
        changes.update(val_accuracy=result["accuracy"], val_data=result["data"])
    update_metadata(path, **changes)


def recorded_accuracy(metadata: dict, precision: str) -> tuple[float | None, str]:
    """(accuracy, data) recorded for `precision`, else for another precision,
    else the validation accuracy from training."""
    measured = metadata.get("measured", {})
    entry = measured.get(precision) or next(iter(measured.values()), None)
    if entry:
        return entry["accuracy"], entry["data"]
    return metadata.get("val_accuracy"), metadata.get("val_data") or "validation split"
