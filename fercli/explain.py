"""Class activation maps (Grad-CAM on the last convolutional layer): which
parts of a face crop drove a prediction."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fercli.errors import UserError


def _last_conv_features(model):
    """(the model holding it, the last Conv2D layer's rectified output layer),
    searching nested models (ensemble members) too. Grad-CAM wants the feature
    map after batch norm and ReLU: the raw convolution can be negative wherever
    the face is, which leaves an empty map."""
    import keras

    layers = model.layers
    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        if isinstance(layer, keras.layers.Conv2D):
            following = index + 1
            while following < len(layers) and isinstance(
                    layers[following], (keras.layers.BatchNormalization, keras.layers.Activation, keras.layers.ReLU)):
                following += 1
            return model, layers[following - 1]
        if isinstance(layer, keras.Model):
            found = _last_conv_features(layer)
            if found:
                return found
    return None


class Explainer:
    """Grad-CAM on the Keras network (for a .lite model: the .keras file it was exported from)."""

    def __init__(self, emotion_model):
        from fercli.inference import keras_model_for

        emotion_model = keras_model_for(emotion_model)
        import keras

        found = _last_conv_features(emotion_model.keras_model)
        if found is None:
            raise UserError(f"model {emotion_model.name} has no convolutional layer to explain.")
        owner, features = found
        self.model = emotion_model
        self.grad_model = keras.Model(owner.inputs, [features.output, owner.output])

    def heatmaps(self, crops: np.ndarray, class_indices: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S) crops -> float32 (N, S, S) maps in 0..1 for the given classes."""
        from fercli.tf_quiet import tensorflow

        tf = tensorflow()
        x = tf.convert_to_tensor(crops.astype(np.float32)[..., None])
        with tf.GradientTape() as tape:
            activations, probabilities = self.grad_model(x, training=False)
            score = tf.gather(probabilities, tf.constant(class_indices, tf.int32), batch_dims=1)
        gradients = tape.gradient(score, activations)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cams = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1)).numpy()
        size = crops.shape[1]
        out = np.zeros((len(crops), size, size), np.float32)
        for i, cam in enumerate(cams):
            peak = cam.max()
            out[i] = cv2.resize(cam / peak if peak > 0 else cam, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)
        return out


def overlay(crop: np.ndarray, heatmap: np.ndarray, label: str, side: int = 240) -> np.ndarray:
    """The face crop with the heat map over it (JET colours), upscaled, with a caption."""
    face = cv2.cvtColor(cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2BGR)
    heat = cv2.applyColorMap((cv2.resize(heatmap, (side, side)) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    image = cv2.addWeighted(face, 0.55, heat, 0.45, 0)
    cv2.rectangle(image, (0, 0), (side, 24), (0, 0, 0), -1)
    cv2.putText(image, label, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def explain_faces(analyzer, explainer: Explainer, image: np.ndarray, faces, target_class: str | None = None) -> list[np.ndarray]:
    """One overlay image per face, for its predicted class or `target_class`."""
    if not faces:
        return []
    classes = analyzer.classes
    crops = analyzer.crops(image, faces)
    chosen = [target_class or f.emotion for f in faces]
    maps = explainer.heatmaps(crops, np.array([classes.index(c) for c in chosen]))
    return [overlay(crop, heat, f"{c} {face.probabilities[c]:.0%}") for crop, heat, c, face in zip(crops, maps, chosen, faces)]


def explanation_paths(annotated: Path, count: int) -> list[Path]:
    return [annotated.with_name(f"{annotated.stem}.face{i}.cam.png") for i in range(count)]
