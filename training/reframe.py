"""Validation scans re-framed as a pre-cropped export: cut to the lesion's bounding box plus a margin,
aspect kept, padded black as serving frames a scan.

Some hospitals export scans cropped around the lesion (BrEaST does); BUSI and BUS-UCLM keep the
whole field. Scoring a model on its validation scans re-framed this way shows, without reading any
test side, whether framing alone moves its verdict — e.g. whether it calls lesions normal once they
fill the picture. Normal scans are cut around a stand-in box of a lesion's size, as in training
(`training.finetune.lesion_box`), so the two kinds of scan are framed alike. The cut is made from
the model-sized arrays, so the re-framed scans are also a little blurrier than a real export.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from training.finetune import lesion_box

MARGIN = 0.25  # of the box's height and width, on each side


def grown_box(box: tuple[int, int, int, int], margin: float, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), end-exclusive, grown by `margin` of its height and width on each side
    and clipped to a `height` x `width` picture."""
    top, bottom, left, right = box
    grow_y, grow_x = margin * (bottom - top), margin * (right - left)
    return (max(0, int(top - grow_y)), min(height, int(np.ceil(bottom + grow_y))),
            max(0, int(left - grow_x)), min(width, int(np.ceil(right + grow_x))))


def crop_around_lesions(images: np.ndarray, masks: np.ndarray, margin: float = MARGIN,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, S, S, 3) uint8 scans and their (N, S, S) masks -> both re-framed, same shapes."""
    rng, size = np.random.default_rng(seed), images.shape[1]
    out, out_masks = np.empty_like(images), np.empty_like(masks)
    for i, (image, mask) in enumerate(zip(images, masks)):
        x0, y0, x1, y1 = lesion_box(mask > 0, rng)[0]
        top, bottom, left, right = grown_box((y0, y1, x0, x1), margin, size, size)
        frame = A.Compose([
            A.Crop(x_min=left, y_min=top, x_max=right, y_max=bottom),
            A.LongestMaxSize(max_size=size),
            A.PadIfNeeded(size, size, position="center", border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
        ])
        framed = frame(image=image, mask=mask)
        out[i], out_masks[i] = framed["image"], framed["mask"]
    return out, out_masks
