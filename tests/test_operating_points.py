"""Matched operating points on the unseen source, with a shipped segmenter on a few validation scans."""

import dataclasses
import json

import pytest

from inference.models import load_model
from training.finetune import load_side
from training.operating_points import CAPS, best_dice_under, main, unseen_operating_points

SEGMENTER = "models/segmenter_fast"


def test_the_best_dice_under_a_cap_ignores_settings_that_flag_more_and_falls_back_to_drawing_nothing():
    grid = [{"val_dice": 0.8, "val_normal_fp": 0.5}, {"val_dice": 0.6, "val_normal_fp": 0.2},
            {"val_dice": 0.4, "val_normal_fp": 0.0}]
    assert [best_dice_under(grid, cap) for cap in (0.0, 0.1, 0.2, 0.5)] == [0.4, 0.4, 0.6, 0.8]
    assert best_dice_under(grid[:1], 0.1) == 0.0


@pytest.fixture(scope="module")
def as_if_trained_on_busi(busi_root, bus_uclm_root):
    """The fast segmenter with a record saying it saw BUSI alone, and a few validation scans of each source."""
    loaded = load_model(SEGMENTER)
    config = {**loaded.config, "training": {**loaded.config["training"], "sources": ["busi"]}}
    return dataclasses.replace(loaded, config=config), load_side("val", config["input_size"], 12, config["framing"])


def test_only_the_unseen_source_is_scored_and_looser_caps_never_score_lower(as_if_trained_on_busi):
    loaded, val = as_if_trained_on_busi
    points = unseen_operating_points(loaded, val)
    assert list(points) == ["bus_uclm"]
    numbers = points["bus_uclm"]
    at_caps = [numbers[f"dice@fp{cap}"] for cap in CAPS]
    assert at_caps == sorted(at_caps) and 0 <= at_caps[0] and at_caps[-1] <= 1
    assert at_caps[-1] > 0.3, "a trained segmenter finds lesions on scans it has seen the like of"
    own_flagged = numbers["normal_fp@own_choice"]
    for cap, dice in zip(CAPS, at_caps):  # the run's own setting is in the grid, so it bounds the best from below
        if own_flagged <= cap:
            assert dice >= numbers["dice@own_choice"] - 1e-9


def test_the_command_writes_one_row_per_run(tmp_path, bus_uclm_root, busi_root):
    out = tmp_path / "points.json"
    main([SEGMENTER, "--limit", "6", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["caps"] == list(CAPS) and report["side"] == "validation"
    assert report["rows"]["segmenter_fast"]["unseen"] == {}, "a model trained on every source has no unseen one"
