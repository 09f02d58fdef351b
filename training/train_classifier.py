"""Train the normal/benign/malignant classifier: ImageNet EfficientNet-Lite0, fine-tuned on BUSI.

Two phases on the train side: a few epochs of the new head alone, then blocks 3..15 and the head
together with a cosine-decayed learning rate. BatchNorm stays in inference mode (batches of 16 are
too small to re-estimate its statistics) and the stride-2/4 stem is frozen, which also saves time on
2 CPU cores. Class imbalance: inverse-frequency class weights. The epoch with the best validation
score (mean of Recall_BM and macro AUC) is kept; the test side is never read here. A temperature is
then fitted on validation logits.

    python -m training.train_classifier [--epochs 16] [--seed 7] [--out models/classifier]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from training.arrays import load_arrays, subsample
from training.busi import CLASSES, REPO_ROOT
from training.finetune import predict_in_batches, save_model, set_trainable, train_dataset
from training.efficientnet_lite import encoder_features, load_imagenet_weights
from training.metrics import calibrated, classification_metrics, expected_calibration_error, fit_temperature
from training.split import samples_by_side

GRADCAM_LAYER = "top_activation"


def build_classifier(size: int) -> keras.Model:
    """Flat model: image (RGB 0..255) -> `logits` (pre-softmax, for Grad-CAM) -> `probs`."""
    image = keras.Input((size, size, 3), name="image")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(encoder_features(image)["top"])
    x = layers.Dropout(0.3, name="head_dropout")(x)
    logits = layers.Dense(len(CLASSES), name="logits")(x)
    probs = layers.Softmax(name="probs")(logits)
    return keras.Model(image, probs, name="busi_classifier")


class SelectOnValidation(keras.callbacks.Callback):
    """Scores each epoch on validation and keeps the best weights in memory."""

    def __init__(self, logits_model, val):
        super().__init__()
        self.logits_model, self.val = logits_model, val
        self.best_score, self.best_weights, self.history = -1.0, None, []

    def on_epoch_end(self, epoch, logs=None):
        logits = predict_in_batches(self.logits_model, self.val["images"])
        m = classification_metrics(calibrated(logits, 1.0), self.val["labels"])
        score = (m["recall_bm"] + m["macro_auc"]) / 2
        self.history.append({"epoch": len(self.history) + 1, "loss": float(logs["loss"]), "val_score": score,
                             **{k: m[k] for k in ("accuracy", "recall_bm", "recall_malignant", "macro_auc")}})
        print(f"  val: acc {m['accuracy']:.3f} recall_bm {m['recall_bm']:.3f} "
              f"malignant {m['recall_malignant']:.3f} macro_auc {m['macro_auc']:.3f} score {score:.3f}", flush=True)
        if score > self.best_score:
            self.best_score, self.best_weights = score, self.model.get_weights()


def class_weights(labels):
    counts = np.bincount(labels, minlength=len(CLASSES))
    return {c: float(len(labels) / (len(CLASSES) * counts[c])) for c in range(len(CLASSES))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--head-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=16, help="fine-tuning epochs after the head phase")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--limit", type=int, default=0, help="use only N train/val scans (smoke test)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "models" / "classifier")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    started = time.time()

    sides = samples_by_side()
    train = load_arrays(subsample(sides["train"], args.limit), args.size)
    val = load_arrays(subsample(sides["val"], args.limit), args.size)
    print(f"train {len(train['labels'])} scans, val {len(val['labels'])} scans, {args.size}px", flush=True)

    model = build_classifier(args.size)
    load_imagenet_weights(model)
    logits_model = keras.Model(model.input, model.get_layer("logits").output)
    logits_fn = tf.function(lambda x, training=False: logits_model(x, training=training))
    selector = SelectOnValidation(logits_fn, val)
    weights = class_weights(train["labels"])
    loss = keras.losses.SparseCategoricalCrossentropy()
    train_ds = train_dataset(train["images"], train["labels"], args.batch_size, args.seed, targets_are_masks=False)

    print("phase 1: head only", flush=True)
    set_trainable(model, backbone=False)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4), loss=loss)
    model.fit(train_ds, epochs=args.head_epochs, class_weight=weights, callbacks=[selector], verbose=2)

    print("phase 2: blocks 3..15 and head", flush=True)
    set_trainable(model, backbone=True)
    steps = args.epochs * int(np.ceil(len(train["labels"]) / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4), loss=loss)
    model.fit(train_ds, epochs=args.epochs, class_weight=weights, callbacks=[selector], verbose=2)

    model.set_weights(selector.best_weights)
    val_logits = predict_in_batches(logits_fn, val["images"])
    temperature = fit_temperature(val_logits, val["labels"])
    ece_before = expected_calibration_error(calibrated(val_logits, 1.0), val["labels"])
    ece_after = expected_calibration_error(calibrated(val_logits, temperature), val["labels"])
    best_epoch = max(selector.history, key=lambda h: h["val_score"])["epoch"]
    print(f"best epoch {best_epoch} (val score {selector.best_score:.3f}); temperature {temperature:.3f}, "
          f"val ECE {ece_before:.3f} -> {ece_after:.3f}", flush=True)

    save_model(lambda: build_classifier(args.size), model, args.out, {
        "task": "classification",
        "classes": list(CLASSES),
        "input_size": args.size,
        "preprocessing": "greyscale scan stretched to input_size x input_size (bilinear), repeated to 3 "
                         "channels, raw 0..255; the model applies (x - 127) / 128 itself",
        "logits_layer": "logits",
        "gradcam_layer": GRADCAM_LAYER,
        "temperature": temperature,
        "training": {"seed": args.seed, "head_epochs": args.head_epochs, "epochs": args.epochs,
                     "batch_size": args.batch_size, "lr": args.lr, "best_epoch": best_epoch,
                     "val_ece_before": ece_before, "val_ece_after": ece_after,
                     "minutes": round((time.time() - started) / 60, 1), "history": selector.history},
    })


if __name__ == "__main__":
    main()
