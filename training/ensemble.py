"""Score the mean of several segmenters' lesion probabilities on the validation sides.

An ensemble of seeds is one of the levers the project's issue allows if it wins on validation:
runs trained alike tend to agree on lesions and to disagree on the chance blobs one run draws on a
normal scan (a single run's share of normal scans flagged swings from epoch to epoch). This scores
the mean of the members' probabilities the way the trainer scores one model, with the
post-processing re-chosen by its grid (per-source cap on normal scans flagged, the classifier's
gate, sparing), and each member on the same terms beside it. Validation sides only.

    python -m training.ensemble models/segmenter runs/seg_seed8 [--out reports/segmenter_ensemble.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from inference.models import load_model
from training.busi import REPO_ROOT
from training.finetune import load_side
from training.train_segmenter import classifier_normal_probability, choose_postprocessing, lesion_probabilities


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("members", nargs="+", type=Path, help="segmenter folders with the same input size and framing")
    parser.add_argument("--classifier", type=Path, default=REPO_ROOT / "models" / "classifier",
                        help="classifier whose normal probability gates the drawing ('' for none)")
    parser.add_argument("--limit", type=int, default=0, help="about N validation scans per source (smoke test)")
    parser.add_argument("--out", type=Path, help="write the comparison as JSON here")
    args = parser.parse_args(argv)
    if len(args.members) < 2:
        parser.error("an ensemble needs at least two members")
    members = [load_model(str(folder)) for folder in args.members]
    size, framing = members[0].config["input_size"], members[0].config.get("framing", {})
    if any((m.config["input_size"], m.config.get("framing", {})) != (size, framing) for m in members):
        parser.error("members must share input size and framing: their probabilities are averaged pixel by pixel")
    val = load_side("val", size, args.limit, framing)
    p_normal = classifier_normal_probability(args.classifier, args.limit)
    probabilities = [lesion_probabilities(member, val["images"]) for member in members]
    names = [str(folder) for folder in args.members]
    rows = []
    for row_members, probs in [*(([name], p) for name, p in zip(names, probabilities)),
                               (names, np.mean(probabilities, axis=0))]:
        best, _ = choose_postprocessing(probs, val, p_normal)
        rows.append({"members": row_members, **best})
        print(f"{' + '.join(row_members)}: val Dice {best['val_dice']:.3f}, normals flagged {best['val_normal_fp']:.3f} "
              f"{best['val_normal_fp_by_source']}, threshold {best['threshold']}, gate {best['normal_gate']}, "
              f"spares {best['normal_gate_spares']}", flush=True)
    if args.out:
        command = "python -m training.ensemble " + " ".join(names)
        args.out.write_text(json.dumps({"command": command, "side": "validation", "rows": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
