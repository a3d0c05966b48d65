"""Running a model: loading either runtime's file, compiled batched Keras inference, precision choice, batch-norm folding."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fercli.errors import UserError
from fercli.lite import LITE_SUFFIX, LiteModel, carries_keras_model
from fercli.modelfile import load_keras_model, read_metadata, resolve_model_path
from fercli.tf_quiet import tensorflow


class EmotionModel:
    """A loaded model: metadata plus a compiled forward pass on uint8 face crops.

    precision None: `default_precision()` (bfloat16 where the CPU computes it
    natively: 1.9x the crops/s of float32 at batch 64 here, PublicTest within
    0.2 point; benchmarks/bench_models.py). Batches under 4 crops always run in float32.
    `keras_model` stays float32 (training, Grad-CAM)."""

    def __init__(self, name_or_path=None, precision: str | None = None):
        self.path = resolve_model_path(name_or_path, keras=True)
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

    def predict(self, faces: np.ndarray, batch_size: int = 256, calibrated: bool = True) -> np.ndarray:
        """uint8 (N, S, S) prepared crops -> float32 (N, classes) probabilities,
        calibrated by the file's calibration unless `calibrated` is False."""
        from fercli.calibration import calibrate

        if len(faces) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        out = []
        for start in range(0, len(faces), batch_size):
            batch = faces[start:start + batch_size].astype(np.float32)[..., None]
            # bfloat16 pays a cast per call: below 4 crops float32 is faster (benchmarks/bench_models.py)
            forward = self._forward_bfloat16 if self._forward_bfloat16 and len(batch) >= 4 else self._forward_float32
            out.append(forward(batch).numpy())
        raw = np.concatenate(out)
        return calibrate(raw, self.metadata.get("calibration")) if calibrated else raw


def load_model(name_or_path=None, precision: str | None = None, threads: int | None = None):
    """The model to run: a .lite file on ONNX Runtime (no TensorFlow; what a shipped
    name gives; `threads`: see lite.LiteModel), or a .keras file on Keras (needs TensorFlow)."""
    from fercli.tf_quiet import tensorflow_available

    path = resolve_model_path(name_or_path)
    if path.name.endswith(LITE_SUFFIX):
        return LiteModel(path, precision, threads)
    read_metadata(path)   # a sentence for a damaged file, before anything loads
    if not tensorflow_available():
        raise UserError(f'{path} is a Keras model: running it needs TensorFlow (pip install "fercli[train]"); '
                        f"or, where TensorFlow is, `fercli export {path}` makes a .lite file that runs without it.")
    return EmotionModel(path, precision)


def keras_model_for(model):
    """The Keras model (inference.EmotionModel) a model runs: itself, or for a
    .lite file the Keras model it carries, else the .keras file it was exported
    from (explain needs gradients)."""
    if hasattr(model, "keras_model"):
        return model
    from fercli.tf_quiet import require_tensorflow

    require_tensorflow("explaining a prediction")
    if carries_keras_model(model.path):
        return EmotionModel(model.path)
    source = model.metadata.get("lite", {}).get("from", "")
    candidate = model.path.parent / source
    if source and candidate.is_file():
        return EmotionModel(candidate)
    raise UserError(f"explaining needs the Keras model that {model.path} was exported from ({source or 'unknown'}); "
                    "give it with --model FILE.keras.")


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
