"""The Batch tab's rows and words, without a browser."""

import csv
import io

from inference.batch import COLUMNS
from inference.batch_view import ERROR_CELL, FOLDER_CHARS, batch_csv, batch_summary, for_screen


def test_the_batch_table_names_a_file_first_then_its_folder():
    """The file's own name comes first and whole (a path cut to its end lost the name in a phone's
    column), then the end of its folder, which tells two files of one name apart."""
    long = "scans_with_a_long_archive_name.zip/study_2024/series_0001/busi_normal_102.png"
    row = dict.fromkeys(COLUMNS, None) | {"file": long, "predicted_class": "normal", "warnings": ""}
    shown = for_screen(row)["file"]
    assert shown.startswith("busi_normal_102.png (…") and shown.endswith("/study_2024/series_0001)")
    assert len(shown) == len("busi_normal_102.png ()") + FOLDER_CHARS
    assert for_screen(row | {"file": "scans.zip/a.png"})["file"] == "a.png (scans.zip)"
    assert for_screen(row | {"file": "a.png"})["file"] == "a.png" and row["file"] == long


def test_a_scan_without_a_class_says_why_in_its_class_cell_and_the_summary():
    """A Doppler image and a thumbnail were both "(not recognised)", as if they were no breast ultrasound
    scans at all: the cell and the line above the table give each refusal's own reason."""
    row = dict.fromkeys(COLUMNS, None) | {"warnings": ""}
    rows = [row | {"file": "a.png", "predicted_class": "benign"},
            row | {"file": "doppler.png", "no_answer": "in colour", "warnings": "This image is in colour (40 % …"},
            row | {"file": "thumb.png", "no_answer": "too small", "warnings": "This scan is too small …"},
            row | {"file": "cat.png", "no_answer": "not recognised", "warnings": "This image does not look like …"},
            row | {"file": "bad.png", "warnings": "error: The file is not an image."}]
    assert [for_screen(r)["predicted_class"] for r in rows] == ["benign", "(in colour)", "(too small)",
                                                                "(not recognised)", ERROR_CELL]
    summary = batch_summary(rows, "", ["normal", "benign", "malignant"])
    assert summary.startswith("**5 scans:** 1 benign, 1 in colour, 1 too small, 1 not recognised, 1 could not be read.")
    assert "The Warnings column says why" in summary
    assert "Warnings column" not in batch_summary(rows[:1], "", ["normal", "benign", "malignant"])


def test_the_batch_table_gives_sizes_in_mm_as_the_notes_do():
    """To one decimal on screen, as in the notes and the PDF (the table said 104.55 beside their 104.5);
    the CSV keeps them as measured. 104.55 shows as 104.6, as a reader of the CSV rounds it (and as the
    measured 104.5527 rounds): the float 104.55 is 104.5499..., which rounding as binary made 104.5 (tester)."""
    row = dict.fromkeys(COLUMNS, None) | {"file": "case.dcm", "predicted_class": "malignant", "warnings": "",
                                          "lesion_area_mm2": 104.55, "longest_diameter_mm": 15.19,
                                          "perpendicular_width_mm": 11.38}
    shown = for_screen(row)
    assert (shown["lesion_area_mm2"], shown["longest_diameter_mm"], shown["perpendicular_width_mm"]) == (104.6, 15.2, 11.4)
    assert row["lesion_area_mm2"] == 104.55
    assert for_screen(row | {"lesion_area_mm2": None})["lesion_area_mm2"] is None, "no calibration: empty"


def test_the_csv_quotes_text_a_spreadsheet_would_run_as_a_formula():
    """A scan named =HYPERLINK("…") or -2+3 became a live formula in Excel or LibreOffice (fuzz pass);
    numbers stay numbers."""
    rows = [dict.fromkeys(COLUMNS, None) | {"file": name, "warnings": "", "lesion_area_mm2": -1.5}
            for name in ('=HYPERLINK("http://example.org","x")', "-2+3", "@SUM(A1)", "plain.png")]
    cells = [(row["file"], row["lesion_area_mm2"]) for row in csv.DictReader(io.StringIO(batch_csv(rows).decode()))]
    assert cells == [("'=HYPERLINK(\"http://example.org\",\"x\")", "-1.5"), ("'-2+3", "-1.5"), ("'@SUM(A1)", "-1.5"),
                     ("plain.png", "-1.5")]
