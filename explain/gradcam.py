"""Grad-CAM (Selvaraju et al. 2017) for the classifier and Seg-Grad-CAM (Vinogradova et al. 2020)
for the segmenter.

Classifier: one call runs the model once; the same forward pass yields the logits and, through one
gradient tape, every class's map (its target is the class's pre-softmax logit). The gradient model
is built from the flat model's own layers (input -> [feature layer, logits layer]), so it is
connected to the inputs.

Segmenter: the target is the region the user sees (the post-processed lesion mask), known only after
the forward pass. So the model is split at the map's layer: `forward` runs it once and also keeps
what the part after that layer (the head) reads — the layer's maps and the skip connections that join
later (a U-Net's) — and the map then takes a gradient pass through the head alone. The maps'
gradient does not depend on the layers before them, so this is the whole model's gradient, at about
half the cost of a second full pass.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from explain.graph import graph_boundary, inputs_of


def cam_from_gradients(features: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """(B, h, w, k) feature maps and their gradients -> (B, h, w) ReLU'd, max-normalised maps.
    Channel weights are the spatially averaged gradients."""
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(cam, peak)


class ClassifierGradCAM:
    """Maps of `layer` for every class's pre-softmax logit (the `logits_layer` output), so any class
    can be shown without another pass. The outputs of the layers named in `also` come from the same
    pass (`explain_and_read`), for checks that read the classifier's features without running it twice."""

    def __init__(self, model: keras.Model, layer: str, logits_layer: str, also: tuple[str, ...] = ()):
        self.gradient_model = keras.Model(
            model.inputs, [model.get_layer(name).output for name in (layer, logits_layer, *also)]
        )
        self._run = tf.function(self._forward, reduce_retracing=True)
        self._logits = tf.function(lambda images: self.gradient_model(images, training=False)[1], reduce_retracing=True)

    def _forward(self, images):
        with tf.GradientTape(persistent=True) as tape:
            features, logits, *read = self.gradient_model(images, training=False)
            scores = [logits[:, c] for c in range(logits.shape[-1])]
        cams = [cam_from_gradients(features, tape.gradient(score, features)) for score in scores]
        del tape
        return logits, tf.stack(cams, axis=1), read

    def logits(self, images: np.ndarray) -> np.ndarray:
        """The forward pass alone, without gradients: for callers that need no map."""
        return self._logits(tf.convert_to_tensor(images, tf.float32)).numpy()

    def explain_and_read(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """(B, S, S, 3) float images -> (logits, maps (B, n_classes, h, w) in 0..1 at feature size, the
        outputs of the `also` layers)."""
        logits, cams, read = self._run(tf.convert_to_tensor(images, tf.float32))
        return logits.numpy(), cams.numpy(), [output.numpy() for output in read]

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, S, S, 3) float images -> (logits, maps (B, n_classes, h, w) in 0..1 at feature size)."""
        return self.explain_and_read(images)[:2]


def head_inputs(model: keras.Model, layers: list[str], output_layer: str) -> list:
    """The tensors the part of `model` between `layers` and `output_layer` reads: the `layers`'
    outputs first, in their order, then each tensor from before them that joins that part (skip
    connections), in the order the graph meets them."""
    starts = [model.get_layer(layer).output for layer in layers]
    start_ids = {id(start) for start in starts}
    depends: dict[int, bool] = {}

    def depends_on_start(tensor) -> bool:
        if id(tensor) not in depends:
            depends[id(tensor)] = id(tensor) in start_ids or any(map(depends_on_start, inputs_of(tensor)))
        return depends[id(tensor)]

    boundary = graph_boundary(model.get_layer(output_layer).output,
                              lambda t: id(t) in start_ids or not depends_on_start(t))
    return starts + [t for t in boundary if id(t) not in start_ids]


class SegGradCAM:
    """Maps of `layer` whose target is the sum of the pre-sigmoid `logits_layer` output over a given
    region (the displayed lesion mask, on the model's output grid). An empty region has target 0 and
    an all-zero map.

    `layer` may also be a list of layers of one spatial size, as an ensemble of segmenters has (one
    per member, `training.architectures.build_segmenter_ensemble`): their channels are taken as one
    layer's, so the map is the sum of each member's weighted maps, rectified and normalised once,
    and a member that contributes more to the target weighs more in it."""

    def __init__(self, model: keras.Model, layer: str | list[str], logits_layer: str):
        self.layers = [layer] if isinstance(layer, str) else list(layer)
        boundary = head_inputs(model, self.layers, logits_layer)
        logits = model.get_layer(logits_layer).output
        self.trunk = keras.Model(model.inputs, [logits, *boundary])
        self.head = keras.Model(boundary, logits)
        self._forward = tf.function(lambda images: self.trunk(images, training=False), reduce_retracing=True)
        self._logits = tf.function(lambda images: self.trunk(images, training=False)[0], reduce_retracing=True)
        self._run = tf.function(self._maps, reduce_retracing=True)

    def _maps(self, inputs, regions):
        maps = inputs[:len(self.layers)]
        with tf.GradientTape() as tape:
            tape.watch(maps)
            score = tf.reduce_sum(self.head(inputs, training=False) * regions, axis=(1, 2, 3))
        gradients = tape.gradient(score, maps)
        return cam_from_gradients(tf.concat(maps, axis=-1), tf.concat(gradients, axis=-1))

    def forward(self, images: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """(B, S, S, C) float images -> (mask logits, the head's inputs for `__call__`), no gradients."""
        logits, *inputs = self._forward(tf.convert_to_tensor(images, tf.float32))
        return logits.numpy(), [t.numpy() for t in inputs]

    def logits(self, images: np.ndarray) -> np.ndarray:
        """The mask logits alone, for callers that will draw no map (nothing else is copied out)."""
        return self._logits(tf.convert_to_tensor(images, tf.float32)).numpy()

    def __call__(self, inputs: list[np.ndarray], regions: np.ndarray) -> np.ndarray:
        """The head's inputs from `forward` and (B, S, S, 1) regions of 0/1 -> maps (B, h, w) in 0..1."""
        return self._run([tf.convert_to_tensor(t, tf.float32) for t in inputs],
                         tf.convert_to_tensor(regions, tf.float32)).numpy()
