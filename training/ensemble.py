"""Score the mean of several segmenters' (or classifiers') probabilities on the validation sides; save a
segmenter ensemble as one model.

An ensemble of seeds is one of the levers the project's issue allows if it wins on validation:
runs trained alike tend to agree on lesions and to disagree on the chance blobs one run draws on a
normal scan (a single run's share of normal scans flagged swings from epoch to epoch). This scores
the mean of the members' probabilities the way the trainer scores one model, with the
post-processing re-chosen by its grid (per-source cap on normal scans flagged, the classifier's
gate, sparing) on the validation sides of the sources the members were trained on, and each member
on the same terms beside it. Every row also gives each source's numbers for the segmenter alone at
threshold 0.5, as the trainer records them: for members trained on one source, the other source's
are cross-source validation (`training.cross_source`). Validation sides only.

With `--save DIR` the ensemble becomes one flat model (`training.architectures.build_segmenter_ensemble`)
with the post-processing chosen here and Seg-Grad-CAM on every member's layer, which serving loads
like any segmenter.

Classifiers (their configs say `"task": "classification"`) are scored the way their trainer scores
an epoch (`training.train_classifier.validation_metrics`, uncalibrated): the ensemble's probabilities
are the mean of the members' softmax outputs, its score is on the sources the members were trained
on, and every source's numbers are given, so single-source members are cross-source validation too.
Given one folder, it scores that model alone, in the same report form.

    python -m training.ensemble models/segmenter runs/seg_seed8 [--classifier ''] [--out reports/segmenter_ensemble.json]
                                [--save runs/seg_ensemble]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.special import softmax

from inference.models import load_model
from training.architectures import build_segmenter_ensemble, member_layer
from training.busi import REPO_ROOT
from training.finetune import load_side, logits_function, predict_in_batches
from training.train_classifier import validation_metrics
from training.train_segmenter import (POSTPROCESSING_KEYS, alone_at_half, choose_postprocessing,
                                      classifier_normal_probability, lesion_probabilities, own_side,
                                      trade_off_frontier)

# What the saved ensemble's config keeps of each member's training record.
MEMBER_RECORD = ("sources", "seed", "head_epochs", "epochs", "batch_size", "lr", "best_epoch", "val_dice", "minutes")


def each_and_mean(names: list[str], probabilities: list[np.ndarray]):
    """(members, probabilities) rows: each member alone, then (for two or more) all of them with the mean
    probability. A single member gets its own row only: a later seed of a recipe whose earlier seeds
    were reported together is reported in the same form."""
    alone = [([name], p) for name, p in zip(names, probabilities)]
    return alone + [(names, np.mean(probabilities, axis=0))] if len(names) > 1 else alone


def save_ensemble(members, folders: list[Path], row: dict, grid: list[dict], out: Path) -> None:
    """The ensemble as one model in `out`: model.keras and a config whose post-processing is `row`'s,
    whose Seg-Grad-CAM layers are each member's own, and whose training record names the members."""
    first = members[0].config
    config = {**first, **{key: row[key] for key in POSTPROCESSING_KEYS}, "logits_layer": "mask_logits",
              "gradcam_layer": [member_layer(index, layer) for index, m in enumerate(members)
                                for layer in np.atleast_1d(m.config["gradcam_layer"]).tolist()],  # a member may be an ensemble
              "training": {"sources": first["training"]["sources"],
                           "members": [{"model": str(folder), "encoder": m.encoder,
                                        **{key: m.config["training"].get(key) for key in MEMBER_RECORD}}
                                       for folder, m in zip(folders, members)],
                           "val_dice": row["val_dice"], "val_normal_fp": row["val_normal_fp"],
                           "val_normal_fp_by_source": row["val_normal_fp_by_source"],
                           "postprocessing_frontier": trade_off_frontier(grid)}}
    out.mkdir(parents=True, exist_ok=True)
    build_segmenter_ensemble([m.model for m in members]).save(out / "model.keras")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"saved {out / 'model.keras'}", flush=True)


def segmenter_rows(members, names: list[str], val: dict, sources, p_normal) -> tuple[list[dict], list[dict]]:
    """Each segmenter, then the mean of their probabilities, with post-processing chosen on the
    `sources`' validation scans (gated by the classifier's normal probabilities `p_normal`, if any);
    and the ensemble's whole post-processing grid."""
    own, own_val = own_side(val, sources)
    own_p_normal = None if p_normal is None else p_normal[own]
    probabilities = [lesion_probabilities(member, val["images"]) for member in members]
    rows = []
    for row_members, probs in each_and_mean(names, probabilities):
        best, grid = choose_postprocessing(probs[own], own_val, own_p_normal)
        rows.append({"members": row_members, **best, "alone_at_0.5": alone_at_half(probs, val)})
        print(f"{' + '.join(row_members)}: val Dice {best['val_dice']:.3f}, normals flagged {best['val_normal_fp']:.3f} "
              f"{best['val_normal_fp_by_source']}, threshold {best['threshold']}, gate {best['normal_gate']}, "
              f"spares {best['normal_gate_spares']}; alone at 0.5: "
              + ", ".join(f"{key} {value:.3f}" for key, value in rows[-1]["alone_at_0.5"].items()), flush=True)
    return rows, grid  # the last row, and grid, are the ensemble's


def classifier_rows(members, names: list[str], val: dict, sources) -> list[dict]:
    """Each classifier, then the mean of their softmax probabilities, scored as their trainer scores
    an epoch: the validation score on `sources` and every source's numbers."""
    probabilities = [softmax(predict_in_batches(logits_function(member), val["images"]), axis=-1) for member in members]
    rows = []
    for row_members, probs in each_and_mean(names, probabilities):
        score, metrics = validation_metrics(np.log(probs), val, sources)  # log-probabilities: softmax gives probs back
        rows.append({"members": row_members, "val_score": score, **metrics})
        print(f"{' + '.join(row_members)}: val score {score:.3f}; "
              + ", ".join(f"{key} {value:.3f}" for key, value in metrics.items()), flush=True)
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("members", nargs="+", type=Path, help="segmenter (or classifier) folders with the same input "
                                                             "size, framing and training sources")
    parser.add_argument("--classifier", type=Path, default=REPO_ROOT / "models" / "classifier",
                        help="for segmenters: the classifier whose normal probability gates the drawing ('' for none)")
    parser.add_argument("--limit", type=int, default=0, help="about N validation scans per source (smoke test)")
    parser.add_argument("--out", type=Path, help="write the comparison as JSON here")
    parser.add_argument("--save", type=Path, help="save a segmenter ensemble as one model in this folder")
    args = parser.parse_args(argv)
    if args.save and len(args.members) < 2:
        parser.error("an ensemble to save needs at least two members")
    members = [load_model(str(folder)) for folder in args.members]
    first = members[0].config
    size, framing, sources = first["input_size"], first.get("framing", {}), first["training"]["sources"]
    task = first.get("task", "classification")  # the first classifiers' configs did not say
    if any((m.config["input_size"], m.config.get("framing", {})) != (size, framing) for m in members):
        parser.error("members must share input size and framing: their probabilities are averaged pixel by pixel")
    if any(m.config["training"]["sources"] != sources or m.config.get("task", "classification") != task for m in members):
        parser.error("members must be of one task and trained on the same sources: choices are made on those")
    if args.save and task != "segmentation":
        parser.error("--save writes segmenter ensembles only")
    val = load_side("val", size, args.limit, framing)
    names = [str(folder) for folder in args.members]
    p_normal = classifier_normal_probability(args.classifier, args.limit) if task == "segmentation" else None
    if task == "segmentation":
        rows, grid = segmenter_rows(members, names, val, sources, p_normal)
    else:
        rows = classifier_rows(members, names, val, sources)
    if args.out:
        ungated = task == "segmentation" and p_normal is None
        command = "python -m training.ensemble " + " ".join(names) + (" --classifier ''" if ungated else "")
        args.out.write_text(json.dumps({"command": command, "task": task, "side": "validation", "trained_on": sources,
                                        "rows": rows}, indent=2) + "\n")
    if args.save:
        save_ensemble(members, args.members, rows[-1], grid, args.save)
    return rows


if __name__ == "__main__":
    main()
