"""Batched, vectorised training augmentation (TensorFlow ops on whole batches)."""
import math

import tensorflow as tf


def augment_batch(images, max_rotation=15.0, max_shift=0.1, scale=(0.9, 1.1), erase_prob=0.5):
    """uint8 (B, S, S) -> float32 (B, S, S, 1) in 0..255: random flip, rotation,
    scale, shift, brightness/contrast and random erasing."""
    x = tf.cast(images, tf.float32)[..., None]
    batch = tf.shape(x)[0]
    size = tf.cast(tf.shape(x)[1], tf.float32)
    uniform = lambda lo, hi: tf.random.uniform([batch], lo, hi)

    flip = uniform(0.0, 1.0) < 0.5
    x = tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)

    # One projective transform per image: output pixel -> input pixel.
    angle = uniform(-max_rotation, max_rotation) * (math.pi / 180.0)
    zoom = uniform(*scale)
    shift_x = uniform(-max_shift, max_shift) * size
    shift_y = uniform(-max_shift, max_shift) * size
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    centre = (size - 1.0) / 2.0
    transforms = tf.stack([
        cos, -sin, centre - cos * centre + sin * centre + shift_x,
        sin, cos, centre - sin * centre - cos * centre + shift_y,
        tf.zeros([batch]), tf.zeros([batch]),
    ], axis=1)
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=tf.shape(x)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")

    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    contrast = uniform(0.75, 1.25)[:, None, None, None]
    brightness = uniform(-25.0, 25.0)[:, None, None, None]
    x = (x - mean) * contrast + mean + brightness

    # Random erasing: one rectangle per chosen image, filled with noise-free grey.
    grid = tf.range(size)
    cy, cx = uniform(0.0, 1.0) * size, uniform(0.0, 1.0) * size
    half_h, half_w = uniform(0.1, 0.25) * size, uniform(0.1, 0.25) * size
    rows = tf.abs(grid[None, :] - cy[:, None]) < half_h[:, None]
    cols = tf.abs(grid[None, :] - cx[:, None]) < half_w[:, None]
    erase = (uniform(0.0, 1.0) < erase_prob)[:, None, None]
    mask = rows[:, :, None] & cols[:, None, :] & erase
    fill = uniform(0.0, 255.0)[:, None, None, None]
    x = tf.where(mask[..., None], fill, x)
    return tf.clip_by_value(x, 0.0, 255.0)
