"""Every metric table in README.md and the model cards is what `reports/*.json` says."""

import json
import shutil

import pytest

from training import tables


def test_committed_tables_match_the_reports():
    assert tables.main(["--check"]) == 0, "run python -m training.tables"


def test_every_table_has_every_source_and_every_report_exists():
    for path in tables.FILES:
        text = path.read_text()
        assert "<!-- metrics:" in text, path
        assert "not evaluated" not in tables.regenerate(text), path
    readme = tables.FILES[0].read_text()
    for _, title in tables.DATASETS:
        assert title in readme


def test_markers_on_one_line_are_an_error_not_an_empty_table():
    """A card had its two markers on one line: the table was never generated and --check passed."""
    with pytest.raises(ValueError, match="enclose no table.*: classifier"):
        tables.regenerate("<!-- metrics:classifier --><!-- /metrics:classifier -->")


def test_a_changed_report_changes_the_table(tmp_path):
    reports = tmp_path / "reports"
    shutil.copytree(tables.REPORTS, reports)
    text = "<!-- metrics:classifier -->\n<!-- /metrics:classifier -->"
    before = tables.regenerate(text, reports)
    report = json.loads((reports / "classifier_breast-external.json").read_text())
    report["bm_auc"], report["ci95"]["bm_auc"] = 0.5, [0.4, 0.6]
    (reports / "classifier_breast-external.json").write_text(json.dumps(report))
    after = tables.regenerate(text, reports)
    assert before != after and "0.500 (0.400–0.600)" in after


def test_a_bar_is_met_or_not_by_the_reported_value(tmp_path):
    reports = tmp_path / "reports"
    shutil.copytree(tables.REPORTS, reports)
    path = reports / "segmenter_busi-test.json"
    report = json.loads(path.read_text())
    row = lambda: next(line for line in tables.render_bars(reports).splitlines()
                       if line.startswith("| BUSI test | normal scans with a lesion drawn"))
    for value, met in ((0.10, "| yes |"), (0.15, "| yes |"), (0.20, "| **no** |")):
        report["normal_fp_rate"] = value
        path.write_text(json.dumps(report))
        assert row().endswith(met) and f"{value:.3f}" in row()


def test_classifier_candidates_show_which_weights_were_kept_and_the_rendering_panel(tmp_path):
    numbers = {"recall_bm": 0.8, "macro_auc": 0.9, "bm_auc": 0.85, "recall_malignant": 0.7, "lesions_called_normal": 0.05}
    panel = {"as is": {"val_score": 0.874}, "re-framed": {"val_score": 0.8}}
    record = {"command": "python -m training.candidates a b", "candidates": {
        "a": {"best_epoch": 12, "epochs_averaged": 1, "minutes": 10.2, "val_score": 0.874, "val_ece": 0.059,
              "by_source": {"busi": numbers, "bus_uclm": {**numbers, "lesions_called_normal": 0.125}},
              "renderings": panel, "panel_score": 0.837, "panel_lesions_called_normal": 0.1},
        "b": {"best_epoch": 19, "epochs_averaged": 10, "minutes": 11.0, "val_score": 0.9, "val_ece": 0.05,
              "by_source": {"busi": numbers}, "renderings": panel, "panel_score": 0.837,
              "panel_lesions_called_normal": 0.2}}}
    (tmp_path / "classifier_candidates.json").write_text(json.dumps(record))
    lines = tables.render_classifier_candidates(tmp_path).splitlines()
    assert lines[2] == "| `a` | epoch 12 | 10.2 | 0.874 | BUSI (Egypt) | 0.800 | 0.900 | 0.850 | 0.050 |"
    assert lines[3].startswith("|  |  |  |  | BUS-UCLM (Spain) |") and lines[3].endswith("| 0.125 |")
    assert lines[4].startswith("| `b` | mean of epochs 10–19 |")
    assert lines[6] == "| candidate | as is | re-framed | panel: mean val score | panel: lesion scans called normal |"
    assert lines[8] == "| `a` | 0.874 | 0.800 | 0.837 | 0.100 |"
    assert lines[9].endswith("| 0.200 |")


def test_cross_source_tables_average_each_recipe_over_its_directions(tmp_path):
    def run(trained_on, other, value):
        return {"trained_on": [trained_on], f"{other}_bm_auc": value, "range_over_epochs": {f"{other}_bm_auc": [0, 1]}}

    rows = {"xs_busi": run("busi", "bus_uclm", 0.6), "xs_bus_uclm": run("bus_uclm", "busi", 0.8),
            "xs_busi_zoom": run("busi", "bus_uclm", 0.7)}
    (tmp_path / "xs.json").write_text(json.dumps(rows))
    text = tables.render_cross_source(tmp_path, "xs.json", (("bm_auc", "AUC"),), "note.")
    assert "| `xs_*`: mean of the 2 directions | | | 0.700 |" in text
    assert "xs_*_zoom`: mean" not in text, "one direction is no mean"


def test_a_recipe_run_with_several_seeds_is_also_averaged_over_seeds_and_directions(tmp_path):
    def run(trained_on, other, value):
        return {"trained_on": [trained_on], f"{other}_bm_auc": value, "range_over_epochs": {f"{other}_bm_auc": [0, 1]}}

    rows = {"xs_busi": run("busi", "bus_uclm", 0.6), "xs_bus_uclm": run("bus_uclm", "busi", 0.8),
            "xs_busi_s8": run("busi", "bus_uclm", 0.4), "xs_bus_uclm_s8": run("bus_uclm", "busi", 0.6),
            "xs_busi_swa": run("busi", "bus_uclm", 0.9), "xs_bus_uclm_swa": run("bus_uclm", "busi", 0.9)}
    (tmp_path / "xs.json").write_text(json.dumps(rows))
    text = tables.render_cross_source(tmp_path, "xs.json", (("bm_auc", "AUC"),), "note.")
    assert "| `xs_*_s8`: mean of the 2 directions | | | 0.500 |" in text
    assert "| `xs_*`: mean of 2 seeds × 2 directions | | | 0.600 |" in text
    assert "`xs_*_swa`: mean of 2 seeds" not in text and "| `xs_*_swa`: mean of the 2 directions | | | 0.900 |" in text
