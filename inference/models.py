"""Where models come from: the bundled `models/` folders (default, offline) or a Hugging Face Hub
repository pinned to a revision.

A source is a local folder, or `hf://owner/repo@revision` (revision: a commit hash, tag or branch;
without it, `main`). Settings: `BUSI_CLASSIFIER`, `BUSI_SEGMENTER`. Hub files go through
`huggingface_hub.hf_hub_download`, so `HF_HUB_OFFLINE=1` and the Hub cache (`HF_HUB_CACHE`) are
honoured. Every model is loaded with `safe_mode=True`.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED = {"classifier": REPO_ROOT / "models" / "classifier", "segmenter": REPO_ROOT / "models" / "segmenter"}
SETTINGS = {"classifier": "BUSI_CLASSIFIER", "segmenter": "BUSI_SEGMENTER"}
TASKS = {"classifier": "classification", "segmenter": "segmentation"}  # config.json's `task` of each kind
# The classes a classifier must give, in this order: the batch's p_normal/p_benign/p_malignant columns, the
# Scan tab's choice of map and the normal gate name them (another order loaded, then failed on its first scan).
CLASSES = ["normal", "benign", "malignant"]
LFS_POINTER = b"version https://git-lfs"
MODEL_FILES = ("model.keras", "config.json")
OPTIONAL_FILES = ("README.md", "ood.npz", "orientation.npz")  # the model card; the classifier's screening checks
HUB_SCHEME = "hf://"


class ModelSourceError(RuntimeError):
    """A model could not be loaded; the message names the source, the file and the reason."""


@dataclass
class LoadedModel:
    model: keras.Model
    config: dict
    source: str
    card: str  # the model card (README.md) text, empty when the source has none
    folder: Path | None = None  # where its files are (optional extras such as ood.npz and orientation.npz live there)

    @property
    def encoder(self) -> str:
        """The EfficientNet-Lite variant it was built on ("lite0", "lite1", "lite2"), from its training record
        (models trained before Lite1 was ported do not name one: lite0)."""
        return self.config.get("training", {}).get("encoder", "lite0")


def source_for(kind: str) -> str:
    """The configured source of `kind` ("classifier" or "segmenter"): its setting, else the bundled folder."""
    return os.environ.get(SETTINGS[kind]) or str(BUNDLED[kind])


def parse_hub_source(source: str) -> tuple[str, str]:
    """`hf://owner/repo@revision` -> (repo_id, revision)."""
    spec = source[len(HUB_SCHEME):]
    repo_id, _, revision = spec.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ModelSourceError(f"{source!r}: expected hf://owner/repo@revision")
    return repo_id, revision or "main"


def _fetch_from_hub(source: str) -> Path:
    """The local folder of a Hub source's files. An optional file is skipped only when it is not there (not in
    the repo, or not in the cache when offline): any other failure to fetch it — the network, a timeout — is
    an error, as for the weights, because a classifier that lost its screening checks that way answered
    photos and other non-scans with a diagnosis, with one line in the log."""
    from huggingface_hub import hf_hub_download  # imported late: it reads HF_HUB_OFFLINE at import
    from huggingface_hub.errors import EntryNotFoundError

    repo_id, revision = parse_hub_source(source)
    folder = None
    for filename in (*MODEL_FILES, *OPTIONAL_FILES):
        try:
            folder = Path(hf_hub_download(repo_id, filename, revision=revision)).parent
        except Exception as error:  # the Hub raises many kinds: offline, missing repo/file/revision, HTTP
            if filename in OPTIONAL_FILES and isinstance(error, EntryNotFoundError):
                continue
            raise ModelSourceError(
                f"cannot fetch {filename} of Hub repo {repo_id} at revision {revision}: "
                f"{type(error).__name__}: {error}"
            ) from error
    return folder


def load_model(source: str) -> LoadedModel:
    """Load `model.keras` (safe mode, uncompiled) and `config.json` from a folder or Hub source (a
    path to the folder's model.keras is taken for the folder)."""
    folder = _fetch_from_hub(source) if source.startswith(HUB_SCHEME) else Path(source)
    if folder.name == "model.keras" and folder.is_file():
        folder = folder.parent
    for filename in MODEL_FILES:
        if not (folder / filename).is_file():
            raise ModelSourceError(f"model source {source}: {filename} not found in {folder}")
    weights = folder / "model.keras"
    if not zipfile.is_zipfile(weights):  # Keras would call it "File not found"
        with weights.open("rb") as f:
            pointer = f.read(len(LFS_POINTER)) == LFS_POINTER
        raise ModelSourceError(f"model source {source}: {weights} is " + (
            "a Git LFS pointer, not the weights: fetch them with `git lfs pull`" if pointer
            else "not a Keras model archive (damaged, or an incomplete download)"))
    try:
        config = json.loads((folder / "config.json").read_text())
        model = keras.saving.load_model(weights, compile=False, safe_mode=True)
    except Exception as error:
        raise ModelSourceError(f"model source {source}: cannot load it: {type(error).__name__}: {error}") from error
    card = folder / "README.md"
    return LoadedModel(model, config, source, card.read_text() if card.is_file() else "", folder)


def load_configured(kind: str, source: str | None = None) -> LoadedModel:
    """The `kind` ("classifier" or "segmenter") model at `source` (default: the one its setting names,
    else the bundled one), checked to be that kind of model; an error names the setting that chose the
    source."""
    source = source or source_for(kind)
    chosen_by = f" (chosen by {SETTINGS[kind]})" if os.environ.get(SETTINGS[kind]) else ""
    try:
        loaded = load_model(source)
    except ModelSourceError as error:
        raise ModelSourceError(f"{kind}{chosen_by}: {error}") from error
    task = loaded.config.get("task")
    if task != TASKS[kind]:
        raise ModelSourceError(f"{kind}{chosen_by}: {source} holds a {task or 'unnamed'} model, not a "
                               f"{TASKS[kind]} one (config.json's task)")
    if kind == "classifier" and loaded.config.get("classes") != CLASSES:
        raise ModelSourceError(f"{kind}{chosen_by}: {source} gives the classes {loaded.config.get('classes')}; the app "
                               f"reads {', '.join(CLASSES)}, in that order (config.json's classes)")
    return loaded
