"""What the classifier and segmenter training share: augmentation, datasets, freezing, saving."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

# The stride-2/4 stem stays at its ImageNet weights: generic edges, and the costliest layers to train.
FROZEN_PREFIXES = ("stem_", "block0_", "block1_", "block2_")


def augment(images, masks=None):
    """Random crop (80-100 % of the side), horizontal flip, gain and offset. Masks, if given, get
    the same geometry. No vertical flip: the transducer is always at the top of a scan."""
    batch, size = tf.shape(images)[0], images.shape[1]
    stacked = images if masks is None else tf.concat([images, masks[..., None]], axis=-1)
    stacked = tf.image.random_flip_left_right(stacked)
    scale = tf.random.uniform([batch], 0.8, 1.0)
    offset_y = tf.random.uniform([batch], 0, 1) * (1 - scale)
    offset_x = tf.random.uniform([batch], 0, 1) * (1 - scale)
    boxes = tf.stack([offset_y, offset_x, offset_y + scale, offset_x + scale], axis=1)
    stacked = tf.image.crop_and_resize(stacked, boxes, tf.range(batch), [size, size])
    gain = tf.random.uniform([batch, 1, 1, 1], 0.8, 1.2)
    bias = tf.random.uniform([batch, 1, 1, 1], -20, 20)
    images = tf.clip_by_value(stacked[..., :3] * gain + bias, 0, 255)
    if masks is None:
        return images
    return images, tf.cast(stacked[..., 3:] > 0.5, tf.float32)


def train_dataset(images, targets, batch_size, seed, targets_are_masks):
    """Shuffled, augmented float batches of (images, targets)."""
    ds = tf.data.Dataset.from_tensor_slices((images, targets))
    ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).batch(batch_size)

    def prepare(x, y):
        x = tf.cast(x, tf.float32)
        if targets_are_masks:
            return augment(x, tf.cast(y, tf.float32))
        return augment(x), y

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def set_trainable(model: keras.Model, backbone: bool):
    """BatchNorm of the encoder stays in inference mode (batches are too small to re-estimate it),
    the stem is frozen, the rest of the encoder follows `backbone`; every other layer trains."""
    for layer in model.layers:
        if layer.name.startswith(FROZEN_PREFIXES):
            layer.trainable = False
        elif layer.name.startswith(("block", "top_")):
            layer.trainable = backbone and not isinstance(layer, layers.BatchNormalization)


def predict_in_batches(fn, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    return np.concatenate([np.asarray(fn(images[i : i + batch_size].astype(np.float32)))
                           for i in range(0, len(images), batch_size)])


def save_model(build, model: keras.Model, out: Path, config: dict):
    """Save a fresh, uncompiled copy of `model` (no optimizer state, ~3x smaller) and its config."""
    out.mkdir(parents=True, exist_ok=True)
    clean = build()
    clean.set_weights(model.get_weights())
    clean.save(out / "model.keras")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"saved {out / 'model.keras'}", flush=True)
