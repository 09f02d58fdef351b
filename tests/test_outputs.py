"""Rendered results served to many clients at once: whole files, every time."""

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.outputs import prune, write_image


def test_identical_results_written_and_read_concurrently_are_never_truncated(tmp_path):
    """Eight writers render the same result while eight readers decode what they were handed."""
    image = np.random.default_rng(0).integers(0, 255, (400, 600, 3), dtype=np.uint8)
    paths, errors = [], []

    def writer():
        for _ in range(20):
            paths.append(write_image(image, tmp_path))

    def reader():
        for _ in range(40):
            for path in list(paths[-3:]):
                try:
                    with Image.open(path) as decoded:
                        decoded.load()
                except Exception as error:  # a truncated or half-written file
                    errors.append(repr(error))

    threads = [threading.Thread(target=writer) for _ in range(8)] + [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert len(set(paths)) == 1 and paths[0].endswith(".jpg")
    assert not list(tmp_path.glob(".writing-*")), "no staging file left behind"


def test_masks_stay_exact_png_and_old_results_are_pruned(tmp_path):
    mask = np.zeros((50, 60), np.uint8)
    mask[10:20, 10:30] = 255
    path = write_image(mask, tmp_path, "png")
    assert np.array_equal(np.asarray(Image.open(path)), mask)
    named = write_image(mask, tmp_path, "png", "lesion-mask")  # what a user downloads is named for what it is
    assert named.endswith("/lesion-mask.png") and np.array_equal(np.asarray(Image.open(named)), mask)
    assert prune(tmp_path, 3600) == 0 and prune(tmp_path, -1) == 2
    assert not list(tmp_path.iterdir())


def test_downloads_keep_their_name_and_are_pruned_with_their_folder(tmp_path):
    from inference.outputs import write_file

    path = write_file(b"%PDF-1.4 report", tmp_path, "pdf", "breast-ultrasound-report.pdf")
    assert path.endswith("/breast-ultrasound-report.pdf") and open(path, "rb").read() == b"%PDF-1.4 report"
    assert write_file(b"%PDF-1.4 report", tmp_path, "pdf", "breast-ultrasound-report.pdf") == path
    assert write_file(b"%PDF-1.4 other", tmp_path, "pdf", "breast-ultrasound-report.pdf") != path
    assert prune(tmp_path, 3600) == 0 and prune(tmp_path, -1) == 2
    assert not list(tmp_path.iterdir())


def test_a_result_pruned_between_two_requests_is_written_again_and_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    """Two requests for one result: `prune` could delete it between the first's write and the second's
    hand-out, which then failed (FileNotFoundError); a write that failed (a full disk) left its staging file."""
    from inference.outputs import write_file

    path = write_file(b"%PDF-1.4 report", tmp_path, "pdf", "breast-ultrasound-report.pdf")
    Path(path).unlink()
    assert write_file(b"%PDF-1.4 report", tmp_path, "pdf", "breast-ultrasound-report.pdf") == path
    assert open(path, "rb").read() == b"%PDF-1.4 report"

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", full_disk)
    with pytest.raises(OSError):
        write_file(b"other", tmp_path, "csv")
    assert not list(tmp_path.rglob(".writing-*"))


def test_a_young_empty_folder_is_not_pruned(tmp_path):
    """A folder just made for a download about to be written into: removing it made the write fail."""
    (tmp_path / "new").mkdir()
    prune(tmp_path, 3600)
    assert (tmp_path / "new").is_dir()


def test_an_old_empty_folder_is_not_pruned_while_a_file_goes_into_it(tmp_path, monkeypatch):
    """A download's folder left empty and old (its file deleted) and handed out again: a prune between the
    folder's making (which leaves an existing folder old) and the staging file's removed it, and the write
    failed (stress test)."""
    import hashlib
    import os
    import tempfile

    from inference import outputs

    data = b"%PDF- a report"
    folder = tmp_path / hashlib.sha1(data).hexdigest()
    folder.mkdir()
    os.utime(folder, (0, 0))
    real_mkstemp = tempfile.mkstemp

    def prune_meanwhile(**kwargs):
        pruning = threading.Thread(target=prune, args=(tmp_path, 3600))
        pruning.start()
        pruning.join(0.5)  # blocked by the write under way, or done: the folder then is gone
        return real_mkstemp(**kwargs)

    monkeypatch.setattr(outputs.tempfile, "mkstemp", prune_meanwhile)
    path = outputs.write_file(data, tmp_path, "pdf", "report.pdf")
    assert Path(path).read_bytes() == data
