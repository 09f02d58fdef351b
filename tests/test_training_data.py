"""What both trainers share: per-source weights and the augmentation."""

from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.finetune import BUS_UCLM_SHARE, Augmentation, scan_weights, train_dataset
from training.split import samples_by_side


def test_bus_uclm_patients_weigh_equally_and_half_as_much_as_busi(busi_root, bus_uclm_root):
    uclm = samples_by_side("bus_uclm")["train"]
    n_busi = len(samples_by_side("busi")["train"])
    weights = scan_weights("bus_uclm", uclm, n_busi)
    assert weights.sum() == pytest.approx(BUS_UCLM_SHARE * n_busi, rel=1e-5)
    per_patient = defaultdict(float)
    for sample, weight in zip(uclm, weights):
        per_patient[sample.path.stem.rsplit("_", 1)[0]] += weight
    assert max(per_patient.values()) == pytest.approx(min(per_patient.values()), rel=1e-5)
    assert np.all(scan_weights("busi", samples_by_side("busi")["train"], n_busi) == 1)


@pytest.mark.parametrize("zoom_crop, export_shift", [(0.0, False), (1.0, False), (1.0, True)])
def test_augmentation_moves_scan_and_mask_together(zoom_crop, export_shift):
    """A bright square on black with its mask: after any augmentation (zoomed crops or not, export
    shift or not) the mask still covers bright pixels and the black background stays outside it."""
    images = np.zeros((16, 128, 128, 3), np.uint8)
    masks = np.zeros((16, 128, 128), np.uint8)
    images[:, 40:90, 30:70] = 200
    masks[:, 40:90, 30:70] = 1
    out_images, out_masks = Augmentation(128, zoom_crop, export_shift=export_shift)(images, masks)
    assert out_images.shape == images.shape and out_masks.shape == masks.shape
    assert not np.array_equal(out_images, images), "something was augmented"
    for image, mask in zip(out_images, out_masks):
        inside, outside = image[..., 0][mask > 0], image[..., 0][mask == 0]
        assert inside.mean() > 2 * max(outside.mean(), 1), "the mask follows the square"


def test_one_seed_gives_the_same_augmented_batches_every_time():
    """Two datasets of one seed yield the same batches, epoch after epoch; another seed does not. Batches
    augmented in parallel drew from the shared generators in thread order, and one seed's two runs of
    the segmenter kept models 0.09 Dice apart on validation (segmenter card, rule 79)."""
    rng = np.random.default_rng(0)
    arrays = {"images": rng.integers(0, 255, (48, 64, 64, 3), dtype=np.uint8),
              "masks": np.zeros((48, 64, 64), np.uint8), "labels": np.zeros(48, np.int64),
              "weights": np.ones(48, np.float32)}
    arrays["masks"][:, 20:40, 20:40] = 1

    def batches(seed):
        ds = train_dataset(arrays, 8, seed, targets=lambda masks, labels, weights: (masks,), zoom_crop=0.5)
        return [image.numpy() for _ in range(2) for image, _ in ds]

    first = batches(7)
    assert all(np.array_equal(a, b) for a, b in zip(first, batches(7))), "same seed, same batches"
    assert not all(np.array_equal(a, b) for a, b in zip(first, batches(8)))


def test_zoomed_crops_keep_the_whole_lesion_and_zoom_normal_scans_alike():
    """Every zoomed crop keeps the lesion whole (its area grows, none of it is cut), framed like
    serving (aspect kept, black padding); normal scans are zoomed as often and as much."""
    size = 128
    images = np.full((64, size, size, 3), 90, np.uint8)  # a uniform field: padding shows as black
    masks = np.zeros((64, size, size), np.uint8)
    masks[:32, 60:80, 50:76] = 1  # half the scans hold a 20 x 26 lesion, half are normal
    zoom = Augmentation(size, zoom_crop=1.0)
    zoom.compose.transforms = zoom.compose.transforms[:1]  # the zoomed crop alone
    out_images, out_masks = zoom(images, masks)
    lesion_area = out_masks[:32].sum(axis=(1, 2))
    assert np.all(lesion_area >= 20 * 26 * 0.95), "no lesion is cut"
    assert np.median(lesion_area) > 1.5 * 20 * 26, "lesions are zoomed in"
    for image, mask in zip(out_images[:32], out_masks[:32]):
        field = image[..., 0] > 0
        assert field[mask > 0].all(), "the lesion lies inside the placed field"
        assert field.any(axis=0).all() or field.any(axis=1).all(), "the field fills one side: aspect kept, padded"
    padded = lambda batch: (batch[..., 0] == 0).mean(axis=(1, 2))  # the share of black padding: how far zoomed
    assert abs(np.median(padded(out_images[:32])) - np.median(padded(out_images[32:]))) < 0.25
    assert (padded(out_images[32:]) > 0.05).mean() > 0.5, "normal scans are cropped too"


def test_cross_source_scores_read_the_chosen_epoch():
    from training.cross_source import cross_source_scores

    history = [{"val_score": 0.5, "bus_uclm_recall_bm": 0.1, "bus_uclm_macro_auc": 0.3, "bus_uclm_bm_auc": 0.2},
               {"val_score": 0.9, "bus_uclm_recall_bm": 0.6, "bus_uclm_macro_auc": 0.8, "bus_uclm_bm_auc": 0.7}]
    config = {"framing": {}, "training": {"sources": ["busi"], "best_epoch": 2, "history": history}}
    scores = cross_source_scores(config)
    assert scores["bus_uclm_score"] == pytest.approx(0.7) and scores["bus_uclm_bm_auc"] == 0.7
    assert scores["framing"] == "stretch" and "busi_score" not in scores


def test_cross_source_scores_of_a_segmenter_are_the_other_sources_numbers_at_the_chosen_epoch():
    from training.cross_source import cross_source_scores

    history = [{"val_score": 0.7, "busi_dice@0.5": 0.7, "bus_uclm_dice@0.5": 0.4, "bus_uclm_missed@0.5": 0.3},
               {"val_score": 0.6, "busi_dice@0.5": 0.6, "bus_uclm_dice@0.5": 0.5, "bus_uclm_missed@0.5": 0.1}]
    config = {"task": "segmentation", "framing": {"crop_to_field": True},
              "training": {"sources": ["busi"], "best_epoch": 1, "history": history, "normal_presence_weight": 0.5}}
    scores = cross_source_scores(config)
    assert scores["bus_uclm_dice@0.5"] == 0.4 and scores["bus_uclm_missed@0.5"] == 0.3
    assert scores["task"] == "segmentation" and scores["normal_presence_weight"] == 0.5
    assert "busi_dice@0.5" not in scores and "bus_uclm_score" not in scores
    assert scores["range_over_epochs"]["bus_uclm_dice@0.5"] == [0.4, 0.5] and "busi_dice@0.5" not in scores["range_over_epochs"]


def test_reframing_cuts_around_the_lesion_and_keeps_its_shape():
    from training.reframe import crop_around_lesions

    size = 128
    images = np.full((4, size, size, 3), 90, np.uint8)
    masks = np.zeros((4, size, size), np.uint8)
    masks[:2, 60:80, 40:80] = 1  # two scans hold a 20 x 40 lesion, two are normal
    images[:2][masks[:2] > 0] = 200
    out, out_masks = crop_around_lesions(images, masks, margin=0.25)
    assert out.shape == images.shape and out_masks.shape == masks.shape
    for image, mask in zip(out[:2], out_masks[:2]):
        bright, inside = image[..., 0] > 145, mask > 0
        assert (bright & inside).sum() / (bright | inside).sum() > 0.9, "the mask is re-framed with its scan"
        lesion = image[..., 0] == 200
        rows, cols = np.nonzero(lesion)
        # box 40 wide + 25 % a side = 60 px -> 128 px: the lesion is 40 * 128 / 60 px wide, still twice as wide as high
        assert abs((cols.max() - cols.min() + 1) - 40 * size / 60) <= 2
        assert 1.8 < (cols.max() - cols.min() + 1) / (rows.max() - rows.min() + 1) < 2.2
        assert (image[..., 0] == 0).any(), "padded black above and below: aspect kept"
    ramp = np.repeat(np.repeat(np.arange(size, dtype=np.uint8)[None, :, None], size, axis=0)[None], 2, axis=0)
    normals, _ = crop_around_lesions(np.repeat(ramp, 3, axis=-1), masks[2:], margin=0.25)
    # a lesion-sized box (20-40 % of the side, + 25 % a side) spans far fewer grey levels than the whole ramp
    assert all(np.ptp(image[..., 0][image[..., 0] > 0]) < 0.7 * size for image in normals), "normals are cut too"


def test_rendering_panel_changes_the_pixels_the_way_each_name_says_and_repeats_exactly():
    from training.renderings import RENDERINGS, rendered

    rng = np.random.default_rng(0)
    size = 64
    images = np.repeat(rng.integers(40, 200, (3, size, size, 1), dtype=np.uint8), 3, axis=-1)
    masks = np.zeros((3, size, size), np.uint8)
    masks[0, 20:40, 20:40] = 1
    first, again = rendered(images, masks), rendered(images, masks)
    assert list(first) == list(RENDERINGS)
    for name, out in first.items():
        assert out.shape == images.shape and out.dtype == np.uint8, name
        assert np.array_equal(out, again[name]), f"{name} is not deterministic"
    assert np.array_equal(first["as is"], images)
    assert first["gamma 0.67"].mean() > images.mean() > first["gamma 1.5"].mean(), "gamma < 1 brightens, > 1 darkens"
    detail = lambda batch: np.abs(np.diff(batch.astype(float), axis=2)).mean()  # noqa: E731 - pixel-to-pixel change
    assert detail(first["downscaled x0.5"]) < detail(images) < detail(first["sharpened"])
    assert 0 < np.abs(first["JPEG q30"].astype(int) - images).mean() < 40, "compressed, not replaced"


def test_export_shift_sharpens_grabs_and_compresses_some_scans():
    """With the export shift, some scans of a batch gain pixel-to-pixel detail (sharpening, JPEG
    blocks) beyond anything the scanner-shift augmentation alone gives, from the same seed."""
    rng = np.random.default_rng(1)
    images = np.repeat(rng.integers(60, 180, (64, 64, 64, 1), dtype=np.uint8), 3, axis=-1)
    images = np.stack([cv2.GaussianBlur(image, (5, 5), 0) for image in images])  # smooth: sharpening shows
    masks = np.zeros((64, 64, 64), np.uint8)
    detail = lambda batch: np.abs(np.diff(batch[..., 0].astype(float), axis=2)).mean(axis=(1, 2))  # noqa: E731
    plain = detail(Augmentation(64, 0.0, seed=3)(images, masks)[0])
    shifted = detail(Augmentation(64, 0.0, seed=3, export_shift=True)(images, masks)[0])
    assert (shifted > 1.5 * plain.max()).sum() >= 2


def test_ultrasound_shift_darkens_and_shades_the_field_and_leaves_the_padding_black():
    """With the ultrasound shift alone, some scans of a uniform field get darker with depth
    (attenuation) or patchy (shadow, haze); the black padding beside the field stays black and masks
    are untouched: its transforms change pixels only, before any geometry, so scan and mask still
    move together (the test above)."""
    import albumentations as A

    from training.finetune import ULTRASOUND_SHIFT, field_mask

    images = np.zeros((64, 64, 64, 3), np.uint8)
    images[:, :, 8:56] = 150  # the field, padded black left and right
    masks = np.zeros((64, 64, 64), np.uint8)
    masks[:, 20:30, 20:30] = 1
    assert field_mask(images[0]).sum() == 64 * 48
    assert all(isinstance(t, A.ImageOnlyTransform) for t in ULTRASOUND_SHIFT)
    shift = Augmentation(64, ultrasound_shift=True, seed=5)
    assert shift.compose.transforms[:len(ULTRASOUND_SHIFT)] == ULTRASOUND_SHIFT, "first, before any geometry"
    shift.compose.transforms = shift.compose.transforms[:len(ULTRASOUND_SHIFT)]  # the ultrasound shift alone
    out_images, out_masks = shift(images, masks)
    assert np.array_equal(out_masks, masks)
    assert out_images[:, :, :8].max() == 0 and out_images[:, :, 56:].max() == 0, "padding stays black"
    depth_ratio = out_images[:, 48:, 8:56, 0].mean(axis=(1, 2)) / out_images[:, :16, 8:56, 0].mean(axis=(1, 2)).clip(1)
    changed = np.abs(out_images.astype(int) - images).mean(axis=(1, 2, 3)) > 2
    assert 0.15 < changed.mean() < 0.95, "some scans, not all"
    assert (depth_ratio < 0.8).sum() >= 3, "deep tissue darker than shallow on some scans"


@pytest.mark.parametrize("name", ["busi_benign_354.png", "breast_case015.png"])
def test_speckle_reduction_keeps_every_pixel_finite_at_its_smallest_sigmas(name):
    """The bilateral filter's spatial sigma is drawn from `SPECKLE_SIGMA_SPATIAL`; at its lower end,
    with the smallest range sigma, a real scan's field stays finite, so no NaN reaches the 8-bit cast
    (from the library's default lower end, 0.1, it does not)."""
    import albumentations as A
    from PIL import Image
    from usaugment.albumentations import SpeckleReduction

    from training.finetune import SPECKLE_SIGMA_SPATIAL, ULTRASOUND_SHIFT, field_mask

    assert any(isinstance(t, SpeckleReduction) and t.sigma_spatial == SPECKLE_SIGMA_SPATIAL for t in ULTRASOUND_SHIFT)
    grey = np.asarray(Image.open(f"examples/{name}").convert("L").resize((256, 256)))
    scan = np.repeat(grey[..., None], 3, axis=-1)

    def filtered(sigma_spatial):
        speckle = SpeckleReduction(sigma_color=1e-4, sigma_spatial=sigma_spatial, p=1.0)
        return A.Compose([A.ToFloat(max_value=255), speckle])(image=scan, scan_mask=field_mask(scan))["image"]

    assert np.isfinite(filtered(SPECKLE_SIGMA_SPATIAL[0])).all()
    assert not np.isfinite(filtered(0.1)).all(), "the library's default range reaches the NaNs"


def test_random_convolution_changes_texture_not_gain_polarity_or_padding():
    """On real framed scans: the field's texture changes (pixel-to-pixel detail differs), its mean grey
    level and contrast stay (within a few levels), the grey levels are never inverted (the result
    correlates positively with the scan), the padding stays black and the channels stay equal."""
    import albumentations as A
    from PIL import Image

    from inference.preprocess import Framing, to_model_input
    from training.random_convolution import RandomConvolution

    gray = np.asarray(Image.open(Path(__file__).resolve().parents[1] / "examples" / "busi_malignant_49.png").convert("L"))
    framing = Framing.of(gray, 128, crop_to_field=True, keep_aspect=True)
    scan = to_model_input(gray, framing).astype(np.uint8)
    top, height = framing.offset[0], framing.inner[0]
    field = scan[top:top + height, :, 0].astype(float)
    transform = A.Compose([RandomConvolution(p=1.0)], seed=4)
    details = []
    for _ in range(20):
        out = transform(image=scan)["image"]
        assert out.dtype == np.uint8 and np.array_equal(out[..., 0], out[..., 2])
        assert out[:top].max() == 0 and out[top + height:].max() == 0, "padding stays black"
        changed = out[top:top + height, :, 0].astype(float)
        assert abs(changed.mean() - field.mean()) < 4 and abs(changed.std() - field.std()) < 0.15 * field.std()
        assert np.corrcoef(changed.ravel(), field.ravel())[0, 1] > 0.3, "grey levels not inverted"
        details.append(np.abs(np.diff(changed, axis=1)).mean() / np.abs(np.diff(field, axis=1)).mean())
    assert min(details) < 0.9 and max(details) > 1.1, "smoother and grainier textures both appear"
