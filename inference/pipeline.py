"""Analysis of scans: decode -> preprocess -> classifier and segmenter -> results at each scan's own
size, for one scan (`Analyzer.analyze`, the app) or a batch (`Analyzer.analyze_batch`, the batch
command and the Ray engine). Both go through the same steps — `prepare` (framing, model inputs), one
forward pass of each model over the whole batch, `_finish` (probabilities, mask, normal gate,
out-of-distribution refusal) — so a batch gives the same results as its scans one at a time.

`Analyzer` loads both models once per process and warms them up, so the first request does not pay
for graph tracing. `Analysis` holds everything needed to re-render (other class to explain, other
mask threshold, other opacity) without running a model again.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf
from scipy.special import expit, softmax

from explain.gradcam import ClassifierGradCAM, SegGradCAM
from explain.overlay import DEFAULT_OPACITY, heatmap_overlay, mask_overlay
from inference.decode import NOT_DICOM, DecodedScan, ScanError, colour_screening, decode
from inference import ood, orientation, shared_encoder
from inference.models import LoadedModel, ModelSourceError, load_configured
from inference.no_answer import NoAnswer
from inference.postprocess import hidden_by_normal_gate, lesion_mask, lesion_stats, postprocessing
from inference.preprocess import Framing, resize, resolution_screening, to_model_input, views_notes, views_warnings

log = logging.getLogger(__name__)

SCAN_FAILED = "The analysis failed on this scan (an internal error, logged). Try another scan."
SUPPRESSED_NOTE = ("No lesion is drawn: the classifier rates this scan normal at {p_normal:.0%}, at or above the "
                   "{gate:.0%} from which a rule chosen on held-out validation scans hides the segmenter's finding "
                   "(it removes most false alarms on normal scans).")
# The notes below describe the mask at the validated threshold, so they say so: the app re-draws at any
# threshold, and "the segmenter drew no lesion" beside a lesion drawn at 0.05 contradicted itself.
DISAGREEMENT_NOTE = ("The segmenter found a lesion at the validated threshold ({threshold:.2f}); the classifier "
                     "leans towards normal, but not confidently enough to hide it: weigh both.")
NO_LESION_NOTE = ("No lesion predicted at the validated threshold ({threshold:.2f}): at that threshold Seg-Grad-CAM "
                  "has no region to explain.")
UNDRAWN_FINDING_NOTE = ("The classifier rates this scan {label} at {p:.0%}, but at the validated threshold "
                        "({threshold:.2f}) the segmenter drew no lesion (so Seg-Grad-CAM has no region to explain "
                        "there): the two models disagree; weigh both.")
HIDDEN_SHOWN_NOTE = ("Drawn on request: the classifier rates this scan normal at {p_normal:.0%}, and the rule chosen "
                     "on held-out validation scans would hide what the segmenter marked; weigh both.")
# Notes on the settings a view of an analysis was made with (`Analysis.notes_at`).
EXPLAINED_OTHER_NOTE = ("The classifier's Grad-CAM shows the evidence for {explained} (chosen under Explain class), "
                        "not for the predicted {predicted}.")
THRESHOLD_HIDES_NOTE = "No lesion is drawn at threshold {threshold:.2f}; the validated threshold is {validated:.2f}."
SPARED_NOTE = ("The classifier rates this scan normal at {p_normal:.0%}, but the segmenter is sure of the lesion it "
               "found (peak probability {peak:.0%}, at or above the {spares:.0%} from which a rule chosen on the "
               "held-out validation scans keeps such a lesion drawn): the lesion is drawn; weigh both.")


# Masks and Seg-Grad-CAM maps kept per threshold: an analysis lives in a session for half an hour, and each
# threshold typed into the slider's box added a full-size mask (40 typed on a 16-megapixel scan: 610 MiB).
KEPT_THRESHOLDS = 4


# An analysis is shared by its session's events, which Gradio may run at once (a re-render and a PDF): an
# entry added while another thread walked the cache to forget its oldest raised "dictionary changed size
# during iteration" (review). Every cache entry goes in under this lock; reading one needs none.
_CACHE_LOCK = threading.Lock()


def _remember(kept: dict, key, value) -> None:
    """`kept[key] = value`, forgetting the oldest entries beyond KEPT_THRESHOLDS."""
    with _CACHE_LOCK:
        kept[key] = value
        while len(kept) > KEPT_THRESHOLDS:
            kept.pop(next(iter(kept)), None)


@dataclass
class Analysis:
    gray: np.ndarray                  # (H, W) uint8 scan as analysed
    warnings: list[str]
    classes: list[str]
    probabilities: np.ndarray         # (n_classes,), calibrated, sums to 1
    class_cams: np.ndarray | None     # (n_classes, h, w) Grad-CAM per class, 0..1, over the classifier's input;
                                      # None when analysed without them (`analyze_batch` unless asked)
    class_framing: Framing            # how the scan became the classifier's input (maps go back through it)
    seg_framing: Framing
    lesion_probs: np.ndarray          # (H, W) float32 segmenter probability at the scan's size
    threshold: float                  # the segmenter's validated threshold
    min_area_fraction: float
    largest_only: bool
    peak_threshold: float | None      # a lesion is drawn only if its peak reaches this (None: any that passes threshold)
    # region (S, S) bool over the segmenter's input -> its Seg-Grad-CAM (h, w) over that input
    # (a gradient pass through the segmenter's head)
    explain_region: Callable[[np.ndarray], np.ndarray] | None = None
    notes: list[str] = field(default_factory=list)
    suppressed_as_normal: bool = False  # the segmenter drew a lesion, the classifier calls the scan normal and
                                        # the validated rule hides the drawing
    feature_distance: float | None = None  # the out-of-distribution score (None: the classifier has no check)
    feature_limit: float | None = None     # the check's threshold: a scan refused for another reason (blank,
                                           # inverted) can lie within it
    no_answer: NoAnswer | None = None      # why the scan gets no diagnosis-like output (its warning says it whole)
    mm_per_pixel: tuple[float, float] | None = None  # (x, y) from the file's calibration: sizes in mm
    mm_unavailable_reason: str | None = NOT_DICOM    # why there are no sizes in mm
    frame: int = 0                                   # which frame of a multi-frame file was analysed
    n_frames: int = 1
    analysed_at: datetime = field(default_factory=lambda: datetime.now(UTC))  # printed on the PDF
    _seg_maps: dict = field(default_factory=dict, repr=False)  # threshold -> Seg-Grad-CAM, computed once each
    _masks: dict = field(default_factory=dict, repr=False)     # threshold -> post-processed mask
    _displays: dict = field(default_factory=dict, repr=False)  # longest side -> smaller copy for drawing
    _hidden_shown: Analysis | None = field(default=None, repr=False)  # `with_hidden_finding_shown`, made once
    _full_size: Analysis | None = field(default=None, repr=False)     # a display copy's full-size analysis

    @property
    def withheld(self) -> bool:
        """Whether the scan gets no diagnosis-like output (`no_answer` says why)."""
        return self.no_answer is not None

    @property
    def predicted_class(self) -> str:
        return self.classes[int(np.argmax(self.probabilities))]

    def probability_dict(self) -> dict[str, float]:
        return {c: float(p) for c, p in zip(self.classes, self.probabilities)}

    def mask(self, threshold: float | None = None) -> np.ndarray:
        """The post-processed lesion mask (H, W) bool at `threshold` (default: the validated one)."""
        if self.suppressed_as_normal or self.withheld:
            return np.zeros(self.gray.shape, dtype=bool)
        return self.segmenter_mask(threshold)

    def segmenter_mask(self, threshold: float | None = None) -> np.ndarray:
        """The segmenter's own mask, before the classifier's verdict is taken into account. One
        rendering asks for the same mask several times (overlay, PNG, statistics, Seg-Grad-CAM):
        it is post-processed once per threshold and kept (read-only; those of the last KEPT_THRESHOLDS).
        A display copy shrinks the full-size mask rather than post-processing its own smoothed
        probabilities, whose peak can fall under the peak threshold: the drawing would then lose a
        lesion the statistics report."""
        key = self.threshold if threshold is None else float(threshold)
        mask = self._masks.get(key)
        if mask is None:
            if self._full_size is not None:
                mask = resize(self._full_size.segmenter_mask(key).astype(np.float32), *self.gray.shape) >= 0.5
            else:
                mask = lesion_mask(self.lesion_probs, key, self.min_area_fraction, self.largest_only, self.peak_threshold)
            mask.flags.writeable = False
            _remember(self._masks, key, mask)
        return mask

    def lesion_stats(self, threshold: float | None = None) -> dict:
        """The drawn lesion's statistics; its share is of the ultrasound field the segmenter read (of
        two views side by side, the one analysed; without side panels and black borders), not of the
        whole image, where a second view halved it."""
        top, bottom, left, right = self.seg_framing.box
        return lesion_stats(self.mask(threshold), self.mm_per_pixel, self.mm_unavailable_reason,
                            field_px=(bottom - top) * (right - left))

    def notes_at(self, threshold: float | None = None, explain: str | None = None) -> list[str]:
        """The notes for this analysis shown at `threshold` with `explain`'s Grad-CAM: its own (which
        describe the validated threshold), then what those settings add: a map of another class than the
        one predicted, and no lesion at this threshold where the validated one draws one. The screen, the
        JSON report and the PDF give the same notes (the last two lacked the added ones; tester)."""
        notes = list(self.notes)
        if self.withheld:
            return notes
        threshold = None if threshold is None else float(threshold)
        if explain not in (None, self.predicted_class):
            notes.append(EXPLAINED_OTHER_NOTE.format(explained=explain, predicted=self.predicted_class))
        if (threshold is not None and threshold != self.threshold and not self.mask(threshold).any()
                and self.mask().any()):
            notes.append(THRESHOLD_HIDES_NOTE.format(threshold=threshold, validated=self.threshold))
        return notes

    def class_map(self, class_name: str | None = None) -> np.ndarray:
        """One class's Grad-CAM (default: the predicted class's) at the scan's size, 0..1."""
        if self.class_cams is None:
            raise ValueError("this scan was analysed without maps (analyze_batch(..., maps=True) gives them)")
        return self.class_framing.to_scan(self.class_cams[self.classes.index(class_name or self.predicted_class)])

    def seg_map(self, threshold: float | None = None) -> np.ndarray | None:
        """Seg-Grad-CAM of the lesion mask shown at `threshold` (default: the validated one) at the
        scan's size; None when no lesion is shown (none found, called normal, or not a scan). Its
        target is exactly the displayed mask, so a new threshold gets its own map: computed on first
        use, then kept for re-rendering (the last KEPT_THRESHOLDS)."""
        if self.explain_region is None or not self.mask(threshold).any():
            return None
        return self.seg_framing.to_scan(self._input_seg_map(self.threshold if threshold is None else float(threshold)))

    def _input_seg_map(self, threshold: float) -> np.ndarray:
        """Seg-Grad-CAM of the mask at `threshold` over the segmenter's input, computed once. A display copy
        asks its full-size analysis: the screen's copy and the PDF's (two sizes) then cost one gradient pass,
        not one each, and the map explains the mask the statistics measure."""
        if self._full_size is not None:
            return self._full_size._input_seg_map(threshold)
        seg_map = self._seg_maps.get(threshold)
        if seg_map is None:
            seg_map = self.explain_region(self.seg_framing.to_input(self.mask(threshold).astype(np.float32)) >= 0.5)
            _remember(self._seg_maps, threshold, seg_map)
        return seg_map

    def for_display(self, longest_side: int) -> Analysis:
        """This analysis on a copy of the scan no longer than `longest_side` on either side (itself
        if already so), for drawing overlays: a 4000 px scan's overlays cost seconds at full size and
        are shown a few hundred pixels wide. Kept, so re-rendering reuses it. Measurements and the
        mask file come from the full-size analysis."""
        height, width = self.gray.shape
        if max(height, width) <= longest_side:
            return self
        if longest_side not in self._displays:
            scale = longest_side / max(height, width)
            shape = (max(1, round(height * scale)), max(1, round(width * scale)))
            self._displays[longest_side] = replace(
                self, gray=resize(self.gray, *shape), lesion_probs=resize(self.lesion_probs, *shape),
                class_framing=self.class_framing.resized(shape), seg_framing=self.seg_framing.resized(shape),
                mm_per_pixel=None if self.mm_per_pixel is None else (self.mm_per_pixel[0] / scale, self.mm_per_pixel[1] / scale),
                _seg_maps={}, _masks={}, _displays={}, _hidden_shown=None, _full_size=self)
        return self._displays[longest_side]

    def with_hidden_finding_shown(self) -> Analysis:
        """This analysis with the lesion the normal gate hid drawn after all, and a note saying so
        (itself when the gate hid nothing). The gate is chosen where the classifier
        is nearly always right; on another hospital's scans it calls some lesions normal and the gate
        hides them, so a user may ask to see the finding beside the verdict. Kept, so re-rendering
        reuses its display copy and Seg-Grad-CAM maps."""
        if not self.suppressed_as_normal:
            return self
        if self._hidden_shown is None:
            note = HIDDEN_SHOWN_NOTE.format(p_normal=self.probability_dict()["normal"])
            self._hidden_shown = replace(self, suppressed_as_normal=False, notes=[*views_notes(self.class_framing), note],
                                         _seg_maps={}, _displays={})
        return self._hidden_shown

    def class_overlay(self, class_name: str | None = None, opacity: float = DEFAULT_OPACITY) -> np.ndarray:
        return heatmap_overlay(self.gray, self.class_map(class_name), opacity)

    def mask_overlay(self, threshold: float | None = None, opacity: float = DEFAULT_OPACITY, style: str = "filled") -> np.ndarray:
        """The lesion drawn on the scan: "filled" (tinted, outlined) or "outline" only."""
        return mask_overlay(self.gray, self.mask(threshold), opacity, style)

    def seg_cam_overlay(self, threshold: float | None = None, opacity: float = DEFAULT_OPACITY) -> np.ndarray | None:
        """Seg-Grad-CAM over the scan where a lesion is shown at `threshold`, else None."""
        seg_map = self.seg_map(threshold)
        return None if seg_map is None else heatmap_overlay(self.gray, seg_map, opacity)

    def mask_png(self, threshold: float | None = None) -> np.ndarray:
        """The mask as a 0/255 uint8 image of the scan's size."""
        return self.mask(threshold).astype(np.uint8) * 255


def _as_value(error: ScanError) -> ScanError:
    """`error` without its frames, to be kept as a batch's row: they hold the file's bytes (up to 50 MB)
    or the scan's arrays in a reference cycle that only the cyclic collector frees, so a batch of bad
    files piled up gigabytes. The message is all a row needs."""
    error.__context__ = error.__cause__ = None
    return error.with_traceback(None)


def _one_scan(step: Callable, *args):
    """`step(*args)` for one scan, or the ScanError it raised, or a ScanError for any other failure
    (logged): one scan's failure (a library's bug on an odd scan) costs its row, not the batch."""
    try:
        return step(*args)
    except ScanError as error:
        return _as_value(error)
    except Exception:
        log.exception("analysing one scan failed")
        return ScanError(SCAN_FAILED)


def decode_or_error(source) -> DecodedScan | ScanError:
    """`decode(source)`, or the ScanError it raised: a batch carries each failure as a value,
    so one bad file does not stop the others. So does any other exception: the decoding libraries
    meet every malformed file first, and one of their bugs (Pillow's EXIF writer raised on 2 % of
    damaged EXIF blocks) must cost one row, not a 200-scan batch. A source that could not even be
    read (a ScanError itself) stays as it is."""
    if isinstance(source, ScanError):
        return source
    try:
        return decode(source)
    except ScanError as error:
        return _as_value(error)
    except Exception as error:  # an image library's own bug on a malformed file: that file's row, not the batch
        log.exception("decoding one scan of a batch failed")
        return ScanError(f"This file could not be decoded: the image library failed on it ({type(error).__name__}).")


@dataclass
class PreparedScan:
    """A decoded scan framed for both models: its part of a batch's model inputs, and what `_finish`
    needs to bring the models' outputs back to the scan."""
    decoded: DecodedScan
    class_framing: Framing
    seg_framing: Framing
    class_input: np.ndarray  # (S, S, 3) float32, the classifier's input
    seg_input: np.ndarray    # (S, S, 3) float32, the segmenter's input


class Analyzer:
    """Both models and their explainers, loaded once; `analyze` and `analyze_batch` are safe to call
    from many threads.

    The models always run on the same `model_threads` threads, whichever thread calls: TensorFlow and
    oneDNN keep per-thread caches, so a server that calls from a pool of dozens of threads would
    otherwise pay that memory dozens of times over. Decoding, framing and post-processing of a batch's
    scans run on `scan_threads` threads: Pillow, NumPy and SciPy release the GIL for most of it."""

    model_threads = 2
    scan_threads = os.cpu_count() or 2

    def __init__(self, classifier: LoadedModel | None = None, segmenter: LoadedModel | None = None, warm_up: bool = True):
        self.classifier = classifier or load_configured("classifier")
        self.segmenter = segmenter or load_configured("segmenter")
        c, s = self.classifier.config, self.segmenter.config
        self.classes = list(c["classes"])
        self.segmenter_cam = SegGradCAM(self.segmenter.model, s["gradcam_layer"], s["logits_layer"])
        folder = self.classifier.folder
        try:
            self.ood = ood.FeatureDistance.load(folder / ood.FILE_NAME) if folder else None
            self.orientation = orientation.OrientationCheck.load(folder / orientation.FILE_NAME) if self.ood else None
        except ValueError as error:
            raise ModelSourceError(f"classifier {self.classifier.source}: {error}") from error
        if self.ood is None:
            log.warning("the classifier %s has no out-of-distribution check (%s): images that are not breast "
                        "ultrasound will get an answer too", self.classifier.source, ood.FILE_NAME)
        self.screening = (ood.ScreeningLayers(self.ood.layer, self.orientation.layer if self.orientation else self.ood.layer)
                          if self.ood else None)
        # The Grad-CAM pass also reads the checks' layers, so an analysis runs the classifier once.
        self.classifier_cam = ClassifierGradCAM(self.classifier.model, c["gradcam_layer"], c["logits_layer"],
                                                also=tuple(self.screening.names) if self.screening else ())
        self._logits_and_screening_features = (ood.screening_features(self.classifier.model, c["logits_layer"], self.screening)
                                               if self.screening else None)
        self._one_encoder_pass = self._compile_one_encoder_pass()
        self._model_pool = ThreadPoolExecutor(self.model_threads, thread_name_prefix="models")
        self._scan_pool = ThreadPoolExecutor(self.scan_threads, thread_name_prefix="scans")
        if warm_up:
            blank = np.full((256, 256), 64, dtype=np.uint8)
            self.analyze(blank)
            self.classify(blank)
            # The batch path (no maps) has graphs of its own: two batch sizes leave one graph for any size
            # (measured: a first batch of 8 took 2.2 s against 0.4 s after, and each new size 0.6 s more).
            self.analyze_batch([blank])
            self.analyze_batch([blank, blank])

    def _compile_one_encoder_pass(self) -> Callable | None:
        """When the segmenter holds the classifier's encoder (`inference.shared_encoder`): a compiled
        function, classifier inputs -> (logits, screening features (`ood.ScreeningLayers.features`) or None,
        mask logits), running the encoder once for both models. None otherwise."""
        if not shared_encoder.shares_encoder(self.classifier, self.segmenter):
            return None
        model = self.classifier.model
        outputs = [model.get_layer(self.classifier.config["logits_layer"]).output]
        if self.screening:
            outputs += [model.get_layer(name).output for name in self.screening.names]
        both = shared_encoder.with_decoder_outputs(model, outputs, self.segmenter.model, self.segmenter.config["logits_layer"])

        def run(images):
            logits, *maps, mask_logits = both(images, training=False)
            return logits, self.screening.features(maps) if maps else None, mask_logits

        return tf.function(run, reduce_retracing=True)

    def _screen(self, features) -> tuple[np.ndarray | None, np.ndarray | None]:
        """A batch's screening features (`ood.ScreeningLayers.features`' two arrays, or None) -> its (B,) out-of-distribution
        scores and (B, kinds) orientation probabilities, each None where the classifier has no such check."""
        if features is None:
            return None, None
        pooled, halves = (np.asarray(f) for f in features)
        return self.ood.distance(pooled), None if self.orientation is None else self.orientation.probabilities(halves)

    def _explain_and_screen(self, images: np.ndarray):
        """One classifier pass with every class's Grad-CAM: (logits, maps, `_screen`'s two results)."""
        logits, cams, read = self.classifier_cam.explain_and_read(images)
        return logits, cams, *self._screen(self.screening.features(read) if read else None)

    def _logits_and_screenings(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The classifier's logits without a gradient tape, and `_screen`'s results from the same forward pass."""
        if self.ood is None:
            return self.classifier_cam.logits(images), None, None
        logits, *features = self._logits_and_screening_features(images)
        return logits.numpy(), *self._screen(features)

    def _refusal(self, gray: np.ndarray, distance: float | None,
                 kinds: np.ndarray | None) -> tuple[NoAnswer, str] | None:
        """Why the scan `gray` gets no diagnosis-like output, and the message that says so — blank, its
        features' distance over the check's threshold, or inverted grey levels (`kinds`: its orientation
        probabilities) — else None."""
        if ood.is_blank(gray):
            return NoAnswer.BLANK, ood.BLANK_WARNING
        if distance is not None and distance > self.ood.threshold:
            return NoAnswer.NOT_RECOGNISED, ood.WARNING.format(distance=distance, threshold=self.ood.threshold)
        inverted = [] if kinds is None else self.orientation.refusal(kinds)
        return (NoAnswer.INVERTED, inverted[0]) if inverted else None

    def _screened(self, decoded: DecodedScan, framing: Framing, distance: float | None,
                  kinds: np.ndarray | None) -> tuple[NoAnswer | None, list[str]]:
        """(why the scan gets no diagnosis-like output, or None (its colour inside the field analysed,
        `colour_screening`, the field's size, `resolution_screening`, then `_refusal`), its warnings): for
        a refused scan the refusal's message first (it says why nothing else is shown), then the decoder's
        warnings, the colour's, which of several views was read (`framing`) and the size's; for a scan
        shown with its results, those and whether it is shown upside down (`kinds`)."""
        colour_refusal, colour_warnings = colour_screening(decoded.coloured, framing.box)
        size_refusal, size_warnings = resolution_screening(framing)
        warnings = decoded.warnings + colour_warnings + views_warnings(framing) + size_warnings
        refusal = ((NoAnswer.IN_COLOUR, colour_refusal) if colour_refusal else
                   (NoAnswer.TOO_SMALL, size_refusal) if size_refusal else
                   self._refusal(decoded.gray, distance, kinds))
        if refusal:
            reason, message = refusal
            return reason, [message] + warnings
        return None, warnings + ([] if kinds is None else self.orientation.warnings(kinds))

    def classify(self, source, view: int | None = None) -> tuple[np.ndarray | None, list[str], NoAnswer | None]:
        """Calibrated probabilities, warnings (then, when a view was asked for, which was read) and why
        there are no probabilities, from the classifier's forward pass alone: no segmenter, no gradient
        maps. Probabilities are None, and the reason given, when the screening checks refuse the scan.
        `view`: which of several views side by side to read (from 0, left to right; None: the largest).
        Raises inference.decode.ScanError on bad input."""
        decoded = decode(source)
        c = self.classifier.config
        framing = Framing.for_model(decoded.gray, c, view, decoded)
        logits, distances, kinds = self._model_pool.submit(self._logits_and_screenings,
                                                           to_model_input(decoded.gray, framing)[None]).result()
        no_answer, warnings = self._screened(decoded, framing, None if distances is None else float(distances[0]),
                                             None if kinds is None else kinds[0])
        probabilities = None if no_answer else softmax(logits[0] / c["temperature"])
        return probabilities, warnings + views_notes(framing), no_answer

    def _run_models(self, class_inputs: np.ndarray, seg_inputs: np.ndarray, maps: bool):
        """One pass of each model over a batch, and the screening checks: (logits, every class's
        Grad-CAM or None, mask logits, the inputs of the segmenter's Seg-Grad-CAM head or None,
        out-of-distribution distances or None, orientation probabilities or None). Only with `maps`
        does the classifier's pass carry a gradient tape and the segmenter's keep its head inputs (the
        Seg-Grad-CAM of a mask is made once the mask is shown); without, the classifier's logits and
        the screening features come from one pass, and the segmenter's from a pass that returns its logits alone — or all three from one
        encoder pass when the segmenter holds the classifier's encoder. The compiled
        functions relax the batch dimension after a second size, so batches of any size share one graph."""
        if maps:
            logits, class_cams, distances, kinds = self._explain_and_screen(class_inputs)
            return (logits, class_cams, *self.segmenter_cam.forward(seg_inputs), distances, kinds)
        if self._one_encoder_pass is not None:
            logits, features, mask_logits = self._one_encoder_pass(tf.convert_to_tensor(class_inputs, tf.float32))
            return logits.numpy(), None, mask_logits.numpy(), None, *self._screen(features)
        logits, distances, kinds = self._logits_and_screenings(class_inputs)
        return logits, None, self.segmenter_cam.logits(seg_inputs), None, distances, kinds

    def _explain_region(self, head_inputs: list[np.ndarray], region: np.ndarray) -> np.ndarray:
        """Seg-Grad-CAM whose target is `region` (the displayed lesion mask on the segmenter's input
        grid), from the scan's kept head inputs: a gradient pass through the segmenter's head only."""
        return self._model_pool.submit(self.segmenter_cam, head_inputs, region[None, ..., None]).result()[0]

    def prepare(self, decoded: DecodedScan, view: int | None = None) -> PreparedScan:
        """A decoded scan -> its framings and both models' inputs, on view `view` of several side by side
        (from 0, left to right; None: the largest). Raises inference.preprocess.ViewError for a view not shown."""
        gray = decoded.gray
        class_framing = Framing.for_model(gray, self.classifier.config, view, decoded)
        class_input = to_model_input(gray, class_framing)
        if self._one_encoder_pass is not None:  # same input size and framing: one input serves both
            return PreparedScan(decoded, class_framing, class_framing, class_input, class_input)
        s = self.segmenter.config
        framing = s.get("framing", {})
        seg_framing = (class_framing.at_size(s["input_size"], framing.get("keep_aspect", False))
                       if framing == self.classifier.config.get("framing", {}) else
                       Framing.for_model(gray, s, view, decoded))
        return PreparedScan(decoded, class_framing, seg_framing, class_input, to_model_input(gray, seg_framing))

    def _finish(self, scan: PreparedScan, logits: np.ndarray, class_cams: np.ndarray | None, mask_logits: np.ndarray,
                head_inputs: list[np.ndarray] | None, distance: float | None, kinds: np.ndarray | None) -> Analysis:
        """One scan's model outputs -> its Analysis: calibrated probabilities, the lesion
        probabilities at the scan's size, the refusals and warnings of the screening checks and the
        normal gate (which spares a lesion whose segmenter peak reaches `normal_gate_spares`, when the
        config sets it)."""
        s = self.segmenter.config
        probabilities = softmax(logits / self.classifier.config["temperature"])
        decoded = scan.decoded
        mm_per_pixel, mm_unavailable_reason = decoded.calibration_at(scan.seg_framing.box)
        analysis = Analysis(
            gray=decoded.gray, warnings=decoded.warnings, classes=self.classes, probabilities=probabilities,
            class_cams=class_cams, class_framing=scan.class_framing, seg_framing=scan.seg_framing,
            lesion_probs=scan.seg_framing.to_scan(expit(mask_logits[..., 0])),
            **postprocessing(s),
            feature_distance=distance, feature_limit=None if self.ood is None else self.ood.threshold,
            explain_region=None if head_inputs is None else lambda region: self._explain_region(head_inputs, region),
            mm_per_pixel=mm_per_pixel, mm_unavailable_reason=mm_unavailable_reason,
            frame=decoded.frame, n_frames=decoded.n_frames, notes=views_notes(scan.class_framing),
        )
        analysis.no_answer, analysis.warnings = self._screened(decoded, scan.class_framing, distance, kinds)
        if analysis.withheld:
            return analysis
        segmenter_found = analysis.segmenter_mask().any()
        if not segmenter_found:  # a lesion class with nothing drawn is a disagreement, said as one
            label = analysis.predicted_class
            analysis.notes.append(NO_LESION_NOTE.format(threshold=analysis.threshold) if label == "normal" else
                                  UNDRAWN_FINDING_NOTE.format(label=label, p=probabilities.max(), threshold=analysis.threshold))
        p_normal = probabilities[self.classes.index("normal")]
        gate, spares = s.get("normal_gate"), s.get("normal_gate_spares")
        gated = segmenter_found and gate is not None and p_normal >= gate  # nothing drawn: nothing to hide
        peak = float(analysis.lesion_probs[analysis.segmenter_mask()].max()) if gated else 0.0
        if gated and hidden_by_normal_gate(p_normal, peak, gate, spares):
            analysis.suppressed_as_normal = True
            analysis.notes.append(SUPPRESSED_NOTE.format(p_normal=p_normal, gate=gate))
        elif gated:
            analysis.notes.append(SPARED_NOTE.format(p_normal=p_normal, peak=peak, spares=spares))
        elif analysis.predicted_class == "normal" and segmenter_found:
            analysis.notes.append(DISAGREEMENT_NOTE.format(threshold=analysis.threshold))
        return analysis

    def analyze_decoded(self, decoded: Sequence, maps: bool = False,
                        view: int | None = None) -> list[Analysis | ScanError]:
        """What `decode_or_error` gave for each scan of a batch -> its Analysis, or its ScanError as
        it came, or the ScanError its framing or post-processing raised (`_one_scan`). The batch's scans
        share one forward pass of each model; framing and post-processing run on the scan threads.
        `view`: as for `prepare` (a batch reads the largest)."""
        prepared = list(self._scan_pool.map(
            lambda item: item if isinstance(item, ScanError) else _one_scan(self.prepare, item, view), decoded))
        scans = [p for p in prepared if not isinstance(p, ScanError)]
        if not scans:
            return prepared
        logits, class_cams, mask_logits, head_inputs, distances, kinds = self._model_pool.submit(
            self._run_models, np.stack([p.class_input for p in scans]), np.stack([p.seg_input for p in scans]),
            maps).result()
        nothing = [None] * len(scans)  # for outputs not computed: maps not asked for, no OOD check
        each_head_inputs = nothing if head_inputs is None else [[t[i:i + 1] for t in head_inputs] for i in range(len(scans))]
        analyses = iter(self._scan_pool.map(partial(_one_scan, self._finish), scans, logits, nothing if class_cams is None else class_cams,
                                            mask_logits, each_head_inputs, nothing if distances is None else distances,
                                            nothing if kinds is None else kinds))
        return [p if isinstance(p, ScanError) else next(analyses) for p in prepared]

    def analyze_batch(self, sources: Sequence, maps: bool = False) -> list[Analysis | ScanError]:
        """Bytes, paths or image arrays -> an Analysis or a ScanError for each, in order: decoded on
        the scan threads, then `analyze_decoded`. Grad-CAM maps only with `maps`: every class's
        (a gradient pass) and, when asked for, the Seg-Grad-CAM of the shown lesion, as with `analyze`."""
        return self.analyze_decoded(list(self._scan_pool.map(decode_or_error, sources)), maps)

    def analyze(self, source, frame: int = 0, view: int | None = None) -> Analysis:
        """Bytes, a path or an image array -> Analysis of frame `frame` (from 0) of a multi-frame
        file, on view `view` of an image showing several side by side (from 0, left to right; None:
        the largest), with every class's Grad-CAM; raises inference.decode.ScanError on bad input."""
        analysis = self.analyze_decoded([decode(source, frame)], maps=True, view=view)[0]
        if isinstance(analysis, ScanError):
            raise analysis
        return analysis
