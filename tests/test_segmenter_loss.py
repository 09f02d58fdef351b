"""The segmenter's optional normal-scan presence term: it charges a confident blob on a scan without
a lesion, and leaves lesion scans to the Dice + cross-entropy loss."""

import numpy as np
import tensorflow as tf

from training.train_segmenter import dice_bce_loss, with_normal_presence


def batch(peak: float, lesion: bool):
    truth = np.zeros((1, 8, 8, 1), np.float32)
    if lesion:
        truth[0, 2:5, 2:5] = 1
    probs = np.full((1, 8, 8, 1), 0.01, np.float32)
    probs[0, 6, 6] = peak
    return tf.constant(truth), tf.constant(probs)


def test_weight_zero_is_the_plain_loss():
    assert with_normal_presence(dice_bce_loss, 0.0) is dice_bce_loss


def test_a_confident_blob_on_a_normal_scan_costs_minus_log_one_minus_its_probability():
    loss = with_normal_presence(dice_bce_loss, 0.5)
    for peak in (0.2, 0.9, 0.99):
        truth, probs = batch(peak, lesion=False)
        extra = float(loss(truth, probs) - dice_bce_loss(truth, probs))
        assert np.isclose(extra, 0.5 * -np.log(1 - peak), rtol=1e-4)


def test_lesion_scans_pay_nothing_extra():
    truth, probs = batch(0.99, lesion=True)
    assert np.isclose(float(with_normal_presence(dice_bce_loss, 1.0)(truth, probs)), float(dice_bce_loss(truth, probs)))
