"""The Batch tab's rows and words, without a browser."""

import csv
import io

from inference.batch import COLUMNS
from inference.batch_view import FOLDER_CHARS, NOT_RECOGNISED_CELL, batch_csv, for_screen


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
    unrecognised = row | {"predicted_class": None, "warnings": "This picture is not recognised as a breast ultrasound scan."}
    assert for_screen(unrecognised)["predicted_class"] == NOT_RECOGNISED_CELL


def test_the_batch_table_gives_sizes_in_mm_as_the_notes_do():
    """To one decimal on screen, as in the notes and the PDF (the table said 104.55 beside their 104.5);
    the CSV keeps them as measured."""
    row = dict.fromkeys(COLUMNS, None) | {"file": "case.dcm", "predicted_class": "malignant", "warnings": "",
                                          "lesion_area_mm2": 104.55, "longest_diameter_mm": 15.19,
                                          "perpendicular_width_mm": 11.38}
    shown = for_screen(row)
    assert (shown["lesion_area_mm2"], shown["longest_diameter_mm"], shown["perpendicular_width_mm"]) == (104.5, 15.2, 11.4)
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
