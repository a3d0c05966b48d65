"""Model files: a Keras .keras archive plus fercli.json metadata; saving, finding, loading, metadata."""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from fercli.errors import UserError
from fercli.lite import KERAS_MEMBER, LITE_SUFFIX, carries_keras_model, read_lite_metadata, weight_name
from fercli.metadata import METADATA_MEMBER, check_metadata
from fercli.resources import resource_dir
from fercli.tf_quiet import load_keras

WEIGHTS_MEMBER = "model.weights.h5"  # where Keras keeps the weights in a .keras archive
WEIGHT_DTYPES = ("float32", "float16")
DEFAULT_MODEL = "default"


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


def resolve_model_path(name_or_path: str | os.PathLike | None, keras: bool = False) -> Path:
    """A shipped model's name ("default", "accurate") or a file path -> the
    file: for a name, its .lite file. With `keras` (training, explaining,
    exporting), a file the Keras model loads from: a .keras file, or a .lite
    file that carries its Keras model (as the shipped ones do)."""
    name = str(name_or_path or DEFAULT_MODEL)
    folder = resource_dir("models")
    if os.sep not in name and "/" not in name and not name.endswith((".keras", LITE_SUFFIX)):
        for suffix in (".keras", LITE_SUFFIX) if keras else (LITE_SUFFIX, ".keras"):
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
    path = Path(name)
    if not path.exists():
        known = ", ".join(shipped_model_names()) or "none"
        raise UserError(f"model {name} not found: give a .keras or .lite file or a shipped model name ({known}).")
    if path.is_dir():
        raise UserError(f"model {name} is a folder: give a .keras or .lite model file.")
    if keras and path.name.endswith(LITE_SUFFIX) and not carries_keras_model(path):
        read_metadata(path)   # a damaged file says so first
        raise _without_keras_model(name)
    return path


def _without_keras_model(path) -> UserError:
    return UserError(f"{path} holds only the networks that run it (made by an older fercli): training, explaining "
                     "and exporting need the .keras file it was exported from.")


def read_metadata(path: str | os.PathLike) -> dict:
    """The fercli metadata of a model file (.keras or .lite), without loading the network."""
    path = Path(path)
    if path.name.endswith(LITE_SUFFIX):
        return read_lite_metadata(path)
    try:
        with zipfile.ZipFile(path) as archive:
            if METADATA_MEMBER not in archive.namelist():
                raise UserError(f"{path} is a Keras model without fercli metadata (class names); train it with `fercli train`.")
            metadata = json.loads(archive.read(METADATA_MEMBER))
    except (zipfile.BadZipFile, OSError, ValueError, KeyError):
        raise UserError(f"{path} is not a valid fercli model file (corrupt or not a .keras archive).") from None
    return check_metadata(metadata, path)


def load_keras_model(path):
    """The Keras model of a .keras file, or of a .lite file that carries it."""
    keras = load_keras()
    import fercli.layers  # noqa: F401  (registers fercli's layers for deserialisation)

    if Path(path).name.endswith(LITE_SUFFIX):
        return _keras_model_from_lite(keras, path)

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a damaged file
        raise UserError(f"{path} could not be loaded as a model ({type(exc).__name__}).") from None


def _keras_model_from_lite(keras, path: str | os.PathLike):
    """The Keras model a .lite file was exported from, rebuilt from its
    `keras.json` (the architecture) and the weights in its float32 network (see
    export.onnx_network), for training from it, explaining and exporting. Needs
    TensorFlow and onnx (the train extra)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise UserError('rebuilding the Keras model of a .lite file needs onnx: pip install "fercli[train]".') from None

    with zipfile.ZipFile(path) as archive:
        if KERAS_MEMBER not in archive.namelist():
            raise _without_keras_model(path)
        try:
            model = keras.models.model_from_json(archive.read(KERAS_MEMBER).decode())
            weights = {tensor.name: numpy_helper.to_array(tensor)
                       for tensor in onnx.load_from_string(archive.read("float32.onnx")).graph.initializer}
        except Exception as exc:  # Keras and onnx raise many types for a damaged file
            raise UserError(f"{path} could not be loaded as a Keras model ({type(exc).__name__}).") from None
    variables = list(model.trainable_variables) + list(model.non_trainable_variables)
    for i, variable in enumerate(variables):
        value = weights.get(weight_name(i, variable))
        if value is None:
            continue   # a variable the network does not read (a dropout's seed)
        if tuple(value.shape) != tuple(variable.shape):
            raise UserError(f"{path} is damaged: its weights do not fit its architecture.")
        variable.assign(value.astype(variable.dtype))
    return model


def shipped_model_names() -> list[str]:
    folder = resource_dir("models")
    names = {p.name[:-len(LITE_SUFFIX)] for p in folder.glob(f"*{LITE_SUFFIX}")} | {p.stem for p in folder.glob("*.keras")}
    return sorted(names, key=lambda name: (name != DEFAULT_MODEL, name))



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
