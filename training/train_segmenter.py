"""Train the lesion segmenter: a U-Net whose encoder is the ImageNet EfficientNet-Lite0 (or Lite1, `--encoder`).

Skips come from the encoder's stride 2/4/8/16 stages, the bottleneck is its stride-32 block. The
decoder predicts at stride 2 and upsamples the logits (full-resolution convolutions would double
the cost on 2 CPU cores for little Dice). Trained on all three classes of the train sides of BUSI
and BUS-UCLM, so normal scans teach an empty mask; loss = binary cross-entropy + per-image Dice on
lesion scans, weighted per scan (`training.finetune.scan_weights`; since rule 84, before which the
weights scaled whole batches). Each epoch is scored by its best validation lesion Dice over the
post-processing grid (threshold, peak threshold, minimum area, the normal gate: no lesion drawn when
the classifier's normal probability reaches it) with at most 10 % of each source's normal validation
scans flagged; the best epoch is kept, with that post-processing.

With `--encoder-from CLASSIFIER` the encoder is the trained classifier's, frozen, at its input size,
and only the decoder trains: serving can then run one encoder pass for both models.

With `--init-from SEGMENTER` training starts from a trained segmenter's weights (and its input size)
instead of ImageNet's: a few more epochs under another loss (e.g. `--normal-presence-weight`) cost
minutes instead of a full run. Use `--head-epochs 0`: its decoder is trained already.

    python -m training.train_segmenter [--encoder lite1] [--epochs 24] [--seed 7] [--sources ...] [--encoder-from models/classifier]
                                       [--init-from models/segmenter] [--out models/segmenter]
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import scipy.stats
import tensorflow as tf

from inference.models import load_model
from inference.postprocess import hidden_by_normal_gate, kept_components, labelled_components
from training.architectures import SEG_GRADCAM_LAYER, build_segmenter
from training.busi import REPO_ROOT, TRAINING_SOURCES
from training.efficientnet_lite import copy_encoder, load_imagenet_weights
from training.finetune import (PREPROCESSING, SelectOnValidation, augmentation_options, fit_new_layers, fit_two_phases,
                               load_side, load_training_data, normal_probability, per_source, predict_in_batches,
                               save_model, train_dataset, training_parser, training_splits)

MAX_NORMAL_FP_RATE = 0.10
POSTPROCESSING_KEYS = ("threshold", "peak_threshold", "min_area_fraction", "largest_only", "normal_gate",
                       "normal_gate_spares")
# Classifier normal probability from which no lesion is drawn; None: the classifier's verdict never hides a
# lesion. Below 0.5 too: a classifier calibrated otherwise (the Lite1 one) rates normal scans lower.
NORMAL_GATES = (None, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
GATE_SPARES = (None, 0.9, 0.95, 0.99)  # segmenter peak from which the gate leaves a lesion drawn; None: never


def dice_bce_loss(y_true, y_pred):
    """Per scan, binary cross-entropy + (1 - soft Dice) on the scans that have a lesion: per image, like
    the metric, so small lesions weigh as much as large ones. Normal scans (empty masks, where Dice is
    undefined) are taught by the cross-entropy term. A vector over the batch, so that Keras weighs each
    scan by its sample weight (`training.finetune.scan_weights`): one number for the whole batch was
    scaled by the batch's mean weight, and which scan carried the weight made no difference. The Dice
    term is scaled by batch / lesion scans, so the batch's mean is, unweighted, the mean cross-entropy
    plus the mean Dice loss over its lesion scans."""
    y_true = tf.reshape(tf.cast(y_true, y_pred.dtype), tf.shape(y_pred))
    intersection = tf.reduce_sum(y_true * y_pred, axis=(1, 2, 3))
    truth, predicted = tf.reduce_sum(y_true, axis=(1, 2, 3)), tf.reduce_sum(y_pred, axis=(1, 2, 3))
    dice = (2 * intersection + 1) / (truth + predicted + 1)
    has_lesion = tf.cast(truth > 0, y_pred.dtype)
    return (keras.losses.binary_crossentropy(y_true, y_pred, axis=(1, 2, 3))
            + (1 - dice) * has_lesion * _per_scan_share(has_lesion))


def _per_scan_share(members):
    """batch size / members of the batch (at least 1): the factor that turns a per-scan term on those
    members into one whose batch mean is the members' mean."""
    return tf.cast(tf.size(members), members.dtype) / tf.maximum(tf.reduce_sum(members), 1.0)


def with_normal_presence(loss, weight: float):
    """`loss` plus, on the scans without a lesion, `weight` x -log(1 - the map's highest probability):
    the pixel-averaged cross-entropy barely notices one confident blob on a normal scan, yet that blob
    is a lesion drawn on a normal scan. Per scan, as `loss` (its batch mean: the mean over the normal
    scans). 0 adds nothing."""
    if weight == 0:
        return loss

    def combined(y_true, y_pred):
        truth = tf.reduce_sum(tf.reshape(tf.cast(y_true, y_pred.dtype), tf.shape(y_pred)), axis=(1, 2, 3))
        normal = tf.cast(truth == 0, y_pred.dtype)
        peak = tf.reduce_max(y_pred, axis=(1, 2, 3))
        presence = -tf.math.log(tf.maximum(1 - peak, keras.config.epsilon()))
        return loss(y_true, y_pred) + weight * presence * normal * _per_scan_share(normal)

    return combined


@dataclass(frozen=True)
class Components:
    """The connected components of one scan's lesion map above one threshold: their pixel areas,
    highest probabilities and pixels inside the true lesion, with the true lesion's area and the
    map's size. Every post-processing setting at that threshold is scored from these without drawing
    the scan again: the grid labels each map once per threshold, not once per setting (42 s a grid
    on the validation sides, too slow to score every epoch by; about 2 s this way)."""
    areas: np.ndarray
    peaks: np.ndarray
    overlaps: np.ndarray
    truth_area: int
    pixels: int

    def scores(self, min_area: float, largest_only: bool, peak_threshold: float | None) -> tuple[float, bool, float]:
        """(Dice against the truth, anything drawn, highest probability inside the drawing or 0) of
        the mask `lesion_mask` draws with these settings."""
        keep = kept_components(self.areas, self.peaks, self.pixels, min_area, largest_only, peak_threshold)
        drawn_area = int(self.areas[keep].sum())
        total = drawn_area + self.truth_area
        dice = 1.0 if total == 0 else 2 * float(self.overlaps[keep].sum()) / total
        return dice, drawn_area > 0, float(self.peaks[keep].max()) if drawn_area else 0.0


def components(probs: np.ndarray, truth: np.ndarray, threshold: float) -> Components:
    """The `Components` of a (H, W) lesion map `probs` at `threshold`, against the boolean `truth`."""
    labels, areas, peaks = labelled_components(probs, threshold)
    return Components(areas=areas, peaks=peaks, overlaps=np.bincount(labels[truth], minlength=len(areas) + 1)[1:],
                      truth_area=int(truth.sum()), pixels=probs.size)


def _scans_components(probs: np.ndarray, val: dict, threshold: float) -> list[Components]:
    return [components(p, m > 0, threshold) for p, m in zip(probs, val["masks"])]


def _mask_scores(scans: list[Components], min_area: float, largest_only: bool, peak_threshold: float | None = None):
    """Per scan: Dice of the post-processed mask against the truth, whether anything is drawn, and
    the highest lesion probability inside what is drawn (0 when nothing is)."""
    rows = np.array([scan.scores(min_area, largest_only, peak_threshold) for scan in scans], dtype=float).reshape(-1, 3)
    return rows[:, 0], rows[:, 1].astype(bool), rows[:, 2]


def shown_scores(dice: np.ndarray, drawn: np.ndarray, hidden: np.ndarray, val: dict) -> dict:
    """Mean lesion Dice (a hidden lesion scores 0) with its standard error, the share of lesion scans
    with nothing shown, and the share of normal scans with a lesion shown, pooled and per source."""
    lesion, shown = val["labels"] > 0, drawn & ~hidden
    by_source = {source: float(shown[index][~lesion[index]].mean())
                 for source, index in per_source(val) if (~lesion[index]).any()} if "source" in val else {}
    lesion_dice = np.where(hidden, 0.0, dice)[lesion]
    return {"val_dice": float(lesion_dice.mean()),
            "val_dice_se": float(scipy.stats.sem(lesion_dice)) if len(lesion_dice) > 1 else 0.0,
            "val_nothing_shown": float((~shown[lesion]).mean()),
            "val_normal_fp": float(shown[~lesion].mean()) if (~lesion).any() else 0.0,
            "val_normal_fp_by_source": by_source}


def validation_scores(probs: np.ndarray, val: dict, threshold: float, min_area: float = 0.0,
                      largest_only: bool = False, p_normal: np.ndarray | None = None, gate: float | None = None,
                      spares: float | None = None, peak_threshold: float | None = None):
    """(mean Dice over lesion scans, share of normal scans with any predicted lesion). A scan whose
    drawing the normal gate hides (`hidden_by_normal_gate` with the classifier's `p_normal`) gets an
    empty mask."""
    dice, drawn, peaks = _mask_scores(_scans_components(probs, val, threshold), min_area, largest_only, peak_threshold)
    hidden = hidden_by_normal_gate(p_normal, peaks, gate, spares)
    scores = shown_scores(dice, drawn, hidden, val)
    return scores["val_dice"], scores["val_normal_fp"]


def alone_at_half(probs: np.ndarray, val: dict) -> dict:
    """Per source, the segmenter alone (threshold 0.5, no minimum area, no gate): lesion Dice, lesion
    scans missed, normal scans flagged, keyed `<source>_dice@0.5` etc. Fixed post-processing, so a
    source no choice was made on (cross-source validation) is scored the same way as the others."""
    dice, drawn, _ = _mask_scores(_scans_components(probs, val, 0.5), 0.0, False)
    metrics = {}
    for source, index in per_source(val):
        lesion = val["labels"][index] > 0
        metrics.update({f"{source}_dice@0.5": float(dice[index][lesion].mean()),
                        f"{source}_missed@0.5": float((~drawn[index][lesion]).mean()),
                        f"{source}_normal_fp@0.5": float(drawn[index][~lesion].mean())})
    return metrics


def own_side(val: dict, sources) -> tuple[np.ndarray, dict]:
    """Which validation scans come from the `sources` a model was trained on, and those scans: epochs
    and post-processing are chosen there, the other sources are only scored."""
    own = np.isin(val["source"], [TRAINING_SOURCES.index(source) for source in sources])
    return own, {key: value[own] for key, value in val.items()}


def worst_normal_fp(scores: dict) -> float:
    """The highest share of normal scans flagged over the validation sources (pooled when unknown):
    a rule that flags few of one scanner's normals but many of another's fails that scanner's users."""
    return max(scores["val_normal_fp_by_source"].values(), default=scores["val_normal_fp"])


# peak_threshold: None, or a level above the threshold that a component's peak must reach to be drawn.
FULL_GRID = {"threshold": (0.3, 0.4, 0.5, 0.6, 0.7), "peak_threshold": (None, 0.5, 0.6, 0.7, 0.8, 0.9),
             "min_area_fraction": (0.0, 0.0025, 0.005, 0.01, 0.02)}


RECTANGLE_GATES = tuple({"normal_gate": gate, "normal_gate_spares": spares} for gate in NORMAL_GATES
                        for spares in (GATE_SPARES if gate is not None else (None,)))
NO_GATE = ({"normal_gate": None, "normal_gate_spares": None},)


def mask_grid(probs: np.ndarray, val: dict, grid=FULL_GRID) -> list[tuple[dict, tuple]]:
    """Every setting of `grid` (threshold, the peak a component must reach to be drawn — strictly above
    the threshold, or None —, minimum component area as a fraction of the image, largest component
    only) with its per-scan (Dice, drawn, peak inside the drawing) on `val`: the costly part of a
    choice, computed once however many gates are then tried on it."""
    results = []
    for threshold in grid["threshold"]:
        scans = _scans_components(probs, val, threshold)
        results += [({"threshold": threshold, "peak_threshold": peak_threshold, "min_area_fraction": min_area,
                      "largest_only": largest_only}, _mask_scores(scans, min_area, largest_only, peak_threshold))
                    for peak_threshold, min_area, largest_only in itertools.product(
                        grid.get("peak_threshold", (None,)), grid["min_area_fraction"], (False, True))
                    if peak_threshold is None or peak_threshold > threshold]
    return results


def gated_results(masks: list[tuple[dict, tuple]], val: dict, p_normal=None, gates=RECTANGLE_GATES,
                  hide=hidden_by_normal_gate) -> list[dict]:
    """The scores (`shown_scores`) of every setting of `mask_grid` under every gate of `gates` (keyword
    arguments of `hide`, which says from the classifier's `p_normal` and the segmenter's peaks which
    drawings the gate hides); without `p_normal`, no gate."""
    if p_normal is None:
        gates, hide = NO_GATE, hidden_by_normal_gate
    return [{**setting, **gate, **shown_scores(dice, drawn, hide(p_normal, peaks, **gate), val)}
            for setting, (dice, drawn, peaks) in masks for gate in gates]


def best_allowed(results: list[dict]) -> dict:
    """The result with the best validation Dice among those that flag at most MAX_NORMAL_FP_RATE of
    each source's normal scans (else the one with the fewest flags)."""
    allowed = [r for r in results if worst_normal_fp(r) <= MAX_NORMAL_FP_RATE]
    return (max(allowed, key=lambda r: r["val_dice"]) if allowed
            else min(results, key=lambda r: (worst_normal_fp(r), -r["val_dice"])))


def choose_postprocessing(probs, val, p_normal=None, grid=FULL_GRID):
    """Post-processing with the best validation lesion Dice among those that flag at most
    MAX_NORMAL_FP_RATE of each source's normal scans (`best_allowed` over `mask_grid`) and — when the
    classifier's validation normal probabilities `p_normal` are given — the normal gate: the
    probability from which no lesion is drawn. A gate, unlike "argmax is normal", leaves a lesion
    visible when the classifier is unsure. With a gate, also the segmenter peak from which it spares a
    lesion (`normal_gate_spares`): a classifier that calls an unfamiliar scanner's lesions normal
    should not hide one the segmenter is sure of."""
    results = gated_results(mask_grid(probs, val, grid), val, p_normal)
    return best_allowed(results), results


def trade_off_frontier(results: list[dict]) -> list[dict]:
    """The settings of a post-processing grid that no other beats on both validation Dice and the worst
    source's share of normal scans flagged, by that share: the trade the choice was made on, kept in
    the training record (the whole grid, thousands of settings, would bloat config.json)."""
    ranked = sorted(results, key=lambda r: (worst_normal_fp(r), -r["val_dice"]))
    frontier, best_dice = [], -1.0
    for row in ranked:
        if row["val_dice"] > best_dice:
            frontier.append(row)
            best_dice = row["val_dice"]
    return frontier


def classifier_normal_probability(classifier: Path | None, limit: int = 0) -> np.ndarray | None:
    """The classifier's (in folder `classifier`) calibrated normal probability on each validation
    scan, framed as it frames them (what serving will see); None without a classifier."""
    if not classifier or not (classifier / "model.keras").exists():
        return None
    loaded = load_model(str(classifier))
    c = loaded.config
    return normal_probability(loaded, load_side("val", c["input_size"], limit, c.get("framing", {}), TRAINING_SOURCES)["images"])


def lesion_probabilities(loaded, images: np.ndarray) -> np.ndarray:
    """(N, size, size) lesion probabilities of a loaded segmenter on framed model inputs."""
    return predict_in_batches(tf.function(lambda x: loaded.model(x, training=False)), images)[..., 0]


def revalidate_postprocessing(args):
    """Re-choose the post-processing of the model in `args.out` on the validation sides of the sources
    it was trained on (as training chose it), weights untouched."""
    loaded = load_model(str(args.out))
    val = load_side("val", loaded.config["input_size"], args.limit, loaded.config.get("framing", {}))
    own, own_val = own_side(val, loaded.config["training"]["sources"])
    probs = lesion_probabilities(loaded, own_val["images"])
    p_normal = classifier_normal_probability(args.classifier, args.limit)
    searched = {**FULL_GRID, "peak_threshold": (None, *args.peak_thresholds)}
    best, grid = choose_postprocessing(probs, own_val, None if p_normal is None else p_normal[own], searched)
    print(f"post-processing {best}", flush=True)
    config = {**loaded.config, **{key: best[key] for key in POSTPROCESSING_KEYS}}
    config["training"].pop("postprocessing_grid", None)  # the whole grid of an earlier choice, recorded before the frontier
    config["training"].update(val_dice=best["val_dice"], val_normal_fp=best["val_normal_fp"],
                              val_normal_fp_by_source=best["val_normal_fp_by_source"],
                              postprocessing_frontier=trade_off_frontier(grid))
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def main(argv=None):
    parser = training_parser(__doc__, size=256, head_epochs=2, epochs=24, batch_size=8, lr=3e-4,
                             out=REPO_ROOT / "models" / "segmenter")
    parser.add_argument("--classifier", type=Path, default=REPO_ROOT / "models" / "classifier",
                        help="shipped classifier, to validate 'no lesion on scans it calls normal' ('' to skip)")
    parser.add_argument("--normal-presence-weight", type=float, default=0.0,
                        help="weight of the loss on the highest lesion probability of normal scans (0: none)")
    parser.add_argument("--encoder-from", type=Path,
                        help="a trained classifier folder: take its encoder, frozen, and its input size (--size ignored)")
    parser.add_argument("--init-from", type=Path,
                        help="a trained segmenter folder: start from its weights and input size (--size ignored)")
    parser.add_argument("--keep-validation-maps", action="store_true",
                        help="also save every epoch's validation lesion maps (float16, --out/validation_maps/"
                             "epoch_NN.npy, scans in load_training_data's order): to compare ways of choosing the "
                             "epoch on one half of the validation scans and scoring them on the other")
    parser.add_argument("--postprocessing-only", action="store_true",
                        help="keep the weights in --out; re-choose its post-processing on validation "
                             "(after the classifier changed)")
    parser.add_argument("--peak-thresholds", type=float, nargs="*", default=[t for t in FULL_GRID["peak_threshold"] if t],
                        help="with --postprocessing-only: the peaks a drawn lesion may be asked to reach "
                             "(none given: only the threshold decides)")
    args = parser.parse_args(argv)
    if args.postprocessing_only:
        return revalidate_postprocessing(args)
    keras.utils.set_random_seed(args.seed)
    started = time.time()
    if args.encoder_from:
        encoder_source = load_model(str(args.encoder_from))
        args.size, args.encoder = encoder_source.config["input_size"], encoder_source.encoder
    if args.init_from:
        start = load_model(str(args.init_from))
        args.size, args.encoder = start.config["input_size"], start.encoder
    framing, train, val = load_training_data(args)
    model = build_segmenter(args.size, args.encoder)
    if args.encoder_from:
        copied = copy_encoder(encoder_source.model, model)
        print(f"encoder from {args.encoder_from}: {copied} layers, frozen", flush=True)
    elif args.init_from:
        model.set_weights(start.model.get_weights())
        print(f"weights from {args.init_from}", flush=True)
    else:
        load_imagenet_weights(model, args.encoder)
    probs_fn = tf.function(lambda x: model(x, training=False))

    p_normal = classifier_normal_probability(args.classifier, args.limit)

    # Epochs and post-processing are chosen on the validation sides of the sources trained on; the
    # others' (a single-source run) are only scored: cross-source validation (python -m training.cross_source).
    own, own_val = own_side(val, args.sources)
    own_p_normal = None if p_normal is None else p_normal[own]

    def evaluate():
        """Epoch score: the best constrained validation Dice over the whole post-processing grid, the
        choice the kept epoch then gets; and per source, the segmenter alone at threshold 0.5: lesion
        Dice, lesion scans missed, normal scans flagged. A coarser grid ranks epochs by something
        else: it scored the shipped segmenter 0.687 where the whole grid scores 0.786."""
        probs = predict_in_batches(probs_fn, val["images"])[..., 0]
        if args.keep_validation_maps:
            maps_dir = args.out / "validation_maps"
            maps_dir.mkdir(parents=True, exist_ok=True)
            np.save(maps_dir / f"epoch_{len(selector.history) + 1:02d}.npy", probs.astype(np.float16))
        best, _ = choose_postprocessing(probs[own], own_val, own_p_normal)
        worst = worst_normal_fp(best)
        penalty = 0.0 if worst <= MAX_NORMAL_FP_RATE else worst
        return best["val_dice"] - penalty, {"best_dice": best["val_dice"], "best_normal_fp": worst,
                                            **alone_at_half(probs, val)}

    selector = SelectOnValidation(evaluate, args.average_from)
    train_ds = train_dataset(train, args.batch_size, args.seed, **augmentation_options(args),
                             targets=lambda masks, labels, weights: (masks, weights))
    fit = fit_new_layers if args.encoder_from else fit_two_phases
    loss = with_normal_presence(dice_bce_loss, args.normal_presence_weight)
    fit(model, train_ds, len(train["labels"]), loss, selector, args)

    val_probs = predict_in_batches(probs_fn, val["images"])[..., 0]
    best, grid = choose_postprocessing(val_probs[own], own_val, own_p_normal)
    best_epoch = selector.best_epoch
    print(f"best epoch {best_epoch}; post-processing {best}", flush=True)

    save_model(lambda: build_segmenter(args.size, args.encoder), model, args.out, {
        "task": "segmentation",
        "input_size": args.size,
        "preprocessing": PREPROCESSING,
        "training_splits": training_splits(args.sources),
        "framing": framing,
        "logits_layer": "mask_logits",
        "gradcam_layer": SEG_GRADCAM_LAYER,
        **{key: best[key] for key in POSTPROCESSING_KEYS},
        "training": {"sources": args.sources, "encoder": args.encoder, "seed": args.seed,
                     "encoder_from": str(args.encoder_from) if args.encoder_from else None,
                     "init_from": ({"model": str(args.init_from), "minutes": start.config["training"].get("minutes")}
                                   if args.init_from else None),
                     "normal_presence_weight": args.normal_presence_weight, "head_epochs": args.head_epochs, "epochs": args.epochs,
                     "batch_size": args.batch_size, "lr": args.lr, "average_from": args.average_from,
                     **augmentation_options(args),
                     "best_epoch": best_epoch, "epochs_averaged": selector.history[best_epoch - 1]["epochs_averaged"],
                     "val_dice": best["val_dice"], "val_normal_fp": best["val_normal_fp"],
                     "val_normal_fp_by_source": best["val_normal_fp_by_source"],
                     "minutes": round((time.time() - started) / 60, 1), "history": selector.history,
                     "postprocessing_frontier": trade_off_frontier(grid)},
    })


if __name__ == "__main__":
    main()
