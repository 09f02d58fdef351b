"""The two shipped models, built from parts: an EfficientNet-Lite encoder (Lite0, Lite1 or Lite2,
`training.efficientnet_lite`), a classification head, and a U-Net decoder; the classifier's training view with
its class-activation maps; and an ensemble of segmenters as one model.

Both are flat Keras functional models (every encoder layer reachable by name), so Grad-CAM can read
any layer and the U-Net takes its skips from the encoder's stages. Inputs are RGB 0..255; the
encoder scales them itself, so serving feeds raw pixels. The trainers (`training.train_classifier`,
`training.train_segmenter`) build from here; serving loads the saved `.keras` files and never
imports this module.
"""

from __future__ import annotations

import keras
from keras import layers

from training.busi import CLASSES
from training.efficientnet_lite import encoder_features

# Classifier Grad-CAM layer: the encoder's 1280-channel head activation, one cell per 32 input pixels.
GRADCAM_LAYER = "top_activation"
FEATURE_STRIDE = 32

# Seg-Grad-CAM layer: the decoder's bottleneck stage (stride 16, after ReLU). Measured on the
# validation lesion scans: the encoder's stride-32 maps (block15_out, block15_activation) come out
# all zero after the ReLU on 89-94 of 95 scans, this layer never does and its peak lands on the
# lesion in 97 % of them (pointing game).
SEG_GRADCAM_LAYER = "decoder16_b_relu"
# Decoder width per stride. It stops at stride 2 and upsamples the logits: full-resolution
# convolutions would double the cost on 2 CPU cores for little Dice.
DECODER_CHANNELS = {16: 128, 8: 64, 4: 32, 2: 16}


def build_classifier(size: int, encoder: str = "lite0") -> keras.Model:
    """Image (RGB 0..255) -> `logits` (pre-softmax, for Grad-CAM) -> `probs` over CLASSES."""
    image = keras.Input((size, size, 3), name="image")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(encoder_features(image, variant=encoder)["top"])
    x = layers.Dropout(0.3, name="head_dropout")(x)
    logits = layers.Dense(len(CLASSES), name="logits")(x)
    probs = layers.Softmax(name="probs")(logits)
    return keras.Model(image, probs, name="busi_classifier")


def with_class_maps(model: keras.Model) -> keras.Model:
    """Training view of the classifier that also outputs `cells`: the logits layer applied at every
    cell of the Grad-CAM layer. With a global-average-pool -> dense head that is the class-activation
    map, which Grad-CAM reproduces up to a positive scale and a constant (the bias)."""
    cells = model.get_layer("logits")(model.get_layer(GRADCAM_LAYER).output)
    return keras.Model(model.input, {"probs": model.output, "cells": cells})


def _conv_bn_relu(x, channels, name):
    x = layers.Conv2D(channels, 3, padding="same", use_bias=False, name=name + "_conv")(x)
    return layers.ReLU(name=name + "_relu")(layers.BatchNormalization(name=name + "_bn")(x))


def build_segmenter(size: int, encoder: str = "lite0") -> keras.Model:
    """U-Net: image (RGB 0..255) -> `mask_logits` (pre-sigmoid, for Seg-Grad-CAM) -> `mask_probs`.
    Skips from the encoder's stride 2/4/8/16 stages; its stride-32 block is the bottleneck."""
    image = keras.Input((size, size, 3), name="image")
    features = encoder_features(image, head=False, variant=encoder)
    x = features[32]
    for stride, channels in DECODER_CHANNELS.items():
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"decoder{stride}_up")(x)
        x = layers.Concatenate(name=f"decoder{stride}_concat")([x, features[stride]])
        x = _conv_bn_relu(x, channels, f"decoder{stride}_a")
        x = _conv_bn_relu(x, channels, f"decoder{stride}_b")
    x = layers.Conv2D(1, 1, name="decoder_logits")(x)
    logits = layers.UpSampling2D(2, interpolation="bilinear", name="mask_logits")(x)
    probs = layers.Activation("sigmoid", name="mask_probs")(logits)
    return keras.Model(image, probs, name="busi_segmenter")


def member_layer(index: int, name: str) -> str:
    """The name an ensemble gives its member `index`'s layer `name`."""
    return f"member{index}_{name}"


def build_segmenter_ensemble(members: list[keras.Model]) -> keras.Model:
    """Segmenters (same input) as one flat model whose `mask_probs` is the mean of the members'
    lesion probabilities: runs trained alike agree on lesions more than on the chance blobs one run
    draws on a normal scan (`training.ensemble` scores it on validation).

    Each member's layers are copies of its own, weights included, renamed by `member_layer`, so
    Seg-Grad-CAM reaches every member's layers by name (a nested member would hide them).
    `mask_logits` is the logit of the mean probability, logsumexp(log sigmoid(l)) - logsumexp(log
    sigmoid(-l)) over the members' logits l: finite where members saturate, so its gradient is too.
    Built from Keras layers and ops only, so it loads in safe mode without this module."""
    image = keras.Input(members[0].inputs[0].shape[1:], name="image")
    logits = []
    for index, member in enumerate(members):
        def renamed(layer, index=index):
            return layer.__class__.from_config({**layer.get_config(), "name": member_layer(index, layer.name)})

        copy = keras.models.clone_model(member, input_tensors=image, clone_function=renamed)
        copy.set_weights(member.get_weights())
        logits.append(copy.get_layer(member_layer(index, "mask_logits")).output)
    stacked = layers.Concatenate(name="member_logits")(logits)
    log_mean = keras.ops.logsumexp(keras.ops.log_sigmoid(stacked), axis=-1, keepdims=True)
    log_mean_complement = keras.ops.logsumexp(keras.ops.log_sigmoid(-stacked), axis=-1, keepdims=True)
    mean_logits = layers.Identity(name="mask_logits")(log_mean - log_mean_complement)
    probs = layers.Activation("sigmoid", name="mask_probs")(mean_logits)
    return keras.Model(image, probs, name="busi_segmenter_ensemble")
