"""Score single-source classifiers or segmenters on all of the source they were not trained on but its test side.

Cross-source validation (`training.ensemble` on single-source runs) scores a run trained on one source
on the other source's validation side: BUS-UCLM's holds 104 frames of 9 patients, 14 of them malignant;
BUSI's 115 scans. On so few scans a recipe's mean over three seeds moves by as much as any recipe
change tried (classifier card, rules 36 to 42). A run trained on one source never saw any side of the
other, and chose its epoch and temperature on its own source's validation side, so the other source's
train side is as unseen as its validation side: scored on both, the unseen sample is 5 to 6 times
larger (BUS-UCLM: 30 patients, 53 malignant frames; BUSI: 647 scans, 173 malignant). Test sides stay
unread. A classifier's numbers are the trainer's (argmax of the uncalibrated probabilities; score =
(Recall_BM + macro AUC) / 2), in the report form of `training.ensemble`, so `training.tables` renders
both alike. A segmenter's are the segmenter alone (no classifier gate): at threshold 0.5
(`training.train_segmenter.alone_at_half`, as cross-source validation scores it every epoch) and at
matched shares of normal scans flagged and at its own post-processing (`training.operating_points`).

    python -m training.unseen_source runs/xs_cls_busi_zoom_lite1_s9 runs/xs_cls_busi_zoom_lite1_s10 ...
                                     [--out reports/unseen_source_classifiers_busi.json]
    python -m training.unseen_source runs/xs_seg_busi_s7 runs/xs_seg_busi_s8 ... [--out reports/unseen_source_segmenters_busi.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from inference.models import load_model
from training.busi import TRAINING_SOURCES
from training.finetune import chosen_epoch, load_side, logits_function, predict_in_batches
from training.operating_points import operating_points
from training.train_classifier import validation_metrics
from training.train_segmenter import alone_at_half, lesion_probabilities

UNSEEN_SIDES = ("train", "val")


def source_sides(source: str, size: int, framing: dict, limit: int = 0, sides=UNSEEN_SIDES) -> dict:
    """The `sides` of one source (default: every non-test side, what a model that never saw it is scored
    on), framed for a model, concatenated, with `source` indexed as in TRAINING_SOURCES (the index
    `training.finetune.per_source` reads)."""
    parts = [load_side(side, size, limit, framing, (source,)) for side in sides]
    arrays = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    arrays["source"] = np.full(len(arrays["labels"]), TRAINING_SOURCES.index(source))
    return arrays


def single_source(loaded_runs) -> str | None:
    """The one source every loaded run was trained on; None when they were not all trained on the same
    single source (cross-source scoring needs one)."""
    trained_on = {tuple(loaded.config["training"]["sources"]) for loaded in loaded_runs}
    return next(iter(trained_on))[0] if len(trained_on) == 1 and len(next(iter(trained_on))) == 1 else None


def unseen_metrics(loaded, source: str, arrays: dict) -> dict:
    """A model's numbers on one unseen source's scans `arrays`, keyed `<source>_<metric>`."""
    if loaded.config.get("task", "classification") == "segmentation":
        probs = lesion_probabilities(loaded, arrays["images"])
        points = operating_points(probs, arrays, loaded.config)
        return alone_at_half(probs, arrays) | {f"{source}_{key}": value for key, value in points.items()}
    return validation_metrics(predict_in_batches(logits_function(loaded), arrays["images"]), arrays, [source])[1]


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path,
                        help="classifier or segmenter folders (one task), each trained on the same one source")
    parser.add_argument("--limit", type=int, default=0, help="about N scans per side (smoke test)")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    runs = [(folder, load_model(str(folder))) for folder in args.runs]
    source = single_source([loaded for _, loaded in runs])
    if source is None:
        parser.error("the runs must all be trained on the same single source")
    tasks = {loaded.config.get("task", "classification") for _, loaded in runs}
    if len(tasks) != 1:
        parser.error("classifiers or segmenters, not both")
    unseen = [other for other in TRAINING_SOURCES if other != source]
    sides, rows = {}, []
    for folder, loaded in runs:
        size, framing = loaded.config["input_size"], loaded.config.get("framing", {})
        key = json.dumps([size, framing], sort_keys=True)
        if key not in sides:  # runs framed alike share one loaded side
            sides[key] = {other: source_sides(other, size, framing, args.limit) for other in unseen}
        metrics = {}
        for other, arrays in sides[key].items():
            metrics.update(unseen_metrics(loaded, other, arrays))
        # a saved ensemble (training.ensemble --save) kept no epoch of its own
        val_score = chosen_epoch(loaded.config)["val_score"] if "history" in loaded.config["training"] else None
        rows.append({"members": [str(folder)], "val_score": val_score, **metrics})
        print(f"{folder}: " + ", ".join(f"{name} {value:.3f}" for name, value in metrics.items()), flush=True)
    if args.out:
        args.out.write_text(json.dumps({
            "command": "python -m training.unseen_source " + " ".join(str(f) for f in args.runs),
            "task": next(iter(tasks)), "side": " + ".join(UNSEEN_SIDES), "trained_on": [source],
            "scans": {other: int(len(arrays["labels"])) for other, arrays in next(iter(sides.values())).items()},
            "rows": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
