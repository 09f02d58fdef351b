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

import time

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from training.busi import CLASSES, REPO_ROOT
from training.finetune import (SelectOnValidation, fit_two_phases, load_train_val, predict_in_batches, save_model,
                               train_dataset, training_parser)
from training.efficientnet_lite import encoder_features, load_imagenet_weights
from training.metrics import calibrated, classification_metrics, expected_calibration_error, fit_temperature

GRADCAM_LAYER = "top_activation"


def build_classifier(size: int) -> keras.Model:
    """Flat model: image (RGB 0..255) -> `logits` (pre-softmax, for Grad-CAM) -> `probs`."""
    image = keras.Input((size, size, 3), name="image")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(encoder_features(image)["top"])
    x = layers.Dropout(0.3, name="head_dropout")(x)
    logits = layers.Dense(len(CLASSES), name="logits")(x)
    probs = layers.Softmax(name="probs")(logits)
    return keras.Model(image, probs, name="busi_classifier")


def class_weights(labels):
    counts = np.bincount(labels, minlength=len(CLASSES))
    return {c: float(len(labels) / (len(CLASSES) * counts[c])) for c in range(len(CLASSES))}


def main(argv=None):
    args = training_parser(__doc__, size=224, head_epochs=3, epochs=16, batch_size=16, lr=3e-4,
                           out=REPO_ROOT / "models" / "classifier").parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    started = time.time()
    train, val = load_train_val(args.size, args.limit)

    model = build_classifier(args.size)
    load_imagenet_weights(model)
    logits_model = keras.Model(model.input, model.get_layer("logits").output)
    logits_fn = tf.function(lambda x: logits_model(x, training=False))

    def evaluate():
        m = classification_metrics(calibrated(predict_in_batches(logits_fn, val["images"]), 1.0), val["labels"])
        keys = ("accuracy", "recall_bm", "recall_malignant", "macro_auc")
        return (m["recall_bm"] + m["macro_auc"]) / 2, {k: m[k] for k in keys}

    selector = SelectOnValidation(evaluate)
    train_ds = train_dataset(train["images"], train["labels"], args.batch_size, args.seed, targets_are_masks=False)
    fit_two_phases(model, train_ds, len(train["labels"]), keras.losses.SparseCategoricalCrossentropy(), selector,
                   args, class_weight=class_weights(train["labels"]))

    val_logits = predict_in_batches(logits_fn, val["images"])
    temperature = fit_temperature(val_logits, val["labels"])
    ece_before = expected_calibration_error(calibrated(val_logits, 1.0), val["labels"])
    ece_after = expected_calibration_error(calibrated(val_logits, temperature), val["labels"])
    best_epoch = selector.best_epoch
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
