"""A screening check fitted beside a model (`ood.npz`, `orientation.npz`): a frozen dataclass of
arrays, strings and floats stored as one NumPy archive of its fields — plain arrays, read without
pickles, so a model folder from the Hub cannot run code through them."""

from __future__ import annotations

import zipfile
from dataclasses import fields
from pathlib import Path

import numpy as np

# What each field annotation (a string, under `from __future__ import annotations`) is read back as.
_READ_AS = {"str": str, "float": float}


class StoredCheck:
    """Mixin for a frozen dataclass: `save` writes every field to an .npz, `load` reads it back."""

    DESCRIPTION = "fitted check"  # for the message on a damaged file

    def save(self, path: Path) -> None:
        np.savez(path, **{field.name: np.asarray(getattr(self, field.name)) for field in fields(self)})

    @classmethod
    def load(cls, path: Path):
        """The fitted check in `path`, or None when the model ships without one; a damaged or foreign
        file raises ValueError saying so."""
        if not Path(path).is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                return cls(**{field.name: _READ_AS.get(field.type, np.asarray)(stored[field.name])
                              for field in fields(cls)})
        except (ValueError, KeyError, OSError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path} is not a valid {cls.DESCRIPTION}: {error}") from None
