"""Grad-CAM is right: it finds a known cause on synthetic data, it depends on the weights
(Adebayo et al. 2018), and it depends on the class asked about."""

from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers
from scipy.stats import spearmanr

from explain.gradcam import ClassifierGradCAM, SegGradCAM
from explain.overlay import heatmap_overlay, upsample
from inference.models import BUNDLED, load_model
from inference.preprocess import Framing, to_model_input
from inference.decode import decode_scan
from training.train_segmenter import dice_bce_loss
from training.efficientnet_lite import STAGE_REPEATS

SIZE, RADIUS = 48, 5
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def synthetic(n, seed, with_blob):
    """Noisy images that all carry a bright horizontal line (an uninformative distractor, like a
    caliper); `with_blob` marks which of them also get a bright disk, the only real signal."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.2, 0.05, (n, SIZE, SIZE, 1)).astype(np.float32)
    centres = rng.integers(RADIUS + 2, SIZE - RADIUS - 2, (n, 2))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    masks = np.zeros((n, SIZE, SIZE), bool)
    for i in range(n):
        row, col = rng.integers(2, SIZE - 2), rng.integers(0, SIZE - 20)
        images[i, row, col : col + 20, 0] = 1.0
        if with_blob[i]:
            masks[i] = (yy - centres[i, 0]) ** 2 + (xx - centres[i, 1]) ** 2 <= RADIUS**2
            images[i, masks[i], 0] = 1.0
    return images, masks, centres


def peak_on_blob(cam, centre) -> bool:
    heat = upsample(cam, SIZE, SIZE)
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    return np.hypot(y - centre[0], x - centre[1]) <= RADIUS + 3


def test_classifier_gradcam_points_at_the_deciding_blob():
    keras.utils.set_random_seed(0)
    labels = np.arange(800) % 2
    images, _, _ = synthetic(800, 1, labels == 1)
    inputs = keras.Input((SIZE, SIZE, 1))
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="features")(x)
    logits = layers.Dense(2, name="logits")(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, layers.Softmax()(logits))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images, labels, epochs=6, batch_size=32, verbose=0)

    held_out, _, centres = synthetic(100, 2, np.ones(100, bool))
    logits, cams = ClassifierGradCAM(model, "features", "logits")(held_out)
    assert (logits.argmax(1) == 1).mean() > 0.9, "the tiny CNN learned the task"
    hits = [peak_on_blob(cam[1], c) for cam, c in zip(cams, centres)]
    assert np.mean(hits) >= 0.9


def test_seg_gradcam_points_at_the_segmented_region():
    keras.utils.set_random_seed(0)
    images, masks, _ = synthetic(600, 3, np.ones(600, bool))
    inputs = keras.Input((SIZE, SIZE, 1))
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="bottleneck")(x)
    x = layers.UpSampling2D(2)(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    logits = layers.Conv2D(1, 1, name="mask_logits")(x)
    model = keras.Model(inputs, layers.Activation("sigmoid")(logits))
    model.compile(keras.optimizers.Adam(3e-3), dice_bce_loss)
    model.fit(images, masks[..., None].astype(np.float32), epochs=8, batch_size=16, verbose=0)

    held_out, _, centres = synthetic(100, 4, np.ones(100, bool))
    explainer = SegGradCAM(model, "bottleneck", "mask_logits")
    logits, head_inputs = explainer.forward(held_out)
    regions = (logits >= 0).astype(np.float32)  # the predicted blob at probability 0.5
    assert (regions.sum(axis=(1, 2, 3)) > 0).mean() > 0.9
    cams = explainer(head_inputs, regions)
    hits = [peak_on_blob(cam, c) for cam, c in zip(cams, centres)]
    assert np.mean(hits) >= 0.9


def test_seg_gradcam_is_zero_for_an_empty_region():
    inputs = keras.Input((16, 16, 1))
    features = layers.Conv2D(4, 3, padding="same", name="features")(inputs)
    logits = layers.Conv2D(1, 1, name="logits")(features)
    explainer = SegGradCAM(keras.Model(inputs, logits), "features", "logits")
    _, head_inputs = explainer.forward(np.random.rand(2, 16, 16, 1))
    assert np.all(explainer(head_inputs, np.zeros((2, 16, 16, 1))) == 0)


def test_seg_gradcam_through_the_head_is_the_whole_models_gradient(analyzer, examples):
    """The shipped U-Net split at its Seg-Grad-CAM layer (each member's, in an ensemble): the head's
    inputs are those layers' maps and each member's three skip connections joining later, and the
    map equals Seg-Grad-CAM taken through the whole model in one tape, over the layers' channels."""
    import tensorflow as tf

    from explain.gradcam import cam_from_gradients
    from inference.decode import decode

    model, config, explainer = analyzer.segmenter.model, analyzer.segmenter.config, analyzer.segmenter_cam
    assert len(explainer.head.inputs) == 4 * len(explainer.layers)
    images = analyzer.prepare(decode(examples[2][0])).seg_input[None]
    logits, head_inputs = explainer.forward(images)
    regions = (logits >= 0).astype(np.float32)
    whole = keras.Model(model.inputs, [[model.get_layer(layer).output for layer in explainer.layers],
                                       model.get_layer(config["logits_layer"]).output])
    with tf.GradientTape() as tape:
        features, whole_logits = whole([images], training=False)
        score = tf.reduce_sum(whole_logits * regions)
    gradients = tape.gradient(score, features)
    expected = cam_from_gradients(tf.concat(features, axis=-1), tf.concat(gradients, axis=-1)).numpy()
    assert regions.sum() > 0 and np.abs(whole_logits.numpy() - logits).max() < 1e-4
    assert np.abs(explainer(head_inputs, regions) - expected).max() < 1e-4


def rank_correlation(a, b) -> float:
    """Spearman's rho of two maps; a constant map (e.g. all zero after ReLU) ranks nothing: 0."""
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


@pytest.fixture(scope="module")
def shipped_classifier():
    return load_model(str(BUNDLED["classifier"]))


@pytest.fixture(scope="module")
def malignant_input(shipped_classifier):
    gray, _ = decode_scan(EXAMPLES / "busi_malignant_49.png")
    return to_model_input(gray, Framing.for_model(gray, shipped_classifier.config))[None]


def test_randomising_the_top_layers_changes_the_map(shipped_classifier, malignant_input):
    """Model-randomisation sanity check (Adebayo et al. 2018): with the head and the encoder's last
    block re-drawn at random, the map must change. One random draw is a coin flip (the Lite0 model's
    rank correlation with its randomised self ran from -0.3 to 0.8 over three draws), so the mean
    over several draws is what is tested."""
    config = shipped_classifier.config
    original = ClassifierGradCAM(shipped_classifier.model, config["gradcam_layer"], config["logits_layer"])
    logits, cams = original(malignant_input)
    own_map = cams[0, int(logits.argmax())]
    last_block = sum(STAGE_REPEATS[shipped_classifier.encoder]) - 1  # Lite0: 15, Lite1: 20
    top_layers = ("logits", "top_conv", f"block{last_block}_project_conv", f"block{last_block}_expand_conv")

    correlations = []
    for draw in range(5):
        randomised = keras.models.clone_model(shipped_classifier.model)
        randomised.set_weights(shipped_classifier.model.get_weights())
        for offset, name in enumerate(top_layers):
            layer = randomised.get_layer(name)
            layer.kernel.assign(keras.initializers.GlorotUniform(seed=10 * draw + offset)(layer.kernel.shape))
        random_logits, random_cams = ClassifierGradCAM(randomised, config["gradcam_layer"], config["logits_layer"])(malignant_input)
        random_map = random_cams[0, int(random_logits.argmax())]
        if random_map.std() > 0:  # an all-zero map (every cell below the ReLU) ranks nothing
            correlations.append(rank_correlation(own_map, random_map))
    # Each model explains its own prediction: the maps must have structure, or the check is vacuous.
    assert own_map.std() > 0 and len(correlations) >= 3
    assert np.mean(correlations) < 0.5


def test_maps_of_two_classes_differ(shipped_classifier, malignant_input):
    """Benign and malignant maps are both trained to sit on the lesion, so they share a place but not
    their values; the normal class's evidence lies elsewhere (its ranking is unrelated to malignant's)."""
    config = shipped_classifier.config
    _, cams = ClassifierGradCAM(shipped_classifier.model, config["gradcam_layer"], config["logits_layer"])(malignant_input)
    normal, benign, malignant = cams[0]
    assert np.abs(benign - malignant).mean() > 0.05
    assert np.abs(normal - malignant).mean() > 0.2
    assert rank_correlation(normal, malignant) < 0.25


def test_overlay_is_at_the_scan_size_and_blends():
    gray = np.full((300, 200), 100, np.uint8)
    cam = np.zeros((7, 7), np.float32)
    cam[3, 3] = 1.0
    rgb = heatmap_overlay(gray, cam, opacity=0.5)
    assert rgb.shape == (300, 200, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[0, 0], [100, 100, 100]), "a cold region leaves the scan untouched"
    assert not np.array_equal(rgb[150, 100], [100, 100, 100])


def test_heatmap_overlay_blends_the_colormap_by_the_maps_value():
    """Cold pixels keep the scan, hot pixels at full opacity take the colormap's top colour, and
    opacity 0 leaves the scan untouched."""
    from matplotlib import colormaps

    gray = np.full((40, 60), 100, np.uint8)
    cam = np.zeros((40, 60), np.float32)
    cam[:, 30:] = 1.0
    overlay = heatmap_overlay(gray, cam, opacity=1.0)
    assert overlay.shape == (40, 60, 3) and overlay.dtype == np.uint8
    assert (overlay[:, :25] == 100).all()
    hot = np.round(np.array(colormaps["jet"](1.0)[:3]) * 255)
    assert np.abs(overlay[:, 35:].astype(int) - hot).max() <= 1
    assert (heatmap_overlay(gray, cam, opacity=0.0) == 100).all()


def test_mask_overlay_outlines_the_lesion_filled_or_not():
    """Both styles draw the edge in the lesion colour; "filled" tints the inside at the given
    opacity, "outline" leaves it as the scan; outside the lesion the scan is untouched."""
    from explain.overlay import LESION_COLOUR, mask_overlay

    gray = np.full((30, 40), 90, np.uint8)
    mask = np.zeros((30, 40), bool)
    mask[10:20, 10:30] = True
    filled, outlined = mask_overlay(gray, mask, 0.5, "filled"), mask_overlay(gray, mask, 0.5, "outline")
    for overlay in (filled, outlined):
        assert tuple(overlay[10, 15]) == tuple(overlay[19, 29]) == LESION_COLOUR
        assert (overlay[:9] == 90).all() and (overlay[:, 31:] == 90).all()
    assert np.abs(filled[15, 20].astype(int) - (np.array(LESION_COLOUR) + 90) / 2).max() <= 1
    assert (outlined[15, 20] == 90).all()
    with pytest.raises(ValueError):
        mask_overlay(gray, mask, 0.5, "dotted")


def test_a_lesion_cut_by_the_scans_edge_is_drawn_closed_along_it():
    """A lesion running off the top of the scan: its outline runs along the top row too, so the drawn
    shape is closed (the sides used to stop one pixel short and the top stayed open)."""
    from explain.overlay import outline

    mask = np.zeros((20, 20), bool)
    mask[:8, 5:15] = True
    for width in (1, 2):
        edge = outline(mask, width)
        assert edge[0, 5:15].all() and edge[:8, 5].all() and edge[:8, 14].all() and not edge[width:8 - width, 5 + width:15 - width].any()
