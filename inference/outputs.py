"""Rendered results as files that are safe to serve to many clients at once.

Handing Gradio a NumPy image makes it encode the image and write it to a path named by the content's
hash, in place: two requests with identical results (the same example, two clients) rewrite one
file while another client downloads it, and that client gets a truncated body. Here each image is
encoded once to `<folder>/<content hash>.<format>` through a temporary file and an atomic rename,
and never rewritten, so every reader sees a whole file. Overlays go out as JPEG (a fraction of a
PNG's encoding time and size); the mask stays PNG, exact 0/255.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

JPEG_QUALITY = 90
# Held while a file is found old and deleted, while a file handed out again is made young, and while a file's
# folder is made and its staging file put in it: else `prune` could find a file old, `write_file` hand it out
# again, and `prune` delete it under that request, or remove an old empty folder just before a file goes in.
_AGE_LOCK = threading.Lock()


def write_image(array: np.ndarray, folder: Path, fmt: str = "jpeg", name: str | None = None) -> str:
    """Encode a uint8 (H, W) or (H, W, 3) image as `fmt` ("jpeg" or "png") into `folder`; the path. With
    `name`, an image a user may download is saved under it (`name.jpg`), not under a bare content hash."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt.upper(), **({"quality": JPEG_QUALITY} if fmt == "jpeg" else {}))
    suffix = "jpg" if fmt == "jpeg" else fmt
    return write_file(buffer.getvalue(), folder, suffix, None if name is None else f"{name}.{suffix}")


def write_file(data: bytes, folder: Path, suffix: str, download_name: str | None = None) -> str:
    """`data` as `<folder>/<content hash>.<suffix>` — or, for a file a user downloads and keeps,
    `<folder>/<content hash>/<download_name>` — written once through an atomic rename; the path."""
    digest = hashlib.sha1(data).hexdigest()
    path = folder / f"{digest}.{suffix}" if download_name is None else folder / digest / download_name
    with _AGE_LOCK, contextlib.suppress(FileNotFoundError):  # pruned between two requests: written anew below
        os.utime(path)  # handed out again: young again, so `prune` leaves it for this request's download
        return str(path)
    with _AGE_LOCK:  # an old empty folder pruned between the two (stress test: "Something went wrong")
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, staging = tempfile.mkstemp(dir=path.parent, prefix=".writing-")
    try:
        with os.fdopen(descriptor, "wb") as f:
            f.write(data)
        os.replace(staging, path)
    except BaseException:  # a full disk: no half-written staging file left behind
        Path(staging).unlink(missing_ok=True)
        raise
    return str(path)


def prune(folder: Path, max_age_s: float) -> int:
    """Delete rendered files older than `max_age_s`, and empty folders as old (results are not kept
    longer than needed; a folder just made for a file about to be written is not old)."""
    cutoff, removed = time.time() - max_age_s, 0
    for path in sorted(folder.rglob("*"), reverse=True) if folder.is_dir() else []:  # files before their folders
        try:
            with _AGE_LOCK:
                if path.stat().st_mtime >= cutoff:
                    continue
                if path.is_dir():
                    if not any(path.iterdir()):
                        path.rmdir()
                else:
                    path.unlink()
                    removed += 1
        except OSError:  # pruned (or written into) by another request first: best effort, next time again
            pass
    return removed
