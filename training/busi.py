"""Reading a BUSI-layout folder: `<class>/<name>.<ext>` scans with `<name>_mask[_N].<ext>` masks.

Three sources share that layout (`SOURCES`): BUSI and BUS-UCLM, split into train/val/test by the
committed CSVs in `splits/`, and BrEaST-Lesions_USG, an external test set that no training input,
model choice or calibration ever reads. Each folder comes from its setting (`BUSI_DIR`,
`BUS_UCLM_DIR`, `BREAST_DIR`; default `../shared/data/<folder>` beside the repository). Any file
names work, not only "benign (N).png".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from inference.decode import decode
from inference.files import is_image_file, mask_owner

CLASSES = ("normal", "benign", "malignant")
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Source:
    """One dataset: where it lives and how it is used. `split_csv` None marks an external test set."""

    name: str
    title: str
    setting: str
    folder: str
    split_csv: Path | None

    @property
    def external(self) -> bool:
        return self.split_csv is None

    def data_dir(self) -> Path:
        """The setting if set, else `../shared/data/<folder>` beside the repository."""
        setting = os.environ.get(self.setting)
        if setting:
            return Path(setting).expanduser().resolve()
        return (REPO_ROOT / ".." / "shared" / "data" / self.folder).resolve()


SOURCES = {
    "busi": Source("busi", "BUSI (Egypt)", "BUSI_DIR", "busi", REPO_ROOT / "splits" / "busi_split.csv"),
    "bus_uclm": Source("bus_uclm", "BUS-UCLM (Spain)", "BUS_UCLM_DIR", "bus_uclm",
                       REPO_ROOT / "splits" / "bus_uclm_split.csv"),
    "breast": Source("breast", "BrEaST-Lesions_USG (Poland, external)", "BREAST_DIR", "breast_lesions_usg", None),
}
TRAINING_SOURCES = tuple(name for name, source in SOURCES.items() if not source.external)


@dataclass(frozen=True)
class Sample:
    """One scan: its path, its class and the paths of all its mask files (possibly none)."""

    path: Path
    label: str
    mask_paths: tuple[Path, ...]
    root: Path

    @property
    def relpath(self) -> str:
        """Path relative to the dataset folder, with forward slashes (the key used in split CSVs)."""
        return self.path.relative_to(self.root).as_posix()

    @property
    def label_index(self) -> int:
        return CLASSES.index(self.label)


def list_samples(root: Path) -> list[Sample]:
    """All scans under `root`, sorted by class then file name; class folders that are absent are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root} (set BUSI_DIR, BUS_UCLM_DIR or BREAST_DIR)")
    samples = []
    for label in CLASSES:
        folder = root / label
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.iterdir() if is_image_file(p))
        masks: dict[str, list[Path]] = {}
        for p in files:
            owner = mask_owner(p)
            if owner is not None:
                masks.setdefault(owner, []).append(p)
        for p in files:
            if mask_owner(p) is None:
                samples.append(Sample(p, label, tuple(sorted(masks.get(p.stem, []))), root))
    if not samples:
        raise FileNotFoundError(f"no scans found in {root} (expected folders {', '.join(CLASSES)})")
    return samples


def load_scan(sample: Sample) -> np.ndarray:
    """The scan as 8-bit greyscale (H, W), decoded as serving decodes an upload (transparency, EXIF
    orientation, 16-bit stretch), so training and serving see the same pixels (on all 1 664 scans of
    the three sources, the same as Pillow's plain greyscale conversion)."""
    return decode(sample.path).gray


def load_mask(sample: Sample) -> np.ndarray:
    """The lesion mask (H, W) bool: the union of all mask files; all False when there are none."""
    with Image.open(sample.path) as image:
        size = image.size
    mask = np.zeros((size[1], size[0]), dtype=bool)
    for path in sample.mask_paths:
        with Image.open(path) as m:
            if m.size != size:
                raise ValueError(f"mask {path.name} is {m.size}, its scan is {size}")
            # Convert via L so 1-bit, L, RGB and RGBA masks all map to the same 0..255 scale.
            mask |= np.asarray(m.convert("L")) > 127
    return mask
