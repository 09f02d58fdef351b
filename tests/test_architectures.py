"""The model definitions in `training.architectures` are the ones shipped: the bundled weights load
into a freshly built model and give the bundled model's outputs. An ensemble of segmenters is the
mean of its members' probabilities."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from skimage.data import camera

from training.architectures import (SEG_GRADCAM_LAYER, build_classifier, build_segmenter, build_segmenter_ensemble,
                                    member_layer)

MODELS = Path(__file__).resolve().parents[1] / "models"


def defined_model(config: dict) -> keras.Model:
    """A fresh model of the architecture a shipped config describes (models before Lite1: lite0)."""
    size, training = config["input_size"], config["training"]
    if config["task"] == "classification":
        return build_classifier(size, training.get("encoder", "lite0"))
    if "members" in training:
        return build_segmenter_ensemble([build_segmenter(size, member["encoder"]) for member in training["members"]])
    return build_segmenter(size, training.get("encoder", "lite0"))


@pytest.mark.parametrize("name", ["classifier", "segmenter"])
def test_shipped_model_is_the_one_defined_here(name):
    config = json.loads((MODELS / name / "config.json").read_text())
    shipped = keras.saving.load_model(MODELS / name / "model.keras", compile=False)
    built = defined_model(config)
    assert [layer.name for layer in built.layers] == [layer.name for layer in shipped.layers]
    built.set_weights(shipped.get_weights())
    size = config["input_size"]
    scan = np.array(keras.ops.image.resize(camera()[None, ..., None].astype("float32"), (size, size)))
    scan = np.repeat(scan, 3, axis=-1)
    np.testing.assert_allclose(built.predict(scan, verbose=0), shipped.predict(scan, verbose=0), atol=1e-5)
    for layer in [config["gradcam_layer"]] if isinstance(config["gradcam_layer"], str) else config["gradcam_layer"]:
        assert layer in {built_layer.name for built_layer in built.layers}


def test_an_ensemble_is_its_members_mean_probability_with_every_layer_reachable():
    keras.utils.set_random_seed(3)
    members = [build_segmenter(64) for _ in range(2)]  # two random initialisations
    for member in members:  # spread the logits, so that the mean of probabilities differs from that of logits
        member.get_layer("decoder_logits").bias.assign([float(np.random.default_rng(len(member.name)).normal(0, 3))])
    ensemble = build_segmenter_ensemble(members)
    scans = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    expected = np.mean([member.predict(scans, verbose=0) for member in members], axis=0)
    np.testing.assert_allclose(ensemble.predict(scans, verbose=0), expected, atol=1e-5)
    assert member_layer(1, SEG_GRADCAM_LAYER) in {layer.name for layer in ensemble.layers}
    assert not any(isinstance(layer, keras.Model) for layer in ensemble.layers)  # flat: nothing hidden from Grad-CAM


def test_an_ensemble_of_saturated_members_has_finite_logits_and_gradients():
    """Members sure of a lesion (logit 40: probability 1.0 in float32) give the ensemble logit ~40,
    not infinity, and finite gradients (Seg-Grad-CAM goes through them); members sure of opposite
    answers give probability 0.5."""
    ensemble = build_segmenter_ensemble([build_segmenter(64) for _ in range(2)])
    combine = keras.Model([ensemble.get_layer(member_layer(i, "mask_logits")).output for i in range(2)],
                          ensemble.get_layer("mask_logits").output)
    for first, second, expected in ((40.0, 40.0, 40.0), (-40.0, -40.0, -40.0), (40.0, -40.0, 0.0)):
        member_logits = [tf.fill((1, 64, 64, 1), first), tf.fill((1, 64, 64, 1), second)]
        with tf.GradientTape() as tape:
            tape.watch(member_logits)
            logits = combine(member_logits)
            score = tf.reduce_sum(logits)
        gradients = tape.gradient(score, member_logits)
        assert np.allclose(logits.numpy(), expected, atol=1e-3)
        assert all(np.isfinite(g.numpy()).all() for g in gradients)
