"""The out-of-distribution check: images that are not breast ultrasound get no diagnosis."""

import csv
import json

import numpy as np
import pytest
import skimage.data

from inference.__main__ import main as batch_main
from inference.ood import BLANK_WARNING, FeatureDistance
from training.busi import REPO_ROOT
from training.fit_ood import (MAX_RENDERED_REFUSED, candidate_layers, gray_picture, in_sector, kept_layer, layer_check,
                              probe_framed)
from training.ood_held_out import reviewed_cell

NOT_ULTRASOUND = {"camera": skimage.data.camera(), "coins": skimage.data.coins(), "moon": skimage.data.moon(),
                  "page": skimage.data.page(), "text": skimage.data.text(), "astronaut": skimage.data.astronaut(),
                  "blank": np.zeros((400, 500), np.uint8), "constant": np.full((400, 500), 128, np.uint8)}


def test_the_shipped_classifier_has_a_check(analyzer):
    assert analyzer.ood is not None and analyzer.ood.threshold > 0


def test_the_check_was_chosen_among_layers_of_the_classifiers_own_encoder(analyzer):
    """The candidates follow the encoder (Lite1 has five more blocks than Lite0), exist in the shipped
    classifier, and include the layer its check uses."""
    candidates = candidate_layers(analyzer.classifier.encoder)
    names = {layer.name for layer in analyzer.classifier.model.layers}
    assert set(candidates) <= names and analyzer.ood.layer in candidates
    assert candidates[-2] == f"block{max(int(n[5:-4]) for n in names if n.startswith('block') and n.endswith('_out'))}_out"
    assert candidate_layers("lite0") == ["block5_out", "block7_out", "block9_out", "block11_out", "block13_out",
                                         "block15_out", "top_activation"]


@pytest.mark.parametrize("name", sorted(NOT_ULTRASOUND))
def test_images_that_are_not_ultrasound_are_refused(analyzer, name):
    """Refused by the feature distance, or — a black image, which holds nothing to diagnose — as blank,
    or — a colour photo — for its colour."""
    analysis = analyzer.analyze(NOT_ULTRASOUND[name])
    assert analysis.withheld and not analysis.mask().any() and analysis.seg_cam_overlay() is None
    if name == "blank":
        assert analysis.warnings == [BLANK_WARNING] and analysis.no_answer == "blank"
    elif NOT_ULTRASOUND[name].ndim == 3:
        assert analysis.warnings[0].startswith("This image is in colour") and analysis.no_answer == "in colour"
    else:
        assert analysis.feature_distance > analyzer.ood.threshold and analysis.no_answer == "not recognised"
        assert any("does not look like the breast ultrasound" in w for w in analysis.warnings)
    probabilities, warnings, no_answer = analyzer.classify(NOT_ULTRASOUND[name])
    assert probabilities is None and warnings and no_answer == analysis.no_answer


IN_A_SECTOR = {**{name: NOT_ULTRASOUND[name] for name in ("camera", "coins", "moon", "page", "text", "astronaut")},
               "motorcycle": skimage.data.stereo_motorcycle()[0]}


@pytest.mark.parametrize("speckle", [False, True])
@pytest.mark.parametrize("name", sorted(IN_A_SECTOR))
def test_pictures_shown_in_a_probes_sector_are_refused(analyzer, name, speckle):
    """A picture inside a convex probe's sector on black is framed as a scan is (the sector survives
    cropping) and looks like another organ's ultrasound: still refused (the motorcycle got "benign 80 %"
    with a lesion drawn from a check whose layer was chosen on plain pictures only). None of these
    pictures is among the design negatives that chose the check's layer."""
    picture = IN_A_SECTOR[name]
    picture = picture if picture.ndim == 2 else picture.mean(axis=-1).astype(np.uint8)
    analysis = analyzer.analyze(in_sector(picture, np.random.default_rng(1) if speckle else None))
    assert analysis.withheld and analysis.feature_distance > analyzer.ood.threshold


@pytest.mark.parametrize("name", sorted(IN_A_SECTOR))
def test_pictures_in_random_probe_framings_are_refused(analyzer, name):
    """Framed as many probes and exports frame a scan — convex sectors of other angles, apexes and radii,
    a linear probe's rectangle, darkened or lightened, blurred, speckled: still refused. One sector
    shape chose the layer before, and a cell in a slightly different sector passed it."""
    rng = np.random.default_rng(3)
    framed = [probe_framed(gray_picture(IN_A_SECTOR[name]), rng) for _ in range(6)]
    for analysis in analyzer.analyze_batch(framed):
        assert analysis.withheld and analysis.feature_distance > analyzer.ood.threshold


def test_the_cell_a_review_found_passing_is_refused(analyzer):
    """scikit-image's cell in a 70-degree sector was called benign at 86 % with the check on `block11_out`."""
    analysis = analyzer.analyze(reviewed_cell())
    assert analysis.withheld and analysis.feature_distance > analyzer.ood.threshold


def test_the_shipped_layer_is_the_one_fit_ood_kept(analyzer):
    """The shipped check is the layer `training.fit_ood` kept, and that layer let the rendered validation
    scans pass as rule 82 asks."""
    report = json.loads((REPO_ROOT / "reports" / "ood_layers.json").read_text())
    kept = next(record for record in report["layers"] if record["layer"] == report["kept"])
    assert analyzer.ood.layer == report["kept"] and analyzer.ood.threshold == pytest.approx(kept["threshold"])
    assert kept["rendered_val_refused"] <= MAX_RENDERED_REFUSED


def test_the_kept_layer_lets_real_scans_pass_before_it_refuses_pictures():
    records = [{"rendered_val_refused": 0.20, "negatives_refused": 1.0},
               {"rendered_val_refused": 0.04, "negatives_refused": 0.9},
               {"rendered_val_refused": 0.01, "negatives_refused": 0.9},
               {"rendered_val_refused": 0.00, "negatives_refused": 0.3}]
    assert kept_layer(records) == 2
    with pytest.raises(SystemExit):
        kept_layer(records[:1])


def test_a_rendering_is_scored_by_a_check_that_was_not_fitted_on_it():
    """Rule 83: fitted on a rendering, a check accepts that rendering's validation scans by construction,
    so each rendering is scored by the check fitted without it. Here the rendering moves scans along a
    direction the scans as they are never span: fitted on it the check accepts such scans, but the
    rendering's own share is scored without it and so every one of its scans is refused."""
    rng = np.random.default_rng(0)

    def scans(n, shift):
        features = np.zeros((n, 6))
        features[:, :2] = rng.normal(size=(n, 2))
        features[:, 5] = shift
        return features

    train = {"features": {"as is": scans(200, 0.0), "brighter": scans(200, 5.0)}, "source": np.arange(200) % 2}
    val = {"features": {"as is": scans(40, 0.0), "brighter": scans(40, 5.0)}, "source": np.arange(40) % 2}
    negatives = np.full((3, 6), 50.0)
    check, record = layer_check(train, val, negatives, ["as is", "brighter"], "layer", components=2)
    assert (check.distance(val["features"]["brighter"]) <= check.threshold).all()
    assert record["rendered_val_refused_by_rendering"] == {"brighter": 1.0} and record["negatives_refused"] == 1.0
    as_is_only, record = layer_check(train, val, negatives, ["as is"], "layer", components=2)
    assert record["rendered_val_refused"] == 1.0 and as_is_only.threshold < check.threshold


def test_held_out_scans_of_every_source_are_accepted(analyzer, examples):
    for path, _ in examples:
        analysis = analyzer.analyze(path)
        assert not analysis.withheld, (path.name, analysis.feature_distance)


def test_the_app_and_the_batch_command_withhold_the_diagnosis(analyzer, tmp_path):
    import app

    label, class_cam, overlay, mask, report, seg_cam, notes = app.Handlers(analyzer).render(
        analyzer.analyze(NOT_ULTRASOUND["camera"]), "predicted class", None, 0.5)
    assert label == "No answer: this image is not recognised as a breast ultrasound scan"
    assert class_cam is None and mask is None and seg_cam is None
    assert report["predicted_class"] is None and report["probabilities"] is None and report["out_of_distribution"]
    assert report["no_answer"] == "not recognised"
    assert "does not look like" in notes
    from PIL import Image

    Image.fromarray(NOT_ULTRASOUND["coins"]).save(tmp_path / "coins.png")
    mask, report = app.Handlers(analyzer).segment(str(tmp_path / "coins.png"))
    assert mask is None and report["lesion"] is None, "no empty mask that would read as 'no lesion'"
    out = tmp_path / "rows.csv"
    batch_main([str(tmp_path / "coins.png"), "--out", str(out)])
    [row] = list(csv.DictReader(out.open()))
    assert row["predicted_class"] == "" and row["p_malignant"] == "" and "does not look like" in row["warnings"]


def test_distance_is_zero_inside_the_training_subspace(tmp_path):
    components = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 2)))[0].T  # 2 orthonormal rows in 6-D
    check = FeatureDistance("layer", np.ones(6), components, 1.0)
    inside = np.ones(6) + 3 * components[0] - 2 * components[1]
    outside = inside + 0.5 * np.linalg.svd(components)[2][-1]  # a direction orthogonal to both
    assert check.distance(inside[None])[0] == pytest.approx(0, abs=1e-9)
    assert check.distance(outside[None])[0] == pytest.approx(0.5)
    check.save(tmp_path / "ood.npz")
    loaded = FeatureDistance.load(tmp_path / "ood.npz")
    assert loaded.layer == "layer" and loaded.threshold == 1.0 and np.allclose(loaded.components, components)
    assert FeatureDistance.load(tmp_path / "missing.npz") is None


def test_a_dark_scan_is_not_taken_for_a_blank_image(examples):
    """Only an image with nothing above a scan's black background is blank: a scan darkened to a
    tenth of its brightness still shows its field above it."""
    from PIL import Image

    from inference.ood import is_blank

    path = examples[0][0]
    gray = np.asarray(Image.open(path).convert("L"))
    assert is_blank(np.zeros_like(gray)) and is_blank(np.full_like(gray, 12))
    assert not is_blank(gray) and not is_blank((gray // 10).astype(np.uint8))
