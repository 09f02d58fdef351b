"""How much a scan's answer moves when it is shown as a scanner or viewer shows it, on the validation
scans of the training sources (their labels are not read: only the answer on the plain scan is
compared with the answer on the same scan in a screen):

    python -m bench.screens [--limit N] [--out reports/screens.json]

Each validation scan of BUSI and BUS-UCLM is placed on screens that other hospitals' exports show:
black and dark-grey (#161616) backgrounds, under a grey or a blue title bar with white text, with a
grey-scale bar beside the scan, and settings text beyond it. For each screen this prints how often the
class is the plain scan's, the largest change in a class probability (median and 95th percentile), how
often the screen changes whether a lesion is drawn, and the mean overlap (IoU) of the drawn lesions
where both draw one; answers refused on the screen but not on the plain scan are counted apart.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from inference.pipeline import Analyzer
from training.busi import REPO_ROOT, TRAINING_SOURCES, load_scan
from training.split import samples_by_side

TOP, LEFT = 90, 200  # where the scan lies on every screen
SCREENS = {  # name: (background level, title bar colour, grey-scale bar and settings text beside the scan)
    "black, grey title": (0, (60, 60, 60), False),
    "dark grey, grey title": (22, (60, 60, 60), False),
    "dark grey, blue title": (22, (8, 58, 90), False),
    "dark grey, blue title, scale and text": (22, (8, 58, 90), True),
}


def on_screen(gray: np.ndarray, level: int, title: tuple, beside: bool) -> np.ndarray:
    """`gray` at (TOP, LEFT) on an RGB screen of grey `level` under a `title` bar with white text, with a
    grey-scale bar and three lines of settings text to its right when `beside`."""
    height, width = gray.shape
    screen = Image.new("RGB", (width + 2 * LEFT + 150, height + 2 * TOP), (level,) * 3)
    draw, font = ImageDraw.Draw(screen), ImageFont.load_default(size=14)
    draw.rectangle((0, 0, screen.width, 40), fill=title)
    draw.text((10, 12), "ACME X7   L12-5   Breast   MI 1.0   TIS 0.4", fill="white", font=font)
    screen.paste(Image.fromarray(gray).convert("RGB"), (LEFT, TOP))
    if beside:
        ramp = np.linspace(255, 0, height).astype(np.uint8)[:, None].repeat(12, axis=1)
        screen.paste(Image.fromarray(ramp).convert("RGB"), (LEFT + width + 20, TOP))
        draw.multiline_text((LEFT + width + 45, TOP + 10), "Gain 50\nDR 60\nDepth 5.0cm", fill=(220, 220, 180),
                            font=font, spacing=8)
    return np.asarray(screen)


def comparison(plain, shown, height: int, width: int) -> dict:
    """What moved between the plain scan's analysis and the screen's (the screen's mask cut back to the scan)."""
    if shown.withheld or plain.withheld:
        return {"refused": shown.withheld and not plain.withheld,
                "refused_plain": plain.withheld}
    plain_mask = plain.mask()
    shown_mask = shown.mask()[TOP:TOP + height, LEFT:LEFT + width]
    union = (plain_mask | shown_mask).sum()
    return {"refused": False, "refused_plain": False, "same_class": shown.predicted_class == plain.predicted_class,
            "max_probability_change": float(np.abs(shown.probabilities - plain.probabilities).max()),
            "drawn_changed": bool(plain_mask.any()) != bool(shown_mask.any()),
            "iou": float((plain_mask & shown_mask).sum() / union) if plain_mask.any() and shown_mask.any() else None}


def summary(rows: list[dict]) -> dict:
    answered = [row for row in rows if "same_class" in row]
    changes = [row["max_probability_change"] for row in answered]
    ious = [row["iou"] for row in answered if row["iou"] is not None]
    return {"scans": len(rows), "refused_on_screen_only": sum(row["refused"] for row in rows),
            "same_class": float(np.mean([row["same_class"] for row in answered])),
            "probability_change_p50": float(np.percentile(changes, 50)),
            "probability_change_p95": float(np.percentile(changes, 95)),
            "lesion_drawn_changed": float(np.mean([row["drawn_changed"] for row in answered])),
            "mean_iou_where_both_draw": float(np.mean(ious)) if ious else None}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=0, help="at most N validation scans per source (0: all)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "screens.json")
    parser.add_argument("--framing", default="today's framing", help="which framing this run measures, in words")
    args = parser.parse_args(argv)
    analyzer = Analyzer()
    rows = {name: [] for name in SCREENS}
    for source in TRAINING_SOURCES:
        samples = samples_by_side(source)["val"]
        for sample in samples[:args.limit or len(samples)]:
            gray = load_scan(sample)
            plain = analyzer.analyze(gray)
            for name, screen in SCREENS.items():
                rows[name].append(comparison(plain, analyzer.analyze(on_screen(gray, *screen)), *gray.shape))
    report = {"command": "python -m bench.screens" + (f" --limit {args.limit}" if args.limit else ""),
              "framing": args.framing, "side": "validation, labels not read", "top_left": [TOP, LEFT],
              "screens": {name: summary(screen_rows) for name, screen_rows in rows.items()}}
    for name, numbers in report["screens"].items():
        print(f"{name}: " + ", ".join(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"
                                      for key, value in numbers.items()))
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
