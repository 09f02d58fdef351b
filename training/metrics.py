"""Classification and segmentation metrics, calibration and bootstrap intervals.

Built on scikit-learn and SciPy; what they do not offer (ECE, temperature scaling, Dice, and a
bootstrap that skips resamples where a metric is undefined) is small and written here once.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from training.busi import CLASSES

NORMAL, BENIGN, MALIGNANT = 0, 1, 2


def selection_score(metrics: dict, prefix: str = "") -> float:
    """What classifier epochs and recipes are chosen by: the mean of benign-vs-malignant recall and macro
    AUC (`prefix`: a source's, e.g. "busi_")."""
    return (metrics[f"{prefix}recall_bm"] + metrics[f"{prefix}macro_auc"]) / 2


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int) -> list[tuple[float, float, float]]:
    """Per equal-width confidence bin: (share of scans, accuracy, mean confidence); NaN when empty."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    which = np.clip(np.digitize(confidence, np.linspace(0, 1, bins + 1)[1:-1]), 0, bins - 1)
    return [(float((which == b).mean()), float(correct[which == b].mean()), float(confidence[which == b].mean()))
            if (which == b).any() else (0.0, np.nan, np.nan) for b in range(bins)]


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE: |accuracy - confidence| per confidence bin, weighted by bin size."""
    return float(sum(share * abs(accuracy - confidence)
                     for share, accuracy, confidence in reliability_bins(probs, labels, bins) if share))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T)."""
    def nll(log_t):
        return -log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(labels)), labels].mean()

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def calibrated(logits: np.ndarray, temperature: float) -> np.ndarray:
    return softmax(logits / temperature, axis=1)


def _auc(labels, scores, **kwargs):
    """ROC AUC, or None where these labels hold one class only (scikit-learn raises for some such cases,
    and for others warns and returns NaN, which would turn a bootstrap interval into [nan, nan])."""
    if len(np.unique(labels)) < 2:
        return None
    try:
        return float(roc_auc_score(labels, scores, **kwargs))
    except ValueError:  # a class of the one-vs-rest problem absent from these labels
        return None


def classification_metrics(probs: np.ndarray, labels: np.ndarray, classes: set[int] | None = None) -> dict:
    """Headline numbers; a value that this data cannot support (e.g. no normal scans) is None. `classes`:
    those of the data a bootstrap resample was drawn from; a resample lacking one gets no macro AUC (averaged
    over fewer one-vs-rest AUCs, it would measure another thing than the value its interval brackets)."""
    predicted = probs.argmax(axis=1)
    present = [c for c in range(len(CLASSES)) if (labels == c).any()]
    precision, recall, _, _ = precision_recall_fscore_support(
        labels, predicted, labels=list(range(len(CLASSES))), zero_division=0
    )
    out = {"n_images": int(len(labels)), "accuracy": float((predicted == labels).mean())}
    for c, name in enumerate(CLASSES):
        out[f"recall_{name}"] = float(recall[c]) if c in present else None
        out[f"precision_{name}"] = float(precision[c]) if (predicted == c).any() else None
    bm = [out["recall_benign"], out["recall_malignant"]]
    out["recall_bm"] = float(np.mean(bm)) if None not in bm else None
    if classes is not None and not classes <= set(present):
        out["macro_auc"] = None
    elif len(present) == len(CLASSES):
        out["macro_auc"] = _auc(labels, probs, multi_class="ovr", average="macro")
    else:  # one-vs-rest AUC over the classes that are present
        aucs = [_auc(labels == c, probs[:, c]) for c in present]
        out["macro_auc"] = float(np.mean(aucs)) if aucs and None not in aucs else None
    lesion = np.isin(labels, [BENIGN, MALIGNANT])
    bm_score = probs[lesion, MALIGNANT] / np.clip(probs[lesion, BENIGN] + probs[lesion, MALIGNANT], 1e-12, None)
    out["bm_auc"] = _auc(labels[lesion] == MALIGNANT, bm_score)
    # what "no lesion drawn when the classifier says normal" would hide
    out["lesions_called_normal"] = float((predicted[lesion] == NORMAL).mean()) if lesion.any() else None
    out["ece"] = expected_calibration_error(probs, labels)
    out["confusion_matrix"] = confusion_matrix(labels, predicted, labels=list(range(len(CLASSES)))).tolist()
    return out


def dice_iou(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Per-image Dice and IoU of two boolean masks (both empty counts as a perfect 1.0)."""
    intersection = np.logical_and(pred, truth).sum()
    total = pred.sum() + truth.sum()
    union = total - intersection
    if total == 0:
        return 1.0, 1.0
    return float(2 * intersection / total), float(intersection / union)


def bootstrap_cis(statistics, keys, clusters, rounds: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Percentile 95 % intervals of several statistics over the same resamples of the items (indices
    0..n-1), `statistics(indices)` returning a dict holding each of `keys`, computed once per resample
    (the classifier's metrics come from one scikit-learn pass, which dominates the cost).

    `clusters` is either n (every item independent) or each item's cluster label, such as its patient:
    a resample then draws clusters with replacement, as many as there are, and takes every item of each
    drawn cluster. A patient's frames are alike, so resampling them one by one would count each frame as
    new evidence and make the interval too narrow (BUS-UCLM's test side is 87 frames of 7 patients).
    With every cluster a single item, in item order, the resamples are exactly the per-item ones.

    A key's resamples on which it is undefined (None) are skipped; a key undefined on all is None."""
    members = cluster_members(clusters)
    rng = np.random.default_rng(seed)
    values = {key: [] for key in keys}
    for _ in range(rounds):
        drawn = rng.integers(0, len(members), len(members))
        resample = statistics(np.concatenate([members[c] for c in drawn]) if len(members) else drawn)
        for key in keys:
            if resample[key] is not None:
                values[key].append(resample[key])
    return {key: [float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2))] if v else None
            for key, v in values.items()}


def cluster_members(clusters) -> list[np.ndarray]:
    """The item indices of each cluster, clusters in order of first appearance (`clusters`: a count of
    independent items, or each item's cluster label)."""
    labels = np.arange(int(clusters)) if np.ndim(clusters) == 0 else np.asarray(clusters)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    return [np.flatnonzero(inverse == cluster) for cluster in np.argsort(first)]


def bootstrap_ci(statistic, clusters, rounds: int = 1000, seed: int = 0, alpha: float = 0.05):
    """Percentile interval of `statistic(indices)` (`clusters` as for `bootstrap_cis`); None where it
    is undefined on every resample."""
    return bootstrap_cis(lambda indices: {"value": statistic(indices)}, ["value"], clusters, rounds, seed,
                         alpha)["value"]
