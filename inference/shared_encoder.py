"""One encoder pass for both models, when the segmenter was trained on the classifier's encoder.

`python -m training.train_segmenter --encoder-from models/classifier` trains only a U-Net decoder on
the classifier's frozen encoder. Both saved models still stand alone (each holds the encoder), so
either can be swapped or loaded from the Hub on its own; when the two loaded models turn out to hold
the same encoder — same input size and framing, equal weights — the batch path runs it once and
feeds both the classifier's head and the segmenter's decoder from that pass.
"""

from __future__ import annotations

import keras
import numpy as np

from explain.graph import graph_boundary, producer

# Layer names of the EfficientNet-Lite encoder both models are built on (training.efficientnet_lite).
ENCODER_PREFIXES = ("rescale", "stem_", "block")


def is_encoder_layer(layer) -> bool:
    return layer.name.startswith(ENCODER_PREFIXES)


def shares_encoder(classifier, segmenter) -> bool:
    """Whether two LoadedModels run the same encoder on the same input: equal input size and framing,
    and every encoder layer of the segmenter has a same-named classifier layer with equal weights."""
    if (classifier.config["input_size"] != segmenter.config["input_size"]
            or classifier.config.get("framing") != segmenter.config.get("framing")):
        return False
    names = {layer.name for layer in classifier.model.layers}
    encoder = [layer for layer in segmenter.model.layers if is_encoder_layer(layer)]
    if not encoder or any(layer.name not in names for layer in encoder):
        return False
    return all(np.array_equal(a, b) for layer in encoder
               for a, b in zip(layer.get_weights(), classifier.model.get_layer(layer.name).get_weights(), strict=True))


def decoder(model: keras.Model, output_layer: str) -> tuple[list[str], keras.Model]:
    """The part of `model` after its encoder, up to `output_layer`: (names of the encoder layers
    whose outputs it reads, in the order of its inputs; that part as a model of those outputs)."""
    boundary = graph_boundary(model.get_layer(output_layer).output, lambda t: is_encoder_layer(producer(t)))
    return [producer(t).name for t in boundary], keras.Model(boundary, model.get_layer(output_layer).output)


def with_decoder_outputs(classifier: keras.Model, outputs: list, segmenter: keras.Model, logits_layer: str) -> keras.Model:
    """A model of the classifier's input -> `outputs` (tensors of the classifier) and the segmenter's
    `logits_layer` output, computed by the segmenter's decoder on the classifier's encoder."""
    names, head = decoder(segmenter, logits_layer)
    mask_logits = head([classifier.get_layer(name).output for name in names])
    return keras.Model(classifier.inputs, [*outputs, mask_logits])
