"""Custom Keras layers that fercli model files may contain. Imported before any
model is loaded, so the names are registered."""
import keras


@keras.saving.register_keras_serializable(package="fercli")
class FlipHorizontal(keras.layers.Layer):
    """Mirror images left-right (test-time augmentation inside the graph)."""

    def call(self, images):
        return keras.ops.flip(images, axis=2)
