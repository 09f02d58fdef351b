"""Score out-of-distribution checks (`inference.ood`) on pictures that chose nothing: read once, after
a check's layer was chosen (`training.fit_ood`), to report how it does on pictures it was not fitted or
chosen on. Never a basis for choosing: a layer chosen to pass these would need new held-out pictures.

Three sets: Matplotlib's sample pictures (a photo, a pack shot, an MR slice, two elevation maps), which
no choice has read; the test suite's pictures (`tests/test_ood.py`); both each plain, in a probe's sector
with and without speckle and in random probe framings (`training.fit_ood.framed_pictures`); and the
picture a review found passing the check that layer `block11_out` gave: scikit-image's cell, resized to
560 × 400 and inside a 70-degree sector.

    python -m training.ood_held_out --check models/classifier/ood.npz [--check OTHER.npz ...]
                                    [--model models/classifier] [--out reports/ood_held_out.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import matplotlib.cbook
import numpy as np
import skimage.data
from PIL import Image

from inference.models import load_model
from inference.ood import FeatureDistance, pooled_layers
from inference.preprocess import Framing, to_model_input
from training.busi import REPO_ROOT
from training.finetune import predict_in_batches
from training.fit_ood import PROBE_FRAMINGS, convex_field, framed_pictures, gray_picture


def stretched(values: np.ndarray) -> np.ndarray:
    """Any 2-D array (elevations, 16-bit MR values) -> uint8 spanning 0..255."""
    values = np.asarray(values, np.float64)
    return ((values - values.min()) / (np.ptp(values) or 1) * 255).astype(np.uint8)


def matplotlib_pictures() -> dict[str, np.ndarray]:
    """Matplotlib's bundled sample pictures, greyscale uint8."""
    def sample(name):
        return matplotlib.cbook.get_sample_data(name, asfileobj=False)

    with gzip.open(sample("s1045.ima.gz")) as slice_file:
        mr_slice = np.frombuffer(slice_file.read(), np.uint16).reshape(256, 256)
    return {"photo (grace_hopper.jpg)": gray_picture(np.asarray(Image.open(sample("grace_hopper.jpg")))),
            "pack shot (Minduka_Present_Blue_Pack.png)": gray_picture(np.asarray(Image.open(sample("Minduka_Present_Blue_Pack.png")))),
            "MR slice (s1045.ima.gz)": stretched(mr_slice),
            "elevation map (jacksboro_fault_dem.npz)": stretched(np.load(sample("jacksboro_fault_dem.npz"))["elevation"]),
            "elevation map (topobathy.npz)": stretched(np.load(sample("topobathy.npz"))["topo"])}


def test_suite_pictures() -> dict[str, np.ndarray]:
    """The pictures `tests/test_ood.py` checks, greyscale uint8."""
    return {"camera": skimage.data.camera(), "coins": skimage.data.coins(), "moon": skimage.data.moon(),
            "page": skimage.data.page(), "text": skimage.data.text(),
            "astronaut": gray_picture(skimage.data.astronaut()),
            "motorcycle": gray_picture(skimage.data.stereo_motorcycle()[0])}


def reviewed_cell() -> np.ndarray:
    """The cell as the review showed it: 560 × 400, in a sector of 35 degrees either side, radii 100–470 px
    from an apex 80 px above the top edge."""
    cell = np.asarray(Image.fromarray(gray_picture(skimage.data.cell())).resize((560, 400), Image.BILINEAR))
    return np.where(convex_field(400, 560, apex=0.2, inner=0.25, outer=1.175, half_angle=35), cell, 0).astype(np.uint8)


def picture_sets() -> dict[str, dict[str, np.ndarray]]:
    return {"Matplotlib's sample pictures": framed_pictures(matplotlib_pictures(), PROBE_FRAMINGS, seed=1),
            "the test suite's pictures": framed_pictures(test_suite_pictures(), PROBE_FRAMINGS, seed=2),
            "the review's cell in its sector": {"cell": reviewed_cell()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", type=Path, action="append", required=True, help="an ood.npz (repeat to compare)")
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "classifier")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "ood_held_out.json")
    args = parser.parse_args(argv)
    loaded = load_model(str(args.model))
    checks = [FeatureDistance.load(path) for path in args.check]
    pooled = pooled_layers(loaded.model, [check.layer for check in checks])
    sets = []
    for set_name, pictures in picture_sets().items():
        inputs = np.stack([to_model_input(p, Framing.for_model(p, loaded.config)) for p in pictures.values()])
        scored = []
        for path, check, features in zip(args.check, checks, predict_in_batches(pooled, inputs)):
            passed = check.distance(features) <= check.threshold
            scored.append({"check": str(path), "layer": check.layer, "threshold": check.threshold,
                           "refused": float(1 - passed.mean()), "passed": [n for n, p in zip(pictures, passed) if p]})
            print(f"{set_name}: {check.layer} refused {scored[-1]['refused']:.3f} of {len(pictures)}; "
                  f"passed {scored[-1]['passed']}", flush=True)
        sets.append({"pictures": set_name, "count": len(pictures), "checks": scored})
    command = " ".join(["python -m training.ood_held_out", *(argv if argv is not None else sys.argv[1:])])
    args.out.write_text(json.dumps({"command": command, "model": str(args.model), "sets": sets}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
