"""The metric functions against values worked out by hand or by an independent library."""

import numpy as np
import pytest
from scipy import stats

from training.metrics import (bootstrap_ci, classification_metrics, cluster_members, dice_iou,
                              expected_calibration_error, fit_temperature)


def test_ece_on_a_hand_computed_case():
    probs = np.array([[0.9, 0.1, 0.0],     # confidence 0.9, right
                      [0.7, 0.3, 0.0],     # confidence 0.7, wrong
                      [0.3, 0.3, 0.4],     # confidence 0.4, right
                      [0.3, 0.45, 0.25]])  # confidence 0.45, wrong
    labels = np.array([0, 1, 2, 0])
    # bin [0, 0.5): accuracy 0.5, confidence 0.425; bin [0.5, 1]: accuracy 0.5, confidence 0.8; each half the scans
    assert expected_calibration_error(probs, labels, bins=2) == pytest.approx(0.5 * 0.075 + 0.5 * 0.3)
    assert expected_calibration_error(np.eye(3), np.arange(3)) == pytest.approx(0.0)


def test_dice_and_iou():
    pred = np.zeros((4, 4), bool)
    truth = np.zeros((4, 4), bool)
    pred[0, :4] = True            # 4 pixels
    truth[0, 1:4] = True          # 3 of them shared ...
    truth[1, :3] = True           # ... and 3 more: truth has 6
    assert dice_iou(pred, truth) == pytest.approx((2 * 3 / 10, 3 / 7))
    assert dice_iou(pred, np.zeros_like(pred)) == (0.0, 0.0)
    assert dice_iou(np.zeros_like(pred), np.zeros_like(pred)) == (1.0, 1.0)


def test_bootstrap_interval_agrees_with_scipy():
    data = np.random.default_rng(3).normal(10.0, 2.0, 300)
    ours = bootstrap_ci(lambda idx: float(data[idx].mean()), len(data), rounds=4000)
    theirs = stats.bootstrap((data,), np.mean, n_resamples=4000, method="percentile", rng=1).confidence_interval
    standard_error = data.std() / np.sqrt(len(data))
    assert ours[0] == pytest.approx(theirs.low, abs=0.1 * standard_error)
    assert ours[1] == pytest.approx(theirs.high, abs=0.1 * standard_error)
    assert ours[0] < data.mean() < ours[1]
    assert bootstrap_ci(lambda idx: 1.0, 10) == [1.0, 1.0]


def test_bootstrap_skips_undefined_resamples():
    labels = np.array([0] * 9 + [1])   # most resamples hold no positive: AUC-like statistics are undefined there
    interval = bootstrap_ci(lambda idx: 1.0 if labels[idx].any() else None, len(labels))
    assert interval == [1.0, 1.0]


def test_bootstrap_resamples_whole_clusters():
    """Five patients of twenty identical frames each carry the evidence of five scans, not a hundred:
    the clustered interval is the per-scan interval of the five patients' values, far wider than the
    interval that counts every frame."""
    per_patient = np.array([0.2, 0.9, 0.5, 0.7, 0.4])
    frames = np.repeat(per_patient, 20)
    patients = np.repeat([f"patient {p}" for p in range(5)], 20)
    clustered = bootstrap_ci(lambda idx: float(frames[idx].mean()), patients)
    assert clustered == pytest.approx(bootstrap_ci(lambda idx: float(per_patient[idx].mean()), len(per_patient)))
    naive = bootstrap_ci(lambda idx: float(frames[idx].mean()), len(frames))
    assert clustered[1] - clustered[0] > 3 * (naive[1] - naive[0])
    # items each their own cluster, in item order, resample exactly as a count of independent items
    singletons = [f"scan {i}" for i in range(len(frames))]
    assert bootstrap_ci(lambda idx: float(frames[idx].mean()), singletons) == naive


def test_auc_of_one_class_is_undefined_not_nan():
    """A resample of a few patients can hold benign lesions only: its benign-vs-malignant AUC is undefined
    (None, skipped by the bootstrap), not NaN (which turned BUS-UCLM's interval into [nan, nan])."""
    labels = np.array([0, 1, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.2, 0.3, 0.5]])
    assert classification_metrics(probs, labels)["bm_auc"] is None
    interval = bootstrap_ci(lambda idx: classification_metrics(probs[idx], labels[idx])["bm_auc"],
                            ["a", "b", "b"])
    assert interval is None


def test_cluster_members_keep_first_appearance_order():
    members = cluster_members(["b", "a", "b", "c"])
    assert [m.tolist() for m in members] == [[0, 2], [1], [3]]
    assert [m.tolist() for m in cluster_members(3)] == [[0], [1], [2]]
    assert [m.tolist() for m in cluster_members(np.int64(2))] == [[0], [1]], "a count, however it is typed"


def test_a_resample_lacking_a_class_gets_no_macro_auc():
    """A resample without the data's malignant scans would average two one-vs-rest AUCs where the value its
    interval brackets averages three (review)."""
    labels = np.array([0, 1, 1, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7]])
    assert classification_metrics(probs, labels, {0, 1, 2})["macro_auc"] == pytest.approx(1.0)
    resample = np.array([0, 1, 2, 1])  # indices: normal, benign, benign, benign
    assert classification_metrics(probs[resample], labels[resample], {0, 1, 2})["macro_auc"] is None
    assert classification_metrics(probs[resample], labels[resample])["macro_auc"] is not None, "a dataset without them"


def test_classification_metrics_on_a_known_case():
    labels = np.array([0, 1, 1, 2, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.1, 0.3, 0.6],
                      [0.1, 0.2, 0.7], [0.2, 0.2, 0.6], [0.1, 0.6, 0.3]])
    m = classification_metrics(probs, labels)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["recall_benign"] == pytest.approx(0.5) and m["recall_malignant"] == pytest.approx(2 / 3)
    assert m["recall_bm"] == pytest.approx((0.5 + 2 / 3) / 2)
    # benign vs malignant on the lesion scans, p_m / (p_b + p_m): 2/9, 6/9 (benign); 7/9, 6/8, 3/9 (malignant);
    # a malignant scan ranks above a benign one in 2 + 2 + 1 of the 6 pairs
    assert m["bm_auc"] == pytest.approx(5 / 6)
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 1, 1], [0, 1, 2]]
    assert m["lesions_called_normal"] == 0.0
    m = classification_metrics(np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.1, 0.3, 0.6]]), np.array([0, 1, 2]))
    assert m["lesions_called_normal"] == pytest.approx(0.5)  # one of the two lesion scans


def test_temperature_recovers_a_known_scale():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (4000, 3))
    labels = np.array([rng.choice(3, p=np.exp(z) / np.exp(z).sum()) for z in true_logits])
    assert fit_temperature(2.5 * true_logits, labels) == pytest.approx(2.5, rel=0.1)
