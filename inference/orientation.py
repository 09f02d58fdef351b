"""Is the scan shown the way a scanner shows it? A negative (inverted grey levels) or an upside-down
scan is still a picture of breast tissue, so the out-of-distribution check (`inference.ood`) lets most
of them through, and the classifier then answers with confidence on tissue it reads wrongly.

The check is a logistic regression over the same mid-level features as the out-of-distribution check
(one encoder block, `layer`), averaged over the top and the bottom half of the input separately, so
that it sees which way up the near field is: three kinds, "as shown" (mirrored left-right too, which
is how some scanners and exports show it), "inverted" and "upside down". Fitted on the training
sides with those alterations made to the raw scans, thresholds chosen by cross-source validation
(`python -m training.fit_orientation`), stored with the model (`orientation.npz`). An inverted scan
gets no diagnosis-like output; an upside-down one gets its results with a warning, since the tissue
is real and a false alarm should cost a warning, not the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from keras import ops
from scipy.special import softmax

from inference.stored_check import StoredCheck

FILE_NAME = "orientation.npz"
KINDS = ("as shown", "inverted", "upside down")
INVERTED_WARNING = ("This scan looks inverted (a negative: tissue dark on a light background; orientation check: {p:.0%}). "
                    "No classification or lesion is shown: the models read scans as scanners show them. "
                    "Upload the scan with its original grey levels.")
UPSIDE_DOWN_WARNING = ("This scan looks upside down (the skin at the bottom; orientation check: {p:.0%}). The models were "
                       "trained on scans with the skin at the top and read flipped scans less reliably: flip it "
                       "vertically and analyse it again.")


def warned_upside_down(warnings: list[str]) -> bool:
    """Whether an analysis's `warnings` hold the upside-down warning (evaluation counts how often
    real scans get it)."""
    lead = UPSIDE_DOWN_WARNING.split("(")[0]
    return any(warning.startswith(lead) for warning in warnings)


def top_and_bottom_means(features):
    """(B, H, W, C) feature maps (arrays or tensors) -> (B, 2, C): their means over the top and the
    bottom half of the rows."""
    half = features.shape[1] // 2
    return ops.stack([ops.mean(features[:, :half], axis=(1, 2)), ops.mean(features[:, half:], axis=(1, 2))], axis=1)


@dataclass(frozen=True)
class OrientationCheck(StoredCheck):
    DESCRIPTION = "orientation check"

    layer: str               # the classifier layer whose half means are the features
    mean: np.ndarray         # (2C,) standardisation of the training features
    scale: np.ndarray        # (2C,)
    coef: np.ndarray         # (len(KINDS), 2C) logistic regression
    intercept: np.ndarray    # (len(KINDS),)
    thresholds: np.ndarray   # (len(KINDS),) probability from which a kind is called; "as shown" unused

    def probabilities(self, halves: np.ndarray) -> np.ndarray:
        """(n, 2, C) top/bottom feature means -> (n, len(KINDS)) probabilities of each kind."""
        standard = (np.asarray(halves, np.float64).reshape(len(halves), -1) - self.mean) / self.scale
        return softmax(standard @ self.coef.T + self.intercept, axis=-1)

    def _called(self, probabilities: np.ndarray, kind: str, message: str) -> list[str]:
        """`message` for a scan whose probability of `kind` reaches that kind's threshold, else nothing."""
        p = probabilities[KINDS.index(kind)]
        return [message.format(p=p)] if p >= self.thresholds[KINDS.index(kind)] else []

    def refusal(self, probabilities: np.ndarray) -> list[str]:
        """The refusal for a scan with these kind `probabilities`: inverted, or nothing."""
        return self._called(probabilities, "inverted", INVERTED_WARNING)

    def warnings(self, probabilities: np.ndarray) -> list[str]:
        """The warnings for a scan shown with its results: upside down, or nothing."""
        return self._called(probabilities, "upside down", UPSIDE_DOWN_WARNING)
