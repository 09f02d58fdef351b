"""Fit the out-of-distribution check of a classifier (`inference.ood`) on the training sides and
choose its threshold on the validation sides; writes `ood.npz` into the model folder.

Threshold: the largest validation distance times a margin for scanners the check has not seen,
measured leave-one-source-out on the validation sides: fitted on one training source, how far the
other source's validation scans lie (99th percentile) relative to the fitting source's own largest
validation distance; the margin is the mean of those ratios over sources (at least 1). Layer: `block7_out` (stride 16, 80 channels). Compared with the last
layer and two deeper blocks, on the validation sides against natural and synthetic images
(scikit-image's samples, blank images), it had the widest gap: the last layer placed photos inside
the training range.

    python -m training.fit_ood [--model models/classifier] [--layer block7_out] [--components 32]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA

from inference.models import load_model
from inference.ood import FILE_NAME, FeatureDistance, pooled_layer
from training.busi import REPO_ROOT, TRAINING_SOURCES
from training.finetune import load_side, predict_in_batches


def fitted(features: np.ndarray, layer: str, components: int) -> FeatureDistance:
    pca = PCA(components, random_state=0).fit(features)
    return FeatureDistance(layer, pca.mean_, pca.components_, np.inf)


def unseen_source_margin(train: np.ndarray, train_source: np.ndarray, val: np.ndarray, val_source: np.ndarray,
                         layer: str, components: int) -> tuple[float, dict]:
    """Mean over sources of (99th percentile distance of the other sources' validation scans) /
    (largest distance of the source's own validation scans), the check fitted on that source alone."""
    ratios = {}
    for source in np.unique(train_source):
        check = fitted(train[train_source == source], layer, components)
        own = check.distance(val[val_source == source]).max()
        other = np.quantile(check.distance(val[val_source != source]), 0.99)
        ratios[TRAINING_SOURCES[source]] = float(other / own)
    return max(1.0, float(np.mean(list(ratios.values())))), ratios


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "classifier")
    parser.add_argument("--layer", default="block7_out")
    parser.add_argument("--components", type=int, default=32)
    args = parser.parse_args(argv)
    loaded = load_model(str(args.model))
    c = loaded.config
    sides = {side: load_side(side, c["input_size"], 0, c.get("framing", {}), TRAINING_SOURCES) for side in ("train", "val")}
    pooled = pooled_layer(loaded.model, args.layer)
    features = {side: predict_in_batches(pooled, arrays["images"]) for side, arrays in sides.items()}
    margin, ratios = unseen_source_margin(features["train"], sides["train"]["source"], features["val"],
                                          sides["val"]["source"], args.layer, args.components)
    pooled_check = fitted(features["train"], args.layer, args.components)
    val_distances = pooled_check.distance(features["val"])
    check = FeatureDistance(args.layer, pooled_check.mean, pooled_check.components, float(val_distances.max() * margin))
    check.save(args.model / FILE_NAME)
    summary = {"layer": args.layer, "components": args.components, "margin": margin,
               "unseen_source_ratios": ratios, "threshold": check.threshold,
               "val_distance_median": float(np.median(val_distances)), "val_distance_max": float(val_distances.max())}
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.model / FILE_NAME}")


if __name__ == "__main__":
    main()
