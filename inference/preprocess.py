"""Scan -> model input, shared by training and serving so both see the same pixels."""

from __future__ import annotations

import numpy as np
from PIL import Image


def to_model_input(gray: np.ndarray, size: int) -> np.ndarray:
    """(H, W) uint8 greyscale -> (size, size, 3) float32 RGB in 0..255 (models scale it themselves).

    The scan is stretched to a square with bilinear resampling; outputs are mapped back to the
    scan's own size afterwards, so aspect distortion never reaches the user."""
    resized = Image.fromarray(gray).resize((size, size), Image.Resampling.BILINEAR)
    return np.repeat(np.asarray(resized, dtype=np.float32)[..., None], 3, axis=-1)

