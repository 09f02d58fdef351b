"""Throughput of the batch command's three paths on the same scans, in one run:

    python -m bench.batch [FOLDER] [--copies 20] [--rounds 3] [--batch-size 16] [--no-ray]
                          [--baseline b9cefff] [--fast-segmenter models/segmenter_fast]
                          [--out reports/batch_benchmark.json]

0. before batching: the batch command as it was at commit `--baseline` (one scan at a time, both
   models' Grad-CAMs always computed), run from a git worktree of that commit on the same image
   files (it read no DICOM). Its rate excludes start-up: the difference between a run over all the
   scans and a run over one, so model loading and tracing cancel out;
1. single scan: `Analyzer.analyze` per file and its row, as `python -m inference` did before batching
   (every class's Grad-CAM included, as the app needs);
2. batched local: `inference.batch.run_local` (parallel decoding, one forward pass per model per
   batch, no Grad-CAM), the default engine;
2b. batched local with the fast segmenter (`--fast-segmenter`, a decoder on the classifier's frozen
   encoder: `inference.shared_encoder`), so the encoder runs once per scan for both models;
3. Ray local: `inference.ray_engine.run` on a local Ray with this machine's cores; its time includes
   starting the actors and loading the models in them (Ray itself is started before the clock).

The models' forward passes alone are timed too, per scan, as each path runs them: at batch 1 (the
classifier with its Grad-CAM, the out-of-distribution features, the segmenter) and at the batch size
(classifier and out-of-distribution features from one pass, the segmenter).

The scans are FOLDER's scan files (default: the examples) copied `--copies` times under distinct
names, so every path reads the same files. The two local paths share one warmed-up Analyzer (model
loading and graph tracing are not timed) and run alternately, `--rounds` times each, so a neighbour's
load on a shared machine hits both alike; their median round counts. Ray runs once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.benchmark import machine
from inference.batch import find_scans, open_results, result_row, run_local
from inference.decode import decode
from inference.models import load_model
from inference.pipeline import Analyzer

REPO_ROOT = Path(__file__).resolve().parents[1]


def copied_scans(source: Path, copies: int, into: Path) -> list[Path]:
    for copy in range(copies):
        for scan in find_scans([str(source)]):
            shutil.copy(scan, into / f"{scan.stem}_copy{copy:03d}{scan.suffix}")
    return find_scans([str(into)])


def single_scan_path(analyzer: Analyzer, scans: list[Path], out: Path) -> None:
    results = open_results(out)
    try:
        for scan in scans:
            results.write(result_row(str(scan), analyzer.analyze(scan)))
    finally:
        results.close()


def repo_relative(source: str) -> str:
    """A model source as the report shows it: bundled folders relative to the repository."""
    path = Path(source)
    return path.relative_to(REPO_ROOT).as_posix() if path.is_absolute() and path.is_relative_to(REPO_ROOT) else source


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def baseline_scans_per_s(revision: str, scans: list[Path], work: Path) -> float:
    """Scans/s of `python -m inference` at `revision` over `scans`, start-up excluded (see above)."""
    tree = work / "baseline"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), revision], cwd=REPO_ROOT, check=True,
                   capture_output=True)
    try:
        def run(files: list[Path]) -> float:
            return timed(lambda: subprocess.run([sys.executable, "-m", "inference", *map(str, files), "--out",
                                                 str(work / "baseline.csv")], cwd=tree, check=True,
                                                capture_output=True))
        return (len(scans) - 1) / (run(scans) - run(scans[:1]))
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO_ROOT, capture_output=True)


def forward_ms_per_scan(analyzer: Analyzer, scans: list[Path], batch_size: int, rounds: int) -> dict:
    """Median ms per scan of each model's forward pass, at batch 1 and at `batch_size`."""
    prepared = [analyzer.prepare(decode(scan)) for scan in scans[:batch_size]]
    class_inputs = np.stack([p.class_input for p in prepared])
    seg_inputs = np.stack([p.seg_input for p in prepared])
    passes = {
        "classifier_and_ood_batch_1": lambda: [analyzer._explain_and_screen(x[None]) for x in class_inputs],
        "segmenter_batch_1": lambda: [analyzer.segmenter_cam.forward(x[None]) for x in seg_inputs],
        f"classifier_and_ood_batch_{batch_size}": lambda: analyzer._logits_and_screenings(class_inputs),
        f"segmenter_batch_{batch_size}": lambda: analyzer.segmenter_cam.logits(seg_inputs),
    }
    return {name: round(statistics.median(timed(run) for _ in range(rounds)) / len(prepared) * 1000, 1)
            for name, run in passes.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, default=REPO_ROOT / "examples")
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray path (Ray not installed)")
    parser.add_argument("--baseline", default="b9cefff", help="commit of the batch command before batching "
                        "(needs a git checkout; '' skips it)")
    parser.add_argument("--fast-segmenter", default="models/segmenter_fast",
                        help="segmenter on the classifier's encoder, for the one-encoder-pass path ('' skips it)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "batch_benchmark.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="batch-bench-") as work:
        work = Path(work)
        (work / "scans").mkdir()
        scans = copied_scans(args.folder, args.copies, work / "scans")
        analyzer = Analyzer()
        batched = {"batched_local": analyzer}
        if args.fast_segmenter:
            bundled = REPO_ROOT / args.fast_segmenter
            fast = load_model(str(bundled) if bundled.is_dir() else args.fast_segmenter)
            batched["batched_local_fast_segmenter"] = Analyzer(analyzer.classifier, fast)
        for engine in batched.values():
            engine.analyze_batch(scans[:args.batch_size])  # traces the batched graphs, as Analyzer() did the single ones
        rounds = {"single_scan": [], **{name: [] for name in batched}}
        for _ in range(args.rounds):
            rounds["single_scan"].append(timed(lambda: single_scan_path(analyzer, scans, work / "single.csv")))
            for name, engine in batched.items():
                rounds[name].append(timed(lambda engine=engine: run_local(scans, work / "batched.csv",
                                                                           batch_size=args.batch_size, analyzer=engine)))
        seconds = {path: statistics.median(times) for path, times in rounds.items()}
        forward = forward_ms_per_scan(analyzer, scans, args.batch_size, args.rounds)
        baseline = None
        if args.baseline:
            images = [scan for scan in scans if scan.suffix.lower() != ".dcm"]
            baseline = {"scans_per_s": round(baseline_scans_per_s(args.baseline, images, work), 2),
                        "n_scans": len(images), "commit": args.baseline,
                        "note": "python -m inference before batching, on the image files (it read no DICOM); "
                                "start-up excluded"}
        ray_start = None
        if not args.no_ray:
            from inference import ray_engine

            ray_start = timed(lambda: ray_engine.connect(None, include_dashboard=False, log_to_driver=False))
            seconds["ray_local"] = timed(lambda: ray_engine.run([str(work / "scans")], work / "ray.csv",
                                                                batch_size=args.batch_size))

    single_rate = len(scans) / seconds["single_scan"]
    report = {
        "command": "python -m bench.batch" + (f" {args.folder}" if args.folder != REPO_ROOT / "examples" else "")
                   + f" --copies {args.copies} --rounds {args.rounds} --batch-size {args.batch_size}"
                   + f" --baseline '{args.baseline}'"
                   + f" --fast-segmenter '{args.fast_segmenter}'",
        "machine": machine(), "cores": os.cpu_count(), "n_scans": len(scans), "batch_size": args.batch_size,
        "models": {name: {"classifier": repo_relative(engine.classifier.source),
                          "segmenter": repo_relative(engine.segmenter.source),
                          "one_encoder_pass": engine._one_encoder_pass is not None} for name, engine in batched.items()},
        "rounds_seconds": {path: [round(t, 2) for t in times] for path, times in rounds.items()},
        "scans": f"the scan files in {args.folder.name}/ x {args.copies} copies",
        "paths": {name: {"seconds": round(s, 2), "scans_per_s": round(len(scans) / s, 2),
                         "speed_up": round(len(scans) / s / single_rate, 2)} for name, s in seconds.items()},
        "forward_ms_per_scan": forward,
    }
    if baseline is not None:
        for name in batched:
            baseline[f"speed_up_of_{name}"] = round(report["paths"][name]["scans_per_s"] / baseline["scans_per_s"], 2)
        report["before_batching"] = baseline
    if ray_start is not None:
        report["paths"]["ray_local"]["ray_start_s"] = round(ray_start, 2)
        report["paths"]["ray_local"]["note"] = "includes starting the actors and loading the models in them"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
