"""Batched, vectorised training augmentation in Keras ops, so it runs on
TensorFlow and on Keras' JAX backend alike. The random parameters come from a
NumPy generator: a batch's augmentation depends only on
the generator, whichever thread or backend computes it."""
import math

import numpy as np
from keras import ops


def augment_batch(images, rng: np.random.Generator, max_rotation=15.0, max_shift=0.1, scale=(0.9, 1.1), erase_prob=0.5):
    """uint8 (B, S, S) -> float32 (B, S, S, 1) in 0..255: random flip, rotation,
    scale, shift, brightness/contrast and random erasing."""
    batch, size = images.shape[0], float(images.shape[1])
    uniform = lambda lo, hi: rng.uniform(lo, hi, batch).astype(np.float32)
    x = ops.cast(images, "float32")[..., None]

    flip = uniform(0.0, 1.0) < 0.5
    x = ops.where(flip[:, None, None, None], ops.flip(x, axis=2), x)

    # One projective transform per image: output pixel -> input pixel.
    angle = uniform(-max_rotation, max_rotation) * (math.pi / 180.0)
    zoom = uniform(*scale)
    shift_x = uniform(-max_shift, max_shift) * size
    shift_y = uniform(-max_shift, max_shift) * size
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    centre = (size - 1.0) / 2.0
    transforms = np.stack([
        cos, -sin, centre - cos * centre + sin * centre + shift_x,
        sin, cos, centre - sin * centre - cos * centre + shift_y,
        np.zeros(batch), np.zeros(batch),
    ], axis=1).astype(np.float32)
    x = ops.image.affine_transform(x, transforms, interpolation="bilinear", fill_mode="reflect", data_format="channels_last")

    mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
    contrast = uniform(0.75, 1.25)[:, None, None, None]
    brightness = uniform(-25.0, 25.0)[:, None, None, None]
    x = (x - mean) * contrast + mean + brightness

    # Random erasing: one rectangle per chosen image, filled with noise-free grey.
    grid = np.arange(size, dtype=np.float32)
    cy, cx = uniform(0.0, 1.0) * size, uniform(0.0, 1.0) * size
    half_h, half_w = uniform(0.1, 0.25) * size, uniform(0.1, 0.25) * size
    rows = np.abs(grid[None, :] - cy[:, None]) < half_h[:, None]
    cols = np.abs(grid[None, :] - cx[:, None]) < half_w[:, None]
    erase = (uniform(0.0, 1.0) < erase_prob)[:, None, None]
    mask = rows[:, :, None] & cols[:, None, :] & erase
    fill = uniform(0.0, 255.0)[:, None, None, None]
    x = ops.where(mask[..., None], fill, x)
    return ops.clip(x, 0.0, 255.0)
