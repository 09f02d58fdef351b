"""The app: its handlers in-process, a live server through gradio_client, and a real browser."""

import collections
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types
import urllib.request
import warnings
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

import app
from bench.server import AppServer, free_port
from inference import batch_view
from inference.batch_view import SCREEN_COLUMNS
from inference.postprocess import half_up
from inference.report import json_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EXAMPLE_UPLOAD = Path(app.EXAMPLES_DIR) / "busi_benign_354.png"  # the model calls it benign (0.99)
WARNINGS = SCREEN_COLUMNS.index("warnings")  # the batch table's column


@pytest.fixture(scope="module")
def handlers(analyzer):
    return app.Handlers(analyzer)


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def upload_copy(path, tmp_path):
    """What Gradio hands the app: a copy of the upload in its temp folder."""
    folder = Path(os.environ["GRADIO_TEMP_DIR"]) / tmp_path.name
    folder.mkdir(parents=True, exist_ok=True)
    return str(shutil.copy(path, folder / Path(path).name))


def test_analyze_returns_every_output(handlers, examples, tmp_path):
    path, truth = next((p, t) for p, t in examples if t == "malignant")
    label, class_cam, overlay, mask, report, seg_cam, notes = handlers.analyze(upload_copy(path, tmp_path))
    height, width = np.asarray(Image.open(path)).shape[:2]
    assert abs(sum(label.values()) - 1) < 1e-5 and set(label) == {"normal", "benign", "malignant"}
    assert Image.open(class_cam).format == Image.open(overlay).format == "JPEG"
    assert pixels(class_cam).shape == pixels(overlay).shape == (height, width, 3)
    assert Image.open(mask).format == "PNG" and pixels(mask).shape == (height, width)
    assert set(np.unique(pixels(mask))) <= {0, 255}
    assert report["predicted_class"] in label and report["lesion"]["lesion_area_px"] == int((pixels(mask) == 255).sum())
    assert seg_cam is None or pixels(seg_cam).shape == (height, width, 3)
    assert isinstance(notes, str)


def test_the_same_upload_serves_several_requests(handlers, examples, tmp_path):
    """Upload (auto-analysis), then Analyse, then an API call on the identical file: Gradio hands all
    of them one path, so no request may delete it (Gradio's cache cleaner does, later)."""
    upload = upload_copy(examples[1][0], tmp_path)
    state, *_ = handlers.analyze_and_store(upload)
    again, *_ = handlers.analyze_and_store(upload)
    label, *_ = handlers.analyze(upload)
    assert state.predicted_class == again.predicted_class == max(label, key=label.get)
    assert Path(upload).exists()


def test_a_new_analysis_first_forgets_the_previous_one(handlers):
    state, label, class_cam, overlay, mask, report, seg_cam, notes, pdf, ticket = handlers.forget()
    assert state is None and label is None and report is None and notes == ""
    assert pdf["value"] is None and pdf["visible"] is False
    assert all(isinstance(u, dict) and u.get("__type__") == "update" for u in handlers.render(state, "normal", 0.5, 0.5))


def test_an_analysis_overtaken_by_a_newer_scan_shows_nothing(handlers, examples, tmp_path):
    """A big scan still running when an example is clicked: the example's analysis (the newest ticket)
    is shown, the big scan's results and errors are dropped, whichever finishes last."""
    first, second = (upload_copy(path, tmp_path) for path, _ in examples[:2])
    *_, old_ticket = handlers.forget()
    *_, new_ticket = handlers.forget()
    skipped = handlers.analyze_chosen(first, None, old_ticket)
    assert len(skipped) == app.STORED_OUTPUTS and all(u == gr.skip() for u in skipped)
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not a scan")
    assert all(u == gr.skip() for u in handlers.analyze_chosen(str(bad), None, old_ticket))
    state, label, *_ = handlers.analyze_chosen(second, None, new_ticket)
    assert state.predicted_class == max(label, key=label.get)
    # The newest analysis's error is shown, in the notes where the results were, every result blank.
    state, *results, notes, frame, view = handlers.analyze_chosen(str(bad), None, new_ticket)
    assert state is None and all(r is None for r in results)
    assert notes.startswith("⚠️") and "not an image" in notes


def test_a_rerender_overtaken_by_a_newer_scan_shows_nothing(handlers, examples, tmp_path):
    """A setting moved on a big scan, then an example clicked before the re-render ended: the re-render
    of the old scan is dropped (it landed beside the example's picture); one under the newest ticket shows."""
    state, *_ = handlers.analyze_and_store(upload_copy(examples[0][0], tmp_path))
    *_, old_ticket = handlers.forget()
    assert handlers.rerender(state, old_ticket, "predicted class", 0.5, 0.45)[0] != gr.skip(), \
        "while no newer scan was chosen, it shows"
    *_, new_ticket = handlers.forget()
    stale = handlers.rerender(state, old_ticket, "predicted class", 0.5, 0.45)
    assert len(stale) == app.RENDERED_OUTPUTS and all(u == gr.skip() for u in stale)
    label, *_ = handlers.rerender(state, new_ticket, "predicted class", 0.5, 0.45)
    assert max(label, key=label.get) == state.predicted_class


def test_a_setting_moved_during_an_analysis_is_drawn_when_it_ends(handlers, examples, tmp_path):
    """The results are drawn with the settings read when the analysis started; the re-render a setting
    moved meanwhile asked for found no analysis yet. The catch-up after it draws the current settings,
    and draws nothing again when they are unchanged."""
    upload = upload_copy(examples[1][0], tmp_path)
    *_, ticket = handlers.forget()
    state, *_ = handlers.analyze_chosen(upload, None, ticket, 0, None, "predicted class", 0.5, 0.45)
    unchanged = handlers.catch_up(state, ticket, "predicted class", 0.5, 0.45)
    assert len(unchanged) == app.RENDERED_OUTPUTS and all(u == gr.skip() for u in unchanged)
    label, class_cam, overlay, mask, report, seg_cam, notes = handlers.catch_up(state, ticket, "predicted class", 0.3, 0.45)
    assert report["threshold"] == 0.3 and max(label, key=label.get) == state.predicted_class
    assert all(u == gr.skip() for u in handlers.catch_up(state, ticket, "predicted class", 0.3, 0.45)), \
        "drawn once at those settings"
    *_, newer = handlers.forget()
    assert all(u == gr.skip() for u in handlers.catch_up(state, ticket, "predicted class", 0.7, 0.45)), \
        "another scan was chosen since"


def test_a_pdf_made_while_the_screen_changed_is_not_shown(handlers, examples, tmp_path, monkeypatch):
    """A PDF requested just before a setting moved or another scan was chosen ended after its box was
    hidden and stayed beside results it does not describe; now it is dropped (make another). The same
    settings asked for again keep it: a threshold typed into its box, then the PDF button clicked, sends
    the typed number again as the box loses focus, and that PDF (made with it) was dropped (0 of 5)."""
    upload = upload_copy(examples[1][0], tmp_path)
    handlers.leave()  # a session that has not moved a setting yet (the handlers serve other tests too)
    *_, ticket = handlers.forget()
    state, *_ = handlers.analyze_chosen(upload, None, ticket)
    shown, typed, moved = (("predicted class", threshold, 0.45) for threshold in (0.5, 0.6, 0.7))
    assert handlers.pdf_download(state, ticket, upload, None, *shown)["visible"] is True
    assert handlers.withdraw_pdf(*shown) == gr.skip(), "the settings the PDF shows: it stays"
    assert handlers.withdraw_pdf(*typed)["visible"] is False, "other settings than the PDF's: it goes"
    make = handlers.pdf
    for meanwhile, made_with, kept in ((lambda: handlers.withdraw_pdf(*typed), typed, True),  # the box's blur
                                       (lambda: handlers.withdraw_pdf(*moved), typed, False),
                                       (handlers.forget, moved, False)):
        monkeypatch.setattr(handlers, "pdf", lambda *args, meanwhile=meanwhile: (meanwhile(), make(*args))[1])
        made = handlers.pdf_download(state, ticket, upload, None, *made_with)
        assert (made != gr.skip()) is kept


def test_an_examples_picture_is_put_back_when_the_box_shows_another():
    """Two examples clicked a few milliseconds apart: the box kept the first one's picture beside the
    second's results (race review, 2 of 20); after the analysis the analysed example's picture is set."""
    first, second = app.EXAMPLE_PICTURES[0], app.EXAMPLE_PICTURES[1]
    assert app.example_shown(f"/tmp/gradio/ab12/{Path(first).name}", app.EXAMPLE_FILES[1]) == second
    assert app.example_shown(f"/tmp/gradio/cd34/{Path(second).name}", app.EXAMPLE_FILES[1]) == gr.skip()
    assert app.example_shown(first, "/tmp/gradio/ef56/upload.png") == gr.skip(), "not an example: left as it is"
    dicom = app.EXAMPLE_FILES[-1]  # shown by its PNG twin
    assert app.example_shown(None, dicom) == app.EXAMPLE_PICTURES[-1]


def test_classify_runs_the_classifier_forward_pass_only(handlers, analyzer, examples, monkeypatch):
    path = examples[2][0]
    expected = handlers.analyze(str(path))[0]
    calls = []
    for explainer, attribute in ((analyzer.classifier_cam, "_run"), (analyzer.segmenter_cam, "_run"),
                                 (analyzer.segmenter_cam, "_forward"), (analyzer.segmenter_cam, "_logits")):
        monkeypatch.setattr(explainer, attribute, lambda *args: calls.append(args))
    probabilities, warnings = handlers.classify(str(path))
    assert calls == [], "no gradient maps and no segmenter for /classify"
    assert probabilities.keys() == expected.keys() and warnings == ""
    assert all(abs(probabilities[c] - expected[c]) < 1e-5 for c in expected)


def test_classify_returns_its_warnings(handlers, examples, tmp_path):
    """A client of /classify gets the warnings with the answer (as a gr.Warning they reached it, if at
    all, only as a log message): a partly coloured scan's, and why an image is not recognised."""
    scan = np.asarray(Image.open(examples[2][0]).convert("RGB")).copy()
    scan[: scan.shape[0] // 10, : scan.shape[1] // 4, 0] = 255  # a corner of the field tinted red (2.5 %)
    tinted = tmp_path / "tinted.png"
    Image.fromarray(scan).save(tinted)
    with pytest.warns(UserWarning):
        probabilities, warnings = handlers.classify(str(tinted))
    assert isinstance(probabilities, dict) and "does not look like a greyscale ultrasound" in warnings
    blank = tmp_path / "grey.png"
    Image.fromarray(np.full((200, 300), 128, np.uint8)).save(blank)
    with pytest.warns(UserWarning):
        label, warnings = handlers.classify(str(blank))
    assert label == "No answer: this image is not recognised as a breast ultrasound scan" and warnings, \
        "the reason comes with the refusal"


def test_sliders_before_any_analysis_change_nothing(handlers):
    assert all(isinstance(update, dict) and update.get("__type__") == "update" for update in handlers.render(None, "normal", 0.5, 0.5))


def test_a_value_typed_beyond_a_sliders_range_goes_to_its_nearer_end(analyzer):
    """Typed into a slider's box, 1.5 used to be refused with an error that blanked every result, while
    the box then showed 0.95 and the PDF used it; now the results are drawn at what the box shows."""
    demo = app.build_demo(analyzer)
    sliders = {block.label: block for block in demo.blocks.values() if isinstance(block, app.gr.Slider)}
    assert all(isinstance(sliders[label], app.TypedSlider) for label in ("Mask threshold", "Overlay opacity", "Frame"))
    threshold = sliders["Mask threshold"]
    assert threshold.preprocess(1.5) == app.THRESHOLD_RANGE[1] and threshold.preprocess(-2) == app.THRESHOLD_RANGE[0]
    assert threshold.preprocess(0.45) == 0.45
    assert threshold.preprocess(None) == app.THRESHOLD_RANGE[0], "an emptied box, as it shows once it loses focus"
    frame = app.TypedSlider(0, 4, step=1)  # the frame slider of a file with 5 frames
    assert frame.preprocess(1.5) == 2 and frame.preprocess(0.4) == 0 and frame.preprocess(9) == 4, \
        "a typed fraction is the nearest frame (1.5 was refused as no frame and the results were emptied)"
    # The reset button (↺) sends `release`, not `input`: the screen must follow it, as the PDF does
    render = next(fn for fn in demo.fns.values() if fn.name == "rerender")
    triggers = {(demo.blocks[block].label, event) for block, event in render.targets}
    assert {("Mask threshold", "release"), ("Overlay opacity", "release")} <= triggers
    assert sliders["Frame"].buttons == [], "a reset to frame 0 would not analyse it"


def test_results_handed_out_are_left_to_the_apps_pruning_not_to_gradios_upload_cleaner(analyzer, examples, tmp_path):
    """Gradio's cache cleaner (there for uploads: 10 to 20 minutes) deleted rendered results it had handed
    out, under the 30 minutes the app keeps them (stress test): a result goes out as a file Gradio serves in
    place, not one it registers for its cleaner."""
    from gradio.processing_utils import move_files_to_cache
    from gradio.route_utils import delete_files_created_by_app

    demo = app.build_demo(analyzer)
    mask_path, _ = app.Handlers(analyzer).segment(upload_copy(examples[0][0], tmp_path))
    output = next(block for block in demo.blocks.values() if isinstance(block, app.gr.File))
    served = move_files_to_cache({"path": mask_path, "meta": {"_type": "gradio.FileData"}}, output, postprocess=True)
    assert served["path"] == mask_path, "served where it was written"
    delete_files_created_by_app(demo, None)  # what the cleaner does to the files it was given, whatever their age
    assert Path(mask_path).is_file()


def test_a_moved_setting_takes_the_pdf_away_before_it_redraws(analyzer):
    """Gradio's page runs the listeners of one event one after another, in the order they were set:
    the PDF's withdrawal was set after the re-render, so on a big scan a PDF finished meanwhile showed
    beside the moved setting until the re-render ended (race review, 2 of 6)."""
    demo = app.build_demo(analyzer)
    listeners = {fn.name: (index, set(fn.targets)) for index, fn in demo.fns.items()}
    (withdraw, withdraw_triggers), (redraw, redraw_triggers) = listeners["withdraw_pdf"], listeners["rerender"]
    assert withdraw_triggers == redraw_triggers and withdraw < redraw


def test_rerender_uses_the_stored_analysis(handlers, examples, tmp_path):
    state, *_ = handlers.analyze_and_store(upload_copy(examples[4][0], tmp_path))
    label, class_cam, overlay, mask, report, seg_cam, notes = handlers.render(state, "normal", 0.2, 0.8)
    assert report["threshold"] == 0.2 and pixels(class_cam).shape[:2] == pixels(mask).shape
    _, _, _, strict_mask, _, _, _ = handlers.render(state, "benign", 0.9, 0.8)
    assert (pixels(strict_mask) > 0).sum() <= (pixels(mask) > 0).sum()


def test_a_map_of_another_class_than_the_predicted_one_says_so(handlers, tmp_path):
    """The Grad-CAM picture sits beside the verdict: when it explains another class, the notes say which."""
    state, *_ = handlers.analyze_and_store(upload_copy(EXAMPLE_UPLOAD, tmp_path))
    assert state.predicted_class == "benign"
    for explain in ("predicted class", "benign"):
        *_, notes = handlers.render(state, explain, None, 0.45)
        assert "Grad-CAM shows the evidence for" not in notes
    *_, report, _, notes = handlers.render(state, "normal", None, 0.45)
    note = "Grad-CAM shows the evidence for normal (chosen under Explain class), not for the predicted benign."
    assert note in notes
    # the JSON report and the PDF carry the notes the screen shows (they gave the analysis' own only; tester)
    assert any(note in text for text in report["notes"])
    pdf = " ".join(pdf_text(handlers.pdf(state, None, 0.45, str(EXAMPLE_UPLOAD), "normal")).split())
    assert note in pdf


def test_a_threshold_that_draws_nothing_says_so(handlers, examples, tmp_path):
    """A lesion the segmenter is 92 % sure of at most (the examples' lesions all pass 0.95, the
    slider's top) is drawn at the validated threshold, and at 0.95 the notes say why nothing is."""
    analysed, *_ = handlers.analyze_and_store(upload_copy(next(p for p, t in examples if t == "malignant"), tmp_path))
    state = dataclasses.replace(analysed, lesion_probs=np.minimum(analysed.lesion_probs, 0.92), _masks={},
                                _seg_maps={}, _displays={})
    assert state.lesion_stats()["lesion_count"] and not state.lesion_stats(0.95)["lesion_count"]
    *_, report, _, notes = handlers.render(state, "predicted class", 0.95, 0.45)
    note = f"No lesion is drawn at threshold 0.95; the validated threshold is {state.threshold:.2f}."
    assert note in notes and note in report["notes"]
    assert note in state.notes_at("0.95"), "a threshold given as text, as a library caller may"
    assert note in " ".join(pdf_text(handlers.pdf(state, 0.95, 0.45, "scan.png")).split())
    *_, notes = handlers.render(state, "predicted class", state.threshold, 0.45)
    assert "No lesion is drawn" not in notes and "Lesion drawn" in notes


def test_the_scan_box_shows_the_scan_as_analysed_only_when_it_shows_something_else(handlers, examples, tmp_path):
    """A scan box image is left as it is; a file from the file box (DICOM), one the browser cannot draw
    (TIFF) or a moving picture gets the analysed frame; nothing before an analysis."""
    upload = upload_copy(examples[0][0], tmp_path)
    state, *_ = handlers.analyze_and_store(upload)
    assert handlers.show_analysed(state, upload, upload) == gr.skip()
    assert handlers.show_analysed(None, None, upload) == gr.skip()
    shown = handlers.show_analysed(state, None, upload)
    assert np.array_equal(pixels(shown), state.gray)
    frames = [Image.open(examples[0][0]).convert("L"), Image.open(examples[0][0]).convert("L").transpose(0)]
    gif = Path(upload).with_name("cine.gif")
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    moving, *_ = handlers.analyze_and_store(str(gif), 1)
    assert np.array_equal(pixels(handlers.show_analysed(moving, str(gif), str(gif))), moving.gray)
    tiff = Path(upload).with_name("scan.tif")  # analysed, but a browser draws a broken-image frame for it
    Image.open(examples[0][0]).save(tiff)
    as_tiff, *_ = handlers.analyze_and_store(str(tiff))
    assert np.array_equal(pixels(handlers.show_analysed(as_tiff, str(tiff), str(tiff))), as_tiff.gray)


def test_a_lesion_the_gate_hides_is_drawn_when_the_box_is_ticked(gated, examples, tmp_path):
    """With a gate that hides every lesion: unticked, nothing is drawn and a hint says the box would
    show it; ticked, the segmenter's lesion, its statistics, its Seg-Grad-CAM, the note and the PDF."""
    handlers = app.Handlers(gated(0.0))
    path = next(p for p, t in examples if t == "malignant")
    state, label, class_cam, overlay, mask, report, seg_cam, notes, _, _ = handlers.analyze_and_store(
        upload_copy(path, tmp_path))
    assert state.suppressed_as_normal and state.segmenter_mask().any()
    assert not pixels(mask).any() and seg_cam is None and app.HIDDEN_HINT in notes
    _, _, _, shown_mask, shown_report, shown_seg_cam, shown_notes = handlers.render(state, "normal", None, 0.45,
                                                                                  show_hidden=True)
    assert np.array_equal(pixels(shown_mask) > 0, state.segmenter_mask())
    assert shown_report["lesion"]["lesion_count"] >= 1 and shown_seg_cam is not None
    assert "Drawn on request" in shown_notes and app.HIDDEN_HINT not in shown_notes
    assert state.suppressed_as_normal, "the stored analysis keeps the validated rule"
    assert "Drawn on request" in " ".join(pdf_text(handlers.pdf(state, None, 0.45, str(path), show_hidden=True)).split())
    for stray in ("yes", 1):
        with pytest.raises(gr.Error, match="show_hidden must be true or false"):
            handlers.render(state, "normal", None, 0.45, show_hidden=stray)
    # null, as for every optional setting of the API, is the default: the validated rule (tester)
    assert handlers.render(state, None, None, 0.45, show_hidden=None, style=None)[3:] == \
        handlers.render(state, "predicted class", None, 0.45)[3:]
    # the API's /segment and /report take the same choice
    upload = upload_copy(path, tmp_path)
    assert handlers.segment(upload)[1]["lesion"]["lesion_count"] == 0
    segmented_mask, segmented_report = handlers.segment(upload, None, None, True)
    assert np.array_equal(pixels(segmented_mask) > 0, state.segmenter_mask())
    assert segmented_report["lesion"] == shown_report["lesion"]
    assert "Drawn on request" in " ".join(pdf_text(handlers.report(upload, None, 0, None, True)).split())


@pytest.mark.parametrize("content, message", [
    (b"hello", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not an image|damaged"),
])
def test_bad_input_is_a_readable_error(handlers, tmp_path, content, message):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    with pytest.raises(gr.Error, match=message):
        handlers.classify(str(bad))
    with pytest.raises(gr.Error, match="No scan was given: upload, paste or drop .* through the API, send it as the "
                                       "first argument"):
        handlers.classify(None)


def test_tiny_image_is_refused(handlers, tmp_path):
    tiny = tmp_path / "tiny.png"
    Image.new("L", (1, 1)).save(tiny)
    with pytest.raises(gr.Error, match="at least 32 px"):
        handlers.segment(str(tiny))


# --- live server ---------------------------------------------------------------------------------

DICOM_EXAMPLE = Path(app.EXAMPLES_DIR) / "dicom" / "breast_case010.dcm"


def pdf_text(path) -> str:
    from pypdf import PdfReader

    return "\n".join(page.extract_text() for page in PdfReader(path).pages)


def test_dicom_upload_reports_lesion_size_in_mm(handlers, tmp_path):
    """A calibrated DICOM (even renamed without a suffix, as PACS exports are) gives sizes in mm;
    the same scan as a PNG says why it has none."""
    upload = upload_copy(DICOM_EXAMPLE, tmp_path)
    bare = Path(upload).with_name("IM0001")
    shutil.copy(upload, bare)
    *_, report, seg_cam, notes = handlers.analyze(str(bare))
    lesion = report["lesion"]
    assert f"{half_up(lesion['lesion_area_mm2']):.1f} mm²" in notes and f"{half_up(lesion['longest_diameter_mm']):.1f} ×" in notes
    spacing = lesion["mm_per_pixel"][0] * lesion["mm_per_pixel"][1]
    assert lesion["lesion_area_px"] > 0 and abs(lesion["lesion_area_mm2"] - lesion["lesion_area_px"] * spacing) <= 0.01 * lesion["lesion_area_mm2"]
    assert lesion["longest_diameter_mm"] > lesion["perpendicular_width_mm"] > 0
    *_, png_report, _, png_notes = handlers.analyze(upload_copy(Path(app.EXAMPLES_DIR) / "breast_case010.png", tmp_path))
    assert "no size in mm" in png_notes
    assert png_report["lesion"]["lesion_area_mm2"] is None and png_report["lesion"]["size_mm_unavailable"]
    assert png_report["lesion"]["lesion_area_px"] == lesion["lesion_area_px"]


def test_multi_frame_file_gets_a_frame_picker(handlers, tmp_path):
    """A three-frame cine: frame 0 first, the picker offers 0..2, any frame can be analysed, a frame
    that is not there (or not a whole number) is a readable error."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UltrasoundMultiFrameImageStorage

    scan = np.asarray(Image.open(Path(app.EXAMPLES_DIR) / "busi_malignant_49.png").convert("L"))
    cine = Dataset()
    cine.file_meta = FileMetaDataset()
    cine.SOPClassUID, cine.Modality = UltrasoundMultiFrameImageStorage, "US"
    cine.set_pixel_data(np.stack([scan, scan[:, ::-1], scan]), "MONOCHROME2", 8)
    path = Path(os.environ["GRADIO_TEMP_DIR"]) / tmp_path.name / "cine.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, cine, enforce_file_format=True)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the UI shows the frame warning in its notes, not as a pop-up
        state, *_, notes, picker, _ = handlers.analyze_and_store(str(path))
    assert state.frame == 0 and state.n_frames == 3 and "holds 3 frames" in notes
    with pytest.warns(UserWarning, match="holds 3 frames"):  # an API caller gets it as a warning too
        handlers.analyze(str(path))
    assert picker["visible"] is True and picker["maximum"] == 2 and picker["value"] == 0
    flipped, *_, picker, _ = handlers.analyze_and_store(str(path), 1)
    assert flipped.frame == 1 and picker["value"] == 1 and np.array_equal(flipped.gray, scan[:, ::-1])
    assert json_report(flipped)["frame"] == 1
    for bad in (3, 1.5, "x"):
        with pytest.raises(gr.Error, match="frame"):
            handlers.analyze_and_store(str(path), bad)
    single, *_, picker, view_picker = handlers.analyze_and_store(
        upload_copy(Path(app.EXAMPLES_DIR) / "busi_malignant_49.png", tmp_path))
    assert picker["visible"] is False and view_picker["visible"] is False


def test_two_views_side_by_side_get_a_view_choice(handlers, tmp_path):
    """An image of two scans side by side: the larger is read first and the choice offers both; the
    other view can be analysed from the UI and every endpoint, a view the image does not show (or not a
    whole number) is a readable error, and a scan of one view has no choice."""
    left = np.asarray(Image.open(Path(app.EXAMPLES_DIR) / "busi_malignant_49.png").convert("L"))
    right = np.asarray(Image.open(Path(app.EXAMPLES_DIR) / "busi_benign_354.png").convert("L"))
    right = right[:round(right.shape[0] * 0.8), :round(right.shape[1] * 0.8)]  # the smaller view
    screen = np.zeros((max(left.shape[0], right.shape[0]), left.shape[1] + 16 + right.shape[1]), np.uint8)
    screen[:left.shape[0], :left.shape[1]] = left
    screen[:right.shape[0], left.shape[1] + 16:] = right
    folder = Path(os.environ["GRADIO_TEMP_DIR"]) / tmp_path.name
    folder.mkdir(parents=True, exist_ok=True)
    path = str(folder / "dual.png")
    Image.fromarray(screen).save(path)

    state, *_, notes, _, picker = handlers.analyze_and_store(path)
    assert state.class_framing.view_index == 0 and "only the left one (the largest) was analysed" in notes
    assert picker["visible"] is True and picker["choices"] == [("left", 0), ("right", 1)]
    assert picker["value"] is None and "reading the left one" in picker["label"], "nothing chosen yet"
    alone = handlers.analyzer.analyze(Path(app.EXAMPLES_DIR) / "busi_malignant_49.png").lesion_stats()
    shared = state.lesion_stats()  # the lesion's share is of the view analysed, not of both views' image
    assert shared["lesion_count"] and abs(shared["lesion_area_percent"] - alone["lesion_area_percent"]) < 0.5
    other, label, *_, notes, _, picker = handlers.analyze_and_store(path, 0, 1)
    assert picker["value"] == 1 and "reading the right one" in picker["label"]
    assert "the right one (view 1), as asked, was analysed" in notes and "⚠️" not in notes, "a note, not a warning"
    assert other.mask()[:, :left.shape[1]].sum() == 0 < other.mask().sum()  # the lesion lies on the right view
    *_, report, _, _ = handlers.analyze(path, view=1)
    assert (report["view"], report["n_views"], report["predicted_class"]) == (1, 2, other.predicted_class)
    probabilities, warnings_text = handlers.classify(path, 1)
    assert max(probabilities, key=probabilities.get) == other.predicted_class and "as asked" in warnings_text
    mask_path, segment_report = handlers.segment(path, None, 1)
    assert segment_report["lesion"] == report["lesion"] and pixels(mask_path)[:, :left.shape[1]].max() == 0
    assert "as asked" in " ".join(pdf_text(handlers.report(path, None, 0, 1)).split())
    for bad in (2, 0.5, "x", True):
        with pytest.raises(gr.Error, match="view"):
            handlers.analyze(path, view=bad)
    with pytest.raises(gr.Error, match="View 1 was asked for, but this image shows one view"):
        handlers.classify(upload_copy(Path(app.EXAMPLES_DIR) / "busi_malignant_49.png", tmp_path), 1)


def test_pdf_report_of_the_stored_analysis(handlers, tmp_path):
    state, *_ = handlers.analyze_and_store(upload_copy(DICOM_EXAMPLE, tmp_path))
    path = handlers.pdf(state, None, 0.45, str(DICOM_EXAMPLE))
    assert Path(path).name == f"{DICOM_EXAMPLE.stem}-{app.REPORT_NAME}" and open(path, "rb").read(5) == b"%PDF-"
    assert Path(handlers.pdf(state, None, 0.45, "/tmp/gradio/ab12/file.dcm")).name == app.REPORT_NAME, "sent unnamed"
    assert app.report_file_name("/tmp/gradio/ab12/Patient X: scan 1 (L).dcm") == f"Patient_X_scan_1_L-{app.REPORT_NAME}"
    assert app.report_file_name("/tmp/gradio/ab12/Scan äöü 日本 (1).png") == f"Scan_äöü_日本_1-{app.REPORT_NAME}"
    text = pdf_text(path)
    assert state.predicted_class in text and "not a medical device" in text and "mm" in text
    other = next(c for c in state.classes if c != state.predicted_class)
    other_text = " ".join(pdf_text(handlers.pdf(state, None, 0.45, str(DICOM_EXAMPLE), other)).split())
    assert f"Grad-CAM of the classifier: {other} (not the predicted class)" in other_text, "the class on screen"
    assert "Lesion overlay (threshold" in " ".join(text.split())
    outlined = " ".join(pdf_text(handlers.pdf(state, None, 0.45, str(DICOM_EXAMPLE), style="outline")).split())
    assert "Lesion outline (threshold" in outlined, "the lesion drawn as on screen (the PDF ignored the style)"
    with pytest.raises(gr.Error, match="style must be one of"):
        handlers.pdf(state, style="dotted")
    with pytest.raises(gr.Error, match="No results to report yet"):
        handlers.pdf(None)
    assert f"File {DICOM_EXAMPLE.name}" in " ".join(text.split()), "the uploaded file's own name"
    nameless = tmp_path / "3f9a0c" / "file.png"  # how Gradio stores a data: URI (an MCP client's base64 scan)
    nameless.parent.mkdir()
    shutil.copy(Path(app.EXAMPLES_DIR) / "busi_malignant_49.png", nameless)
    assert "File not given" in " ".join(pdf_text(handlers.pdf(state, None, 0.45, str(nameless))).split())


def test_batch_of_files_and_a_zip(handlers, examples, tmp_path):
    """Files and a zip (with a DICOM without suffix, a broken scan, a text file and a ground-truth
    mask): one row per scan in order — the text file and the mask are not scans — the broken one an
    error row, the CSV the same rows, a gallery image per analysed scan."""
    import csv
    import zipfile

    archive = tmp_path / "scans.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(DICOM_EXAMPLE, "study/IM0001")
        z.writestr("study/broken.png", b"not a png")
        z.writestr("study/readme.txt", "notes")
        z.write(examples[1][0], "study/masks/x_mask.png")
    files = [str(examples[2][0]), str(archive)]
    summary, table, gallery, csv_path = handlers.batch(files, progress=lambda *args, **kwargs: None)
    assert summary.startswith("**3 scans:**") and "1 could not be read. The Warnings column says why" in summary
    assert summary.endswith("Not analysed: 2 files that are not scans (scans.zip/study/masks/x_mask.png, "
                            "scans.zip/study/readme.txt).")
    names = [row[0] for row in table]
    assert names == [examples[2][0].name, "IM0001 (scans.zip/study)", "broken.png (scans.zip/study)"]
    single = handlers.analyzer.analyze(examples[2][0])
    assert table[0][1] == single.predicted_class and abs(table[0][4] - single.probabilities[2]) < 1e-4
    assert table[1][1] in ("normal", "benign", "malignant") and table[2][WARNINGS].startswith("error: ")
    assert table[2][1] == batch_view.ERROR_CELL, "a failed scan's row says so where it is seen"
    assert len(gallery) == 2 and gallery[1][1].startswith("IM0001 (scans.zip/study): "), "captions name the file as the table does"
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == [examples[2][0].name, "scans.zip/study/IM0001", "scans.zip/study/broken.png"]
    assert rows[2]["predicted_class"] == "", "the CSV keeps paths whole and a failed scan's class empty"
    assert all(f"{count} {name}" in summary for name, count in collections.Counter(row[1] for row in table[:2]).items())
    summary, *results = handlers.batch([], progress=lambda *args, **kwargs: None)
    assert summary.startswith("⚠️ Choose one or more scans") and results == [None, None, None]
    empty_zip = tmp_path / "empty.zip"
    zipfile.ZipFile(empty_zip, "w").close()
    summary, *results = handlers.batch([str(empty_zip)], progress=lambda *args, **kwargs: None)
    assert summary == "⚠️ No scans in the upload. empty.zip holds no files." and results == [None, None, None]
    summary, twice, *_ = handlers.batch([str(archive), str(archive)], progress=lambda *args, **kwargs: None)
    assert summary.startswith("**2 scans:**") and len(twice) == 2, "one archive given twice is read once"
    bad_zip = tmp_path / "broken.zip"
    bad_zip.write_bytes(b"PK not really")
    summary, *results = handlers.batch([str(bad_zip)], progress=lambda *args, **kwargs: None)
    assert "broken.zip is damaged or not a zip archive" in summary and results == [None, None, None]
    assert "File is not a zip file" not in summary, "Python's own wording is no help to the user"
    # The files changed while the batch ran (cleared, added, removed): its results describe other files.
    stale = handlers.batch(files, progress=lambda *args, **kwargs: handlers.forget_batch())
    assert len(stale) == 4 and all(u == gr.skip() for u in stale)


def test_a_file_that_is_no_scan_is_passed_over_alike_beside_an_archive_and_in_it(tmp_path):
    """A text file beside a zip was counted a scan that could not be read, the same file inside it
    passed over as no scan (newcomer review)."""
    import zipfile

    notes = tmp_path / "notes.txt"
    notes.write_text("follow-up in 6 months")
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(notes, "notes.txt")
        z.write(EXAMPLE_UPLOAD, "scan.png")
        z.write(EXAMPLE_UPLOAD, "../up/scan.png")  # a step up is no hidden folder: it vanished without a word
        z.write(EXAMPLE_UPLOAD, ".cache/scan.png")
    inputs = app.read_batch_inputs([str(notes), str(archive), str(EXAMPLE_UPLOAD)])
    assert [scan.name for scan in inputs.scans] == ["study.zip/../up/scan.png", "study.zip/scan.png", EXAMPLE_UPLOAD.name]
    assert inputs.skipped == ["notes.txt", "study.zip/notes.txt"]
    assert inputs.scans[0].read() == EXAMPLE_UPLOAD.read_bytes(), "read from the archive, nothing written outside it"


def test_an_archive_saved_without_its_suffix_is_read_as_an_archive(tmp_path):
    """A zip saved as "scans" was read as one scan and refused with "analyse the scans in it as a batch", in the
    Batch tab (input review); a DICOM file without a suffix stays a scan."""
    import zipfile

    archive = tmp_path / "scans"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(EXAMPLE_UPLOAD, "scan.png")
    dicom = tmp_path / "IM0001"
    dicom.write_bytes((Path(app.EXAMPLES_DIR) / "dicom" / "breast_case010.dcm").read_bytes())
    inputs = app.read_batch_inputs([str(archive), str(dicom)])
    assert [scan.name for scan in inputs.scans] == ["scans/scan.png", "IM0001"] and not inputs.unusable


def test_an_oversized_archive_member_is_left_out_with_its_reason_and_its_neighbours_are_read(tmp_path, monkeypatch):
    """A member over the decoder's file limit refused the whole archive; now it alone is left out and
    named, from the archive's directory, before anything is read."""
    import zipfile

    from inference import batch_files

    monkeypatch.setattr(batch_files, "MAX_BYTES", 2**20)
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(EXAMPLE_UPLOAD, "small.png")
        z.writestr("big.png", b"\0" * (2**20 + 1))
    inputs = app.read_batch_inputs([str(archive)])
    assert [scan.name for scan in inputs.scans] == ["study.zip/small.png"]
    assert inputs.unusable == ["big.png in study.zip is over 1 MB."]


def test_an_upload_gone_before_its_turn_is_an_error_in_its_row(handlers, examples, tmp_path, monkeypatch):
    """Scans are read when their chunk comes: one deleted meanwhile (the server's cleaner) failed the
    whole batch with "The analysis failed on this file" (code review)."""
    gone, kept = upload_copy(examples[0][0], tmp_path), upload_copy(examples[1][0], tmp_path / "kept")
    read_inputs = app.read_batch_inputs

    def then_deleted(paths):
        inputs = read_inputs(paths)
        Path(gone).unlink()
        return inputs

    monkeypatch.setattr(app, "read_batch_inputs", then_deleted)
    summary, table, gallery, csv_file = handlers.batch([gone, kept], progress=lambda *args, **kwargs: None)
    assert summary.startswith("**2 scans:**") and "1 could not be read" in summary and len(gallery) == 1
    assert any("can no longer be read (No such file or directory): upload it again." in str(cell)
               for row in table for cell in row)


def test_a_batch_says_what_it_passed_over_and_refuses_what_it_cannot_open(handlers, examples, tmp_path):
    """An archive of archives is not opened, and says so instead of "choose some scans"; a member
    damaged inside the archive is that scan's error row, the others go on; a password-protected
    archive is named as such."""
    import zipfile

    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as z:
        z.write(examples[0][0], "a.png")
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(nested, "w") as z:
        z.write(inner, "inner.zip")
    summary, *_ = handlers.batch([str(nested)], progress=lambda *args, **kwargs: None)
    assert summary == ("⚠️ No scans in the upload: 1 file that is not a scan (nested.zip/inner.zip); zip archives inside "
                       "an archive are not opened.")

    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(damaged, "w", zipfile.ZIP_STORED) as z:
        z.write(examples[0][0], "good.png")
        z.write(examples[1][0], "bad.png")
    data = bytearray(damaged.read_bytes())
    with zipfile.ZipFile(damaged) as z:
        bad = z.getinfo("bad.png")
    data[bad.header_offset + 30 + len("bad.png") + 100] ^= 0xFF  # one byte of bad.png's data: its CRC fails
    damaged.write_bytes(bytes(data))
    _, table, gallery, _ = handlers.batch([str(damaged)], progress=lambda *args, **kwargs: None)
    rows = {row[0]: row for row in table}
    assert rows["bad.png (damaged.zip)"][WARNINGS].startswith("error: This file is damaged inside its zip archive")
    assert rows["good.png (damaged.zip)"][1] in ("normal", "benign", "malignant") and len(gallery) == 1

    encrypted = tmp_path / "locked.zip"  # a zip whose directory marks its member encrypted (flag bit 0)
    with zipfile.ZipFile(encrypted, "w") as z:
        z.write(examples[0][0], "a.png")
    data = bytearray(encrypted.read_bytes())
    for header in (b"PK\x03\x04", b"PK\x01\x02"):  # local header: flags at +6; central directory: at +8
        start = data.find(header)
        data[start + (6 if header == b"PK\x03\x04" else 8)] |= 0x1
    encrypted.write_bytes(bytes(data))
    summary, *_ = handlers.batch([str(encrypted)], progress=lambda *args, **kwargs: None)
    assert summary == "⚠️ No scans in the upload. locked.zip is password-protected: unzip it and upload the scans themselves."


def test_an_archive_that_cannot_be_used_costs_its_own_scans_not_the_batch(handlers, examples, tmp_path):
    """A password-protected or damaged zip among other uploads refused the whole batch, and an empty
    one beside a scan went unmentioned (tester): each is named with its reason, the rest is analysed."""
    import zipfile

    locked = tmp_path / "locked.zip"
    with zipfile.ZipFile(locked, "w") as z:
        z.write(examples[0][0], "a.png")
    data = bytearray(locked.read_bytes())
    for header, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # flag bit 0: encrypted
        data[data.find(header) + flags_at] |= 0x1
    locked.write_bytes(bytes(data))
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK not really")
    summary, table, gallery, _ = handlers.batch([str(locked), str(examples[1][0]), str(empty), str(broken)],
                                                progress=lambda *args, **kwargs: None)
    assert summary.startswith("**1 scan:**") and [row[0] for row in table] == [examples[1][0].name] and len(gallery) == 1
    assert summary.endswith("⚠️ locked.zip is password-protected: unzip it and upload the scans themselves. "
                            "empty.zip holds no files. broken.zip is damaged or not a zip archive (an interrupted "
                            "download?): zip the scans again, or upload the scans themselves.")


def batch_table_and_peak_memory(handlers, upload):
    """The Batch tab's table for one upload, and the most memory Python held while making it."""
    import tracemalloc

    tracemalloc.start()
    try:
        _, table, _, _ = handlers.batch([str(upload)], progress=lambda *args, **kwargs: None)
        return table, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_two_archive_members_of_one_name_are_each_read(handlers, examples, tmp_path):
    """A zip may hold two entries of one name (appended twice): each row reads its own entry, not the
    last one twice."""
    import zipfile

    twice = tmp_path / "twice.zip"
    with zipfile.ZipFile(twice, "w") as z, pytest.warns(UserWarning, match="Duplicate name"):
        z.write(examples[0][0], "x.png")
        z.write(examples[1][0], "x.png")
    _, table, _, _ = handlers.batch([str(twice)], progress=lambda *args, **kwargs: None)
    single = [handlers.analyzer.analyze(path).predicted_class for path, _ in examples[:2]]
    assert [row[1] for row in table] == single and len(set(single)) == 2


def test_an_archive_member_whose_header_understates_its_size_is_not_inflated(handlers, tmp_path):
    """A zip bomb that lies: its headers say 1000 bytes, its data inflates to 400 MB. The listing's size
    check believes the header, so the read itself must stay bounded (it inflated it all at once)."""
    import struct
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = b"".join(packer.compress(bytes(2**24)) for _ in range(25)) + packer.flush()
    name, said, crc = b"bomb.png", 1000, zlib.crc32(bytes(1000))
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(packed), said, len(name), 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(packed), said, len(name),
                          0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(packed), 0)
    bomb = tmp_path / "liar.zip"
    bomb.write_bytes(local + packed + central + end)
    table, peak = batch_table_and_peak_memory(handlers, bomb)
    assert len(table) == 1 and table[0][WARNINGS].startswith("error: ")
    assert peak < 150 * 2**20, f"{peak / 2**20:.0f} MB"


def test_a_batch_reads_its_scans_a_chunk_at_a_time(handlers, tmp_path):
    """A small archive of large members (here 40 x 40 MB of zeros, 1.6 GB unpacked, 2 MB packed) is
    read a chunk at a time as it is analysed, not unpacked into memory at once (it took gigabytes)."""
    import zipfile

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        for index in range(40):
            z.writestr(f"f{index:02d}.png", bytes(40 * 2**20))
    table, peak = batch_table_and_peak_memory(handlers, bomb)
    assert len(table) == 40 and all(row[WARNINGS].startswith("error: ") for row in table)
    assert peak < (app.BATCH_CHUNK + 4) * 40 * 2**20, f"peak {peak / 2**20:.0f} MB: more than a chunk held at once"


def test_a_batch_whose_files_changed_stops_at_its_next_chunk(handlers, examples, tmp_path, monkeypatch):
    """Files removed while "Analyse all" runs: the rest of the old batch is not analysed (it kept both
    cores busy for results nobody would see) and nothing of it is shown."""
    files = [upload_copy(examples[index % len(examples)][0], tmp_path / f"{tmp_path.name}_{index}")
             for index in range(app.BATCH_CHUNK * 2 + 1)]
    forward_passes = []
    analyse = handlers.analyzer.analyze_batch
    monkeypatch.setattr(handlers.analyzer, "analyze_batch",
                        lambda scans, *args, **kwargs: forward_passes.append(len(scans)) or analyse(scans, *args, **kwargs))
    changed_after_first_chunk = lambda share, **kwargs: share > 0 and handlers.forget_batch()
    outputs = handlers.batch(files, progress=changed_after_first_chunk)
    assert all(u == gr.skip() for u in outputs) and forward_passes == [app.BATCH_CHUNK]


@pytest.fixture(scope="module")
def server():
    with AppServer() as running:
        yield running


def test_named_endpoints_through_gradio_client(server, examples, tmp_path):
    from gradio_client import handle_file

    client = server.client()
    assert {"/analyze", "/classify", "/segment", "/report"} <= set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    path = next(p for p, t in examples if t == "benign")
    label, class_cam, overlay, mask, report, seg_cam, notes = client.predict(handle_file(str(path)), api_name="/analyze")
    assert report["predicted_class"] == label["label"]
    assert abs(sum(c["confidence"] for c in label["confidences"]) - 1) < 1e-4
    assert Image.open(mask).format == "PNG" and Image.open(mask).size == Image.open(path).size
    assert Image.open(class_cam).size == Image.open(path).size

    classified, warnings = client.predict(handle_file(str(path)), api_name="/classify")
    assert classified["label"] == label["label"] and warnings == ""
    mask_path, seg_report = client.predict(handle_file(str(path)), 0.5, api_name="/segment")
    assert seg_report["threshold"] == 0.5 and Image.open(mask_path).format == "PNG"

    bad = tmp_path / "not-a-scan.png"
    bad.write_bytes(b"definitely not an image")
    with pytest.raises(Exception, match="not an image"):
        client.predict(handle_file(str(bad)), api_name="/analyze")
    with pytest.raises(Exception, match=r"^Send the scan as a file \(gradio_client.handle_file\(path\); .*\), not as a "
                                        r"path string.$"):  # a path string: the message alone, no pydantic report
        client.predict(str(path), api_name="/classify")
    with pytest.raises(Exception, match=r"not as a data: URI string \(MCP tools take those\).$"):
        client.predict("data:image/png;base64,iVBORw0KGgo=", api_name="/classify")
    again, _ = client.predict(handle_file(str(path)), api_name="/classify")
    assert again["label"] == label["label"], "the server keeps serving after a bad file"

    dicom_label, *_, dicom_report, _, _ = client.predict(handle_file(str(DICOM_EXAMPLE)), api_name="/analyze")
    assert dicom_report["lesion"]["lesion_area_mm2"] > 0 and dicom_report["n_frames"] == 1
    pdf = client.predict(handle_file(str(DICOM_EXAMPLE)), None, 0, api_name="/report")
    text = pdf_text(pdf)
    assert dicom_report["predicted_class"] in text and "not a medical device" in text
    from inference.report import percent

    assert all(percent(c["confidence"]) in text for c in dicom_label["confidences"]), "every probability printed"

    # Settings through the API: null means the default; anything else wrong is named.
    *_, default_report, _, _ = client.predict(handle_file(str(path)), "benign", None, None, None, api_name="/analyze")
    assert default_report["threshold"] == report["threshold"]
    *_, asked_report, _, _ = client.predict(handle_file(str(path)), "benign", None, None, None, True, api_name="/analyze")
    assert asked_report["lesion"] == default_report["lesion"], "a lesion the gate did not hide is drawn either way"
    for settings, message in ((("predicted class", "high", 0.5, 0), "threshold must be a number"),
                              (("sideways", None, 0.5, 0), "explain must be one of"),
                              (("predicted class", None, 0.5, 1.5), "frame must be a whole number"),
                              (("predicted class", None, 0.5, True), "frame must be a whole number"),
                              (("predicted class", None, 0.5, 2), "Frame 2 was asked for, but the file holds 1 frame"),
                              (("predicted class", None, 0.5, 0, "yes"), "show_hidden must be true or false")):
        with pytest.raises(Exception, match=message):
            client.predict(handle_file(str(path)), *settings, api_name="/analyze")


# What axe-core finds in Gradio 6.31's own components, which a plain Blocks app of the same components shows too:
# (rule, a fragment of the element's HTML). A multi-file box's add-more button holds the upload button.
GRADIO_OWN_VIOLATIONS = (("nested-interactive", 'aria-label="Upload more files"'),)


def accessibility_violations(page) -> list[str]:
    """The WCAG 2.1 A/AA and best-practice violations of moderate impact or more that axe-core finds on the page,
    less Gradio's own (`GRADIO_OWN_VIOLATIONS`): what this app's code, styles and theme answer for."""
    from axe_playwright_python.sync_playwright import Axe

    options = {"runOnly": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"], "resultTypes": ["violations"]}
    return [f"{violation['id']}: {node['html'][:120]}" for violation in Axe().run(page, options=options).response["violations"]
            if violation["impact"] != "minor" for node in violation["nodes"]
            if not any(rule == violation["id"] and fragment in node["html"] for rule, fragment in GRADIO_OWN_VIOLATIONS)]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (apt-get install chromium)")
def test_browser_clicks_an_example_and_sees_results(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(server.url, wait_until="domcontentloaded")
        # The image box says where a DICOM goes before one is dropped on it (the browser refuses it there).
        expect(page.locator("#scan")).to_contain_text("DICOM and other files: the box below.")
        # Screen readers name an example by its caption, not Gradio's "Thumbnail 1 of 10".
        expect(page.locator("#examples button.thumbnail-item").first).to_have_attribute("aria-label", "normal · BUSI")
        page.locator("#examples").get_by_text("malignant · BUSI", exact=True).click()
        probabilities = page.locator("#probabilities")
        expect(probabilities).to_contain_text("malignant", timeout=60_000)
        # Keyboard and screen reader: the chosen example moves the focus to the results (it stayed on
        # the thumbnail, off-screen), whose notes are announced when they change.
        notes = page.locator("#notes")
        assert page.evaluate("document.activeElement.id") == "notes" and notes.get_attribute("aria-live") == "polite"
        expect(page.locator("#class-cam img")).to_have_count(1, timeout=30_000)
        page.get_by_role("tab", name="Segment").click()
        expect(page.locator("#seg-overlay img")).to_have_count(1, timeout=30_000)
        # axe-core on the results (the JSON report's colours, the controls' titles, the selected tab and radio
        # option, the Examples heading's level measured under WCAG AA before; axe-core audit)
        assert accessibility_violations(page) == []
        page.get_by_role("tab", name="Classify").click()
        shot = tmp_path / "app.png"
        page.screenshot(path=str(shot), full_page=True)

        # The result images say what they show; the threshold moved by arrow keys redraws the lesion
        # (it changed only the PDF: the redraw listened to the pointer's release).
        assert "Grad-CAM" in page.locator("#class-cam img").get_attribute("alt")
        # One tab stop per download: Gradio's download button sits inside its link, and both took the focus.
        expect(page.locator("#class-cam a.download-link button")).to_have_attribute("tabindex", "-1")
        # Controls named by what they act on (three "Download" and two "Reset to default value" buttons).
        expect(page.locator("#class-cam a.download-link button")).to_have_attribute("aria-label", "Download Classifier Grad-CAM")
        expect(page.locator("#class-cam button.icon-button").first).to_have_attribute("aria-label", "Full screen: Classifier Grad-CAM")
        expect(page.locator("#opacity button.reset-button")).to_have_attribute("aria-label", "Reset Overlay opacity to its default")
        label_bottom = page.locator("#class-cam [data-testid=block-label]").evaluate("e => e.getBoundingClientRect().bottom")
        assert label_bottom <= page.locator("#class-cam img").evaluate("e => e.getBoundingClientRect().top") + 1, \
            "the label sits above the heat map, not over it"
        drawn = notes.inner_text()
        page.get_by_label("range slider for Mask threshold").focus()
        for _ in range(8):
            page.keyboard.press("ArrowRight")
        expect(notes).not_to_have_text(drawn, timeout=30_000)
        # A number typed beyond the range and confirmed by Enter: the box shows the value applied, at once
        # (it kept "2" beside a mask drawn at 0.95 until it lost focus).
        typed = page.get_by_label("number input for Mask threshold")
        typed.fill("2")
        page.keyboard.press("Enter")
        expect(typed).to_have_value("0.95")
        expect(typed).to_be_focused()
        typed.fill("0.5")  # back inside the range: the steps below move the slider
        page.keyboard.press("Enter")
        expect(typed).to_have_value("0.5")
        # Tabbing past the Explain class box closes its list (Gradio left a line of it over the heat map).
        page.locator("input[role=combobox]").first.focus()
        page.keyboard.press("Shift+Tab")
        page.keyboard.press("Tab")
        expect(page.get_by_role("listbox")).to_be_visible()
        page.keyboard.press("Tab")
        expect(page.get_by_role("listbox")).to_have_count(0)
        # The notes are announced, not the progress timer inside them.
        expect(notes.locator("[data-testid=status-tracker]")).to_have_attribute("aria-hidden", "true")

        # A big benign scan still being analysed when the malignant example is clicked: the example's
        # results stay, whichever analysis ends last; removing the picture removes its results.
        big = tmp_path / "big_benign.png"
        benign = Image.open(EXAMPLE_UPLOAD)
        benign.resize((3600, 3600 * benign.height // benign.width), Image.Resampling.BICUBIC).save(big)
        page.locator("#scan input[type=file]").set_input_files(str(big))
        page.wait_for_timeout(700)
        page.locator("#examples").get_by_text("malignant · BUSI", exact=True).click()
        top_class = page.locator("#probabilities [data-testid=label-output-value]")
        expect(top_class).to_have_text("malignant", timeout=60_000)
        page.wait_for_timeout(10_000)  # the big scan's analysis has ended by now
        expect(top_class).to_have_text("malignant")
        page.locator("#scan button[aria-label='Remove Image']").click()
        expect(top_class).to_have_count(0, timeout=30_000)
        # The focus goes to the emptied box's drop area (the box's redraw dropped it to the page's start).
        expect(page.locator("#scan").get_by_role("button", name="Drop a scan image here")).to_be_focused()
        # The big scan removed while still being analysed, another uploaded in its place: that one is
        # analysed too (Gradio dropped the chain's second analysis while its first ran: no results at all).
        page.locator("#scan input[type=file]").set_input_files(str(big))
        page.wait_for_timeout(1_000)
        page.locator("#scan button[aria-label='Remove Image']").click()
        page.locator("#scan input[type=file]").set_input_files(str(Path(app.EXAMPLES_DIR) / "busi_malignant_49.png"))
        expect(top_class).to_have_text("malignant", timeout=60_000)

        # A normal example whose marked region the gate hides: a hint; ticking the box draws it, with a note.
        page.locator("#examples").get_by_text("normal · BUSI", exact=True).click()
        expect(notes).to_contain_text("normal gate hides", timeout=60_000)
        page.locator("#show-hidden input[type=checkbox]").check()
        expect(notes).to_contain_text("Drawn on request", timeout=30_000)
        page.get_by_role("tab", name="Segment").click()
        expect(page.locator("#seg-overlay img")).to_have_count(1, timeout=30_000)
        page.screenshot(path=str(tmp_path / "hidden_shown.png"), full_page=True)
        page.locator("#show-hidden input[type=checkbox]").uncheck()
        expect(notes).not_to_contain_text("Drawn on request", timeout=30_000)
        page.get_by_role("tab", name="Classify").click()

        # Upload a scan (it is analysed at once), then click Analyse: the same file analysed again.
        page.locator("#scan input[type=file]").set_input_files(str(EXAMPLE_UPLOAD))
        expect(probabilities).to_contain_text("benign", timeout=60_000)
        expect(page.locator("#examples .thumbnail-item.selected")).to_have_count(0)  # the normal example is not shown
        page.get_by_role("button", name="Analyse").click()
        page.wait_for_timeout(3_000)
        expect(probabilities).to_contain_text("benign", timeout=60_000)
        expect(page.get_by_text("Error", exact=True)).to_have_count(0)

        # Another class explained, chosen by keyboard: the map follows and the focus stays on the box.
        explain = page.get_by_label("Explain class")
        explain.focus()
        page.keyboard.press("ArrowDown")
        page.keyboard.press("Enter")
        expect(notes).to_contain_text("evidence for normal", timeout=30_000)
        assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Explain class"
        expect(explain).to_have_attribute("aria-expanded", "false")
        page.keyboard.press("ArrowUp")
        page.keyboard.press("Enter")
        expect(notes).not_to_contain_text("evidence for normal", timeout=30_000)

        # A file that is not an image: a readable message, no stack trace, the previous results gone,
        # and the page keeps working.
        bad = tmp_path / "notes.png"
        bad.write_bytes(b"this is a text file, not a scan")
        page.locator("#scan input[type=file]").set_input_files(str(bad))
        expect(notes).to_contain_text("not an image this app can read", timeout=30_000)
        expect(page.get_by_text("Error", exact=True)).to_have_count(0)  # no red badge on every result box
        expect(probabilities).not_to_contain_text("benign", timeout=10_000)
        assert "Traceback" not in page.content()
        page.screenshot(path=str(tmp_path / "error.png"), full_page=True)
        # ... and moving a slider then brings back nothing of the previous scan.
        opacity = page.locator("#opacity input[type=number]")
        opacity.fill("0.8")
        opacity.press("Tab")  # the slider's release: a re-render from the stored result, which is gone
        page.wait_for_timeout(2_000)
        expect(probabilities).not_to_contain_text("benign")

        # A DICOM through the file box: analysed, shown, sizes in mm; then its PDF report downloaded.
        page.locator("#scan-file input[type=file]").set_input_files(str(DICOM_EXAMPLE))
        expect(probabilities).to_contain_text("malignant", timeout=60_000)
        expect(page.locator("#scan img")).to_have_count(1, timeout=30_000)
        page.get_by_role("tab", name="Segment").click()
        expect(page.get_by_text("lesion_area_mm2").first).to_be_visible(timeout=30_000)
        page.get_by_role("button", name="PDF report").click()
        link = page.locator("#pdf a").first
        expect(link).to_be_visible(timeout=30_000)
        # Named for a screen reader by what it downloads, not only by its size ("281.0 KB ⇣").
        expect(link).to_have_attribute("aria-label", re.compile(r"^Download .+-breast-ultrasound-report\.pdf, \d"))
        with page.expect_download() as download:
            link.click()
        report = tmp_path / "report.pdf"
        download.value.save_as(report)
        assert "malignant" in pdf_text(report) and "not a medical device" in pdf_text(report)
        # A setting moved after the PDF was made: that PDF no longer shows the screen, so it goes.
        page.get_by_label("range slider for Mask threshold").press("ArrowRight")
        expect(page.locator("#pdf")).to_be_hidden(timeout=30_000)

        # A radio group answers to the arrow keys: from "filled", ArrowRight chooses "outline" and keeps the focus
        # there (Gradio names each option's input apart, so the browser's own arrow keys did nothing).
        options = page.locator("#style input[type=radio]")
        options.first.focus()
        page.keyboard.press("ArrowRight")
        expect(options.nth(1)).to_be_checked()
        expect(options.nth(1)).to_be_focused()
        page.keyboard.press("ArrowLeft")
        expect(options.first).to_be_checked()

        # The tab bar answers to the arrow keys: from Scan, ArrowRight reaches Batch and opens it.
        page.get_by_role("tab", name="Scan", exact=True).focus()
        page.keyboard.press("ArrowRight")
        expect(page.get_by_role("tab", name="Batch")).to_have_attribute("aria-selected", "true")
        assert page.evaluate("document.activeElement.innerText").strip() == "Batch"
        # A batch of three files: a row each, sortable table, outlines, CSV.
        page.get_by_role("tab", name="Batch").click()
        page.locator("#batch-files input[type=file]").set_input_files(
            [str(EXAMPLE_UPLOAD), str(DICOM_EXAMPLE), str(bad)])
        page.get_by_role("button", name="Analyse all").click()
        table = page.locator("#batch-table")
        expect(table).to_contain_text("breast_case010.dcm", timeout=60_000)
        expect(table).to_contain_text("error: ")
        expect(table).to_contain_text("P(malignant)"), "headers in words, not the CSV's column names"
        expect(page.locator("#batch-summary")).to_contain_text("3 scans:")
        expect(page.locator("#batch-summary")).to_contain_text("1 could not be read")
        expect(page.locator("#batch-gallery img")).to_have_count(2, timeout=30_000)
        expect(page.locator("#batch-csv a").first).to_be_visible()
        # the pictures named by their captions, the CSV's link by its file and size (axe-core audit)
        expect(page.locator("#batch-gallery button.thumbnail-item").first).not_to_have_attribute(
            "aria-label", re.compile("^Thumbnail"))
        assert accessibility_violations(page) == []
        # The add-more button is named in words, not by Gradio's untranslated key "common.upload".
        expect(page.locator("#batch-files button[aria-label='Upload more files']")).to_have_count(1)
        assert "common." not in page.locator("#batch-files").inner_html()
        page.screenshot(path=str(tmp_path / "batch.png"), full_page=True)
        page.locator("#batch-files button[aria-label='Clear']").click()  # the files go: so do their results
        expect(page.locator("#batch-summary")).not_to_contain_text("3 scans:", timeout=10_000)
        expect(page.locator("#batch-gallery img")).to_have_count(0)
        expect(page.locator("#batch-csv a")).to_have_count(0)
        expect(table).not_to_contain_text("breast_case010.dcm")
        page.get_by_role("tab", name="About").click()
        expect(page.locator("#about")).to_contain_text("Models", timeout=30_000)
        page.locator("#about summary").first.click()
        expect(page.locator("h1")).to_have_count(1), "the model cards' titles nest under the page's"
        page.get_by_role("tab", name="Scan").click()

        # A phone: every tab in view (none behind a "more" menu), example captions whole.
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.goto(server.url, wait_until="domcontentloaded")
        expect(phone.get_by_role("tab")).to_have_count(5, timeout=30_000)
        for name in ("Scan", "Batch", "About", "Classify", "Segment"):
            expect(phone.get_by_role("tab", name=name)).to_be_visible()
        for more in phone.get_by_label("More tabs").all():
            expect(more).to_be_hidden()
        captions = phone.locator("#examples .caption-label")
        # The examples lie two screens down on a phone: the page's first lines link to them.
        phone.get_by_role("link", name="Try an example").click()
        expect(captions.first).to_be_in_viewport(timeout=30_000)
        rights = phone.locator("#examples img").evaluate_all("es => es.map(e => e.getBoundingClientRect().right)")
        assert len(rights) == len(app.EXAMPLE_FILES) and max(rights) <= 390, "every example within the screen"
        assert captions.evaluate_all("cs => cs.every(c => c.scrollWidth <= c.clientWidth + 1)"), "a caption is cut"
        # Each caption sits under its picture (wrapped over it, it hid half the scan), and the gallery's
        # box holds every example (a box sized for overlaid captions cut off the last row).
        assert phone.locator("#examples .thumbnail-item").evaluate_all("""items => items.every(item => {
            const picture = item.querySelector('img').getBoundingClientRect();
            return item.querySelector('.caption-label').getBoundingClientRect().top >= picture.bottom - 1; })"""
                                                                       ), "a caption covers its picture"
        gallery_bottom = phone.locator("#examples .grid-wrap").evaluate("e => e.getBoundingClientRect().bottom")
        assert max(phone.locator("#examples .thumbnail-item").evaluate_all(
            "items => items.map(item => item.getBoundingClientRect().bottom)")) <= gallery_bottom + 1, "an example is cut off"
        phone.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
        phone.evaluate("document.body.classList.add('dark')")  # dark mode from here on, as Gradio switches to it
        # An upload on a phone brings the results (a screen below the scan box) into view, and the focus
        # there too: the box's redraw dropped it from the drop area to the page's start (a keyboard user
        # then had to Tab through the whole page again).
        with phone.expect_file_chooser() as chooser:
            phone.locator("#scan").get_by_role("button", name="Drop a scan image here").click()
        chooser.value.set_files(str(EXAMPLE_UPLOAD))
        expect(phone.locator("#probabilities")).to_contain_text("benign", timeout=60_000)
        expect(phone.locator("#notes")).to_be_in_viewport(timeout=10_000)
        expect(phone.locator("#notes")).to_be_focused()
        # ... and so does an example chosen after a PDF was made: the PDF box above the results, hidden
        # after the scroll had begun, pulled them up past the top of the screen.
        phone.get_by_role("button", name="PDF report").click()
        expect(phone.locator("#pdf a").first).to_be_visible(timeout=30_000)
        # dark mode's links, selected tab, download link and hovered button measured under WCAG AA (axe-core)
        phone.get_by_role("tab", name="Segment").click()
        assert phone.evaluate("document.body.classList.contains('dark')") and accessibility_violations(phone) == []
        phone.get_by_role("tab", name="Classify").click()
        phone.locator("#examples").get_by_text("normal · BUSI", exact=True).click()
        expect(phone.locator("#notes")).to_contain_text("normal gate hides", timeout=60_000)
        phone.wait_for_timeout(1_500)  # the smooth scroll has ended
        assert phone.locator("#notes").evaluate("e => e.getBoundingClientRect().top") >= -1, "the notes' top is cut off"
        # A batch on a phone: the class column shows beside the file column, which stays put while the
        # table scrolls sideways (Gradio's pinned_columns did neither; the file took up to 80 % of the width).
        phone.get_by_role("tab", name="Batch").click()
        phone.locator("#batch-files input[type=file]").set_input_files([str(EXAMPLE_UPLOAD), str(DICOM_EXAMPLE)])
        # a file's name wraps whole, with no gap before its suffix (the space between Gradio's spans showed: "bad .png")
        expect(phone.locator("#batch-files .filename .ext")).to_have_count(2, timeout=30_000)
        assert phone.locator("#batch-files .filename").evaluate_all("""cells => cells.every(cell => {
            const stem = cell.querySelector('.stem').getClientRects(), last = stem[stem.length - 1];
            const ext = cell.querySelector('.ext').getClientRects()[0];
            return Math.abs(last.top - ext.top) > 1 || ext.left - last.right < 1; })"""), "a gap before a suffix"
        phone.get_by_role("button", name="Analyse all").click()
        phone_table = phone.locator("#batch-table")
        expect(phone_table).to_contain_text("breast_case010.dcm", timeout=60_000)
        edges = "() => [...document.querySelectorAll('#batch-table .header-cell')].slice(0, 2).map(c => { " \
                "const r = c.getBoundingClientRect(); return [r.left, r.right]; })"
        viewport = phone.locator("#batch-table .virtual-table-viewport")
        table_right = viewport.evaluate("e => e.getBoundingClientRect().right")
        (file_left, _), (_, class_right) = phone.evaluate(edges)
        assert class_right <= table_right + 1, "the class column is cut off on a phone"
        viewport.evaluate("e => { e.scrollLeft = 250; }")
        phone.wait_for_timeout(500)
        assert abs(phone.evaluate(edges)[0][0] - file_left) <= 1, "the file column scrolled away"
        assert accessibility_violations(phone) == []
        browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("SAVE_SCREENSHOT"):
        shutil.copy(shot, os.environ["SAVE_SCREENSHOT"])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_temp_folder_goes_when_the_server_is_stopped(tmp_path, signum):
    """The app's own temporary folder (uploads, rendered results) is removed on kill and Ctrl-C."""
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}
    port = free_port()
    env.update(TMPDIR=str(tmp_path), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port))
    process = subprocess.Popen([sys.executable, "app.py"], cwd=Path(app.__file__).parent, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and process.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        assert list(tmp_path.glob("busi-demo-*")), "the app made its temporary folder"
        process.send_signal(signum)
        process.wait(timeout=60)
    finally:
        process.kill()
    assert not list(tmp_path.glob("busi-demo-*")), "the temporary folder outlived the server"


@pytest.mark.parametrize("threshold, opacity", [(float("nan"), 0.5), (0.5, float("nan")), ("high", 0.5), ("0.5", 0.5), (1.5, 0.5),
                                                (0.5, -0.1), (0.0, 0.5), (0.99, 0.5), (True, 0.5), (0.5, True)])
def test_bad_numbers_are_readable_errors(handlers, examples, threshold, opacity):
    """Out of range (for the threshold: the slider's range; at 0 the whole scan was drawn as a
    lesion), not a number (text too, even a number's), or true/false (which Python takes for 1 and 0)."""
    with pytest.raises(gr.Error, match="must be a number from"):
        handlers.analyze(str(examples[0][0]), "predicted class", threshold, opacity)
    if threshold != 0.5:
        with pytest.raises(gr.Error, match=r"threshold must be a number from 0.05 to 0.95"):
            handlers.segment(str(examples[0][0]), threshold)


@pytest.mark.parametrize("number", [float("inf"), float("-inf"), float("nan"), -1, 0.5,
                                    pytest.param(10 ** 400, id="10**400")])
def test_a_frame_or_view_that_is_no_whole_number_is_a_readable_error(handlers, examples, number):
    """Infinity too (raw HTTP's JSON can carry 1e400), and an integer too large for a float (JSON's
    1 followed by 400 zeros): each raised Python's OverflowError, whose text Gradio showed."""
    with pytest.raises(gr.Error, match="frame must be a whole number from 0"):
        handlers.analyze(str(examples[0][0]), "predicted class", None, 0.5, number)
    with pytest.raises(gr.Error, match="view must be a whole number from 0"):
        handlers.segment(str(examples[0][0]), None, number)


def test_a_failure_of_the_servers_own_is_a_readable_error_not_its_text(handlers, examples, tmp_path, monkeypatch):
    """Drawing and writing results ran outside the readable errors: a failed write (a full disk) reached
    the user as the OSError's own text, naming the server's folders (Gradio shows any exception's text)."""
    upload = upload_copy(examples[0][0], tmp_path)
    state, *_ = handlers.analyze_and_store(upload)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", "/tmp/busi-demo-x/results")

    for name in ("write_image", "write_file"):
        monkeypatch.setattr(app, name, full_disk)
    for call in (lambda: handlers.render(state, "predicted class", 0.5, 0.45), lambda: handlers.pdf(state),
                 lambda: handlers.segment(upload), lambda: handlers.analyze(upload), lambda: handlers.report(upload),
                 lambda: handlers.batch([upload]), lambda: handlers.show_analysed(state, upload, "other.dcm")):
        with pytest.raises(gr.Error) as raised:
            call()
        assert raised.value.message == app.SERVER_FAILED
    *_, ticket = handlers.forget()
    *_, notes, _, _ = handlers.analyze_chosen(upload, None, ticket)
    assert notes == f"⚠️ {app.SERVER_FAILED}", "in the notes, where results would be"


def test_every_writer_prunes_old_results(handlers, examples, tmp_path):
    """Only the screen's renders pruned the results folder: batches, PDFs and /segment calls alone filled
    it until the server stopped."""
    old = app.RESULTS_DIR / "old.jpg"
    for call in (lambda: handlers.segment(upload_copy(examples[0][0], tmp_path)),
                 lambda: handlers.batch([upload_copy(examples[0][0], tmp_path)])):
        app.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        old.write_bytes(b"an old result")
        os.utime(old, (0, 0))
        handlers._pruned_at = -math.inf  # a minute has passed since the last pruning
        call()
        assert not old.exists()


def test_a_result_on_screen_stays_downloadable_while_its_analysis_can_be_re_rendered(analyzer, handlers):
    """Results went 10 minutes after they were handed out, the stored analysis after 30: a page idle for a
    quarter of an hour still re-rendered, but its download links answered 404."""
    demo = app.build_demo(analyzer)
    stored_for_s = next(block.time_to_live for block in demo.blocks.values() if isinstance(block, gr.State))
    shown = app.RESULTS_DIR / "shown.jpg"
    app.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    shown.write_bytes(b"a result on screen")
    handed_out_at = time.time() - (stored_for_s - 60)  # a minute before its analysis goes
    os.utime(shown, (handed_out_at, handed_out_at))
    handlers._pruned_at = -math.inf
    handlers.results()
    assert shown.exists()
    shown.unlink()


def test_a_closed_pages_stored_analysis_goes_at_once(analyzer):
    """Gradio keeps a closed page's gr.State an hour, whatever its time to live: the scan and its maps."""
    demo = app.build_demo(analyzer)
    deleted = []
    demo.state_holder = types.SimpleNamespace(delete_state=deleted.append)
    unload = next(fn for fn in demo.fns.values() if any(target[1] == "unload" for target in fn.targets))
    unload.fn(types.SimpleNamespace(session_hash="closed-page"))
    assert deleted == ["closed-page"]


def test_the_api_threshold_is_the_sliders(handlers):
    """One range for the slider, the API's checks and the tools' descriptions."""
    low, high = app.THRESHOLD_RANGE
    for api in (handlers.analyze, handlers.report, handlers.segment):
        assert f"probability threshold, {low} to {high}" in " ".join(api.__doc__.split())


def test_reports_round_probabilities(handlers, examples):
    *_, report, _, _ = handlers.analyze(str(examples[0][0]))
    assert all(len(repr(p).split(".")[-1]) <= 4 for p in report["probabilities"].values())


def test_mcp_tools_answer_with_content_and_readable_errors():
    """Through a real MCP client: the tools describe themselves, /analyze returns its results (a
    gr.State among the outputs used to empty them), and a bad scan says what was wrong."""
    import asyncio
    import base64

    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    scan = base64.b64encode((Path(app.EXAMPLES_DIR) / "busi_malignant_49.png").read_bytes()).decode()
    normal = base64.b64encode((Path(app.EXAMPLES_DIR) / "busi_normal_102.png").read_bytes()).decode()
    not_a_scan = base64.b64encode(b"definitely not an image").decode()
    scan_url_safe = base64.urlsafe_b64encode((Path(app.EXAMPLES_DIR) / "busi_malignant_49.png").read_bytes()).decode().rstrip("=")
    assert scan_url_safe != scan.rstrip("="), "the scan's base64 holds + or /, so the URL-safe form differs"

    async def session_calls(url):
        async with streamablehttp_client(url + "gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = {tool.name: tool for tool in (await session.list_tools()).tools}
                good = await session.call_tool("analyze", {"path": "data:image/png;base64," + scan})
                bad = await session.call_tool("classify", {"path": "data:image/png;base64," + not_a_scan})
                not_base64 = await session.call_tool("classify", {"path": "data:image/png;base64,abcdefghi"})
                url_safe = await session.call_tool("classify", {"path": "data:image/png;base64," + scan_url_safe})
                # a path on the client's machine, and the server's own file URL (as an upload tool gives one)
                local_path = await session.call_tool("classify", {"path": "/home/me/scan.png"})
                own_url = await session.call_tool("classify", {"path": url + "gradio_api/file=/tmp/scan.png"})
                unresolved = await session.call_tool("classify", {"path": "https://scans.invalid/scan.png"})
                # null for a numeric setting is "the default", as for gradio_client (the schema refused it)
                defaults = await session.call_tool("analyze", {"path": "data:image/png;base64," + normal, "threshold": None,
                                                               "opacity": None, "frame": None, "view": None})
                return tools, good, bad, not_base64, defaults, local_path, own_url, url_safe, unresolved

    with AppServer(extra_env={"GRADIO_MCP_SERVER": "True"}) as server:
        (tools, good, bad, not_base64, defaults, local_path, own_url, url_safe,
         unresolved) = asyncio.run(session_calls(server.url))
    assert {"analyze", "classify", "segment", "report"} <= set(tools), "MCP tools are named as the endpoints"
    assert all("not a medical device" in tools[name].description for name in ("analyze", "classify", "segment", "report"))
    assert all("data: URI" in tools[name].description and "upload_file_to_gradio" not in tools[name].description
               for name in ("analyze", "classify", "segment", "report")), "no tool this server lacks"
    assert "0.05 to 0.95" in str(tools["segment"].inputSchema["properties"]["threshold"])
    assert all("data: URI" in str(tools[name].inputSchema["properties"]["path"]) for name in ("analyze", "report")), \
        "the schema says how to send a scan"
    assert not good.isError
    # One content item per output, as JSON a client can parse, and the images as image content (Gradio
    # sent one text block, the Python printout of the whole tuple, with the images as server paths)
    texts = [item.text for item in good.content if item.type == "text"]
    assert json.loads(texts[0])["label"] == "malignant"
    assert json.loads(next(t for t in texts if '"predicted_class"' in t))["predicted_class"] == "malignant"
    assert sum(item.type == "image" for item in good.content) >= 3, "Grad-CAM, lesion overlay and mask as images"
    assert bad.isError and "not an image" in " ".join(c.text for c in bad.content)
    # Python's base64 error ("number of data characters (9) cannot be 1 more than a multiple of 4") said nothing useful
    assert not_base64.isError and " ".join(c.text for c in not_base64.content) == app.BAD_DATA_URI
    # URL-safe base64 (base64url, unpadded) was read as damaged bytes: "damaged or truncated"
    assert not url_safe.isError and json.loads(url_safe.content[0].text)["label"] == "malignant", url_safe.content
    # Gradio's words were "Invalid file data format, provide a url" and "Hostname 127.0.0.1 failed validation"
    assert local_path.isError and " ".join(c.text for c in local_path.content) == app.NOT_A_URL
    assert own_url.isError and " ".join(c.text for c in own_url.content) == app.PRIVATE_URL
    # a host that does not resolve (.invalid never does; nor does any, offline): Gradio's "Unable to resolve hostname"
    assert unresolved.isError and " ".join(c.text for c in unresolved.content) == app.UNRESOLVED_URL.format(
        reason="unable to resolve hostname scans.invalid")
    assert not defaults.isError, defaults.content
    texts = [item.text for item in defaults.content if item.type == "text"]
    report = json.loads(next(t for t in texts if '"predicted_class"' in t))
    validated = json.loads((Path(app.HERE) / "models" / "segmenter" / "config.json").read_text())["threshold"]
    assert report["threshold"] == validated and report["frame"] == 0 and report["n_views"] == 1
    assert "null" in texts and "None" not in texts, "no lesion drawn on the normal scan: no Seg-Grad-CAM, as JSON null"


def test_the_threshold_hint_says_which_peak_a_lesion_must_reach(analyzer):
    """The slider moves the outline; with a peak threshold in the config, its hint says a lesion is
    drawn only where the map reaches it (else a user lowering the slider expects fainter lesions)."""
    config = analyzer.segmenter.config
    hint = app.threshold_info(config)
    assert hint.startswith(f"Validated default {config['threshold']:.2f}")
    assert (f"reaches {config['peak_threshold']:.2f}" in hint) == (config.get("peak_threshold") is not None)
    assert app.threshold_info({"threshold": 0.5}) == "Validated default 0.50"
