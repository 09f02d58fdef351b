"""Breast-ultrasound analysis demo: classification, lesion segmentation and Grad-CAM for both.

Thin wiring only: `inference.Analyzer` does the work, this file connects it to Gradio components.

    python app.py [--share] [--mcp]      # serves on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (127.0.0.1:7860)

Named endpoints for gradio_client: /analyze, /classify, /segment (see README).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import csv
import ctypes
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

# Before gradio is imported: no analytics calls (offline), uploads in a private folder removed at exit.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "GRADIO_TEMP_DIR" not in os.environ:
    os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="busi-demo-")
    atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], ignore_errors=True)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives busy threads their own heap arenas and seldom hands their freed pages back. Gradio
    renders every request on some thread of a large pool, so image buffers freed in one arena are not
    reused by the next request and resident memory creeps up; few arenas keep it down
    (`python -m bench.load_test`). Same as MALLOC_ARENA_MAX; does nothing off glibc."""
    m_arena_max = -8  # from glibc's malloc.h
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(m_arena_max, arenas)


limit_malloc_arenas()  # before TensorFlow and Gradio start their threads

import gradio as gr
from gradio.data_classes import FileData

from inference.decode import MAX_BYTES, ScanError
from inference.outputs import prune, write_image
from inference.pipeline import Analyzer

HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = HERE / "examples"
EXPLAIN_CHOICES = ["predicted class", "normal", "benign", "malignant"]
NOT_ULTRASOUND = "not recognised as a breast ultrasound scan"
# Example captions ("malignant · BUS-UCLM") wrap instead of being cut on a phone.
CSS = "#examples .caption-label { white-space: normal; overflow: visible; text-overflow: clip; max-width: 95%; }"
RESULTS_DIR = Path(os.environ["GRADIO_TEMP_DIR"]) / "results"  # rendered images, kept 10 minutes
RESULTS_MAX_AGE_S = 600
DISCLAIMER = "**Research demo — not a medical device.** Do not use it to diagnose or treat anyone."
log = logging.getLogger("busi-demo")


class ScanInput(gr.Image):
    """Image upload/paste that hands the raw file to our decoder (which reads 16-bit, EXIF, TIFF …
    and refuses bad files with a readable message) instead of letting Gradio open it first."""

    is_template = True

    def preprocess(self, payload: FileData | None) -> str | None:
        return None if payload is None else payload.path


def read_examples():
    """Example files and captions "<ground truth> · <dataset>" (held-out scans of three sources)."""
    with (EXAMPLES_DIR / "examples.csv").open() as f:
        rows = list(csv.DictReader(f))
    return [str(EXAMPLES_DIR / r["file"]) for r in rows], [f"{r['ground_truth']} · {r['dataset']}" for r in rows]


EXAMPLE_FILES, EXAMPLE_CAPTIONS = read_examples()


def pick_example(event: gr.SelectData) -> str:
    return EXAMPLE_FILES[event.index]


def read_upload(path: str | None) -> bytes:
    """The uploaded file's bytes. The file itself stays: Gradio stores identical uploads at one path
    and may hand it to another request (the Analyse button after auto-analysis, another client), so
    its cache cleaner (`delete_cache`) owns deletion, not the first request that reads it."""
    if not path:
        raise gr.Error("Upload or paste an ultrasound scan first.")
    file = Path(path)
    if not file.is_file():
        raise gr.Error("The uploaded file is no longer on the server (uploads are kept 10 minutes); upload it again.")
    return file.read_bytes()


def readable_errors(run):
    """Run `run()`; a bad scan becomes its own message, anything else a generic one (logged), never a trace."""
    try:
        return run()
    except ScanError as error:
        raise gr.Error(str(error)) from None
    except Exception:
        log.exception("analysis failed")
        raise gr.Error("The analysis failed on this file. Try another scan.") from None


def in_range(value, name: str, low: float, high: float, default=None):
    """`value` as a float in low..high (None: `default`); anything else — NaN, text, out of range —
    is a readable error, never a silent fallback (a NaN threshold once drew no lesion at all)."""
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be a number from {low} to {high}; got {value!r}.") from None
    if not low <= number <= high:  # also false for NaN
        raise gr.Error(f"{name} must be a number from {low} to {high}; got {value!r}.")
    return number


class Handlers:
    """What the events call. Every path from user input ends in results or a gr.Error message.
    The API functions' docstrings are their MCP tool descriptions."""

    def __init__(self, analyzer: Analyzer):
        self.analyzer = analyzer

    def _analysis(self, path):
        data = read_upload(path)
        analysis = readable_errors(lambda: self.analyzer.analyze(data))
        for warning in analysis.warnings:
            gr.Warning(warning)
        return analysis

    @staticmethod
    def forget():
        """Before every new analysis in the UI: drop the stored result and blank every output, so a
        failed analysis never leaves the previous scan's results beside the new image."""
        return (None,) * 7 + ("",)

    @staticmethod
    def report(analysis, threshold=None) -> dict:
        """The JSON report; class, probabilities and lesion are null when the scan is out of distribution."""
        withheld = analysis.out_of_distribution
        return {
            "predicted_class": None if withheld else analysis.predicted_class,
            "probabilities": None if withheld else {c: round(p, 4) for c, p in analysis.probability_dict().items()},
            "threshold": analysis.threshold if threshold is None else threshold,
            "lesion": None if withheld else analysis.lesion_stats(threshold),
            "out_of_distribution": withheld,
            "feature_distance": None if analysis.feature_distance is None else round(analysis.feature_distance, 2),
            "warnings": analysis.warnings,
            "notes": analysis.notes,
        }

    def render(self, analysis, explain, threshold, opacity):
        """Re-draw every output from a stored analysis: no model runs (nothing to do before one)."""
        if analysis is None:
            return (gr.skip(),) * 7  # one per rendered output
        threshold = in_range(threshold, "threshold", 0.0, 1.0)
        opacity = in_range(opacity, "opacity", 0.0, 1.0, default=0.45)
        if explain not in EXPLAIN_CHOICES:
            raise gr.Error(f"explain must be one of {', '.join(EXPLAIN_CHOICES)}; got {explain!r}.")
        explain = None if explain == EXPLAIN_CHOICES[0] else explain
        notes = "\n\n".join(f"⚠️ {w}" for w in analysis.warnings + analysis.notes)
        if analysis.out_of_distribution:  # no diagnosis-like output at all, and the reason in plain view
            return ({NOT_ULTRASOUND: 1.0}, None, None, None, self.report(analysis, threshold), None, notes)
        prune(RESULTS_DIR, RESULTS_MAX_AGE_S)
        seg_cam = analysis.seg_cam_overlay(threshold, opacity)
        return (
            analysis.probability_dict(),
            write_image(analysis.class_overlay(explain, opacity), RESULTS_DIR),
            write_image(analysis.mask_overlay(threshold, opacity), RESULTS_DIR),
            write_image(analysis.mask_png(threshold), RESULTS_DIR, "png"),
            self.report(analysis, threshold),
            None if seg_cam is None else write_image(seg_cam, RESULTS_DIR),
            notes,
        )

    def analyze_and_store(self, path, explain=EXPLAIN_CHOICES[0], threshold=None, opacity=0.45):
        """The UI's analysis: the stored result (for re-rendering) and every output."""
        analysis = self._analysis(path)
        return (analysis, *self.render(analysis, explain, threshold, opacity))

    def analyze(self, path, explain=EXPLAIN_CHOICES[0], threshold=None, opacity=0.45):
        """Classify a breast ultrasound scan (normal / benign / malignant), segment its lesion and explain
        both with Grad-CAM. Research demo, not a medical device: not for diagnosis.

        Args:
            path: the scan: a B-mode breast ultrasound image (PNG, JPEG, BMP, TIFF, GIF or WebP; at least 32 px a side, at most 16 megapixels and 50 MB).
            explain: the class whose Grad-CAM to draw: "predicted class", "normal", "benign" or "malignant".
            threshold: lesion-mask probability threshold, 0 to 1 (default: the validated one).
            opacity: opacity of the overlays, 0 to 1 (default 0.45).
        Returns:
            probabilities, Grad-CAM overlay, lesion overlay, lesion mask (PNG 0/255), report (JSON), Seg-Grad-CAM overlay, notes.
        """
        return self.render(self._analysis(path), explain, threshold, opacity)

    def classify(self, path):
        """Calibrated probabilities that a breast ultrasound scan is normal, benign or malignant (the
        classifier alone). Research demo, not a medical device: not for diagnosis.

        Args:
            path: the scan: a B-mode breast ultrasound image (PNG, JPEG, BMP, TIFF, GIF or WebP; at least 32 px a side, at most 16 megapixels and 50 MB).
        """
        data = read_upload(path)
        probabilities, warnings = readable_errors(lambda: self.analyzer.classify(data))
        for warning in warnings:
            gr.Warning(warning)
        if probabilities is None:
            return {NOT_ULTRASOUND: 1.0}
        return dict(zip(self.analyzer.classes, map(float, probabilities)))

    def segment(self, path, threshold=None):
        """Segment the lesion of a breast ultrasound scan: mask and lesion statistics. Research demo,
        not a medical device: not for diagnosis or measurement.

        Args:
            path: the scan: a B-mode breast ultrasound image (PNG, JPEG, BMP, TIFF, GIF or WebP; at least 32 px a side, at most 16 megapixels and 50 MB).
            threshold: lesion-mask probability threshold, 0 to 1 (default: the validated one).
        Returns:
            the lesion mask (PNG, 0/255, the scan's size) and a report with count, area and bounding box.
        """
        threshold = in_range(threshold, "threshold", 0.0, 1.0)
        analysis = self._analysis(path)
        return write_image(analysis.mask_png(threshold), RESULTS_DIR, "png"), self.report(analysis, threshold)


def build_demo(analyzer: Analyzer) -> gr.Blocks:
    handlers = Handlers(analyzer)
    default_threshold = float(analyzer.segmenter.config["threshold"])
    with gr.Blocks(title="Breast ultrasound analysis", delete_cache=(600, 600)) as demo:
        gr.Markdown(f"# Breast ultrasound analysis\nClassify a breast ultrasound scan (normal / benign / "
                    f"malignant), segment the lesion, and see what each model looked at (Grad-CAM). {DISCLAIMER}")
        state = gr.State(time_to_live=1800)  # a stored analysis (for re-rendering) lives 30 min at most
        with gr.Row():
            with gr.Column(scale=2):
                scan = ScanInput(label="Ultrasound scan", type="filepath", image_mode=None,
                                 sources=["upload", "clipboard"], format="png", height=360, elem_id="scan")
                run = gr.Button("Analyse", variant="primary")
                threshold = gr.Slider(0.05, 0.95, value=default_threshold, step=0.05, label="Mask threshold",
                                      info=f"Validated default {default_threshold:.2f}")
                opacity = gr.Slider(0.0, 1.0, value=0.45, step=0.05, label="Overlay opacity")
            with gr.Column(scale=3):
                notes = gr.Markdown(elem_id="notes")
                with gr.Tabs():
                    with gr.Tab("Classify"):
                        label = gr.Label(num_top_classes=3, label="Calibrated probabilities", elem_id="probabilities")
                        explain = gr.Dropdown(EXPLAIN_CHOICES, value=EXPLAIN_CHOICES[0], label="Explain class")
                        class_cam = gr.Image(label="Classifier Grad-CAM", format="png", elem_id="class-cam")
                    with gr.Tab("Segment"):
                        with gr.Row():
                            overlay = gr.Image(label="Lesion overlay", format="png", elem_id="seg-overlay")
                            mask = gr.Image(label="Lesion mask", format="png", image_mode="L")
                        seg_cam = gr.Image(label="Seg-Grad-CAM of the drawn lesion", format="png")
                        details = gr.JSON(label="Lesion statistics and report")
                    with gr.Tab("About"):
                        gr.Markdown(about_text(analyzer))
        gr.Markdown("**Examples — click one to analyse it.** Held-out scans from three hospitals (BUSI and "
                    "BUS-UCLM test sides; BrEaST, never trained on), captioned with their ground truth.")
        gallery = gr.Gallery(list(zip(EXAMPLE_FILES, EXAMPLE_CAPTIONS)), columns=5, allow_preview=False,
                             label="Examples", show_label=False,
                             elem_id="examples", format="png", height="auto")
        outputs = [label, class_cam, overlay, mask, details, seg_cam, notes]

        settings = [explain, threshold, opacity]
        clear = dict(fn=handlers.forget, inputs=None, outputs=[state, *outputs], api_visibility="private",
                     show_progress="hidden")
        # "minimal": a running timer, no ETA (Gradio's estimate averages past runs and was 4x off for big scans)
        store = dict(fn=handlers.analyze_and_store, inputs=[scan, *settings], outputs=[state, *outputs],
                     api_visibility="private", show_progress="minimal")
        run.click(**clear).then(**store)
        scan.upload(**clear).then(**store)
        gallery.select(pick_example, None, scan, api_visibility="private").then(**clear).then(**store)
        gr.on([threshold.release, opacity.release, explain.change], handlers.render, [state, *settings], outputs,
              api_visibility="private")
        # API-only endpoints: hidden buttons, so each has a name and typed inputs/outputs, and none
        # returns the gr.State (a State among the outputs empties an MCP tool's result).
        gr.Button(visible=False).click(handlers.analyze, [scan, *settings], outputs, api_name="analyze")
        gr.Button(visible=False).click(handlers.classify, scan, label, api_name="classify")
        gr.Button(visible=False).click(handlers.segment, [scan, threshold], [mask, details], api_name="segment")
    return demo


def without_front_matter(card: str) -> str:
    """A Hub model card minus its YAML header, which is metadata, not prose."""
    return re.sub(r"\A---\n.*?\n---\n", "", card, flags=re.DOTALL)


def about_text(analyzer: Analyzer) -> str:
    cards = "\n\n".join(
        f"<details><summary>Model card: {name} ({m.source})</summary>\n\n{without_front_matter(m.card)}\n\n</details>"
        for name, m in (("classifier", analyzer.classifier), ("segmenter", analyzer.segmenter))
    )
    return f"""{DISCLAIMER}

**Models.** An EfficientNet-Lite0 classifier (ImageNet-pretrained, fine-tuned on two hospitals' scans,
probabilities calibrated by temperature scaling) and a U-Net segmenter with the same pretrained
encoder. Both see the scan cropped to its ultrasound field with its aspect ratio kept. An image
that does not look like the breast ultrasound they were trained on gets no answer at all. Grad-CAM
explains the chosen class's pre-softmax score; Seg-Grad-CAM explains the summed logits of the
predicted lesion. The classifier was trained to take its benign/malignant evidence from the lesion
(its training masks asked those maps to peak there), so a map on the lesion is expected, and a map
elsewhere is worth a second look.

**Data.** Trained on the train sides of BUSI — Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. *Dataset of
breast ultrasound images.* Data in Brief 28 (2020) 104863 (licence not confirmed) — and BUS-UCLM
(Vallez et al., Sci Data 2025; CC BY-NC 4.0, so the weights are for non-commercial use). Tested
separately on both test sides and on BrEaST-Lesions_USG (Pawłowska et al., Sci Data 2024; CC BY 4.0),
a hospital the models never saw — see the tables in the model cards below: expect the BrEaST
numbers, not the BUSI ones, on your own scanner.

{cards}
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    parser.add_argument("--mcp", action="store_true", help="serve the endpoints as MCP tools too (or GRADIO_MCP_SERVER=True)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    demo = build_demo(Analyzer())  # loads both models once and warms them up

    def stop(signum, frame):
        """SIGTERM (`kill`, a container stop) ends the process like Ctrl-C does: the server closes and
        the exit handlers run, so the temporary folder with uploads and results is removed."""
        demo.close()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    demo.queue(default_concurrency_limit=2).launch(
        share=args.share,
        mcp_server=True if args.mcp else None,
        theme=gr.themes.Soft(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]),
        css=CSS,
        ssr_mode=False,
        max_file_size=MAX_BYTES,  # Gradio refuses bigger uploads before they reach the decoder
    )


if __name__ == "__main__":
    main()
