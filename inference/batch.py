"""The batch job's per-scan pieces, shared by the local engine (`run_local`, below) and the Ray engine
(`inference.ray_engine`) so both write the same rows and images: which files are scans, one scan's
result row, the images written beside it (predicted mask, Grad-CAM maps) and the results file (CSV,
or Parquet with typed columns).
"""

from __future__ import annotations

import collections
import csv
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePath

from PIL import Image
from tqdm import tqdm

from inference.decode import ScanError
from inference.files import is_hidden, is_scan_file
from inference.pipeline import Analysis, Analyzer

# Column -> Arrow type (Parquet); the CSV has the same columns, with empty cells where Parquet has nulls.
COLUMN_TYPES = {"file": "string", "predicted_class": "string", "no_answer": "string", "p_normal": "double",
                "p_benign": "double", "p_malignant": "double", "lesion_count": "int64", "lesion_area_px": "int64",
                "lesion_area_percent": "double", "lesion_area_mm2": "double", "longest_diameter_mm": "double",
                "perpendicular_width_mm": "double", "warnings": "string", "notes": "string"}
SIZE_COLUMNS = ("lesion_count", "lesion_area_px", "lesion_area_percent", "lesion_area_mm2", "longest_diameter_mm",
                "perpendicular_width_mm")  # from lesion_stats; the mm ones empty without a calibration
COLUMNS = list(COLUMN_TYPES)
ERROR_PREFIX = "error: "  # how a failed file's row starts its warnings
PARQUET_ROW_GROUP = 10_000
PARQUET_NEEDS_PYARROW = "Parquet output needs pyarrow: pip install -r requirements-ray.txt"


def find_scans(paths: list[str]) -> list[Path]:
    """Files as given, and every scan file below each folder (`scans_below`)."""
    found = []
    for given in map(Path, paths):
        found += scans_below(given) if given.is_dir() else [given]
    return found


def scans_below(folder: Path) -> list[Path]:
    """The scan files below `folder` (sorted): images, DICOM, files without a suffix; not ground-truth
    masks nor hidden files (`inference.files.is_scan_file`), and nothing inside a hidden folder. Those
    are not even entered, so a dataset kept under git gives no error rows for, and spends no time on,
    the thousands of files in its .git."""
    return sorted(path for path in _files_below(folder) if _is_taken(path))


def passed_over(paths: list[str]) -> list[Path]:
    """The files below the given folders that a batch does not analyse, for the user to be told (they
    vanished without a word): no scan files (archives, notes, ground-truth masks) or no regular files
    (pipes, devices, broken links). Not hidden files, nor what hidden folders hold: clutter."""
    return sorted(path for given in map(Path, paths) if given.is_dir() for path in _files_below(given)
                  if not _is_taken(path) and not is_hidden(path.name))


def _files_below(folder: Path) -> list[Path]:
    """Every file below `folder`, not entering hidden folders."""
    found = []
    for parent, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not is_hidden(name)]
        found += (Path(parent, name) for name in names)
    return found


def _is_taken(path: Path) -> bool:
    """Whether a batch analyses `path`: a scan file (`is_scan_file`) that is a regular file (not a pipe)."""
    return is_scan_file(path) and path.is_file()


@dataclass
class Tally:
    """What a run did with its scans, counted from their rows (`result_row`): the summary both engines
    print. Scans given no answer (`no_answer`: not recognised as a breast ultrasound scan, in colour, too
    small, ...) are named apart: counted as analysed, a run of such files read as if every scan had a
    result (tester)."""

    scans: int = 0
    failed: int = 0      # could not be analysed at all (their warnings start with ERROR_PREFIX)
    unanswered: int = 0  # analysed, but given no class (their warnings say why)

    def count(self, row: dict) -> None:
        self.scans += 1
        self.failed += is_failed(row)
        self.unanswered += row["no_answer"] is not None

    def __str__(self) -> str:
        answered = self.scans - self.failed - self.unanswered
        return (f"{self.scans} scan{'' if self.scans == 1 else 's'}: {answered} with a result, {self.unanswered} given "
                f"none (the warnings column says why), {self.failed} failed")


def is_failed(row: dict) -> bool:
    """Whether a scan's row (`result_row`) is a file that could not be analysed at all."""
    return (row["warnings"] or "").startswith(ERROR_PREFIX)


def result_row(file: str, result: Analysis | ScanError) -> dict:
    """One scan's row: its error, or its class, probabilities and lesion statistics (None where a scan
    gets no answer: `no_answer` says why in a few words, its first warning in full), and the
    analysis' notes: where the two models disagree (a normal scan with a lesion drawn, a lesion hidden
    by the normal gate, a lesion class with nothing drawn), as the Scan tab says it."""
    row = dict.fromkeys(COLUMNS)
    row["file"] = file
    if isinstance(result, ScanError):
        row["warnings"] = f"{ERROR_PREFIX}{result}"
        return row
    row["warnings"] = " | ".join(result.warnings)
    if result.withheld:
        row["no_answer"] = str(result.no_answer)
        return row
    row["notes"] = " | ".join(result.notes)
    stats = result.lesion_stats()
    row.update(predicted_class=result.predicted_class,
               **{f"p_{c}": p for c, p in result.probability_dict().items()},
               **{column: stats[column] for column in SIZE_COLUMNS})
    return row


def write_images(stem: str, analysis: Analysis, masks_dir: Path | None, explain_dir: Path | None) -> None:
    """DIR/<stem>_pred.png: the lesion mask (0/255); with `explain_dir`, <stem>_gradcam.png (the
    predicted class's Grad-CAM over the scan) and <stem>_seg_gradcam.png where a lesion is shown.
    Nothing for a scan given no answer: it has no diagnosis-like output to draw."""
    if analysis.withheld:
        return
    if masks_dir is not None:
        Image.fromarray(analysis.mask_png()).save(masks_dir / f"{stem}_pred.png")
    if explain_dir is not None:
        Image.fromarray(analysis.class_overlay()).save(explain_dir / f"{stem}_gradcam.png")
        seg_overlay = analysis.seg_cam_overlay()
        if seg_overlay is not None:
            Image.fromarray(seg_overlay).save(explain_dir / f"{stem}_seg_gradcam.png")


def output_stems(files: list[str]) -> dict[str, str]:
    """The name each scan's images get (`<stem>_pred.png`, ...): its file's stem, unless another scan
    of the run has the same stem (sub/a.png and a.png, a.png and a.dcm); those get their path from the
    folder they share, with the suffix, so that no scan's images overwrite another's
    (sub/a.png -> sub__a_png); a name still taken (a_png.jpg beside those) gets a number (a_png_2)."""
    by_stem = collections.defaultdict(list)
    for file in dict.fromkeys(files):
        by_stem[PurePath(file).stem].append(PurePath(file))
    stems = {}
    for stem, paths in by_stem.items():
        if len(paths) == 1:
            stems[str(paths[0])] = stem
            continue
        try:
            shared = PurePath(os.path.commonpath([str(path.parent) for path in paths]))
        except ValueError:  # absolute and relative paths: name each by its whole path
            shared = None
        for path in paths:
            relative = path.relative_to(shared if shared is not None else path.anchor)
            stems[str(path)] = "__".join(relative.parts).replace(".", "_")
    return _numbered_apart(stems)


def _numbered_apart(stems: dict[str, str]) -> dict[str, str]:
    """`stems` with each name that an earlier file already has given the first free number (name_2, ...)."""
    planned, used, unique = set(stems.values()), set(), {}
    for file, name in stems.items():
        if name in used:
            number = 2
            while f"{name}_{number}" in used or f"{name}_{number}" in planned:
                number += 1
            name = f"{name}_{number}"
        used.add(name)
        unique[file] = name
    return unique


def record_scan(file: str, result: Analysis | ScanError, masks_dir: Path | None = None,
                explain_dir: Path | None = None, stem: str | None = None) -> dict:
    """Write a scan's images (if asked for; named by `stem`, default the file's) and return its row:
    what both engines do with each result."""
    if not isinstance(result, ScanError):
        write_images(stem or PurePath(file).stem, result, masks_dir, explain_dir)
    return result_row(file, result)


# A text cell starting so is run as a formula by spreadsheets: a scan named =HYPERLINK("…") became a live link.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _as_text(value):
    """A text cell a spreadsheet would take for a formula with a ' before it, which shows it as text."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


class CsvResults:
    """Rows -> CSV, probabilities to 4 decimals, empty cells for missing values, text that a spreadsheet
    would run as a formula quoted as text (`_as_text`); into a file at `path`, or into an open text stream
    (the app's Batch tab builds its CSV in memory)."""

    def __init__(self, path: Path | io.TextIOBase):
        self._file = path if isinstance(path, io.TextIOBase) else path.open("w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=COLUMNS)
        self._writer.writeheader()

    def write(self, row: dict) -> None:
        self._writer.writerow({c: "" if v is None else f"{v:.4f}" if c.startswith("p_") else _as_text(v)
                               for c, v in row.items()})

    def close(self) -> None:
        self._file.close()


def arrow_schema():
    import pyarrow as pa

    return pa.schema([(column, pa.type_for_alias(kind)) for column, kind in COLUMN_TYPES.items()])


class ParquetResults:
    """Rows -> Parquet with typed columns (nulls where the CSV has empty cells), written a row group
    at a time, so a million-scan run never holds its rows in memory. Needs pyarrow (requirements-ray.txt)."""

    def __init__(self, path: Path):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise SystemExit(PARQUET_NEEDS_PYARROW) from None
        self._schema = arrow_schema()
        self._writer = pq.ParquetWriter(path, self._schema)
        self._pending: list[dict] = []

    def write(self, row: dict) -> None:
        self._pending.append(row)
        if len(self._pending) >= PARQUET_ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._pending:
            self._writer.write_table(pa.Table.from_pylist(self._pending, schema=self._schema))
            self._pending = []

    def close(self) -> None:
        self._flush()
        self._writer.close()


def open_results(path: Path) -> CsvResults | ParquetResults:
    """The results file for `path`: Parquet for a .parquet name, else CSV."""
    return ParquetResults(path) if path.suffix.lower() == ".parquet" else CsvResults(path)


def batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def one_ahead(fn, items):
    """(item, fn(item)) for each item in order, fn of the next item running (on one thread) while
    the caller handles the current one; never more than one result waits."""
    with ThreadPoolExecutor(1) as ahead:
        previous = None
        for item in items:
            current = item, ahead.submit(fn, item)
            if previous is not None:
                yield previous[0], previous[1].result()
            previous = current
        if previous is not None:
            yield previous[0], previous[1].result()


def run_local(scans: list[Path], out: Path, masks_dir: Path | None = None, explain_dir: Path | None = None,
              batch_size: int = 16, analyzer: Analyzer | None = None) -> Tally:
    """Analyse `scans` in batches of `batch_size` on this machine and write one row each to `out`;
    returns what became of them. The next batch is analysed while this one's images and rows are written."""
    analyzer = analyzer or Analyzer()
    analyse = partial(analyzer.analyze_batch, maps=explain_dir is not None)
    stems = output_stems(list(map(str, scans)))

    def record(file: str, result: Analysis | ScanError) -> dict:
        return record_scan(file, result, masks_dir, explain_dir, stems[file])
    results, tally = open_results(out), Tally()
    try:
        with ThreadPoolExecutor(os.cpu_count()) as writers, \
                tqdm(total=len(scans), desc="analysing", unit="scan") as progress:
            for chunk, analysed in one_ahead(analyse, batches(scans, batch_size)):
                for row in writers.map(record, map(str, chunk), analysed):
                    results.write(row)
                    tally.count(row)
                progress.update(len(chunk))
    finally:
        results.close()
    return tally
