"""Train the lesion segmenter: a U-Net whose encoder is the ImageNet EfficientNet-Lite0.

Skips come from the encoder's stride 2/4/8/16 stages, the bottleneck is its stride-32 block. The
decoder predicts at stride 2 and upsamples the logits (full-resolution convolutions would double
the cost on 2 CPU cores for little Dice). Trained on all three classes, so normal scans teach an
empty mask; loss = batch Dice + binary cross-entropy. The epoch with the best validation lesion
Dice is kept, then the threshold and the minimum lesion area are chosen on validation.

    python -m training.train_segmenter [--epochs 20] [--seed 7] [--out models/segmenter]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from inference.postprocess import lesion_mask
from training.arrays import load_arrays, subsample
from training.busi import REPO_ROOT
from training.efficientnet_lite import encoder_features, load_imagenet_weights
from training.finetune import predict_in_batches, save_model, set_trainable, train_dataset
from training.metrics import dice_iou
from training.split import samples_by_side

BOTTLENECK_LAYER = "block15_out"
DECODER_CHANNELS = {16: 128, 8: 64, 4: 32, 2: 16}
MAX_NORMAL_FP_RATE = 0.10


def _conv_bn_relu(x, channels, name):
    x = layers.Conv2D(channels, 3, padding="same", use_bias=False, name=name + "_conv")(x)
    return layers.ReLU(name=name + "_relu")(layers.BatchNormalization(name=name + "_bn")(x))


def build_segmenter(size: int) -> keras.Model:
    """Flat U-Net: image (RGB 0..255) -> `mask_logits` (pre-sigmoid, for Seg-Grad-CAM) -> `mask_probs`."""
    image = keras.Input((size, size, 3), name="image")
    features = encoder_features(image, head=False)
    x = features[32]
    for stride, channels in DECODER_CHANNELS.items():
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"decoder{stride}_up")(x)
        x = layers.Concatenate(name=f"decoder{stride}_concat")([x, features[stride]])
        x = _conv_bn_relu(x, channels, f"decoder{stride}_a")
        x = _conv_bn_relu(x, channels, f"decoder{stride}_b")
    x = layers.Conv2D(1, 1, name="decoder_logits")(x)
    logits = layers.UpSampling2D(2, interpolation="bilinear", name="mask_logits")(x)
    probs = layers.Activation("sigmoid", name="mask_probs")(logits)
    return keras.Model(image, probs, name="busi_segmenter")


def dice_bce_loss(y_true, y_pred):
    """Soft Dice over the whole batch (defined even when every mask in it is empty) + BCE."""
    y_true = tf.reshape(tf.cast(y_true, y_pred.dtype), tf.shape(y_pred))
    intersection = tf.reduce_sum(y_true * y_pred)
    dice = (2 * intersection + 1) / (tf.reduce_sum(y_true) + tf.reduce_sum(y_pred) + 1)
    return 1 - dice + keras.losses.binary_crossentropy(y_true, y_pred, axis=(1, 2, 3))


def validation_scores(probs: np.ndarray, masks: np.ndarray, labels: np.ndarray, threshold: float, min_area: float):
    """(mean Dice over lesion scans, share of normal scans with any predicted lesion)."""
    predicted = [lesion_mask(p, threshold, min_area) for p in probs]
    lesion = labels > 0
    dice = np.mean([dice_iou(p, m > 0)[0] for p, m, l in zip(predicted, masks, lesion) if l])
    normal_fp = np.mean([p.any() for p, l in zip(predicted, lesion) if not l]) if (~lesion).any() else 0.0
    return float(dice), float(normal_fp)


class SelectOnValidation(keras.callbacks.Callback):
    def __init__(self, probs_fn, val):
        super().__init__()
        self.probs_fn, self.val = probs_fn, val
        self.best_score, self.best_weights, self.history = -1.0, None, []

    def on_epoch_end(self, epoch, logs=None):
        probs = predict_in_batches(self.probs_fn, self.val["images"])[..., 0]
        dice, normal_fp = validation_scores(probs, self.val["masks"], self.val["labels"], 0.5, 0.0)
        self.history.append({"epoch": len(self.history) + 1, "loss": float(logs["loss"]),
                             "val_dice": dice, "val_normal_fp": normal_fp})
        print(f"  val: lesion dice {dice:.3f}, normal scans with a lesion {normal_fp:.3f}", flush=True)
        if dice > self.best_score:
            self.best_score, self.best_weights = dice, self.model.get_weights()


def choose_postprocessing(probs, val):
    """Threshold and minimum component area (fraction of the image) with the best validation lesion
    Dice among those that flag at most MAX_NORMAL_FP_RATE of normal scans (else the fewest flags)."""
    results = []
    for threshold in (0.3, 0.4, 0.5, 0.6, 0.7):
        for min_area in (0.0, 0.001, 0.0025, 0.005, 0.01, 0.02):
            dice, fp = validation_scores(probs, val["masks"], val["labels"], threshold, min_area)
            results.append({"threshold": threshold, "min_area_fraction": min_area, "val_dice": dice, "val_normal_fp": fp})
    allowed = [r for r in results if r["val_normal_fp"] <= MAX_NORMAL_FP_RATE]
    best = max(allowed, key=lambda r: r["val_dice"]) if allowed else min(results, key=lambda r: (r["val_normal_fp"], -r["val_dice"]))
    return best, results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--head-epochs", type=int, default=2, help="epochs with the encoder frozen")
    parser.add_argument("--epochs", type=int, default=20, help="epochs with the encoder (past the stem) training")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--limit", type=int, default=0, help="use only about N train/val scans (smoke test)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "models" / "segmenter")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    started = time.time()

    sides = samples_by_side()
    train = load_arrays(subsample(sides["train"], args.limit), args.size)
    val = load_arrays(subsample(sides["val"], args.limit), args.size)
    print(f"train {len(train['labels'])} scans, val {len(val['labels'])} scans, {args.size}px", flush=True)

    model = build_segmenter(args.size)
    load_imagenet_weights(model)
    probs_fn = tf.function(lambda x: model(x, training=False))
    selector = SelectOnValidation(probs_fn, val)
    train_ds = train_dataset(train["images"], train["masks"], args.batch_size, args.seed, targets_are_masks=True)

    print("phase 1: decoder only", flush=True)
    set_trainable(model, backbone=False)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4), loss=dice_bce_loss)
    model.fit(train_ds, epochs=args.head_epochs, callbacks=[selector], verbose=2)

    print("phase 2: encoder past the stem, and decoder", flush=True)
    set_trainable(model, backbone=True)
    steps = args.epochs * int(np.ceil(len(train["labels"]) / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4), loss=dice_bce_loss)
    model.fit(train_ds, epochs=args.epochs, callbacks=[selector], verbose=2)

    model.set_weights(selector.best_weights)
    val_probs = predict_in_batches(probs_fn, val["images"])[..., 0]
    best, grid = choose_postprocessing(val_probs, val)
    best_epoch = max(selector.history, key=lambda h: h["val_dice"])["epoch"]
    print(f"best epoch {best_epoch}; threshold {best['threshold']}, min area {best['min_area_fraction']}: "
          f"val dice {best['val_dice']:.3f}, normal FP {best['val_normal_fp']:.3f}", flush=True)

    save_model(lambda: build_segmenter(args.size), model, args.out, {
        "task": "segmentation",
        "input_size": args.size,
        "preprocessing": "greyscale scan stretched to input_size x input_size (bilinear), repeated to 3 "
                         "channels, raw 0..255; the model applies (x - 127) / 128 itself",
        "logits_layer": "mask_logits",
        "gradcam_layer": BOTTLENECK_LAYER,
        "threshold": best["threshold"],
        "min_area_fraction": best["min_area_fraction"],
        "training": {"seed": args.seed, "head_epochs": args.head_epochs, "epochs": args.epochs,
                     "batch_size": args.batch_size, "lr": args.lr, "best_epoch": best_epoch,
                     "val_dice": best["val_dice"], "val_normal_fp": best["val_normal_fp"],
                     "minutes": round((time.time() - started) / 60, 1), "history": selector.history,
                     "postprocessing_grid": grid},
    })


if __name__ == "__main__":
    main()
