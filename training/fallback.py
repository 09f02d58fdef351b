"""Rule 64: where the segmenter draws nothing but the classifier is sure of a lesion, draw the
segmenter's most likely region (`most_likely_region`; failed its rule, so serving does not have it).

Scored with the shipped pair on the pooled validation sides as they are and in each rendering of
`training.renderings` (each model's input framed at its own size, then rendered; the re-framed
rendering re-frames the masks with the scans): per setting of the grid (classifier lesion probability
`g` from which the fallback draws, the peak `q` the region must reach; none = as shipped), the mean
lesion Dice (nothing shown scores 0), the share of lesion scans with nothing shown and each source's
share of normal scans flagged, the shipped post-processing and normal gate applied first. The segmenter
card has the rule that chooses among them.

    python -m training.fallback [--classifier models/classifier] [--segmenter models/segmenter]
                                [--out reports/fallback_validation.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from inference.models import load_model
from inference.postprocess import hidden_by_normal_gate, lesion_mask, postprocessing
from training.busi import TRAINING_SOURCES
from training.finetune import load_side, logits_function, predict_in_batches
from training.metrics import calibrated, dice_iou
from training.reframe import crop_around_lesions
from training.renderings import rendered
from training.train_segmenter import lesion_probabilities
from training.two_views import peak_region

LESION_PROBABILITIES = (0.6, 0.7, 0.8, 0.9, 0.95)  # g: from 0.6 the normal gate (0.4) cannot hide the drawing
PEAKS = (0.3, 0.5, 0.7)                             # q


def most_likely_region(probs: np.ndarray, threshold: float, min_peak: float) -> np.ndarray:
    """The connected region of `probs` at or above `threshold` that holds its highest value, when that
    value reaches `min_peak`; else nothing."""
    if probs.max() < max(threshold, min_peak):
        return np.zeros(probs.shape, dtype=bool)
    return peak_region(probs >= threshold, probs)


def rendered_pairs(side: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{rendering: (scans, masks)} of one model's framed validation side; only re-framing moves the masks."""
    scans = rendered(side["images"], side["masks"])
    return {name: (images, crop_around_lesions(side["images"], side["masks"])[1] if name == "re-framed" else side["masks"])
            for name, images in scans.items()}


def shipped_drawings(probs: np.ndarray, p_lesion: np.ndarray, config: dict) -> tuple[list[np.ndarray], np.ndarray]:
    """(what serving draws on each scan of a rendering: the shipped post-processing, then the normal
    gate; whether the segmenter drew anything before the gate, the scans the fallback may draw on)."""
    drawings, segmenter_drew = [], []
    for prob, p_les in zip(probs, p_lesion):
        drawn = lesion_mask(prob, **postprocessing(config))
        segmenter_drew.append(drawn.any())
        if drawn.any() and hidden_by_normal_gate(1 - p_les, float(prob[drawn].max()), config.get("normal_gate"),
                                                 config.get("normal_gate_spares")):
            drawn = np.zeros_like(drawn)
        drawings.append(drawn)
    return drawings, np.array(segmenter_drew)


def scores(probs: np.ndarray, masks: np.ndarray, p_lesion: np.ndarray, labels: np.ndarray, source: np.ndarray,
           config: dict, shipped: tuple[list[np.ndarray], np.ndarray], g: float | None, q: float | None) -> dict:
    """One rendering's numbers under the shipped drawings (`shipped_drawings`), with the fallback at
    (g, q) where the segmenter drew nothing (None: without it)."""
    dice, shown = [], []
    for prob, truth, p_les, drawn, segmenter_drew in zip(probs, masks, p_lesion, *shipped):
        if g is not None and p_les >= g and not segmenter_drew:
            drawn = most_likely_region(prob, float(config["threshold"]), q)
        dice.append(dice_iou(drawn, truth > 0)[0])
        shown.append(drawn.any())
    dice, shown, lesion = np.array(dice), np.array(shown), labels > 0
    return {"dice": float(np.where(shown, dice, 0.0)[lesion].mean()), "nothing_shown": float((~shown[lesion]).mean()),
            "normal_fp": {s: float(shown[(source == i) & ~lesion].mean()) for i, s in enumerate(TRAINING_SOURCES)}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", default="models/classifier")
    parser.add_argument("--segmenter", default="models/segmenter")
    parser.add_argument("--out", type=Path, default=Path("reports/fallback_validation.json"))
    args = parser.parse_args(argv)
    classifier, segmenter = load_model(args.classifier), load_model(args.segmenter)
    c, s = classifier.config, segmenter.config
    sides = {name: load_side("val", model.config["input_size"], 0, model.config.get("framing", {}), TRAINING_SOURCES)
             for name, model in (("classifier", classifier), ("segmenter", segmenter))}
    labels, source = sides["segmenter"]["labels"], sides["segmenter"]["source"]
    assert np.array_equal(labels, sides["classifier"]["labels"]), "both sides hold the same scans in the same order"
    class_scans = rendered(sides["classifier"]["images"], sides["classifier"]["masks"])
    logits = logits_function(classifier)
    settings = [(None, None), *itertools.product(LESION_PROBABILITIES, PEAKS)]
    rows = {}
    for name, (seg_scans, masks) in rendered_pairs(sides["segmenter"]).items():
        probs = lesion_probabilities(segmenter, seg_scans.astype(np.float32))
        p = calibrated(predict_in_batches(logits, class_scans[name].astype(np.float32)), c["temperature"])
        p_lesion = 1 - p[:, c["classes"].index("normal")]
        shipped = shipped_drawings(probs, p_lesion, s)
        rows[name] = [{"g": g, "q": q, **scores(probs, masks, p_lesion, labels, source, s, shipped, g, q)}
                      for g, q in settings]
        print(name, json.dumps(rows[name][0]), flush=True)
    report = {"command": "python -m training.fallback" + "".join(
        f" --{k} {v}" for k, v in (("classifier", args.classifier), ("segmenter", args.segmenter))
        if v != f"models/{k}"), "settings": [{"g": g, "q": q} for g, q in settings], "renderings": rows}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
