"""Custom Keras layers that fercli model files may contain. Imported before any
model is loaded, so the names are registered."""
import keras


@keras.saving.register_keras_serializable(package="fercli")
class FlipHorizontal(keras.layers.Layer):
    """Mirror images left-right (test-time augmentation inside the graph)."""

    def call(self, images):
        return keras.ops.flip(images, axis=2)


@keras.saving.register_keras_serializable(package="fercli")
class CenterZoom(keras.layers.Layer):
    """Enlarge the centre of square images by `factor` (crop, resize back):
    a test-time view close to the scale jitter seen in training."""

    def __init__(self, factor=1.1, **kwargs):
        super().__init__(**kwargs)
        self.factor = float(factor)

    def call(self, images):
        size = images.shape[1]
        crop = int(round(size / self.factor))
        start = (size - crop) // 2
        centre = images[:, start:start + crop, start:start + crop, :]
        return keras.ops.image.resize(centre, (size, size), interpolation="bilinear")

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


class FoldedBatchNorm(keras.layers.Layer):
    """Stands in for a batch norm folded into the convolution before it (inference
    copies only, never saved): passes its input on, accepting a batch norm's call."""

    def call(self, inputs, training=None, mask=None):
        return inputs
