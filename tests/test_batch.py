"""The batched path and the Ray engine give the results of one scan at a time: same classes,
probabilities within 1e-4, same masks; a broken file is a row with its error and the run goes on."""

import csv
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.__main__ import main as batch_main
from inference.batch import ERROR_PREFIX, find_scans, run_local
from inference.decode import ScanError
from inference import pipeline
from inference.models import REPO_ROOT
from inference.pipeline import Analysis

PROBABILITY_TOLERANCE = 1e-4


def assert_same_analysis(batched: Analysis, single: Analysis):
    assert batched.predicted_class == single.predicted_class
    np.testing.assert_allclose(batched.probabilities, single.probabilities, atol=PROBABILITY_TOLERANCE)
    assert np.array_equal(batched.mask(), single.mask())
    assert (batched.notes, batched.warnings, batched.withheld) == \
           (single.notes, single.warnings, single.withheld)


def scan_folder(root, examples):
    """The example scans, one ground-truth mask and a scan inside a hidden folder (both skipped by
    both engines), and a broken file."""
    root.mkdir()
    for path, _ in examples:
        shutil.copy(path, root / path.name)
    (root / "sub" / ".cache").mkdir(parents=True)
    shutil.copy(examples[0][0], root / "sub" / ".cache" / "hidden.png")
    first = examples[0][0]
    shutil.copy(first.parent / "masks" / f"{first.stem}_mask.png", root / f"{first.stem}_mask.png")
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def test_batches_of_any_size_give_the_single_scan_results(analyzer, examples):
    paths = [path for path, _ in examples]
    batched = analyzer.analyze_batch(paths[:4]) + analyzer.analyze_batch(paths[4:])
    for path, result in zip(paths, batched, strict=True):
        assert_same_analysis(result, analyzer.analyze(path))
        assert result.class_cams is None  # maps only when asked for


def test_a_broken_file_is_an_error_in_its_place(analyzer, examples, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    results = analyzer.analyze_batch([examples[0][0], broken, examples[1][0]], maps=True)
    assert isinstance(results[1], ScanError)
    assert all(isinstance(r, Analysis) and r.class_cams.shape[0] == 3 for r in (results[0], results[2]))


def test_batch_command_rows_masks_and_maps_match_single_scans(analyzer, examples, tmp_path, capsys):
    folder = scan_folder(tmp_path / "scans", examples)
    (folder / "notes.txt").write_text("follow-up in 6 months")
    os.mkfifo(folder / "pipe.png")  # no regular file: never opened (reading it would wait forever)
    out, masks, maps = tmp_path / "results.csv", tmp_path / "masks", tmp_path / "maps"
    assert batch_main([str(folder), "--out", str(out), "--masks", str(masks), "--explain", str(maps),
                       "--batch-size", "4"]) == 0
    # What was passed over is named (it vanished without a word); not what a hidden folder holds.
    told = capsys.readouterr().err
    mask = f"{examples[0][0].stem}_mask.png"
    assert "passed over 3 file(s)" in told and all(name in told for name in ("notes.txt", "pipe.png", mask))
    assert "hidden.png" not in told
    rows = {row["file"]: row for row in csv.DictReader(out.open())}
    assert sorted(rows) == sorted(str(p) for p in find_scans([str(folder)]))
    assert rows.pop(str(folder / "broken.png"))["warnings"].startswith(ERROR_PREFIX)
    noted = 0
    for file, row in rows.items():
        single = analyzer.analyze(file)
        stem = file.rsplit("/", 1)[1][:-4]
        assert row["predicted_class"] == single.predicted_class
        # The Scan tab's notes (a normal scan with a lesion drawn...): a batch row said nothing of them.
        assert row["notes"] == " | ".join(single.notes)
        noted += bool(single.notes)
        for name, probability in single.probability_dict().items():
            assert abs(float(row[f"p_{name}"]) - probability) <= PROBABILITY_TOLERANCE
        assert int(row["lesion_area_px"]) == single.mask().sum()
        assert np.array_equal(np.asarray(Image.open(masks / f"{stem}_pred.png")), single.mask_png())
        assert (maps / f"{stem}_gradcam.png").is_file()
        assert (maps / f"{stem}_seg_gradcam.png").is_file() == single.mask().any()
    assert noted, "some example has a note"


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray on two CPUs for this module (its start-up is the slow part)."""
    ray = pytest.importorskip("ray")
    from inference import ray_engine

    ray_engine.connect(None, num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray_engine
    ray.shutdown()


def test_ray_job_gives_the_local_rows_and_masks(ray_local, analyzer, examples, tmp_path, monkeypatch):
    """The same rows and masks; the models and the scans named by paths relative to this process's
    folder, which the workers do not share (the rows name the files as given: the Ray rows gave them
    absolute, review)."""
    pq = pytest.importorskip("pyarrow.parquet")
    monkeypatch.chdir(REPO_ROOT / "models")
    monkeypatch.setenv("BUSI_CLASSIFIER", "classifier")
    monkeypatch.setenv("BUSI_SEGMENTER", "./segmenter")
    folder = Path(os.path.relpath(scan_folder(tmp_path / "scans", examples)))
    # Another scan with the first's name, in a subfolder: both engines must name their masks apart.
    shutil.copy(examples[1][0], folder / "sub" / examples[0][0].name)
    local_masks, ray_masks = tmp_path / "local_masks", tmp_path / "ray_masks"
    local_masks.mkdir(), ray_masks.mkdir()
    local_tally = run_local(find_scans([str(folder)]), tmp_path / "local.parquet", local_masks, batch_size=4,
                            analyzer=analyzer)
    tally = ray_local.run([str(folder)], tmp_path / "ray.parquet", ray_masks, batch_size=4)
    local = sorted(pq.read_table(tmp_path / "local.parquet").to_pylist(), key=lambda row: row["file"])
    remote = sorted(pq.read_table(tmp_path / "ray.parquet").to_pylist(), key=lambda row: row["file"])
    assert (tally.scans, tally.failed) == (len(examples) + 2, 1) and tally == local_tally
    assert [row["file"] for row in remote] == [row["file"] for row in local] and not remote[0]["file"].startswith("/")
    for mine, theirs in zip(remote, local):
        probabilities = [name for name in mine if name.startswith("p_")]
        assert {k: v for k, v in mine.items() if k not in probabilities} == \
               {k: v for k, v in theirs.items() if k not in probabilities}
        if mine["predicted_class"] is not None:
            np.testing.assert_allclose([mine[p] for p in probabilities], [theirs[p] for p in probabilities],
                                       atol=PROBABILITY_TOLERANCE)
    assert sorted(p.name for p in ray_masks.iterdir()) == sorted(p.name for p in local_masks.iterdir())
    for mask in local_masks.iterdir():
        assert np.array_equal(np.asarray(Image.open(mask)), np.asarray(Image.open(ray_masks / mask.name)))


def test_a_decoding_library_failing_on_one_file_is_an_error_in_its_place(analyzer, examples, monkeypatch):
    """A library raising something else than ScanError on one file (Pillow's EXIF writer did so on 2 % of
    damaged EXIF blocks, and took the whole batch down) costs that file's row only."""
    failing, real_decode = examples[1][0], pipeline.decode

    def decode_failing_on_one(source, frame=0):
        if source == failing:
            raise struct.error("unpack requires a buffer of 4 bytes")
        return real_decode(source, frame)

    monkeypatch.setattr(pipeline, "decode", decode_failing_on_one)
    results = analyzer.analyze_batch([examples[0][0], failing, examples[2][0]])
    assert isinstance(results[1], ScanError) and "image library failed" in str(results[1])
    assert isinstance(results[0], Analysis) and isinstance(results[2], Analysis)


def test_a_jpeg_saved_as_jfif_is_a_scan(tmp_path, examples):
    """Browsers on Windows save a downloaded JPEG as .jfif: the batch passed it over as no scan (input review)."""
    scan = tmp_path / "scans" / "case.jfif"
    scan.parent.mkdir()
    Image.open(examples[0][0]).convert("L").save(scan, format="JPEG")
    assert find_scans([str(scan.parent)]) == [scan]
