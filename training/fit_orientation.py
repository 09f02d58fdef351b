"""Fit the orientation check of a classifier (`inference.orientation`) and choose its thresholds;
writes `orientation.npz` into the model folder and the numbers to `--report`.

Examples: every training-side scan as it is and mirrored left-right ("as shown"), inverted, and upside
down, each altered as a raw scan and then framed as serving frames it. Features: one encoder layer
(`--layer`; by default the one the model's orientation check already reads, which was the
out-of-distribution check's layer until rule 82 re-chose that check's), averaged over the top and the
bottom half of the input. A logistic regression
(scikit-learn, standardised features, C = `REGULARISATION`) over the three kinds.

Thresholds by cross-source validation, because the check must hold on scanners it has not seen: fitted
on one source's training side, it scores the other source's validation side — as shown, mirrored, and
every rendering of `training.renderings` (other exports, resolutions, compression, gain curves) as
real scans, plus their inverted and upside-down versions. The inverted threshold (a refusal) is the
lowest of `GRID` at which no real scan of the unseen source is called inverted, in both directions; the
upside-down threshold (a warning only) the lowest at which at most `UPSIDE_DOWN_FALSE_ALARMS` of them
are called upside down in each direction. The shipped check is then fitted on both training sides and
scored on both validation sides, beside the classifier's own numbers on those scans as is, mirrored and
upside down (why upside down earns a warning).

    python -m training.fit_orientation [--model models/classifier] [--layer block11_out]
                                       [--report reports/orientation_check.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.special import softmax
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from inference.models import load_model
from inference.ood import FILE_NAME as OOD_FILE_NAME
from inference.ood import FeatureDistance, ScreeningLayers, screening_features
from inference.orientation import FILE_NAME, KINDS, OrientationCheck
from inference.preprocess import Framing, to_model_input
from training.busi import REPO_ROOT, TRAINING_SOURCES, load_scan
from training.finetune import load_side, predict_in_batches
from training.metrics import classification_metrics
from training.renderings import AS_IS, rendered
from training.split import samples_by_side

REGULARISATION = 0.01
GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
UPSIDE_DOWN_FALSE_ALARMS = 0.01
CLASSIFIER_METRICS = ("accuracy", "recall_bm", "recall_malignant", "macro_auc", "bm_auc", "lesions_called_normal")
ALTERATIONS = {  # raw scan -> altered scan, and the kind it is
    "as is": (lambda gray: gray, "as shown"),
    "mirrored": (lambda gray: gray[:, ::-1], "as shown"),
    "inverted": (lambda gray: 255 - gray, "inverted"),
    "upside down": (lambda gray: gray[::-1], "upside down"),
}


def altered_outputs(screening, samples, config: dict) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """({alteration: (n, 2, C) features}, {alteration: (n, classes) logits}) of `samples`' scans, each
    altered raw and then framed; `screening` is the classifier's `ood.screening_features` with its logits."""
    grays = [load_scan(sample) for sample in samples]
    features, logits = {}, {}
    for name, (alter, _) in ALTERATIONS.items():
        scans = [np.ascontiguousarray(alter(gray)) for gray in grays]
        inputs = np.stack([to_model_input(s, Framing.for_model(s, config)) for s in scans])
        logits[name], _, features[name] = predict_in_batches(screening, inputs)
    return features, logits


def fitted(features: dict[str, np.ndarray], layer: str) -> OrientationCheck:
    """The regression over `features` ({alteration: (n, 2, C)}), thresholds not yet chosen."""
    x = np.concatenate([f.reshape(len(f), -1) for f in features.values()])
    y = np.concatenate([np.full(len(f), KINDS.index(ALTERATIONS[name][1])) for name, f in features.items()])
    scaler = StandardScaler().fit(x)
    regression = LogisticRegression(C=REGULARISATION, max_iter=5000).fit(scaler.transform(x), y)
    return OrientationCheck(layer, scaler.mean_, scaler.scale_, regression.coef_, regression.intercept_,
                            np.full(len(KINDS), np.nan))


def called(check: OrientationCheck, features: np.ndarray, kind: str, threshold: float) -> float:
    """Share of the scans of `features` (n, 2, C) whose probability of `kind` reaches `threshold`."""
    return float((check.probabilities(features)[:, KINDS.index(kind)] >= threshold).mean())


def scored(check: OrientationCheck, features: dict[str, np.ndarray], real: np.ndarray, thresholds: dict) -> dict:
    """At `thresholds` ({kind: t}): the share of `real` scans called each kind, and of each altered
    version called what it is."""
    return {"real_called_" + kind.replace(" ", "_"): called(check, real, kind, t) for kind, t in thresholds.items()} | {
        name + "_detected": called(check, features[name], kind, thresholds[kind])
        for name, (_, kind) in ALTERATIONS.items() if kind in thresholds}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "classifier")
    parser.add_argument("--layer", help="the classifier layer to read (default: the one its orientation check reads, "
                                        "else its out-of-distribution check's)")
    parser.add_argument("--report", type=Path, default=REPO_ROOT / "reports" / "orientation_check.json")
    args = parser.parse_args(argv)
    loaded = load_model(str(args.model))
    config = loaded.config
    layer = args.layer or (OrientationCheck.load(args.model / FILE_NAME) or FeatureDistance.load(args.model / OOD_FILE_NAME)).layer
    screening = screening_features(loaded.model, config["logits_layer"], ScreeningLayers(layer, layer))
    features, logits = {}, {}
    for source in TRAINING_SOURCES:
        for side in ("train", "val"):
            features[(source, side)], logits[(source, side)] = altered_outputs(screening, samples_by_side(source)[side], config)
    val = load_side("val", config["input_size"], 0, config.get("framing", {}), TRAINING_SOURCES)
    renderings = {name: predict_in_batches(screening, images.astype(np.float32))[2]
                  for name, images in rendered(val["images"], val["masks"]).items() if name != AS_IS}

    def real(source):
        own = val["source"] == TRAINING_SOURCES.index(source)
        f = features[(source, "val")]
        return np.concatenate([f["as is"], f["mirrored"], *(r[own] for r in renderings.values())])

    directions = []
    for fit_on in TRAINING_SOURCES:
        unseen = next(s for s in TRAINING_SOURCES if s != fit_on)
        check = fitted(features[(fit_on, "train")], layer)
        directions.append({"fitted_on": fit_on, "scored_on": unseen, "grid": {
            str(t): scored(check, features[(unseen, "val")], real(unseen), {"inverted": t, "upside down": t})
            for t in GRID}})
    inverted = min((t for t in GRID if all(d["grid"][str(t)]["real_called_inverted"] == 0 for d in directions)),
                   default=GRID[-1])
    upside_down = min((t for t in GRID if all(d["grid"][str(t)]["real_called_upside_down"] <= UPSIDE_DOWN_FALSE_ALARMS
                                              for d in directions)), default=GRID[-1])
    thresholds = {"inverted": inverted, "upside down": upside_down}
    pooled = fitted({name: np.concatenate([features[(s, "train")][name] for s in TRAINING_SOURCES])
                     for name in ALTERATIONS}, layer)
    check = replace(pooled, thresholds=np.array([np.nan, inverted, upside_down]))
    check.save(args.model / FILE_NAME)
    shipped = {source: scored(check, features[(source, "val")], real(source), thresholds) for source in TRAINING_SOURCES}
    labels = np.concatenate([[s.label_index for s in samples_by_side(source)["val"]] for source in TRAINING_SOURCES])
    classifier = {name: {key: value for key, value in classification_metrics(
        softmax(np.concatenate([logits[(source, "val")][name] for source in TRAINING_SOURCES]) / config["temperature"],
                axis=-1), labels).items() if key in CLASSIFIER_METRICS}
        for name in ALTERATIONS if name != "inverted"}
    report = {"command": " ".join(["python -m training.fit_orientation", *(argv if argv is not None else sys.argv[1:])]),
              "model": str(args.model), "layer": layer, "regularisation": REGULARISATION,
              "renderings": list(renderings), "thresholds": thresholds, "cross_source": directions,
              "shipped_on_validation": shipped, "classifier_on_validation": classifier}
    args.report.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({"thresholds": thresholds, "shipped_on_validation": shipped, "classifier_on_validation": classifier},
                     indent=1))
    print(f"wrote {args.model / FILE_NAME} and {args.report}")


if __name__ == "__main__":
    main()
