"""A one- or two-page A4 PDF of one analysis (fpdf2; no UI): what the app shows, on paper.

`pdf_report(analysis, ...)` -> the PDF's bytes: the date and time of the analysis (UTC), the file
name it was given (never anything read from inside the file: no patient data), the scan, the lesion
overlay (filled or outlined), the classifier's Grad-CAM of the chosen class (default: the predicted one) and the Seg-Grad-CAM of
the drawn lesion (or why there is none), the calibrated probabilities, the lesion measurements (in
mm where the file is calibrated, else why not), the warnings and notes, the models and their
revisions, the segmentation threshold, and the disclaimer in every page's footer.

A scan the screening checks refuse gets what the app gives it: why there is no answer ("this image
is in colour", "... not recognised as a breast ultrasound scan") and the message that says what to do;
no class, no probabilities, no lesion, no maps.

`model_descriptions(classifier, segmenter)` says which models made the analysis: each one's source
as configured (bundled folder, or `hf://owner/name@revision` plus the Hub commit it resolved to) and
the first 12 hex digits of its weights file's SHA-256, computed once per file.

Text is set in DejaVu Sans, which ships with matplotlib (a runtime dependency): the warnings hold
"—", "≥", "²", "⚠" that the PDF core fonts (Latin-1) cannot show; any character the font lacks is
printed as "?".
"""

from __future__ import annotations

import hashlib
import io
import re
from datetime import UTC
from functools import lru_cache
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from PIL import Image

from explain.overlay import DEFAULT_OPACITY
from inference.postprocess import half_up

if TYPE_CHECKING:  # the pipeline pulls in TensorFlow; the report only reads an Analysis
    from inference.models import LoadedModel
    from inference.pipeline import Analysis

TITLE = "Breast ultrasound analysis — research report"
NOT_A_DEVICE = "Research demo — not a medical device."
NOT_FOR_CARE = "Not for diagnosis, triage or treatment."
DISCLAIMER = f"{NOT_A_DEVICE} {NOT_FOR_CARE}"  # every page's footer; the app's pages say it too (`inference.about`)
FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
FONT = "DejaVu"
MAX_IMAGE_PX = 800     # images go in at about display size: the report stays small
JPEG_QUALITY = 85
MARGIN = 15            # mm
IMAGE_GAP = 4          # mm between the two images of a row
IMAGE_MAX_HEIGHT = 68  # mm
REPO_ROOT = Path(__file__).resolve().parents[1]


def percent(probability: float) -> str:
    """How the report prints a probability: "76.3 %"."""
    return f"{100.0 * float(probability):.1f} %"


def _mm(value: float) -> str:
    """A size in mm or mm² to one decimal, rounded half up from the reported value (`half_up`)."""
    return f"{half_up(value):,.1f}"


# --- models -----------------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_hash(folder: Path | None) -> str | None:
    """The SHA-256 of `folder/model.keras` (hex), computed once per file version; None without one."""
    path = None if folder is None else Path(folder) / "model.keras"
    if path is None or not path.is_file():
        return None
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def describe_model(model: LoadedModel) -> str:
    """One line naming a loaded model: its source (a folder inside the repository relative to it,
    marked bundled), the Hub commit a `hf://` source resolved to, and its weights' short hash."""
    source = model.source
    parts = []
    if source.startswith("hf://"):  # (inference.models.HUB_SCHEME: that module imports Keras)
        parts.append(source)
        folder = model.folder
        if folder is not None and folder.parent.name == "snapshots":  # the Hub cache: snapshots/<commit>/
            parts.append(f"resolved commit {folder.name[:12]}")
    else:
        path = Path(source).resolve()
        try:
            parts.append(f"{path.relative_to(REPO_ROOT).as_posix()} (bundled with the app)")
        except ValueError:
            parts.append(source)
    digest = weights_hash(model.folder)
    parts.append(f"weights SHA-256 {digest[:12]}" if digest else "weights hash unavailable")
    return " · ".join(parts)


def model_descriptions(classifier: LoadedModel, segmenter: LoadedModel) -> dict[str, str]:
    """{"classifier": ..., "segmenter": ...} for `pdf_report(models=...)`, e.g. from an Analyzer:
    `model_descriptions(analyzer.classifier, analyzer.segmenter)` (the hash is read once per file)."""
    return {"classifier": describe_model(classifier), "segmenter": describe_model(segmenter)}


# --- text and images ------------------------------------------------------------------------------

def scan_label(name: str | None) -> str:
    """The file's own name (no folders), without control characters, at most 120 characters."""
    if not name:
        return "not given"
    base = PureWindowsPath(str(name)).name or str(name)  # strips both / and \ folders
    base = re.sub(r"[\x00-\x1f\x7f]", "", base).strip()
    return (base[:117] + "…" if len(base) > 120 else base) or "not given"


def json_report(analysis: Analysis, threshold: float | None = None, lesion: dict | None = None,
                explain: str | None = None) -> dict:
    """The JSON report the app and its API return beside the images; class, probabilities and lesion are
    null when the scan gets no answer, and `no_answer` says why ("in colour", "too small", "blank",
    "inverted", "not recognised"; `out_of_distribution` is then true). `lesion`: the lesion statistics
    at `threshold` when the caller has them already. `notes` are those the screen shows at `threshold` with
    `explain`'s Grad-CAM (`Analysis.notes_at`)."""
    withheld = analysis.withheld
    return {
        "predicted_class": None if withheld else analysis.predicted_class,
        "probabilities": None if withheld else {c: round(p, 4) for c, p in analysis.probability_dict().items()},
        "threshold": analysis.threshold if threshold is None else threshold,
        "peak_threshold": analysis.peak_threshold,
        "lesion": None if withheld else lesion or analysis.lesion_stats(threshold),
        "frame": analysis.frame,
        "n_frames": analysis.n_frames,
        "view": analysis.class_framing.view_index,
        "n_views": analysis.class_framing.views,
        "out_of_distribution": withheld,
        "no_answer": analysis.no_answer and str(analysis.no_answer),
        "feature_distance": None if analysis.feature_distance is None else round(analysis.feature_distance, 2),
        "feature_limit": None if analysis.feature_limit is None else round(analysis.feature_limit, 2),
        "warnings": analysis.warnings,
        "notes": analysis.notes_at(threshold, explain),
    }


def lesion_summary(lesion: dict) -> str:
    """One line on the drawn lesion for the notes: how much of the ultrasound field, and its size in mm when the
    file is calibrated (else why not), so nobody has to dig the figures out of the JSON."""
    count = lesion["lesion_count"]
    text = f"Lesion drawn: {count} region{'s' * (count > 1)}, {lesion['lesion_area_percent']:.2f} % of the ultrasound field"
    if lesion["lesion_area_mm2"] is None:
        return f"{text}; no size in mm ({lesion['size_mm_unavailable']})."
    largest = "largest " if count > 1 else ""
    area, longest, width = (half_up(lesion[key]) for key in ("lesion_area_mm2", "longest_diameter_mm",
                                                              "perpendicular_width_mm"))
    return (f"{text}, {area:.1f} mm²; {largest}{longest:.1f} × {width:.1f} mm (longest diameter × perpendicular "
            "width, from the file's calibration; the segmenter's outline, not calipers).")


def _jpeg(array: np.ndarray) -> io.BytesIO:
    """A uint8 (H, W) or (H, W, 3) image as JPEG, scaled down to at most MAX_IMAGE_PX a side."""
    image = Image.fromarray(np.ascontiguousarray(array))
    if max(image.size) > MAX_IMAGE_PX:
        image.thumbnail((MAX_IMAGE_PX, MAX_IMAGE_PX), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    buffer.seek(0)
    return buffer


class _Report(FPDF):
    def __init__(self):
        super().__init__(orientation="P", unit="mm", format="A4")
        self.set_margins(MARGIN, MARGIN, MARGIN)
        self.set_auto_page_break(True, margin=20)
        self.add_font(FONT, "", str(FONT_DIR / "DejaVuSans.ttf"))
        self.add_font(FONT, "B", str(FONT_DIR / "DejaVuSans-Bold.ttf"))
        self._glyphs = set(self.fonts[FONT.lower()].cmap)
        self.set_title(TITLE)
        self.set_creator("busi-demo inference.report")

    def safe(self, text: str) -> str:
        """`text` with every character the font lacks replaced by "?" (control characters dropped)."""
        return "".join(ch if ord(ch) in self._glyphs else ("" if ord(ch) < 32 or ch == "\ufe0f" else "?")
                       for ch in str(text))

    def footer(self):
        self.set_y(-15)
        self.set_font(FONT, "B", 8)
        self.cell(0, 4, self.safe(DISCLAIMER), align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font(FONT, "", 7)
        self.cell(0, 4, f"page {self.page_no()} of {{nb}}", align="C")

    def heading(self, text: str, keep_with: float = 9):
        """A section title, moved to a new page with the `keep_with` mm that must follow it."""
        if self.will_page_break(9 + keep_with):
            self.add_page()
        self.ln(2)
        self.set_font(FONT, "B", 11)
        self.cell(0, 7, self.safe(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font(FONT, "", 9)

    def para(self, text: str, bold: bool = False, size: float = 9):
        self.set_font(FONT, "B" if bold else "", size)
        self.multi_cell(0, size * 0.5, self.safe(text), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font(FONT, "", 9)

    def rows(self, rows: list[tuple[str, ...]], col_widths: tuple[float, ...], headings: bool = True):
        self.set_font(FONT, "", 9)
        with self.table(col_widths=col_widths, width=self.epw, text_align="LEFT", line_height=4.5,
                        first_row_as_headings=headings, padding=(0.8, 1.5)) as table:
            for row in rows:
                cells = table.row()
                for value in row:
                    cells.cell(self.safe(value))
        self.ln(1)

    def image_row(self, panels: list[tuple[str, np.ndarray | None, str]], heading: str | None = None):
        """Up to two images side by side, each under its caption (the row under `heading`, kept on
        one page); a panel without an image shows its `reason` text in the image's place."""
        width = (self.epw - IMAGE_GAP) / 2
        sizes = []
        for _, array, _ in panels:
            if array is None:
                sizes.append((width, 20.0))
                continue
            h, w = array.shape[:2]
            scale = min(width / w, IMAGE_MAX_HEIGHT / h)
            sizes.append((w * scale, h * scale))
        self.set_font(FONT, "B", 9)  # a caption may wrap (a class other than the predicted one): images go below it
        caption_height = 1 + 5 * max(len(self.multi_cell(width, 5, self.safe(caption), dry_run=True, output="LINES"))
                                     for caption, _, _ in panels)
        row_height = caption_height + max(h for _, h in sizes)
        if heading:
            self.heading(heading, keep_with=row_height)
        elif self.will_page_break(row_height):
            self.add_page()
        top = self.get_y()
        for index, ((caption, array, reason), (w, h)) in enumerate(zip(panels, sizes)):
            x = self.l_margin + index * (width + IMAGE_GAP)
            self.set_xy(x, top)
            self.set_font(FONT, "B", 9)
            self.multi_cell(width, 5, self.safe(caption), align="L", new_x=XPos.LEFT, new_y=YPos.NEXT)
            if array is None:
                self.set_font(FONT, "", 9)
                self.set_xy(x, top + caption_height)
                self.multi_cell(width, 4.5, self.safe(reason), border=1, padding=2, align="L")
            else:
                self.image(_jpeg(array), x=x, y=top + caption_height, w=w, h=h)
        self.set_xy(self.l_margin, top + row_height + 3)


# --- the report -----------------------------------------------------------------------------------

def _measurements(stats: dict) -> list[tuple[str, str]]:
    rows = [("Quantity", "Value"),
            ("Lesions drawn", str(stats["lesion_count"])),
            ("Lesion area", f"{stats['lesion_area_px']:,} px ({stats['lesion_area_percent']:.2f} % of the ultrasound field)")]
    if stats["size_mm_unavailable"] is None:
        spacing = stats["mm_per_pixel"]
        rows.append(("Pixel size (from the file)", f"{spacing[0]:.4g} × {spacing[1]:.4g} mm (x × y)"))
        rows.append(("Lesion area in mm²", f"{_mm(stats['lesion_area_mm2'])} mm²"))
        if stats["lesion_count"]:
            which = " (largest lesion)" if stats["lesion_count"] > 1 else ""
            rows.append((f"Longest diameter{which}", f"{_mm(stats['longest_diameter_mm'])} mm"))
            rows.append((f"Perpendicular width{which}", f"{_mm(stats['perpendicular_width_mm'])} mm"))
    else:
        rows.append(("Sizes in mm", f"unavailable: {stats['size_mm_unavailable']}"))
    return rows


def _lesion_rows(stats: dict, limit: int = 8) -> list[tuple[str, ...]]:
    """One row per lesion, largest first (at most `limit`), when more than one is drawn."""
    lesions = sorted(stats["lesions"], key=lambda lesion: -lesion["area_px"])
    calibrated = stats["size_mm_unavailable"] is None
    rows = [("Lesion", "Area (px)", "Area (mm²)", "Longest diameter", "Perpendicular width", "Box x0, y0 – x1, y1")]
    for number, lesion in enumerate(lesions[:limit], start=1):
        box = lesion["bounding_box"]
        rows.append((str(number), f"{lesion['area_px']:,}",
                     _mm(lesion["area_mm2"]) if calibrated else "–",
                     f"{_mm(lesion['longest_diameter_mm'])} mm" if calibrated else "–",
                     f"{_mm(lesion['perpendicular_width_mm'])} mm" if calibrated else "–",
                     f"{box['x0']}, {box['y0']} – {box['x1']}, {box['y1']}"))
    if len(lesions) > limit:
        rows.append(("…", f"{len(lesions) - limit} smaller lesions not listed", "", "", "", ""))
    return rows


def _seg_cam_reason(analysis: Analysis, stats: dict) -> str:
    if analysis.suppressed_as_normal:
        return ("No lesion is drawn: the classifier rates this scan normal, and the validated rule then hides "
                "what the segmenter marked, so Seg-Grad-CAM has no region to explain.")
    if not stats["lesion_count"]:
        return "No lesion predicted at this threshold, so Seg-Grad-CAM has no region to explain."
    return "Seg-Grad-CAM is not available for this analysis."


def pdf_report(analysis: Analysis, threshold: float | None = None, opacity: float = DEFAULT_OPACITY,
               models: dict[str, str] | None = None, scan_name: str | None = None,
               explain: str | None = None, style: str = "filled") -> bytes:
    """The PDF (bytes) of `analysis` as the app shows it at `threshold` (default: the validated one)
    and `opacity`, the lesion drawn in `style` ("filled": tinted and outlined, or "outline" only), with
    the Grad-CAM of class `explain` (default: the predicted class). `models`: role -> description, e.g. `model_descriptions(analyzer.classifier,
    analyzer.segmenter)`; `scan_name`: the uploaded file's name (only its last part is printed). The time
    printed is when the analysis ran (`analysis.analysed_at`; a naive time is taken as UTC), in UTC: a PDF
    made later from a stored analysis printed the time it was made."""
    used = analysis.threshold if threshold is None else float(threshold)
    moment = analysis.analysed_at
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    withheld = analysis.withheld

    pdf = _Report()
    pdf.add_page()
    pdf.set_font(FONT, "B", 15)
    pdf.multi_cell(0, 8, pdf.safe(TITLE), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(1)
    frame = (f"frame {analysis.frame} of {analysis.n_frames} (numbered from 0)" if analysis.n_frames > 1
             else "single frame")
    height, width = analysis.gray.shape
    pdf.rows([("Analysed", moment.strftime("%Y-%m-%d %H:%M:%S UTC")),
              ("File", scan_label(scan_name)),
              ("Image", f"{width} × {height} px, {frame}")], col_widths=(1, 4), headings=False)

    pdf.heading("Result")
    if withheld:
        pdf.para(f"{analysis.no_answer.headline}.", bold=True, size=11)
        pdf.para("No classification, probabilities or lesion are given: the first warning below says why, and "
                 "what to upload instead.")
    else:
        pdf.para(f"Predicted class: {analysis.predicted_class} "
                 f"({percent(analysis.probability_dict()[analysis.predicted_class])}, calibrated)", bold=True, size=11)
        pdf.ln(1)
        pdf.rows([("Class", "Calibrated probability")]
                 + [(name, percent(p)) for name, p in analysis.probability_dict().items()], col_widths=(1, 1))

    messages = ([f"⚠ {text}" for text in analysis.warnings]
                + [f"Note: {text}" for text in analysis.notes_at(used, explain)])
    if messages:
        pdf.heading("Warnings and notes")
        for message in messages:
            pdf.para(message)
            pdf.ln(1)

    validated = used == analysis.threshold
    threshold_text = (f"Segmentation threshold: {used:.2f} (the validated one)" if validated
                      else f"Segmentation threshold: {used:.2f} (chosen; the validated one is {analysis.threshold:.2f})")
    if analysis.peak_threshold is not None:
        threshold_text += f"; a lesion is drawn only where the map reaches {analysis.peak_threshold:.2f} (validated)"
    if not withheld:
        stats = analysis.lesion_stats(used)
        pdf.heading("Lesion measurements")
        pdf.para(threshold_text)
        pdf.ln(1)
        pdf.rows(_measurements(stats), col_widths=(2, 3))
        if stats["lesion_count"] > 1:
            pdf.ln(2)
            pdf.rows(_lesion_rows(stats), col_widths=(0.7, 1.2, 1.2, 1.5, 1.6, 2.2))
        if stats["size_mm_unavailable"] is None:
            pdf.para("Sizes in mm use the pixel size recorded in the file; the lesion outline is the "
                     "segmenter's, not a clinician's calipers.", size=8)

    shown = analysis.for_display(MAX_IMAGE_PX)  # images drawn at the size they are printed
    if withheld:
        pdf.image_row([("Scan as analysed", shown.gray, "")], heading="Scan")
    else:
        if shown.class_cams is None:  # analysed without class maps (a batch run)
            class_cam, class_reason = None, "Grad-CAM was not computed for this analysis."
        else:
            class_cam, class_reason = shown.class_overlay(explain, opacity), ""
        seg_cam = shown.seg_cam_overlay(used, opacity)
        pdf.image_row([("Scan as analysed", shown.gray, ""),
                       (f"Lesion {'outline' if style == 'outline' else 'overlay'} (threshold {used:.2f})",
                        shown.mask_overlay(used, opacity, style), "")],
                      heading="Scan and lesion")
        explained = explain or analysis.predicted_class
        pdf.image_row([(f"Grad-CAM of the classifier: {explained}"
                        + ("" if explained == analysis.predicted_class else " (not the predicted class)"),
                        class_cam, class_reason),
                       ("Seg-Grad-CAM of the drawn lesion", seg_cam,
                        "" if seg_cam is not None else _seg_cam_reason(analysis, stats))],
                      heading="Where the models looked (Grad-CAM)")

    pdf.heading("Models")
    if models:
        pdf.rows([("Model", "Source and revision")] + [(role, text) for role, text in models.items()], col_widths=(1, 4))
    else:
        pdf.para("Model sources and revisions were not recorded with this report.")
    if analysis.feature_distance is not None:
        distance, limit = analysis.feature_distance, analysis.feature_limit
        pdf.para(f"Out-of-distribution check: feature distance {distance:.2f} "
                 f"({'over' if distance > limit else 'within'} the limit of {limit:.2f}).", size=8)
    if withheld:
        pdf.para(threshold_text, size=8)
    else:
        pdf.ln(2)
        pdf.para("Probabilities are the classifier's, calibrated by temperature scaling on validation scans; the "
                 "maps show where each model looked, not why. Expect lower accuracy on scanners the models "
                 "never saw.", size=8)
    return bytes(pdf.output())
