"""The ensemble command on the shipped segmenter and a few validation scans per source."""

import json

import numpy as np
import pytest
from skimage.data import camera

from inference.models import load_model
from inference.preprocess import Framing, to_model_input
from training.ensemble import main as ensemble_main
from training.train_segmenter import POSTPROCESSING_KEYS

SEGMENTER = "models/segmenter_fast"  # a single U-Net (the shipped segmenter may be an ensemble already)


@pytest.fixture(scope="module")
def self_ensemble(tmp_path_factory):
    """A single U-Net averaged with itself on a few validation scans: (rows, report path, saved folder)."""
    folder = tmp_path_factory.mktemp("ensemble")
    rows = ensemble_main([SEGMENTER, SEGMENTER, "--limit", "12", "--out", str(folder / "e.json"),
                          "--save", str(folder / "model")])
    return rows, folder / "e.json", folder / "model"


def test_a_model_averaged_with_itself_is_scored_and_saved_as_the_model(self_ensemble):
    (alone, _, mean), report, saved_folder = self_ensemble
    assert mean["members"] == [SEGMENTER] * 2
    assert {k: v for k, v in mean.items() if k != "members"} == {k: v for k, v in alone.items() if k != "members"}
    assert 0.3 < alone["val_dice"] <= 1 and json.loads(report.read_text())["rows"][-1]["members"] == mean["members"]

    single, saved = load_model(SEGMENTER), load_model(str(saved_folder))
    assert saved.config["threshold"] == mean["threshold"] and saved.config["normal_gate"] == mean["normal_gate"]
    assert len(saved.config["gradcam_layer"]) == 2 and [m["model"] for m in saved.config["training"]["members"]] == [SEGMENTER] * 2
    scan = to_model_input(camera(), Framing.for_model(camera(), saved.config))[None]
    np.testing.assert_allclose(saved.model.predict(scan, verbose=0), single.model.predict(scan, verbose=0), atol=1e-5)


def test_serving_an_ensemble_of_a_model_with_itself_draws_and_explains_like_the_model(self_ensemble, analyzer, examples):
    """Through the whole pipeline: the same lesion probabilities and mask, and the same Seg-Grad-CAM —
    each member gets half the gradient, and the map over both members' channels is the model's map."""
    from inference.pipeline import Analyzer

    single = Analyzer(analyzer.classifier, load_model(SEGMENTER), warm_up=False)
    ensemble = Analyzer(analyzer.classifier, load_model(str(self_ensemble[2])), warm_up=False)
    ensemble.segmenter.config.update({key: single.segmenter.config.get(key) for key in POSTPROCESSING_KEYS})
    explained = 0
    for path in [path for path, truth in examples if truth != "normal"][:4]:
        one, both = single.analyze(path), ensemble.analyze(path)
        assert np.abs(one.lesion_probs - both.lesion_probs).max() < 1e-4
        assert np.array_equal(one.mask(), both.mask())
        if one.mask().any():
            assert np.abs(one.seg_map() - both.seg_map()).max() < 1e-3
            explained += 1
    assert explained >= 2


def test_members_that_frame_scans_differently_are_refused(capsys):
    with pytest.raises(SystemExit):
        ensemble_main([SEGMENTER, "models/segmenter"])
    assert "share input size and framing" in capsys.readouterr().err


def test_a_classifier_averaged_with_itself_is_scored_as_the_classifier():
    alone, _, mean = ensemble_main(["models/classifier", "models/classifier", "--limit", "12"])
    assert {k: v for k, v in mean.items() if k != "members"} == pytest.approx({k: v for k, v in alone.items() if k != "members"})
    assert 0.5 < alone["val_score"] <= 1 and 0 <= alone["bus_uclm_lesions_called_normal"] <= 1
    (only,) = ensemble_main(["models/classifier", "--limit", "12"])  # one folder: scored alone, one row
    assert only["members"] == ["models/classifier"]
    assert {k: v for k, v in only.items() if k != "members"} == pytest.approx({k: v for k, v in alone.items() if k != "members"})


def test_one_segmenter_is_not_saved_as_an_ensemble(capsys):
    with pytest.raises(SystemExit):
        ensemble_main([SEGMENTER, "--save", "unused"])
    assert "at least two members" in capsys.readouterr().err


def test_a_classifier_ensemble_is_not_saved(capsys):
    with pytest.raises(SystemExit):
        ensemble_main(["models/classifier", "models/classifier", "--save", "unused"])
    assert "segmenter ensembles only" in capsys.readouterr().err
