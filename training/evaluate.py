"""Evaluate the shipped models through the serving pipeline (decode -> preprocess -> model ->
postprocess), so the numbers describe exactly what users get.

    python -m training.evaluate [classifier segmenter explain] [--source busi bus_uclm breast]
                                [--side test|val | --data DIR] [--json PATH] [--out-dir reports]

Default: every task on every source, each source separately: the test sides of the BUSI and
BUS-UCLM splits and all of BrEaST-Lesions_USG (external). Test sides and BrEaST are read here only,
once a model is chosen. `--side val` measures the validation sides instead, to choose between
candidates (BrEaST has none, so it is skipped). With `--data DIR`: every scan of any BUSI-layout
folder; classes it lacks make their metrics null.
Writes `<out-dir>/<task>_<source>-<side>.json` (BrEaST: `<task>_breast-external.json`) and PNG
figures and prints a table; `--json PATH` (one task, one dataset) also writes the flat headline numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage
from scipy.special import softmax
from tqdm import tqdm

from explain.overlay import heatmap_overlay, mask_overlay, upsample
from inference.orientation import warned_upside_down
from inference.pipeline import Analyzer
from training.busi import CLASSES, REPO_ROOT, SOURCES, list_samples, load_mask
from training.metrics import (BENIGN, MALIGNANT, bootstrap_ci, bootstrap_cis, classification_metrics, dice_iou,
                              expected_calibration_error, reliability_bins)
from training.split import resampling_units, samples_by_side, seen_paths

POINTING_DILATION_PX = 10
BORDER_FRACTION = 0.08


def analyse_all(analyzer, samples):
    return [analyzer.analyze(s.path) for s in tqdm(samples, desc="analysing", unit="scan")]


# --- classifier ------------------------------------------------------------------------------

def evaluate_classifier(samples, units, analyses, analyzer, out_dir: Path, name: str) -> dict:
    probs = np.stack([a.probabilities for a in analyses])
    labels = np.array([s.label_index for s in samples])
    metrics = classification_metrics(probs, labels)
    # softmax(z / T) -> softmax(z): undo the temperature exactly, to show what calibration bought
    temperature = analyzer.classifier.config["temperature"]
    metrics["ece_uncalibrated"] = expected_calibration_error(softmax(temperature * np.log(probs), axis=1), labels)
    # What users get on a refused scan is no classification at all; the metrics above still count the
    # classifier's own answer there, and the refusal rate says how often it was withheld. The datasets'
    # scans are real and show one view each as their scanner wrote it: every upside-down warning and
    # every split into several views is a false alarm.
    shares = {"ood_refused_rate": [a.withheld for a in analyses],
              "upside_down_warned_rate": [warned_upside_down(a.warnings) for a in analyses],
              "several_views_rate": [a.class_framing.views > 1 for a in analyses]}
    shares = {key: np.array(flags, dtype=float) for key, flags in shares.items()}
    metrics.update({key: float(flags.mean()) for key, flags in shares.items()})
    metrics["temperature"] = temperature
    classes = set(labels.tolist())
    keys = [key for key in ("accuracy", "recall_bm", "recall_malignant", "macro_auc", "bm_auc") if metrics[key] is not None]
    metrics["ci95"] = bootstrap_cis(lambda idx: classification_metrics(probs[idx], labels[idx], classes), keys, units)
    for key, flags in shares.items():
        metrics["ci95"][key] = bootstrap_ci(lambda idx: float(flags[idx].mean()), units)
    # the units each interval rests on: a recall, only those of its classes' scans
    lesion = np.isin(labels, [BENIGN, MALIGNANT])
    rests_on = {"recall_malignant": labels == MALIGNANT, "recall_bm": lesion, "bm_auc": lesion}
    metrics["ci95_units"] = {key: int(len(set(units[rests_on.get(key, slice(None))]))) for key in metrics["ci95"]}
    plot_confusion(np.array(metrics["confusion_matrix"]), out_dir / f"classifier_{name}_confusion.png")
    plot_reliability(probs, labels, out_dir / f"classifier_{name}_reliability.png")
    return metrics


def plot_confusion(matrix, path):
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > matrix.max() / 2 else "black")
    ax.set_xticks(range(3), CLASSES)
    ax.set_yticks(range(3), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(probs, labels, path, bins=10):
    centres = (np.arange(bins) + 0.5) / bins
    accuracy = [accuracy for _, accuracy, _ in reliability_bins(probs, labels, bins)]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.bar(centres, accuracy, width=1 / bins, edgecolor="black", alpha=0.7, label="accuracy in bin")
    ax.set_xlabel("confidence (calibrated)")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability diagram")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- segmenter -------------------------------------------------------------------------------

def evaluate_segmenter(samples, units, analyses, analyzer, out_dir: Path, name: str) -> dict:
    truths = [load_mask(s) for s in samples]
    preds = [a.mask() for a in analyses]
    labels = np.array([s.label_index for s in samples])
    scores = np.array([dice_iou(p, t) for p, t in zip(preds, truths)])
    lesion = np.isin(labels, [BENIGN, MALIGNANT])

    def mean_over(selection, column):
        values = scores[selection, column]
        return float(values.mean()) if len(values) else None

    normal = labels == 0
    alone = [a.segmenter_mask() for a in analyses]
    alone_dice = np.array([dice_iou(p, t)[0] for p, t in zip(alone, truths)])
    drawn = np.array([p.any() for p in preds])
    # each interval's statistic: the mean of these values over these scans
    means = {"dice": (lesion, scores[:, 0]), "iou": (lesion, scores[:, 1]),
             "dice_benign": (labels == BENIGN, scores[:, 0]), "dice_malignant": (labels == MALIGNANT, scores[:, 0]),
             "normal_fp_rate": (normal, drawn), "lesions_called_normal": (lesion, ~drawn),
             "segmenter_alone_dice": (lesion, alone_dice)}
    ci95, ci95_units = {}, {}
    for key, (selection, values) in means.items():
        chosen, chosen_units = values[selection].astype(float), units[selection]
        ci95[key] = bootstrap_ci(lambda idx: float(chosen[idx].mean()), chosen_units) if selection.any() else None
        ci95_units[key] = int(len(set(chosen_units)))
    tp = sum(int((p & t).sum()) for p, t in zip(preds, truths))
    predicted_px = sum(int(p.sum()) for p in preds)
    true_px = sum(int(t.sum()) for t in truths)
    metrics = {
        "n_images": int(len(samples)),
        "n_lesion_images": int(lesion.sum()),
        "n_normal_images": int(normal.sum()),
        "dice": mean_over(lesion, 0), "iou": mean_over(lesion, 1),
        "dice_benign": mean_over(labels == BENIGN, 0), "dice_malignant": mean_over(labels == MALIGNANT, 0),
        "iou_benign": mean_over(labels == BENIGN, 1), "iou_malignant": mean_over(labels == MALIGNANT, 1),
        "normal_fp_rate": float(drawn[normal].mean()) if normal.any() else None,
        "lesions_called_normal": float((~drawn[lesion]).mean()) if lesion.any() else None,
        "pixel_precision": tp / predicted_px if predicted_px else None,
        "pixel_recall": tp / true_px if true_px else None,
        "threshold": analyses[0].threshold, "min_area_fraction": analyses[0].min_area_fraction,
        "largest_only": analyses[0].largest_only, "peak_threshold": analyses[0].peak_threshold,
        "normal_gate": analyzer.segmenter.config.get("normal_gate"),
        "normal_gate_spares": analyzer.segmenter.config.get("normal_gate_spares"),
        "scans_suppressed_as_normal": int(sum(a.suppressed_as_normal for a in analyses)),
        "segmenter_alone_dice": float(alone_dice[lesion].mean()) if lesion.any() else None,
        "segmenter_alone_normal_fp_rate": float(np.mean([p.any() for p, n in zip(alone, normal) if n])) if normal.any() else None,
        "ci95": ci95, "ci95_units": ci95_units,
    }
    if lesion.any():
        order = np.flatnonzero(lesion)[np.argsort(scores[lesion, 0])]
        picks = {"worst": order[:3], "median": order[len(order) // 2 - 1 : len(order) // 2 + 2], "best": order[-3:]}
        plot_segmentation_grid(samples, analyses, truths, scores, picks, out_dir / f"segmenter_{name}_cases.png")
    return metrics


def plot_segmentation_grid(samples, analyses, truths, scores, picks, path):
    rows = [(kind, i) for kind, indices in picks.items() for i in indices]
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 2.8 * len(rows)))
    for r, (kind, i) in enumerate(rows):
        panels = [analyses[i].gray, mask_overlay(analyses[i].gray, truths[i]), analyses[i].mask_overlay()]
        titles = [f"{kind}: {samples[i].relpath}", "ground truth", f"prediction (Dice {scores[i, 0]:.2f})"]
        for ax, panel, title in zip(axes[r], panels, titles):
            ax.imshow(panel, cmap="gray")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --- explanations ----------------------------------------------------------------------------

def peak(cam, shape) -> tuple[int, int]:
    """Row and column of the map's maximum at the scan's size."""
    heat = upsample(cam, *shape)
    return np.unravel_index(np.argmax(heat), heat.shape)


def peak_inside(cam, truth, dilation_px: int = POINTING_DILATION_PX) -> bool:
    """Pointing game: is the map's maximum inside the (dilated) true lesion?"""
    y, x = peak(cam, truth.shape)
    return bool(ndimage.binary_dilation(truth, iterations=dilation_px)[y, x])


def peak_in_border(cam, shape) -> bool:
    """Is the maximum in the outer BORDER_FRACTION of the scan, where BUSI's burned-in text,
    scale bars and markers sit? A shortcut detector, not proof: lesions can touch the border too."""
    y, x = peak(cam, shape)
    margin_y, margin_x = BORDER_FRACTION * shape[0], BORDER_FRACTION * shape[1]
    return bool(y < margin_y or y >= shape[0] - margin_y or x < margin_x or x >= shape[1] - margin_x)


def evaluate_explanations(samples, units, analyses, analyzer, out_dir: Path, name: str) -> dict:
    lesion = [i for i, s in enumerate(samples) if s.label_index in (BENIGN, MALIGNANT)]
    truths = {i: load_mask(samples[i]) for i in lesion}
    classifier_hits, segmenter_hits, no_map, border = [], [], 0, []
    for i in lesion:
        a = analyses[i]
        inside = peak_inside(a.class_map(), truths[i])
        classifier_hits.append(inside)
        border.append(not inside and peak_in_border(a.class_map(), truths[i].shape))
        seg_map = a.seg_map()
        if seg_map is None:
            no_map += 1
            segmenter_hits.append(False)  # no lesion drawn: counted as a miss
        else:
            segmenter_hits.append(peak_inside(seg_map, truths[i]))
    classifier_hits, segmenter_hits = np.array(classifier_hits), np.array(segmenter_hits)
    metrics = {
        "n_lesion_images": len(lesion),
        "pointing_game_classifier": float(classifier_hits.mean()) if lesion else None,
        "pointing_game_segmenter": float(segmenter_hits.mean()) if lesion else None,
        "segmenter_no_lesion_drawn": no_map,
        "classifier_peak_in_border_off_lesion": float(np.mean(border)) if lesion else None,
        "border_fraction": BORDER_FRACTION,
        "dilation_px": POINTING_DILATION_PX,
        "ci95": {
            "pointing_game_classifier": bootstrap_ci(lambda idx: float(classifier_hits[idx].mean()), units[lesion])
            if lesion else None,
            "pointing_game_segmenter": bootstrap_ci(lambda idx: float(segmenter_hits[idx].mean()), units[lesion])
            if lesion else None,
        },
        "ci95_units": dict.fromkeys(("pointing_game_classifier", "pointing_game_segmenter"),
                                    int(len(set(units[lesion])))),
    }
    if lesion:
        picks = lesion[:: max(1, len(lesion) // 6)][:6]
        fig, axes = plt.subplots(len(picks), 3, figsize=(9, 2.8 * len(picks)))
        for r, i in enumerate(picks):
            a = analyses[i]
            seg_map = a.seg_map()
            seg = heatmap_overlay(a.gray, seg_map) if seg_map is not None else a.gray
            panels = [mask_overlay(a.gray, truths[i]), a.class_overlay(), seg]
            titles = [f"{samples[i].relpath} (truth)", f"classifier Grad-CAM: {a.predicted_class}",
                      "Seg-Grad-CAM" if seg_map is not None else "no lesion drawn"]
            for ax, panel, title in zip(axes[r], panels, titles):
                ax.imshow(panel, cmap="gray")
                ax.set_title(title, fontsize=8)
                ax.axis("off")
        fig.tight_layout()
        fig.savefig(out_dir / f"explain_{name}_examples.png", dpi=90)
        plt.close(fig)
    return metrics


# --- command ---------------------------------------------------------------------------------

EVALUATORS = {"classifier": evaluate_classifier, "segmenter": evaluate_segmenter, "explain": evaluate_explanations}
TABLE_KEYS = {
    "classifier": ("n_images", "ood_refused_rate", "upside_down_warned_rate", "several_views_rate", "accuracy", "precision_normal", "recall_normal", "precision_benign", "recall_benign",
                   "precision_malignant", "recall_malignant", "recall_bm", "macro_auc", "bm_auc", "ece",
                   "ece_uncalibrated"),
    "segmenter": ("n_lesion_images", "dice", "iou", "dice_benign", "dice_malignant", "normal_fp_rate",
                  "lesions_called_normal", "pixel_precision", "pixel_recall", "scans_suppressed_as_normal", "segmenter_alone_dice",
                  "segmenter_alone_normal_fp_rate"),
    "explain": ("n_lesion_images", "pointing_game_classifier", "pointing_game_segmenter", "segmenter_no_lesion_drawn",
                "classifier_peak_in_border_off_lesion"),
}


def print_table(task, metrics):
    print(f"\n{task} on {metrics['dataset']}")
    for key in TABLE_KEYS[task]:
        value, interval = metrics.get(key), metrics.get("ci95", {}).get(key)
        text = "n/a" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))
        if interval:
            text += f"  (95% CI {interval[0]:.3f}-{interval[1]:.3f})"
        print(f"  {key:28s} {text}")
    if "confusion_matrix" in metrics:
        print("  confusion (rows true, cols predicted: " + ", ".join(CLASSES) + ")")
        for row in metrics["confusion_matrix"]:
            print("   ", "  ".join(f"{v:4d}" for v in row))


def seen_in_training(analyzer, samples) -> int:
    """How many of `samples` the shipped models were trained or selected on: scans on the train or
    validation side of the splits their configs name. Non-zero after a split changes, until the
    models are retrained on the new one."""
    seen = seen_paths([csv for loaded in (analyzer.classifier, analyzer.segmenter)
                       for csv in loaded.config.get("training_splits", [])])
    return sum(s.path in seen for s in samples)


def datasets(args) -> list[tuple[str, list, np.ndarray]]:
    """(name, samples, each sample's resampling unit for the intervals) of every dataset the command
    evaluates. A folder given by `--data` has no patient ids: each scan is its own unit."""
    if args.data:
        samples = list_samples(args.data)
        return [(args.data.resolve().name, samples, np.array([s.relpath for s in samples]))]
    chosen = []
    for source in args.source:
        if SOURCES[source].external:
            if args.side != "test":
                continue
            name, samples = f"{source}-external", samples_by_side(source)["test"]
        else:
            name, samples = f"{source}-{args.side}", samples_by_side(source)[args.side]
        chosen.append((name, samples, np.array(resampling_units(source, samples))))
    return chosen


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tasks", nargs="*", help=f"any of {', '.join(EVALUATORS)} (default: all)")
    parser.add_argument("--source", nargs="+", choices=sorted(SOURCES), default=list(SOURCES))
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--side", choices=("test", "val"), default="test", help="a side of the committed splits")
    data.add_argument("--data", type=Path, help="a BUSI-layout folder: evaluate on all of its scans")
    parser.add_argument("--json", type=Path, help="also write the flat headline numbers here (one task, one dataset)")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "reports")
    args = parser.parse_args(argv)
    tasks = args.tasks or list(EVALUATORS)
    if set(tasks) - set(EVALUATORS):
        parser.error(f"unknown task {', '.join(sorted(set(tasks) - set(EVALUATORS)))}")
    chosen = datasets(args)
    if args.json and (len(tasks) > 1 or len(chosen) > 1):
        parser.error("--json needs one task and one dataset")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    analyzer = Analyzer()
    for name, samples, units in chosen:
        analyses = analyse_all(analyzer, samples)
        missing = [c for c in CLASSES if not any(s.label == c for s in samples)]
        if missing:
            print(f"note: {name} has no {', '.join(missing)} scans; metrics that need them are null")
        seen = seen_in_training(analyzer, samples)
        for task in tasks:
            metrics = {"dataset": name, "classes_missing": missing, "n_seen_in_training": seen,
                       **EVALUATORS[task](samples, units, analyses, analyzer, args.out_dir, name)}
            (args.out_dir / f"{task}_{name}.json").write_text(json.dumps(metrics, indent=2) + "\n")
            if args.json:
                flat = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
                args.json.write_text(json.dumps(flat, indent=2) + "\n")
            print_table(task, metrics)


if __name__ == "__main__":
    main()
