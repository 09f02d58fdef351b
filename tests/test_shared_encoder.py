"""A segmenter trained on the classifier's frozen encoder lets the batch path run that encoder once:
the one-pass outputs equal the two models run apart, and the pass is used only when the encoders
are truly the same."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from inference import shared_encoder
from inference.decode import decode
from inference.models import LoadedModel, load_model
from inference.pipeline import Analyzer
from training.metrics import dice_iou
from training.architectures import build_segmenter
from training.efficientnet_lite import copy_encoder

MODELS = Path(__file__).resolve().parents[1] / "models"



def segmenter_on_encoder_of(classifier: LoadedModel, segmenter: LoadedModel) -> LoadedModel:
    """The shipped segmenter's settings on a U-Net whose encoder is the classifier's (decoder untrained)."""
    size = classifier.config["input_size"]
    model = build_segmenter(size, classifier.encoder)
    copy_encoder(classifier.model, model)
    config = {**segmenter.config, "input_size": size, "framing": classifier.config.get("framing")}
    return LoadedModel(model, config, "the classifier's encoder with an untrained decoder", "")


@pytest.fixture(scope="module")
def shared(analyzer):
    return segmenter_on_encoder_of(analyzer.classifier, analyzer.segmenter)


def test_one_encoder_pass_gives_both_models_outputs(analyzer, shared, examples):
    assert shared_encoder.shares_encoder(analyzer.classifier, shared)
    one_pass = Analyzer(analyzer.classifier, shared, warm_up=False)
    assert one_pass._one_encoder_pass is not None
    images = np.stack([one_pass.prepare(decode(path)).class_input for path, _ in examples[:4]])
    logits, features, mask_logits = one_pass._one_encoder_pass(images)
    np.testing.assert_allclose(logits.numpy(), analyzer.classifier_cam.logits(images), atol=1e-4)
    for one, apart in zip(one_pass._screen(features), analyzer._explain_and_screen(images)[2:], strict=True):
        np.testing.assert_allclose(one, apart, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mask_logits.numpy(), one_pass.segmenter_cam.logits(images), atol=1e-4)


def test_different_encoders_are_run_apart(analyzer, shared):
    resized = dataclasses.replace(shared, config={**shared.config, "input_size": 256})
    assert not shared_encoder.shares_encoder(analyzer.classifier, resized)
    layer = shared.model.get_layer("block5_dwconv")
    original = layer.get_weights()
    try:
        layer.set_weights([w + 1e-3 for w in original])
        assert not shared_encoder.shares_encoder(analyzer.classifier, shared)
        assert Analyzer(analyzer.classifier, shared, warm_up=False)._one_encoder_pass is None
    finally:
        layer.set_weights(original)


def test_bundled_fast_segmenter_shares_the_classifiers_pass_and_finds_lesions(analyzer, busi_examples, true_mask):
    fast = Analyzer(analyzer.classifier, load_model(str(MODELS / "segmenter_fast")), warm_up=False)
    assert fast._one_encoder_pass is not None
    paths = [path for path, _ in busi_examples]
    for batched, path in zip(fast.analyze_batch(paths), paths):
        single = fast.analyze(path)  # both models in full, as the app runs them
        assert batched.predicted_class == single.predicted_class
        np.testing.assert_allclose(batched.probabilities, single.probabilities, atol=1e-4)
        assert np.array_equal(batched.mask(), single.mask())
    dices = [dice_iou(fast.analyze(p).mask(), true_mask(p))[0] for p, truth in busi_examples if truth != "normal"]
    assert np.mean(dices) > 0.6, dices
