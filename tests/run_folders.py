"""Run folders for the cross-source scorers' tests: a shipped model recorded as if trained on BUSI alone."""

import json
import os


def trained_on_busi_alone(model: str, folder):
    """`folder` holding `model`'s weights and a config that says it saw BUSI alone: (folder, config)."""
    config = json.loads(open(f"{model}/config.json").read())
    config["training"]["sources"] = ["busi"]
    (folder / "config.json").write_text(json.dumps(config))
    os.symlink(os.path.abspath(f"{model}/model.keras"), folder / "model.keras")
    return folder, config
