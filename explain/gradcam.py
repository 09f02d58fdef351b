"""Grad-CAM (Selvaraju et al. 2017) for the classifier and Seg-Grad-CAM (Vinogradova et al. 2020)
for the segmenter: one base class, two small variants that only say what the target score is.

Every call runs the model once: the same forward pass yields the model's output (logits) and, through
one gradient tape, the maps for every target. The gradient model is built from the flat model's
own layers (input -> [feature layer, logits layer]), so it is connected to the inputs.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf


def cam_from_gradients(features: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """(B, h, w, k) feature maps and their gradients -> (B, h, w) ReLU'd, max-normalised maps.
    Channel weights are the spatially averaged gradients."""
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(cam, peak)


class GradCAM:
    """Maps of `layer` for the target scores that `targets` derives from the `logits_layer` output."""

    def __init__(self, model: keras.Model, layer: str, logits_layer: str):
        self.gradient_model = keras.Model(
            model.inputs, [model.get_layer(layer).output, model.get_layer(logits_layer).output]
        )
        self._run = tf.function(self._forward, reduce_retracing=True)
        self._logits = tf.function(lambda images: self.gradient_model(images, training=False)[1], reduce_retracing=True)

    def targets(self, logits: tf.Tensor, *target_inputs: tf.Tensor) -> list[tf.Tensor]:
        """One (B,) score per map; each image's score depends only on that image (and on its own
        row of any `target_inputs`, e.g. the region a segmentation map explains)."""
        raise NotImplementedError

    def _forward(self, images, *target_inputs):
        with tf.GradientTape(persistent=True) as tape:
            features, logits = self.gradient_model(images, training=False)
            scores = self.targets(logits, *target_inputs)
        cams = [cam_from_gradients(features, tape.gradient(score, features)) for score in scores]
        del tape
        return logits, tf.stack(cams, axis=1)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """The forward pass alone, without gradients: for callers that need no map."""
        return self._logits(tf.convert_to_tensor(images, tf.float32)).numpy()

    def __call__(self, images: np.ndarray, *target_inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, S, S, 3) float images -> (logits, maps (B, n_targets, h, w) in 0..1 at feature size)."""
        logits, cams = self._run(tf.convert_to_tensor(images, tf.float32),
                                 *(tf.convert_to_tensor(t, tf.float32) for t in target_inputs))
        return logits.numpy(), cams.numpy()


class ClassifierGradCAM(GradCAM):
    """Targets: every class's pre-softmax logit, so any class can be shown without another pass."""

    def targets(self, logits):
        return [logits[:, c] for c in range(logits.shape[-1])]


class SegGradCAM(GradCAM):
    """Target: the sum of pre-sigmoid logits over a given region — the lesion mask the user sees
    (after thresholding and removing small specks), mapped onto the model's output grid. So the map
    explains the drawn lesion, whatever threshold drew it. Call as `explainer(images, regions)` with
    regions (B, S, S, 1) of 0/1; an empty region has target 0 and an all-zero map."""

    def targets(self, logits, regions):
        return [tf.reduce_sum(logits * regions, axis=(1, 2, 3))]
