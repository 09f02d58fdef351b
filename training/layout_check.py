"""Rule 57: can a learned check tell a breast ultrasound altered out of the shape the models learned
(turned upside down, two views side by side, grey levels inverted) from one as the scanner wrote it,
on scanners it has not seen? Validation sides only; writes the rule's numbers to `--report`.

Features: the classifier's out-of-distribution layer (`ood.npz`'s, the same forward pass), averaged
over the whole map and over its top, bottom, left and right halves. Alterations of every scan of a
side: upside down; beside another scan of the same source and side with a black gap of 0-20 px;
inverted (255 - x). A multinomial logistic regression (as-is and the three alterations), its C chosen
by grouped 5-fold cross-validation (log loss) on the training sides; a scan is flagged when
1 - P(as-is) exceeds the lowest threshold that flags at most 1 % of each source's unaltered
validation scans. The rule passes when, on the validation sides, each alteration is detected at
least 90 % per source and, fitted on one source alone (its own C and threshold), at most 3 % of the
other source's unaltered validation scans are flagged, both directions.

    python -m training.layout_check [--model models/classifier] [--report reports/layout_check_validation.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from inference.models import load_model
from inference.ood import FILE_NAME, FeatureDistance
from inference.preprocess import Framing, to_model_input
from training.busi import REPO_ROOT, SOURCES, TRAINING_SOURCES, load_scan
from training.finetune import predict_in_batches
from training.split import samples_by_side

LAYOUTS = ("as_is", "upside_down", "two_views", "inverted")
MAX_GAP = 20          # px of black between two views
FLAGGED_AS_IS = 0.01  # the threshold flags at most this share of each source's unaltered validation scans
CS = (0.001, 0.01, 0.1, 1.0)


def half_pooled(model: keras.Model, layer: str):
    """A compiled function: inputs (B, S, S, 3) -> (B, 5k) means of `layer` over the whole map and its
    top, bottom, left and right halves (where a flipped or doubled scan differs from a plain one)."""
    features = keras.Model(model.input, model.get_layer(layer).output)

    def run(images):
        f = features(images, training=False)
        h, w = f.shape[1] // 2, f.shape[2] // 2
        parts = (f, f[:, :h], f[:, -h:], f[:, :, :w], f[:, :, -w:])
        return (tf.concat([tf.reduce_mean(p, axis=(1, 2)) for p in parts], axis=-1),)

    return tf.function(run, reduce_retracing=True)


def two_views(left: np.ndarray, right: np.ndarray, gap: int) -> np.ndarray:
    """Two greyscale scans side by side, top-aligned, `gap` px of black between them."""
    height = max(left.shape[0], right.shape[0])
    padded = [np.pad(x, ((0, height - x.shape[0]), (0, 0))) for x in (left, right)]
    return np.hstack([padded[0], np.zeros((height, gap), np.uint8), padded[1]])


def side_features(source: str, side: str, pooled, size: int, framing: dict, rng: np.random.Generator) -> dict:
    """{layout: (N, 5k) features} of a source's side, plus "group" (patient or duplicate group)."""
    samples = samples_by_side(source)[side]
    grays = [load_scan(s) for s in samples]
    partners = (np.arange(len(grays)) + rng.integers(1, len(grays), len(grays))) % len(grays)  # never itself
    gaps = rng.integers(0, MAX_GAP + 1, len(grays))
    layouts = {"as_is": grays, "upside_down": [np.flipud(g) for g in grays],
               "two_views": [two_views(g, grays[p], int(gap)) for g, p, gap in zip(grays, partners, gaps)],
               "inverted": [255 - g for g in grays]}

    def model_input(gray):
        return to_model_input(gray, Framing.of(gray, size, **framing)).astype(np.uint8)
    out = {layout: predict_in_batches(pooled, np.stack([model_input(g) for g in scans]))[0]
           for layout, scans in layouts.items()}
    rows = {row["file"]: row for row in csv.DictReader(SOURCES[source].split_csv.open())}
    out["group"] = np.array([rows[s.relpath].get("group") or rows[s.relpath]["patient_id"] for s in samples])
    return out


def stacked(features: dict, sources) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, layout index, group) of the training side of `sources`; a scan's altered copies share its
    group, so no fold sees a scan it is scored on."""
    parts = [(features[s, "train"][layout], index, np.char.add(f"{s}:", features[s, "train"]["group"]))
             for s in sources for index, layout in enumerate(LAYOUTS)]
    return (np.concatenate([x for x, _, _ in parts]), np.concatenate([np.full(len(x), i) for x, i, _ in parts]),
            np.concatenate([g for _, _, g in parts]))


def fitted(features: dict, sources) -> dict:
    """The check fitted on the training sides of `sources`: C by grouped cross-validation, threshold
    on their validation sides."""
    x, y, groups = stacked(features, sources)
    losses = {c: float(cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000)),
                                       x, y, groups=groups, cv=GroupKFold(5), scoring="neg_log_loss").mean())
              for c in CS}
    c = max(losses, key=losses.get)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000)).fit(x, y)
    threshold = max(np.sort(flag_scores(model, features[s, "val"]["as_is"]))[::-1][int(FLAGGED_AS_IS * len(features[s, "val"]["as_is"]))]
                    for s in sources)
    return {"model": model, "C": c, "cv_log_loss": {str(k): -v for k, v in losses.items()}, "threshold": float(threshold)}


def flag_scores(model, x: np.ndarray) -> np.ndarray:
    return 1 - model.predict_proba(x)[:, 0]


def flagged(check: dict, features: dict, sources) -> dict:
    """Share of each source's validation scans flagged, per layout."""
    return {s: {layout: float((flag_scores(check["model"], features[s, "val"][layout]) > check["threshold"]).mean())
                for layout in LAYOUTS} for s in sources}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "classifier")
    parser.add_argument("--report", type=Path, default=REPO_ROOT / "reports" / "layout_check_validation.json")
    parser.add_argument("--seed", type=int, default=57)
    args = parser.parse_args(argv)
    loaded = load_model(str(args.model))
    layer = FeatureDistance.load(args.model / FILE_NAME).layer
    pooled = half_pooled(loaded.model, layer)
    rng = np.random.default_rng(args.seed)
    features = {(s, side): side_features(s, side, pooled, loaded.config["input_size"], loaded.config.get("framing", {}), rng)
                for s in TRAINING_SOURCES for side in ("train", "val")}
    pooled_check = fitted(features, TRAINING_SOURCES)
    report = {"command": " ".join(["python -m training.layout_check", *(argv if argv is not None else sys.argv[1:])]),
              "model": str(args.model), "layer": layer, "layouts": list(LAYOUTS),
              "both_sources": {k: v for k, v in pooled_check.items() if k != "model"}
              | {"val_flagged": flagged(pooled_check, features, TRAINING_SOURCES)}}
    for own in TRAINING_SOURCES:
        check = fitted(features, (own,))
        report[f"fitted_on_{own}"] = {k: v for k, v in check.items() if k != "model"} \
            | {"val_flagged": flagged(check, features, TRAINING_SOURCES)}
    detected = min(report["both_sources"]["val_flagged"][s][layout] for s in TRAINING_SOURCES for layout in LAYOUTS[1:])
    unseen = max(report[f"fitted_on_{own}"]["val_flagged"][other]["as_is"]
                 for own in TRAINING_SOURCES for other in TRAINING_SOURCES if other != own)
    report["passes"] = {"each_alteration_detected_at_least_0.90": detected >= 0.90,
                        "unseen_source_as_is_flagged_at_most_0.03": unseen <= 0.03}
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
