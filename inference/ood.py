"""Is the input a breast ultrasound scan at all? A classifier answers "benign 76 %" for a photo of a
man as readily as for a scan; this check is what stops that.

The score is how far the classifier's mid-level features (the global average of one encoder block,
`layer`) fall outside the subspace its training scans span: the norm of what a PCA of the training
features cannot reconstruct. Mid-level features still describe texture and structure; the last
layer's are tuned to the three classes and map a photo close to a scan. Fitted on the training
sides by `python -m training.fit_ood`, threshold chosen on the validation sides, stored with the
model (`ood.npz`). Above the threshold the app withholds the diagnosis-like output and says why.

A blank image (nothing brighter than a scan's black background) is refused before any feature is
read: scans are mostly black, so a black picture can sit close to their features while holding
nothing to diagnose.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from inference import orientation
from inference.preprocess import FIELD_MIN_LEVEL
from inference.stored_check import StoredCheck

FILE_NAME = "ood.npz"
WARNING = ("This image does not look like the breast ultrasound scans the models were trained on "
           "(feature distance {distance:.2f}, limit {threshold:.2f}). No classification or lesion is shown: "
           "the models' answers would be meaningless here. If it is a breast ultrasound scan, upload the scanner's own "
           "export, upright and cropped to the scan: not a photo of a screen, nor a screenshot with a viewer's panels.")

BLANK_WARNING = ("This image is blank: no pixel is brighter than a scan's black background, so there is no scan to "
                 "analyse. No classification or lesion is shown.")


def is_blank(gray: np.ndarray) -> bool:
    """True when no pixel of the (H, W) uint8 image is brighter than a scan's background."""
    return int(gray.max()) <= FIELD_MIN_LEVEL


@dataclass(frozen=True)
class FeatureDistance(StoredCheck):
    DESCRIPTION = "out-of-distribution check"

    layer: str              # the classifier layer whose global average is the feature vector
    mean: np.ndarray        # (k,) mean feature of the training scans
    components: np.ndarray  # (d, k) orthonormal PCA directions of the training features
    threshold: float

    def distance(self, features: np.ndarray) -> np.ndarray:
        """(n, k) features -> (n,) norms of their part outside the training subspace."""
        centred = np.asarray(features, np.float64) - self.mean
        return np.linalg.norm(centred - (centred @ self.components.T) @ self.components, axis=-1)


def pooled_layers(model: keras.Model, layers) -> Callable:
    """A compiled function: model inputs (B, S, S, 3) -> a tuple of (B, k) global averages, one per
    layer of `layers` (several, to compare candidate layers in one forward pass)."""
    features = keras.Model(model.input, [model.get_layer(layer).output for layer in layers])

    def run(images):
        outputs = features(images, training=False)  # Keras unwraps a one-output list
        return tuple(tf.reduce_mean(f, axis=(1, 2)) for f in (outputs if isinstance(outputs, (list, tuple)) else [outputs]))

    return tf.function(run, reduce_retracing=True)


@dataclass(frozen=True)
class ScreeningLayers:
    """The classifier layers the screening checks read from its own forward pass: this check's global
    average and the orientation check's top- and bottom-half averages (`inference.orientation`). Each
    check chose its layer on its own evidence, so the two may differ."""

    distance_layer: str
    orientation_layer: str

    @property
    def names(self) -> list[str]:
        """The layers to read, each once."""
        return list(dict.fromkeys((self.distance_layer, self.orientation_layer)))

    def features(self, outputs):
        """The (B, H, W, k) maps of `names`, in order (arrays or tensors) -> ((B, k) global averages for
        this check, (B, 2, k') top- and bottom-half averages for the orientation check)."""
        maps = dict(zip(self.names, outputs))
        return (ops.mean(maps[self.distance_layer], axis=(1, 2)),
                orientation.top_and_bottom_means(maps[self.orientation_layer]))


def screening_features(model: keras.Model, output_layer: str, screening: ScreeningLayers) -> Callable:
    """A compiled function: model inputs (B, S, S, 3) -> (`output_layer`'s output, then `screening`'s
    two arrays) from one forward pass: the classifier's logits and the screening checks' features
    without running the layers they share twice."""
    both = keras.Model(model.input, [model.get_layer(name).output for name in (output_layer, *screening.names)])

    def run(images):
        output, *maps = both(images, training=False)
        return output, *screening.features(maps)

    return tf.function(run, reduce_retracing=True)
