"""What both trainers share: per-source weights and the augmentation."""

from collections import defaultdict

import numpy as np
import pytest

from training.finetune import BUS_UCLM_SHARE, augment_batch, scan_weights
from training.split import samples_by_side


def test_bus_uclm_patients_weigh_equally_and_half_as_much_as_busi(busi_root, bus_uclm_root):
    uclm = samples_by_side("bus_uclm")["train"]
    n_busi = len(samples_by_side("busi")["train"])
    weights = scan_weights("bus_uclm", uclm, n_busi)
    assert weights.sum() == pytest.approx(BUS_UCLM_SHARE * n_busi, rel=1e-5)
    per_patient = defaultdict(float)
    for sample, weight in zip(uclm, weights):
        per_patient[sample.path.stem.rsplit("_", 1)[0]] += weight
    assert max(per_patient.values()) == pytest.approx(min(per_patient.values()), rel=1e-5)
    assert np.all(scan_weights("busi", samples_by_side("busi")["train"], n_busi) == 1)


def test_augmentation_moves_scan_and_mask_together():
    """A bright square on black with its mask: after any augmentation the mask still covers bright
    pixels and the black background stays outside it."""
    images = np.zeros((16, 128, 128, 3), np.uint8)
    masks = np.zeros((16, 128, 128), np.uint8)
    images[:, 40:90, 30:70] = 200
    masks[:, 40:90, 30:70] = 1
    out_images, out_masks = augment_batch(images, masks)
    assert out_images.shape == images.shape and out_masks.shape == masks.shape
    assert not np.array_equal(out_images, images), "something was augmented"
    for image, mask in zip(out_images, out_masks):
        inside, outside = image[..., 0][mask > 0], image[..., 0][mask == 0]
        assert inside.mean() > 2 * max(outside.mean(), 1), "the mask follows the square"


def test_cross_source_scores_read_the_chosen_epoch():
    from training.cross_source import cross_source_scores

    history = [{"val_score": 0.5, "bus_uclm_recall_bm": 0.1, "bus_uclm_macro_auc": 0.3, "bus_uclm_bm_auc": 0.2},
               {"val_score": 0.9, "bus_uclm_recall_bm": 0.6, "bus_uclm_macro_auc": 0.8, "bus_uclm_bm_auc": 0.7}]
    config = {"framing": {}, "training": {"sources": ["busi"], "best_epoch": 2, "history": history}}
    scores = cross_source_scores(config)
    assert scores["bus_uclm_score"] == pytest.approx(0.7) and scores["bus_uclm_bm_auc"] == 0.7
    assert scores["framing"] == "stretch" and "busi_score" not in scores


def test_cross_source_scores_of_a_segmenter_are_the_other_sources_numbers_at_the_chosen_epoch():
    from training.cross_source import cross_source_scores

    history = [{"val_score": 0.7, "busi_dice@0.5": 0.7, "bus_uclm_dice@0.5": 0.4, "bus_uclm_missed@0.5": 0.3},
               {"val_score": 0.6, "busi_dice@0.5": 0.6, "bus_uclm_dice@0.5": 0.5, "bus_uclm_missed@0.5": 0.1}]
    config = {"task": "segmentation", "framing": {"crop_to_field": True},
              "training": {"sources": ["busi"], "best_epoch": 1, "history": history, "normal_presence_weight": 0.5}}
    scores = cross_source_scores(config)
    assert scores["bus_uclm_dice@0.5"] == 0.4 and scores["bus_uclm_missed@0.5"] == 0.3
    assert scores["task"] == "segmentation" and scores["normal_presence_weight"] == 0.5
    assert "busi_dice@0.5" not in scores and "bus_uclm_score" not in scores
    assert scores["range_over_epochs"]["bus_uclm_dice@0.5"] == [0.4, 0.5] and "busi_dice@0.5" not in scores["range_over_epochs"]
