"""Forms of the normal gate compared on the unseen source, with the shipped classifier and the fast
segmenter recorded as if they had been trained on BUSI alone, on a few scans of each side."""

import json

import numpy as np

from inference.postprocess import hidden_by_normal_gate
from run_folders import trained_on_busi_alone
from training import tables
from training.train_segmenter import best_allowed
from training.unseen_gate import CHOICES, hidden_by_mean_evidence, main, most_shown_within_se

LIMIT = 12


def test_mean_evidence_lets_either_model_outweigh_the_other():
    p_normal = np.array([0.9, 0.9, 0.2, 0.2])
    peak = np.array([0.98, 0.5, 0.5, 0.35])
    # evidence (0.1 + 0.98) / 2 = 0.54, 0.3, 0.65, 0.575: the sure segmenter keeps its lesion, the sure classifier its faint one
    assert list(hidden_by_mean_evidence(p_normal, peak, 0.5)) == [False, True, False, False]
    assert list(hidden_by_normal_gate(p_normal, peak, 0.5, None)) == [True, True, False, False]
    assert not hidden_by_mean_evidence(p_normal, peak, None).any()


def test_the_one_standard_error_rule_draws_on_more_lesions_among_tied_settings():
    def result(name, dice, nothing_shown, normal_fp):
        return {"name": name, "val_dice": dice, "val_dice_se": 0.03, "val_nothing_shown": nothing_shown,
                "val_normal_fp": normal_fp, "val_normal_fp_by_source": {"busi": normal_fp}}
    results = [result("best", 0.80, 0.10, 0.05), result("tied, draws more", 0.78, 0.02, 0.10),
               result("tied, draws less", 0.79, 0.12, 0.0), result("draws on all, not tied", 0.76, 0.0, 0.05),
               result("draws on all, flags too many", 0.80, 0.0, 0.2)]
    assert best_allowed(results)["name"] == "best"
    assert most_shown_within_se(results)["name"] == "tied, draws more"
    over_cap = [result("flags fewest", 0.5, 0.3, 0.2), result("flags more", 0.8, 0.0, 0.3)]
    assert most_shown_within_se(over_cap)["name"] == best_allowed(over_cap)["name"] == "flags fewest"


def test_every_pair_is_chosen_on_its_own_source_and_scored_on_the_other_and_the_table_reads_it(
        tmp_path, busi_root, bus_uclm_root):
    (tmp_path / "cls").mkdir(), (tmp_path / "seg").mkdir()
    classifier, _ = trained_on_busi_alone("models/classifier", tmp_path / "cls")
    segmenter, _ = trained_on_busi_alone("models/segmenter_fast", tmp_path / "seg")
    out = tmp_path / "unseen_gate_busi.json"
    report = main(["--classifiers", str(classifier), "--segmenters", str(segmenter), "--limit", str(LIMIT),
                   "--out", str(out)])
    assert report["trained_on"] == "busi" and report["unseen"] == "bus_uclm" and report["scans"]["unseen"] > LIMIT
    [row] = report["rows"]
    for form in CHOICES:
        choice, unseen = row[form]["choice"], row[form]["unseen"]
        assert choice["val_normal_fp"] <= 0.1, "a few BUSI validation normals: some setting flags none of them"
        assert unseen["dice"] > 0.3, "the shipped models (which did see BUS-UCLM) find its lesions"
        assert 0 <= unseen["nothing_drawn"] <= 1 and 0 <= unseen["normal_fp"] <= 1
        assert row[form]["best_dice@fp0.1"] <= row[form]["best_dice@fp0.2"], "a looser cap never scores lower"
    best, most_shown = row["rectangle"]["choice"], row["rectangle_most_shown_within_se"]["choice"]
    assert most_shown["val_nothing_shown"] <= best["val_nothing_shown"]
    assert most_shown["val_dice"] >= best["val_dice"] - best["val_dice_se"]
    assert json.loads(out.read_text())["summary"]["rectangle"]["unseen_dice"] == row["rectangle"]["unseen"]["dice"]
    (tmp_path / "unseen_gate_bus_uclm.json").write_text(out.read_text())  # the table reads both directions
    both = (out.name, "unseen_gate_bus_uclm.json")
    text = tables.render_unseen_gate(tmp_path, (("rectangle", "rectangle", both), ("mean evidence", "mean_evidence", both)),
                                     "note.")
    assert "| mean evidence | BUSI (Egypt) | BUS-UCLM (Spain) train and validation sides | 1 |" in text
    dice = row["mean_evidence"]["unseen"]["dice"]
    assert f"| {dice:.3f} ({dice:.3f}–{dice:.3f}) |" in text and f"| **{dice:.3f}** |" in text
