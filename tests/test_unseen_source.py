"""Cross-source scoring on all of the unseen source but its test side, with the shipped classifier and
the fast segmenter recorded as if they had been trained on BUSI alone, on a few scans of each side."""

import json

import numpy as np
import pytest

from run_folders import trained_on_busi_alone
from training import tables
from training.arrays import subsample
from training.busi import TRAINING_SOURCES
from training.split import samples_by_side
from training.unseen_source import main, source_sides

CLASSIFIER = "models/classifier"
SEGMENTER = "models/segmenter_fast"
LIMIT = 12


@pytest.fixture(scope="module")
def as_if_trained_on_busi(tmp_path_factory, busi_root, bus_uclm_root):
    return trained_on_busi_alone(CLASSIFIER, tmp_path_factory.mktemp("xs_cls_busi_shipped"))


def test_the_unseen_side_is_the_sources_train_and_validation_scans_and_never_its_test_scans(bus_uclm_root):
    by_side = samples_by_side("bus_uclm")
    arrays = source_sides("bus_uclm", 64, {"crop_to_field": True, "keep_aspect": True}, LIMIT)
    expected = subsample(by_side["train"], LIMIT) + subsample(by_side["val"], LIMIT)
    assert len(arrays["labels"]) == len(expected) > LIMIT
    assert list(arrays["labels"]) == [s.label_index for s in expected]
    assert set(arrays["source"]) == {TRAINING_SOURCES.index("bus_uclm")}
    assert not {s.path for s in expected} & {s.path for s in by_side["test"]}


def test_a_run_is_scored_on_the_source_it_did_not_see_and_the_table_reads_the_report(as_if_trained_on_busi, tmp_path):
    folder, config = as_if_trained_on_busi
    out = tmp_path / "unseen_source_classifiers_busi.json"
    [row] = main([str(folder), "--limit", str(LIMIT), "--out", str(out)])
    assert set(row) - {"members", "val_score"} and all(key.startswith("bus_uclm_") for key in row if key not in
                                                       ("members", "val_score"))
    assert row["val_score"] == config["training"]["history"][config["training"]["best_epoch"] - 1]["val_score"]
    assert row["bus_uclm_macro_auc"] > 0.6, "the shipped classifier (which did see BUS-UCLM) separates its classes"
    assert 0 <= row["bus_uclm_lesions_called_normal"] <= 1
    report = json.loads(out.read_text())
    assert report["side"] == "train + val" and report["trained_on"] == ["busi"] and report["scans"]["bus_uclm"] > LIMIT
    text = tables.render_ensembles(tmp_path, (out.name,), "classifiers", tables.CLASSIFIER_ENSEMBLE_COLUMNS,
                                   tables.row_number, "note.")
    assert f"| `{folder}` | BUSI (Egypt) | BUS-UCLM (Spain) train and validation sides (unseen) |" in text
    assert f"{np.round(row['bus_uclm_lesions_called_normal'], 3):.3f} |" in text


def test_a_segmenter_is_scored_alone_on_the_source_it_did_not_see_and_the_table_reads_the_report(
        tmp_path, busi_root, bus_uclm_root):
    (tmp_path / "xs_seg_busi_fast").mkdir()
    folder, config = trained_on_busi_alone(SEGMENTER, tmp_path / "xs_seg_busi_fast")
    out = tmp_path / "unseen_source_segmenters_busi.json"
    [row] = main([str(folder), "--limit", str(LIMIT), "--out", str(out)])
    assert all(key.startswith("bus_uclm_") for key in row if key not in ("members", "val_score"))
    assert row["val_score"] == config["training"]["history"][config["training"]["best_epoch"] - 1]["val_score"]
    assert row["bus_uclm_dice@0.5"] > 0.3, "the fast segmenter (which did see BUS-UCLM) finds its lesions"
    at_caps = [row[f"bus_uclm_dice@fp{cap}"] for cap in (0.1, 0.2)]
    assert at_caps == sorted(at_caps), "a looser cap on normals flagged never scores lower"
    assert 0 <= row["bus_uclm_missed@0.5"] <= 1 and 0 <= row["bus_uclm_normal_fp@own_choice"] <= 1
    assert json.loads(out.read_text())["task"] == "segmentation"
    text = tables.render_ensembles(tmp_path, (out.name,), "segmenters", tables.SEGMENTER_UNSEEN_COLUMNS,
                                   tables.row_number, "note.")
    assert f"| `{folder}` | BUSI (Egypt) | BUS-UCLM (Spain) train and validation sides (unseen) |" in text
    assert f"| {row['bus_uclm_dice@own_choice']:.3f} | {row['bus_uclm_normal_fp@own_choice']:.3f} |" in text


def test_a_saved_segmenter_ensemble_is_scored_like_its_members(tmp_path, busi_root, bus_uclm_root):
    from training import ensemble
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    members = [trained_on_busi_alone(SEGMENTER, tmp_path / name)[0] for name in ("a", "b")]
    saved = tmp_path / "xs_seg_busi_ens"
    ensemble.main([*map(str, members), "--classifier", "", "--limit", str(LIMIT), "--save", str(saved)])
    [alone, both] = main([str(members[0]), str(saved), "--limit", str(LIMIT)])
    assert both["val_score"] is None, "an ensemble kept no epoch of its own"
    assert np.isclose(both["bus_uclm_dice@0.5"], alone["bus_uclm_dice@0.5"], atol=1e-3), \
        "the mean of a model and itself draws what the model draws"
