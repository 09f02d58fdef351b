"""Which files are scans: the image suffixes we read and BUSI's ground-truth mask naming
(`<stem>_mask.png`, `<stem>_mask_1.png`, …), shared by the batch command and the dataset reader."""

from __future__ import annotations

import re
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
MASK_STEM = re.compile(r"^(?P<stem>.+)_mask(?:_\d+)?$")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def is_scan_file(path: Path) -> bool:
    """What a batch picks up in a folder or archive: images, DICOM files, and files without a suffix
    (scanners and PACS exports name DICOM files IM0001 and the like); not hidden files, not DICOMDIR
    (an index, no image), not ground-truth masks. A picked file that is no scan becomes an error row."""
    if path.name.startswith(".") or path.name.upper() == "DICOMDIR" or mask_owner(path) is not None:
        return False
    return path.suffix.lower() in IMAGE_SUFFIXES | DICOM_SUFFIXES or path.suffix == ""


def mask_owner(path: Path) -> str | None:
    """The stem of the scan a mask file belongs to, or None when `path` is not a mask file."""
    match = MASK_STEM.match(path.stem)
    return match["stem"] if match else None
