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


def test_the_class_head_trains_the_encoder_but_is_not_part_of_the_segmenter():
    """With `--class-head-weight` training fits a view with normal/benign/malignant logits on the
    bottleneck; the segmenter it wraps (what is saved and served) keeps its one mask output."""
    from training.architectures import build_segmenter
    from training.train_segmenter import training_view

    segmenter = build_segmenter(64)
    plain, plain_loss, plain_targets = training_view(segmenter, dice_bce_loss, 0.0)
    assert plain is segmenter and plain_loss is dice_bce_loss
    masks, labels, weights = tf.zeros((2, 64, 64, 1)), tf.constant([0, 2]), tf.ones(2)
    assert plain_targets(masks, labels, weights)[0] is masks

    trainer, losses, targets = training_view(segmenter, dice_bce_loss, 0.5)
    outputs = trainer(np.zeros((2, 64, 64, 3), np.float32))
    assert outputs["mask"].shape == (2, 64, 64, 1) and outputs["classes"].shape == (2, 3)
    assert targets(masks, labels, weights)[0]["classes"] is labels
    logits = tf.constant([[4.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    per_scan = losses["classes"](labels, logits).numpy()
    assert np.allclose(per_scan, 0.5 * -np.log(np.exp(4) / (np.exp(4) + 2)), rtol=1e-5)
    head = {layer.name for layer in trainer.layers} - {layer.name for layer in segmenter.layers}
    assert head == {"aux_class_pool", "aux_class_dropout", "aux_class_logits"}
    shared = trainer.get_layer("decoder16_up")
    assert shared is segmenter.get_layer("decoder16_up")  # one set of weights: training the view trains the segmenter
