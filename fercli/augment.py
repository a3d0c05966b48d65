"""Batched, vectorised training augmentation in Keras ops, so it runs on
TensorFlow and on Keras' JAX backend alike. The random parameters come from a
NumPy generator: a batch's augmentation depends only on
the generator, whichever thread or backend computes it."""
import math

import cv2
import numpy as np
from keras import ops


def photo_degrade(images: np.ndarray, rng: np.random.Generator, share: float = 0.5) -> np.ndarray:
    """uint8 (B, S, S) -> uint8 (B, S, S): a random `share` of the faces spoilt
    as photographs and video spoil them, each in one or more of these ways:
    seen smaller and enlarged (a face of 16-40 px), out of focus, sensor
    noise, JPEG blocks, a gamma (lighting) and a contrast change (make-up,
    exposure). The rest stay as they are."""
    out = images.copy()
    size = images.shape[1]
    for i in np.nonzero(rng.random(len(images)) < share)[0]:
        face = out[i]
        if rng.random() < 0.4:
            small = int(rng.integers(16, 41))
            face = cv2.resize(cv2.resize(face, (small, small), interpolation=cv2.INTER_AREA), (size, size),
                              interpolation=cv2.INTER_LINEAR if rng.random() < 0.5 else cv2.INTER_CUBIC)
        if rng.random() < 0.3:
            face = cv2.GaussianBlur(face, (0, 0), rng.uniform(0.5, 1.5))
        if rng.random() < 0.3:
            face = np.clip(face + rng.normal(0, rng.uniform(3, 12), face.shape), 0, 255).astype(np.uint8)
        if rng.random() < 0.3:
            face = cv2.imdecode(cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 60))])[1],
                                cv2.IMREAD_GRAYSCALE)
        if rng.random() < 0.4:
            gamma = np.exp(rng.uniform(-0.5, 0.5))
            face = (255.0 * (face / 255.0) ** gamma).astype(np.uint8)
        out[i] = face
    return out


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
