"""Rules 60 to 62: benign or malignant read from two views, normal or not from the whole scan.

The classifier trains on zoomed crops, so a crop around a lesion is familiar to it; the issue's first
probe found lesion-centred input the strongest cross-source lever for benign vs malignant. Here the
crop speaks only to *which* lesion: when the segmenter draws one (its own mask at the validated
post-processing, before the normal gate), the classifier also reads the scan cut to the drawn region
holding the segmenter's highest probability (its box plus `MARGIN` a side, aspect kept, padded black);
the calibrated normal probability stays the whole scan's and the rest is split between benign and
malignant by the temperature-scaled mean of the two views' malignant-minus-benign logit differences
(`two_view_probabilities`; serving's version is at commit 5751d33). No lesion drawn: the whole scan
alone. Rule 61 adds an offset to that difference, the one of `OFFSETS` with the best Recall_BM on the
classifier's own validation side(s). Rule 62's second view costs no second pass: the head is linear over
the mean of the last feature map's cells, so the whole scan's logits are the mean of per-cell logits, and
the lesion view is their mean over the cells the drawn region covers ("pooled").

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

import keras
import numpy as np
import tensorflow as tf
from scipy import ndimage
from scipy.special import expit, softmax

from inference.models import load_model
from inference.postprocess import lesion_mask, postprocessing
from inference.preprocess import Framing, to_model_input
from training.architectures import FEATURE_STRIDE
from training.busi import CLASSES, TRAINING_SOURCES, load_mask, load_scan
from training.finetune import logits_function, predict_in_batches
from training.metrics import classification_metrics, selection_score
from training.reframe import MARGIN, grown_box  # around the lesion, as the re-framed validation renderings cut it
from training.split import samples_by_side
from training.train_segmenter import lesion_probabilities

OFFSETS = np.round(np.arange(-2.0, 2.0001, 0.05), 2)  # rule 61's grid of operating points
METRICS = ("bm_auc", "recall_bm", "recall_malignant", "macro_auc", "lesions_called_normal", "accuracy")


def peak_region(drawn: np.ndarray, probs: np.ndarray) -> np.ndarray | None:
    """The drawn region (connected) holding the segmenter's highest probability; None when nothing is drawn."""
    labels, count = ndimage.label(drawn)
    if not count:
        return None
    peaks = ndimage.maximum(probs, labels, np.arange(1, count + 1))
    return labels == int(np.argmax(peaks)) + 1


def view_box(region: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of `region` grown by `margin` of its height and width on each side and
    clipped to the scan."""
    rows, cols = ndimage.find_objects(region.astype(np.int32))[0]
    return grown_box((rows.start, rows.stop, cols.start, cols.stop), margin, *region.shape)


def cell_weights(region: np.ndarray, framing: Framing, stride: int) -> np.ndarray:
    """Rule 62: the share of each of the classifier's feature cells (`stride` input pixels a side) that
    `region` (a scan-sized mask) covers once framed as the classifier's input."""
    placed = framing.to_input(region.astype(np.float32))
    cells = framing.size // stride
    return placed.reshape(cells, stride, cells, stride).mean(axis=(1, 3))


def view_input(gray: np.ndarray, box: tuple[int, int, int, int], config: dict) -> np.ndarray:
    """The classifier's input for the scan cut to `box`: aspect kept and padded black, as training
    frames its zoomed crops (no search for the ultrasound field inside a cut that is all field)."""
    top, bottom, left, right = box
    crop = gray[top:bottom, left:right]
    framing = Framing.of(crop, config["input_size"], keep_aspect=True, clahe=config.get("framing", {}).get("clahe", False))
    return to_model_input(crop, framing)


def two_view_probabilities(whole_logits: np.ndarray, view_logits: np.ndarray | None, temperature: float,
                           classes: list[str], offset: float = 0.0) -> np.ndarray:
    """Calibrated probabilities: the whole scan's normal probability; the rest split between benign and
    malignant by the temperature-scaled mean of both views' malignant-minus-benign logit differences
    (None: the whole scan's alone), plus `offset` (the benign / malignant operating point chosen on
    validation scans). Without a view and without an offset: the whole scan's probabilities as they are."""
    whole = softmax(whole_logits / temperature)
    if view_logits is None and not offset:
        return whole
    normal, benign, malignant = (classes.index(c) for c in ("normal", "benign", "malignant"))
    views = (whole_logits,) if view_logits is None else (whole_logits, view_logits)
    difference = np.mean([logits[malignant] - logits[benign] for logits in views]) + offset
    malignant_share = expit(difference / temperature)
    out = np.empty_like(whole)
    out[normal] = whole[normal]
    out[benign], out[malignant] = (1 - whole[normal]) * (1 - malignant_share), (1 - whole[normal]) * malignant_share
    return out


class SourceScans:
    """One source's validation scans, decoded once: classifier inputs of the whole scans, and of the
    lesion views cut around the segmenter's drawing and around the true mask; and, for rule 62, how much
    of each classifier feature cell the segmenter's drawing covers."""

    def __init__(self, source: str, segmenter, config: dict, side: str = "val"):
        samples = samples_by_side(source)[side]
        self.labels = np.array([s.label_index for s in samples])
        grays = [load_scan(s) for s in samples]
        seg_config = segmenter.config
        seg_framings = [Framing.for_model(g, seg_config) for g in grays]
        seg_probs = lesion_probabilities(segmenter, np.stack([to_model_input(g, f) for g, f in zip(grays, seg_framings)]))
        framings = [Framing.for_model(g, config) for g in grays]
        self.whole = np.stack([to_model_input(g, f) for g, f in zip(grays, framings)])
        regions = {"predicted": [], "true": []}
        for framing_s, probs, sample in zip(seg_framings, seg_probs, samples):
            scan_probs = framing_s.to_scan(probs)
            drawn = lesion_mask(scan_probs, **postprocessing(seg_config))
            regions["predicted"].append(peak_region(drawn, scan_probs))
            truth = load_mask(sample)
            regions["true"].append(peak_region(truth, truth.astype(np.float32)))
        self.views = {}
        for name, found in regions.items():
            which = [i for i, region in enumerate(found) if region is not None]
            self.views[name] = (which, np.stack([view_input(grays[i], view_box(found[i], MARGIN), config) for i in which]))
        which = [i for i, region in enumerate(regions["predicted"]) if region is not None]
        self.cells = (which, np.stack([cell_weights(regions["predicted"][i], framings[i], FEATURE_STRIDE) for i in which]))


def scored(probs: np.ndarray, labels: np.ndarray) -> dict:
    """The headline numbers of `METRICS` and the trainer's score."""
    metrics = classification_metrics(probs, labels)
    return {key: metrics[key] for key in METRICS} | {"score": selection_score(metrics)}


def run_logits(loaded, scans: SourceScans) -> dict:
    """One classifier's logits on one source's scans: whole scans, each kind of lesion view by scan index,
    and (rule 62, "pooled") the per-cell logits of the whole-scan pass averaged over the drawn lesion's cells."""
    config = loaded.config
    model = loaded.model
    features_and_logits = keras.Model(model.input, [model.get_layer(config["gradcam_layer"]).output,
                                                    model.get_layer(config["logits_layer"]).output])
    features, whole = predict_in_batches(tf.function(lambda x: features_and_logits(x, training=False)), scans.whole)
    kernel, bias = model.get_layer(config["logits_layer"]).get_weights()
    cell_logits = features @ kernel + bias  # the head is linear over the cells' mean: whole = their mean
    assert np.allclose(cell_logits.mean(axis=(1, 2)), whole, atol=1e-3), "the head is not linear over the cells"
    which, weights = scans.cells
    pooled = np.einsum("nhw,nhwk->nk", weights, cell_logits[which]) / weights.sum(axis=(1, 2))[:, None]
    logits = logits_function(loaded)
    out = {"whole": whole, "labels": scans.labels, "pooled": dict(zip(which, pooled))}
    for name, (which, inputs) in scans.views.items():
        out[name] = dict(zip(which, predict_in_batches(logits, inputs)))
    return out


def probabilities(run: dict, view: str | None, temperature: float, offset: float = 0.0) -> np.ndarray:
    """Calibrated probabilities of every scan: the whole scan alone (`view` None) or with its lesion view."""
    return np.stack([two_view_probabilities(z, None if view is None else run[view].get(i), temperature,
                                               list(CLASSES), offset) for i, z in enumerate(run["whole"])])


def own_side_offset(runs: list[dict], view: str | None, temperature: float) -> float:
    """Rule 61: the offset of the grid with the best Recall_BM on the classifier's own validation sides
    (pooled), the one nearest to 0 among ties."""
    labels = np.concatenate([run["labels"] for run in runs])
    recalls = [classification_metrics(np.concatenate([probabilities(run, view, temperature, b) for run in runs]),
                                      labels)["recall_bm"] for b in OFFSETS]
    best = max(recalls)
    return float(min((b for b, r in zip(OFFSETS, recalls) if r >= best - 1e-12), key=abs))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("classifiers", nargs="+", type=Path,
                        help="single-source runs (scored on the other source) or pooled ones (scored on both)")
    parser.add_argument("--segmenter", default="models/segmenter", help="draws the lesion views")
    parser.add_argument("--side", choices=("val", "train"), default="val",
                        help="the scored source's side; train (rule 63): single-source runs only, on the other "
                             "source's training side, without the operating points chosen on own validation sides")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    segmenter = load_model(args.segmenter)
    cache, rows = {}, []

    def scans_of(source, config, side):
        key = (source, side, config["input_size"], json.dumps(config.get("framing", {}), sort_keys=True))
        if key not in cache:
            cache[key] = SourceScans(source, segmenter, config, side)
        return cache[key]

    for folder in args.classifiers:
        loaded = load_model(str(folder))
        temperature = loaded.config["temperature"]
        trained_on = loaded.config["training"]["sources"]
        scored_on = [s for s in TRAINING_SOURCES if s not in trained_on] or list(TRAINING_SOURCES)
        if args.side != "val" and scored_on == list(TRAINING_SOURCES):
            continue  # a classifier trained on both sources saw their training sides
        runs = {source: run_logits(loaded, scans_of(source, loaded.config, args.side)) for source in scored_on}
        if args.side == "val":
            own = [run_logits(loaded, scans_of(source, loaded.config, "val")) if source not in runs else runs[source]
                   for source in trained_on]
            offsets = {"whole": own_side_offset(own, None, temperature),
                       "two_views": own_side_offset(own, "predicted", temperature)}
        for source in scored_on:
            run = runs[source]
            row = {"run": str(folder), "trained_on": trained_on, "scored_on": source,
                   "whole": scored(probabilities(run, None, temperature), run["labels"]),
                   "two_views_predicted": scored(probabilities(run, "predicted", temperature), run["labels"]),
                   "two_views_true": scored(probabilities(run, "true", temperature), run["labels"]),
                   "pooled_view": scored(probabilities(run, "pooled", temperature), run["labels"])}
            if args.side == "val":
                row |= {"offsets": offsets,
                        "whole_offset": scored(probabilities(run, None, temperature, offsets["whole"]), run["labels"]),
                        "two_views_offset": scored(probabilities(run, "predicted", temperature, offsets["two_views"]),
                                                   run["labels"])}
            rows.append(row)
            print(json.dumps({k: row[k] if not isinstance(row[k], dict) else
                              {m: round(v, 3) if isinstance(v, float) else v for m, v in row[k].items()}
                              for k in row}), flush=True)
    command = " ".join(["python -m training.two_views", *map(str, args.classifiers),
                        *(["--segmenter", args.segmenter] if args.segmenter != "models/segmenter" else []),
                        *(["--side", args.side] if args.side != "val" else [])])
    report = {"command": command, "segmenter": args.segmenter, "side": args.side, "margin": MARGIN, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
