"""Segmenter probabilities -> lesion mask and statistics, shared by evaluation and serving."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def lesion_mask(probs: np.ndarray, threshold: float, min_area_fraction: float = 0.0,
                largest_only: bool = False) -> np.ndarray:
    """Threshold a (H, W) probability map, drop connected components smaller than
    `min_area_fraction` of the image and, with `largest_only`, keep only the largest one (most
    scans show one lesion; which rules apply is chosen on the validation set)."""
    mask = probs >= threshold
    if (min_area_fraction <= 0 and not largest_only) or not mask.any():
        return mask
    labels, count = ndimage.label(mask)
    areas = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    keep = areas >= min_area_fraction * mask.size
    if largest_only:
        keep &= areas == areas.max()
    return np.isin(labels, np.flatnonzero(keep) + 1)


def lesion_stats(mask: np.ndarray) -> dict:
    """Count, area (px and % of the image) and bounding box of each predicted lesion and of all."""
    labels, count = ndimage.label(mask)
    area = int(mask.sum())
    stats = {"lesion_count": int(count), "lesion_area_px": area,
             "lesion_area_percent": round(100.0 * area / mask.size, 2), "bounding_box": None, "lesions": []}
    if count:
        rows, cols = np.nonzero(mask)
        stats["bounding_box"] = {"x0": int(cols.min()), "y0": int(rows.min()),
                                 "x1": int(cols.max()) + 1, "y1": int(rows.max()) + 1}
        for index, box in enumerate(ndimage.find_objects(labels), start=1):
            stats["lesions"].append({
                "area_px": int((labels[box] == index).sum()),
                "bounding_box": {"x0": box[1].start, "y0": box[0].start, "x1": box[1].stop, "y1": box[0].stop},
            })
    return stats
