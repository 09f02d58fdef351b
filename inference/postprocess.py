"""Segmenter probabilities -> lesion mask and statistics, shared by evaluation and serving."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError


def postprocessing(config: dict) -> dict:
    """A segmenter config's post-processing as `lesion_mask`'s keyword arguments (the defaults where a
    config written before a setting existed lacks it)."""
    return {"threshold": float(config["threshold"]), "min_area_fraction": float(config.get("min_area_fraction", 0.0)),
            "largest_only": bool(config.get("largest_only", False)), "peak_threshold": config.get("peak_threshold")}


def lesion_mask(probs: np.ndarray, threshold: float, min_area_fraction: float = 0.0,
                largest_only: bool = False, peak_threshold: float | None = None) -> np.ndarray:
    """Threshold a (H, W) probability map and keep the connected components that `kept_components`
    keeps (most scans show one lesion; which rules apply is chosen on the validation set)."""
    mask = probs >= threshold
    if (min_area_fraction <= 0 and not largest_only and peak_threshold is None) or not mask.any():
        return mask
    labels, areas, peaks = labelled_components(probs, threshold)
    keep = kept_components(areas, peaks, mask.size, min_area_fraction, largest_only, peak_threshold)
    return np.isin(labels, np.flatnonzero(keep) + 1)


def labelled_components(probs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, areas, peaks) of the connected components of `probs >= threshold`: each pixel's
    component (1, 2, …; 0 for none), and each component's pixel count and highest probability. Counted
    over the components' own pixels: `ndimage.maximum` sorted every pixel of the scan by its label, 5 s
    of a 16-megapixel scan's 7 s of post-processing."""
    mask = probs >= threshold
    labels, count = ndimage.label(mask)
    inside = labels[mask]
    peaks = np.full(count + 1, -np.inf)
    np.maximum.at(peaks, inside, probs[mask])
    return labels, np.bincount(inside, minlength=count + 1)[1:], peaks[1:]


def kept_components(areas: np.ndarray, peaks: np.ndarray, pixels: int, min_area_fraction: float = 0.0,
                    largest_only: bool = False, peak_threshold: float | None = None) -> np.ndarray:
    """Which of a thresholded map's connected components (their pixel `areas` and highest
    probabilities `peaks`; the map has `pixels` pixels) are drawn: those of at least
    `min_area_fraction` of the map and, with `largest_only`, only the largest one.

    With `peak_threshold` (hysteresis), a component is kept only if its highest probability reaches
    it: whether a lesion is drawn at all and how far its outline reaches are then two settings, so
    the outline need not be cut tight to keep normal tissue from being flagged. One rule for serving
    (`lesion_mask`) and for the validation grid that chooses these settings."""
    candidates = np.ones(len(areas), dtype=bool) if peak_threshold is None else peaks >= peak_threshold
    keep = candidates & (areas >= min_area_fraction * pixels)
    if largest_only and candidates.any():
        keep &= areas == areas[candidates].max()
    return keep


def hidden_by_normal_gate(p_normal, peak, normal_gate: float | None, normal_gate_spares: float | None):
    """Whether the normal gate hides what the segmenter drew: the classifier's normal probability
    reaches `normal_gate` (None: never), unless the segmenter's peak inside the drawing reaches
    `normal_gate_spares` (None: nothing is spared). Scalars or arrays of scans alike; one rule for
    validation and serving, its arguments named as the segmenter's config names them."""
    if normal_gate is None:
        return np.zeros(np.shape(p_normal), dtype=bool)
    hidden = np.asarray(p_normal) >= normal_gate
    return hidden if normal_gate_spares is None else hidden & (np.asarray(peak) < normal_gate_spares)


def lesion_stats(mask: np.ndarray, mm_per_pixel: tuple[float, float] | None = None,
                 mm_unavailable_reason: str = "no calibration given", field_px: int | None = None) -> dict:
    """Count, area (px and % of `field_px`, the pixels of the ultrasound field analysed; default the
    whole image) and bounding box of each predicted lesion and of all; with
    `mm_per_pixel` ((x, y): the scan's calibration) also the total area in mm², and each lesion's
    area, longest diameter and the width perpendicular to it in mm (at the top level: the largest
    lesion's). Without it these are None and `size_mm_unavailable` says why (`mm_unavailable_reason`)."""
    if mm_per_pixel is not None:
        mm_per_pixel = (float(mm_per_pixel[0]), float(mm_per_pixel[1]))
    labels, count = ndimage.label(mask)
    area = int(mask.sum())
    stats = {"lesion_count": int(count), "lesion_area_px": area,
             "lesion_area_percent": round(100.0 * area / (field_px or mask.size), 2), "bounding_box": None, "lesions": [],
             "mm_per_pixel": None if mm_per_pixel is None else [round(v, 5) for v in mm_per_pixel],
             "size_mm_unavailable": None if mm_per_pixel is not None else mm_unavailable_reason,
             "lesion_area_mm2": None if mm_per_pixel is None else round(area * mm_per_pixel[0] * mm_per_pixel[1], 2),
             "longest_diameter_mm": None, "perpendicular_width_mm": None}
    if count:
        rows, cols = np.nonzero(mask)
        stats["bounding_box"] = {"x0": int(cols.min()), "y0": int(rows.min()),
                                 "x1": int(cols.max()) + 1, "y1": int(rows.max()) + 1}
        for index, box in enumerate(ndimage.find_objects(labels), start=1):
            lesion = labels[box] == index
            lesion_area = int(lesion.sum())
            entry = {"area_px": lesion_area,
                     "bounding_box": {"x0": box[1].start, "y0": box[0].start, "x1": box[1].stop, "y1": box[0].stop},
                     "area_mm2": None, "longest_diameter_mm": None, "perpendicular_width_mm": None}
            if mm_per_pixel is not None:
                rows, cols = np.nonzero(lesion)
                points = np.column_stack([(cols + box[1].start) * mm_per_pixel[0], (rows + box[0].start) * mm_per_pixel[1]])
                diameter, width = diameter_and_width(points)
                entry.update(area_mm2=round(lesion_area * mm_per_pixel[0] * mm_per_pixel[1], 2),
                             longest_diameter_mm=round(diameter, 2), perpendicular_width_mm=round(width, 2))
            stats["lesions"].append(entry)
        largest = max(stats["lesions"], key=lambda entry: entry["area_px"])
        stats.update(longest_diameter_mm=largest["longest_diameter_mm"],
                     perpendicular_width_mm=largest["perpendicular_width_mm"])
    return stats


def half_up(value: float, digits: int = 1) -> float:
    """A size as the notes, the PDF and the Batch table show it: the reported value (two decimals, as the JSON
    and CSV carry it) rounded half up as written, so 104.55 mm² shows as 104.6. Formatting the binary float
    rounded it to 104.5 (104.55 is stored as 104.5499...), below the JSON beside it and the size measured
    (104.5527; tester)."""
    return float(Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def diameter_and_width(points: np.ndarray) -> tuple[float, float]:
    """(longest diameter, width perpendicular to it) of a set of (x, y) points in physical units —
    the pixel centres of one lesion, so calipers land on its outermost pixels as on a scanner. The
    diameter is the largest distance between two points (found among the convex hull's corners);
    the width is the points' extent along the direction at right angles to it."""
    if len(points) < 2:
        return 0.0, 0.0
    try:
        corners = points[ConvexHull(points).vertices]
    except QhullError:  # collinear points (a lesion one pixel thick): its ends are extremes in x or y
        corners = points[[points[:, 0].argmin(), points[:, 0].argmax(), points[:, 1].argmin(), points[:, 1].argmax()]]
    distances = np.linalg.norm(corners[:, None, :] - corners[None, :, :], axis=-1)
    first, second = np.unravel_index(np.argmax(distances), distances.shape)
    diameter = float(distances[first, second])
    if diameter == 0:
        return 0.0, 0.0
    direction = (corners[second] - corners[first]) / diameter
    across = corners @ np.array([-direction[1], direction[0]])
    return diameter, float(across.max() - across.min())
