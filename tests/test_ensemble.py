"""The ensemble command on the shipped segmenter and a few validation scans per source."""

import pytest

from training.ensemble import main as ensemble_main


def test_a_model_averaged_with_itself_is_scored_as_the_model(tmp_path):
    rows = ensemble_main(["models/segmenter", "models/segmenter", "--limit", "12", "--out", str(tmp_path / "e.json")])
    alone, _, mean = rows
    assert mean["members"] == ["models/segmenter"] * 2
    assert {k: v for k, v in mean.items() if k != "members"} == {k: v for k, v in alone.items() if k != "members"}
    assert 0.3 < alone["val_dice"] <= 1 and (tmp_path / "e.json").exists()


def test_members_that_frame_scans_differently_are_refused(capsys):
    with pytest.raises(SystemExit):
        ensemble_main(["models/segmenter", "models/segmenter_fast"])
    assert "share input size and framing" in capsys.readouterr().err
