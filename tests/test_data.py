"""The BUSI reader and the duplicate-aware split, on the real dataset."""

import csv
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from training import duplicates, split
from training.busi import CLASSES, SOURCES, list_samples, load_mask, load_scan


@pytest.fixture(scope="module")
def samples(busi_root):
    return list_samples(busi_root)


@pytest.fixture(scope="module")
def committed_rows():
    return split.read_split(split.DEFAULT_OUT)


def test_class_counts(samples):
    assert Counter(s.label for s in samples) == {"benign": 437, "malignant": 210, "normal": 133}


def test_multi_mask_images_are_merged(samples):
    multi = [s for s in samples if len(s.mask_paths) > 1]
    assert len(multi) == 17
    for s in multi[:5]:
        union = load_mask(s)
        for path in s.mask_paths:
            single = np.asarray(Image.open(path).convert("L")) > 127
            assert np.all(union[single]), "every mask file's pixels are in the union"
        assert union.sum() > max((np.asarray(Image.open(p).convert("L")) > 127).sum() for p in s.mask_paths) - 1


def test_every_mask_matches_its_scan(samples):
    for s in samples:
        assert s.mask_paths, f"{s.relpath} has no mask file"
        assert load_mask(s).shape == load_scan(s).shape
    assert not any(load_mask(s).any() for s in samples if s.label == "normal")


def test_reader_accepts_any_names_and_mask_modes(tmp_path):
    (tmp_path / "benign").mkdir()
    Image.new("RGB", (40, 32), (10, 20, 30)).save(tmp_path / "benign" / "scan_a.png")
    rgba = Image.new("RGBA", (40, 32), (0, 0, 0, 255))
    rgba.paste((255, 255, 255, 255), (0, 0, 10, 10))
    rgba.save(tmp_path / "benign" / "scan_a_mask.png")
    one_bit = Image.new("1", (40, 32), 0)
    one_bit.paste(1, (30, 20, 40, 30))
    one_bit.save(tmp_path / "benign" / "scan_a_mask_1.png")
    [sample] = list_samples(tmp_path)
    assert sample.relpath == "benign/scan_a.png" and len(sample.mask_paths) == 2
    assert load_scan(sample).shape == (32, 40)
    assert load_mask(sample).sum() == 200


def test_known_duplicate_groups_stay_on_one_side(busi_root, committed_rows):
    side_of = {r["file"]: r["split"] for r in committed_rows}
    groups = {}
    with (busi_root / "known_duplicates.csv").open() as f:
        for row in csv.DictReader(f):
            groups.setdefault(row["group"], set()).add(side_of[row["file"]])
    assert len(groups) == 124
    assert all(len(sides) == 1 for sides in groups.values())
    # and the split's own groups never straddle sides either
    own = {}
    for r in committed_rows:
        own.setdefault(r["group"], set()).add(r["split"])
    assert all(len(sides) == 1 for sides in own.values())


def test_cross_class_groups_are_excluded(committed_rows):
    labels = {}
    for r in committed_rows:
        labels.setdefault(r["group"], set()).add(r["class"])
    for r in committed_rows:
        assert (r["split"] == split.EXCLUDED) == (len(labels[r["group"]]) > 1)


def test_sides_are_stratified(committed_rows):
    used = [r for r in committed_rows if r["split"] != split.EXCLUDED]
    whole = Counter(r["class"] for r in used)
    sizes = Counter(r["split"] for r in used)
    for side, fraction in zip(split.SIDES, split.FRACTIONS):
        assert abs(sizes[side] / len(used) - fraction) < 0.03
        per_class = Counter(r["class"] for r in used if r["split"] == side)
        for c in CLASSES:
            assert abs(per_class[c] / sizes[side] - whole[c] / len(used)) <= 0.03, (side, c)


@pytest.mark.parametrize("source", ["busi", "bus_uclm"])
def test_split_command_reproduces_committed_csv(source, request, tmp_path):
    root = request.getfixturevalue(f"{source}_root")
    out = tmp_path / "split.csv"
    split.main([source, "--data", str(root), "--out", str(out)])
    assert out.read_bytes() == SOURCES[source].split_csv.read_bytes()


def test_near_duplicate_tests_on_known_pairs(busi_root):
    """A re-zoomed export (pHash 22 bits apart) is found by keypoints, a caliper-marked re-export by
    the same-view test, and two different patients' scans by neither."""
    names = ["malignant/malignant (106).png", "malignant/malignant (107).png",  # zoomed copy
             "benign/benign (433).png", "benign/benign (435).png",              # with / without calipers
             "benign/benign (1).png", "malignant/malignant (1).png"]            # unrelated
    pairs = duplicates.duplicate_pairs([busi_root / n for n in names])
    found = {(names[i], names[j]) for i, j, _ in pairs}
    assert (names[0], names[1]) in found
    assert (names[2], names[3]) in found
    assert not any(names[4] in pair or names[5] in pair for pair in found)
