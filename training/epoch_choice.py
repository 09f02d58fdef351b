"""Compare ways of choosing a segmenter's epoch, on split validation halves.

The trainer keeps the epoch with the best validation Dice under the cap on normal scans flagged
(`train_segmenter`): the best of 26 draws of a score that swings by 0.1-0.3 from one epoch to the
next, because it turns on which two of BUSI's 20 normal validation scans get marked. Whether another
criterion picks epochs that hold up better is asked of runs trained with `--keep-validation-maps`:
over random halves of the validation scans (whole duplicate groups and patients, stratified by source
and class), each criterion picks an epoch on one half, and that epoch is scored on the other half by
the trainer's own epoch score there (post-processing re-chosen on that half, the same for every
criterion, so what differs is the epoch). Each split is used both ways round.

Criteria: `best_capped` (today's: the best Dice under the 10 % cap per source), `mean_over_caps` (the
mean of that score under caps of 5, 10, 15 and 20 %), `running_mean` (best_capped averaged over an
epoch and its neighbours), `last` (the last epoch, no choice).

    python -m training.epoch_choice runs/seg_repeatable_s7_maps runs/seg_repeatable_s8_maps ... \\
        [--halves 200] [--classifier models/classifier] --out reports/segmenter_epoch_choice.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from inference.postprocess import hidden_by_normal_gate
from training.busi import REPO_ROOT, SOURCES, TRAINING_SOURCES
from training.finetune import load_side
from training.split import read_split, samples_by_side
from training.train_segmenter import (MAX_NORMAL_FP_RATE, NO_GATE, RECTANGLE_GATES, classifier_normal_probability,
                                      mask_grid)

CAPS = (0.05, 0.10, 0.15, 0.20)
GROUP_COLUMNS = ("group", "patient_id")  # BUSI's duplicate groups, BUS-UCLM's patients


def validation_groups(sources=TRAINING_SOURCES) -> np.ndarray:
    """Per validation scan, in `load_side`'s order, the unit a half must keep whole: its source and
    its duplicate group (BUSI: re-exports of one frame) or patient (BUS-UCLM): otherwise one frame
    would choose the epoch on one half and score it on the other."""
    groups = []
    for source in sources:
        rows = {row["file"]: row for row in read_split(SOURCES[source].split_csv)}
        column = next(c for c in GROUP_COLUMNS if c in next(iter(rows.values())))
        groups += [f"{source}:{rows[sample.relpath][column]}" for sample in samples_by_side(source)["val"]]
    return np.array(groups)


def random_halves(val: dict, groups: np.ndarray, n_splits: int, seed: int = 0) -> np.ndarray:
    """(2 n_splits, N) booleans: rows 2i and 2i + 1 are the two halves of the i-th random split of the
    scans into whole `groups`, stratified by source and class (scikit-learn's StratifiedGroupKFold)."""
    strata = val["source"] * 3 + val["labels"]
    halves = np.zeros((2 * n_splits, len(groups)), bool)
    for i in range(n_splits):
        folds = StratifiedGroupKFold(n_splits=2, shuffle=True, random_state=seed + i)
        for j, (_, held) in enumerate(folds.split(np.zeros(len(groups)), strata, groups)):
            halves[2 * i + j, held] = True
    return halves


@dataclass(frozen=True)
class SettingTable:
    """Every post-processing setting of the trainer's grid under every normal gate, with its per-scan
    Dice (0 where the gate hides the drawing) and whether a lesion is shown: enough to score any
    subset of the scans by a matrix product instead of re-running the choice per subset."""

    dice: np.ndarray  # (settings, N) float
    shown: np.ndarray  # (settings, N) bool

    @classmethod
    def of(cls, probs: np.ndarray, val: dict, p_normal: np.ndarray | None) -> SettingTable:
        gates = RECTANGLE_GATES if p_normal is not None else NO_GATE
        dice, shown = [], []
        for _, (scan_dice, drawn, peaks) in mask_grid(probs, val):
            for gate in gates:
                hidden = hidden_by_normal_gate(p_normal, peaks, **gate)  # without a classifier: False, broadcast
                dice.append(np.where(hidden, 0.0, scan_dice))
                shown.append(drawn & ~hidden)
        return cls(np.array(dice), np.array(shown))


def capped_scores(table: SettingTable, val: dict, halves: np.ndarray, caps=CAPS) -> np.ndarray:
    """(len(caps), len(halves)): the trainer's epoch score on each half under each cap: the best mean
    lesion Dice among settings that flag at most `cap` of each source's normal scans; when none does,
    the Dice of the setting that flags the fewest, less that share (`train_segmenter.best_allowed`, and
    the penalty the trainer's epoch score subtracts)."""
    lesion = val["labels"] > 0
    weights = halves.astype(float)
    dice = (table.dice[:, lesion] @ weights[:, lesion].T) / weights[:, lesion].sum(1)
    flagged = []
    for source in np.unique(val["source"][~lesion]):
        normal = ~lesion & (val["source"] == source)
        flagged.append((table.shown[:, normal].astype(float) @ weights[:, normal].T) / weights[:, normal].sum(1))
    worst = np.max(flagged, axis=0)
    fewest = worst.min(0)
    fallback = np.where(worst == fewest, dice, -np.inf).max(0) - fewest
    scores = []
    for cap in caps:
        allowed = worst <= cap
        scores.append(np.where(allowed.any(0), np.where(allowed, dice, -np.inf).max(0), fallback))
    return np.array(scores)


def running_mean(scores: np.ndarray) -> np.ndarray:
    """Along the last axis (epochs), the mean of each epoch's score and its neighbours' (one at the ends)."""
    padded = np.pad(scores, [(0, 0)] * (scores.ndim - 1) + [(1, 1)])
    counts = np.convolve(np.ones(scores.shape[-1]), np.ones(3), "same")
    return (padded[..., :-2] + padded[..., 1:-1] + padded[..., 2:]) / counts


CRITERIA = {
    "best_capped": lambda scores: scores[CAPS.index(MAX_NORMAL_FP_RATE)].argmax(-1),
    "mean_over_caps": lambda scores: scores.mean(0).argmax(-1),
    "running_mean": lambda scores: running_mean(scores[CAPS.index(MAX_NORMAL_FP_RATE)]).argmax(-1),
    "last": lambda scores: np.full(scores.shape[1], scores.shape[-1] - 1),
}


def run_scores(run: Path, val: dict, p_normal, halves: np.ndarray) -> np.ndarray:
    """(caps, halves + 1, epochs): the capped scores of every epoch of `run` (its kept validation maps)
    on every half, and last on the whole validation side (where it must equal the run's record)."""
    maps = sorted((run / "validation_maps").glob("epoch_*.npy"))
    whole = np.vstack([halves, np.ones(len(val["labels"]), bool)])
    return np.stack([capped_scores(SettingTable.of(np.load(path).astype(np.float32), val, p_normal), val, whole)
                     for path in maps], axis=-1)


def compare(scores: np.ndarray) -> dict:
    """Per criterion: the epoch picked on each half and its score on the other half."""
    choosing = scores[:, :-1]
    partner = np.arange(choosing.shape[1]) ^ 1
    held_out = choosing[CAPS.index(MAX_NORMAL_FP_RATE)]
    results = {}
    for name, criterion in CRITERIA.items():
        picked = criterion(choosing)
        results[name] = {"held_out": held_out[partner, picked], "epoch": picked + 1}
    return results


def summary(results_by_run: dict[str, dict]) -> dict:
    """Mean held-out score per criterion and run, its difference from `best_capped` (mean and 2.5-97.5 %
    of the halves'), the mean over runs, and whether the plan's rule lets a criterion replace it."""
    rows = {}
    for name in CRITERIA:
        per_run = {run: float(r[name]["held_out"].mean()) for run, r in results_by_run.items()}
        gains = {run: r[name]["held_out"] - r["best_capped"]["held_out"] for run, r in results_by_run.items()}
        mean_gain = float(np.mean([g.mean() for g in gains.values()]))
        rows[name] = {"held_out_by_run": per_run, "held_out_mean": float(np.mean(list(per_run.values()))),
                      "gain_over_best_capped": mean_gain,
                      "gain_by_run": {run: {"mean": float(g.mean()), "halves_2.5%": float(np.percentile(g, 2.5)),
                                            "halves_97.5%": float(np.percentile(g, 97.5))} for run, g in gains.items()},
                      "mean_epoch_by_run": {run: float(r[name]["epoch"].mean()) for run, r in results_by_run.items()},
                      "replaces_best_capped": name != "best_capped" and mean_gain >= 0.01
                      and all(g.mean() >= 0 for g in gains.values())}
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="segmenter runs trained with --keep-validation-maps")
    parser.add_argument("--halves", type=int, default=200, help="random splits of the validation scans into two halves")
    parser.add_argument("--classifier", type=Path, default=REPO_ROOT / "models" / "classifier",
                        help="the classifier whose normal probability the gate reads (as in training)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    config = json.loads((args.runs[0] / "config.json").read_text())
    val = load_side("val", config["input_size"], 0, config.get("framing", {}))
    halves = random_halves(val, validation_groups(), args.halves)
    p_normal = classifier_normal_probability(args.classifier)
    results, reproduced = {}, {}
    for run in args.runs:
        scores = run_scores(run, val, p_normal, halves)
        recorded = [h["val_score"] for h in json.loads((run / "config.json").read_text())["training"]["history"]]
        reproduced[str(run)] = float(np.abs(scores[CAPS.index(MAX_NORMAL_FP_RATE), -1] - recorded).max())
        results[str(run)] = compare(scores)
        print(f"{run}: largest difference from the recorded epoch scores {reproduced[str(run)]:.2e}", flush=True)
    report = {"command": " ".join(["python -m training.epoch_choice", *(argv if argv is not None else sys.argv[1:])]),
              "halves": 2 * args.halves, "caps": CAPS, "classifier": str(args.classifier),
              "largest_difference_from_recorded_scores": reproduced, "criteria": summary(results)}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, row in report["criteria"].items():
        print(f"{name}: held-out {row['held_out_mean']:.4f} (gain {row['gain_over_best_capped']:+.4f}) "
              f"by run {', '.join(f'{v:.4f}' for v in row['held_out_by_run'].values())}; "
              f"replaces best_capped: {row['replaces_best_capped']}", flush=True)


if __name__ == "__main__":
    main()
