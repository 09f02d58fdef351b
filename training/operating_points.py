"""Compare single-source segmenters on the source they were not trained on, at matched shares of
normal scans flagged.

The cross-source numbers of `training.cross_source` are the segmenter alone at threshold 0.5: each
run sits at its own point of the trade between finding lesions and drawing on normal scans
(`reports/cross_source_clahe_segmenters.json`: trained on BUSI, the plain run flags most of BUS-UCLM's
normal scans at a high Dice, the CLAHE run few at a lower one), so comparing recipes at that one
point confounds the recipe with where its epoch happened to land.
This scores every post-processing setting of the trainer's grid (threshold, the peak a lesion must
reach, minimum area, largest component only; no classifier gate; the report records the grid) on the unseen source's validation side and reports, for each
cap on the share of its normal scans flagged, the best lesion Dice reachable under it (drawing
nothing always is: Dice 0). That setting is chosen on the unseen side itself, so these numbers say
how well a recipe's maps separate lesions from normal tissue on a new scanner, not what a deployed
model scores. Beside them: the unseen numbers at the post-processing the run chose on its own source,
which is what it would ship with. Validation sides only.

    python -m training.operating_points runs/xs_seg_busi runs/xs_seg_bus_uclm ... [--out reports/x.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from inference.models import load_model
from training.finetune import load_side, per_source
from training.train_segmenter import FULL_GRID, choose_postprocessing, lesion_probabilities, validation_scores

CAPS = (0.1, 0.2, 0.3)


def best_dice_under(grid: list[dict], cap: float) -> float:
    """The highest lesion Dice among `grid`'s settings that flag at most `cap` of the normal scans
    (0.0, drawing nothing, when none does)."""
    return max((r["val_dice"] for r in grid if r["val_normal_fp"] <= cap), default=0.0)


def operating_points(probs: np.ndarray, side: dict, config: dict, caps=CAPS) -> dict:
    """On the scans `side` of one source (with a segmenter's lesion probabilities `probs` on them): the
    best Dice under each cap on normal scans flagged, and the Dice and normals flagged at the
    post-processing the segmenter (its `config`) chose on its own source."""
    _, grid = choose_postprocessing(probs, side, None, FULL_GRID)
    dice, flagged = validation_scores(probs, side, config["threshold"], config["min_area_fraction"],
                                      config["largest_only"], peak_threshold=config.get("peak_threshold"))
    return {**{f"dice@fp{cap}": best_dice_under(grid, cap) for cap in caps},
            "dice@own_choice": dice, "normal_fp@own_choice": flagged}


def unseen_operating_points(loaded, val: dict, caps=CAPS) -> dict:
    """`operating_points` on every validation source the model in `loaded` was not trained on."""
    probs = lesion_probabilities(loaded, val["images"])
    return {source: operating_points(probs[index], {key: value[index] for key, value in val.items()},
                                     loaded.config, caps)
            for source, index in per_source(val) if source not in loaded.config["training"]["sources"]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="single-source segmenter folders (config.json, model.keras)")
    parser.add_argument("--limit", type=int, default=0, help="about N validation scans per source (smoke test)")
    parser.add_argument("--out", type=Path, help="write the comparison as JSON here")
    args = parser.parse_args(argv)
    sides, rows = {}, {}
    for folder in args.runs:
        loaded = load_model(str(folder))
        size, framing = loaded.config["input_size"], loaded.config.get("framing", {})
        key = json.dumps([size, framing], sort_keys=True)
        if key not in sides:  # runs framed alike share one loaded validation side
            sides[key] = load_side("val", size, args.limit, framing)
        rows[folder.name] = {"trained_on": loaded.config["training"]["sources"],
                             "unseen": unseen_operating_points(loaded, sides[key])}
        print(folder.name, json.dumps(rows[folder.name]["unseen"]), flush=True)
    report = {"command": "python -m training.operating_points " + " ".join(str(f) for f in args.runs),
              "side": "validation", "caps": list(CAPS), "grid": FULL_GRID, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
