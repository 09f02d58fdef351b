"""Cross-source scoring on all of the unseen source but its test side, with the shipped classifier
recorded as if it had been trained on BUSI alone, on a few scans of each side."""

import json
import os

import numpy as np
import pytest

from training import tables
from training.arrays import subsample
from training.busi import TRAINING_SOURCES
from training.split import samples_by_side
from training.unseen_source import main, unseen_side

CLASSIFIER = "models/classifier"
LIMIT = 12


@pytest.fixture(scope="module")
def as_if_trained_on_busi(tmp_path_factory, busi_root, bus_uclm_root):
    """A run folder holding the shipped classifier's weights and a config that says it saw BUSI alone."""
    folder = tmp_path_factory.mktemp("xs_cls_busi_shipped")
    config = json.loads(open(f"{CLASSIFIER}/config.json").read())
    config["training"]["sources"] = ["busi"]
    (folder / "config.json").write_text(json.dumps(config))
    os.symlink(os.path.abspath(f"{CLASSIFIER}/model.keras"), folder / "model.keras")
    return folder, config


def test_the_unseen_side_is_the_sources_train_and_validation_scans_and_never_its_test_scans(bus_uclm_root):
    by_side = samples_by_side("bus_uclm")
    arrays = unseen_side("bus_uclm", 64, {"crop_to_field": True, "keep_aspect": True}, LIMIT)
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
                                   tables.classifier_number, "note.")
    assert f"| `{folder}` | BUSI (Egypt) | BUS-UCLM (Spain) train and validation sides (unseen) |" in text
    assert f"{np.round(row['bus_uclm_lesions_called_normal'], 3):.3f} |" in text
