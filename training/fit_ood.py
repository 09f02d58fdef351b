"""Fit the out-of-distribution check of a classifier (`inference.ood`) on the training sides and
choose its threshold on the validation sides; writes `ood.npz` into the model folder.

Threshold: the largest validation distance times a margin for scanners the check has not seen,
measured leave-one-source-out on the validation sides: fitted on one training source, how far the
other source's validation scans lie (99th percentile) relative to the fitting source's own largest
validation distance; the margin is the mean of those ratios over sources (at least 1).

Layer: each candidate layer gets that fit and threshold, and the one that refuses the largest share
of *design negatives* is kept (ties: the earlier, cheaper layer). The design negatives are
scikit-image's bundled pictures that the test suite does not use — textures, photos, microscopy,
drawings, a phantom — and uniform noise; the suite's own images (camera, coins, moon, page, text,
astronaut, blank, constant) stay an independent check. Which layer separates best depends on the
classifier: for the one trained on zoomed crops, `block7_out`'s threshold rose until a photo of a
sign passed. Writes the comparison to `--report`.

    python -m training.fit_ood [--model models/classifier] [--layers block5_out ...] [--components 32]
                               [--report reports/ood_layers.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import skimage.color
import skimage.data
import skimage.util
import tensorflow as tf
from sklearn.decomposition import PCA

from inference.models import load_model
from inference.ood import FILE_NAME, FeatureDistance, pooled_layers
from inference.preprocess import Framing, to_model_input
from training.busi import REPO_ROOT, TRAINING_SOURCES
from training.efficientnet_lite import STAGE_REPEATS
from training.finetune import load_side, predict_in_batches


def candidate_layers(encoder: str) -> list[str]:
    """Every other block's output from block 5 to the encoder's last block, that last block, and the
    head's activation: Lite0 ends at block 15, Lite1 at block 20."""
    last = sum(STAGE_REPEATS[encoder]) - 1
    return [f"block{index}_out" for index in sorted({*range(5, last + 1, 2), last})] + ["top_activation"]


DESIGN_NEGATIVES = ("binary_blobs", "brick", "cell", "checkerboard", "chelsea", "clock", "coffee", "colorwheel", "grass",
                    "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "retina",
                    "rocket", "shepp_logan_phantom")


def in_sector(picture: np.ndarray, speckle: np.random.Generator | None = None) -> np.ndarray:
    """`picture` (H, W) shown as a convex probe shows its field: inside a 72-degree sector on black
    (apex above the top edge), optionally under multiplicative speckle-like noise. Another organ's
    ultrasound looks like this, and framing crops a plain picture's black borders but keeps a sector's."""
    height, width = picture.shape
    rows, columns = np.mgrid[0:height, 0:width]
    down, across = rows + 0.1 * height, columns - width / 2  # from the apex
    radius = np.hypot(across, down)
    inside = (radius >= 0.25 * height) & (radius <= 1.05 * height) & (np.abs(np.arctan2(across, down)) <= np.deg2rad(36))
    shown = picture.astype(np.float64)
    if speckle is not None:
        shown *= speckle.rayleigh(1.0, shown.shape) / np.sqrt(np.pi / 2)  # Rayleigh noise of mean 1
    return np.where(inside, shown, 0).clip(0, 255).astype(np.uint8)


def design_negatives(config: dict) -> dict[str, np.ndarray]:
    """{name: classifier input} of pictures that are not ultrasound, framed as serving frames a scan:
    each plain, and inside a probe's sector on black with and without speckle."""
    def gray(image: np.ndarray) -> np.ndarray:
        if image.ndim == 3:
            image = skimage.color.rgb2gray(image[..., :3])
        return skimage.util.img_as_ubyte(image)

    rng = np.random.default_rng(0)
    plain = {name: gray(getattr(skimage.data, name)()) for name in DESIGN_NEGATIVES}
    plain["uniform noise"] = rng.integers(0, 256, (400, 500), dtype=np.uint8)
    pictures = {**plain, **{f"{name} in a sector": in_sector(picture) for name, picture in plain.items()},
                **{f"{name} in a sector with speckle": in_sector(picture, rng) for name, picture in plain.items()}}
    return {name: to_model_input(picture, Framing.for_model(picture, config)) for name, picture in pictures.items()}


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


def layer_check(train: dict, val: dict, negatives: np.ndarray, layer: str,
                components: int) -> tuple[FeatureDistance, dict]:
    """One layer's check (fitted on the pooled training sides, thresholded as the module says) and
    its record: margin, threshold, validation distances and the share of design negatives refused."""
    margin, ratios = unseen_source_margin(train["features"], train["source"], val["features"], val["source"],
                                          layer, components)
    pooled = fitted(train["features"], layer, components)
    val_distances = pooled.distance(val["features"])
    check = FeatureDistance(layer, pooled.mean, pooled.components, float(val_distances.max() * margin))
    negative_distances = check.distance(negatives)
    return check, {"layer": layer, "components": components, "margin": margin, "unseen_source_ratios": ratios,
                   "threshold": check.threshold, "val_distance_median": float(np.median(val_distances)),
                   "val_distance_max": float(val_distances.max()),
                   "negatives_refused": float((negative_distances > check.threshold).mean())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "classifier")
    parser.add_argument("--layers", nargs="+", help="candidate layers (default: candidate_layers of the model's encoder)")
    parser.add_argument("--components", type=int, default=32)
    parser.add_argument("--report", type=Path, default=REPO_ROOT / "reports" / "ood_layers.json")
    args = parser.parse_args(argv)
    loaded = load_model(str(args.model))
    args.layers = args.layers or candidate_layers(loaded.encoder)
    c = loaded.config
    sides = {side: load_side(side, c["input_size"], 0, c.get("framing", {}), TRAINING_SOURCES) for side in ("train", "val")}
    negatives = design_negatives(c)
    pooled = pooled_layers(loaded.model, args.layers)
    features = {side: predict_in_batches(pooled, arrays["images"]) for side, arrays in sides.items()}
    negative_features = pooled(tf.constant(np.stack(list(negatives.values()))))
    checks, records = [], []
    for index, layer in enumerate(args.layers):
        check, record = layer_check({"features": features["train"][index], "source": sides["train"]["source"]},
                                    {"features": features["val"][index], "source": sides["val"]["source"]},
                                    negative_features[index].numpy(), layer, args.components)
        checks.append(check)
        records.append(record)
        print(f"{layer:15s} threshold {record['threshold']:6.2f} (margin {record['margin']:.2f}), "
              f"design negatives refused {record['negatives_refused']:.2f}", flush=True)
    best = max(range(len(records)), key=lambda i: (records[i]["negatives_refused"], -i))
    checks[best].save(args.model / FILE_NAME)
    summary = {"command": " ".join(["python -m training.fit_ood", *(argv if argv is not None else sys.argv[1:])]),
               "model": str(args.model), "design_negatives": list(negatives), "kept": records[best]["layer"],
               "layers": records}
    args.report.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"kept {records[best]['layer']}; wrote {args.model / FILE_NAME} and {args.report}")


if __name__ == "__main__":
    main()
