"""The evaluation command on an external BUSI-layout folder that lacks a class."""

import json
import shutil

import pytest

from training.evaluate import main as evaluate_main


@pytest.fixture(scope="module")
def external_folder(tmp_path_factory, examples):
    """Lesion scans only (no normal folder), with their masks, in BUSI layout and other file names."""
    root = tmp_path_factory.mktemp("external")
    for path, truth in examples:
        if truth == "normal":
            continue
        (root / truth).mkdir(exist_ok=True)
        shutil.copy(path, root / truth / f"case-{path.stem}.png")
        shutil.copy(path.parent / "masks" / f"{path.stem}_mask.png", root / truth / f"case-{path.stem}_mask.png")
    return root


@pytest.mark.parametrize("task, keys, null_keys", [
    ("classifier", ["n_images", "accuracy", "recall_benign", "recall_malignant", "recall_bm", "macro_auc", "bm_auc", "ece"],
     ["recall_normal"]),
    ("segmenter", ["n_lesion_images", "dice", "iou", "dice_benign", "dice_malignant"], ["normal_fp_rate"]),
    ("explain", ["pointing_game_classifier", "pointing_game_segmenter"], []),
])
def test_external_data_without_normals(external_folder, tmp_path, task, keys, null_keys, capsys):
    out = tmp_path / "flat.json"
    evaluate_main([task, "--data", str(external_folder), "--json", str(out), "--out-dir", str(tmp_path)])
    flat = json.loads(out.read_text())
    for key in keys:
        assert isinstance(flat[key], (int, float)), key
    for key in null_keys:
        assert flat[key] is None, key
    assert "no normal scans" in capsys.readouterr().out
    report = json.loads(next(tmp_path.glob(f"{task}_*.json")).read_text())
    # a folder has no patient ids: each scan is its own unit, and each interval says how many it rests on
    # (a recall or a class's Dice only its own class's scans)
    malignant = sum(path.parent.name == "malignant" for path in external_folder.glob("*/case-*[!k].png"))
    if task == "classifier":
        assert flat["n_images"] == 6 and 0 <= flat["recall_bm"] <= 1
        assert report["ci95_units"]["accuracy"] == 6 and report["ci95_units"]["recall_malignant"] == malignant
    if task == "segmenter":
        assert flat["n_lesion_images"] == 6 and flat["dice"] > 0.5
        assert report["ci95_units"]["dice"] == 6 and report["ci95_units"]["dice_malignant"] == malignant
