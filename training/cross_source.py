"""Compare candidate classifiers or segmenters by cross-source validation, from their training records.

A candidate trained on one source's train side is scored every epoch on every training source's
validation side (`training.train_classifier --sources busi`, `training.train_segmenter --sources
busi --classifier ''`). In-distribution validation cannot see
scanner shift; the other source's validation side can. This reads each candidate's `config.json`
and reports, at the epoch its own source chose, the other source's validation numbers.

    python -m training.cross_source runs/candidate_a runs/candidate_b [--out reports/cross_source.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.busi import TRAINING_SOURCES
from training.finetune import chosen_epoch
from training.metrics import selection_score


def cross_source_scores(config: dict) -> dict:
    """At the chosen epoch: the training source's own score, and every other source's validation
    numbers (a classifier's also summed up as (Recall_BM + macro AUC) / 2); and each of those
    numbers' range over all epochs."""
    training, epoch = config["training"], chosen_epoch(config)
    out = {"task": config.get("task", "classification"), "trained_on": training["sources"],
           "framing": config.get("framing") or "stretch", "normal_presence_weight": training.get("normal_presence_weight"),
           "init_from": (training.get("init_from") or {}).get("model"),
           "average_from": training.get("average_from") or 0, "epochs_averaged": epoch.get("epochs_averaged", 1),
           "best_epoch": training["best_epoch"], "own_validation_score": epoch["val_score"]}
    ranges = {}
    for source in TRAINING_SOURCES:
        if source not in training["sources"]:
            keys = [key for key in epoch if key.startswith(f"{source}_")]
            out.update({key: epoch[key] for key in keys})
            # how far another epoch, equally plausible to the own source, would have moved it
            ranges.update({key: [min(values), max(values)] for key in keys
                           if None not in (values := [e[key] for e in training["history"]])})
            if f"{source}_recall_bm" in epoch:
                out[f"{source}_score"] = selection_score(epoch, f"{source}_")
    out["range_over_epochs"] = ranges
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates", nargs="+", type=Path, help="model folders with config.json")
    parser.add_argument("--out", type=Path, help="write the comparison as JSON here")
    args = parser.parse_args(argv)
    rows = {folder.name: cross_source_scores(json.loads((folder / "config.json").read_text())) for folder in args.candidates}
    for name, row in rows.items():
        print(name, ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
