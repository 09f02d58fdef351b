"""Shared fixtures: the BUSI folder (tests that need it skip, saying why, when it is absent)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from training.busi import busi_dir


@pytest.fixture(scope="session")
def busi_root():
    root = busi_dir()
    if not root.is_dir():
        pytest.skip(f"BUSI dataset not found at {root}; set BUSI_DIR to a BUSI-layout folder")
    return root
