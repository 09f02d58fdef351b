"""Model sources: the real huggingface_hub code path, offline, against a Hub cache built here."""

import json
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
    for name in ("model.keras", "config.json", "README.md", "ood.npz", "orientation.npz"):
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


def test_optional_files_are_skipped_only_when_not_there(hub_repo, monkeypatch):
    """A repo without the screening checks (a segmenter's) loads; a check that failed to download for
    another reason (the network) stopped nothing before, and the classifier then answered non-scans."""
    import huggingface_hub

    bare = Path(os.environ["HF_HUB_CACHE"]) / "models--owner--busi-bare"
    (bare / "snapshots" / COMMIT).mkdir(parents=True, exist_ok=True)
    for name in ("model.keras", "config.json"):
        if not (bare / "snapshots" / COMMIT / name).exists():
            (bare / "snapshots" / COMMIT / name).symlink_to(BUNDLED["classifier"] / name)
    (bare / "refs").mkdir(exist_ok=True)
    (bare / "refs" / "main").write_text(COMMIT)
    assert load_model("hf://owner/busi-bare@main").folder == bare / "snapshots" / COMMIT

    download = huggingface_hub.hf_hub_download

    def flaky(repo_id, filename, **kwargs):
        if filename == "ood.npz":
            raise TimeoutError("read timed out")
        return download(repo_id, filename, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", flaky)
    with pytest.raises(ModelSourceError, match="ood.npz.*TimeoutError"):
        load_model(f"hf://{hub_repo}@main")


def test_missing_repo_is_a_clear_error():
    with pytest.raises(ModelSourceError, match="owner/absent.*main"):
        load_model("hf://owner/absent@main")


def test_missing_folder_and_broken_file(tmp_path):
    with pytest.raises(ModelSourceError, match="model.keras not found"):
        load_model(str(tmp_path))
    (tmp_path / "model.keras").write_bytes(b"not a keras file")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelSourceError, match="not a Keras model archive"):
        load_model(str(tmp_path))
    (tmp_path / "model.keras").write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n")
    with pytest.raises(ModelSourceError, match="Git LFS pointer.*git lfs pull"):
        load_model(str(tmp_path))
    (tmp_path / "model.keras").write_bytes((BUNDLED["segmenter"] / "model.keras").read_bytes()[:100_000])
    with pytest.raises(ModelSourceError, match="cannot load|not a Keras model archive"):
        load_model(str(tmp_path))


def test_the_model_file_itself_stands_for_its_folder():
    assert load_model(str(BUNDLED["classifier"] / "model.keras")).config["task"] == "classification"


def test_swapped_or_damaged_settings_name_the_setting(monkeypatch, tmp_path):
    """The segmenter given as the classifier (and a damaged out-of-distribution file): a message that
    names the setting and the problem, not a crash deep in the pipeline."""
    import shutil

    monkeypatch.setenv("BUSI_CLASSIFIER", str(BUNDLED["segmenter"]))
    with pytest.raises(ModelSourceError, match="classifier \\(chosen by BUSI_CLASSIFIER\\).*segmentation model, not a classification"):
        Analyzer(warm_up=False)
    damaged = tmp_path / "classifier"
    shutil.copytree(BUNDLED["classifier"], damaged)
    (damaged / "ood.npz").write_bytes(b"garbage")
    monkeypatch.setenv("BUSI_CLASSIFIER", str(damaged))
    with pytest.raises(ModelSourceError, match="ood.npz is not a valid out-of-distribution check"):
        Analyzer(warm_up=False)
    shutil.copy(BUNDLED["classifier"] / "ood.npz", damaged / "ood.npz")
    config = json.loads((damaged / "config.json").read_text())  # classes in another order: refused when loaded
    (damaged / "config.json").write_text(json.dumps(config | {"classes": ["benign", "malignant", "normal"]}))
    with pytest.raises(ModelSourceError, match="gives the classes \\['benign', 'malignant', 'normal'\\]; the app reads"):
        Analyzer(warm_up=False)
    (damaged / "config.json").write_text(json.dumps(config))
    (damaged / "orientation.npz").write_bytes(b"garbage")
    with pytest.raises(ModelSourceError, match="orientation.npz is not a valid orientation check"):
        Analyzer(warm_up=False)


def test_the_app_refuses_to_start_on_a_bad_setting_with_a_message(tmp_path):
    import subprocess
    import sys

    from training.busi import REPO_ROOT

    env = {**os.environ, "BUSI_SEGMENTER": str(tmp_path / "absent")}
    started = subprocess.run([sys.executable, str(REPO_ROOT / "app.py")], env=env, capture_output=True, text=True,
                             timeout=300, cwd=tmp_path)
    assert started.returncode != 0
    assert "Cannot start: segmenter (chosen by BUSI_SEGMENTER)" in started.stderr and "model.keras not found" in started.stderr
    assert "Traceback" not in started.stderr


def test_analyzer_uses_the_hub_setting(hub_repo, monkeypatch, examples):
    monkeypatch.setenv("BUSI_CLASSIFIER", f"hf://{hub_repo}@{COMMIT}")
    analyzer = Analyzer(warm_up=False)
    assert analyzer.classifier.source.startswith("hf://") and analyzer.ood is not None, "its check came along"
    assert analyzer.orientation is not None, "and its orientation check"
    analysis = analyzer.analyze(examples[0][0])
    assert abs(analysis.probabilities.sum() - 1) < 1e-5
