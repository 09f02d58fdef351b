"""Which files are scans: the image suffixes we read and BUSI's ground-truth mask naming
(`<stem>_mask.png`, `<stem>_mask_1.png`, …), shared by the batch command and the dataset reader."""

from __future__ import annotations

import re
from pathlib import Path, PurePath

# .jfif: a JPEG as browsers on Windows save one
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jfif", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
MASK_STEM = re.compile(r"^(?P<stem>.+)_mask(?:_\d+)?$")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def is_hidden(name: str) -> bool:
    """Hidden by the Unix convention (.git, .DS_Store, .cache): tool and system clutter, never scans.
    A batch neither picks up such a file nor looks inside such a folder. `..` is no name but a step up,
    which an archive's member names may hold (a scan there vanished from a batch without a word)."""
    return name.startswith(".") and name not in (".", "..")


def is_hidden_path(relative: PurePath) -> bool:
    """Whether a path, relative to the folder or archive it was found in, is hidden or lies in a hidden
    folder there (.git/objects/…, .cache/x.png)."""
    return any(map(is_hidden, relative.parts))


def is_scan_file(path: Path) -> bool:
    """What a batch picks up in a folder or archive: images, DICOM files, and files without a suffix
    or with a numeric one (scanners and PACS exports name DICOM files IM0001, or by their instance UID,
    1.2.826.0.1.3680043.8.498.1234, whose "suffix" is .1234); not hidden files, not DICOMDIR (an index,
    no image), not ground-truth masks. A picked file that is no scan becomes an error row."""
    if is_hidden(path.name) or path.name.upper() == "DICOMDIR" or mask_owner(path) is not None:
        return False
    return path.suffix.lower() in IMAGE_SUFFIXES | DICOM_SUFFIXES or path.suffix == "" or path.suffix[1:].isdigit()


def mask_owner(path: Path) -> str | None:
    """The stem of the scan a mask file belongs to, or None when `path` is not a mask file."""
    match = MASK_STEM.match(path.stem)
    return match["stem"] if match else None
