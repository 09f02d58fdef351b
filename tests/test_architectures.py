"""The model definitions in `training.architectures` are the ones shipped: the bundled weights load
into a freshly built model and give the bundled model's outputs."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from skimage.data import camera

from training.architectures import build_classifier, build_segmenter

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.mark.parametrize("name, build", [("classifier", build_classifier), ("segmenter", build_segmenter)])
def test_shipped_model_is_the_one_defined_here(name, build):
    config = json.loads((MODELS / name / "config.json").read_text())
    shipped = keras.saving.load_model(MODELS / name / "model.keras", compile=False)
    built = build(config["input_size"], config["training"].get("encoder", "lite0"))  # models before Lite1: lite0
    assert [layer.name for layer in built.layers] == [layer.name for layer in shipped.layers]
    built.set_weights(shipped.get_weights())
    size = config["input_size"]
    scan = np.array(keras.ops.image.resize(camera()[None, ..., None].astype("float32"), (size, size)))
    scan = np.repeat(scan, 3, axis=-1)
    np.testing.assert_allclose(built.predict(scan, verbose=0), shipped.predict(scan, verbose=0), atol=1e-5)
    assert built.get_layer(config["gradcam_layer"]) is not None
