"""A batch's results as the Batch tab shows them (no UI): the line that counts them, the rows on
screen (short file labels; a scan with no class says why in its class cell, so the screen has no
`no_answer` column) and the CSV the tab offers, which is `python -m inference`'s own.
"""

from __future__ import annotations

import collections
import io
from pathlib import PurePosixPath

from inference.batch import COLUMNS, CsvResults, is_failed
from inference.postprocess import half_up

SCREEN_COLUMNS = [column for column in COLUMNS if column != "no_answer"]  # the class cell says it (`for_screen`)
# The batch table's headers on screen, in words; the CSV keeps the column names `python -m inference` writes.
SCREEN_HEADERS = {"file": "File", "predicted_class": "Class", "p_normal": "P(normal)", "p_benign": "P(benign)",
                  "p_malignant": "P(malignant)", "lesion_count": "Lesions", "lesion_area_px": "Area (px)",
                  "lesion_area_percent": "Area (% of field)", "lesion_area_mm2": "Area (mm²)",
                  "longest_diameter_mm": "Longest diameter (mm)", "perpendicular_width_mm": "Width across it (mm)",
                  "warnings": "Warnings", "notes": "Notes"}
# A scan with no class says why in its class cell, in words that fit a phone's column (the whole
# reason was clipped there): "(in colour)", "(not recognised)", ...; the warnings column holds the reason.
ERROR_CELL = "(error)"
FOLDER_CHARS = 24  # a longer folder path is shown by its end after the file's name (the CSV keeps it whole)


def batch_summary(rows: list[dict], left_out: str, classes: list[str]) -> str:
    """The batch in a line above its table: how many scans of each class, how many got no answer
    and why (in colour, not recognised, ...), and how many could not be read, so a long batch need not
    be scrolled through to be counted; then what it left out (`left_out_summary`)."""
    classes_shown = collections.Counter(row["predicted_class"] for row in rows)
    reasons = collections.Counter(row["no_answer"] for row in rows if row["no_answer"] is not None)
    failed = sum(is_failed(row) for row in rows)
    counts = ([f"{classes_shown[name]} {name}" for name in classes if classes_shown[name]]
              + [f"{count} {reason}" for reason, count in reasons.items()]
              + ([f"{failed} could not be read"] if failed else []))
    text = (f"**{len(rows)} scan{'s' * (len(rows) != 1)}:** {', '.join(counts)}."
            + (" The Warnings column says why a scan has no class (click a cell to read it whole)."
               if reasons or failed else ""))
    return text + (f"\n\n⚠️ {left_out}" if left_out else "")


SKIPPED_NAMES_SHOWN = 5
MM_COLUMNS = ("lesion_area_mm2", "longest_diameter_mm", "perpendicular_width_mm")


def skipped_summary(skipped: list[str]) -> str:
    """What a batch passed over, in a line: the first few names, and why (zip archives inside an
    archive are not opened; other files are no scans)."""
    if not skipped:
        return ""
    more = len(skipped) - SKIPPED_NAMES_SHOWN
    names = ", ".join(skipped[:SKIPPED_NAMES_SHOWN]) + (f" and {more} more" if more > 0 else "")
    nested = any(name.lower().endswith(".zip") for name in skipped)
    what = "1 file that is not a scan" if len(skipped) == 1 else f"{len(skipped)} files that are not scans"
    return f"{what} ({names})" + ("; zip archives inside an archive are not opened" if nested else "")


def left_out_summary(skipped: list[str], unusable: list[str]) -> str:
    """What a batch left out, in sentences: the files it passed over (`skipped_summary`), then each
    archive, or scans in one, that could not be used and why (`BatchInputs.unusable`)."""
    return " ".join(([f"Not analysed: {skipped_summary(skipped)}."] if skipped else []) + unusable)


def no_scans_summary(skipped: list[str], unusable: list[str]) -> str:
    """Why an upload gave no scan to analyse: what was passed over, then what could not be used."""
    return " ".join([f"No scans in the upload: {skipped_summary(skipped)}." if skipped else "No scans in the upload."]
                    + unusable)


def for_screen(row: dict) -> dict:
    """A batch row for the table on screen: the file by its `file_label`, sizes in mm to one decimal as the
    notes and the PDF give them (`half_up`: 104.55 beside 104.6), and a scan with no class says why in its class cell
    (`ERROR_CELL`, or its `no_answer` in brackets), since the warnings column that holds the reason sits
    off-screen. The CSV keeps the path whole, the sizes as measured and the class cell empty."""
    shown = {**row, "file": file_label(row["file"]),
             **{column: half_up(row[column]) for column in MM_COLUMNS if row.get(column) is not None}}
    if row["predicted_class"] is not None:
        return shown
    return {**shown, "predicted_class": ERROR_CELL if is_failed(row) else f"({row['no_answer']})"}


def file_label(path: str) -> str:
    """A batch file as the Batch tab names it: its own name first and whole, then the folder (or zip
    archive) it came from in brackets, the folder's end kept when it is long. A path cut to its end
    lost the name's end in a phone's narrow column, and two files of one name in different folders
    need the folder to tell them apart."""
    file = PurePosixPath(path)
    folder = str(file.parent)
    if folder == ".":
        return file.name
    return f"{file.name} ({folder if len(folder) <= FOLDER_CHARS else '…' + folder[1 - FOLDER_CHARS:]})"


def batch_csv(rows: list[dict]) -> bytes:
    """The rows as the batch command's CSV."""
    buffer = io.StringIO(newline="")
    results = CsvResults(buffer)
    for row in rows:
        results.write(row)
    return buffer.getvalue().encode()
