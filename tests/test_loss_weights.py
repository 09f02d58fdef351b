"""The training loss weights on the real train sides: BUS-UCLM's patients and the three classes each
get the share of the loss the recipe says, whatever the number of frames behind them."""

import numpy as np
import pytest

from training.busi import CLASSES
from training.finetune import BUS_UCLM_SHARE, samples_by_side, scan_weights
from training.train_classifier import class_weights


@pytest.fixture(scope="module")
def train_side(busi_root, bus_uclm_root):
    busi, uclm = samples_by_side("busi")["train"], samples_by_side("bus_uclm")["train"]
    weights = np.concatenate([scan_weights("busi", busi, len(busi)), scan_weights("bus_uclm", uclm, len(busi))])
    labels = np.array([CLASSES.index(s.label) for s in busi + uclm])
    return labels, weights, len(busi)


def test_bus_uclm_weighs_its_share_of_busi(train_side):
    labels, weights, n_busi = train_side
    assert weights[:n_busi].sum() == pytest.approx(n_busi)
    assert weights[n_busi:].sum() == pytest.approx(BUS_UCLM_SHARE * n_busi)


def test_each_class_carries_an_equal_share_of_the_weighted_loss(train_side):
    labels, weights, _ = train_side
    loss_weights = weights * class_weights(labels, weights)[labels]
    shares = np.bincount(labels, weights=loss_weights, minlength=len(CLASSES)) / loss_weights.sum()
    np.testing.assert_allclose(shares, 1 / len(CLASSES), rtol=1e-6)
    assert loss_weights.sum() == pytest.approx(weights.sum()), "class weights move weight between classes, not scale it"
    # Frame counts would not do it: BUS-UCLM's many down-weighted normal frames would count as full scans.
    frame_balanced = weights * (len(labels) / (len(CLASSES) * np.bincount(labels)))[labels]
    assert np.bincount(labels, weights=frame_balanced)[CLASSES.index("normal")] / frame_balanced.sum() < 0.3
