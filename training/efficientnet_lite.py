"""EfficientNet-Lite0, -Lite1 and -Lite2 in plain Keras 3 layers, with ImageNet weights from the PyTorch checkpoints.

Lite differs from EfficientNet-B0: no squeeze-and-excite, ReLU6 everywhere, stem (32) and head
(1280) widths fixed. Convolutions use TF-style "same" padding (Keras' own) and BatchNorm eps 1e-3.
Lite1 is Lite0 with more blocks in the five middle stages (depth x1.1, rounded up) and the same
widths; Lite2 has Lite1's blocks with its five deeper stages widened (x1.1, rounded to multiples of 8,
as its checkpoint holds them). One port serves all three.

The encoder is built *flat* into the caller's graph (`encoder_features`), so every layer is reachable
by name from the final model — Grad-CAM and U-Net skips need that. Inputs are RGB 0..255; the model
scales them itself with `(x - 127) / 128`, so serving feeds raw pixels.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from inference.shared_encoder import is_encoder_layer
from training.torch_weights import efficientnet_lite_checkpoint, load_state_dict

# (kernel, first stride, expand ratio) per stage, as in EfficientNet-B0 ...
STAGES = ((3, 1, 1), (3, 2, 6), (5, 2, 6), (3, 2, 6), (5, 1, 6), (5, 2, 6), (3, 1, 6))
# ... and each variant's blocks and output channels per stage (the checkpoints' `_blocks.N` layout).
STAGE_REPEATS = {"lite0": (1, 2, 2, 3, 3, 4, 1), "lite1": (1, 3, 3, 4, 4, 5, 1), "lite2": (1, 3, 3, 4, 4, 5, 1)}
STAGE_CHANNELS = {"lite0": (16, 24, 40, 80, 112, 192, 320), "lite1": (16, 24, 40, 80, 112, 192, 320),
                  "lite2": (16, 24, 48, 88, 120, 208, 352)}
ENCODERS = tuple(STAGE_REPEATS)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPSILON = 1e-3


def _bn(name):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)


def _relu6(name):
    return layers.ReLU(max_value=6.0, name=name)


def _block(x, index, kernel, stride, expand, out_channels):
    in_channels = x.shape[-1]
    p = f"block{index}_"
    h = x
    if expand != 1:
        h = layers.Conv2D(in_channels * expand, 1, use_bias=False, name=p + "expand_conv")(h)
        h = _relu6(p + "expand_activation")(_bn(p + "expand_bn")(h))
    h = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=p + "dwconv")(h)
    h = _relu6(p + "activation")(_bn(p + "bn")(h))
    h = layers.Conv2D(out_channels, 1, use_bias=False, name=p + "project_conv")(h)
    if stride == 1 and in_channels == out_channels:
        h = _bn(p + "project_bn")(h)
        return layers.Add(name=p + "out")([h, x])
    return _bn(p + "out")(h)


def _stages(variant: str):
    """(repeats, kernel, first stride, expand ratio, output channels) per stage of `variant`."""
    return [(repeats, *stage, channels)
            for repeats, stage, channels in zip(STAGE_REPEATS[variant], STAGES, STAGE_CHANNELS[variant], strict=True)]


def encoder_features(image, head: bool = True, variant: str = "lite0") -> dict:
    """Build the `variant` encoder on an RGB 0..255 tensor, flat in the caller's graph.

    Returns {stride: tensor} for strides 2, 4, 8, 16 and 32 (last block at that stride) and, with
    `head`, "top": the 1280-channel head activation `top_activation` (the classifier's Grad-CAM layer)."""
    x = layers.Rescaling(1 / 128.0, offset=-127 / 128.0, name="rescale")(image)
    x = layers.Conv2D(STEM_CHANNELS, 3, 2, padding="same", use_bias=False, name="stem_conv")(x)
    x = _relu6("stem_activation")(_bn("stem_bn")(x))
    features, index = {}, 0
    for repeats, kernel, stride, expand, channels in _stages(variant):
        for r in range(repeats):
            x = _block(x, index, kernel, stride if r == 0 else 1, expand, channels)
            index += 1
        features[image.shape[1] // x.shape[1]] = x
    if head:
        x = layers.Conv2D(HEAD_CHANNELS, 1, use_bias=False, name="top_conv")(x)
        features["top"] = _relu6("top_activation")(_bn("top_bn")(x))
    return features


def copy_encoder(source: keras.Model, target: keras.Model) -> int:
    """Copy every encoder layer's weights from `source` to the same-named layer of `target` (both
    built on `encoder_features`); returns how many layers carried weights."""
    copied = 0
    for layer in target.layers:
        if is_encoder_layer(layer) and layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())
            copied += 1
    return copied


def imagenet_classifier(size: int = 224, variant: str = "lite0") -> keras.Model:
    """`variant` with its 1000-class ImageNet head and ImageNet weights: the port is checked on it, and the
    split's leakage test reads its features to find copies of one scan."""
    image = keras.Input((size, size, 3), name="image")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(encoder_features(image, variant=variant)["top"])
    x = layers.Dense(1000, activation="softmax", name="predictions")(x)
    model = keras.Model(image, x, name=f"efficientnet_{variant}_imagenet")
    load_imagenet_weights(model, variant)
    return model


def _torch_to_keras(state: dict, variant: str) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> weight list, for every tensor of the lukemelas-style state dict."""
    def conv(key):  # (out, in, kh, kw) -> (kh, kw, in, out)
        return [state[key + ".weight"].transpose(2, 3, 1, 0)]

    def depthwise(key):  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)
        return [state[key + ".weight"].transpose(2, 3, 0, 1)]

    def bn(key):
        return [state[key + s] for s in (".weight", ".bias", ".running_mean", ".running_var")]

    out = {"stem_conv": conv("_conv_stem"), "stem_bn": bn("_bn0"),
           "top_conv": conv("_conv_head"), "top_bn": bn("_bn1"),
           "predictions": [state["_fc.weight"].T, state["_fc.bias"]]}
    index = 0
    for repeats, _kernel, _stride, expand, _channels in _stages(variant):
        for r in range(repeats):
            t, k = f"_blocks.{index}.", f"block{index}_"
            if expand != 1:
                out[k + "expand_conv"] = conv(t + "_expand_conv")
                out[k + "expand_bn"] = bn(t + "_bn0")
            out[k + "dwconv"] = depthwise(t + "_depthwise_conv")
            out[k + "bn"] = bn(t + "_bn1")
            out[k + "project_conv"] = conv(t + "_project_conv")
            out[k + ("project_bn" if r > 0 else "out")] = bn(t + "_bn2")  # r > 0: residual block
            index += 1
    return out


def load_imagenet_weights(model: keras.Model, variant: str = "lite0") -> int:
    """Copy `variant`'s ImageNet weights into every layer of `model` that has one of its names;
    returns how many layers were set. The head (`top_*`, ImageNet `predictions`) is loaded where the
    model has one; the stem and all blocks must be there."""
    state = load_state_dict(efficientnet_lite_checkpoint(variant))
    names = {layer.name for layer in model.layers}
    loaded = 0
    converted = _torch_to_keras(state, variant)
    for name, weights in converted.items():
        if name in names:
            model.get_layer(name).set_weights(weights)
            loaded += 1
    missing = [n for n in converted if n.startswith(("stem_", "block")) and n not in names]
    if missing:
        raise ValueError(f"{model.name} lacks {variant} layers {missing[:3]}…: is the encoder built flat, as {variant}?")
    return loaded
