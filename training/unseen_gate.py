"""Compare forms of the normal gate, and ways of choosing it, on a source neither model of a pair was trained on.

The normal gate hides a drawing when the classifier thinks the scan is normal. It is chosen with the
post-processing on the validation sides of the sources the models were trained on, where the
classifier is nearly always right, so the chosen gate trusts it almost alone; on a new scanner the
classifier calls more lesions normal and the gate hides them. This pairs single-source classifiers with
single-source segmenters trained on the same source and, for each way of choosing (a form of the gate
and a chooser), chooses post-processing and gate on that
source's validation side, then scores the choice on all of the other source but its test side: lesion
Dice (a hidden lesion scores 0), lesion scans with nothing drawn, normal scans flagged. Beside them,
the best Dice reachable there with at most 10 / 20 % of its normal scans flagged over each form's grid
(chosen on the unseen side itself: how well a form can separate, not what a deployment scores).

Ways of choosing (`CHOICES`): "rectangle" (`inference.postprocess.hidden_by_normal_gate`, the shipped
form: the classifier's normal probability reaches the gate and the segmenter's peak inside the drawing
stays below a sparing level; the trainer's chooser, best Dice under the cap), "mean_evidence"
(`hidden_by_mean_evidence`: the two models' lesion evidence, averaged, stays below the gate; same
chooser) and "rectangle_most_shown_within_se" (the shipped form, chosen by the one-standard-error rule
toward drawing, `most_shown_within_se`; rule 52 found it no better, so the trainer does not use it).

    python -m training.unseen_gate --classifiers runs/xs_cls_busi_zoom_lite1_s9 ... --segmenters runs/xs_seg_busi_s7 ...
                                   [--out reports/unseen_gate_busi.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from inference.models import load_model
from inference.postprocess import hidden_by_normal_gate
from training.busi import TRAINING_SOURCES
from training.finetune import normal_probability
from training.operating_points import best_dice_under
from training.train_segmenter import (MAX_NORMAL_FP_RATE, RECTANGLE_GATES, best_allowed, gated_results,
                                      lesion_probabilities, mask_grid, shown_scores, worst_normal_fp)
from training.unseen_source import single_source, source_sides

MEAN_EVIDENCE_GATES = ({"normal_gate": None},
                       *({"normal_gate": round(gate, 2)} for gate in np.arange(0.30, 0.86, 0.05)))
CAPS = (0.1, 0.2)


def hidden_by_mean_evidence(p_normal, peak, normal_gate: float | None):
    """Whether the gate hides a drawing: the mean of the classifier's lesion probability (1 - its
    normal probability) and the segmenter's peak inside the drawing stays below `normal_gate` (None:
    never). Either model can outweigh the other: a fairly sure segmenter keeps a lesion the classifier
    calls normal, a classifier sure of a lesion keeps a faint drawing."""
    if normal_gate is None:
        return np.zeros(np.shape(p_normal), dtype=bool)
    return ((1 - np.asarray(p_normal)) + np.asarray(peak)) / 2 < normal_gate


def most_shown_within_se(results: list[dict]) -> dict:
    """The one-standard-error rule, leaning toward drawing: among the results `best_allowed` chooses
    from, those whose validation Dice is within one standard error of the best one's are tied as far as
    a validation side of this size can tell; of them, the one that leaves the fewest lesion scans with
    nothing shown (then the higher Dice). The maximum over thousands of tied settings is partly noise,
    and a hidden lesion is the error a user can least see."""
    best = best_allowed(results)
    if worst_normal_fp(best) > MAX_NORMAL_FP_RATE:
        return best
    tied = [r for r in results if worst_normal_fp(r) <= MAX_NORMAL_FP_RATE
            and r["val_dice"] >= best["val_dice"] - best["val_dice_se"]]
    return min(tied, key=lambda r: (r["val_nothing_shown"], -r["val_dice"]))


# name: (the gates a choice is made among, the form that says what a gate hides, the chooser)
CHOICES = {"rectangle": (RECTANGLE_GATES, hidden_by_normal_gate, best_allowed),
           "mean_evidence": (MEAN_EVIDENCE_GATES, hidden_by_mean_evidence, best_allowed),
           "rectangle_most_shown_within_se": (RECTANGLE_GATES, hidden_by_normal_gate, most_shown_within_se)}


def setting_key(row: dict) -> tuple:
    return row["threshold"], row["peak_threshold"], row["min_area_fraction"], row["largest_only"]


def scored_choice(choice: dict, masks: list, side: dict, p_normal: np.ndarray, hide) -> dict:
    """Dice (hidden = 0), lesion scans with nothing drawn and normal scans flagged of the
    post-processing and gate in `choice` on the scans `side` (`masks`: its `mask_grid`)."""
    gate = {key: choice[key] for key in choice if key.startswith("normal_gate")}
    dice, drawn, peaks = dict((setting_key(setting), scores) for setting, scores in masks)[setting_key(choice)]
    scores = shown_scores(dice, drawn, hide(p_normal, peaks, **gate), side)
    return {"dice": scores["val_dice"], "nothing_drawn": scores["val_nothing_shown"], "normal_fp": scores["val_normal_fp"]}


def pair_row(p_normal: dict, masks: dict, sides: dict) -> dict:
    """For each way of choosing: the choice on the own side and its scores there and on the unseen side,
    and the best unseen Dice reachable under each cap on unseen normals flagged (the form's)."""
    row = {}
    for form, (gates, hide, choose) in CHOICES.items():
        choice = choose(gated_results(masks["own"], sides["own"], p_normal["own"], gates, hide))
        unseen_grid = gated_results(masks["unseen"], sides["unseen"], p_normal["unseen"], gates, hide)
        row[form] = {"choice": {key: value for key, value in choice.items() if key != "val_normal_fp_by_source"},
                     "unseen": scored_choice(choice, masks["unseen"], sides["unseen"], p_normal["unseen"], hide),
                     **{f"best_dice@fp{cap}": best_dice_under(unseen_grid, cap) for cap in CAPS}}
    return row


def sides_for(loaded, source: str, unseen: str, limit: int) -> dict:
    """The own source's validation side and the unseen source's train + validation sides, framed for `loaded`."""
    size, framing = loaded.config["input_size"], loaded.config.get("framing", {})
    return {"own": source_sides(source, size, framing, limit, ("val",)),
            "unseen": source_sides(unseen, size, framing, limit)}


def summary(rows: list[dict]) -> dict:
    """Each way of choosing's numbers averaged over the pairs."""
    return {form: {**{f"unseen_{key}": float(np.mean([r[form]["unseen"][key] for r in rows]))
                      for key in ("dice", "nothing_drawn", "normal_fp")},
                   **{key: float(np.mean([r[form][key] for r in rows])) for key in (f"best_dice@fp{cap}" for cap in CAPS)}}
            for form in CHOICES}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifiers", nargs="+", type=Path, required=True, help="single-source classifier folders")
    parser.add_argument("--segmenters", nargs="+", type=Path, required=True,
                        help="segmenter folders trained on the classifiers' source (every pair is scored)")
    parser.add_argument("--limit", type=int, default=0, help="about N scans per side (smoke test)")
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    args = parser.parse_args(argv)
    classifiers = {folder: load_model(str(folder)) for folder in args.classifiers}
    segmenters = {folder: load_model(str(folder)) for folder in args.segmenters}
    source = single_source([*classifiers.values(), *segmenters.values()])
    if source is None:
        parser.error("the classifiers and segmenters must all be trained on the same single source")
    unseen = next(s for s in TRAINING_SOURCES if s != source)

    p_normal, cls_labels = {}, None
    for folder, loaded in classifiers.items():
        sides = sides_for(loaded, source, unseen, args.limit)
        p_normal[folder] = {name: normal_probability(loaded, side["images"]) for name, side in sides.items()}
        cls_labels = {name: side["labels"] for name, side in sides.items()}
    rows = []
    for seg_folder, loaded in segmenters.items():
        sides = sides_for(loaded, source, unseen, args.limit)
        assert all(np.array_equal(sides[name]["labels"], cls_labels[name]) for name in sides), "scans out of order"
        masks = {name: mask_grid(lesion_probabilities(loaded, side["images"]), side) for name, side in sides.items()}
        for cls_folder in classifiers:
            row = {"classifier": str(cls_folder), "segmenter": str(seg_folder),
                   **pair_row(p_normal[cls_folder], masks, sides)}
            rows.append(row)
            print(f"{cls_folder.name} + {seg_folder.name}: " + "; ".join(
                f"{form} " + ", ".join(f"{k} {v:.3f}" for k, v in row[form]["unseen"].items()) for form in CHOICES),
                flush=True)
    report = {"command": "python -m training.unseen_gate --classifiers " + " ".join(map(str, args.classifiers))
                         + " --segmenters " + " ".join(map(str, args.segmenters)),
              "trained_on": source, "own_side": "val", "unseen": unseen, "unseen_sides": "train + val",
              "scans": {"own": int(len(sides["own"]["labels"])), "unseen": int(len(sides["unseen"]["labels"]))},
              "choices": {form: {"chooser": choose.__name__, "gates": list(gates)}
                          for form, (gates, _, choose) in CHOICES.items()},
              "summary": summary(rows), "rows": rows}
    print(json.dumps(report["summary"], indent=1), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
