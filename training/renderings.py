"""Validation scans rendered as other scanners and exports might render them: a panel on which a
candidate is scored without reading any test side.

The pooled validation score reads two sources' scans exactly as training framed them. On the same
scans cut from a 672-px frame and area-downsampled to the model's size, the shipped classifier's score
moved by about as much as the gap between two training recipes: one rendering is too narrow a basis
for a choice meant to hold on other hospitals' scans. Each rendering here stands for one way those
scans differ: a pre-cropped export (`training.reframe`), a lower-resolution scanner, heavy JPEG
compression, another gain curve (gamma either way), stronger edge enhancement. Every rendering is
deterministic (fixed seed), so candidates are scored on the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import albumentations as A
import cv2
import numpy as np

from training.reframe import crop_around_lesions

SEED = 0
AS_IS = "as is"


def _each(transform: A.BasicTransform) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """(images, masks) -> images, `transform` applied to every scan with one fixed seed."""
    compose = A.Compose([transform], seed=SEED)
    return lambda images, masks: np.stack([compose(image=image)["image"] for image in images])


RENDERINGS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    AS_IS: lambda images, masks: images,
    "re-framed": lambda images, masks: crop_around_lesions(images, masks)[0],
    "downscaled x0.5": _each(A.Downscale(scale_range=(0.5, 0.5), p=1.0,
                                         interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR})),
    "JPEG q30": _each(A.ImageCompression(quality_range=(30, 30), p=1.0)),
    "gamma 0.67": _each(A.RandomGamma(gamma_limit=(67, 67), p=1.0)),
    "gamma 1.5": _each(A.RandomGamma(gamma_limit=(150, 150), p=1.0)),
    "sharpened": _each(A.Sharpen(alpha=(0.5, 0.5), lightness=(1.0, 1.0), p=1.0)),
}


def rendered(images: np.ndarray, masks: np.ndarray, names=tuple(RENDERINGS)) -> dict[str, np.ndarray]:
    """(N, S, S, 3) uint8 framed scans and their (N, S, S) masks -> {rendering: scans, same shape} for
    each rendering of `names` (default: all)."""
    return {name: RENDERINGS[name](images, masks) for name in names}
