"""Scans and masks of one split side as fixed-size arrays, cached on disk under `cache/`."""

from __future__ import annotations

import hashlib

import numpy as np

from inference.preprocess import Framing, to_model_input
from training.busi import REPO_ROOT, Sample, load_mask, load_scan

CACHE_DIR = REPO_ROOT / "cache"


def load_arrays(samples: list[Sample], size: int, framing: dict | None = None) -> dict[str, np.ndarray]:
    """{"images": (N, size, size, 3) uint8, "masks": (N, size, size) uint8 0/1, "labels": (N,) int},
    framed as serving frames them (`framing`: the model config's setting, see inference.preprocess)."""
    framing = framing or {}
    key = hashlib.sha1("|".join([str(size), str(sorted(framing.items())), *[str(s.path) for s in samples]]).encode()).hexdigest()[:16]
    path = CACHE_DIR / f"arrays_{size}_{key}.npz"
    if path.exists():
        with np.load(path) as cached:
            return dict(cached)
    images, masks = [], []
    for s in samples:
        gray = load_scan(s)
        frame = Framing.of(gray, size, **framing)
        images.append(to_model_input(gray, frame).astype(np.uint8))
        masks.append(frame.to_input(load_mask(s).astype(np.uint8) * 255) > 127)
    images, masks = np.stack(images), np.stack(masks).astype(np.uint8)
    labels = np.array([s.label_index for s in samples])
    arrays = {"images": images, "masks": masks, "labels": labels}
    CACHE_DIR.mkdir(exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def subsample(samples: list[Sample], limit: int) -> list[Sample]:
    """Every k-th sample, about `limit` in all and all classes kept (for smoke tests); 0 = all."""
    return samples if not limit else samples[:: max(1, len(samples) // limit)]
