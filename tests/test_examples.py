"""The gallery shows held-out scans only: no example is a training scan, or a copy of one."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from inference.models import BUNDLED
from training.busi import REPO_ROOT, SOURCES, list_samples
from training.split import read_split

EXAMPLES = REPO_ROOT / "examples"


@pytest.fixture(scope="module")
def rows():
    with (EXAMPLES / "examples.csv").open() as f:
        return list(csv.DictReader(f))


def trainable_files(source: str) -> set[str]:
    """Files on the train or validation side of the current split and of every split a shipped model names."""
    splits = [SOURCES[source].split_csv]
    for kind in ("classifier", "segmenter"):
        config = json.loads((BUNDLED[kind] / "config.json").read_text())
        splits += [REPO_ROOT / s for s in config.get("training_splits", []) if s.startswith(f"splits/{source}_split")]
    return {r["file"] for path in splits for r in read_split(path) if r["split"] in ("train", "val")}


def test_every_source_has_a_held_out_example_per_class(rows):
    assert {(r["dataset"], r["ground_truth"]) for r in rows} == {
        (d, c) for d in ("BUSI", "BUS-UCLM", "BrEaST") for c in ("normal", "benign", "malignant")}
    assert all((EXAMPLES / r["file"]).is_file() and (EXAMPLES / "masks" / r["file"].replace(".png", "_mask.png")).is_file()
               for r in rows)


def test_examples_are_unchanged_copies_of_held_out_scans(rows, busi_root, bus_uclm_root, breast_root):
    roots = {"BUSI": ("busi", busi_root), "BUS-UCLM": ("bus_uclm", bus_uclm_root), "BrEaST": ("breast", breast_root)}
    for r in rows:
        source, root = roots[r["dataset"]]
        relpath = r["source"].split(" ", 1)[1]
        assert (root / relpath).read_bytes() == (EXAMPLES / r["file"]).read_bytes(), r["file"]
        if not SOURCES[source].external:
            assert relpath not in trainable_files(source), f"{r['file']} was trained or selected on"


def test_no_example_is_a_copy_of_a_training_scan(rows, busi_root, bus_uclm_root):
    """pHash within 10 bits of any training or validation scan (current split or the shipped
    models'), the looser half of the split's same-view test, would mark a copy."""
    import imagehash

    def phash(path):
        return imagehash.phash(Image.open(path).convert("L")).hash.ravel()

    trained = [root / f for source, root in (("busi", busi_root), ("bus_uclm", bus_uclm_root))
               for f in trainable_files(source)]
    hashes = np.array([phash(p) for p in trained])
    for r in rows:
        closest = (hashes != phash(EXAMPLES / r["file"])).sum(axis=1).min()
        assert closest > 10, f"{r['file']} is {closest} bits from a training scan"
    assert list_samples(busi_root)  # the dataset really was read
