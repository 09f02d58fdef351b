"""Batch analysis: python -m inference SCAN_OR_FOLDER... --out results.csv|results.parquet
[--masks DIR] [--explain DIR] [--batch-size N] [--engine local|ray [--address ADDR]]

Folders are searched recursively for scans: images, DICOM files, and files without a suffix or with a
numeric one (DICOM files named IM0001 or by their UID); files whose stem ends in `_mask` or `_mask_N`
(BUSI's ground truth) are skipped, and so are hidden files and everything in hidden folders (.git).
Zip archives are not read: unpack them and give their folder. The files below a folder that are passed
over (no scans, or no regular files: pipes, broken links) are named on stderr. A file that fails gets a row with its
error in `warnings`; the run goes on, and exits 1 only if no scan at all could be analysed.
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
from pathlib import Path, PurePath

from inference.batch import PARQUET_NEEDS_PYARROW, find_scans, passed_over, run_local
from inference.models import ModelSourceError
from inference.pipeline import Analyzer

PASSED_OVER_SHOWN = 5  # names printed of the files a run passes over, as in the Batch tab


def check_inputs(parser: argparse.ArgumentParser, inputs: list[str], engine: str) -> None:
    """Stop with a one-line error, before the models load, on an input that cannot be a scan or folder:
    for the local engine a path that does not exist (the Ray engine also takes URIs, and paths only
    its workers may see), and a zip archive. Both engines read scans as files (Ray Data cannot look
    inside an archive), and the app's zip reader is made for the Batch tab's uploads: it refuses an
    archive of more than `inference.batch_files.MAX_SCANS` scans, a run this command is made for."""
    missing = [given for given in inputs if not Path(given).exists()] if engine == "local" else []
    if missing:
        parser.error(f"no such file or folder: {', '.join(missing)}"
                     + (" (URIs are read by --engine ray)" if any("://" in given for given in missing) else ""))
    archives = [given for given in inputs if PurePath(given).suffix.lower() == ".zip"]
    if archives:
        parser.error(f"{archives[0]} is a zip archive: unpack it first and give its folder")


def make_folder(parser: argparse.ArgumentParser, option: str, folder: Path) -> None:
    """Make an output folder (and its parents), or stop with a one-line error naming `option`:
    called before the models load, so a mistyped path costs no wait and shows no traceback."""
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir():  # mkdir would say only "File exists" or "Not a directory"
        parser.error(f"{option}: {existing} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"{option}: cannot make folder {folder} ({error.strerror})")


def make_outputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The output folders, and the results file opened once (created empty, or left as it is) to
    learn now, not after the models load, whether it can be written at all."""
    make_folder(parser, "--out", args.out.parent)
    for option, folder in (("--masks", args.masks), ("--explain", args.explain)):
        if folder:
            make_folder(parser, option, folder)
    try:
        args.out.open("a").close()
    except OSError as error:
        parser.error(f"--out: cannot write {args.out} ({error.strerror})")


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
    if args.out.suffix.lower() == ".parquet":  # known before the models load, and before an empty file is left
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            parser.error(f"--out: {PARQUET_NEEDS_PYARROW}")
    if args.out.is_dir():
        parser.error(f"--out {args.out} is a folder; give a file name in it, e.g. {args.out / 'results.csv'}")
    check_inputs(parser, args.inputs, args.engine)
    if args.engine == "local":
        scans, skipped = find_scans(args.inputs), passed_over(args.inputs)
        names = ", ".join(map(str, skipped[:PASSED_OVER_SHOWN])) + (
            f" and {len(skipped) - PASSED_OVER_SHOWN} more" if len(skipped) > PASSED_OVER_SHOWN else "")
        passed = f"passed over {len(skipped)} file(s) that are no scans, or no regular files: {names}"
        if not scans:
            parser.error("no scans found in the given paths" + (f"; {passed}" if skipped else ""))
        if skipped:
            print(passed, file=sys.stderr)
    new_out = not args.out.exists()
    make_outputs(parser, args)
    if args.engine == "ray":
        from inference import ray_engine  # Ray is an optional extra: imported only when asked for

        tally = ray_engine.run(args.inputs, args.out, args.masks, args.explain, args.batch_size,
                               args.address, args.actor_cpus)
    else:
        try:
            analyzer = Analyzer()
        except ModelSourceError as error:  # a mistyped BUSI_SEGMENTER: its reason, not a traceback and an empty CSV
            if new_out:
                args.out.unlink(missing_ok=True)
            parser.exit(2, f"{parser.prog}: error: {error}\n")
        tally = run_local(scans, args.out, args.masks, args.explain, args.batch_size, analyzer)
    print(f"wrote {args.out}: {tally}", file=sys.stderr)
    return 1 if tally.failed == tally.scans else 0


if __name__ == "__main__":
    sys.exit(main())
