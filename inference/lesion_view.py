"""The lesion view: benign or malignant read from the whole scan and from a crop around the drawn lesion.

On another hospital's scans the classifier tells benign from malignant better when it sees the lesion
up close (the issue's first probe; the classifier card, rule 60), and it trains on zoomed crops, so such
a crop is familiar to it. The crop speaks only to *which* lesion, never to *whether* there is one: the
normal probability, and with it the normal gate, stays the whole scan's. A model whose config has no
`lesion_view` is read from the whole scan alone.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.special import expit, softmax

from inference.preprocess import Framing, to_model_input


def view_box(drawn: np.ndarray, probs: np.ndarray, margin: float) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the drawn region holding the segmenter's highest probability, grown
    by `margin` of its height and width on each side and clipped to the scan; None when nothing is drawn."""
    labels, count = ndimage.label(drawn)
    if not count:
        return None
    peaks = ndimage.maximum(probs, labels, np.arange(1, count + 1))
    rows, cols = ndimage.find_objects(labels)[int(np.argmax(peaks))]
    grow_y, grow_x = margin * (rows.stop - rows.start), margin * (cols.stop - cols.start)
    height, width = drawn.shape
    return (max(0, int(rows.start - grow_y)), min(height, int(np.ceil(rows.stop + grow_y))),
            max(0, int(cols.start - grow_x)), min(width, int(np.ceil(cols.stop + grow_x))))


def view_input(gray: np.ndarray, box: tuple[int, int, int, int], config: dict) -> np.ndarray:
    """The classifier's input for the scan cut to `box`: aspect kept and padded black, as training
    frames its zoomed crops (no search for the ultrasound field inside a cut that is all field)."""
    top, bottom, left, right = box
    crop = gray[top:bottom, left:right]
    framing = Framing.of(crop, config["input_size"], keep_aspect=True, clahe=config.get("framing", {}).get("clahe", False))
    return to_model_input(crop, framing)


def probabilities(whole_logits: np.ndarray, view_logits: np.ndarray | None, temperature: float,
                  classes: list[str], offset: float = 0.0) -> np.ndarray:
    """Calibrated probabilities: the whole scan's normal probability; the rest split between benign and
    malignant by the temperature-scaled mean of both views' malignant-minus-benign logit differences
    (None: the whole scan's alone), plus `offset` (the benign / malignant operating point chosen on
    validation scans). Without a view and without an offset: the whole scan's probabilities as they are."""
    whole = softmax(whole_logits / temperature)
    if view_logits is None and not offset:
        return whole
    normal, benign, malignant = (classes.index(c) for c in ("normal", "benign", "malignant"))
    views = (whole_logits,) if view_logits is None else (whole_logits, view_logits)
    difference = np.mean([logits[malignant] - logits[benign] for logits in views]) + offset
    malignant_share = expit(difference / temperature)
    out = np.empty_like(whole)
    out[normal] = whole[normal]
    out[benign], out[malignant] = (1 - whole[normal]) * (1 - malignant_share), (1 - whole[normal]) * malignant_share
    return out
