"""Compare candidate segmenters on the validation sides, from their training records.

Each `python -m training.train_segmenter ... --out FOLDER` run records in `FOLDER/config.json` the
post-processing it chose on the pooled validation sides and that choice's lesion Dice and share of
normal scans flagged. This collects them side by side, so a candidate is kept or dropped on
validation alone (test sides are read only for the one kept).

    python -m training.candidates models/segmenter runs/candidate ... [--out reports/segmenter_candidates.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.busi import REPO_ROOT

OPTIONS = ("encoder_from", "init_from", "normal_presence_weight", "lr", "head_epochs", "epochs", "seed", "minutes", "best_epoch")
CHOICE = ("threshold", "min_area_fraction", "largest_only", "normal_gate")


def validation_record(folder: Path) -> dict:
    config = json.loads((folder / "config.json").read_text())
    training = config["training"]
    return {"input_size": config["input_size"],
            **{key: training.get(key) for key in OPTIONS},
            "chosen_postprocessing": {key: config[key] for key in CHOICE},
            "val_dice": round(training["val_dice"], 4), "val_normal_fp": round(training["val_normal_fp"], 4),
            "val_normal_fp_by_source": {source: round(share, 4) for source, share
                                        in training.get("val_normal_fp_by_source", {}).items()}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates", nargs="+", type=Path, help="segmenter folders with config.json")
    parser.add_argument("--out", type=Path, help="write the comparison as JSON here")
    args = parser.parse_args(argv)
    rows = {(p.resolve().relative_to(REPO_ROOT).as_posix() if p.resolve().is_relative_to(REPO_ROOT) else str(p)):
            validation_record(p) for p in args.candidates}
    for name, row in rows.items():
        print(f"{name:28s} val Dice {row['val_dice']:.3f}, normals flagged {row['val_normal_fp']:.3f} "
              f"{row['val_normal_fp_by_source']}, "
              f"gate {row['chosen_postprocessing']['normal_gate']}")
    if args.out:
        args.out.write_text(json.dumps({"command": "python -m training.candidates " + " ".join(rows), "candidates": rows},
                                       indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
