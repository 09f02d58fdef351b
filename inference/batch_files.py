"""The Batch tab's uploads -> the scans to analyse: files as given, and the scans inside zip archives
(picked by the batch command's rule, `inference.files.is_scan_file`). Nothing is extracted to disk,
so no archive member can write outside a folder or outlive the request, and nothing is read before
its turn: a scan's bytes are read when its chunk of the batch is analysed, so a request holds a
chunk in memory, not the whole upload.

Limits keep one request from exhausting the server: MAX_SCANS scans per batch, and each archive
member no larger than the decoder's own file limit: checked from the archive's directory before
reading, so an honest zip bomb is left out unread (named, with the reason), and by reading no more
than that limit, so one whose headers lie about its size cannot inflate gigabytes into memory either.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from inference.decode import MAX_BYTES, ZIP_MAGIC, ScanError
from inference.files import is_hidden_path, is_scan_file

MAX_SCANS = 200
ENCRYPTED = 0x1  # zip general-purpose flag bit 0: the member needs a password


class BatchInputError(ValueError):
    """The uploads cannot be analysed as a batch; the message says why, for the user."""


@dataclass(frozen=True)
class BatchScan:
    """One scan of a batch: the name it is shown by, and where its bytes are (an uploaded file, or
    the `member`-th entry of the zip archive at `path`: by position, since an archive may hold two
    entries of one name)."""

    name: str
    path: Path
    member: int | None = None

    def read(self) -> bytes:
        """The scan's bytes; a file gone or unreadable since it was listed (an upload deleted by the
        server's cleaner) or a member the archive cannot give back (damaged data) is a ScanError, so it
        becomes that scan's error row and the batch goes on (a vanished upload failed the whole batch)."""
        if self.member is None or not self.path.is_file():
            try:
                return self.path.read_bytes()
            except OSError as error:
                raise ScanError(f"This file can no longer be read ({error.strerror or error}): upload it again.") from None
        try:
            with zipfile.ZipFile(self.path) as archive, archive.open(archive.infolist()[self.member]) as member:
                # Never more than the header's size (at most MAX_BYTES, checked when listed), but read()
                # would inflate up to 2 GB in one step before cutting to it: a header may lie.
                return member.read(MAX_BYTES)
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
    """The scans of a batch; the files and archive members passed over because they are no scans
    (other files, zip archives inside an archive, ground-truth masks); and why an archive, or scans in
    it, could not be used (`unusable`, sentences): all for the user to be told. One archive that cannot
    be opened costs its own scans only: it refused the whole batch, the other uploads with it."""

    scans: list[BatchScan] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unusable: list[str] = field(default_factory=list)


def _is_clutter(name: str) -> bool:
    """Archive entries nobody put there on purpose: macOS resource forks and hidden files."""
    return "__MACOSX" in name or is_hidden_path(PurePosixPath(name))


def _zip_members(path: Path, inputs: BatchInputs) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            files = [(index, m) for index, m in enumerate(archive.infolist())
                     if not m.is_dir() and not _is_clutter(m.filename)]  # by position: names may repeat
    except NotImplementedError:
        inputs.unusable.append(f"{path.name} uses a zip format this app cannot unpack: zip the scans again with "
                               "standard settings, or upload the scans themselves.")
        return
    except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, OSError):
        inputs.unusable.append(f"{path.name} is damaged or not a zip archive (an interrupted download?): zip the "
                               "scans again, or upload the scans themselves.")
        return
    if not files:
        inputs.unusable.append(f"{path.name} holds no files.")
        return
    members = [(index, m) for index, m in files if is_scan_file(PurePosixPath(m.filename))]
    others = [m.filename for _, m in files if not is_scan_file(PurePosixPath(m.filename))]
    if len(members) > MAX_SCANS:
        raise BatchInputError(f"{path.name} holds {len(members)} scans; a batch here takes at most "
                              f"{MAX_SCANS} (use `python -m inference` for more).")
    unlocked = [(index, m) for index, m in members if not m.flag_bits & ENCRYPTED]
    if len(unlocked) < len(members):
        inputs.unusable.append(f"{path.name} is password-protected: unzip it and upload the scans themselves."
                               if not unlocked else
                               f"{len(members) - len(unlocked)} of the scans in {path.name} are password-protected: "
                               "unzip them and upload them themselves.")
    inputs.unusable += [f"{m.filename} in {path.name} is over {MAX_BYTES // 2**20} MB." for _, m in unlocked
                        if m.file_size > MAX_BYTES]
    readable = [(index, m) for index, m in unlocked if m.file_size <= MAX_BYTES]
    inputs.scans += [BatchScan(f"{path.name}/{m.filename}", path, index)
                     for index, m in sorted(readable, key=lambda member: member[1].filename)]
    inputs.skipped += sorted(f"{path.name}/{name}" for name in others)


def _is_zip(path: Path) -> bool:
    """A .zip, or a file without a suffix that starts as a zip archive does (one saved as "scans" was read as a
    scan and refused with "analyse the scans in it as a batch", in the Batch tab: input review)."""
    if path.suffix.lower() == ".zip":
        return True
    if path.suffix or not path.is_file():
        return False
    with path.open("rb") as file:
        return file.read(4).startswith(ZIP_MAGIC)


def read_batch_inputs(paths: list[str]) -> BatchInputs:
    """The scans of the uploads, in order; a zip archive (`_is_zip`) contributes one scan per scan file inside
    it. Files given as they are pass the same rule as an archive's (`is_scan_file`): a text file beside a zip
    was counted a scan that could not be read, the same file inside it a file that is no scan. A file given
    twice (Gradio stores identical uploads at one path) is read once, not listed twice."""
    inputs = BatchInputs()
    for path in map(Path, dict.fromkeys(paths)):
        if _is_zip(path):
            _zip_members(path, inputs)
        elif is_scan_file(path):
            inputs.scans.append(BatchScan(path.name, path))
        else:
            inputs.skipped.append(path.name)
        if len(inputs.scans) > MAX_SCANS:
            raise BatchInputError(f"{len(inputs.scans)}+ scans; a batch here takes at most {MAX_SCANS} "
                                  "(use `python -m inference` for more).")
    return inputs
