"""Compare candidate segmenters, or candidate classifiers, on the validation sides, from their
training records.

Each `python -m training.train_segmenter ... --out FOLDER` run records in `FOLDER/config.json` the
post-processing it chose on the validation sides and that choice's lesion Dice and share of normal
scans flagged; each `python -m training.train_classifier` run, every validation source's numbers at
every epoch. This collects them side by side, so a candidate is kept or dropped on validation alone
(test sides are read only for the one kept).

    python -m training.candidates models/segmenter runs/candidate ... [--out reports/segmenter_candidates.json]
    python -m training.candidates models/classifier runs/candidate ... [--out reports/classifier_candidates.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from inference.models import load_model
from training.busi import REPO_ROOT, TRAINING_SOURCES
from training.finetune import chosen_epoch, load_side, logits_function, per_source, predict_in_batches
from training.metrics import calibrated, expected_calibration_error
from training.renderings import rendered
from training.train_classifier import validation_metrics
from training.train_segmenter import POSTPROCESSING_KEYS

OPTIONS = ("encoder", "encoder_from", "init_from", "normal_presence_weight", "average_from", "zoom_crop", "lr", "head_epochs",
           "epochs", "seed", "minutes", "best_epoch")
CLASSIFIER_OPTIONS = ("attention_weight", "average_from", "zoom_crop", "ultrasound_shift", "lr",
                      "head_epochs", "epochs", "seed", "minutes", "best_epoch")
CLASSIFIER_METRICS = ("recall_normal", "recall_bm", "macro_auc", "bm_auc", "recall_malignant", "lesions_called_normal")


def classifier_record(folder: Path, config: dict) -> dict:
    """A classifier's options, and its validation numbers re-scored from its saved weights (so models
    trained before a metric existed get it too): the score its training chose by, each source's
    numbers, the calibration error after its temperature, and the same on every rendering of the
    validation scans (`training.renderings`), with their mean score and mean share of lesions called
    normal: the panel a robustness trade is judged on."""
    training = config["training"]
    loaded = load_model(str(folder))
    val = load_side("val", config["input_size"], 0, config.get("framing", {}), TRAINING_SOURCES)
    logits_of = logits_function(loaded)
    logits = predict_in_batches(logits_of, val["images"])
    score, metrics = validation_metrics(logits, val, training["sources"])
    epoch = chosen_epoch(config)

    def by_source(numbers):
        return {source: {key: round(numbers[f"{source}_{key}"], 4) for key in CLASSIFIER_METRICS}
                for source, _ in per_source(val)}

    panel = {}
    for name, images in rendered(val["images"], val["masks"]).items():
        rendering_score, rendering_metrics = validation_metrics(predict_in_batches(logits_of, images), val,
                                                                training["sources"])
        panel[name] = {"val_score": round(rendering_score, 4), "by_source": by_source(rendering_metrics)}
    return {"task": "classification", "input_size": config["input_size"],
            **{key: training.get(key) for key in CLASSIFIER_OPTIONS},
            "epochs_averaged": epoch.get("epochs_averaged", 1), "val_score": round(score, 4),
            "val_ece": round(expected_calibration_error(calibrated(logits, config["temperature"]), val["labels"]), 4),
            "by_source": by_source(metrics), "renderings": panel,
            "panel_score": round(float(np.mean([r["val_score"] for r in panel.values()])), 4),
            "panel_lesions_called_normal": round(float(np.mean(
                [numbers["lesions_called_normal"] for r in panel.values() for numbers in r["by_source"].values()])), 4)}


def validation_record(folder: Path) -> dict:
    config = json.loads((folder / "config.json").read_text())
    training = config["training"]
    if config["task"] == "classification":
        return classifier_record(folder, config)
    return {"task": "segmentation", "input_size": config["input_size"],
            **{key: training.get(key) for key in OPTIONS},
            "chosen_postprocessing": {key: config.get(key) for key in POSTPROCESSING_KEYS},
            "val_dice": round(training["val_dice"], 4), "val_normal_fp": round(training["val_normal_fp"], 4),
            "val_normal_fp_by_source": {source: round(share, 4) for source, share
                                        in training.get("val_normal_fp_by_source", {}).items()}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates", nargs="+", type=Path, help="model folders with config.json (segmenters, or classifiers)")
    parser.add_argument("--out", type=Path, help="write the comparison as JSON here")
    args = parser.parse_args(argv)
    rows = {(p.resolve().relative_to(REPO_ROOT).as_posix() if p.resolve().is_relative_to(REPO_ROOT) else str(p)):
            validation_record(p) for p in args.candidates}
    for name, row in rows.items():
        if row["task"] == "classification":
            print(f"{name:28s} val score {row['val_score']:.3f}, ECE {row['val_ece']:.3f}, {row['by_source']}; "
                  f"panel score {row['panel_score']:.3f}, lesions called normal {row['panel_lesions_called_normal']:.3f}: "
                  + ", ".join(f"{r}: {v['val_score']:.3f}" for r, v in row["renderings"].items()))
            continue
        print(f"{name:28s} val Dice {row['val_dice']:.3f}, normals flagged {row['val_normal_fp']:.3f} "
              f"{row['val_normal_fp_by_source']}, "
              f"gate {row['chosen_postprocessing']['normal_gate']}")
    if args.out:
        args.out.write_text(json.dumps({"command": "python -m training.candidates " + " ".join(rows), "candidates": rows},
                                       indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
