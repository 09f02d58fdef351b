"""What the classifier and segmenter training share: augmentation, datasets, freezing, saving."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from training.arrays import load_arrays, subsample
from training.busi import REPO_ROOT, SOURCES
from training.split import samples_by_side

# The stride-2/4 stem stays at its ImageNet weights: generic edges, and the costliest layers to train.
FROZEN_PREFIXES = ("stem_", "block0_", "block1_", "block2_")
# The split files whose train side teaches and whose validation side chooses; recorded in every
# model's config so evaluation can tell which held-out scans a model has seen.
TRAINING_SPLITS = [SOURCES["busi"].split_csv.relative_to(REPO_ROOT).as_posix()]


def augment(images, masks):
    """Random crop (80-100 % of the side), horizontal flip, gain and offset; the masks get the same
    geometry. No vertical flip: the transducer is always at the top of a scan."""
    batch, size = tf.shape(images)[0], images.shape[1]
    stacked = tf.concat([images, masks[..., None]], axis=-1)
    stacked = tf.image.random_flip_left_right(stacked)
    scale = tf.random.uniform([batch], 0.8, 1.0)
    offset_y = tf.random.uniform([batch], 0, 1) * (1 - scale)
    offset_x = tf.random.uniform([batch], 0, 1) * (1 - scale)
    boxes = tf.stack([offset_y, offset_x, offset_y + scale, offset_x + scale], axis=1)
    stacked = tf.image.crop_and_resize(stacked, boxes, tf.range(batch), [size, size])
    gain = tf.random.uniform([batch, 1, 1, 1], 0.8, 1.2)
    bias = tf.random.uniform([batch, 1, 1, 1], -20, 20)
    images = tf.clip_by_value(stacked[..., :3] * gain + bias, 0, 255)
    return images, tf.cast(stacked[..., 3:] > 0.5, tf.float32)


def train_dataset(arrays: dict, batch_size: int, seed: int, targets):
    """Shuffled, augmented float batches of `(images, *targets(masks, labels))`: scans and lesion masks
    share one random geometry, and `targets` turns them into what the model's losses expect."""
    ds = tf.data.Dataset.from_tensor_slices((arrays["images"], arrays["masks"], arrays["labels"]))
    ds = ds.shuffle(len(arrays["labels"]), seed=seed, reshuffle_each_iteration=True).batch(batch_size)

    def prepare(images, masks, labels):
        images, masks = augment(tf.cast(images, tf.float32), tf.cast(masks, tf.float32))
        return (images, *targets(masks, labels))

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def set_trainable(model: keras.Model, backbone: bool):
    """BatchNorm of the encoder stays in inference mode (batches are too small to re-estimate it),
    the stem is frozen, the rest of the encoder follows `backbone`; every other layer trains."""
    for layer in model.layers:
        if layer.name.startswith(FROZEN_PREFIXES):
            layer.trainable = False
        elif layer.name.startswith(("block", "top_")):
            layer.trainable = backbone and not isinstance(layer, layers.BatchNormalization)


def predict_in_batches(fn, images: np.ndarray, batch_size: int = 32):
    """`fn` over `images` in batches; its output (an array, or a tuple of them) concatenated."""
    batches = [fn(images[i : i + batch_size].astype(np.float32)) for i in range(0, len(images), batch_size)]
    if isinstance(batches[0], (tuple, list)):
        return tuple(np.concatenate([np.asarray(b[k]) for b in batches]) for k in range(len(batches[0])))
    return np.concatenate([np.asarray(b) for b in batches])


def save_model(build, model: keras.Model, out: Path, config: dict):
    """Save a fresh, uncompiled copy of `model` (no optimizer state, ~3x smaller) and its config."""
    out.mkdir(parents=True, exist_ok=True)
    clean = build()
    clean.set_weights(model.get_weights())
    clean.save(out / "model.keras")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"saved {out / 'model.keras'}", flush=True)


def training_parser(doc: str, *, size: int, head_epochs: int, epochs: int, batch_size: int, lr: float,
                    out: Path) -> argparse.ArgumentParser:
    """The options both trainers take, with each one's defaults."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=size, help="input side in pixels")
    parser.add_argument("--head-epochs", type=int, default=head_epochs, help="epochs with the encoder frozen")
    parser.add_argument("--epochs", type=int, default=epochs, help="epochs with the encoder (past the stem) training")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate of the fine-tuning phase")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--limit", type=int, default=0, help="use only about N train/val scans (smoke test)")
    parser.add_argument("--out", type=Path, default=out)
    return parser


def load_train_val(size: int, limit: int) -> tuple[dict, dict]:
    sides = samples_by_side()
    train = load_arrays(subsample(sides["train"], limit), size)
    val = load_arrays(subsample(sides["val"], limit), size)
    print(f"train {len(train['labels'])} scans, val {len(val['labels'])} scans, {size}px", flush=True)
    return train, val


class SelectOnValidation(keras.callbacks.Callback):
    """After every epoch, scores the model on validation with `evaluate() -> (score, metrics)` and
    keeps the best weights in memory: early stopping without ever looking at the test side."""

    def __init__(self, evaluate):
        super().__init__()
        self.evaluate = evaluate
        self.best_score, self.best_weights, self.history = -np.inf, None, []

    def on_epoch_end(self, epoch, logs=None):
        score, metrics = self.evaluate()
        self.history.append({"epoch": len(self.history) + 1, "loss": float(logs["loss"]), "val_score": score, **metrics})
        print("  val: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()) + f", score {score:.3f}", flush=True)
        if score > self.best_score:
            self.best_score, self.best_weights = score, self.model.get_weights()

    @property
    def best_epoch(self) -> int:
        return max(self.history, key=lambda h: h["val_score"])["epoch"]


def fit_two_phases(model, train_ds, n_train: int, loss, selector: SelectOnValidation, args, **fit_kwargs):
    """Phase 1: new layers only (encoder frozen), lr 1e-3. Phase 2: encoder past the stem too,
    cosine-decayed from `args.lr`. Ends with the best validation weights loaded."""
    print("phase 1: encoder frozen", flush=True)
    set_trainable(model, backbone=False)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4), loss=loss)
    model.fit(train_ds, epochs=args.head_epochs, callbacks=[selector], verbose=2, **fit_kwargs)

    print("phase 2: encoder past the stem trains too", flush=True)
    set_trainable(model, backbone=True)
    steps = args.epochs * int(np.ceil(n_train / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4), loss=loss)
    model.fit(train_ds, epochs=args.epochs, callbacks=[selector], verbose=2, **fit_kwargs)
    model.set_weights(selector.best_weights)
