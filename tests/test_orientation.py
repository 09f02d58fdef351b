"""The orientation check: a scan shown as a negative gets no diagnosis, one shown upside down gets its
results with a warning, and scans as scanners show them (mirrored too) get neither."""

import keras
import numpy as np
import pytest
from PIL import Image

from inference.ood import ScreeningLayers, screening_features
from inference.orientation import INVERTED_WARNING, KINDS, OrientationCheck, top_and_bottom_means, warned_upside_down
from inference.preprocess import Framing, to_model_input
from training.fit_ood import candidate_layers

INVERTED = INVERTED_WARNING.split("(")[0]


def gray_of(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def test_the_shipped_classifier_has_a_check_read_in_its_own_pass(analyzer):
    check = analyzer.orientation
    assert check is not None and check.layer in candidate_layers(analyzer.classifier.encoder)
    assert analyzer.screening.names == list(dict.fromkeys((analyzer.ood.layer, check.layer)))
    assert 0.5 <= check.thresholds[KINDS.index("inverted")] < 1 and 0.5 <= check.thresholds[KINDS.index("upside down")] < 1


def test_each_check_reads_its_own_layer_from_the_one_pass(analyzer, examples):
    """The two checks may read different layers (rule 82 moved the distance's): the one pass that
    serves both gives each its own layer's features, as a model of that layer alone computes them."""
    model, config = analyzer.classifier.model, analyzer.classifier.config
    gray = gray_of(examples[0][0])
    inputs = to_model_input(gray, Framing.for_model(gray, config))[None]
    screening = ScreeningLayers("block9_out", "block13_out")
    _, pooled, halves = screening_features(model, config["logits_layer"], screening)(inputs)
    alone = {name: keras.Model(model.input, model.get_layer(name).output)(inputs, training=False).numpy()
             for name in ("block9_out", "block13_out")}
    assert np.allclose(pooled, alone["block9_out"].mean(axis=(1, 2)), atol=1e-5)
    assert np.allclose(halves, top_and_bottom_means(alone["block13_out"]), atol=1e-5)
    shipped = {name: keras.Model(model.input, model.get_layer(name).output)(inputs, training=False).numpy()
               for name in analyzer.screening.names}
    distance = analyzer.ood.distance(shipped[analyzer.ood.layer].mean(axis=(1, 2)))[0]
    assert analyzer.analyze(gray).feature_distance == pytest.approx(distance, rel=1e-4)


@pytest.mark.parametrize("alteration", ["as is", "mirrored"])
def test_scans_as_scanners_show_them_get_no_orientation_warning(analyzer, examples, alteration):
    for path, _ in examples:
        gray = gray_of(path)
        analysis = analyzer.analyze(np.ascontiguousarray(gray if alteration == "as is" else gray[:, ::-1]))
        assert not analysis.withheld, path.name
        assert not any(w.startswith(INVERTED) for w in analysis.warnings), (path.name, analysis.warnings)
        assert not warned_upside_down(analysis.warnings), (path.name, analysis.warnings)


def test_an_inverted_scan_gets_no_diagnosis(analyzer, examples):
    """Refused, by the out-of-distribution check where the negative lies far from every scan's features
    and by this check, with its own message, where it does not (most of them: that check lets them by)."""
    caught_here = 0
    for path, _ in examples:
        negative = 255 - gray_of(path)
        analysis = analyzer.analyze(negative)
        assert analysis.withheld and not analysis.mask().any(), path.name
        if analysis.feature_distance <= analyzer.ood.threshold:
            caught_here += 1
            assert any(w.startswith(INVERTED) for w in analysis.warnings), (path.name, analysis.warnings)
            assert analysis.no_answer == "inverted", path.name
        probabilities, warnings, no_answer = analyzer.classify(negative)
        assert probabilities is None and warnings[-1] == analysis.warnings[-1] and no_answer == analysis.no_answer
        [batched] = analyzer.analyze_batch([negative])
        assert batched.withheld and batched.warnings == analysis.warnings
    assert caught_here >= len(examples) // 2


def test_an_upside_down_scan_gets_its_results_with_a_warning(analyzer, examples):
    """Where the out-of-distribution check lets it by (one example here lies beyond it)."""
    shown = 0
    for path, _ in examples:
        flipped = np.ascontiguousarray(gray_of(path)[::-1])
        analysis = analyzer.analyze(flipped)
        if analysis.feature_distance > analyzer.ood.threshold:
            continue
        shown += 1
        assert not analysis.withheld and np.isclose(analysis.probabilities.sum(), 1), path.name
        assert warned_upside_down(analysis.warnings), (path.name, analysis.warnings)
        probabilities, warnings, no_answer = analyzer.classify(flipped)
        assert probabilities is not None and warned_upside_down(warnings) and no_answer is None
        [batched] = analyzer.analyze_batch([flipped])
        assert batched.warnings == analysis.warnings
    assert shown >= len(examples) - 2


def test_probabilities_follow_the_regression_and_the_file_round_trips(tmp_path):
    """Two features per half, one weight that calls "inverted" when the first top-half feature is high."""
    coef = np.zeros((3, 4))
    coef[1, 0] = 10.0
    check = OrientationCheck("layer", np.zeros(4), np.ones(4), coef, np.zeros(3), np.array([np.nan, 0.9, 0.7]))
    halves = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    probabilities = check.probabilities(halves)
    assert np.allclose(probabilities.sum(axis=1), 1) and probabilities[0, 1] > 0.99 and np.allclose(probabilities[1], 1 / 3)
    assert check.refusal(probabilities[0]) and not check.refusal(probabilities[1]) and not check.warnings(probabilities[0])
    check.save(tmp_path / "orientation.npz")
    loaded = OrientationCheck.load(tmp_path / "orientation.npz")
    assert loaded.layer == "layer" and np.allclose(loaded.probabilities(halves), probabilities)
    assert OrientationCheck.load(tmp_path / "missing.npz") is None


def test_the_shipped_thresholds_are_the_ones_its_rule_chose(analyzer):
    """The thresholds in orientation.npz are those of reports/orientation_check.json, and that report's
    cross-source grid bears out the rule of `training.fit_orientation`: the lowest grid value at which no
    real scan of the unseen source is called inverted, and at which at most 1 % are called upside down."""
    import json

    from training.busi import REPO_ROOT
    from training.fit_orientation import GRID, UPSIDE_DOWN_FALSE_ALARMS

    report = json.loads((REPO_ROOT / "reports" / "orientation_check.json").read_text())
    chosen = report["thresholds"]
    assert list(analyzer.orientation.thresholds[1:]) == [chosen["inverted"], chosen["upside down"]]
    grids = [direction["grid"] for direction in report["cross_source"]]
    assert len(grids) == 2 and all(set(grid) == {str(t) for t in GRID} for grid in grids)

    def first_passing(key, limit):
        return min(t for t in GRID if all(grid[str(t)][key] <= limit for grid in grids))

    assert chosen["inverted"] == first_passing("real_called_inverted", 0.0)
    assert chosen["upside down"] == first_passing("real_called_upside_down", UPSIDE_DOWN_FALSE_ALARMS)
    for source in report["shipped_on_validation"].values():
        assert source["real_called_inverted"] == 0 and source["inverted_detected"] >= 0.95
        assert source["real_called_upside_down"] <= UPSIDE_DOWN_FALSE_ALARMS and source["upside down_detected"] >= 0.95
