"""Would flip test-time augmentation help? Scored on the validation sides only (never a test side).

    python -m training.flip_tta [--out reports/flip_tta_validation.json]

Each shipped model is run on every training source's validation side as it is, and with the mean of
the scan and its mirror image (horizontal flip: breast ultrasound has no left-right convention the
models could rely on). The classifier is compared on benign-vs-malignant AUC, Recall_BM and macro
AUC per source; the segmenter on lesion Dice and normal scans flagged, at the shipped
post-processing and at the post-processing re-chosen on validation for each variant (the way
`training.train_segmenter` chooses it). Both passes cost twice the forward time, so only a clear
validation gain would justify shipping it.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import tensorflow as tf

from inference.models import load_model, source_for
from training.busi import REPO_ROOT
from training.finetune import load_side, logits_function, per_source, predict_in_batches
from training.metrics import calibrated, classification_metrics
from training.train_segmenter import POSTPROCESSING_KEYS, choose_postprocessing, validation_scores

CLASSIFIER_KEYS = ("bm_auc", "recall_bm", "macro_auc", "recall_malignant")


def outputs(fn, images: np.ndarray, flip: bool) -> np.ndarray:
    """`fn` over the images, or the mean of `fn` over the images and over their mirror images
    (mirrored back when the output is a map)."""
    plain = predict_in_batches(fn, images)
    if not flip:
        return plain
    mirrored = predict_in_batches(fn, images[:, :, ::-1])
    return (plain + (mirrored[:, :, ::-1] if mirrored.ndim == 4 else mirrored)) / 2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=REPO_ROOT / "reports" / "flip_tta_validation.json")
    args = parser.parse_args(argv)

    classifier, segmenter = load_model(source_for("classifier")), load_model(source_for("segmenter"))
    c, s = classifier.config, segmenter.config
    classify = logits_function(classifier)
    segment = tf.function(lambda x: segmenter.model(x, training=False))
    class_val = load_side("val", c["input_size"], 0, c.get("framing", {}))
    seg_val = load_side("val", s["input_size"], 0, s.get("framing", {}))
    shipped = {key: s[key] for key in POSTPROCESSING_KEYS}

    report = {"side": "validation", "shipped_postprocessing": shipped}
    for name, flip in (("plain", False), ("flip_tta", True)):
        probs = calibrated(outputs(classify, class_val["images"], flip), c["temperature"])
        p_normal = probs[:, c["classes"].index("normal")]
        lesion_probs = outputs(segment, seg_val["images"], flip)[..., 0]
        variant = {"classifier": {}, "segmenter": {}}
        for source, index in per_source(class_val):
            metrics = classification_metrics(probs[index], class_val["labels"][index])
            variant["classifier"][source] = {key: metrics[key] for key in CLASSIFIER_KEYS}
        for source, index in per_source(seg_val) + [("pooled", np.arange(len(seg_val["labels"])))]:
            part = {key: seg_val[key][index] for key in ("labels", "masks")}
            dice, normal_fp = validation_scores(lesion_probs[index], part, shipped["threshold"],
                                                shipped["min_area_fraction"], shipped["largest_only"], p_normal[index],
                                                shipped["normal_gate"], shipped["normal_gate_spares"],
                                                shipped.get("peak_threshold"))
            variant["segmenter"][source] = {"dice_at_shipped_postprocessing": dice,
                                            "normal_fp_at_shipped_postprocessing": normal_fp}
        best, _ = choose_postprocessing(lesion_probs, seg_val, p_normal)
        variant["segmenter"]["pooled"]["rechosen_postprocessing"] = best
        report[name] = variant
        print(name, json.dumps(variant, indent=1), flush=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
