"""The Batch tab's uploads -> the scans to analyse: files as given, and the scans inside zip archives
(picked by the batch command's rule, `inference.files.is_scan_file`). Nothing is extracted to disk,
so no archive member can write outside a folder or outlive the request, and nothing is read before
its turn: a scan's bytes are read when its chunk of the batch is analysed, so a request holds a
chunk in memory, not the whole upload.

Limits keep one request from exhausting the server: MAX_SCANS scans per batch, and each archive
member no larger than the decoder's own file limit (checked from the archive's directory before
reading, so a zip bomb is refused unread).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from inference.decode import MAX_BYTES, ScanError
from inference.files import is_hidden_path, is_scan_file

MAX_SCANS = 200
ENCRYPTED = 0x1  # zip general-purpose flag bit 0: the member needs a password


class BatchInputError(ValueError):
    """The uploads cannot be analysed as a batch; the message says why, for the user."""


@dataclass(frozen=True)
class BatchScan:
    """One scan of a batch: the name it is shown by, and where its bytes are (an uploaded file, or
    `member` of the zip archive at `path`)."""

    name: str
    path: Path
    member: str | None = None

    def read(self) -> bytes:
        """The scan's bytes; a member the archive cannot give back (damaged data) is a ScanError, so
        it becomes that scan's error row and the batch goes on."""
        if self.member is None:
            return self.path.read_bytes()
        try:
            with zipfile.ZipFile(self.path) as archive:
                return archive.read(self.member)
        except NotImplementedError:
            raise ScanError("This file is packed with a compression method this app cannot unpack: "
                            "zip it again with standard settings, or upload it as it is.") from None
        except (zipfile.BadZipFile, OSError, RuntimeError, EOFError):
            raise ScanError("This file is damaged inside its zip archive: zip it again, or upload it as it is.") from None

    def read_or_error(self) -> bytes | ScanError:
        """The bytes, or why they cannot be read, as a value: the batch's row for this scan says so
        (`inference.pipeline.decode_or_error` passes it on) and the other scans go on."""
        try:
            return self.read()
        except ScanError as error:
            return error


@dataclass
class BatchInputs:
    """The scans of a batch, and the archive members passed over because they are no scans (other
    files, zip archives inside an archive, ground-truth masks), for the user to be told."""

    scans: list[BatchScan] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _is_clutter(name: str) -> bool:
    """Archive entries nobody put there on purpose: macOS resource forks and hidden files."""
    return "__MACOSX" in name or is_hidden_path(PurePosixPath(name))


def _zip_members(path: Path, inputs: BatchInputs) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            files = [m for m in archive.infolist() if not m.is_dir() and not _is_clutter(m.filename)]
    except NotImplementedError:
        raise BatchInputError(f"{path.name} uses a zip format this app cannot unpack: zip the scans again with "
                              "standard settings, or upload the scans themselves.") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, OSError):
        raise BatchInputError(f"{path.name} is damaged or not a zip archive (an interrupted download?): zip the "
                              "scans again, or upload the scans themselves.") from None
    members = [m for m in files if is_scan_file(PurePosixPath(m.filename))]
    if len(members) > MAX_SCANS:
        raise BatchInputError(f"{path.name} holds {len(members)} scans; a batch here takes at most "
                              f"{MAX_SCANS} (use `python -m inference` for more).")
    if any(m.flag_bits & ENCRYPTED for m in members):
        raise BatchInputError(f"{path.name} is password-protected: unzip it and upload the scans themselves.")
    too_big = [m.filename for m in members if m.file_size > MAX_BYTES]
    if too_big:
        raise BatchInputError(f"{too_big[0]} in {path.name} is over {MAX_BYTES // 2**20} MB.")
    inputs.scans += [BatchScan(f"{path.name}/{m.filename}", path, m.filename)
                     for m in sorted(members, key=lambda m: m.filename)]
    inputs.skipped += sorted(f"{path.name}/{m.filename}" for m in files if m not in members)


def read_batch_inputs(paths: list[str]) -> BatchInputs:
    """The scans of the uploads, in order; a .zip contributes one scan per scan file inside it. A file
    given twice (Gradio stores identical uploads at one path) is read once, not listed twice."""
    inputs = BatchInputs()
    for path in map(Path, dict.fromkeys(paths)):
        if path.suffix.lower() == ".zip":
            _zip_members(path, inputs)
        else:
            inputs.scans.append(BatchScan(path.name, path))
        if len(inputs.scans) > MAX_SCANS:
            raise BatchInputError(f"{len(inputs.scans)}+ scans; a batch here takes at most {MAX_SCANS} "
                                  "(use `python -m inference` for more).")
    return inputs
