"""The classifier's lesion-attention loss: which feature cells count as the lesion, and that the loss
rewards maps peaking there, ignores scans without a lesion, and stays finite."""

import numpy as np
import pytest
import tensorflow as tf

from training.architectures import build_classifier, with_class_maps
from training.train_classifier import BENIGN, MALIGNANT, lesion_attention_loss, lesion_cells, pointing_game_at_input_size

SIZE, CELLS = 224, 7


def masks_with_box(top, left, side):
    mask = np.zeros((1, SIZE, SIZE, 1), np.float32)
    mask[0, top : top + side, left : left + side] = 1
    return tf.constant(mask)


def test_small_lesion_still_has_a_cell():
    # a 10-px lesion straddling cells (2, 3) and (2, 4), 80 % of it in (2, 3)
    cells = lesion_cells(masks_with_box(70, 120, 10)).numpy()[0, ..., 0]
    assert cells.shape == (CELLS, CELLS)
    assert cells[2, 3] == 1 and cells.sum() == 1


def test_large_lesion_covers_its_cells_and_normal_scans_have_none():
    cells = lesion_cells(masks_with_box(32, 32, 96)).numpy()[0, ..., 0]
    assert cells[1:4, 1:4].all() and cells.sum() == 9
    assert lesion_cells(tf.zeros((1, SIZE, SIZE, 1))).numpy().sum() == 0


def maps_peaking_at(row, col, classes=3):
    logits = np.zeros((1, CELLS, CELLS, classes), np.float32)
    logits[0, row, col, :] = 5.0
    return tf.constant(logits)


def test_loss_rewards_maps_on_the_lesion():
    loss = lesion_attention_loss(1.0)
    target = lesion_cells(masks_with_box(64, 64, 32))  # cell (2, 2)
    on_lesion = float(loss(target, maps_peaking_at(2, 2))[0])
    elsewhere = float(loss(target, maps_peaking_at(6, 0))[0])
    assert on_lesion < 1 and elsewhere > 10 * on_lesion
    assert float(lesion_attention_loss(0.5)(target, maps_peaking_at(6, 0))[0]) == pytest.approx(elsewhere / 2)


def test_loss_is_zero_and_finite_without_a_lesion():
    cell_logits = tf.Variable(tf.random.normal((2, CELLS, CELLS, 3)))
    target = tf.concat([tf.zeros((1, CELLS, CELLS, 1)), lesion_cells(masks_with_box(0, 0, 32))], axis=0)
    with tf.GradientTape() as tape:
        per_scan = lesion_attention_loss(1.0)(target, cell_logits)
    gradient = tape.gradient(per_scan, cell_logits).numpy()
    assert float(per_scan[0]) == 0 and float(per_scan[1]) > 0
    assert np.isfinite(gradient).all() and not gradient[0].any()
    # only the lesion classes' maps are pulled towards the lesion
    assert not gradient[1, ..., 0].any() and gradient[1, ..., BENIGN].any() and gradient[1, ..., MALIGNANT].any()


def test_class_maps_are_the_logits_layer_at_every_cell():
    """Averaging the cell maps gives the model's logits: the head is exactly a class-activation map."""
    model = build_classifier(SIZE)
    trainer = with_class_maps(model)
    images = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    outputs = trainer(images, training=False)
    logits = np.log(outputs["probs"].numpy())
    mean_cells = outputs["cells"].numpy().mean(axis=(1, 2))
    assert outputs["cells"].shape == (2, CELLS, CELLS, 3)
    np.testing.assert_allclose(logits - logits.mean(1, keepdims=True),
                               mean_cells - mean_cells.mean(1, keepdims=True), atol=1e-4)
    assert len(trainer.weights) == len(model.weights)


def test_pointing_estimate():
    masks = np.zeros((2, SIZE, SIZE), bool)
    masks[:, 64:96, 64:96] = True
    cells = np.concatenate([maps_peaking_at(2, 2).numpy(), maps_peaking_at(6, 6).numpy()])
    probs = np.array([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    assert pointing_game_at_input_size(cells, probs, masks) == 0.5
