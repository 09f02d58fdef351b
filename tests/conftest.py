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

from training.busi import SOURCES

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples"


def dataset_root(source: str) -> Path:
    """A dataset's folder; without it the test is skipped, or fails where `REQUIRE_DATASETS=1`
    (CI has the datasets beside the clone, so a skip there would hide a broken data path)."""
    spec = SOURCES[source]
    root = spec.data_dir()
    if not root.is_dir():
        message = f"{spec.title} not found at {root}; set {spec.setting} to a BUSI-layout folder"
        if os.environ.get("REQUIRE_DATASETS") == "1":
            pytest.fail(message + " (REQUIRE_DATASETS=1)")
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def busi_root():
    return dataset_root("busi")


@pytest.fixture(scope="session")
def bus_uclm_root():
    return dataset_root("bus_uclm")


@pytest.fixture(scope="session")
def breast_root():
    return dataset_root("breast")


@pytest.fixture(scope="session")
def true_mask():
    """A function: example scan path -> its ground-truth lesion mask (bool), from examples/masks."""
    import numpy as np
    from PIL import Image

    return lambda path: np.asarray(Image.open(path.parent / "masks" / f"{path.stem}_mask.png").convert("L")) > 127


@pytest.fixture(scope="session")
def analyzer():
    """The real pipeline on the bundled models, loaded and warmed up once for the whole run."""
    from inference.pipeline import Analyzer

    return Analyzer()


def read_examples(dataset: str | None = None):
    with (EXAMPLES / "examples.csv").open() as f:
        return [(EXAMPLES / row["file"], row["ground_truth"]) for row in csv.DictReader(f)
                if dataset in (None, row["dataset"])]


@pytest.fixture(scope="session")
def examples():
    """(path, ground truth) of every example scan: held-out scans of three sources."""
    return read_examples()


@pytest.fixture(scope="session")
def busi_examples():
    """The examples from BUSI's test side: the only source the shipped models were trained on."""
    return read_examples("BUSI")


@pytest.fixture(scope="module")
def gated(analyzer):
    """The shipped models with the segmenter's normal gate set to `gate` (None: never hide a lesion),
    sparing lesions whose segmenter peak reaches `spares` (None: none spared), and any other
    post-processing `settings` of its config."""
    from inference.models import LoadedModel
    from inference.pipeline import Analyzer

    def make(gate, spares=None, **settings):
        config = {**analyzer.segmenter.config, "normal_gate": gate, "normal_gate_spares": spares, **settings}
        return Analyzer(analyzer.classifier, LoadedModel(analyzer.segmenter.model, config, "test", ""), warm_up=False)
    return make
