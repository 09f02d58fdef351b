"""Duplicate-aware, class-stratified train/validation/test split of BUSI, written to a CSV.

BUSI holds the same scan exported more than once (other crop or zoom). Scans whose perceptual
hashes (pHash of the greyscale image) differ by at most `--max-distance` bits are joined into one
group, transitively, together with the groups in the dataset's `known_duplicates.csv`. A group never
straddles two sides of the split.

Groups whose members carry different labels (the same scan filed as benign and malignant, or benign
and normal) have no trustworthy ground truth: they are marked `excluded` and used for neither
training nor evaluation.

    python -m training.split [--out splits/busi_split.csv] [--seed 20261127]
"""

from __future__ import annotations

import argparse
import csv
import io
import random
from collections import defaultdict
from pathlib import Path

import imagehash
from PIL import Image

from training.busi import CLASSES, REPO_ROOT, Sample, busi_dir, list_samples

SIDES = ("train", "val", "test")
FRACTIONS = (0.70, 0.15, 0.15)
DEFAULT_SEED = 20261127
DEFAULT_OUT = REPO_ROOT / "splits" / "busi_split.csv"
EXCLUDED = "excluded"


class UnionFind:
    def __init__(self, items):
        self.parent = {item: item for item in items}

    def find(self, item):
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def perceptual_hashes(samples: list[Sample]) -> dict[str, imagehash.ImageHash]:
    hashes = {}
    for sample in samples:
        with Image.open(sample.path) as image:
            hashes[sample.relpath] = imagehash.phash(image.convert("L"))
    return hashes


def known_duplicate_pairs(root: Path) -> list[tuple[str, str]]:
    """Pairs (first member, other member) from the dataset's own duplicate list, if it has one."""
    path = root / "known_duplicates.csv"
    if not path.exists():
        return []
    groups = defaultdict(list)
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            groups[row["group"]].append(row["file"])
    return [(files[0], other) for files in groups.values() for other in files[1:]]


def duplicate_groups(samples: list[Sample], max_distance: int = 4) -> dict[str, int]:
    """Group id per file: transitive closure of near-identical pHash pairs and the known list.

    Ids are numbered 0.. in the order of each group's first file, so they are reproducible.
    """
    files = [s.relpath for s in samples]
    hashes = perceptual_hashes(samples)
    groups = UnionFind(files)
    for i, a in enumerate(files):
        for b in files[i + 1 :]:
            if hashes[a] - hashes[b] <= max_distance:
                groups.union(a, b)
    root = samples[0].root
    for a, b in known_duplicate_pairs(root):
        if a in groups.parent and b in groups.parent:
            groups.union(a, b)
    ids: dict[str, int] = {}
    return {f: ids.setdefault(groups.find(f), len(ids)) for f in files}


def assign_sides(samples: list[Sample], group_of: dict[str, int], seed: int) -> dict[str, str]:
    """Side per file. Per class, groups are shuffled, then placed largest first on the side that is
    furthest below its target share, so every class is split about 70/15/15."""
    labels_of_group = defaultdict(set)
    members = defaultdict(list)
    for s in samples:
        labels_of_group[group_of[s.relpath]].add(s.label)
        members[group_of[s.relpath]].append(s.relpath)
    rng = random.Random(seed)
    side_of: dict[str, str] = {}
    for label in CLASSES:
        class_groups = sorted(g for g, labels in labels_of_group.items() if labels == {label})
        rng.shuffle(class_groups)
        class_groups.sort(key=lambda g: -len(members[g]))  # stable: shuffled order breaks ties
        total = sum(len(members[g]) for g in class_groups)
        filled = dict.fromkeys(SIDES, 0)
        for g in class_groups:
            deficits = [FRACTIONS[i] * total - filled[side] for i, side in enumerate(SIDES)]
            side = SIDES[deficits.index(max(deficits))]
            filled[side] += len(members[g])
            for f in members[g]:
                side_of[f] = side
    for g, labels in labels_of_group.items():
        if len(labels) > 1:
            for f in members[g]:
                side_of[f] = EXCLUDED
    return side_of


def split_rows(root: Path, seed: int = DEFAULT_SEED, max_distance: int = 4) -> list[dict]:
    samples = list_samples(root)
    group_of = duplicate_groups(samples, max_distance)
    side_of = assign_sides(samples, group_of, seed)
    return [
        {"file": s.relpath, "class": s.label, "group": group_of[s.relpath], "split": side_of[s.relpath]}
        for s in samples
    ]


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["file", "class", "group", "split"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_split(path: Path = DEFAULT_OUT) -> list[dict]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def samples_by_side(root: Path | None = None, split_csv: Path = DEFAULT_OUT) -> dict[str, list[Sample]]:
    """The dataset's samples grouped by side of the committed split (`excluded` is its own key)."""
    side_of = {row["file"]: row["split"] for row in read_split(split_csv)}
    by_side = defaultdict(list)
    for sample in list_samples(root):
        if sample.relpath not in side_of:
            raise KeyError(f"{sample.relpath} is not in {split_csv}: re-run python -m training.split")
        by_side[side_of[sample.relpath]].append(sample)
    return dict(by_side)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="BUSI folder (default: BUSI_DIR)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--max-distance", type=int, default=4, help="pHash Hamming distance for duplicates")
    args = parser.parse_args(argv)
    rows = split_rows(args.data or busi_dir(), args.seed, args.max_distance)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_csv(rows))
    counts = defaultdict(lambda: defaultdict(int))
    for row in rows:
        counts[row["split"]][row["class"]] += 1
    print(f"wrote {args.out} ({len(rows)} scans, {len({r['group'] for r in rows})} groups)")
    for side in (*SIDES, EXCLUDED):
        print(f"  {side:9s}", "  ".join(f"{c} {counts[side][c]:3d}" for c in CLASSES))


if __name__ == "__main__":
    main()
