"""The gallery shows held-out scans only: no example is a training scan, or a copy of one."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from inference.models import BUNDLED
from training.busi import REPO_ROOT, SOURCES, list_samples
from training.split import seen_paths

EXAMPLES = REPO_ROOT / "examples"


@pytest.fixture(scope="module")
def rows():
    with (EXAMPLES / "examples.csv").open() as f:
        return list(csv.DictReader(f))


def trained_paths() -> set:
    """Scans on the train or validation side of the current splits and of every split a shipped model names."""
    splits = [SOURCES[s].split_csv.relative_to(REPO_ROOT).as_posix() for s in ("busi", "bus_uclm")]
    for kind in ("classifier", "segmenter"):
        splits += json.loads((BUNDLED[kind] / "config.json").read_text()).get("training_splits", [])
    return seen_paths(splits)


def test_every_source_has_a_held_out_example_per_class(rows):
    assert {(r["dataset"], r["ground_truth"]) for r in rows} == {
        (d, c) for d in ("BUSI", "BUS-UCLM", "BrEaST") for c in ("normal", "benign", "malignant")}
    assert all((EXAMPLES / r["file"]).is_file() and (EXAMPLES / "masks" / r["file"].replace(".png", "_mask.png")).is_file()
               for r in rows)


def test_examples_are_unchanged_copies_of_held_out_scans(rows, busi_root, bus_uclm_root, breast_root):
    roots = {"BUSI": busi_root, "BUS-UCLM": bus_uclm_root, "BrEaST": breast_root}
    trained = trained_paths()
    for r in rows:
        source = roots[r["dataset"]] / r["source"].split(" ", 1)[1]
        assert source.read_bytes() == (EXAMPLES / r["file"]).read_bytes(), r["file"]
        assert source not in trained, f"{r['file']} was trained or selected on"


def test_no_example_is_a_copy_of_a_training_scan(rows, busi_root, bus_uclm_root):
    """pHash within 10 bits of any training or validation scan (current split or the shipped
    models'), the looser half of the split's same-view test, would mark a copy."""
    import imagehash

    def phash(path):
        return imagehash.phash(Image.open(path).convert("L")).hash.ravel()

    trained = sorted(trained_paths())
    hashes = np.array([phash(p) for p in trained])
    for r in rows:
        closest = (hashes != phash(EXAMPLES / r["file"])).sum(axis=1).min()
        assert closest > 10, f"{r['file']} is {closest} bits from a training scan"
    assert list_samples(busi_root)  # the dataset really was read


def test_dicom_example_is_the_png_example_with_the_datasets_calibration(breast_root):
    """The gallery's DICOM holds the BrEaST example's pixels unchanged, the pixel size BrEaST's
    manifest gives (cm -> mm), and no patient attributes."""
    import pydicom

    from inference.decode import decode
    from training.dicom_example import DICOM_EXAMPLES, pixel_size_cm

    path = DICOM_EXAMPLES / "breast_case010.dcm"
    decoded = decode(path)
    assert np.array_equal(decoded.gray, np.asarray(Image.open(EXAMPLES / "breast_case010.png").convert("L")))
    expected_mm = pixel_size_cm("breast_case010") * 10
    assert decoded.mm_per_pixel == pytest.approx((expected_mm, expected_mm)) and 0.05 < expected_mm < 0.2
    dataset = pydicom.dcmread(path)
    assert not any(element.keyword.startswith("Patient") for element in dataset)
