"""The segmenter's optional normal-scan presence term: it charges a confident blob on a scan without
a lesion, and leaves lesion scans to the Dice + cross-entropy loss."""

import keras
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
        extra = float(tf.reduce_mean(loss(truth, probs) - dice_bce_loss(truth, probs)))
        assert np.isclose(extra, 0.5 * -np.log(1 - peak), rtol=1e-4)


def test_lesion_scans_pay_nothing_extra():
    truth, probs = batch(0.99, lesion=True)
    assert np.allclose(with_normal_presence(dice_bce_loss, 1.0)(truth, probs), dice_bce_loss(truth, probs))


class AsCompiled(keras.losses.Loss):
    """A loss function as `model.compile` applies it: sample weights, then the mean over the batch."""

    def __init__(self, loss):
        super().__init__()
        self.loss = loss

    def call(self, y_true, y_pred):
        return self.loss(y_true, y_pred)


def test_each_scan_is_weighed_by_its_own_sample_weight():
    """Keras weighs a loss per scan only if the loss is per scan: one number for the batch was scaled by
    the batch's mean weight, so BUS-UCLM's down-weighted frames weighed as much as BUSI's scans (code
    review). Unweighted, the batch's loss is as before: mean cross-entropy + mean Dice loss of its lesion scans."""
    truths, maps = zip(*(batch(peak, lesion) for peak, lesion in ((0.9, True), (0.2, False), (0.6, True), (0.99, False))))
    truth, probs = tf.concat(truths, 0), tf.concat(maps, 0)
    for loss in (dice_bce_loss, with_normal_presence(dice_bce_loss, 0.5)):
        weighted = AsCompiled(loss)
        on_first, on_last = (float(weighted(truth, probs, sample_weight=tf.constant(w)))
                             for w in ([4.0, 0, 0, 0], [0, 0, 0, 4.0]))
        assert not np.isclose(on_first, on_last)
        per_scan = np.asarray(loss(truth, probs))
        assert np.isclose(on_first, per_scan[0]) and np.isclose(on_last, per_scan[3])
    bce = keras.losses.binary_crossentropy(truth, probs, axis=(1, 2, 3)).numpy()
    has_lesion = np.array([1, 0, 1, 0], bool)
    dice = np.array([(2 * float(tf.reduce_sum(t * p)) + 1) / (float(tf.reduce_sum(t)) + float(tf.reduce_sum(p)) + 1)
                     for t, p in zip(truths, maps)])
    assert np.isclose(float(tf.reduce_mean(dice_bce_loss(truth, probs))), bce.mean() + (1 - dice[has_lesion]).mean())
