"""Train the normal/benign/malignant classifier: an ImageNet EfficientNet-Lite encoder (Lite0, or Lite1 as
shipped: `--encoder`), fine-tuned on the train sides of BUSI and BUS-UCLM (`--sources` picks one, for
cross-source validation).

Two phases on the train sides: a few epochs of the new head alone, then the encoder past its stem and the
head together with a cosine-decayed learning rate. On lesion scans a second loss (weight
`--attention-weight`) asks the benign and malignant class-activation maps to peak on the lesion: the
model is taught to take its evidence from the lesion, not from text, calipers or the image frame. BatchNorm stays in inference mode (batches of 16 are
too small to re-estimate its statistics) and the stride-2/4 stem is frozen, which also saves time on
2 CPU cores. Class imbalance: inverse-frequency class weights, times the per-source scan weights.
The epoch with the best validation score (mean of Recall_BM and macro AUC, averaged over the training
sources' validation sides) is kept; test sides are never read here. Every training source's
validation side is scored every epoch, so a single-source run shows its cross-source numbers. A
temperature is then fitted on the pooled validation logits.

    python -m training.train_classifier [--encoder lite1] [--epochs 16] [--seed 7] [--attention-weight W] [--sources ...]
                                        [--average-from EPOCH] [--zoom-crop 0.3] [--stretch] [--out models/classifier]
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from training.architectures import FEATURE_STRIDE, GRADCAM_LAYER, build_classifier, with_class_maps
from training.busi import CLASSES, REPO_ROOT
from training.efficientnet_lite import load_imagenet_weights
from training.evaluate import peak_inside
from training.finetune import (PREPROCESSING, SelectOnValidation, augmentation_options, fit_two_phases, load_training_data,
                               per_source, predict_in_batches, save_model, train_dataset, training_parser, training_splits)
from training.metrics import (BENIGN, MALIGNANT, calibrated, classification_metrics, expected_calibration_error, selection_score,
                              fit_temperature)

VALIDATION_METRICS = ("accuracy", "recall_normal", "recall_bm", "recall_malignant", "macro_auc", "bm_auc",
                      "lesions_called_normal")
LESION_CLASSES = tf.constant([float(c in (BENIGN, MALIGNANT)) for c in range(len(CLASSES))])


def lesion_cells(masks: tf.Tensor) -> tf.Tensor:
    """(B, S, S, 1) lesion masks -> (B, S/32, S/32, 1) 0/1: the feature-map cells holding at least
    half as much lesion as the fullest cell, so even a small lesion has one. All 0 without a lesion."""
    coverage = tf.nn.avg_pool2d(masks, FEATURE_STRIDE, FEATURE_STRIDE, "VALID")
    fullest = tf.reduce_max(coverage, axis=(1, 2, 3), keepdims=True)
    return tf.cast((coverage >= 0.5 * fullest) & (fullest > 0), tf.float32)


def lesion_attention_loss(weight: float):
    """Per scan, `weight` x -log(share of each lesion class's spatial-softmax map on the lesion cells),
    summed over benign and malignant; 0 on scans without a lesion."""

    def loss(target_cells, cell_logits):
        batch = tf.shape(cell_logits)[0]
        log_share = tf.nn.log_softmax(tf.reshape(cell_logits, [batch, -1, len(CLASSES)]), axis=1)
        target = tf.reshape(target_cells, [batch, -1, 1])
        on_lesion = tf.reduce_logsumexp(tf.where(target > 0, log_share, -1e9), axis=1)  # (B, classes)
        has_lesion = tf.reduce_max(target, axis=1) > 0
        return weight * tf.reduce_sum(tf.where(has_lesion, -on_lesion, 0.0) * LESION_CLASSES, axis=-1)

    return loss


def pointing_game_at_input_size(cells: np.ndarray, probs: np.ndarray, masks: np.ndarray, dilation_px: int = 4) -> float:
    """Training-time estimate of the pointing game at the model's input size, with the evaluation's
    own peak test: share of lesion scans whose predicted class's map peaks inside the lesion."""
    predicted = probs.argmax(axis=1)

    def unit_range(cam):  # the evaluation's maps are 0..1; only the peak's place matters here
        span = cam.max() - cam.min()
        return (cam - cam.min()) / span if span else np.zeros_like(cam)

    return float(np.mean([peak_inside(unit_range(cells[i, ..., predicted[i]]), masks[i].astype(bool), dilation_px)
                          for i in np.flatnonzero(masks.any(axis=(1, 2)))]))


def validation_metrics(logits: np.ndarray, val: dict, sources) -> tuple[float, dict]:
    """(score, metrics) of uncalibrated `logits` on the validation scans `val`: every source's numbers,
    and the score = mean over `sources` (those trained on) of (Recall_BM + macro AUC) / 2."""
    probs = calibrated(logits, 1.0)
    metrics, scores = {}, []
    for source, idx in per_source(val):
        m = classification_metrics(probs[idx], val["labels"][idx])
        metrics.update({f"{source}_{key}": m[key] for key in VALIDATION_METRICS})
        if source in sources:
            scores.append(selection_score(m))
    return float(np.mean(scores)), metrics


def class_weights(labels) -> np.ndarray:
    """Inverse class frequency, one weight per class index (unweighted counts: a frame is a scan).
    Times the per-scan source weights, the classes carry 0.28 / 0.34 / 0.38 of the loss (BUS-UCLM's
    down-weighted frames are mostly normal). Counting over the weights instead, so that each carries a
    third, was tried (classifier card, rule 31): more lesions called normal on the renderings panel."""
    return compute_class_weight("balanced", classes=np.arange(len(CLASSES)), y=labels)


def main(argv=None):
    parser = training_parser(__doc__, size=224, head_epochs=3, epochs=16, batch_size=16, lr=3e-4, zoom_crop=0.3,
                             out=REPO_ROOT / "models" / "classifier")
    parser.add_argument("--attention-weight", type=float, default=0.3,
                        help="weight of the loss that asks the lesion classes' maps to peak on the lesion")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    started = time.time()
    framing, train, val = load_training_data(args)

    model = build_classifier(args.size, args.encoder)
    load_imagenet_weights(model, args.encoder)
    trainer = with_class_maps(model)
    logits_model = keras.Model(model.input, [model.get_layer("logits").output, trainer.output["cells"]])
    logits_fn = tf.function(lambda x: tuple(logits_model(x, training=False)))

    def evaluate():
        logits, cells = predict_in_batches(logits_fn, val["images"])
        score, metrics = validation_metrics(logits, val, args.sources)
        metrics["pointing_224"] = pointing_game_at_input_size(cells, calibrated(logits, 1.0), val["masks"])
        return score, metrics

    selector = SelectOnValidation(evaluate, args.average_from)
    train["weights"] = train["weights"] * class_weights(train["labels"])[train["labels"]]
    train_ds = train_dataset(train, args.batch_size, args.seed, **augmentation_options(args),
                             targets=lambda masks, labels, weights: ({"probs": labels, "cells": lesion_cells(masks)}, weights))
    losses = {"probs": keras.losses.SparseCategoricalCrossentropy(), "cells": lesion_attention_loss(args.attention_weight)}
    fit_two_phases(trainer, train_ds, len(train["labels"]), losses, selector, args)

    val_logits = predict_in_batches(logits_fn, val["images"])[0]
    temperature = fit_temperature(val_logits, val["labels"])
    ece_before = expected_calibration_error(calibrated(val_logits, 1.0), val["labels"])
    ece_after = expected_calibration_error(calibrated(val_logits, temperature), val["labels"])
    best_epoch = selector.best_epoch
    print(f"best epoch {best_epoch} (val score {selector.best_score:.3f}); temperature {temperature:.3f}, "
          f"val ECE {ece_before:.3f} -> {ece_after:.3f}", flush=True)

    save_model(lambda: build_classifier(args.size, args.encoder), model, args.out, {
        "task": "classification",
        "classes": list(CLASSES),
        "input_size": args.size,
        "preprocessing": PREPROCESSING,
        "training_splits": training_splits(args.sources),
        "framing": framing,
        "logits_layer": "logits",
        "gradcam_layer": GRADCAM_LAYER,
        "temperature": temperature,
        "training": {"sources": args.sources, "encoder": args.encoder, "seed": args.seed, "head_epochs": args.head_epochs, "epochs": args.epochs,
                     "batch_size": args.batch_size, "lr": args.lr,
                     "attention_weight": args.attention_weight, "average_from": args.average_from,
                     **augmentation_options(args),
                     "best_epoch": best_epoch, "epochs_averaged": selector.history[best_epoch - 1]["epochs_averaged"],
                     "val_ece_before": ece_before, "val_ece_after": ece_after,
                     "minutes": round((time.time() - started) / 60, 1), "history": selector.history},
    })


if __name__ == "__main__":
    main()
