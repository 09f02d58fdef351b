"""Model sources: the real huggingface_hub code path, offline, against a Hub cache built here."""

import os
from pathlib import Path

import pytest

from inference.models import BUNDLED, ModelSourceError, load_model, parse_hub_source
from inference.pipeline import Analyzer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hub_repo():
    """`owner/busi-classifier` in the Hub cache layout: refs/main -> snapshots/<commit>/files
    (symlinks into the bundled folder, as the Hub cache links snapshots to blobs)."""
    repo = Path(os.environ["HF_HUB_CACHE"]) / "models--owner--busi-classifier"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    for name in ("model.keras", "config.json", "README.md"):
        if not (snapshot / name).exists():
            (snapshot / name).symlink_to(BUNDLED["classifier"] / name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return "owner/busi-classifier"


def test_parse_hub_source():
    assert parse_hub_source("hf://a/b@v1") == ("a/b", "v1")
    assert parse_hub_source("hf://a/b") == ("a/b", "main")
    with pytest.raises(ModelSourceError, match="owner/repo"):
        parse_hub_source("hf://just-a-name")


@pytest.mark.parametrize("revision", [COMMIT, "main"])
def test_loads_from_the_hub_cache_offline(hub_repo, revision):
    loaded = load_model(f"hf://{hub_repo}@{revision}")
    assert loaded.config["classes"] == ["normal", "benign", "malignant"]
    assert "not a medical device" in loaded.card.lower()
    assert loaded.model.get_layer("logits").units == 3


def test_unknown_revision_names_repo_file_and_revision(hub_repo):
    with pytest.raises(ModelSourceError) as error:
        load_model(f"hf://{hub_repo}@no-such-tag")
    message = str(error.value)
    assert hub_repo in message and "model.keras" in message and "no-such-tag" in message


def test_missing_repo_is_a_clear_error():
    with pytest.raises(ModelSourceError, match="owner/absent.*main"):
        load_model("hf://owner/absent@main")


def test_missing_folder_and_broken_file(tmp_path):
    with pytest.raises(ModelSourceError, match="model.keras not found"):
        load_model(str(tmp_path))
    (tmp_path / "model.keras").write_bytes(b"not a keras file")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelSourceError, match="cannot load"):
        load_model(str(tmp_path))


def test_analyzer_uses_the_hub_setting(hub_repo, monkeypatch, examples):
    monkeypatch.setenv("BUSI_CLASSIFIER", f"hf://{hub_repo}@{COMMIT}")
    analyzer = Analyzer(warm_up=False)
    assert analyzer.classifier.source.startswith("hf://")
    analysis = analyzer.analyze(examples[0][0])
    assert abs(analysis.probabilities.sum() - 1) < 1e-5
