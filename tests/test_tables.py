"""Every metric table in README.md and the model cards is what `reports/*.json` says."""

import json
import shutil

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
