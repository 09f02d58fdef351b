"""Breast-ultrasound analysis demo: classification, lesion segmentation and Grad-CAM for both.

Thin wiring only: `inference.Analyzer` does the work, this file connects it to Gradio components.

    python app.py [--share] [--mcp]      # serves on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (127.0.0.1:7860)

Named endpoints for gradio_client: /analyze, /classify, /segment, /report (see README).
"""

from __future__ import annotations

import argparse
import atexit
import binascii
import contextlib
import csv
import ctypes
import functools
import itertools
import json
import logging
import math
import os
import re
import reprlib
import shutil
import signal
import sys
import tempfile
import threading
import time
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
from gradio.data_classes import FileData, ImageData

from explain.overlay import DEFAULT_OPACITY, MASK_STYLES
from inference.batch_files import BatchInputError, read_batch_inputs
from inference.about import DISCLAIMER, about_text
from inference.batch import batches, result_row
from inference.batch_view import (SCREEN_COLUMNS, SCREEN_HEADERS, batch_csv, batch_summary, file_label, for_screen,
                                  left_out_summary, no_scans_summary)
from inference.decode import MAX_BYTES, ScanError
from inference.outputs import prune, write_file, write_image
from inference.models import ModelSourceError
from inference.pipeline import Analyzer
from inference.preprocess import view_position
from inference.report import json_report, lesion_summary, model_descriptions, pdf_report


# Gradio ends every file-taking tool's description by pointing to an upload_file_to_gradio tool that this
# server does not list (it is Gradio's for remote files): how a scan is sent instead.
MCP_FILE_HINT = (" Send a scan as a data: URI with base64 content (data:image/png;base64,...) or as an http(s) URL "
                 "this server may fetch (local and private addresses are refused).")


BAD_DATA_URI = ("The scan's data: URI does not hold base64 content: send data:<type>;base64,<the file's bytes in "
                "base64>, e.g. data:image/png;base64,iVBORw0KGgo... (or an http(s) URL the server can fetch).")
NOT_A_URL = ("The scan must be a data: URI with base64 content (data:image/png;base64,...) or an http(s) URL: this "
             "server cannot read a file path on your machine.")
UNRESOLVED_URL = ("This server could not fetch the scan: {reason}. Check the URL; if it is right, the server may "
                  "have no internet access (a private or offline deployment): send the scan as a data: URI with "
                  "base64 content (data:image/png;base64,...) instead.")
PRIVATE_URL = ("This server does not fetch scans from its own, local or private addresses (nor the file URLs an "
               "upload tool gives for them): send the scan as a data: URI with base64 content "
               "(data:image/png;base64,...), or as a public http(s) URL.")


def standard_base64(arguments):
    """A tool's `arguments` with each `data:` URI's base64 in the standard alphabet, padded and without line
    breaks: a client sending URL-safe base64 (JavaScript's base64url: - and _ for + and /, no padding) got
    "damaged or truncated", since Gradio's decoder drops the characters it does not know."""
    if isinstance(arguments, dict):
        return {key: standard_base64(value) for key, value in arguments.items()}
    if isinstance(arguments, list):
        return [standard_base64(value) for value in arguments]
    if not (isinstance(arguments, str) and arguments.startswith("data:") and ";base64," in arguments):
        return arguments
    head, _, content = arguments.partition(",")
    content = "".join(content.split()).rstrip("=").replace("-", "+").replace("_", "/")
    return f"{head},{content}{'=' * (-len(content) % 4)}"


def mend_mcp_results():
    """Gradio 6.31's MCP server passes a tool's outputs to its converter as one item when the client asks
    for no progress updates (most clients): a tool with several outputs answered with one text block,
    the Python printout of them all, its images as server paths. Here they are listed one per output, as
    Gradio's own progress path lists them, so each image becomes MCP image content; and a dict or list
    output (the probabilities, the report), or a missing one (no Seg-Grad-CAM without a lesion), is sent
    as JSON text ("null"), which a client can parse, not as a Python printout. Remove once Gradio does
    both (the MCP test checks). And the tools' descriptions say how to send a scan (MCP_FILE_HINT), and a
    `data:` URI whose content is not base64, a file path, or a URL this server will not fetch (its own, as
    an upload tool gives) or one whose host cannot be resolved (an offline server) is answered with what to send
    (BAD_DATA_URI, NOT_A_URL, PRIVATE_URL, UNRESOLVED_URL); URL-safe base64
    is read as base64 (`standard_base64`)."""
    from anyio.to_thread import run_sync
    from gradio.mcp import GradioMCPServer
    from gradio_client.utils import is_file_obj_with_meta

    async def one_item_per_output(self, job):
        try:
            result = await run_sync(job.result)
        except Exception as error:  # Gradio refuses to fetch a private URL in words no client can act on
            if "failed validation" in str(error):  # "Hostname 127.0.0.1 failed validation"
                raise ValueError(PRIVATE_URL) from None
            if str(error).startswith("Unable to resolve hostname"):  # "... example.org: [Errno -2] Name or ..."
                raise ValueError(UNRESOLVED_URL.format(reason=str(error).split(": [Errno")[0].lower())) from None
            raise
        return list(result) if isinstance(result, tuple) else [result]

    convert = GradioMCPServer.postprocess_output_data

    def json_for_data(self, data, root_url):
        return convert(self, [json.dumps(item) if item is None or (isinstance(item, (dict, list))
                                                                   and not is_file_obj_with_meta(item))
                              else item for item in data], root_url)

    to_files = GradioMCPServer.convert_strings_to_filedata

    def readable_data_uris(self, value, filedata_positions):
        try:
            return to_files(self, standard_base64(value), filedata_positions)
        except binascii.Error:  # Python's own words reached the client ("number of data characters (9) ...")
            raise ValueError(BAD_DATA_URI) from None
        except ValueError as error:  # a path: "provide a url", which no data: URI would then satisfy
            if str(error).startswith("Invalid file data format"):
                raise ValueError(NOT_A_URL) from None
            raise

    GradioMCPServer._execute_tool_without_progress = one_item_per_output
    GradioMCPServer.postprocess_output_data = json_for_data
    GradioMCPServer.convert_strings_to_filedata = readable_data_uris
    GradioMCPServer._file_data_tool_description = property(lambda self: MCP_FILE_HINT)


mend_mcp_results()

HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = HERE / "examples"
EXPLAIN_CHOICES = ["predicted class", "normal", "benign", "malignant"]
DISPLAY_MAX_SIDE = 1024  # overlays are drawn no larger: bigger scans are shown shrunk anyway
REPORT_NAME = "breast-ultrasound-report.pdf"
BATCH_NAME = "breast-ultrasound-batch.csv"
BATCH_THUMBNAIL_SIDE = 512  # the Batch tab's gallery images
BATCH_CHUNK = 8  # scans per forward pass in the Batch tab: the progress bar moves every chunk
# The mask threshold's range, for the slider and the API alike: at 0 every pixel is "lesion" (the
# whole scan drawn, sized and explained), at 1 none is.
THRESHOLD_RANGE = (0.05, 0.95)
RENDERED_OUTPUTS = 7  # the results drawn from an analysis: probabilities, four pictures, the JSON report, the notes
STORED_OUTPUTS = RENDERED_OUTPUTS + 3  # what the UI's analysis sets: the stored result, the results, frame and view
# Example and batch captions sit under their pictures (wrapped over them, on a phone or at 200 % zoom,
# they hid half the scan), in a box that grows with them; on a phone the examples show three columns and
# the batch outlines two, not five or four off-screen. The model cards' wide tables scroll sideways
# instead of squeezing their cells to a letter per line. The scan's and the results' labels sit above
# their pictures, not over them (they hid part of a lesion or a heat map). Sliders and their number boxes,
# radios, checkboxes and menus get a visible keyboard focus ring (the theme draws none, or a faint 1 px border).
CSS = """#examples .caption-label, #batch-gallery .caption-label { white-space: normal; overflow: visible; text-overflow: clip; }
body:not(.dark) button[role=tab].selected { color: var(--primary-600); }
body.dark button[role=tab].selected, body.dark a.download-link { color: var(--primary-400); }
/* The JSON report's keys, strings and numbers in Gradio's light-mode colours measured 2.1-2.9:1 on white (axe-core);
   each darkened, hue kept, to 5:1 (dark mode keeps Gradio's own) */
body:not(.dark) .json-node { --text-color: #966150; --string-color: #906553; --number-color: #52747e;
  --bracket-color: #517575; --square-bracket-color: #a9555d; --punctuation-color: #587473; --line-number-color: #67707a; }
#examples .grid-wrap, #batch-gallery .grid-wrap { height: auto !important; max-height: none !important; }
#examples .grid-container, #batch-gallery .grid-container { grid-auto-rows: auto !important; }
#examples .gallery-item, #batch-gallery .gallery-item { height: auto; }
#examples .thumbnail-item, #batch-gallery .thumbnail-item { display: flex; flex-direction: column; aspect-ratio: auto; height: auto; }
#examples .thumbnail-item img, #batch-gallery .thumbnail-item img { aspect-ratio: 1; height: auto; width: 100%; }
#examples .caption-label, #batch-gallery .caption-label { position: static; max-width: 100%; width: 100%; border-radius: 0; text-align: center; }
#about table { display: block; overflow-x: auto; border: 0; }
#about th, #about td { min-width: 6em; word-break: normal; overflow-wrap: normal; }
#scan > [data-testid=block-label], #class-cam > [data-testid=block-label], #seg-overlay > [data-testid=block-label],
#mask > [data-testid=block-label], #seg-cam > [data-testid=block-label],
#batch-gallery > [data-testid=block-label] { position: static; margin-bottom: 4px; }
input[type=range]:focus-visible, input[type=radio]:focus-visible, input[type=checkbox]:focus-visible,
input[role=combobox]:focus-visible, input[type=number]:focus-visible { outline: 3px solid #3730a3; outline-offset: 2px; }
/* the notes take the focus after an analysis: the app's focus colour, clear of the text (the browser's
   black ring tight around them looked like an error box) */
#notes:focus { outline: 2px solid #3730a3; outline-offset: 3px; border-radius: 4px; }
#notes { scroll-margin-top: 8px; }  /* scrolled into view with its focus ring whole, not flush to the screen's top */
#batch-table .header-cell.first-column, #batch-table .body-cell.first-column { position: sticky; left: 0; z-index: 3; }
#batch-table .body-cell.first-column { background: inherit; }
#batch-table .header-cell.first-column::after, #batch-table .body-cell.first-column::after {
  content: ""; position: absolute; top: 0; right: 0; bottom: 0; width: 1px; background: var(--border-color-primary); }
@media (max-width: 640px) {
  #batch-table .header-cell.first-column, #batch-table .sizing-body td:first-child { max-width: 40vw !important; }
  #examples .grid-container { grid-template-columns: repeat(3, minmax(0, 1fr)) !important; }
  #batch-gallery .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }
  #examples .caption-label, #batch-gallery .caption-label { font-size: 12px; padding: 1px 4px; }
  /* Gradio's small buttons, big enough to tap (WCAG's 24 px at least): slider resets, upload sources,
     a batch file's remove cross, the result images' icons */
  .reset-button, .source-selection button, button[aria-label="Remove this file"], .icon-button {
    min-width: 32px; min-height: 32px; }
  /* the About tab's metric tables whole on a phone: their last column (BrEaST, the one a user's own
     scanner resembles most) was cut off, with nothing saying the table scrolled */
  #about table { font-size: 12px; }
  #about th, #about td { min-width: 0; padding: 4px; }
  #about td { overflow-wrap: anywhere; }
  /* the Batch tab's file names whole, on as many lines as they need (cut to "uclm… .png" they could not be told apart) */
  /* (the space between Gradio's two spans in font size 0: it showed, "bad .png") */
  #batch-files .filename { display: block; overflow-wrap: anywhere; font-size: 0; }
  #batch-files .filename .stem, #batch-files .filename .ext { display: inline; white-space: normal; font-size: var(--text-md); }
  #about details th, #about details td { min-width: 6em; overflow-wrap: normal; }  /* the cards' wide tables scroll */
}"""
# Gradio's Soft theme with its pale label, hint and primary-button colours darkened to a contrast of
# at least 4.5:1 (WCAG AA): they measured 3.6, 2.5 and 4.5 (3.0 hovered); so are the controls' titles ("Mask
# threshold": 3.6) and a chosen radio option's white on its fill (4.5, just under; axe-core audit). The selected
# tab's name (the accent colour, 4.5 on white) is darkened by CSS in light mode only: the accent has no dark-mode
# variable, and darker it would fall further on the dark background. In dark mode the links, the selected tab's
# name and the download links (by CSS) are lightened, a hovered button's fill darkened (4.3, 4.3, 4.0 and 4.5).
THEME = gr.themes.Soft(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]).set(
    block_label_text_color="*primary_700", block_title_text_color="*primary_700", body_text_color_subdued="*neutral_600",
    button_primary_background_fill="*primary_700", button_primary_background_fill_hover="*primary_800",
    checkbox_label_background_fill_selected="*primary_700", link_text_color_dark="*secondary_400",
    link_text_color_visited_dark="*secondary_400", link_text_color_active_dark="*secondary_300",
    button_secondary_background_fill_hover_dark="*primary_700", button_primary_background_fill_hover_dark="*primary_700")
# Gradio 6.31's file boxes name their add-more button by the key `common.upload`, which its own English
# words lack, so screen readers and the tooltip said "common.upload": the words it is missing (every
# locale falls back to English for it).
MISSING_WORDS = gr.I18n(en={"common.upload": "Upload more files"})
# After an example is chosen: the results into view, and the keyboard's focus with them (it stayed on
# the thumbnail, now off-screen, and the next Tab scrolled back down to the examples).
_NOTES_INTO_VIEW = "notes.scrollIntoView({behavior: 'smooth', block: 'start'});"
_FOCUS_NOTES = "notes.tabIndex = -1; notes.focus({preventScroll: true});"
SCROLL_TO_RESULTS = f"""() => {{ const notes = document.getElementById('notes'); if (!notes) return;
  {_NOTES_INTO_VIEW} {_FOCUS_NOTES} }}"""
# After an upload: on a phone, where the results sit a screen or more below the scan box, the results into
# view; and the focus, which Gradio drops to the page's start when it redraws the box after an upload
# (by keyboard or mouse), to the results (where the next Tab goes on to their controls).
AFTER_UPLOAD = f"""() => {{ const notes = document.getElementById('notes'); if (!notes) return;
  if (window.innerWidth <= 640) {_NOTES_INTO_VIEW}
  if (document.activeElement === document.body) {{ {_FOCUS_NOTES} }} }}"""


def focus_drop_area(box_id: str) -> str:
    """Browser code for after a scan is removed from the box `box_id`: the focus, which the box's redraw
    dropped to the page's start, to the emptied box's drop area, where the next scan is chosen."""
    return f"""() => {{ if (document.activeElement === document.body) document.querySelector('#{box_id} button')?.focus(); }}"""


# Screen readers announce the notes (the line on the drawn lesion, warnings) when they change; not Gradio's
# progress timer inside them ("processing | 0.1/2.2s", announced anew every 0.1 s: 79 times for a big scan).
ANNOUNCE_NOTES = """() => { const notes = document.getElementById('notes'); if (!notes) return;
  notes.setAttribute('aria-live', 'polite');
  const quiet = () => notes.querySelectorAll('[data-testid=status-tracker]:not([aria-hidden])')
    .forEach(tracker => tracker.setAttribute('aria-hidden', 'true'));
  new MutationObserver(quiet).observe(notes, {childList: true, subtree: true}); quiet(); }"""
# Screen readers name each example, and each of a batch's pictures, by its caption (ground truth and source; the
# file and its class): Gradio labels the thumbnail buttons "Thumbnail N of 10", which hides the picture's alt text.
# Kept so when Gradio redraws them, and for the batch's gallery, which appears with its first results.
NAME_EXAMPLES = """() => { const name = () => document.querySelectorAll(
    '#examples button.thumbnail-item, #batch-gallery button.thumbnail-item').forEach(item => {
    const caption = item.querySelector('img')?.alt;
    if (caption && item.getAttribute('aria-label') !== caption) item.setAttribute('aria-label', caption); });
  name(); new MutationObserver(name).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                             attributeFilter: ['aria-label']}); }"""
# The arrow keys, Home and End move between tabs and open the one reached, as screen-reader users expect
# of a tab bar (WAI-ARIA's tabs pattern); Gradio's tab bars answer to Tab and Enter only.
TAB_KEYS = """() => document.addEventListener('keydown', event => {
  const tab = event.target.closest?.('[role=tab]'); const bar = tab?.closest('[role=tablist]'); if (!bar) return;
  const tabs = Array.from(bar.querySelectorAll('[role=tab]')).filter(t => !t.disabled && t.offsetParent !== null);
  const at = tabs.indexOf(tab);
  const to = {ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: tabs.length - 1}[event.key];
  if (to === undefined || at < 0) return;
  event.preventDefault();
  const reached = tabs[(to + tabs.length) % tabs.length]; reached.click(); reached.focus(); })"""
# The arrow keys move between a radio group's options and choose the one reached, as in any radio group:
# Gradio names each option's input apart, so the browser sees groups of one, where arrows do nothing.
RADIO_KEYS = """() => document.addEventListener('keydown', event => {
  const radio = event.target.closest?.('input[type=radio]'); if (!radio) return;
  const step = {ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1}[event.key]; if (!step) return;
  const options = Array.from(radio.closest('.block')?.querySelectorAll('input[type=radio]') ?? []).filter(o => !o.disabled);
  const at = options.indexOf(radio); if (at < 0 || options.length < 2) return;
  event.preventDefault();
  const reached = options[(at + step + options.length) % options.length]; reached.click(); reached.focus(); })"""
# A dropdown's option chosen by keyboard (Enter) sent the focus to the page's start: Gradio blurs the box.
# It goes back to the box, its list closed (focusing reopens it; Escape closes it, keeping the choice).
KEEP_DROPDOWN_FOCUS = """() => document.addEventListener('keydown', event => {
  const box = event.target.closest?.('input[role=combobox]'); if (!box || event.key !== 'Enter') return;
  setTimeout(() => { if (document.activeElement !== document.body) return;
    box.focus(); box.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true})); }); })"""
# Tabbing past a dropdown left its list open, a line of it over the heat map below, until the box was
# used again (a Gradio 6.31 bug: the list closes when the mouse leaves, not the keyboard): it closes as Escape
# closes it, keeping the choice.
CLOSE_DROPDOWN_ON_LEAVE = """() => document.addEventListener('focusout', event => {
  const box = event.target.closest?.('input[role=combobox]'); if (!box) return;
  setTimeout(() => { if (document.activeElement !== box)
    box.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true})); }); })"""
# A number typed into a slider's box and confirmed by Enter is applied (clamped to the range, or the lower end
# for an empty box) but the box kept showing what was typed ("2" beside a mask drawn at 0.95, an empty box and
# a thumb at the middle beside one at 0.05) until it lost focus: Enter settles it at once, the focus staying.
SETTLE_TYPED_NUMBER = """() => document.addEventListener('keydown', event => {
  const box = event.target.closest?.('input[type=number]');
  if (!box || event.key !== 'Enter' || !box.closest('.block')?.querySelector('input[type=range]')) return;
  box.blur(); box.focus(); })"""
# Controls as Gradio names them, mended for keyboards and screen readers: a result image's download button sits
# inside its download link, two tab stops for one download (and a button inside a link, which HTML does not
# allow), so the link alone keeps the focus; a file's link (the PDF, the batch's CSV) is named by its size and an
# arrow ("281.0 KB ⇣"), so it is named "Download <file>, <size>" (with the size in brackets, axe-core found the
# visible words not in the name); the three images' Download and Fullscreen
# buttons and the sliders' reset buttons had one name each ("Download", "Reset to default value"), so they
# name what they act on; an upload box is named by the words it shows (Gradio's name, "Drop an image file here to
# upload", was not the box's own "Drop a scan image here (PNG, JPEG, …)"); an empty result box loses the name
# "Empty value", which its role does not allow (axe-core audit).
NAME_CONTROLS = """() => {
  const name = (element, words) => { if (element.getAttribute('aria-label') !== words) element.setAttribute('aria-label', words); };
  const mend = () => {
    document.querySelectorAll('a.download-link button:not([tabindex="-1"])').forEach(button => { button.tabIndex = -1; });
    document.querySelectorAll('td.download a.download-link[download]').forEach(link =>
      name(link, `Download ${link.getAttribute('download')}, ${link.textContent.replace('⇣', '').trim()}`));
    document.querySelectorAll('button[aria-label=Download], button[aria-label=Fullscreen]').forEach(button => {
      const label = button.closest('.block')?.querySelector('[data-testid=block-label]')?.textContent.split(' (')[0].trim();
      if (label) name(button, `${button.getAttribute('aria-label') === 'Download' ? 'Download' : 'Full screen:'} ${label}`); });
    document.querySelectorAll('button.reset-button[aria-label="Reset to default value"]').forEach(button => {
      const label = button.closest('.block')?.querySelector('[data-testid=block-info]')?.textContent.trim();
      if (label) name(button, `Reset ${label} to its default`); });
    document.querySelectorAll('button.upload-container').forEach(button => {
      const words = button.textContent.replace(/\s+/g, ' ').trim(); if (words) name(button, words); });
    document.querySelectorAll('div.empty[aria-label="Empty value"]').forEach(box => box.removeAttribute('aria-label')); };
  new MutationObserver(mend).observe(document.body, {childList: true, subtree: true, characterData: true}); mend(); }"""
# Result images: download and fullscreen, not Gradio's Share (to Hugging Face discussions: a scan
# has no business there), one tab stop fewer each.
RESULT_BUTTONS = ["download", "fullscreen"]
RESULTS_DIR = Path(os.environ["GRADIO_TEMP_DIR"]) / "results"  # rendered results (`Handlers.results`)
# A stored analysis (for re-rendering) goes this long after it was made, a rendered result (image, PDF, CSV)
# this long after it was last handed out: what is on screen can be downloaded at least as long as it can be
# re-rendered (results went after 10 minutes: a download 404'd on a page that still re-rendered).
ANALYSIS_KEPT_S = 1800
PRUNE_EVERY_S = 60  # results are pruned at most this often
UPLOAD_MAX_AGE_S = 600  # Gradio's cache cleaner runs this often and deletes uploads older than this
log = logging.getLogger("busi-demo")


class ScanFileData(ImageData):
    """An uploaded scan, as Gradio's image data; a bare path string, which Gradio refuses as "not a valid
    dictionary or instance of ImageData", is refused with what to send instead. Refused before pydantic
    validates: a validator's error would reach the caller wrapped in pydantic's report (class name,
    the path echoed, a link) and log a traceback."""

    @classmethod
    def model_validate(cls, value, *args, **kwargs):
        if isinstance(value, str):  # a data: URI is read over MCP only, where Gradio turns it into a file first
            what = "a data: URI string (MCP tools take those)" if value.startswith("data:") else "a path string"
            raise user_error(f"Send the scan as a file (gradio_client.handle_file(path); over HTTP, the "
                             f"{{\"path\": ...}} that /gradio_api/upload returns), not as {what}.")
        return super().model_validate(value, *args, **kwargs)


class ScanInput(gr.Image):
    """Image upload/paste that hands the raw file to our decoder (which reads 16-bit, EXIF, TIFF …
    and refuses bad files with a readable message) instead of letting Gradio open it first."""

    is_template = True
    data_model = ScanFileData

    def preprocess(self, payload: FileData | None) -> str | None:
        return None if payload is None else payload.path


class TypedSlider(gr.Slider):
    """A slider whose number box may be typed into: a value outside its range goes to the nearer end,
    and an emptied box to the lower end, as the box itself shows once it loses focus. Gradio's own slider
    refuses such a value with an error that blanks every output the event feeds, and the PDF then used
    the value the box showed, which the screen never did. On a slider of whole steps (the frame) a typed
    fraction goes to the nearest whole number: 1.5 was refused as no frame, which emptied the results."""

    is_template = True

    def preprocess(self, payload: float | None) -> float:
        value = self.minimum if payload is None else min(max(payload, self.minimum), self.maximum)
        return super().preprocess(round(value) if float(self.step).is_integer() else value)


class OptionalNumber(gr.Number):
    """An API-only setting that may be sent as null, meaning "the default": Gradio types a Number as a
    plain number, so an MCP client's null for a setting it leaves out was refused by the tool's schema
    before the handler could apply the default."""

    is_template = True

    def api_info(self) -> dict:
        return {"anyOf": [super().api_info(), {"type": "null"}]}


def read_examples():
    """Example files, what the gallery shows for each, and captions "<ground truth> · <dataset>"
    (held-out scans of three sources), then the calibrated DICOM made from the BrEaST malignant one
    (shown by its PNG twin: a browser cannot draw DICOM)."""
    with (EXAMPLES_DIR / "examples.csv").open() as f:
        rows = list(csv.DictReader(f))
    files = [str(EXAMPLES_DIR / r["file"]) for r in rows]
    captions = [f"{r['ground_truth']} · {r['dataset']}" for r in rows]
    dicom = EXAMPLES_DIR / "dicom" / "breast_case010.dcm"
    return (files + [str(dicom)], files + [str(EXAMPLES_DIR / "breast_case010.png")],
            captions + ["malignant · BrEaST · DICOM, mm"])


EXAMPLE_FILES, EXAMPLE_PICTURES, EXAMPLE_CAPTIONS = read_examples()


def pick_example(event: gr.SelectData) -> tuple[str, str, None]:
    """(the picture for the scan box, the file to analyse, an empty file box)."""
    return EXAMPLE_PICTURES[event.index], EXAMPLE_FILES[event.index], None


def example_shown(picture: str | None, chosen: str | None):
    """After an example's analysis, its picture in the scan box if the box shows another: of two examples
    clicked a few milliseconds apart, the box sometimes kept the first one's picture beside the second's
    results (the page loads each picture in its own time)."""
    if chosen not in EXAMPLE_FILES:
        return gr.skip()
    expected = EXAMPLE_PICTURES[EXAMPLE_FILES.index(chosen)]
    return gr.skip() if picture and Path(picture).name == Path(expected).name else expected


# The gallery's index of no thumbnail: sent selected_index None, Gradio 6.31's gallery keeps a clicked
# thumbnail highlighted; sent an index outside it, it highlights none, and a click selects as before.
NO_EXAMPLE = -1


# Image files a browser draws in the scan box; others (TIFF) are shown as the scan analysed.
BROWSER_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".avif", ".ico")


def chosen_file(path: str | None) -> tuple:
    """A file chosen in (or removed from) one scan box: it is the file chosen last, the other box empties
    (the two never disagree on it), and no example stays highlighted as if it were the one shown."""
    return path, None, gr.update(selected_index=NO_EXAMPLE)


def current_file(picture: str | None, uploaded: str | None) -> str | None:
    """The file to analyse: the last one chosen by upload, file box or example (`uploaded`), else
    what the scan box shows."""
    return uploaded or picture


def user_error(message: str) -> gr.Error:
    """An error the user must read: it stays on screen until closed (a toast that fades leaves only
    the outputs' bare "Error" badges behind). Not logged with a traceback: it is an answer, not a
    failure, and a log full of them would hide a real one (`readable_errors` logs those)."""
    return gr.Error(message, duration=None, print_exception=False)


def session_of(request: gr.Request | None) -> str | None:
    """The browser session a UI event comes from (None in-process)."""
    return getattr(request, "session_hash", None)


def read_upload(path: str | None) -> bytes:
    """The uploaded file's bytes. The file itself stays: Gradio stores identical uploads at one path
    and may hand it to another request (the Analyse button after auto-analysis, another client), so
    its cache cleaner (`delete_cache`) owns deletion, not the first request that reads it."""
    if not path:
        raise user_error("No scan was given: upload, paste or drop an ultrasound scan first (DICOM and other files: "
                         "the box below the image box; through the API, send it as the first argument).")
    file = Path(path)
    if not file.is_file():
        raise user_error("The uploaded file is no longer on the server (uploads are deleted 10 to 20 minutes after they "
                         "arrive); upload it again.")
    return file.read_bytes()


def upload_name(path) -> str | None:
    """The uploaded file's own name, for the PDF; None for a scan sent without one: Gradio stores a `data:`
    URI (how an MCP client sends a scan) as "file.<extension>", a name nobody gave it."""
    if not path:
        return None
    name = Path(path).name
    return None if re.fullmatch(r"file(\.\w+)?", name) else name


def report_file_name(path) -> str:
    """The PDF's file name: the scan's own name first, so reports saved together say which scan each is
    of (every one was breast-ultrasound-report.pdf); REPORT_NAME alone for a scan sent without a name.
    Only letters (of any script: "äöü" went too), digits, dot, dash and underscore are kept, at most 80."""
    name = upload_name(path)
    stem = re.sub(r"[^\w.-]+", "_", Path(name).stem).strip("._")[:80] if name else ""
    return f"{stem}-{REPORT_NAME}" if stem else REPORT_NAME


ANALYSIS_FAILED = "The analysis failed on this file. Try another scan."
SERVER_FAILED = "Something went wrong on the server (it is logged). Try again, or try another scan."


def readable_errors(run, failed: str = ANALYSIS_FAILED):
    """Run `run()`; a bad scan becomes its own message, a message for the user stays as it is, anything else
    becomes `failed` (logged), never a trace: Gradio shows any exception's own text (`show_error`), which
    for a failed write was an OSError naming the server's folders."""
    try:
        return run()
    except gr.Error:
        raise
    except ScanError as error:
        raise user_error(str(error)) from None
    except Exception:
        log.exception("%s", failed)
        raise user_error(failed) from None


def answers_readably(handler):
    """`handler` with `readable_errors` around it: for the handlers that draw and write results, where a
    failure is the server's (drawing, a full disk), not the scan's."""
    @functools.wraps(handler)
    def answered(*args, **kwargs):
        return readable_errors(lambda: handler(*args, **kwargs), SERVER_FAILED)
    return answered


def _number(value, name: str, expected: str) -> float | None:
    """`value` as a float (None stays None); text (even "0.5", which float() would take: the API documents
    numbers), true/false (which Python would take for 1 and 0) and anything float() refuses are a readable
    error naming what was `expected`."""
    if value is None:
        return None
    if not isinstance(value, (bool, str, bytes)):
        with contextlib.suppress(TypeError, ValueError, OverflowError):  # an integer of 400 digits overflows
            return float(value)
    raise user_error(f"{name} must be {expected}; got {reprlib.repr(value)}.")


def whole_number(value, name: str) -> int | None:
    """A frame's or a view's number (0 = first) from the UI or an API call, None for none; anything else
    (true/false too) is a readable error."""
    number = _number(value, name, "a whole number from 0")
    if number is None:
        return None
    if not 0 <= number < math.inf or number != int(number):  # also refuses NaN
        raise user_error(f"{name} must be a whole number from 0; got {reprlib.repr(value)}.")
    return int(number)


def one_of(value, choices, name: str):
    """`value`, a menu's or radio's choice from the UI or an API call, if it is one of `choices` (None: the
    first, the default, as null is for every optional setting of the API); anything else is a readable
    error naming them."""
    if value is None:
        return choices[0]
    if value not in choices:
        raise user_error(f"{name} must be one of {', '.join(choices)}; got {reprlib.repr(value)}.")
    return value


def explained_class(explain) -> str | None:
    """The class whose Grad-CAM to draw, from the menu's choice (None: the predicted class)."""
    return None if one_of(explain, EXPLAIN_CHOICES, "explain") == EXPLAIN_CHOICES[0] else explain


HIDDEN_HINT = ("The segmenter did mark a region here: tick \"Draw a lesion the normal gate hides\" (under the "
               "sliders; API: show_hidden) to see it.")


def as_asked(analysis, show_hidden):
    """The analysis to draw: with a lesion the normal gate hid drawn when the box is ticked. Only a
    real true or false (or None, the API's null: the default, false) is accepted, so a stray value never
    changes what is shown."""
    if show_hidden is None:
        return analysis
    if not isinstance(show_hidden, bool):
        raise user_error(f"show_hidden must be true or false; got {reprlib.repr(show_hidden)}.")
    return analysis.with_hidden_finding_shown() if show_hidden else analysis


def in_range(value, name: str, low: float, high: float, default=None):
    """`value` as a float in low..high (None: `default`); anything else — NaN, text, out of range,
    true/false — is a readable error, never a silent fallback (a NaN threshold once drew no lesion at all)."""
    number = _number(value, name, f"a number from {low} to {high}")
    if number is None:
        return default
    if not low <= number <= high:  # also false for NaN
        raise user_error(f"{name} must be a number from {low} to {high}; got {reprlib.repr(value)}.")
    return number


def checked_settings(threshold, opacity, explain, style) -> tuple[float | None, float, str | None, str]:
    """The drawing settings from the UI or an API call, each checked (a wrong one is a readable error):
    the threshold (None: the validated one), the opacity, the class to explain (None: the predicted
    one) and the lesion style; one place for what the screen, the PDF and the API accept."""
    return (in_range(threshold, "threshold", *THRESHOLD_RANGE),
            in_range(opacity, "opacity", 0.0, 1.0, default=DEFAULT_OPACITY), explained_class(explain), one_of(style, MASK_STYLES, "style"))


class Newest:
    """Per session, the number of the newest request of one kind: a request that ends after its session
    began a newer one shows nothing (its results would land beside what the newer one is about)."""

    def __init__(self):
        self._numbers = itertools.count(1)
        self._newest = {}  # session -> the number of its newest request
        self._lock = threading.Lock()  # Gradio runs events on a thread pool: numbering and recording are one step

    def begin(self, request) -> int:
        """A new request's number, now the session's newest."""
        with self._lock:
            number = next(self._numbers)
            self._newest[session_of(request)] = number
        return number

    def now(self, request) -> int:
        """The session's newest number (0 before its first)."""
        return self._newest.get(session_of(request), 0)

    def superseded(self, number, request) -> bool:
        """Whether the session began a newer request than `number` (None: no number, never)."""
        return number is not None and self.now(request) != number

    def leave(self, request) -> None:
        self._newest.pop(session_of(request), None)


class Handlers:
    """What the events call. Every path from user input ends in results or a gr.Error message.
    The API functions' docstrings are their MCP tool descriptions."""

    def __init__(self, analyzer: Analyzer):
        self.analyzer = analyzer
        self.models = model_descriptions(analyzer.classifier, analyzer.segmenter)
        self.scans = Newest()  # the scan analysed: its ticket travels with the browser's request
        self._asked = {}  # session -> the settings last asked for on screen: a PDF made with others is stale
        self.batches = Newest()  # the Batch tab's files: changing them makes a batch in the making stale
        self._drawn = {}  # session -> the ticket and settings of the results on screen
        self._pruned_at = -math.inf  # never yet
        self._asking = threading.Lock()  # `_asked` is read and written in one step (events run on a thread pool)

    def _analysis(self, path, frame=0, view=None, pop_up_warnings=True):
        """The file's analysis (frame `frame`, view `view` or the largest). Its warnings pop up for API
        callers; the UI shows them in its notes instead (pop-ups would pile up over frame changes, and
        outlive an analysis a newer scan replaced)."""
        data = read_upload(path)
        frame, view = whole_number(frame, "frame") or 0, whole_number(view, "view")
        analysis = readable_errors(lambda: self.analyzer.analyze(data, frame, view))
        for warning in analysis.warnings if pop_up_warnings else []:
            gr.Warning(warning)
        return analysis

    def forget(self, request: gr.Request = None):
        """Before every new analysis in the UI (and when the scan is removed): drop the stored result and
        blank every output, so a failed analysis never leaves the previous scan's results beside the new
        image; and a ticket that makes the coming analysis the session's newest (`analyze_chosen`)."""
        ticket = self.scans.begin(request)
        # the stored result and six results, the notes, the PDF box, the ticket
        return (None,) * RENDERED_OUTPUTS + ("", gr.update(value=None, visible=False), ticket)

    def leave(self, request: gr.Request = None):
        """A page closed: what was kept about its session goes."""
        for newest in (self.scans, self.batches):
            newest.leave(request)
        for kept in (self._drawn, self._asked):
            kept.pop(session_of(request), None)

    def results(self) -> Path:
        """The folder results are written to, first pruned of those not handed out for ANALYSIS_KEPT_S
        when a minute has passed since the last pruning: every writer asks here (only the screen's renders
        pruned, so batches, PDFs and /segment calls alone filled it until the server stopped)."""
        if time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = time.monotonic()
            prune(RESULTS_DIR, ANALYSIS_KEPT_S)
        return RESULTS_DIR

    def withdraw_pdf(self, explain, threshold, opacity, style=MASK_STYLES[0], show_hidden=False,
                     request: gr.Request = None):
        """A setting moved: a PDF made with other settings (before, or still in the making) no longer
        shows what is on screen, so it goes (make another). The same settings again keep it: a number
        typed into the threshold's box comes once as typed and again when the box loses focus, which
        it does when the PDF button is clicked (that PDF, made with the typed number, was dropped)."""
        settings = (explain, threshold, opacity, style, show_hidden)
        with self._asking:
            if self._asked.get(session_of(request)) == settings:
                return gr.skip()
            self._asked[session_of(request)] = settings
        return gr.update(visible=False, value=None)

    @answers_readably
    def render(self, analysis, explain, threshold, opacity, style=MASK_STYLES[0], show_hidden=False):
        """Re-draw every output from a stored analysis: no model runs, except Seg-Grad-CAM's gradient
        pass the first time a threshold draws a new mask (nothing to do before an analysis). With
        `show_hidden`, a lesion the normal gate hid is drawn, with a note saying so."""
        if analysis is None:
            return (gr.skip(),) * RENDERED_OUTPUTS
        analysis = as_asked(analysis, show_hidden)
        threshold, opacity, explain, style = checked_settings(threshold, opacity, explain, style)
        # a note informs; only warnings warn
        notes = [f"⚠️ {w}" for w in analysis.warnings] + analysis.notes_at(threshold, explain)
        if analysis.suppressed_as_normal:
            notes.append(HIDDEN_HINT)
        if analysis.withheld:  # no diagnosis-like output at all, and the reason in plain view
            return (analysis.no_answer.headline, None, None, None, json_report(analysis, threshold), None,
                    "\n\n".join(notes))
        lesion = analysis.lesion_stats(threshold)
        if lesion["lesion_count"]:
            notes.append(lesion_summary(lesion))
        notes = "\n\n".join(notes)
        shown = analysis.for_display(DISPLAY_MAX_SIDE)  # overlays at display size; the mask file at full size
        seg_cam = shown.seg_cam_overlay(threshold, opacity)
        folder = self.results()
        return (
            analysis.probability_dict(),
            write_image(shown.class_overlay(explain, opacity), folder, name="gradcam"),
            write_image(shown.mask_overlay(threshold, opacity, style), folder, name="lesion-overlay"),
            write_image(analysis.mask_png(threshold), folder, "png", "lesion-mask"),
            json_report(analysis, threshold, lesion, explain),
            None if seg_cam is None else write_image(seg_cam, folder, name="seg-gradcam"),
            notes,
        )

    @staticmethod
    def frame_picker(analysis):
        """The frame slider: shown only for a file with several frames, at the frame analysed."""
        if analysis is None or analysis.n_frames <= 1:
            return gr.update(visible=False, value=0)
        return gr.update(visible=True, minimum=0, maximum=analysis.n_frames - 1, value=analysis.frame,
                         label=f"Frame (of {analysis.n_frames}, from 0)")

    @staticmethod
    def view_picker(analysis):
        """The view choice: shown only for an image of several views side by side, its label saying which
        is read. It holds a view only once the user chose one: a default it held would be sent back as
        asked for when the frame changes."""
        framing = None if analysis is None else analysis.class_framing
        if framing is None or framing.views <= 1:
            return gr.update(visible=False, value=None)
        choices = [(view_position(place, framing.views), place) for place in range(framing.views)]
        return gr.update(visible=True, choices=choices,
                         value=framing.view_index if framing.asked else None,
                         label=f"View (of {framing.views} side by side; reading the {framing.view} one)")

    def analyze_and_store(self, path, frame=0, view=None, explain=EXPLAIN_CHOICES[0], threshold=None, opacity=DEFAULT_OPACITY,
                          style=MASK_STYLES[0], show_hidden=False):
        """The UI's analysis: the stored result (for re-rendering), every output, the frame and view pickers."""
        analysis = self._analysis(path, frame, view, pop_up_warnings=False)
        return (analysis, *self.render(analysis, explain, threshold, opacity, style, show_hidden),
                self.frame_picker(analysis), self.view_picker(analysis))

    def analyze_chosen(self, picture, uploaded, ticket=None, frame=0, view=None, explain=EXPLAIN_CHOICES[0],
                       threshold=None, opacity=DEFAULT_OPACITY, style=MASK_STYLES[0], show_hidden=False,
                       request: gr.Request = None):
        """The UI's analysis of the file chosen last (`current_file`), under the ticket `forget` gave it.
        If the session has chosen another scan since (a big scan still running when an example is
        clicked), nothing is shown, not even an error: its results would land under the newer scan.
        A file it cannot analyse gets its reason in the notes, where results would be, not a raised error
        (that would mark every result box with Gradio's red "Error" badge as well) nor a pop-up (one
        stayed on screen beside the next scan's results)."""
        try:
            outputs = self.analyze_and_store(current_file(picture, uploaded), frame, view, explain, threshold,
                                             opacity, style, show_hidden)
        except gr.Error as error:
            if self.scans.superseded(ticket, request):
                return (gr.skip(),) * STORED_OUTPUTS
            return None, *(None,) * (RENDERED_OUTPUTS - 1), f"⚠️ {error.message}", gr.skip(), gr.skip()
        if self.scans.superseded(ticket, request):
            return (gr.skip(),) * STORED_OUTPUTS
        self._drawn[session_of(request)] = (ticket, explain, threshold, opacity, style, show_hidden)
        return outputs

    def rerender(self, analysis, ticket, explain, threshold, opacity, style=MASK_STYLES[0], show_hidden=False,
                 request: gr.Request = None):
        """A setting moved: the stored analysis drawn again (`render`), unless the session has chosen another
        scan since (`ticket`, as for `analyze_chosen`): a big scan's re-render that ended after a click on an
        example put the big scan's results beside the example's picture."""
        outputs = self.render(analysis, explain, threshold, opacity, style, show_hidden)
        if self.scans.superseded(ticket, request):
            return (gr.skip(),) * RENDERED_OUTPUTS
        if analysis is not None:
            self._drawn[session_of(request)] = (ticket, explain, threshold, opacity, style, show_hidden)
        return outputs

    def catch_up(self, analysis, ticket, explain, threshold, opacity, style=MASK_STYLES[0], show_hidden=False,
                 request: gr.Request = None):
        """Right after an analysis: its results were drawn with the settings read when it started; a setting
        moved while it ran (its re-render found no analysis to draw) is drawn now. Nothing to do, and
        nothing redrawn, when the settings on screen are those."""
        if (self.scans.superseded(ticket, request)
                or self._drawn.get(session_of(request)) == (ticket, explain, threshold, opacity, style, show_hidden)):
            return (gr.skip(),) * RENDERED_OUTPUTS
        return self.rerender(analysis, ticket, explain, threshold, opacity, style, show_hidden, request)

    @answers_readably
    def show_analysed(self, analysis, picture, uploaded):
        """The scan box's picture of the scan as analysed, when the box shows something else: a file from
        the file box (a browser cannot draw DICOM), a format the browser cannot draw (TIFF showed as a
        broken-image frame), or the moving picture of a multi-frame file (the frame analysed); nothing
        for an image the scan box already shows as it is."""
        if analysis is None or uploaded is None or (picture == uploaded and analysis.n_frames == 1
                                                    and Path(picture).suffix.lower() in BROWSER_IMAGE_SUFFIXES):
            return gr.skip()
        return write_image(analysis.gray, self.results(), "png")

    def pdf_download(self, analysis, ticket, picture, uploaded, explain, threshold, opacity, style=MASK_STYLES[0],
                     show_hidden=False, request: gr.Request = None):
        """The PDF report button: the report of what is on screen, shown for download; nothing if another
        scan was chosen or other settings were asked for while it was made (it would describe other results)."""
        settings = (explain, threshold, opacity, style, show_hidden)
        with self._asking:
            self._asked.setdefault(session_of(request), settings)  # no setting moved yet: these are on screen
        path = self.pdf(analysis, threshold, opacity, current_file(picture, uploaded), explain, show_hidden, style)
        stale = self.scans.superseded(ticket, request) or self._asked.get(session_of(request)) != settings
        return gr.skip() if stale else gr.update(visible=True, value=path)

    @answers_readably
    def pdf(self, analysis, threshold=None, opacity=DEFAULT_OPACITY, path=None, explain=EXPLAIN_CHOICES[0], show_hidden=False,
            style=MASK_STYLES[0]):
        """The stored analysis as a PDF report (the UI's download button), as shown: threshold,
        opacity, lesion style, the class whose Grad-CAM is on screen and whether a lesion the gate hid is drawn."""
        if analysis is None:
            raise user_error("No results to report yet: analyse a scan, or wait until its results are shown (the report "
                             "describes the results on screen).")
        analysis = as_asked(analysis, show_hidden)
        threshold, opacity, explain, style = checked_settings(threshold, opacity, explain, style)
        data = pdf_report(analysis, threshold, opacity, self.models, upload_name(path), explain=explain, style=style)
        return write_file(data, self.results(), "pdf", report_file_name(path))

    def analyze(self, path, explain=EXPLAIN_CHOICES[0], threshold=None, opacity=DEFAULT_OPACITY, frame=0, show_hidden=False,
                view=None):
        """Classify a breast ultrasound scan (normal / benign / malignant), segment its lesion and explain
        both with Grad-CAM. Research demo, not a medical device: not for diagnosis.

        Args:
            path: the scan: a B-mode breast ultrasound image (PNG, JPEG, BMP, TIFF, GIF, WebP or DICOM; at least 32 px a side, at most 16 megapixels and 50 MB); over MCP, a data: URI with the file's base64 content or an http(s) URL the server can fetch.
            explain: the class whose Grad-CAM to draw: "predicted class", "normal", "benign" or "malignant".
            threshold: lesion-mask probability threshold, 0.05 to 0.95 (default: the validated one).
            opacity: opacity of the overlays, 0 to 1 (default 0.45).
            frame: which frame of a multi-frame file (DICOM cine, animated GIF, multi-page TIFF) to analyse, from 0 (default 0).
            show_hidden: true to draw a lesion the normal gate hides when the classifier rates the scan normal (default false: the validated rule).
            view: which view of an image showing several side by side to analyse, from 0 at the left (default: the largest).
        Returns:
            probabilities, Grad-CAM overlay, lesion overlay, lesion mask (PNG 0/255), report (JSON, with lesion sizes in mm for a calibrated DICOM), Seg-Grad-CAM overlay, notes.
        """
        return self.render(self._analysis(path, frame, view), explain, threshold, opacity, show_hidden=show_hidden)

    def report(self, path, threshold=None, frame=0, view=None, show_hidden=False):
        """A PDF report of one breast ultrasound scan: the scan, lesion overlay, Grad-CAM maps, calibrated
        probabilities, lesion measurements (mm for a calibrated DICOM), warnings, model versions and
        date. Research demo, not a medical device: not for diagnosis.

        Args:
            path: the scan: a B-mode breast ultrasound image (PNG, JPEG, BMP, TIFF, GIF, WebP or DICOM; at least 32 px a side, at most 16 megapixels and 50 MB); over MCP, a data: URI with the file's base64 content or an http(s) URL the server can fetch.
            threshold: lesion-mask probability threshold, 0.05 to 0.95 (default: the validated one).
            frame: which frame of a multi-frame file to analyse, from 0 (default 0).
            view: which view of an image showing several side by side to analyse, from 0 at the left (default: the largest).
            show_hidden: true to draw a lesion the normal gate hides when the classifier rates the scan normal (default false: the validated rule).
        Returns:
            the PDF file.
        """
        return self.pdf(self._analysis(path, frame, view), threshold, DEFAULT_OPACITY, path, show_hidden=show_hidden)

    def classify(self, path, view=None):
        """Calibrated probabilities that a breast ultrasound scan is normal, benign or malignant (the
        classifier alone). Research demo, not a medical device: not for diagnosis.

        Args:
            path: the scan: a B-mode breast ultrasound image (PNG, JPEG, BMP, TIFF, GIF, WebP or DICOM; at least 32 px a side, at most 16 megapixels and 50 MB); over MCP, a data: URI with the file's base64 content or an http(s) URL the server can fetch.
            view: which view of an image showing several side by side to read, from 0 at the left (default: the largest).
        Returns:
            the probabilities (or why there are none: "No answer: this image is not recognised as a breast ultrasound scan", "... in colour, not a greyscale B-mode scan", "... too small to analyse", "... blank", "... shown with inverted grey levels"), and the warnings: why a scan gets no answer and what to upload instead, or what makes its answer less reliable or partial (colour, several frames, shown upside down, two views side by side of which one was read), one per line; empty when none.
        """
        data = read_upload(path)
        view = whole_number(view, "view")
        probabilities, warnings, no_answer = readable_errors(lambda: self.analyzer.classify(data, view))
        for warning in warnings:
            gr.Warning(warning)
        notes = "\n".join(warnings)  # a client sees gr.Warning only as a log message, if at all
        if probabilities is None:
            return no_answer.headline, notes
        return dict(zip(self.analyzer.classes, map(float, probabilities))), notes

    @answers_readably
    def segment(self, path, threshold=None, view=None, show_hidden=False):
        """Segment the lesion of a breast ultrasound scan: mask and lesion statistics. As in the app, no
        lesion is drawn where the classifier rates the scan normal (the validated normal gate; the
        report's notes say when it hid one, and show_hidden draws it). Research demo, not a medical
        device: not for diagnosis or measurement.

        Args:
            path: the scan: a B-mode breast ultrasound image (PNG, JPEG, BMP, TIFF, GIF, WebP or DICOM; at least 32 px a side, at most 16 megapixels and 50 MB); over MCP, a data: URI with the file's base64 content or an http(s) URL the server can fetch.
            threshold: lesion-mask probability threshold, 0.05 to 0.95 (default: the validated one).
            view: which view of an image showing several side by side to segment, from 0 at the left (default: the largest).
            show_hidden: true to draw a lesion the normal gate hides when the classifier rates the scan normal (default false: the validated rule).
        Returns:
            the lesion mask (PNG, 0/255, the scan's size; none when the image gets no answer: the report's no_answer says why) and a report with count, area (px, and mm for a calibrated DICOM) and bounding box.
        """
        threshold = in_range(threshold, "threshold", *THRESHOLD_RANGE)
        analysis = as_asked(self._analysis(path, view=view), show_hidden)
        if analysis.withheld:  # no mask: an empty one would read as "no lesion"
            return None, json_report(analysis, threshold)
        return write_image(analysis.mask_png(threshold), self.results(), "png", "lesion-mask"), json_report(analysis, threshold)

    def forget_batch(self, request: gr.Request = None):
        """Files added or removed in the Batch tab: the results (and their CSV) no longer describe the
        box, so they go, and so do those of a batch still running on the files as they were."""
        self.batches.begin(request)
        return "", None, None, None

    @answers_readably
    def batch(self, paths, progress=gr.Progress(), request: gr.Request = None):
        """The Batch tab: many scans (files and/or zip archives) -> a table with one row per scan, a
        gallery of lesion outlines and the table as CSV — the rows `python -m inference` writes.
        If the files change while it runs (`forget_batch`), it stops after the chunk of scans it is on
        and shows nothing."""
        files = self.batches.now(request)
        outputs = self._batch(paths, progress, stale=lambda: self.batches.superseded(files, request))
        return (gr.skip(),) * len(outputs) if self.batches.superseded(files, request) else outputs

    def _batch(self, paths, progress, stale):
        try:
            inputs = read_batch_inputs(paths or [])
        except BatchInputError as error:
            return batch_refused(str(error))
        scans = inputs.scans
        if not scans:
            return batch_refused(no_scans_summary(inputs.skipped, inputs.unusable) if paths
                                 else "Choose one or more scans, or a zip archive of scans.")
        rows, gallery, folder = [], [], self.results()
        progress(0, desc="analysing", total=len(scans), unit="scans")
        for chunk in batches(scans, BATCH_CHUNK):  # read now: a request holds one chunk, not the upload
            if stale():
                break
            results = readable_errors(lambda: self.analyzer.analyze_batch([scan.read_or_error() for scan in chunk]),
                                      SERVER_FAILED)  # one scan's failure is its row: this is the models' or the server's
            for name, result in zip((scan.name for scan in chunk), results):
                rows.append(result_row(name, result))
                if not isinstance(result, ScanError) and not result.withheld:
                    caption = f"{file_label(name)}: {result.predicted_class} {result.probabilities.max():.0%}"
                    outlined = result.for_display(BATCH_THUMBNAIL_SIDE).mask_overlay(style="outline")
                    gallery.append((write_image(outlined, folder), caption))
            progress(len(rows) / len(scans), desc="analysing")
        table = [[round(v, 4) if isinstance(v, float) else v for v in (r[c] for c in SCREEN_COLUMNS)]
                 for r in map(for_screen, rows)]
        csv_file = write_file(batch_csv(rows), folder, "csv", BATCH_NAME)
        return (batch_summary(rows, left_out_summary(inputs.skipped, inputs.unusable), self.analyzer.classes),
                table, gallery, csv_file)


def batch_refused(message: str) -> tuple:
    """The Batch tab's outputs for an upload it cannot analyse: the reason in the line above the
    (emptied) results, not a raised error, which would badge every result box red, nor a pop-up, which
    stayed over the next batch's results."""
    return f"⚠️ {message}", None, None, None


def threshold_info(segmenter_config: dict) -> str:
    """The mask slider's hint: the validated default and, when the config sets one, the peak a lesion
    must reach to be drawn at all (the slider moves the outline, not that)."""
    peak = segmenter_config.get("peak_threshold")
    return f"Validated default {float(segmenter_config['threshold']):.2f}" + (
        "" if peak is None else f"; a lesion is drawn only where the map reaches {float(peak):.2f}")


def build_demo(analyzer: Analyzer) -> gr.Blocks:
    # Results are served from where they are written, not registered as Gradio's cache files: its cleaner
    # (delete_cache, there for uploads) deleted them 10 to 20 minutes after they were last handed out, so a
    # download failed on a page that still re-rendered (stress test); `Handlers.results` prunes them.
    gr.set_static_paths([RESULTS_DIR])
    handlers = Handlers(analyzer)
    default_threshold = float(analyzer.segmenter.config["threshold"])
    with gr.Blocks(title="Breast ultrasound analysis", delete_cache=(UPLOAD_MAX_AGE_S, UPLOAD_MAX_AGE_S)) as demo:
        gr.Markdown(f"# Breast ultrasound analysis\nClassify a breast ultrasound scan (normal / benign / "
                    f"malignant), segment the lesion, and see what each model looked at (Grad-CAM). No scan at hand? "
                    f"[Try an example](#examples) below. {DISCLAIMER}")
        state = gr.State(time_to_live=ANALYSIS_KEPT_S)  # or until its page closes
        chosen = gr.State()  # the file chosen last; the scan box may show only a picture of it (DICOM, examples, frames)
        # The newest analysis's ticket, read by the browser when it starts that analysis (a gr.State
        # would be read when the queue reaches it, possibly after the next scan was chosen).
        ticket = gr.Number(visible=False, precision=0)
        with gr.Tabs():
            with gr.Tab("Scan"):
                with gr.Row():
                    with gr.Column(scale=2):
                        # The box takes images only (the browser refuses a DICOM dropped on it with Gradio's
                        # "Only image/* allowed"), so it says where other files go before one is dropped.
                        scan = ScanInput(label="Ultrasound scan", type="filepath", image_mode=None,
                                         placeholder="Drop a scan image here (PNG, JPEG, TIFF, …), paste it, "
                                                     "or click to upload.\n\nDICOM and other files: the box below.",
                                         sources=["upload", "clipboard"], format="png", height=360, elem_id="scan")
                        scan_file = gr.File(label="…or a DICOM or any other scan file", file_count="single",
                                            file_types=None, height=180, elem_id="scan-file")
                        # No reset button: it would set frame 0 without analysing it (it sends no `input`).
                        frame = TypedSlider(0, 1, value=0, step=1, label="Frame", visible=False, elem_id="frame",
                                            buttons=[])
                        view = gr.Radio([], label="View", visible=False, elem_id="view")
                        with gr.Row():
                            run = gr.Button("Analyse", variant="primary")
                            make_pdf = gr.Button("PDF report", elem_id="make-pdf")
                        pdf = gr.File(label="PDF report of the last analysis", elem_id="pdf", visible=False)
                        threshold = TypedSlider(*THRESHOLD_RANGE, value=default_threshold, step=0.05, label="Mask threshold",
                                              info=threshold_info(analyzer.segmenter.config))
                        opacity = TypedSlider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="Overlay opacity", elem_id="opacity",
                                              info="Of the heat maps and the lesion's fill; an outline is always opaque")
                        style = gr.Radio(list(MASK_STYLES), value=MASK_STYLES[0], label="Lesion drawn", elem_id="style")
                        show_hidden = gr.Checkbox(False, label="Draw a lesion the normal gate hides",
                                                  info="When the classifier rates a scan normal, what the segmenter "
                                                       "marked is hidden; tick to see it beside that verdict.",
                                                  elem_id="show-hidden")
                    with gr.Column(scale=3):
                        notes = gr.Markdown(label="notes", elem_id="notes")
                        with gr.Tabs():
                            with gr.Tab("Classify"):
                                label = gr.Label(num_top_classes=3, label="Calibrated probabilities", elem_id="probabilities")
                                explain = gr.Dropdown(EXPLAIN_CHOICES, value=EXPLAIN_CHOICES[0], label="Explain class")
                                class_cam = gr.Image(label="Classifier Grad-CAM (red: most evidence, blue: none)",
                                                     format="png", elem_id="class-cam", buttons=RESULT_BUTTONS,
                                                     alt_text="The scan with the classifier's Grad-CAM heat map: "
                                                              "warm colours where the explained class's evidence lies")
                            with gr.Tab("Segment"):
                                with gr.Row():
                                    overlay = gr.Image(label="Lesion overlay", format="png", elem_id="seg-overlay",
                                                       buttons=RESULT_BUTTONS,
                                                       alt_text="The scan with the drawn lesion in red; its size is "
                                                                "in the notes above the results")
                                    mask = gr.Image(label="Lesion mask", format="png", image_mode="L", elem_id="mask",
                                                    buttons=RESULT_BUTTONS,
                                                    alt_text="The lesion mask: white where the lesion is drawn, "
                                                             "black elsewhere")
                                seg_cam = gr.Image(label="Seg-Grad-CAM of the drawn lesion (red: most evidence, blue: none)",
                                                   format="png", elem_id="seg-cam", buttons=RESULT_BUTTONS,
                                                   alt_text="The scan with the segmenter's Seg-Grad-CAM heat map: "
                                                            "warm colours where the drawn lesion's evidence lies")
                                details = gr.JSON(label="Lesion statistics and report")
                gr.Markdown("## Examples\nClick one to analyse it. Held-out scans from three hospitals (BUSI's and "
                            "BUS-UCLM's test sets; BrEaST, never trained on), captioned with their ground truth; the last "
                            "is a calibrated DICOM.")
                gallery = gr.Gallery(list(zip(EXAMPLE_PICTURES, EXAMPLE_CAPTIONS)), columns=5, allow_preview=False,
                                     label="Examples", show_label=False, buttons=[],
                                     elem_id="examples", format="png", height="auto")
            with gr.Tab("Batch"):
                batch_files = gr.File(label="Scans or zip archives", file_count="multiple",
                                      file_types=None, elem_id="batch-files")
                batch_run = gr.Button("Analyse all", variant="primary", elem_id="batch-run")
                batch_counts = gr.Markdown(elem_id="batch-summary")
                # The file stays in view while the other columns scroll sideways, and on a phone takes at most
                # 40 % of the width, so the class shows beside it: CSS above (Gradio 6.31's pinned_columns
                # neither sticks nor narrows the column). A cell shows at most 90 characters (a click shows
                # all): the warnings made their column one line thousands of pixels wide, its start out of sight.
                batch_table = gr.Dataframe(headers=[SCREEN_HEADERS[c] for c in SCREEN_COLUMNS],
                                           label="Results (sort from a column's ⋮ menu)",
                                           interactive=False, elem_id="batch-table", pinned_columns=1, max_chars=90)
                batch_gallery = gr.Gallery(label="Lesions outlined", columns=4, height="auto",
                                           format="jpeg", elem_id="batch-gallery")
                batch_csv_file = gr.File(label="Table as CSV", elem_id="batch-csv")
            with gr.Tab("About"):
                gr.Markdown(about_text(analyzer), elem_id="about")
        outputs = [label, class_cam, overlay, mask, details, seg_cam, notes]

        settings = [explain, threshold, opacity, style, show_hidden]
        clear = dict(fn=handlers.forget, inputs=None, outputs=[state, *outputs, pdf, ticket], api_visibility="private",
                     show_progress="hidden")
        # "minimal": a small running timer over the results, not "full"'s spinner with its ETA bar (the estimate averages
        # past runs and was 4x off for big scans; "minimal" still prints it after the timer, as "0.2/0.3s")
        # "always_last": a scan chosen while the previous one's analysis runs in the same chain (removed and
        # replaced in the scan box) is analysed after it; Gradio's default dropped it, leaving no results.
        store = dict(fn=handlers.analyze_chosen, inputs=[scan, chosen, ticket, frame, view, *settings],
                     outputs=[state, *outputs, frame, view], api_visibility="private", show_progress="minimal",
                     trigger_mode="always_last")
        # A new scan starts at its first frame and its largest view.
        first_frame = dict(fn=lambda: (gr.update(value=0, visible=False), gr.update(value=None, visible=False)),
                           outputs=[frame, view], api_visibility="private", show_progress="hidden")
        show_analysed = dict(fn=handlers.show_analysed, inputs=[state, scan, chosen], outputs=scan,
                             api_visibility="private", show_progress="hidden")
        catch_up = dict(fn=handlers.catch_up, inputs=[state, ticket, *settings], outputs=outputs,
                        api_visibility="private", show_progress="hidden")

        def analyse(cleared, show_scan=False):
            """After `cleared`: the analysis, then the settings moved while it ran (`catch_up`) and, with
            `show_scan`, the scan box's picture of the scan as analysed."""
            analysed = cleared.then(**store)
            analysed.then(**catch_up)
            if show_scan:
                analysed.then(**show_analysed)
            return analysed

        analyse(run.click(**clear))
        # Sliders act on `input` (a drag, the arrow keys, a typed number; not a value set by the app):
        # `release` comes from a pointer alone, so keys moved a slider that changed nothing on screen
        # (but did change the PDF). "always_last": a drag's steps do not queue up, its last value runs.
        analyse(frame.input(**clear, trigger_mode="always_last"), show_scan=True)
        analyse(view.input(**clear, trigger_mode="always_last"))
        # A new scan: remember which file it is (`chosen_file`), start at its first frame, analyse. Removing
        # it removes its results too. The results sit below the scan box on a phone, and far above the
        # examples: bring them into view once the previous scan's results and PDF box are gone (a PDF box
        # hidden after the scroll pulled the results up past the top of the screen).
        for box, other in ((scan, scan_file), (scan_file, scan)):
            cleared = box.upload(chosen_file, box, [chosen, other, gallery], api_visibility="private") \
                .then(**first_frame).then(**clear)
            analyse(cleared, show_scan=True)
            cleared.then(None, None, None, js=AFTER_UPLOAD)
            box.clear(lambda: chosen_file(None), None, [chosen, other, gallery], api_visibility="private") \
                .then(**first_frame).then(**clear).then(None, None, None, js=focus_drop_area(box.elem_id))
        # A second example clicked while the first is being put in the box: each click is handled, one at a
        # time and in order, and the later one's ticket drops the first's analysis. Gradio's default for a
        # selection ("once") dropped the second click; "always_last" re-sent the first click's data.
        cleared = gallery.select(pick_example, None, [scan, chosen, scan_file], api_visibility="private",
                                 trigger_mode="multiple", concurrency_limit=1).then(**first_frame).then(**clear)
        analyse(cleared).then(example_shown, [scan, chosen], scan, api_visibility="private", show_progress="hidden")
        cleared.then(None, None, None, js=SCROLL_TO_RESULTS)

        def leave(request: gr.Request):
            """A page closed: what the handlers kept about its session goes, and so does its stored analysis
            (the scan and its maps), which Gradio keeps for an hour after its page closes, whatever its time
            to live (nothing to delete before the server is launched)."""
            handlers.leave(request)
            if getattr(demo, "state_holder", None) is not None:
                demo.state_holder.delete_state(session_of(request))

        demo.unload(leave)
        # A slider's reset button (↺) sends `release`, not `input`.
        setting_changed = [threshold.input, threshold.release, opacity.input, opacity.release, explain.change,
                           style.change, show_hidden.change]
        # The listeners of one event run one after another, in the order they are set here (Gradio's page
        # waits for each to end): the PDF goes first, at once, not after a big scan's re-render (a PDF
        # finished meanwhile showed beside the moved setting for as long as the re-render took).
        gr.on(setting_changed, handlers.withdraw_pdf, settings, pdf, api_visibility="private", show_progress="hidden")
        gr.on(setting_changed, handlers.rerender, [state, ticket, *settings], outputs, api_visibility="private",
              trigger_mode="always_last")
        demo.load(None, js=ANNOUNCE_NOTES)
        demo.load(None, js=NAME_EXAMPLES)
        demo.load(None, js=TAB_KEYS)
        demo.load(None, js=RADIO_KEYS)
        demo.load(None, js=KEEP_DROPDOWN_FOCUS)
        demo.load(None, js=CLOSE_DROPDOWN_ON_LEAVE)
        demo.load(None, js=SETTLE_TYPED_NUMBER)
        demo.load(None, js=NAME_CONTROLS)
        make_pdf.click(handlers.pdf_download, [state, ticket, scan, chosen, *settings], pdf, api_visibility="private")
        batch_outputs = [batch_counts, batch_table, batch_gallery, batch_csv_file]
        # Not `cancels` on the batch: a cancelled batch left Gradio's "Error" badge on the emptied summary; a
        # superseded batch stops at its next chunk instead (`forget_batch`).
        batch_files.change(handlers.forget_batch, None, batch_outputs, api_visibility="private",
                           show_progress="hidden")
        batch_run.click(handlers.batch, batch_files, batch_outputs, api_visibility="private", show_progress="full")
        # API-only endpoints: hidden buttons, so each has a name and typed inputs/outputs, and none
        # returns the gr.State (a State among the outputs empties an MCP tool's result).
        # Their settings come through plain hidden inputs, not the UI's slider and menu: those refuse a
        # null or unknown value before the handler can say what is wrong (or use the default).
        # (labelled, so the API's description names them, not "parameter_48")
        api_explain = gr.Textbox(value=EXPLAIN_CHOICES[0], visible=False, label="explain")
        api_threshold = OptionalNumber(value=None, visible=False, label="threshold")
        api_opacity = OptionalNumber(value=DEFAULT_OPACITY, visible=False, label="opacity")
        api_frame = OptionalNumber(value=0, visible=False, label="frame")
        api_show_hidden = gr.Checkbox(value=False, visible=False, label="show_hidden")
        api_view = OptionalNumber(value=None, visible=False, label="view")
        gr.Button(visible=False).click(handlers.analyze, [scan, api_explain, api_threshold, api_opacity, api_frame,
                                                          api_show_hidden, api_view], outputs, api_name="analyze")
        api_warnings = gr.Textbox(visible=False, label="warnings")
        gr.Button(visible=False).click(handlers.classify, [scan, api_view], [label, api_warnings], api_name="classify")
        gr.Button(visible=False).click(handlers.segment, [scan, api_threshold, api_view, api_show_hidden],
                                       [mask, details], api_name="segment")
        gr.Button(visible=False).click(handlers.report, [scan, api_threshold, api_frame, api_view, api_show_hidden], pdf,
                                       api_name="report")
    return demo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    parser.add_argument("--mcp", action="store_true", help="serve the endpoints as MCP tools too (or GRADIO_MCP_SERVER=True)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # a PDF report's font subsetting: 30 lines each
    try:
        analyzer = Analyzer()  # loads both models once and warms them up
    except ModelSourceError as error:  # a bad BUSI_CLASSIFIER / BUSI_SEGMENTER: its reason, not a traceback
        sys.exit(f"Cannot start: {error}")
    demo = build_demo(analyzer)

    def stop(signum, frame):
        """SIGTERM (`kill`, a container stop) and Ctrl-C: the server closes and the exit handlers run,
        so the temporary folder with uploads and results is removed. Ctrl-C gets this handler too, so
        stopping does not depend on where Gradio's launch is when the signal comes (Gradio handles
        KeyboardInterrupt only in its final wait loop; one CI run saw the server outlive SIGINT by 60 s)."""
        demo.close()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    demo.queue(default_concurrency_limit=2).launch(
        share=args.share,
        mcp_server=True if args.mcp else None,
        theme=THEME,
        css=CSS,
        i18n=MISSING_WORDS,
        ssr_mode=False,
        show_error=True,  # an API argument Gradio itself refuses (a path string for a file) says why, not just "error"
        max_file_size=MAX_BYTES,  # Gradio refuses bigger uploads before they reach the decoder
        # Gradio serves only files under the working directory or named here: started from another folder
        # (a service manager, a container), a clicked example was refused with "Cannot move ... add it to
        # the allowed_paths".
        allowed_paths=[str(EXAMPLES_DIR)],
    )


if __name__ == "__main__":
    main()
