"""The segmenter's post-processing is chosen on validation under a cap on normal scans flagged that
holds for each source: a rule that flags few normals pooled, because one scanner's normals are many
and easy, must not pass while it flags another scanner's normals often."""

import numpy as np

from inference.models import load_model
from inference.postprocess import lesion_mask
from training.finetune import load_side
from training.metrics import dice_iou
from training.train_segmenter import (FULL_GRID, MAX_NORMAL_FP_RATE, choose_postprocessing, lesion_probabilities,
                                      mask_grid, trade_off_frontier, validation_scores, worst_normal_fp)

GRID = {"threshold": (0.5,), "min_area_fraction": (0.0,)}


def scans(n_lesion: int, n_normal: int, source: int, normal_peak, lesion_peak: float = 0.9):
    """Lesion scans (a 4x4 square at `lesion_peak`) then normal scans with one pixel at `normal_peak[i]`."""
    probs = np.full((n_lesion + n_normal, 8, 8), 0.01, np.float32)
    masks = np.zeros((n_lesion + n_normal, 8, 8), np.uint8)
    probs[:n_lesion, 2:6, 2:6], masks[:n_lesion, 2:6, 2:6] = lesion_peak, 1
    probs[n_lesion:, 0, 0] = normal_peak
    labels = np.array([1] * n_lesion + [0] * n_normal)
    return probs, {"masks": masks, "labels": labels, "source": np.full(len(labels), source)}


def joined(*parts):
    probs = np.concatenate([p for p, _ in parts])
    return probs, {key: np.concatenate([v[key] for _, v in parts]) for key in parts[0][1]}


def test_scores_are_mean_lesion_dice_and_share_of_normals_drawn():
    probs, val = scans(3, 4, 0, [0.9, 0.9, 0.1, 0.1])
    dice, normal_fp = validation_scores(probs, val, 0.5)
    assert np.isclose(dice, 1.0) and np.isclose(normal_fp, 0.5)
    p_normal = np.array([0.8] + [0.1] * 6)  # one lesion hidden by the classifier's gate scores 0 ...
    assert np.isclose(validation_scores(probs, val, 0.5, p_normal=p_normal, gate=0.5)[0], 2 / 3)
    # ... unless the segmenter's peak inside it (0.9) reaches the sparing level
    assert np.isclose(validation_scores(probs, val, 0.5, p_normal=p_normal, gate=0.5, spares=0.85)[0], 1.0)
    assert np.isclose(validation_scores(probs, val, 0.5, p_normal=p_normal, gate=0.5, spares=0.95)[0], 2 / 3)


def test_results_carry_the_dice_standard_error_and_the_lesions_left_blank():
    probs, val = scans(3, 4, 0, [0.1] * 4)
    p_normal = np.array([0.8] + [0.1] * 6)  # the first lesion is hidden: per-scan Dice 0, 1, 1
    _, results = choose_postprocessing(probs, val, p_normal, GRID)
    gated = next(r for r in results if r["normal_gate"] == 0.5 and r["normal_gate_spares"] is None)
    assert np.isclose(gated["val_dice"], 2 / 3) and np.isclose(gated["val_nothing_shown"], 1 / 3)
    assert np.isclose(gated["val_dice_se"], np.std([0, 1, 1], ddof=1) / np.sqrt(3))


def test_one_sources_flagged_normals_are_not_averaged_away():
    # source 0: 20 normals, 3 flagged (15 %); source 1: 80 normals, none flagged -> pooled 3 %
    probs, val = joined(scans(5, 20, 0, [0.9] * 3 + [0.1] * 17), scans(5, 80, 1, [0.1] * 80))
    p_normal = np.zeros(len(val["labels"]))
    p_normal[5:8] = 0.95  # the classifier is sure of the three flagged normals
    best, results = choose_postprocessing(probs, val, p_normal, GRID)
    ungated = next(r for r in results if r["normal_gate"] is None)
    assert np.isclose(ungated["val_normal_fp"], 0.03) and np.isclose(ungated["val_normal_fp_by_source"]["busi"], 0.15)
    assert max(best["val_normal_fp_by_source"].values()) <= MAX_NORMAL_FP_RATE
    assert best["normal_gate"] is not None and np.isclose(best["val_dice"], 1.0)


def test_without_an_allowed_rule_the_fewest_flags_win():
    probs, val = scans(4, 4, 1, [0.9] * 4)
    best, _ = choose_postprocessing(probs, val, None, GRID)
    assert best["normal_gate"] is None and np.isclose(best["val_normal_fp_by_source"]["bus_uclm"], 1.0)


def test_the_gate_spares_lesions_the_segmenter_is_sure_of_when_that_wins_on_validation():
    # the classifier calls every scan normal; lesions peak at 0.995, five flagged normals at 0.97: only
    # sparing from 0.99 keeps the lesions and hides those normals
    probs, val = scans(5, 20, 0, [0.97] * 5 + [0.1] * 15, lesion_peak=0.995)
    best, results = choose_postprocessing(probs, val, np.ones(len(val["labels"])), GRID)
    assert best["normal_gate"] is not None and best["normal_gate_spares"] == 0.99
    assert np.isclose(best["val_dice"], 1.0) and np.isclose(best["val_normal_fp"], 0.0)
    unspared = [r for r in results if r["normal_gate"] is not None and r["normal_gate_spares"] is None]
    assert all(np.isclose(r["val_dice"], 0.0) for r in unspared), "without sparing, the gate hides every lesion"
    assert not any(r["normal_gate_spares"] is not None for r in results if r["normal_gate"] is None)


def test_a_peak_threshold_drops_faint_components_but_keeps_a_kept_ones_faint_rim():
    probs = np.zeros((40, 40), np.float32)
    probs[5:15, 5:15], probs[8:12, 8:12] = 0.5, 0.95   # a lesion: a sure core in a fainter rim
    probs[25:35, 25:35] = 0.6                          # faint tissue, nowhere sure
    plain, peaked = lesion_mask(probs, 0.4), lesion_mask(probs, 0.4, peak_threshold=0.9)
    assert plain.sum() == 200 and peaked.sum() == 100 and peaked[5:15, 5:15].all()
    assert lesion_mask(probs, 0.4, largest_only=True, peak_threshold=0.9).sum() == 100, \
        "the largest component is chosen among those whose peak qualifies"
    assert not lesion_mask(probs, 0.4, peak_threshold=0.99).any()


def test_a_peak_threshold_wins_when_outlines_need_a_low_threshold_and_normals_a_high_one():
    # lesions: the truth's outer ring at 0.45, its centre at 0.95; five of 20 normals show a faint 0.6 blob.
    # One threshold either cuts the outline (0.7: Dice 0.4) or flags the normals (0.4: 25 %); hysteresis does neither.
    probs, val = scans(5, 20, 0, [0.6] * 5 + [0.1] * 15, lesion_peak=0.45)
    probs[:5, 3:5, 3:5] = 0.95
    grid = {"threshold": (0.4, 0.7), "peak_threshold": (None, 0.9), "min_area_fraction": (0.0,)}
    best, results = choose_postprocessing(probs, val, None, grid)
    assert best["threshold"] == 0.4 and best["peak_threshold"] == 0.9
    assert np.isclose(best["val_dice"], 1.0) and np.isclose(best["val_normal_fp"], 0.0)
    assert not any(r["peak_threshold"] == 0.9 and r["threshold"] > 0.9 for r in results)
    assert {r["peak_threshold"] for r in results if r["threshold"] == 0.7} == {None, 0.9}


def test_the_kept_frontier_holds_every_setting_no_other_beats():
    probs, val = scans(5, 20, 0, [0.6] * 5 + [0.1] * 15, lesion_peak=0.45)
    probs[:5, 3:5, 3:5] = 0.95
    _, results = choose_postprocessing(probs, val, np.linspace(0, 1, len(val["labels"])))
    frontier = trade_off_frontier(results)
    assert 0 < len(frontier) < len(results)
    for row in results:  # every setting is matched or beaten by one on the frontier
        assert any(worst_normal_fp(f) <= worst_normal_fp(row) and f["val_dice"] >= row["val_dice"] for f in frontier)
    fps = [worst_normal_fp(f) for f in frontier]
    assert fps == sorted(fps) and [f["val_dice"] for f in frontier] == sorted(f["val_dice"] for f in frontier)


def test_the_grid_scores_every_setting_as_serving_would_draw_it(busi_root, bus_uclm_root):
    """The grid scores settings from each map's components, labelled once per threshold; what it
    reports must be what `lesion_mask` draws, on a real segmenter's maps of real scans."""
    loaded = load_model("models/segmenter")
    val = load_side("val", loaded.config["input_size"], 10, loaded.config["framing"])
    probs = lesion_probabilities(loaded, val["images"])
    grid = mask_grid(probs, val)
    assert len(grid) == len({tuple(setting.values()) for setting, _ in grid}) > 100
    for setting, (dice, drawn, peaks) in grid:
        drawings = [lesion_mask(p, **setting) for p in probs]
        assert np.allclose(dice, [dice_iou(d, m > 0)[0] for d, m in zip(drawings, val["masks"])])
        assert (drawn == [d.any() for d in drawings]).all()
        assert np.allclose(peaks, [p[d].max() if d.any() else 0.0 for p, d in zip(probs, drawings)])
    assert {setting["threshold"] for setting, _ in grid} == set(FULL_GRID["threshold"])
    assert any(drawn.any() for _, (_, drawn, _) in grid) and any(dice.max() > 0.5 for _, (dice, _, _) in grid)


def test_fallback_draws_the_region_holding_the_peak_only_when_the_peak_is_high_enough():
    """Rule 64's fallback (training.fallback) draws one region: the thresholded region that holds the map's
    highest value, and nothing when that value is under the peak asked."""
    from training.fallback import most_likely_region

    probs = np.full((10, 12), 0.05, np.float32)
    probs[1:4, 1:4] = 0.6   # the larger region, a lower peak
    probs[2, 2] = 0.7
    probs[6:8, 8:10] = 0.8  # the peak's region
    region = most_likely_region(probs, threshold=0.5, min_peak=0.75)
    assert region.sum() == 4 and region[6:8, 8:10].all()
    assert not most_likely_region(probs, threshold=0.5, min_peak=0.85).any()
    assert most_likely_region(probs, threshold=0.65, min_peak=0.0).sum() == 4  # at 0.65 the first region is one pixel
