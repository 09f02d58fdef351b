"""Rule 60's check: benign or malignant read from two views, normal or not from the whole scan.

The classifier trains on zoomed crops, so a crop around a lesion is familiar to it; the issue's first
probe found lesion-centred input the strongest cross-source lever for benign vs malignant. Here the
crop speaks only to *which* lesion: when the segmenter draws one (its own mask at the validated
post-processing, before the normal gate), the classifier also reads the scan cut to the drawn region
holding the segmenter's highest probability (its box plus `MARGIN` a side, aspect kept, padded black);
the calibrated normal probability stays the whole scan's and the rest is split between benign and
malignant by the temperature-scaled mean of the two views' malignant-minus-benign logit differences.
No lesion drawn: the whole scan alone.

Scored on validation sides only: single-source classifiers on the other source's validation side (the
shipped segmenter, which draws the crops, never trained on it), and the shipped pair on both. Beside the
predicted crops, crops around the true lesion mask (how much the segmenter's boxes cost; decides nothing).

    python -m training.two_views runs/xs_cls_busi_zoom_lite1_s9 ... models/classifier
                                 [--segmenter models/segmenter] [--out reports/two_views_validation.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.special import expit

from inference.models import load_model
from inference.postprocess import lesion_mask
from inference.preprocess import Framing, to_model_input
from training.busi import CLASSES, TRAINING_SOURCES, load_mask, load_scan
from training.finetune import logits_function, predict_in_batches
from training.metrics import calibrated, classification_metrics, selection_score
from training.split import samples_by_side
from training.train_segmenter import lesion_probabilities

MARGIN = 0.25
NORMAL, BENIGN, MALIGNANT = (CLASSES.index(c) for c in ("normal", "benign", "malignant"))
METRICS = ("bm_auc", "recall_bm", "recall_malignant", "macro_auc", "lesions_called_normal", "accuracy")


def lesion_view_box(drawn: np.ndarray, probs: np.ndarray, margin: float = MARGIN) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the drawn region holding the highest probability, grown by `margin`
    of its height and width on each side and clipped to the scan; None when nothing is drawn."""
    labels, count = ndimage.label(drawn)
    if not count:
        return None
    peaks = ndimage.maximum(probs, labels, np.arange(1, count + 1))
    rows, cols = ndimage.find_objects(labels)[int(np.argmax(peaks))]
    grow_y, grow_x = margin * (rows.stop - rows.start), margin * (cols.stop - cols.start)
    height, width = drawn.shape
    return (max(0, int(rows.start - grow_y)), min(height, int(np.ceil(rows.stop + grow_y))),
            max(0, int(cols.start - grow_x)), min(width, int(np.ceil(cols.stop + grow_x))))


def two_view_probabilities(whole_logits: np.ndarray, view_logits: np.ndarray | None, temperature: float) -> np.ndarray:
    """Calibrated probabilities: the whole scan's normal probability; the rest split between benign and
    malignant by the temperature-scaled mean of both views' malignant-minus-benign logit differences
    (the whole scan's alone without a lesion view)."""
    whole = calibrated(whole_logits[None], temperature)[0]
    if view_logits is None:
        return whole
    difference = np.mean([logits[MALIGNANT] - logits[BENIGN] for logits in (whole_logits, view_logits)])
    malignant_share = expit(difference / temperature)
    out = np.empty(len(CLASSES))
    out[NORMAL] = whole[NORMAL]
    out[BENIGN], out[MALIGNANT] = (1 - whole[NORMAL]) * (1 - malignant_share), (1 - whole[NORMAL]) * malignant_share
    return out


class SourceScans:
    """One source's validation scans, decoded once: classifier inputs of the whole scans, and of the
    lesion views cut around the segmenter's drawing and around the true mask."""

    def __init__(self, source: str, segmenter, size: int, framing: dict):
        samples = samples_by_side(source)["val"]
        self.labels = np.array([s.label_index for s in samples])
        grays = [load_scan(s) for s in samples]
        s = segmenter.config
        seg_framings = [Framing.for_model(g, s) for g in grays]
        seg_probs = lesion_probabilities(segmenter, np.stack([to_model_input(g, f) for g, f in zip(grays, seg_framings)]))
        self.whole = np.stack([to_model_input(g, Framing.of(g, size, **framing)) for g in grays])
        self.views = {}
        for name in ("predicted", "true"):
            boxes = []
            for gray, framing_s, probs, sample in zip(grays, seg_framings, seg_probs, samples):
                scan_probs = framing_s.to_scan(probs)
                if name == "predicted":
                    drawn = lesion_mask(scan_probs, float(s["threshold"]), float(s.get("min_area_fraction", 0.0)),
                                        bool(s.get("largest_only", False)), s.get("peak_threshold"))
                    boxes.append(lesion_view_box(drawn, scan_probs))
                else:
                    truth = load_mask(sample)
                    boxes.append(lesion_view_box(truth, truth.astype(np.float32)))
            which = [i for i, box in enumerate(boxes) if box is not None]
            crops = [grays[i][boxes[i][0]:boxes[i][1], boxes[i][2]:boxes[i][3]] for i in which]
            inputs = np.stack([to_model_input(c, Framing.of(c, size, keep_aspect=True,
                                                            clahe=framing.get("clahe", False))) for c in crops])
            self.views[name] = (which, inputs)


def scored(probs: np.ndarray, labels: np.ndarray) -> dict:
    metrics = classification_metrics(probs, labels)
    return {key: metrics[key] for key in METRICS} | {"score": selection_score(metrics)}


def score_run(loaded, scans: SourceScans) -> dict:
    """Whole scan vs two views (predicted and true lesion views) for one classifier on one source."""
    logits = logits_function(loaded)
    temperature = loaded.config["temperature"]
    whole_logits = predict_in_batches(logits, scans.whole)
    out = {"whole": scored(np.stack([two_view_probabilities(z, None, temperature) for z in whole_logits]), scans.labels)}
    for name, (which, inputs) in scans.views.items():
        view_logits = dict(zip(which, predict_in_batches(logits, inputs)))
        probs = np.stack([two_view_probabilities(z, view_logits.get(i), temperature) for i, z in enumerate(whole_logits)])
        out[f"two_views_{name}"] = scored(probs, scans.labels) | {"lesion_views": len(which)}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("classifiers", nargs="+", type=Path,
                        help="single-source runs (scored on the other source) or pooled ones (scored on both)")
    parser.add_argument("--segmenter", default="models/segmenter", help="draws the lesion views")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    segmenter = load_model(args.segmenter)
    cache, rows = {}, []
    for folder in args.classifiers:
        loaded = load_model(str(folder))
        trained_on = loaded.config["training"]["sources"]
        scored_on = [s for s in TRAINING_SOURCES if s not in trained_on] or list(TRAINING_SOURCES)
        for source in scored_on:
            key = (source, loaded.config["input_size"], json.dumps(loaded.config.get("framing", {}), sort_keys=True))
            if key not in cache:
                cache[key] = SourceScans(source, segmenter, loaded.config["input_size"], loaded.config.get("framing", {}))
            row = {"run": str(folder), "trained_on": trained_on, "scored_on": source} | score_run(loaded, cache[key])
            rows.append(row)
            print(json.dumps({k: row[k] if not isinstance(row[k], dict) else
                              {m: round(v, 3) if isinstance(v, float) else v for m, v in row[k].items()}
                              for k in row}), flush=True)
    report = {"segmenter": args.segmenter, "margin": MARGIN, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
