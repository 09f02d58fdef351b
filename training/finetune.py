"""What the classifier and segmenter training share: data from every training source, augmentation,
datasets, freezing, saving.

Both models train on the train sides of BUSI and BUS-UCLM together (never BrEaST, the external test
set) and are chosen on their validation sides, scored per source so scanner shift stays visible.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import albumentations as A
import cv2
import keras
import numpy as np
import tensorflow as tf
from keras import layers
from usaugment.albumentations import DepthAttenuation, GaussianShadow, HazeArtifact, SpeckleReduction

from training.arrays import load_arrays, subsample
from training.busi import REPO_ROOT, SOURCES, TRAINING_SOURCES
from training.efficientnet_lite import ENCODERS
from training.metrics import calibrated
from training.random_convolution import RandomConvolution
from training.split import read_split, samples_by_side

# The framing serving uses for these models (inference.preprocess): crop to the ultrasound field,
# keep the aspect ratio. Sources differ in both (landscape screenshots with borders, pre-cropped scans).
FRAMING = {"crop_to_field": True, "keep_aspect": True}
# BUS-UCLM's 21 training patients give hundreds of near-identical frames: together they weigh as
# much as this share of BUSI's scans, spread equally over patients, then over each patient's frames.
BUS_UCLM_SHARE = 0.5
PREPROCESSING = ("greyscale scan framed as `framing` says (inference.preprocess.Framing: optionally cropped to the "
                 "ultrasound field, aspect kept and padded black, else stretched) to input_size x input_size "
                 "(bilinear), repeated to 3 channels, raw 0..255; the model applies (x - 127) / 128 itself")


def training_splits(sources) -> list[str]:
    """The split files whose train side teaches and whose validation side chooses; recorded in every
    model's config so evaluation can tell which held-out scans a model has seen."""
    return [SOURCES[s].split_csv.relative_to(REPO_ROOT).as_posix() for s in sources]


def scan_weights(source: str, samples, n_busi: int) -> np.ndarray:
    """Per-scan loss weights: 1 per BUSI scan; BUS-UCLM as described at BUS_UCLM_SHARE."""
    if source != "bus_uclm":
        return np.ones(len(samples), np.float32)
    patient_of = {r["file"]: r["patient_id"] for r in read_split(SOURCES[source].split_csv)}
    patients = [patient_of[s.relpath] for s in samples]
    frames = Counter(patients)
    per_patient = BUS_UCLM_SHARE * n_busi / len(frames)
    return np.array([per_patient / frames[p] for p in patients], np.float32)


# Scanner shift: geometry (scan and mask alike; no vertical flip, the transducer is always at the
# top), gain, contrast and gamma curves, blur and speckle-like multiplicative noise.
SCANNER_SHIFT = [
    A.HorizontalFlip(p=0.5),
    A.Affine(scale=(0.85, 1.15), translate_percent=(-0.06, 0.06), rotate=(-10, 10),
             border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.8),
    A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.25, p=0.8),
    A.RandomGamma(gamma_limit=(70, 150), p=0.5),
    A.GaussianBlur(blur_limit=(3, 5), p=0.2),
    A.MultiplicativeNoise(multiplier=(0.85, 1.15), elementwise=True, p=0.3),
]
# Export shift: what a scanner's processing and a hospital's export pipeline do to the pixels after
# acquisition — edge enhancement, a lower-resolution grab, lossy compression. On validation scans
# rendered these ways (`training.renderings`) every classifier lost most on sharpened scans.
EXPORT_SHIFT = [
    A.Sharpen(alpha=(0.2, 0.6), lightness=(0.8, 1.0), p=0.25),
    A.Downscale(scale_range=(0.5, 0.9), interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR},
                p=0.2),
    A.ImageCompression(quality_range=(30, 90), p=0.25),
]
# Ultrasound shift (usaugment, Tupper & Gagné 2025, on albumentations): what differs between probes,
# presets and patients in the acquisition itself — depth attenuation, acoustic shadows, haze, and the
# speckle reduction scanners apply. They work on float images inside the ultrasound field
# (`field_mask`), so they come first, on the framed scan before any geometry; library defaults, each
# on a quarter of the scans, except one: speckle reduction's spatial sigma starts at 0.3 pixel, not
# 0.1, because scikit-image's bilateral filter returns NaN pixels for spatial sigmas below about 0.25
# when the range sigma is small too (measured on framed scans), which the cast back to 8 bits turns
# into arbitrary values; at such a sigma the filter leaves the scan as it is anyway.
SPECKLE_SIGMA_SPATIAL = (0.3, 2.0)
ULTRASOUND_SHIFT = [
    A.ToFloat(max_value=255),
    DepthAttenuation(p=0.25), GaussianShadow(p=0.25), HazeArtifact(p=0.25),
    SpeckleReduction(sigma_spatial=SPECKLE_SIGMA_SPATIAL, p=0.25),
    A.FromFloat(dtype="uint8", max_value=255),
]
# Share of a normal scan's side taken by the stand-in box its zoomed crop keeps (a typical lesion's).
STAND_IN_SIDE = (0.2, 0.4)


def lesion_box(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(1, 4) pascal-VOC box around the lesion of a (S, S) mask; on a normal scan, a random stand-in
    of a lesion's size (`STAND_IN_SIDE`) below the top eighth (skin and transducer)."""
    if mask.any():
        rows, cols = np.nonzero(mask)
        return np.array([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], np.float32)
    height, width = mask.shape
    side = rng.uniform(*STAND_IN_SIDE)
    box_h, box_w = max(1, int(side * height)), max(1, int(side * width))
    top, left = rng.integers(height // 8, height - box_h + 1), rng.integers(0, width - box_w + 1)
    return np.array([[left, top, left + box_w, top + box_h]], np.float32)


def field_mask(image: np.ndarray) -> np.ndarray:
    """(S, S) 0/1 mask of the ultrasound field in a framed (S, S, 3) scan: the rectangle the field was
    placed in, everything but the black padding around it."""
    rows, cols = np.nonzero(image.max(axis=-1))
    mask = np.zeros(image.shape[:2], np.uint8)
    if rows.size:
        mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = 1
    return mask


class Augmentation:
    """The training augmentation of `size` x `size` scans and their masks, a batch at a time.

    With `zoom_crop` > 0, that share of scans is first cut to a random box holding the whole lesion,
    aspect kept and padded black as serving frames a scan (albumentations' BBoxSafeRandomCrop). Some
    hospitals export scans pre-cropped around the lesion (BrEaST does), and on validation scans
    re-framed that way the classifier calls more lesions normal. Normal scans get the same crop
    around a stand-in box of a lesion's size (`lesion_box`), so "zoomed in" cannot become a sign of a
    lesion. With `export_shift`, `EXPORT_SHIFT` follows the scanner shift; with `ultrasound_shift`,
    `ULTRASOUND_SHIFT` comes before everything; with `random_convolution`, half the scans get a random
    texture last (`training.random_convolution`)."""

    def __init__(self, size: int, zoom_crop: float = 0.0, seed: int = 7, export_shift: bool = False,
                 ultrasound_shift: bool = False, random_convolution: bool = False):
        self.ultrasound_shift = ultrasound_shift
        self.zoom_crop, self.rng = zoom_crop, np.random.default_rng(seed)
        zoom = [A.Sequential([
            A.BBoxSafeRandomCrop(erosion_rate=0.0, p=1.0),
            A.LongestMaxSize(max_size=size, p=1.0),
            A.PadIfNeeded(size, size, position="center", border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
        ], p=zoom_crop)] if zoom_crop else []
        self.compose = A.Compose((ULTRASOUND_SHIFT if ultrasound_shift else []) + zoom + SCANNER_SHIFT
                                 + (EXPORT_SHIFT if export_shift else [])
                                 + ([RandomConvolution(p=0.5)] if random_convolution else []), seed=seed,
                                 bbox_params=A.BboxParams(format="pascal_voc", label_fields=["box_ids"], clip=True)
                                 if zoom_crop else None)

    def __call__(self, images: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A uint8 batch (B, S, S, 3) and its 0/1 masks (B, S, S) -> both augmented, same shapes."""
        out_images, out_masks = np.empty_like(images), np.empty_like(masks)
        for i in range(len(images)):
            extra = {"bboxes": lesion_box(masks[i], self.rng), "box_ids": [0]} if self.zoom_crop else {}
            if self.ultrasound_shift:
                extra["scan_mask"] = field_mask(images[i])
            result = self.compose(image=images[i], mask=masks[i], **extra)
            out_images[i], out_masks[i] = result["image"], result["mask"]
        return out_images, out_masks


def augmentation_options(args) -> dict:
    """The training augmentation's options from a trainer's command line (`training_parser`): what
    `train_dataset` takes and the model's config records."""
    return {"zoom_crop": args.zoom_crop, "export_shift": args.export_shift, "ultrasound_shift": args.ultrasound_shift,
            "random_convolution": args.random_convolution}


def train_dataset(arrays: dict, batch_size: int, seed: int, targets, zoom_crop: float = 0.0,
                  export_shift: bool = False, ultrasound_shift: bool = False, random_convolution: bool = False):
    """Shuffled, augmented float batches of `(images, *targets(masks, labels, weights))`: scans and
    lesion masks share one random geometry (`Augmentation` and its options, `augmentation_options`), and
    `targets` turns them into what the model's losses expect (targets, and per-scan loss weights)."""
    weights = (arrays["weights"] / arrays["weights"].mean()).astype(np.float32)  # mean 1: the learning rate keeps its scale
    ds = tf.data.Dataset.from_tensor_slices((arrays["images"], arrays["masks"], arrays["labels"], weights))
    ds = ds.shuffle(len(arrays["labels"]), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    size = arrays["images"].shape[1]
    augment = Augmentation(size, zoom_crop, seed, export_shift, ultrasound_shift, random_convolution)

    def prepare(images, masks, labels, weights):
        images, masks = tf.numpy_function(augment, [images, masks], [tf.uint8, tf.uint8])
        images = tf.ensure_shape(tf.cast(images, tf.float32), [None, size, size, 3])
        masks = tf.ensure_shape(tf.cast(masks, tf.float32), [None, size, size])[..., None]
        return (images, *targets(masks, labels, weights))

    # One batch at a time: the augmentation's random generators are shared, and batches augmented in
    # parallel would draw from them in whatever order the threads ran, so one seed gave different runs.
    # Prefetching still prepares the next batches while the model trains on this one.
    return ds.map(prepare, num_parallel_calls=1).prefetch(tf.data.AUTOTUNE)


def stem_layers(model: keras.Model) -> set[str]:
    """Names of the encoder's layers up to stride 4 — the stem and every block whose output is at
    stride 2 or 4 (Lite0: blocks 0-2, Lite1 and Lite2: 0-3). They stay at their ImageNet weights: generic
    edges, and the costliest layers to train."""
    size = model.input_shape[1]
    early = {layer.name.removesuffix("out") for layer in model.layers
             if layer.name.startswith("block") and layer.name.endswith("_out") and layer.output.shape[1] >= size // 4}
    return {layer.name for layer in model.layers if layer.name.startswith(("stem_", *early))}


def set_trainable(model: keras.Model, backbone: bool):
    """BatchNorm of the encoder stays in inference mode (batches are too small to re-estimate it),
    the stem (`stem_layers`) is frozen, the rest of the encoder follows `backbone`; every other layer trains."""
    frozen = stem_layers(model)
    for layer in model.layers:
        if layer.name in frozen:
            layer.trainable = False
        elif layer.name.startswith(("block", "top_")):
            layer.trainable = backbone and not isinstance(layer, layers.BatchNormalization)


def predict_in_batches(fn, images: np.ndarray, batch_size: int = 32):
    """`fn` over `images` in batches; its output (an array, or a tuple of them) concatenated."""
    batches = [fn(images[i : i + batch_size].astype(np.float32)) for i in range(0, len(images), batch_size)]
    if isinstance(batches[0], (tuple, list)):
        return tuple(np.concatenate([np.asarray(b[k]) for b in batches]) for k in range(len(batches[0])))
    return np.concatenate([np.asarray(b) for b in batches])


def logits_function(loaded):
    """A loaded classifier (`inference.models.LoadedModel`) -> compiled images -> logits (its config's
    logits layer, before temperature), for scoring it on validation scans."""
    logits_model = keras.Model(loaded.model.input, loaded.model.get_layer(loaded.config["logits_layer"]).output)
    return tf.function(lambda x: logits_model(x, training=False))


def normal_probability(loaded, images: np.ndarray) -> np.ndarray:
    """A loaded classifier's calibrated probability of "normal" for each framed model input: what the
    normal gate reads."""
    config = loaded.config
    logits = predict_in_batches(logits_function(loaded), images)
    return calibrated(logits, config["temperature"])[:, config["classes"].index("normal")]


def save_model(build, model: keras.Model, out: Path, config: dict):
    """Save a fresh, uncompiled copy of `model` (no optimizer state, ~3x smaller) and its config."""
    out.mkdir(parents=True, exist_ok=True)
    clean = build()
    clean.set_weights(model.get_weights())
    clean.save(out / "model.keras")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"saved {out / 'model.keras'}", flush=True)


def training_parser(doc: str, *, size: int, head_epochs: int, epochs: int, batch_size: int, lr: float,
                    out: Path, zoom_crop: float = 0.0) -> argparse.ArgumentParser:
    """The options both trainers take, with each one's defaults."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=size, help="input side in pixels")
    parser.add_argument("--encoder", choices=ENCODERS, default="lite0",
                        help="ImageNet EfficientNet-Lite encoder (lite1: deeper than lite0, ~1.55x its compute; lite2: lite1's depth, wider)")
    parser.add_argument("--head-epochs", type=int, default=head_epochs, help="epochs with the encoder frozen")
    parser.add_argument("--epochs", type=int, default=epochs, help="epochs with the encoder (past the stem) training")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate of the fine-tuning phase")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--limit", type=int, default=0, help="use only about N train/val scans per source (smoke test)")
    parser.add_argument("--sources", nargs="+", choices=TRAINING_SOURCES, default=list(TRAINING_SOURCES),
                        help="training sources (one alone: for cross-source validation)")
    parser.add_argument("--stretch", action="store_true",
                        help="stretch the whole scan to the square input (the first models' framing)")
    parser.add_argument("--clahe", action="store_true",
                        help="equalise the framed ultrasound field by CLAHE (inference.preprocess), in training and "
                             "in serving, which reads it from the model's framing")
    parser.add_argument("--zoom-crop", type=float, default=zoom_crop,
                        help="share of training scans cut to a random box around the lesion (or a stand-in box "
                             "on normal scans), aspect kept: pre-cropped exports of other hospitals; 0: none")
    parser.add_argument("--export-shift", action="store_true",
                        help="also augment with sharpening, low-resolution grabs and JPEG compression (EXPORT_SHIFT)")
    parser.add_argument("--ultrasound-shift", action="store_true",
                        help="add usaugment's depth attenuation, shadows, haze and speckle reduction to the "
                             "training augmentation (training.finetune.ULTRASOUND_SHIFT)")
    parser.add_argument("--random-convolution", action="store_true",
                        help="give half the training scans a random local texture (training.random_convolution)")
    parser.add_argument("--average-from", type=int, default=0,
                        help="from this epoch on (head epochs count), score and keep the running mean of the "
                             "weights since then instead of each epoch's own (stochastic weight averaging); 0: off")
    parser.add_argument("--out", type=Path, default=out)
    return parser


def load_side(side: str, size: int, limit: int, framing: dict, sources=TRAINING_SOURCES) -> dict:
    """One side of every training source, concatenated: arrays plus `source` (index into `sources`)
    and `weights` (per-scan loss weights, `scan_weights`)."""
    parts, n_busi = [], len(subsample(samples_by_side("busi")[side], limit))
    for index, source in enumerate(sources):
        samples = subsample(samples_by_side(source)[side], limit)
        arrays = load_arrays(samples, size, framing)
        arrays["source"] = np.full(len(samples), index)
        arrays["weights"] = scan_weights(source, samples, n_busi)
        parts.append(arrays)
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def load_training_data(args) -> tuple[dict, dict, dict]:
    """(framing, train, val) for a training run: the train sides of `args.sources`, framed as
    `--stretch` says, and the validation sides of every training source (a single-source run is
    scored on the others' too: cross-source validation)."""
    framing = ({} if args.stretch else FRAMING) | ({"clahe": True} if args.clahe else {})
    train = load_side("train", args.size, args.limit, framing, args.sources)
    val = load_side("val", args.size, args.limit, framing, TRAINING_SOURCES)
    print(f"train {len(train['labels'])} scans ({', '.join(args.sources)}), val {len(val['labels'])} scans "
          f"(all training sources), framing {framing or 'stretch'}", flush=True)
    return framing, train, val


def per_source(arrays: dict, sources=TRAINING_SOURCES):
    """(source name, index array) of each source present in `arrays`."""
    return [(s, np.flatnonzero(arrays["source"] == i)) for i, s in enumerate(sources) if (arrays["source"] == i).any()]


def chosen_epoch(config: dict) -> dict:
    """A trained model's record of the epoch it kept (`SelectOnValidation`'s history entry: its
    validation score and numbers)."""
    training = config["training"]
    return training["history"][training["best_epoch"] - 1]


class SelectOnValidation(keras.callbacks.Callback):
    """After every epoch, scores the model on validation with `evaluate() -> (score, metrics)` and
    keeps the best weights in memory: early stopping without ever looking at the test side.

    From epoch `average_from` on (counting every phase's epochs from 1; 0: never) what is scored and
    kept is the running mean of the weights at the end of each epoch since then (stochastic weight
    averaging), while training itself goes on from the epoch's own weights. A single-source
    classifier's verdict on another source's lesions swings from one epoch to the next
    (reports/cross_source_classifiers.json); the mean of several epochs' weights is one flat point
    between them rather than one draw of that swing. The encoder's BatchNorm statistics are frozen
    (`set_trainable`); a segmenter decoder's are averaged with its weights, not re-estimated."""

    def __init__(self, evaluate, average_from: int = 0):
        super().__init__()
        self.evaluate, self.average_from = evaluate, average_from
        self.best_score, self.best_weights, self.history = -np.inf, None, []
        self.average, self.n_averaged = None, 0

    def _scored_weights(self) -> list[np.ndarray] | None:
        """The running mean updated with this epoch's weights, once averaging has begun; else None."""
        epoch = len(self.history) + 1
        if not self.average_from or epoch < self.average_from:
            return None
        weights = self.model.get_weights()
        self.n_averaged += 1
        self.average = weights if self.average is None else [
            mean + (w - mean) / self.n_averaged for mean, w in zip(self.average, weights)]
        return self.average

    def on_epoch_end(self, epoch, logs=None):
        averaged = self._scored_weights()
        if averaged is None:
            score, metrics = self.evaluate()
        else:
            own = self.model.get_weights()
            self.model.set_weights(averaged)
            score, metrics = self.evaluate()
            self.model.set_weights(own)
        self.history.append({"epoch": len(self.history) + 1, "loss": float(logs["loss"]), "val_score": score,
                             "epochs_averaged": self.n_averaged if averaged is not None else 1, **metrics})
        print("  val: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if v is not None)
              + f", score {score:.3f}" + (f" (mean of {self.n_averaged} epochs)" if averaged is not None else ""),
              flush=True)
        if score > self.best_score:
            self.best_score = score
            self.best_weights = averaged if averaged is not None else self.model.get_weights()

    @property
    def best_epoch(self) -> int:
        return max(self.history, key=lambda h: h["val_score"])["epoch"]


def _cosine_fit(model, train_ds, n_train: int, loss, selector: SelectOnValidation, args, lr: float, epochs: int):
    """`epochs` epochs with AdamW, the learning rate cosine-decayed from `lr` to 5 % of it."""
    schedule = keras.optimizers.schedules.CosineDecay(lr, epochs * int(np.ceil(n_train / args.batch_size)), alpha=0.05)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4), loss=loss)
    model.fit(train_ds, epochs=epochs, callbacks=[selector], verbose=2)


def fit_two_phases(model, train_ds, n_train: int, loss, selector: SelectOnValidation, args):
    """Phase 1: new layers only (encoder frozen), lr 1e-3; skipped when `args.head_epochs` is 0 (a
    model whose new layers are trained already). Phase 2: encoder past the stem too, cosine-decayed
    from `args.lr`. Ends with the best validation weights loaded."""
    if args.head_epochs:
        print("phase 1: encoder frozen", flush=True)
        set_trainable(model, backbone=False)
        model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4), loss=loss)
        model.fit(train_ds, epochs=args.head_epochs, callbacks=[selector], verbose=2)

    print("phase 2: encoder past the stem trains too", flush=True)
    set_trainable(model, backbone=True)
    _cosine_fit(model, train_ds, n_train, loss, selector, args, args.lr, args.epochs)
    model.set_weights(selector.best_weights)


def fit_new_layers(model, train_ds, n_train: int, loss, selector: SelectOnValidation, args):
    """The encoder stays frozen throughout (it is another trained model's): the new layers train for
    `args.head_epochs + args.epochs`, cosine-decayed from 1e-3. Ends with the best validation weights."""
    set_trainable(model, backbone=False)
    _cosine_fit(model, train_ds, n_train, loss, selector, args, 1e-3, args.head_epochs + args.epochs)
    model.set_weights(selector.best_weights)
