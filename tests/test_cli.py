"""The batch command and the publish dry run, on real files."""

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from inference.__main__ import main as batch_main
from training.publish import check_folder, main as publish_main


def test_batch_command_on_a_folder(tmp_path, examples, capsys):
    folder = tmp_path / "scans" / "nested"
    folder.mkdir(parents=True)
    for path, _ in examples[:2]:
        shutil.copy(path, folder / path.name)
        shutil.copy(path.parent / "masks" / f"{path.stem}_mask.png", folder / f"{path.stem}_mask.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    out, masks = tmp_path / "results.csv", tmp_path / "masks"
    assert batch_main([str(tmp_path / "scans"), "--out", str(out), "--masks", str(masks)]) == 0
    rows = list(csv.DictReader(out.open()))
    names = [r["file"].rsplit("/", 1)[1] for r in rows]
    assert sorted(names) == sorted([path.name for path, _ in examples[:2]] + ["broken.png"])
    rows = sorted(rows, key=lambda r: r["file"].endswith("broken.png"))
    for row in rows[:2]:
        probs = [float(row[f"p_{c}"]) for c in ("normal", "benign", "malignant")]
        assert abs(sum(probs) - 1) < 1e-3 and row["predicted_class"] in ("normal", "benign", "malignant")
        mask = np.asarray(Image.open(masks / f"{row['file'].rsplit('/', 1)[1][:-4]}_pred.png"))
        assert mask.shape == Image.open(row["file"]).size[::-1] and set(np.unique(mask)) <= {0, 255}
        assert int(row["lesion_area_px"]) == int((mask == 255).sum())
    assert rows[2]["warnings"].startswith("error:") and rows[2]["predicted_class"] == ""


@pytest.mark.parametrize("kind", ["classifier", "segmenter"])
def test_publish_dry_run_lists_the_checked_files(kind, capsys):
    files = publish_main([kind, "--repo", "owner/name", "--dry-run"])
    expected = ["README.md", "config.json", "model.keras"] + (["ood.npz"] if kind == "classifier" else [])
    assert sorted(f.name for f in files) == expected
    assert "would upload to owner/name" in capsys.readouterr().out


def test_publish_refuses_an_incomplete_folder(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"")
    with pytest.raises(ValueError, match="lacks"):
        check_folder("classifier", tmp_path)


def test_batch_command_reads_dicom_folders_and_reports_mm(tmp_path):
    """A PACS-style folder (DICOM files without a suffix, a DICOMDIR index, a hidden file): the DICOM
    scans are rows with their size in mm; the index and the hidden file are not scans."""
    from training.busi import REPO_ROOT

    dicom = REPO_ROOT / "examples" / "dicom" / "breast_case010.dcm"
    folder = tmp_path / "export" / "SERIES1"
    folder.mkdir(parents=True)
    shutil.copy(dicom, folder / "IM0001")
    shutil.copy(dicom, folder / "IM0002.dcm")
    (tmp_path / "export" / "DICOMDIR").write_bytes(b"index")
    (folder / ".DS_Store").write_bytes(b"junk")
    out = tmp_path / "results.csv"
    assert batch_main([str(tmp_path / "export"), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["file"].rsplit("/", 1)[1] for r in rows] == ["IM0001", "IM0002.dcm"]
    for row in rows:
        area_mm2, area_px = float(row["lesion_area_mm2"]), int(row["lesion_area_px"])
        assert area_px > 0 and abs(area_mm2 - area_px * 0.1078 ** 2) <= 0.01 * area_mm2
        assert float(row["longest_diameter_mm"]) >= float(row["perpendicular_width_mm"]) > 0
