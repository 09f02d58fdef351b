"""Train the lesion segmenter: a U-Net whose encoder is the ImageNet EfficientNet-Lite0.

Skips come from the encoder's stride 2/4/8/16 stages, the bottleneck is its stride-32 block. The
decoder predicts at stride 2 and upsamples the logits (full-resolution convolutions would double
the cost on 2 CPU cores for little Dice). Trained on all three classes, so normal scans teach an
empty mask; loss = binary cross-entropy + per-image Dice on lesion scans. The epoch with the best
validation lesion Dice is kept, then threshold and post-processing are chosen on validation.

    python -m training.train_segmenter [--epochs 24] [--seed 7] [--out models/segmenter]
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from inference.models import load_model
from inference.postprocess import lesion_mask
from training.arrays import load_arrays, subsample
from training.busi import REPO_ROOT
from training.efficientnet_lite import encoder_features, load_imagenet_weights
from training.finetune import (TRAINING_SPLITS, SelectOnValidation, fit_two_phases, load_train_val, predict_in_batches,
                               save_model, train_dataset, training_parser)
from training.metrics import dice_iou
from training.split import samples_by_side

# Seg-Grad-CAM layer: the decoder's bottleneck stage (stride 16, after ReLU). Measured on the
# validation lesion scans: the encoder's stride-32 maps (block15_out, block15_activation) come out
# all zero after the ReLU on 89-94 of 95 scans, this layer never does and its peak lands on the
# lesion in 97 % of them (pointing game).
SEG_GRADCAM_LAYER = "decoder16_b_relu"
DECODER_CHANNELS = {16: 128, 8: 64, 4: 32, 2: 16}
MAX_NORMAL_FP_RATE = 0.10
POSTPROCESSING_KEYS = ("threshold", "min_area_fraction", "largest_only", "suppress_when_classified_normal")


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
    """Binary cross-entropy on every scan + (1 - soft Dice) averaged over the scans that have a
    lesion: per image, like the metric, so small lesions weigh as much as large ones. Normal scans
    (empty masks, where Dice is undefined) are taught by the cross-entropy term."""
    y_true = tf.reshape(tf.cast(y_true, y_pred.dtype), tf.shape(y_pred))
    intersection = tf.reduce_sum(y_true * y_pred, axis=(1, 2, 3))
    truth, predicted = tf.reduce_sum(y_true, axis=(1, 2, 3)), tf.reduce_sum(y_pred, axis=(1, 2, 3))
    dice = (2 * intersection + 1) / (truth + predicted + 1)
    has_lesion = tf.cast(truth > 0, y_pred.dtype)
    dice_loss = tf.math.divide_no_nan(tf.reduce_sum((1 - dice) * has_lesion), tf.reduce_sum(has_lesion))
    return tf.reduce_mean(keras.losses.binary_crossentropy(y_true, y_pred, axis=(1, 2, 3))) + dice_loss


def validation_scores(probs: np.ndarray, val: dict, threshold: float, min_area: float = 0.0,
                      largest_only: bool = False, suppressed: np.ndarray | None = None):
    """(mean Dice over lesion scans, share of normal scans with any predicted lesion). Scans marked
    in `suppressed` (the classifier calls them normal) get an empty mask."""
    predicted = [lesion_mask(p, threshold, min_area, largest_only) for p in probs]
    if suppressed is not None:
        predicted = [np.zeros_like(p) if s else p for p, s in zip(predicted, suppressed)]
    lesion = val["labels"] > 0
    dice = np.mean([dice_iou(p, m > 0)[0] for p, m, l in zip(predicted, val["masks"], lesion) if l])
    normal_fp = np.mean([p.any() for p, l in zip(predicted, lesion) if not l]) if (~lesion).any() else 0.0
    return float(dice), float(normal_fp)


FULL_GRID = {"threshold": (0.3, 0.4, 0.5, 0.6, 0.7), "min_area_fraction": (0.0, 0.0025, 0.005, 0.01, 0.02)}
EPOCH_GRID = {"threshold": (0.4, 0.5, 0.6), "min_area_fraction": (0.0, 0.01)}


def choose_postprocessing(probs, val, calls_normal=None, grid=FULL_GRID):
    """Post-processing with the best validation lesion Dice among those that flag at most
    MAX_NORMAL_FP_RATE of normal scans (else the fewest flags): threshold, minimum component area
    (fraction of the image), largest component only, and — when the classifier's validation verdicts
    `calls_normal` are given — whether to draw no lesion on scans the classifier calls normal."""
    results = []
    gates = (False, True) if calls_normal is not None else (False,)
    for threshold, min_area, largest_only, gate in itertools.product(
            grid["threshold"], grid["min_area_fraction"], (False, True), gates):
        dice, fp = validation_scores(probs, val, threshold, min_area, largest_only, calls_normal if gate else None)
        results.append({"threshold": threshold, "min_area_fraction": min_area, "largest_only": largest_only,
                        "suppress_when_classified_normal": gate, "val_dice": dice, "val_normal_fp": fp})
    allowed = [r for r in results if r["val_normal_fp"] <= MAX_NORMAL_FP_RATE]
    best = max(allowed, key=lambda r: r["val_dice"]) if allowed else min(results, key=lambda r: (r["val_normal_fp"], -r["val_dice"]))
    return best, results


def classifier_verdicts(args) -> np.ndarray | None:
    """Whether the shipped classifier calls each validation scan normal (what serving will see);
    None without a classifier."""
    if not args.classifier or not (args.classifier / "model.keras").exists():
        return None
    loaded = load_model(str(args.classifier))
    images = load_arrays(subsample(samples_by_side()["val"], args.limit), loaded.config["input_size"])["images"]
    fn = tf.function(lambda x: loaded.model(x, training=False))
    return predict_in_batches(fn, images).argmax(axis=1) == loaded.config["classes"].index("normal")


def revalidate_postprocessing(args):
    """Re-choose the post-processing of the model in `args.out` on validation, weights untouched."""
    _, val = load_train_val(args.size, args.limit)
    loaded = load_model(str(args.out))
    probs = predict_in_batches(tf.function(lambda x: loaded.model(x, training=False)), val["images"])[..., 0]
    best, grid = choose_postprocessing(probs, val, classifier_verdicts(args))
    print(f"post-processing {best}", flush=True)
    config = {**loaded.config, **{key: best[key] for key in POSTPROCESSING_KEYS}}
    config["training"].update(val_dice=best["val_dice"], val_normal_fp=best["val_normal_fp"], postprocessing_grid=grid)
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def main(argv=None):
    parser = training_parser(__doc__, size=256, head_epochs=2, epochs=24, batch_size=8, lr=3e-4,
                             out=REPO_ROOT / "models" / "segmenter")
    parser.add_argument("--classifier", type=Path, default=REPO_ROOT / "models" / "classifier",
                        help="shipped classifier, to validate 'no lesion on scans it calls normal' ('' to skip)")
    parser.add_argument("--postprocessing-only", action="store_true",
                        help="keep the weights in --out; re-choose its post-processing on validation "
                             "(after the classifier changed)")
    args = parser.parse_args(argv)
    if args.postprocessing_only:
        return revalidate_postprocessing(args)
    keras.utils.set_random_seed(args.seed)
    started = time.time()
    train, val = load_train_val(args.size, args.limit)

    model = build_segmenter(args.size)
    load_imagenet_weights(model)
    probs_fn = tf.function(lambda x: model(x, training=False))

    calls_normal = classifier_verdicts(args)

    def evaluate():
        """Epoch score: the best constrained validation Dice over a coarse post-processing grid."""
        probs = predict_in_batches(probs_fn, val["images"])[..., 0]
        best, _ = choose_postprocessing(probs, val, calls_normal, EPOCH_GRID)
        penalty = 0.0 if best["val_normal_fp"] <= MAX_NORMAL_FP_RATE else best["val_normal_fp"]
        raw_dice, raw_fp = validation_scores(probs, val, 0.5)
        return best["val_dice"] - penalty, {"dice@0.5": raw_dice, "normal_fp@0.5": raw_fp,
                                            "best_dice": best["val_dice"], "best_normal_fp": best["val_normal_fp"]}

    selector = SelectOnValidation(evaluate)
    train_ds = train_dataset(train, args.batch_size, args.seed, targets=lambda masks, labels: (masks,))
    fit_two_phases(model, train_ds, len(train["labels"]), dice_bce_loss, selector, args)

    val_probs = predict_in_batches(probs_fn, val["images"])[..., 0]
    best, grid = choose_postprocessing(val_probs, val, calls_normal)
    best_epoch = selector.best_epoch
    print(f"best epoch {best_epoch}; post-processing {best}", flush=True)

    save_model(lambda: build_segmenter(args.size), model, args.out, {
        "task": "segmentation",
        "input_size": args.size,
        "preprocessing": "greyscale scan stretched to input_size x input_size (bilinear), repeated to 3 "
                         "channels, raw 0..255; the model applies (x - 127) / 128 itself",
        "training_splits": TRAINING_SPLITS,
        "logits_layer": "mask_logits",
        "gradcam_layer": SEG_GRADCAM_LAYER,
        **{key: best[key] for key in POSTPROCESSING_KEYS},
        "training": {"seed": args.seed, "head_epochs": args.head_epochs, "epochs": args.epochs,
                     "batch_size": args.batch_size, "lr": args.lr, "best_epoch": best_epoch,
                     "val_dice": best["val_dice"], "val_normal_fp": best["val_normal_fp"],
                     "minutes": round((time.time() - started) / 60, 1), "history": selector.history,
                     "postprocessing_grid": grid},
    })


if __name__ == "__main__":
    main()
