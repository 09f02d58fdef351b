"""Render maps and masks onto the scan, at the scan's own size (pure NumPy/Matplotlib, no UI)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from matplotlib import colormaps
from PIL import Image

LESION_COLOUR = np.array([255, 64, 64], dtype=np.float32)


def upsample(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """A low-resolution map (h, w) resized bilinearly to (height, width), clipped to 0..1."""
    image = Image.fromarray(cam.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(image), 0.0, 1.0)


def _as_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray.astype(np.float32)[..., None], 3, axis=-1)


@lru_cache(maxsize=4)
def _palette(colormap: str) -> list[int]:
    """A matplotlib colormap as a 256-entry Pillow palette: rendering looks each pixel's colour up by
    the map's 8-bit level in Pillow's C code instead of evaluating the colormap per pixel in NumPy
    (which was a third of a served request's CPU)."""
    return (colormaps[colormap](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).round().astype(np.uint8).ravel().tolist()


def heatmap_overlay(gray: np.ndarray, cam: np.ndarray, opacity: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """Blend a matplotlib colormap of `cam` (any size, 0..1) onto the (H, W) greyscale scan.

    Opacity scales with the map's value, so cold regions leave the anatomy readable."""
    height, width = gray.shape
    heat = upsample(cam, height, width)
    colours = Image.fromarray((heat * 255.0 + 0.5).astype(np.uint8), mode="L")
    colours.putpalette(_palette(colormap))
    alpha = Image.fromarray((heat * (255.0 * opacity) + 0.5).astype(np.uint8), mode="L")
    scan = Image.fromarray(gray, mode="L").convert("RGB")
    return np.asarray(Image.composite(colours.convert("RGB"), scan, alpha))


def mask_overlay(gray: np.ndarray, mask: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """Tint the lesion pixels of the (H, W) scan and draw their outline fully opaque."""
    rgb = _as_rgb(gray)
    rgb[mask] = rgb[mask] * (1 - opacity) + LESION_COLOUR * opacity
    inner = mask.copy()
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    rgb[mask & ~inner] = LESION_COLOUR
    return rgb.round().astype(np.uint8)
