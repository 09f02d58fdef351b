"""Scans and masks of one split side as fixed-size arrays, cached on disk under `cache/`."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from inference.preprocess import to_model_input
from training.busi import REPO_ROOT, Sample, load_mask, load_scan

CACHE_DIR = REPO_ROOT / "cache"


def load_arrays(samples: list[Sample], size: int) -> dict[str, np.ndarray]:
    """{"images": (N, size, size, 3) uint8, "masks": (N, size, size) uint8 0/1, "labels": (N,) int}."""
    key = hashlib.sha1("|".join([str(size), *[str(s.path) for s in samples]]).encode()).hexdigest()[:16]
    path = CACHE_DIR / f"arrays_{size}_{key}.npz"
    if path.exists():
        with np.load(path) as cached:
            return dict(cached)
    images = np.stack([to_model_input(load_scan(s), size).astype(np.uint8) for s in samples])
    masks = np.stack([
        np.asarray(Image.fromarray(load_mask(s).astype(np.uint8) * 255).resize((size, size), Image.Resampling.BILINEAR)) > 127
        for s in samples
    ]).astype(np.uint8)
    labels = np.array([s.label_index for s in samples])
    arrays = {"images": images, "masks": masks, "labels": labels}
    CACHE_DIR.mkdir(exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def subsample(samples: list[Sample], limit: int) -> list[Sample]:
    """Every k-th sample, about `limit` in all and all classes kept (for smoke tests); 0 = all."""
    return samples if not limit else samples[:: max(1, len(samples) // limit)]
