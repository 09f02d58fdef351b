"""Publish a shipped model folder to the Hugging Face Hub, so the app can load it with
`BUSI_CLASSIFIER=hf://owner/name@<commit>` (or BUSI_SEGMENTER).

    python -m training.publish classifier --repo owner/name [--dry-run]

Before anything is uploaded the folder is checked: the model loads with safe_mode=True, its config
names what serving needs, and the model card carries the sections every card must have. `--dry-run`
prints what would be uploaded and stops. Uploading needs a token (`hf auth login` or HF_TOKEN).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from inference.models import BUNDLED, MODEL_FILES, OPTIONAL_FILES, load_model

UPLOADED_FILES = (*MODEL_FILES, "README.md")  # always; the other optional files go too when present
REQUIRED_CONFIG = {"classifier": ("classes", "input_size", "temperature", "logits_layer", "gradcam_layer"),
                   "segmenter": ("input_size", "threshold", "min_area_fraction", "logits_layer", "gradcam_layer")}
REQUIRED_CARD_TEXT = ("not a medical device", "## Data", "## Metrics", "## Intended use", "## Limitations")
# Weights inherit the strictest licence of their training data: BUS-UCLM is CC BY-NC 4.0.
NON_COMMERCIAL_SOURCES = {"bus_uclm"}
NON_COMMERCIAL_LICENSE = "cc-by-nc-4.0"


def card_license(card: str) -> str | None:
    """The `license:` of a model card's front matter (what the Hub lists the weights under), read the
    way the Hub reads it."""
    from huggingface_hub import ModelCard

    return ModelCard(card).data.license


def check_folder(kind: str, folder: Path) -> list[Path]:
    """The files to upload, after checking the folder is complete and loadable; raises ValueError."""
    missing = [name for name in UPLOADED_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder} lacks {', '.join(missing)}")
    config = json.loads((folder / "config.json").read_text())
    lacking = [key for key in REQUIRED_CONFIG[kind] if key not in config]
    if lacking:
        raise ValueError(f"{folder / 'config.json'} lacks {', '.join(lacking)}")
    card = (folder / "README.md").read_text()
    absent = [text for text in REQUIRED_CARD_TEXT if text.lower() not in card.lower()]
    if absent:
        raise ValueError(f"model card {folder / 'README.md'} lacks {absent}")
    sources = set(config.get("training", {}).get("sources", []))
    if sources & NON_COMMERCIAL_SOURCES and card_license(card) != NON_COMMERCIAL_LICENSE:
        raise ValueError(f"model card {folder / 'README.md'} declares license {card_license(card)!r}, but the weights "
                         f"were trained on {', '.join(sorted(sources & NON_COMMERCIAL_SOURCES))}: "
                         f"{NON_COMMERCIAL_LICENSE}")
    load_model(str(folder))  # safe_mode=True: refuses anything that would run code on load
    return [folder / name for name in dict.fromkeys((*UPLOADED_FILES, *OPTIONAL_FILES)) if (folder / name).is_file()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=sorted(BUNDLED))
    parser.add_argument("--repo", required=True, help="Hub model repository, owner/name")
    parser.add_argument("--folder", type=Path, help="model folder (default: the bundled one)")
    parser.add_argument("--dry-run", action="store_true", help="check and list, upload nothing")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    folder = args.folder or BUNDLED[args.kind]
    files = check_folder(args.kind, folder)
    print(f"{'would upload' if args.dry_run else 'uploading'} to {args.repo}:")
    for path in files:
        print(f"  {path.name:12s} {path.stat().st_size / 1e6:8.2f} MB")
    if args.dry_run:
        return files
    from huggingface_hub import create_repo, upload_folder

    create_repo(args.repo, repo_type="model", private=args.private, exist_ok=True)
    commit = upload_folder(repo_id=args.repo, folder_path=folder, allow_patterns=[path.name for path in files],
                           commit_message=f"Upload {args.kind} from busi-ultrasound-demo")
    print(f"done: set BUSI_{args.kind.upper()}=hf://{args.repo}@{commit.oid}")
    return files


if __name__ == "__main__":
    main()
