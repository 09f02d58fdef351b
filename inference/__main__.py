"""Batch analysis: python -m inference SCAN_OR_FOLDER... --out results.csv|results.parquet
[--masks DIR] [--explain DIR] [--batch-size N] [--engine local|ray [--address ADDR]]

Folders are searched recursively for scans: images, DICOM files, and files without a suffix or with a
numeric one (DICOM files named IM0001 or by their UID); files whose stem ends in `_mask` or `_mask_N`
(BUSI's ground truth) are skipped. A file that fails gets a row with its error in `warnings`; the run
goes on, and exits 1 only if no scan at all could be analysed.
Scans are decoded in parallel and run through the models in batches (one forward pass per model
per batch). With --masks, each scan's thresholded lesion mask is written as DIR/<stem>_pred.png
(0/255); with --explain, the predicted class's Grad-CAM as DIR/<stem>_gradcam.png and, where a
lesion is drawn, its Seg-Grad-CAM as DIR/<stem>_seg_gradcam.png (computing them costs gradient
passes, so they are made only when asked for). Scans whose stems clash (sub/a.png and a.png) are
named by their path instead (sub__a_png_pred.png). An output name ending in .parquet gives Parquet
(needs pyarrow). --engine ray runs the same job as a Ray Data pipeline, on a local Ray instance or
the cluster at --address (needs requirements-ray.txt; see the README's "Running on a cluster").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inference.batch import find_scans, run_local


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="scan files and/or folders (with --engine ray also s3://, gs://, ...)")
    parser.add_argument("--out", type=Path, required=True, help="results file: .csv, or .parquet")
    parser.add_argument("--masks", type=Path, help="folder for predicted masks (<stem>_pred.png)")
    parser.add_argument("--explain", type=Path, help="folder for Grad-CAM maps (<stem>_gradcam.png, <stem>_seg_gradcam.png)")
    parser.add_argument("--batch-size", type=int, default=16, help="scans per forward pass (default 16)")
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local: this process (default); ray: a Ray Data pipeline")
    parser.add_argument("--address", help="Ray cluster to join (e.g. auto, or ray://head:10001); default: a local Ray")
    parser.add_argument("--actor-cpus", type=float, default=1,
                        help="CPUs per model actor (Ray engine; each actor loads both models once)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.address and args.engine != "ray":
        parser.error("--address is for --engine ray")
    if args.out.suffix.lower() not in (".csv", ".parquet"):
        parser.error(f"--out must end in .csv or .parquet; got {args.out.name!r}")
    if args.out.is_dir():
        parser.error(f"--out {args.out} is a folder; give a file name in it, e.g. {args.out / 'results.csv'}")
    for folder in (args.out.parent, args.masks, args.explain):
        if folder:
            folder.mkdir(parents=True, exist_ok=True)
    if args.engine == "ray":
        from inference import ray_engine  # Ray is an optional extra: imported only when asked for

        total, failures = ray_engine.run(args.inputs, args.out, args.masks, args.explain, args.batch_size,
                                         args.address, args.actor_cpus)
    else:
        scans = find_scans(args.inputs)
        if not scans:
            parser.error("no scans found in the given paths")
        total, failures = len(scans), run_local(scans, args.out, args.masks, args.explain, args.batch_size)
    print(f"wrote {args.out}: {total} scans, {failures} failed", file=sys.stderr)
    return 1 if failures == total else 0


if __name__ == "__main__":
    sys.exit(main())
