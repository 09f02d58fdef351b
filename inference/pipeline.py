"""One analysis of one scan: decode -> preprocess -> classifier and segmenter (each one forward pass
that also yields its Grad-CAM) -> results at the scan's own size.

`Analyzer` loads both models once per process and warms them up, so the first request does not pay
for graph tracing. `Analysis` holds everything needed to re-render (other class to explain, other
mask threshold, other opacity) without running a model again.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.special import expit, softmax

from explain.gradcam import ClassifierGradCAM, SegGradCAM
from explain.overlay import heatmap_overlay, mask_overlay
from inference.decode import decode_scan
from inference import ood
from inference.models import LoadedModel, load_model, source_for
from inference.postprocess import lesion_mask, lesion_stats
from inference.preprocess import Framing, to_model_input

SUPPRESSED_NOTE = ("The classifier is confident this scan is normal, so no lesion is drawn (a rule chosen on "
                   "the validation sides: it removes most false alarms on normal scans).")
DISAGREEMENT_NOTE = ("The classifier leans towards normal, but not confidently enough to hide what the "
                     "segmenter found: the lesion is drawn; weigh both.")
NO_LESION_NOTE = "No lesion predicted at the validated threshold, so Seg-Grad-CAM has no region to explain."


@dataclass
class Analysis:
    gray: np.ndarray                  # (H, W) uint8 scan as analysed
    warnings: list[str]
    classes: list[str]
    probabilities: np.ndarray         # (n_classes,), calibrated, sums to 1
    class_cams: np.ndarray            # (n_classes, h, w) Grad-CAM per class, 0..1, over the classifier's input
    class_framing: Framing            # how the scan became the classifier's input (maps go back through it)
    seg_framing: Framing
    lesion_probs: np.ndarray          # (H, W) float32 segmenter probability at the scan's size
    threshold: float                  # the segmenter's validated threshold
    min_area_fraction: float
    largest_only: bool
    # mask (H, W) -> Seg-Grad-CAM of that region at the scan's size (one gradient pass of the segmenter)
    explain_region: Callable[[np.ndarray], np.ndarray] | None = None
    notes: list[str] = field(default_factory=list)
    suppressed_as_normal: bool = False  # the classifier calls the scan normal and the validated rule hides lesions
    feature_distance: float | None = None  # the out-of-distribution score (None: the classifier has no check)
    out_of_distribution: bool = False      # not like a breast ultrasound scan: no diagnosis-like output
    _seg_maps: dict = field(default_factory=dict, repr=False)  # threshold -> Seg-Grad-CAM, computed once each

    @property
    def predicted_class(self) -> str:
        return self.classes[int(np.argmax(self.probabilities))]

    def probability_dict(self) -> dict[str, float]:
        return {c: float(p) for c, p in zip(self.classes, self.probabilities)}

    def mask(self, threshold: float | None = None) -> np.ndarray:
        """The post-processed lesion mask (H, W) bool at `threshold` (default: the validated one)."""
        if self.suppressed_as_normal or self.out_of_distribution:
            return np.zeros(self.gray.shape, dtype=bool)
        return self.segmenter_mask(threshold)

    def segmenter_mask(self, threshold: float | None = None) -> np.ndarray:
        """The segmenter's own mask, before the classifier's verdict is taken into account."""
        return lesion_mask(self.lesion_probs, self.threshold if threshold is None else threshold,
                           self.min_area_fraction, self.largest_only)

    def lesion_stats(self, threshold: float | None = None) -> dict:
        return lesion_stats(self.mask(threshold))

    def class_map(self, class_name: str | None = None) -> np.ndarray:
        """One class's Grad-CAM (default: the predicted class's) at the scan's size, 0..1."""
        return self.class_framing.to_scan(self.class_cams[self.classes.index(class_name or self.predicted_class)])

    def seg_map(self, threshold: float | None = None) -> np.ndarray | None:
        """Seg-Grad-CAM of the lesion mask shown at `threshold` (default: the validated one) at the
        scan's size; None when no lesion is shown (none found, called normal, or not a scan). Its
        target is exactly the displayed mask, so a new threshold gets its own map: computed on first
        use, then kept for re-rendering."""
        mask = self.mask(threshold)
        if self.explain_region is None or not mask.any():
            return None
        key = self.threshold if threshold is None else float(threshold)
        if key not in self._seg_maps:
            self._seg_maps[key] = self.explain_region(mask)
        return self._seg_maps[key]

    def class_overlay(self, class_name: str | None = None, opacity: float = 0.45) -> np.ndarray:
        return heatmap_overlay(self.gray, self.class_map(class_name), opacity)

    def mask_overlay(self, threshold: float | None = None, opacity: float = 0.45) -> np.ndarray:
        return mask_overlay(self.gray, self.mask(threshold), opacity)

    def seg_cam_overlay(self, threshold: float | None = None, opacity: float = 0.45) -> np.ndarray | None:
        """Seg-Grad-CAM over the scan where a lesion is shown at `threshold`, else None."""
        seg_map = self.seg_map(threshold)
        return None if seg_map is None else heatmap_overlay(self.gray, seg_map, opacity)

    def mask_png(self, threshold: float | None = None) -> np.ndarray:
        """The mask as a 0/255 uint8 image of the scan's size."""
        return self.mask(threshold).astype(np.uint8) * 255


class Analyzer:
    """Both models and their explainers, loaded once; `analyze` is safe to call from many threads.

    The models always run on the same `model_threads` threads, whichever thread calls: TensorFlow and
    oneDNN keep per-thread caches, so a server that calls from a pool of dozens of threads would
    otherwise pay that memory dozens of times over."""

    model_threads = 2

    def __init__(self, classifier: LoadedModel | None = None, segmenter: LoadedModel | None = None, warm_up: bool = True):
        self.classifier = classifier or load_model(source_for("classifier"))
        self.segmenter = segmenter or load_model(source_for("segmenter"))
        c, s = self.classifier.config, self.segmenter.config
        self.classes = list(c["classes"])
        self.classifier_cam = ClassifierGradCAM(self.classifier.model, c["gradcam_layer"], c["logits_layer"])
        self.segmenter_cam = SegGradCAM(self.segmenter.model, s["gradcam_layer"], s["logits_layer"])
        self.ood = ood.FeatureDistance.load(self.classifier.folder / ood.FILE_NAME) if self.classifier.folder else None
        self._ood_features = ood.pooled_layer(self.classifier.model, self.ood.layer) if self.ood else None
        self._model_pool = ThreadPoolExecutor(self.model_threads, thread_name_prefix="models")
        if warm_up:
            self.analyze(np.full((256, 256), 64, dtype=np.uint8))
            self.classify(np.full((256, 256), 64, dtype=np.uint8))

    def _feature_distance(self, images: np.ndarray) -> float | None:
        return None if self.ood is None else float(self.ood.distance(self._ood_features(images).numpy())[0])

    def _ood_warning(self, distance: float | None) -> list[str]:
        """The out-of-distribution warning when `distance` is over the threshold, else nothing."""
        if distance is None or distance <= self.ood.threshold:
            return []
        return [ood.WARNING.format(distance=distance, threshold=self.ood.threshold)]

    def classify(self, source) -> tuple[np.ndarray | None, list[str]]:
        """Calibrated probabilities and warnings from the classifier's forward pass alone: no
        segmenter, no gradient maps. Probabilities are None when the scan is out of distribution.
        Raises inference.decode.ScanError on bad input."""
        gray, warnings = decode_scan(source)
        c = self.classifier.config
        images = to_model_input(gray, Framing.for_model(gray, c))[None]
        logits, distance = self._model_pool.submit(
            lambda: (self.classifier_cam.logits(images), self._feature_distance(images))).result()
        refused = self._ood_warning(distance)
        return (None if refused else softmax(logits[0] / c["temperature"])), warnings + refused

    def _run_models(self, class_input: np.ndarray, seg_input: np.ndarray):
        """The classifier's pass with every class's Grad-CAM, the segmenter's forward pass (its map
        waits until the displayed mask is known) and the out-of-distribution score:
        ((logits, class maps), mask logits, distance)."""
        return (self.classifier_cam(class_input), self.segmenter_cam.logits(seg_input),
                self._feature_distance(class_input))

    def _explain_region(self, seg_input: np.ndarray, seg_framing: Framing, mask: np.ndarray) -> np.ndarray:
        """Seg-Grad-CAM whose target is `mask` (the scan-sized lesion mask on display), at the scan's size."""
        region = seg_framing.to_input(mask.astype(np.float32)) >= 0.5
        _, cams = self._model_pool.submit(self.segmenter_cam, seg_input, region[None, ..., None]).result()
        return seg_framing.to_scan(cams[0, 0])

    def analyze(self, source) -> Analysis:
        """Bytes, a path or an image array -> Analysis; raises inference.decode.ScanError on bad input."""
        gray, warnings = decode_scan(source)
        c, s = self.classifier.config, self.segmenter.config
        class_framing, seg_framing = Framing.for_model(gray, c), Framing.for_model(gray, s)
        seg_input = to_model_input(gray, seg_framing)[None]
        (logits, class_cams), mask_logits, distance = self._model_pool.submit(
            self._run_models, to_model_input(gray, class_framing)[None], seg_input).result()
        probabilities = softmax(logits[0] / c["temperature"])
        analysis = Analysis(
            gray=gray, warnings=warnings, classes=self.classes, probabilities=probabilities,
            class_cams=class_cams[0], class_framing=class_framing, seg_framing=seg_framing,
            lesion_probs=seg_framing.to_scan(expit(mask_logits[0, ..., 0])),
            threshold=float(s["threshold"]), min_area_fraction=float(s.get("min_area_fraction", 0.0)),
            largest_only=bool(s.get("largest_only", False)), feature_distance=distance,
            explain_region=lambda mask: self._explain_region(seg_input, seg_framing, mask),
        )
        refused = self._ood_warning(distance)
        if refused:
            analysis.out_of_distribution, analysis.warnings = True, warnings + refused
            return analysis
        segmenter_found = analysis.segmenter_mask().any()
        if not segmenter_found:
            analysis.notes = [NO_LESION_NOTE]
        p_normal = probabilities[self.classes.index("normal")]
        gate = s.get("normal_gate")
        if gate is not None and p_normal >= gate:
            analysis.suppressed_as_normal, analysis.notes = True, [SUPPRESSED_NOTE]
        elif analysis.predicted_class == "normal" and segmenter_found:
            analysis.notes = [DISAGREEMENT_NOTE]
        return analysis
