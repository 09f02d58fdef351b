"""The About page's text: the models it names and the model cards it folds."""

from pathlib import Path

from inference.about import about_text, headline_metrics, nested_headings, training_folded

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_card_headings_nest_under_the_about_page():
    card = "# Title\n\nText with a # sign.\n\n## Metrics\n###### Deepest"
    assert nested_headings(card) == "### Title\n\nText with a # sign.\n\n#### Metrics\n###### Deepest"


def test_about_folds_each_cards_training_record(analyzer):
    """The cards' Training sections (most of each card) are folded; what comes after one stays open."""
    text = about_text(analyzer)
    assert text.count("<summary>Training, and what was tried</summary>") == 2
    for card in (analyzer.classifier.card, analyzer.segmenter.card):
        folded = training_folded(card)
        training = folded.index("## Training")
        assert folded.rfind("<details>", 0, training) > folded.rfind("</details>", 0, training), "inside a fold"
        assert "## Intended use" in folded and "## Limitations" in folded and "## Metrics" in folded
    fast = (REPO_ROOT / "models" / "segmenter_fast" / "README.md").read_text()  # Training before Metrics
    folded = training_folded(fast)
    assert folded.index("</details>") < folded.index("## Metrics"), "the fold ends where the next section starts"


def test_about_names_each_models_encoder(analyzer):
    """The About text names the encoder each bundled model was trained on (the classifier's config
    says Lite1; the segmenter's, trained before Lite1 was ported, names none: Lite0), not a fixed one."""
    text = about_text(analyzer)
    assert "An EfficientNet-Lite1 classifier" in text
    assert "with an EfficientNet-Lite0 encoder, also ImageNet-pretrained" in text


def test_about_opens_with_each_models_test_numbers(analyzer):
    """Above the folded cards: each card's first Metrics table, with BrEaST's column (the hospital the
    models never saw), not buried in the cards."""
    text = about_text(analyzer)
    headlines = text[text.index("## How well they do"):text.index("<details>")]
    for card in (analyzer.classifier.card, analyzer.segmenter.card):
        table = headline_metrics(card)
        assert table and table in headlines and "BrEaST (external)" in table.splitlines()[0]
    assert "benign-vs-malignant AUC" in headlines and "lesion Dice (pipeline)" in headlines
    assert headline_metrics("# A card\n\n## Metrics\nNo table yet.\n\n## Training\n| a |\n") is None
