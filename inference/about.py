"""The About page's text (no UI): what the models are, what they were trained and tested on, and
both model cards, folded so the page opens on the models rather than on the cards' training records.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from inference.report import NOT_A_DEVICE, NOT_FOR_CARE, describe_model

if TYPE_CHECKING:  # the pipeline pulls in TensorFlow; the page only reads the loaded models
    from inference.pipeline import Analyzer

DISCLAIMER = f"**{NOT_A_DEVICE}** {NOT_FOR_CARE}"


def without_front_matter(card: str) -> str:
    """A Hub model card minus its YAML header, which is metadata, not prose."""
    return re.sub(r"\A---\n.*?\n---\n", "", card, flags=re.DOTALL)


def training_folded(card: str) -> str:
    """A model card with its Training section (the long record of every recipe tried, most of the
    card) folded under one line of its own, so that the About page shows the model, its intended use,
    limitations, data and metrics without scrolling past it."""
    match = re.search(r"(?ms)^## Training\n.*?(?=^## |\Z)", card)
    if match is None:
        return card
    return (f"{card[:match.start()]}<details><summary>Training, and what was tried</summary>\n\n{match[0].rstrip()}"
            f"\n\n</details>\n\n{card[match.end():]}")


def nested_headings(markdown: str, levels: int = 2) -> str:
    """Markdown with every heading `levels` deeper, for a card shown inside the About page: its own
    top-level headings would make the page's outline hold three titles."""
    return re.sub(r"^(#{1,6}) ", lambda match: "#" * min(6, len(match[1]) + levels) + " ", markdown, flags=re.MULTILINE)


def headline_metrics(card: str) -> str | None:
    """The first table of a model card's Metrics section (its per-source test numbers with intervals),
    or None: the About page shows it above the folded cards, which a newcomer found no number outside
    of (opened, they run to many screens of recipes tried)."""
    section = re.search(r"(?ms)^## Metrics\n(.*?)(?=^## |\Z)", card)
    table = section and re.search(r"(?m)(?:^\|.*\|\n?)+", section[1])
    return table[0].strip() if table else None


def about_text(analyzer: Analyzer) -> str:
    """The About page in Markdown. The models' encoders, an ensemble's size, their headline numbers,
    sources and cards are read from the loaded models, so a Space pointed at other models through
    `BUSI_CLASSIFIER` / `BUSI_SEGMENTER` shows those; the prose on framing and training data describes the
    bundled recipe (both sources, aspect-kept framing), and a model trained otherwise says so in its card."""
    cards = "\n\n".join(
        f"<details><summary>Model card: {name} — {describe_model(m)}</summary>\n\n{nested_headings(training_folded(without_front_matter(m.card)))}\n\n</details>"
        for name, m in (("classifier", analyzer.classifier), ("segmenter", analyzer.segmenter))
    )
    headlines = "\n\n".join(f"**The {name}**\n\n{table}" for name, m in (("classifier", analyzer.classifier),
                                                                        ("segmenter", analyzer.segmenter))
                              if (table := headline_metrics(m.card)))
    members = len(analyzer.segmenter.config.get("training", {}).get("members", []))
    segmenter = (f"the mean of {members} U-Net segmenters (one recipe, {members} random seeds)" if members
                 else "a U-Net segmenter")
    classifier_encoder, segmenter_encoder = (f"EfficientNet-{m.encoder.title()}"
                                             for m in (analyzer.classifier, analyzer.segmenter))
    encoders = ("the same pretrained encoder" if classifier_encoder == segmenter_encoder
                else f"an {segmenter_encoder} encoder, also ImageNet-pretrained")
    return f"""{DISCLAIMER}

## Models
An {classifier_encoder} classifier (ImageNet-pretrained, fine-tuned on two hospitals' scans,
probabilities calibrated by temperature scaling) and {segmenter}, with {encoders}. Both see the scan
cropped to its ultrasound field with its aspect ratio kept. An image
that looks unlike the breast ultrasound they were trained on (a photo, a document) gets no answer at
all; a picture made to look like ultrasound (grey texture in a probe's sector) can pass that check and
get one. Grad-CAM
explains the chosen class's pre-softmax score; Seg-Grad-CAM explains the summed logits of the
predicted lesion. The classifier was trained to take its benign/malignant evidence from the lesion
(its training masks asked those maps to peak there), so a map on the lesion is expected, and a map
elsewhere is worth a second look.

## Data
Trained on the training sets of BUSI — Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. *Dataset of
breast ultrasound images.* Data in Brief 28 (2020) 104863 (licence not confirmed) — and BUS-UCLM
(Vallez et al., Sci Data 2025; CC BY-NC 4.0, so the weights are for non-commercial use). Tested
separately on both test sets and on BrEaST-Lesions_USG (Pawłowska et al., Sci Data 2024; CC BY 4.0),
a hospital the models never saw: expect the BrEaST numbers, not the BUSI ones, on your own scanner.

## How well they do
{headlines or "The model cards below hold the models' test numbers."}

95 % bootstrap intervals in brackets (resampling patients, not frames, where a source has several frames of one
patient). The model cards below say how each number was measured, and what
else was tried.

{cards}
"""
