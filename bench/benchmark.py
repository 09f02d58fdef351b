"""Speed, cold start, memory and concurrency of the demo, side by side with the seed's architecture.

    python -m bench.benchmark [--runs 40] [--requests 32] [--out reports/benchmark.json]

1. Full analysis in-process (decode -> both models with their Grad-CAMs -> rendered overlays and
   lesion statistics) on the example scans: p50/p95 over `--runs` calls after warm-up; the models
   alone too. The same pipeline with the seed's architecture — EfficientNetB7 classifier at 224 px
   and a classic U-Net (64..1024 filters, ~31 M parameters) at 256 px, random weights: only speed
   is compared — runs in the same process, so the ratio is measured on one machine in one session.
2. Cold start: `python app.py` from process start to the first answered /analyze via gradio_client.
   The PDF report of an analysed scan is timed too (its Seg-Grad-CAM already computed, as in the app).
3. Throughput with 1, 4 and 16 concurrent gradio_client callers; peak resident memory of the server.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import keras
import numpy as np
from keras import layers

from bench.server import AppServer, call_concurrently, example_files, percentiles
from inference.models import LoadedModel
from inference.pipeline import Analyzer
from inference.report import pdf_report

REPO_ROOT = Path(__file__).resolve().parents[1]


def seed_classifier() -> LoadedModel:
    model = keras.applications.EfficientNetB7(weights=None, input_shape=(224, 224, 3), classes=3,
                                              classifier_activation=None)
    config = {"classes": ["normal", "benign", "malignant"], "input_size": 224, "temperature": 1.0,
              "logits_layer": "predictions", "gradcam_layer": "top_activation"}
    return LoadedModel(model, config, "seed architecture (random weights)", "")


def seed_segmenter(size: int = 256) -> LoadedModel:
    """The classic U-Net of Ronneberger et al. (two 3x3 convs per level, 64..1024 filters)."""
    def double_conv(x, filters, name):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=name + "_a")(x)
        return layers.Conv2D(filters, 3, padding="same", activation="relu", name=name + "_b")(x)

    image = keras.Input((size, size, 3))
    x, skips = layers.Rescaling(1 / 255.0)(image), []
    for level, filters in enumerate((64, 128, 256, 512)):
        x = double_conv(x, filters, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = double_conv(x, 1024, "bottleneck")
    for level, filters in reversed(list(enumerate((64, 128, 256, 512)))):
        x = layers.Conv2DTranspose(filters, 2, strides=2)(x)
        x = double_conv(layers.Concatenate()([x, skips[level]]), filters, f"up{level}")
    logits = layers.Conv2D(1, 1, name="mask_logits")(x)
    model = keras.Model(image, layers.Activation("sigmoid")(logits))
    config = {"input_size": size, "threshold": 0.5, "min_area_fraction": 0.0,
              "logits_layer": "mask_logits", "gradcam_layer": "bottleneck_b"}
    return LoadedModel(model, config, "seed architecture (random weights)", "")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return f"{cpu}, {os.cpu_count()} CPU cores, {platform.system()}"


def full_analysis(analyzer: Analyzer, data: bytes):
    """Everything a user gets: decode, both models, both Grad-CAMs, rendered overlays, statistics."""
    analysis = analyzer.analyze(data)
    analysis.class_overlay()
    analysis.mask_overlay()
    analysis.seg_cam_overlay()
    analysis.mask_png()
    return analysis.lesion_stats()


def time_calls(fn, inputs, runs: int) -> dict:
    for item in inputs[:2]:
        fn(item)  # warm-up beyond the analyzer's own
    seconds = []
    for i in range(runs):
        started = time.perf_counter()
        fn(inputs[i % len(inputs)])
        seconds.append(time.perf_counter() - started)
    return percentiles(seconds)


def in_process(runs: int) -> dict:
    scans = [p.read_bytes() for p in example_files()]
    results = {}
    for name, analyzer in (("ours", Analyzer()), ("seed_arch", Analyzer(seed_classifier(), seed_segmenter()))):
        c, s = analyzer.classifier.config, analyzer.segmenter.config
        x_c = np.zeros((1, c["input_size"], c["input_size"], 3), np.float32) + 64
        x_s = np.zeros((1, s["input_size"], s["input_size"], 3), np.float32) + 64
        results[name] = {
            "analyze": time_calls(lambda data, analyzer=analyzer: full_analysis(analyzer, data), scans, runs),
            "classifier_with_gradcam": time_calls(analyzer.classifier_cam, [x_c], runs),
            "segmenter_with_seg_gradcam": time_calls(
                lambda x, cam=analyzer.segmenter_cam: cam(cam.forward(x)[1], np.ones_like(x[..., :1])), [x_s], runs),
            "pdf_report": time_calls(pdf_report, [analyzer.analyze(scans[0])], max(10, runs // 4)),
            "parameters": {"classifier": analyzer.classifier.model.count_params(),
                           "segmenter": analyzer.segmenter.model.count_params()},
        }
        print(f"{name:10s} full analysis p50 {results[name]['analyze']['p50_ms']} ms, "
              f"p95 {results[name]['analyze']['p95_ms']} ms", flush=True)
    return results


def served(requests: int) -> dict:
    files = example_files()
    started = time.perf_counter()
    with AppServer() as server:
        server.client().predict(server.file(files[0]), api_name="/analyze")
        cold_start = time.perf_counter() - started
        print(f"cold start {cold_start:.1f} s", flush=True)
        levels = {}
        for workers in (1, 4, 16):
            calls = [files[i % len(files)] for i in range(max(requests, workers))]
            cpu_before = server.cpu_seconds()
            outcome = call_concurrently(server, calls, workers)
            levels[str(workers)] = {"rps": round(outcome["rps"], 2), "p95_ms": outcome["p95_ms"],
                                    "p50_ms": outcome["p50_ms"], "errors": outcome["errors"],
                                    "server_cpu_ms_per_request": round((server.cpu_seconds() - cpu_before) / len(calls) * 1000, 1)}
            print(f"{workers:2d} callers: {levels[str(workers)]}", flush=True)
        peak_rss_mb = server.peak_rss_mb()
    return {"cold_start_s": round(cold_start, 1), "peak_rss_mb": round(peak_rss_mb), "concurrency": levels}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40, help="timed full analyses per architecture (>= 30)")
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "benchmark.json")
    args = parser.parse_args(argv)

    local = in_process(args.runs)
    server = served(args.requests)
    report = {
        "machine": machine(),
        "analyze_p50_ms": local["ours"]["analyze"]["p50_ms"],
        "analyze_p95_ms": local["ours"]["analyze"]["p95_ms"],
        "seed_arch_analyze_p50_ms": local["seed_arch"]["analyze"]["p50_ms"],
        "seed_arch_analyze_p95_ms": local["seed_arch"]["analyze"]["p95_ms"],
        "speedup_vs_seed": round(local["seed_arch"]["analyze"]["p50_ms"] / local["ours"]["analyze"]["p50_ms"], 1),
        **server,
        "details": local,
        "runs": args.runs,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)


def print_table(report: dict):
    ours, seed = report["details"]["ours"], report["details"]["seed_arch"]
    rows = [
        ("full analysis p50 / p95 (ms)", f"{ours['analyze']['p50_ms']} / {ours['analyze']['p95_ms']}",
         f"{seed['analyze']['p50_ms']} / {seed['analyze']['p95_ms']}"),
        ("classifier + Grad-CAM p50 (ms)", ours["classifier_with_gradcam"]["p50_ms"], seed["classifier_with_gradcam"]["p50_ms"]),
        ("segmenter + Seg-Grad-CAM p50 (ms)", ours["segmenter_with_seg_gradcam"]["p50_ms"], seed["segmenter_with_seg_gradcam"]["p50_ms"]),
        ("PDF report p50 (ms)", ours["pdf_report"]["p50_ms"], seed["pdf_report"]["p50_ms"]),
        ("parameters (classifier + segmenter)", f"{sum(ours['parameters'].values()) / 1e6:.1f} M",
         f"{sum(seed['parameters'].values()) / 1e6:.1f} M"),
    ]
    print("\n| measure | ours | seed architecture |\n|---|---|---|")
    for name, a, b in rows:
        print(f"| {name} | {a} | {b} |")
    print(f"\nspeed-up {report['speedup_vs_seed']}x; cold start {report['cold_start_s']} s; "
          f"peak RSS {report['peak_rss_mb']} MB; machine: {report['machine']}")
    for workers, level in report["concurrency"].items():
        print(f"  {workers:>2s} concurrent callers: {level['rps']} req/s, p95 {level['p95_ms']} ms, errors {level['errors']}")


if __name__ == "__main__":
    main()
