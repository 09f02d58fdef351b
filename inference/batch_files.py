"""The Batch tab's uploads -> (name, bytes) per scan: files as given, and the scans inside zip archives
(picked by the batch command's rule, `inference.files.is_scan_file`), read in memory — nothing is
extracted to disk, so no archive member can write outside a folder or outlive the request.

Limits keep one request from exhausting the server: MAX_SCANS scans per batch, and each archive
member no larger than the decoder's own file limit (checked from the archive's directory before
reading, so a zip bomb is refused unread).
"""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

from inference.decode import MAX_BYTES
from inference.files import is_scan_file

MAX_SCANS = 200


class BatchInputError(ValueError):
    """The uploads cannot be analysed as a batch; the message says why, for the user."""


def _zip_members(path: Path) -> list[tuple[str, bytes]]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist()
                       if not m.is_dir() and "__MACOSX" not in m.filename and is_scan_file(PurePosixPath(m.filename))]
            if len(members) > MAX_SCANS:
                raise BatchInputError(f"{path.name} holds {len(members)} scans; a batch here takes at most "
                                      f"{MAX_SCANS} (use `python -m inference` for more).")
            too_big = [m.filename for m in members if m.file_size > MAX_BYTES]
            if too_big:
                raise BatchInputError(f"{too_big[0]} in {path.name} is over {MAX_BYTES // 2**20} MB.")
            return [(f"{path.name}/{m.filename}", archive.read(m)) for m in sorted(members, key=lambda m: m.filename)]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, OSError) as error:
        raise BatchInputError(f"{path.name} is not a zip archive that can be read ({error}).") from None


def read_batch_inputs(paths: list[str]) -> list[tuple[str, bytes]]:
    """Each upload's (display name, bytes); a .zip contributes one entry per scan inside it."""
    scans = []
    for path in map(Path, paths):
        if path.suffix.lower() == ".zip":
            scans += _zip_members(path)
        else:
            scans.append((path.name, path.read_bytes()))
        if len(scans) > MAX_SCANS:
            raise BatchInputError(f"{len(scans)}+ scans; a batch here takes at most {MAX_SCANS} "
                                  "(use `python -m inference` for more).")
    return scans
