"""Average the weights of classifiers fine-tuned from the same ImageNet start (a "model soup",
Wortsman et al., 2022): the result is one model of the same architecture, so serving, Grad-CAM and
speed are unchanged, unlike an ensemble that runs every member.

Runs of one recipe with different seeds end in different places of the same basin; their mean is
meant to keep what they agree on and average out what each run learned by chance, which is what
flips the normal verdict on an unseen scanner from one run (or epoch) to the next
(reports/cross_source_classifiers.json). Whether it does is measured on the validation sides, like
every other choice: `python -m training.candidates` for the pooled sides, single-source soups for
cross-source validation.

    python -m training.soup runs/seed_a runs/seed_b [...] --out runs/soup

The soup's temperature is re-fitted on the pooled validation sides; its config records the members
and, as a one-entry history, every validation source's numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from inference.models import load_model
from training.architectures import build_classifier
from training.busi import TRAINING_SOURCES
from training.finetune import load_side, predict_in_batches, save_model
from training.metrics import calibrated, expected_calibration_error, fit_temperature
from training.train_classifier import validation_metrics

# What members must share to be averaged: same architecture input, same data, same framing.
SHARED = ("task", "classes", "input_size", "framing", "logits_layer", "gradcam_layer", "training_splits")


def mean_weights(models: list[keras.Model]) -> list[np.ndarray]:
    """The element-wise mean of the models' weights, variable by variable."""
    return [np.mean(variables, axis=0) for variables in zip(*(m.get_weights() for m in models))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("members", nargs="+", type=Path, help="classifier folders trained by the same recipe")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if len(args.members) < 2:
        parser.error("a soup needs at least two members")
    members = [load_model(str(folder)) for folder in args.members]
    first = members[0].config
    for member in members[1:]:
        different = [key for key in SHARED if member.config.get(key) != first.get(key)]
        if different or member.config["training"]["sources"] != first["training"]["sources"]:
            parser.error(f"{member.folder} differs from {args.members[0]} in {', '.join(different) or 'sources'}")

    model = build_classifier(first["input_size"])
    model.set_weights(mean_weights([m.model for m in members]))
    val = load_side("val", first["input_size"], 0, first.get("framing", {}), TRAINING_SOURCES)
    logits_model = keras.Model(model.input, model.get_layer(first["logits_layer"]).output)
    logits = predict_in_batches(tf.function(lambda x: logits_model(x, training=False)), val["images"])
    sources = first["training"]["sources"]
    score, metrics = validation_metrics(logits, val, sources)
    temperature = fit_temperature(logits, val["labels"])
    print(f"soup of {len(members)}: val score {score:.3f}; "
          + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if v is not None), flush=True)
    save_model(lambda: build_classifier(first["input_size"]), model, args.out, {
        **{key: first[key] for key in first if key != "training"},
        "temperature": temperature,
        "training": {"soup_of": [str(folder) for folder in args.members], "sources": sources,
                     "seed": [m.config["training"].get("seed") for m in members],
                     "minutes": round(sum(m.config["training"].get("minutes", 0) for m in members), 1),
                     "val_ece_before": expected_calibration_error(calibrated(logits, 1.0), val["labels"]),
                     "val_ece_after": expected_calibration_error(calibrated(logits, temperature), val["labels"]),
                     "best_epoch": 1, "history": [{"epoch": 1, "val_score": score, "epochs_averaged": 1, **metrics}]},
    })


if __name__ == "__main__":
    main()
