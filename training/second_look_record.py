"""Rule 32 record (validation sides only; the second look was not shipped): the grid's best setting, its best
with the normal gate's second look on, and the shipped setting with it on or off.

    python -m training.second_look_record reports/second_look_validation.json
"""
import json, sys
from pathlib import Path
import numpy as np
from inference.models import load_model
from training.finetune import load_side
from training.train_segmenter import (FULL_GRID, MAX_NORMAL_FP_RATE, choose_postprocessing, classifier_normal_probability,
    closer_look_normal_probability, lesion_probabilities, own_side, worst_normal_fp)
loaded = load_model("models/segmenter")
val = load_side("val", loaded.config["input_size"], 0, loaded.config.get("framing", {}))
own, own_val = own_side(val, loaded.config["training"]["sources"])
probs = lesion_probabilities(loaded, own_val["images"])
p_normal = classifier_normal_probability(Path("models/classifier"))
p_closer = closer_look_normal_probability(Path("models/classifier"), loaded.config, probs, loaded.config["training"]["sources"], FULL_GRID["threshold"])
best, results = choose_postprocessing(probs, own_val, p_normal[own], FULL_GRID, p_closer)
on = [r for r in results if r["normal_gate_second_look"]]
allowed = [r for r in on if worst_normal_fp(r) <= MAX_NORMAL_FP_RATE]
best_on = max(allowed, key=lambda r: r["val_dice"])
shipped = {k: loaded.config[k] for k in ("threshold", "peak_threshold", "min_area_fraction", "largest_only", "normal_gate", "normal_gate_spares")}
same = [r for r in results if all(r[k] == v for k, v in shipped.items())]
lesion = own_val["labels"] > 0
gated = p_normal[own] >= 0.4
record = {"best": best, "best_with_second_look": best_on, "shipped_settings": same,
          "lesion_scans_gated_at_0.4": int((gated & lesion).sum()), "normal_scans_gated_at_0.4": int((gated & ~lesion).sum()),
          "closer_normal_at_0.3_lesions_gated_below_0.4": int(((p_closer[0.3] < 0.4) & gated & lesion).sum()),
          "closer_normal_at_0.3_normals_gated_below_0.4": int(((p_closer[0.3] < 0.4) & gated & ~lesion & (probs.max(axis=(1, 2)) >= 0.3)).sum())}
Path(sys.argv[1]).write_text(json.dumps(record, indent=1, default=float))
print(json.dumps(record, indent=1, default=float))
