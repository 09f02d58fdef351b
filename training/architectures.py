"""The two shipped models, built from parts: an EfficientNet-Lite encoder (Lite0 or Lite1,
`training.efficientnet_lite`), a classification head, and a U-Net decoder.

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
