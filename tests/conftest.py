"""Shared fixtures. Settings that libraries read at import time are fixed here, before any import:
the Hub is offline and its cache is a folder the tests own."""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="busi-test-hub-cache-")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import csv

import pytest

from training.busi import busi_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples"


@pytest.fixture(scope="session")
def busi_root():
    root = busi_dir()
    if not root.is_dir():
        pytest.skip(f"BUSI dataset not found at {root}; set BUSI_DIR to a BUSI-layout folder")
    return root


@pytest.fixture(scope="session")
def analyzer():
    """The real pipeline on the bundled models, loaded and warmed up once for the whole run."""
    from inference.pipeline import Analyzer

    return Analyzer()


@pytest.fixture(scope="session")
def examples():
    """(path, ground truth) of every example scan."""
    with (EXAMPLES / "examples.csv").open() as f:
        return [(EXAMPLES / row["file"], row["ground_truth"]) for row in csv.DictReader(f)]
