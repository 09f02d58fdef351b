"""Render maps and masks onto the scan, at the scan's own size (pure NumPy/Matplotlib, no UI)."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image
from scipy import ndimage

LESION_COLOUR = (255, 64, 64)
MASK_STYLES = ("filled", "outline")
DEFAULT_OPACITY = 0.45  # of heat maps and lesion fills: plain to see, with the anatomy still readable under them


def upsample(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """A low-resolution map (h, w) resized bilinearly to (height, width), clipped to 0..1."""
    image = Image.fromarray(cam.astype(np.float32)).resize((width, height), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(image), 0.0, 1.0)


# Matplotlib's jet as a 256-entry Pillow palette: rendering looks each pixel's colour up by the map's 8-bit
# level in Pillow's C code instead of evaluating the colormap per pixel in NumPy (which was a third of a
# served request's CPU).
HEAT_PALETTE = (colormaps["jet"](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).round().astype(np.uint8).ravel().tolist()


def heatmap_overlay(gray: np.ndarray, cam: np.ndarray, opacity: float = DEFAULT_OPACITY) -> np.ndarray:
    """Blend `cam` (any size, 0..1) in jet colours onto the (H, W) greyscale scan.

    Opacity scales with the map's value, so cold regions leave the anatomy readable."""
    height, width = gray.shape
    heat = upsample(cam, height, width)
    colours = Image.fromarray((heat * 255.0 + 0.5).astype(np.uint8), mode="L")
    colours.putpalette(HEAT_PALETTE)
    alpha = Image.fromarray((heat * (255.0 * opacity) + 0.5).astype(np.uint8), mode="L")
    scan = Image.fromarray(gray, mode="L").convert("RGB")
    return np.asarray(Image.composite(colours.convert("RGB"), scan, alpha))


def mask_overlay(gray: np.ndarray, mask: np.ndarray, opacity: float = DEFAULT_OPACITY, style: str = "filled") -> np.ndarray:
    """The lesion on the (H, W) scan: its outline fully opaque, and with `style` "filled" its pixels
    tinted at `opacity` too; "outline" leaves the tissue inside the edge untouched, for reading it."""
    if style not in MASK_STYLES:
        raise ValueError(f"style must be one of {MASK_STYLES}, got {style!r}")
    scan = Image.fromarray(gray, mode="L").convert("RGB")
    lesion = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    colour = Image.new("RGB", scan.size, LESION_COLOUR)
    if style == "filled":
        scan = Image.composite(colour, scan, lesion.point(lambda v: round(v * opacity)))
    edge = outline(mask, width=1 if style == "filled" else 2)  # alone, a 1-px line is hard to see
    scan.paste(colour, mask=Image.fromarray(edge.astype(np.uint8) * 255, mode="L"))
    return np.asarray(scan)


def outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """The mask's pixels within `width` 4-neighbour steps of its outside. Beyond the image counts as
    outside: a lesion cut by the scan's edge is drawn closed along that edge."""
    return mask & ~ndimage.binary_erosion(mask, iterations=width, border_value=0)
