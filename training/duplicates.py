"""Near-duplicate scans inside one dataset, for a split that never puts one frame on two sides.

BUSI holds one frame exported several times: re-cropped, re-zoomed, with or without caliper marks,
and consecutive frames of one lesion. A pHash distance of at most 4 bits finds only the plainest
copies (re-crops and zooms are 6-22 bits apart). Two tests, each aimed at one kind of copy; a pair
that passes either is a duplicate:

- **same view** — pHash at most `VIEW_MAX_BITS` apart *and* 64 x 64 thumbnails correlated at least
  `VIEW_MIN_CORRELATION`, or thumbnails correlated at least `VIEW_STRONG_CORRELATION` whatever the
  pHash: consecutive frames and re-exports with caliper marks added (marks move the pHash by up to
  20 bits). Looser pHash or correlation alone joins unrelated scans that share a screen layout.
- **same frame, other crop or zoom** — ORB keypoints whose matches agree with one similarity
  transform (RANSAC, at least `FRAME_MIN_INLIERS` inliers). Scans that are not the same frame give
  0-8 inliers; copies give 15-200. It costs ~7 ms a pair, so it is tried on candidate pairs only
  (`is_candidate`), which held every keypoint-verified pair found by an embedding nearest-neighbour
  search over all of BUSI.

The tests (`tests/test_split_leakage.py`) check the resulting split with a third, independent
detector (ImageNet features), as the groups should not be graded by the detector that made them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image
from skimage.feature import ORB, match_descriptors
from skimage.measure import ransac
from skimage.transform import SimilarityTransform

VIEW_MAX_BITS = 10
VIEW_MIN_CORRELATION = 0.85
VIEW_STRONG_CORRELATION = 0.93
FRAME_MIN_INLIERS = 10
THUMBNAIL = 64
KEYPOINT_SIDE = 256  # longer side the keypoints are found at
PARALLEL_MIN_ITEMS = 64  # fewer items run in this process: starting workers would cost more


class ScanSignature:
    """What the tests compare, computed once per scan: pHash bits, a normalised thumbnail, keypoints."""

    def __init__(self, path: Path):
        with Image.open(path) as image:
            gray = image.convert("L")
        self.phash = imagehash.phash(gray).hash.ravel()
        thumb = np.asarray(gray.resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR), dtype=np.float64).ravel()
        self.thumbnail = (thumb - thumb.mean()) / (thumb.std() * np.sqrt(thumb.size) + 1e-9)
        scale = KEYPOINT_SIDE / max(gray.size)
        small = gray.resize((round(gray.width * scale), round(gray.height * scale)), Image.Resampling.BILINEAR)
        orb = ORB(n_keypoints=300, fast_threshold=0.05)
        try:
            orb.detect_and_extract(np.asarray(small, dtype=np.float64) / 255)
            self.keypoints, self.descriptors = orb.keypoints, orb.descriptors
        except RuntimeError:  # a featureless scan (e.g. blank): no keypoints to match
            self.keypoints, self.descriptors = np.empty((0, 2)), np.empty((0, 256), dtype=bool)


def keypoint_inliers(a: ScanSignature, b: ScanSignature) -> int:
    """Matched keypoints (mutual best, ratio-tested) consistent with one similarity transform."""
    if len(a.descriptors) < 3 or len(b.descriptors) < 3:
        return 0
    matches = match_descriptors(a.descriptors, b.descriptors, cross_check=True, max_ratio=0.8)
    if len(matches) < 8:
        return 0
    source, target = a.keypoints[matches[:, 0]][:, ::-1], b.keypoints[matches[:, 1]][:, ::-1]
    _, inliers = ransac((source, target), SimilarityTransform, min_samples=3, residual_threshold=2,
                        max_trials=200, rng=0)
    return 0 if inliers is None else int(inliers.sum())


def is_same_view(bits, correlation):
    """For one pair, or element-wise for arrays of pairs."""
    return ((bits <= VIEW_MAX_BITS) & (correlation >= VIEW_MIN_CORRELATION)) | (correlation >= VIEW_STRONG_CORRELATION)


def is_candidate(bits, correlation):
    """Worth a keypoint check: zoomed copies measured 6-24 bits apart, correlated 0.70 or more.
    For one pair, or element-wise for arrays of pairs."""
    return (bits <= 20) | (correlation >= 0.8) | ((bits <= 24) & (correlation >= 0.7))


_shared_signatures: list[ScanSignature] = []


def _share(signatures: list[ScanSignature]) -> None:
    global _shared_signatures
    _shared_signatures = signatures


def _pair_inliers(pair: tuple[int, int]) -> int:
    i, j = pair
    return keypoint_inliers(_shared_signatures[i], _shared_signatures[j])


def _on_every_core(function: Callable, items: list, signatures: list[ScanSignature] | None = None) -> list:
    """`function` over `items`, in order, on one process per core, each holding `signatures`.

    Processes are spawned, not forked: the caller may hold TensorFlow's threads (the tests do), and a
    fork copies their locks mid-use. ORB and RANSAC are deterministic, so results match a serial run."""
    workers = os.cpu_count() or 1
    if workers == 1 or len(items) < PARALLEL_MIN_ITEMS:
        _share(signatures or [])
        return [function(item) for item in items]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_share,
                             initargs=(signatures or [],)) as pool:
        return list(pool.map(function, items, chunksize=max(1, len(items) // (8 * workers))))


def duplicate_pairs(paths: list[Path]) -> list[tuple[int, int, str]]:
    """(i, j, which test) for every duplicate pair among `paths`, i < j."""
    signatures = _on_every_core(ScanSignature, list(paths))
    hashes = np.array([s.phash for s in signatures])
    bits = (hashes[:, None, :] != hashes[None, :, :]).sum(-1)
    thumbs = np.array([s.thumbnail for s in signatures])
    correlation = thumbs @ thumbs.T
    upper = np.triu(np.ones(bits.shape, dtype=bool), 1)
    same_view = upper & is_same_view(bits, correlation)
    candidates = [(int(i), int(j)) for i, j in np.argwhere(upper & ~same_view & is_candidate(bits, correlation))]
    inliers = _on_every_core(_pair_inliers, candidates, signatures)
    same_frame = [pair for pair, count in zip(candidates, inliers) if count >= FRAME_MIN_INLIERS]
    return sorted([(int(i), int(j), "same view") for i, j in np.argwhere(same_view)]
                  + [(i, j, "same frame") for i, j in same_frame])
