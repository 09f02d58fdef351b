"""The batch command and the publish dry run, on real files."""

import csv
import shutil
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from inference.__main__ import main as batch_main
from training.publish import check_folder, main as publish_main


def test_batch_command_on_a_folder(tmp_path, examples):
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
    expected = ["README.md", "config.json", "model.keras"] + (["ood.npz", "orientation.npz"] if kind == "classifier" else [])
    assert sorted(f.name for f in files) == expected
    assert "would upload to owner/name" in capsys.readouterr().out


def test_publish_uploads_every_file_it_checked(monkeypatch, capsys):
    """The upload's file filter, applied by huggingface_hub itself, lets through exactly the checked
    files: the classifier's screening checks (ood.npz, orientation.npz) go up with its weights. Only the
    two network calls are replaced, by recorders."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    asked = {}
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda *args, **kwargs: None)
    monkeypatch.setattr(huggingface_hub, "upload_folder",
                        lambda **kwargs: asked.update(kwargs) or SimpleNamespace(oid="0" * 40))
    files = publish_main(["classifier", "--repo", "owner/name"])
    folder = Path(asked["folder_path"])
    uploaded = list(filter_repo_objects([p.name for p in folder.iterdir()], allow_patterns=asked["allow_patterns"]))
    assert sorted(uploaded) == sorted(f.name for f in files) and {"ood.npz", "orientation.npz"} <= set(uploaded)
    assert f"hf://owner/name@{'0' * 40}" in capsys.readouterr().out


def test_publish_refuses_a_card_that_hides_the_non_commercial_licence(tmp_path):
    from training.busi import REPO_ROOT
    from training.publish import card_license

    folder = tmp_path / "classifier"
    shutil.copytree(REPO_ROOT / "models" / "classifier", folder)
    assert card_license((folder / "README.md").read_text()) == "cc-by-nc-4.0"
    card = folder / "README.md"
    card.write_text(card.read_text().replace("license: cc-by-nc-4.0", "license: apache-2.0", 1))
    with pytest.raises(ValueError, match="cc-by-nc-4.0"):
        check_folder("classifier", folder)


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
    shutil.copy(dicom, folder / "1.2.826.0.1.3680043.8.498.1234")  # named by its instance UID
    (tmp_path / "export" / "DICOMDIR").write_bytes(b"index")
    (folder / ".DS_Store").write_bytes(b"junk")
    out = tmp_path / "results.csv"
    assert batch_main([str(tmp_path / "export"), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["file"].rsplit("/", 1)[1] for r in rows] == ["1.2.826.0.1.3680043.8.498.1234", "IM0001", "IM0002.dcm"]
    for row in rows:
        area_mm2, area_px = float(row["lesion_area_mm2"]), int(row["lesion_area_px"])
        assert area_px > 0 and abs(area_mm2 - area_px * 0.1078 ** 2) <= 0.01 * area_mm2
        assert float(row["longest_diameter_mm"]) >= float(row["perpendicular_width_mm"]) > 0


def test_scans_with_the_same_stem_keep_their_own_masks(analyzer, examples, tmp_path):
    """a.png beside sub/a.png (and a.dcm): each scan's mask under its own name, none overwritten."""
    from inference.batch import output_stems

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    lesion, normal = (next(p for p, t in examples if t == truth) for truth in ("malignant", "normal"))
    shutil.copy(lesion, folder / "scan.png")
    shutil.copy(normal, folder / "sub" / "scan.png")
    shutil.copy(Path(lesion).parent / "busi_benign_354.png", folder / "other.png")
    out, masks = tmp_path / "results.csv", tmp_path / "masks"
    assert batch_main([str(folder), "--out", str(out), "--masks", str(masks)]) == 0
    assert sorted(p.name for p in masks.iterdir()) == ["other_pred.png", "scan_png_pred.png", "sub__scan_png_pred.png"]
    for name, scan in (("scan_png", lesion), ("sub__scan_png", normal)):
        assert np.array_equal(np.asarray(Image.open(masks / f"{name}_pred.png")), analyzer.analyze(scan).mask_png())
    assert output_stems(["a.png", "a.dcm", "/x/b.png", "b.png"]) == {"a.png": "a_png", "a.dcm": "a_dcm",
                                                                       "/x/b.png": "x__b_png", "b.png": "b_png"}
    # a file whose own stem is a name given to another (review: both wrote a_png_pred.png)
    stems = output_stems(["s/a.png", "s/sub/a.png", "s/a_png.jpg", "s/a_png_2.bmp"])
    assert stems == {"s/a.png": "a_png", "s/sub/a.png": "sub__a_png", "s/a_png.jpg": "a_png_3", "s/a_png_2.bmp": "a_png_2"}


def test_a_run_where_nothing_could_be_analysed_fails(tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "notes.png").write_bytes(b"not a scan")
    out = tmp_path / "new" / "folder" / "results.csv"
    assert batch_main([str(tmp_path / "bad"), "--out", str(out)]) == 1, "exit 1: no scan analysed"
    assert out.is_file(), "--out's folder is made"
    for bad_out in (tmp_path / "results.xlsx", tmp_path):
        with pytest.raises(SystemExit) as refused:
            batch_main([str(tmp_path / "bad"), "--out", str(bad_out)])
        assert refused.value.code == 2
    assert ".csv or .parquet" in capsys.readouterr().err


def test_batch_command_skips_everything_in_hidden_folders(tmp_path, examples):
    """A dataset kept under git: nothing below .git (nor any other hidden folder, at any depth) is a
    row, as hidden files are not; the scans beside them are."""
    scan = examples[0][0]
    folder = tmp_path / "dataset"
    for hidden in (".git/HEAD", ".git/config", ".git/objects/ab/cdef0123456789"):
        (folder / hidden).parent.mkdir(parents=True, exist_ok=True)
        (folder / hidden).write_text("ref: refs/heads/main\n")
    for copy in (".hidden/h.png", "sub/.cache/c.png", "sub/kept.png", "top.png"):
        (folder / copy).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(scan, folder / copy)
    out = tmp_path / "results.csv"
    assert batch_main([str(folder), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [row["file"] for row in rows] == [str(folder / "sub" / "kept.png"), str(folder / "top.png")]


@pytest.fixture
def models_must_not_load(monkeypatch):
    """A command that should stop on its arguments fails this test if it gets as far as the models."""
    def refuse():
        raise AssertionError("the models were loaded before the arguments were checked")
    monkeypatch.setattr("inference.batch.Analyzer", refuse)
    monkeypatch.setattr("inference.__main__.Analyzer", refuse)


def test_parquet_without_pyarrow_is_refused_before_the_models_load(examples, tmp_path, monkeypatch, capsys,
                                                                    models_must_not_load):
    """With requirements.txt alone: refused after the models had loaded, leaving an empty results.parquet
    (fresh-install check)."""
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    out = tmp_path / "results.parquet"
    with pytest.raises(SystemExit) as refused:
        batch_main([str(examples[0][0]), "--out", str(out)])
    assert refused.value.code == 2 and not out.exists()
    assert "--out: Parquet output needs pyarrow: pip install -r requirements-ray.txt" in capsys.readouterr().err


def test_a_model_that_cannot_be_loaded_is_said_in_a_line_and_leaves_no_empty_results(examples, tmp_path, monkeypatch,
                                                                                      capsys):
    """BUSI_SEGMENTER=models/segmenter_fast run from another folder: a traceback, and an empty CSV left
    behind (README check)."""
    monkeypatch.setenv("BUSI_SEGMENTER", str(tmp_path / "no_such_model"))
    out = tmp_path / "results.csv"
    with pytest.raises(SystemExit) as refused:
        batch_main([str(examples[0][0]), "--out", str(out)])
    error = capsys.readouterr().err
    assert refused.value.code == 2 and not out.exists()
    assert "error: segmenter (chosen by BUSI_SEGMENTER)" in error and "Traceback" not in error


@pytest.mark.parametrize("wrong, message", [
    (["--masks", "{a_file}"], "--masks: {a_file} is a file, not a folder"),
    (["--explain", "{a_file}/maps"], "--explain: {a_file} is a file, not a folder"),
    (["--out", "{a_file}/results.csv"], "--out: {a_file} is a file, not a folder"),
    (["--out", "/proc/results.csv"], "--out: cannot"),  # a folder where no file can be made
], ids=["masks-is-a-file", "explain-below-a-file", "out-below-a-file", "out-unwritable"])
def test_output_path_mistakes_are_refused_before_the_models_load(wrong, message, tmp_path, examples,
                                                                  models_must_not_load, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    wrong = [part.format(a_file=a_file) for part in wrong]
    with pytest.raises(SystemExit) as refused:  # a later --out replaces the first
        batch_main([str(examples[0][0]), "--out", str(tmp_path / "results.csv"), *wrong])
    assert refused.value.code == 2
    assert message.format(a_file=a_file) in capsys.readouterr().err


def test_input_mistakes_are_refused_before_the_models_load(tmp_path, examples, models_must_not_load, monkeypatch,
                                                           capsys):
    """A mistyped path, and a zip archive (to unpack: the command reads files), stop the local engine
    at once; the Ray engine still takes URIs, which only it can read."""
    out, mistyped, archive = tmp_path / "results.csv", tmp_path / "does_not_exist.png", tmp_path / "scans.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(examples[0][0], examples[0][0].name)
    for given, message in ((mistyped, f"no such file or folder: {mistyped}"),
                           (archive, f"{archive} is a zip archive: unpack it first")):
        with pytest.raises(SystemExit) as refused:
            batch_main([str(examples[0][0]), str(given), "--out", str(out)])
        assert refused.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists(), "nothing is written for a refused command"
    ray_engine = pytest.importorskip("inference.ray_engine")
    from inference.batch import Tally

    monkeypatch.setattr(ray_engine, "run", lambda sources, *options: Tally(scans=len(sources)))
    assert batch_main(["s3://bucket/scans", "--out", str(out), "--engine", "ray"]) == 0


def test_the_summary_names_scans_given_no_answer_apart(tmp_path, examples, capsys):
    """A photo is analysed but given no class: the summary said "3 scans, 1 failed" as if two had results."""
    import skimage.data

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(examples[0][0], folder / "scan.png")
    Image.fromarray(skimage.data.astronaut()).save(folder / "photo.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "results.csv"
    assert batch_main([str(folder), "--out", str(out)]) == 0
    rows = {Path(row["file"]).name: row for row in csv.DictReader(out.open())}
    assert rows["photo.png"]["predicted_class"] == "" and rows["photo.png"]["warnings"]
    assert (rows["photo.png"]["no_answer"], rows["scan.png"]["no_answer"], rows["broken.png"]["no_answer"]) == \
           ("in colour", "", ""), "why the photo has no class, in a column a spreadsheet can filter"
    assert (f"wrote {out}: 3 scans: 1 with a result, 1 given none (the warnings column says why), 1 failed"
            in capsys.readouterr().err)


def test_a_folder_without_scans_names_what_it_passed_over(tmp_path, capsys, models_must_not_load):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("no scan here")
    with pytest.raises(SystemExit) as refused:
        batch_main([str(tmp_path / "in"), "--out", str(tmp_path / "results.csv")])
    assert refused.value.code == 2
    assert f"no scans found in the given paths; passed over 1 file(s) that are no scans, or no regular files: " \
           f"{tmp_path / 'in' / 'notes.txt'}" in capsys.readouterr().err


def test_a_run_of_one_scan_says_scan(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG not really")
    assert batch_main([str(tmp_path / "in"), "--out", str(tmp_path / "results.csv")]) == 1
    assert ": 1 scan: 0 with a result, 0 given none (the warnings column says why), 1 failed" in capsys.readouterr().err
