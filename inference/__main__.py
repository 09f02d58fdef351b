"""Batch analysis: python -m inference SCAN_OR_FOLDER... --out results.csv [--masks DIR]

Folders are searched recursively for images; files whose stem ends in `_mask` or `_mask_N` (BUSI's
ground truth) are skipped. A file that fails gets a row with its error in `warnings`; the run goes on.
With --masks, each scan's thresholded lesion mask is written as DIR/<stem>_pred.png (0/255).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from inference.decode import ScanError
from inference.files import is_image_file, mask_owner
from inference.pipeline import Analyzer

COLUMNS = ["file", "predicted_class", "p_normal", "p_benign", "p_malignant",
           "lesion_count", "lesion_area_px", "lesion_area_percent", "warnings"]


def find_scans(paths: list[str]) -> list[Path]:
    """Files as given, and every image below each folder (sorted), minus ground-truth masks."""
    found = []
    for given in map(Path, paths):
        if given.is_dir():
            found += sorted(p for p in given.rglob("*") if p.is_file() and is_image_file(p) and mask_owner(p) is None)
        else:
            found.append(given)
    return found


def analyse_file(analyzer: Analyzer, path: Path, masks_dir: Path | None) -> dict:
    row = dict.fromkeys(COLUMNS, "")
    row["file"] = str(path)
    try:
        analysis = analyzer.analyze(path)
    except ScanError as error:
        row["warnings"] = f"error: {error}"
        return row
    row["warnings"] = " | ".join(analysis.warnings)
    if analysis.out_of_distribution:  # no class, probabilities or lesion: the warning says why
        return row
    stats = analysis.lesion_stats()
    probabilities = analysis.probability_dict()
    row.update(predicted_class=analysis.predicted_class,
               **{f"p_{c}": f"{p:.4f}" for c, p in probabilities.items()},
               lesion_count=stats["lesion_count"], lesion_area_px=stats["lesion_area_px"],
               lesion_area_percent=stats["lesion_area_percent"])
    if masks_dir is not None:
        Image.fromarray(analysis.mask_png()).save(masks_dir / f"{path.stem}_pred.png")
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="scan files and/or folders")
    parser.add_argument("--out", type=Path, required=True, help="CSV file to write")
    parser.add_argument("--masks", type=Path, help="folder for predicted masks (<stem>_pred.png)")
    args = parser.parse_args(argv)
    scans = find_scans(args.inputs)
    if not scans:
        parser.error("no images found in the given paths")
    if args.masks:
        args.masks.mkdir(parents=True, exist_ok=True)
    analyzer = Analyzer()
    failures = 0
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for path in tqdm(scans, desc="analysing", unit="scan"):
            row = analyse_file(analyzer, path, args.masks)
            failures += row["warnings"].startswith("error:")
            writer.writerow(row)
    print(f"wrote {args.out}: {len(scans)} scans, {failures} failed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
