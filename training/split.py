"""Leak-free, class-stratified train/validation/test splits of BUSI and BUS-UCLM, written to CSVs.

BUSI holds the same frame exported more than once (other crop or zoom, with or without caliper
marks) and consecutive frames of one lesion; it has no patient ids. Scans are grouped by the two
near-duplicate tests of `training.duplicates`, transitively, together with the groups in the
dataset's `known_duplicates.csv`. Groups whose members carry different labels (one frame filed as
benign and malignant) have no trustworthy ground truth: they are `excluded` from training and
evaluation. BUS-UCLM frames are grouped by patient (its frames are near-duplicates of each other).

A group never straddles two sides. BrEaST-Lesions_USG is not split: it is the external test set.

    python -m training.split [busi|bus_uclm ...] [--seed 20261129]
"""

from __future__ import annotations

import argparse
import csv
import io
import random
from collections import defaultdict
from pathlib import Path

from scipy.cluster.hierarchy import DisjointSet

from training.busi import CLASSES, REPO_ROOT, SOURCES, Sample, list_samples
from training.duplicates import duplicate_pairs

SIDES = ("train", "val", "test")
FRACTIONS = (0.70, 0.15, 0.15)
DEFAULT_SEED = 20261129
DEFAULT_OUT = SOURCES["busi"].split_csv
EXCLUDED = "excluded"


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


def duplicate_groups(samples: list[Sample]) -> dict[str, int]:
    """Group id per file: transitive closure of the near-duplicate pairs and the dataset's own list.

    Ids are numbered 0.. in the order of each group's first file, so they are reproducible.
    """
    files = [s.relpath for s in samples]
    groups = DisjointSet(files)
    for i, j, _ in duplicate_pairs([s.path for s in samples]):
        groups.merge(files[i], files[j])
    for a, b in known_duplicate_pairs(samples[0].root):
        if a in groups and b in groups:
            groups.merge(a, b)
    ids: dict[str, int] = {}
    return {f: ids.setdefault(groups[f], len(ids)) for f in files}


def patient_stratum(labels: set[str]) -> str:
    """The class a group is balanced under: its gravest label (a patient with any malignant frame
    is a malignant patient), so every side gets its share of malignant patients first."""
    return max(labels, key=CLASSES.index)


def assign_sides(samples: list[Sample], group_of: dict[str, object], seed: int,
                 exclude_mixed: bool = True) -> dict[str, str]:
    """Side per file. Per stratum (`patient_stratum` of the group's labels), groups are shuffled,
    then placed largest first on the side furthest below its target share of scans, so every
    stratum is split about 70/15/15. With `exclude_mixed`, groups of more than one label go nowhere."""
    labels_of_group = defaultdict(set)
    members = defaultdict(list)
    for s in samples:
        labels_of_group[group_of[s.relpath]].add(s.label)
        members[group_of[s.relpath]].append(s.relpath)
    mixed = {g for g, labels in labels_of_group.items() if len(labels) > 1} if exclude_mixed else set()
    rng = random.Random(seed)
    side_of: dict[str, str] = {f: EXCLUDED for g in mixed for f in members[g]}
    for stratum in CLASSES:
        stratum_groups = sorted((g for g, labels in labels_of_group.items()
                                 if g not in mixed and patient_stratum(labels) == stratum), key=str)
        rng.shuffle(stratum_groups)
        stratum_groups.sort(key=lambda g: -len(members[g]))  # stable: shuffled order breaks ties
        total = sum(len(members[g]) for g in stratum_groups)
        filled = dict.fromkeys(SIDES, 0)
        for g in stratum_groups:
            deficits = [FRACTIONS[i] * total - filled[side] for i, side in enumerate(SIDES)]
            side = SIDES[deficits.index(max(deficits))]
            filled[side] += len(members[g])
            for f in members[g]:
                side_of[f] = side
    return side_of


def busi_rows(root: Path, seed: int = DEFAULT_SEED) -> list[dict]:
    samples = list_samples(root)
    group_of = duplicate_groups(samples)
    side_of = assign_sides(samples, group_of, seed)
    return [{"file": s.relpath, "class": s.label, "group": group_of[s.relpath], "split": side_of[s.relpath]}
            for s in samples]


def bus_uclm_rows(root: Path, seed: int = DEFAULT_SEED) -> list[dict]:
    """By patient (`manifest.csv`): a patient's frames share one side, and a patient's normal frames
    are kept with its lesion frames rather than excluded (they are different views, not copies)."""
    with (root / "manifest.csv").open(newline="") as f:
        patient_of = {row["name"]: row["patient_id"] for row in csv.DictReader(f)}
    samples = list_samples(root)
    group_of = {s.relpath: patient_of[s.path.stem] for s in samples}
    side_of = assign_sides(samples, group_of, seed, exclude_mixed=False)
    return [{"file": s.relpath, "class": s.label, "patient_id": group_of[s.relpath], "split": side_of[s.relpath]}
            for s in samples]


SPLITTERS = {"busi": busi_rows, "bus_uclm": bus_uclm_rows}


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_split(path: Path = DEFAULT_OUT) -> list[dict]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def seen_paths(split_csvs) -> set[Path]:
    """Scans on the train or validation side of any of `split_csvs` (as model configs name them,
    relative to the repository): what a model trained and chosen on those splits has seen."""
    seen = set()
    for split_csv in split_csvs:
        source = next(name for name in SPLITTERS if Path(split_csv).name.startswith(f"{name}_split"))
        root = SOURCES[source].data_dir()
        seen |= {root / r["file"] for r in read_split(REPO_ROOT / split_csv) if r["split"] in ("train", "val")}
    return seen


def group_column(rows: list[dict]) -> str:
    """The split CSV's column of what never straddles two sides: `group` (BUSI) or `patient_id` (BUS-UCLM)."""
    return "group" if "group" in rows[0] else "patient_id"


def resampling_units(source: str, samples: list[Sample]) -> list[str]:
    """Each sample's unit of independence, for bootstrap intervals: the group its split keeps on one side
    (a BUS-UCLM patient; near-duplicate exports of one BUSI frame). An external source's scans are each
    their own (BrEaST: one scan per patient)."""
    spec = SOURCES[source]
    if spec.external:
        return [s.relpath for s in samples]
    rows = read_split(spec.split_csv)
    key = group_column(rows)
    group_of = {row["file"]: f"{key} {row[key]}" for row in rows}
    return [group_of[s.relpath] for s in samples]


def samples_by_side(source: str = "busi") -> dict[str, list[Sample]]:
    """A source's samples grouped by side of its committed split (`excluded` is its own key); an
    external source is all `test`."""
    spec = SOURCES[source]
    samples = list_samples(spec.data_dir())
    if spec.external:
        return {"test": samples}
    side_of = {row["file"]: row["split"] for row in read_split(spec.split_csv)}
    by_side = defaultdict(list)
    for sample in samples:
        if sample.relpath not in side_of:
            raise KeyError(f"{sample.relpath} is not in {spec.split_csv}: re-run python -m training.split {source}")
        by_side[side_of[sample.relpath]].append(sample)
    return dict(by_side)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="*", help=f"any of {', '.join(sorted(SPLITTERS))} (default: all)")
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: its setting); one source only")
    parser.add_argument("--out", type=Path, default=None, help="CSV to write (default: splits/<source>_split.csv)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    args.sources = args.sources or sorted(SPLITTERS)
    if set(args.sources) - set(SPLITTERS):
        parser.error(f"unknown source {', '.join(sorted(set(args.sources) - set(SPLITTERS)))}")
    if (args.data or args.out) and len(args.sources) != 1:
        parser.error("--data and --out need exactly one source")
    for source in args.sources:
        rows = SPLITTERS[source](args.data or SOURCES[source].data_dir(), args.seed)
        out = args.out or SOURCES[source].split_csv
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(to_csv(rows))
        counts = defaultdict(lambda: defaultdict(int))
        for row in rows:
            counts[row["split"]][row["class"]] += 1
        key = group_column(rows)
        print(f"wrote {out} ({len(rows)} scans, {len({r[key] for r in rows})} {key}s)")
        for side in (*SIDES, EXCLUDED):
            if counts[side]:
                groups = len({r[key] for r in rows if r["split"] == side})
                print(f"  {side:9s}", "  ".join(f"{c} {counts[side][c]:3d}" for c in CLASSES), f"  ({groups} {key}s)")


if __name__ == "__main__":
    main()
