"""Comparing epoch-choice criteria on split validation halves: the halves keep duplicate groups and
patients whole, the vectorised score is the trainer's own, and each criterion is scored on the half
it did not choose on."""

from pathlib import Path

import numpy as np

from inference.models import load_model
from training.busi import TRAINING_SOURCES
from training.epoch_choice import (CAPS, SettingTable, capped_scores, compare, random_halves, running_mean,
                                   validation_groups)
from training.finetune import load_side
from training.split import samples_by_side
from training.train_segmenter import (MAX_NORMAL_FP_RATE, choose_postprocessing, classifier_normal_probability,
                                      lesion_probabilities, worst_normal_fp)


def trainer_score(probs, val, p_normal) -> float:
    """The epoch score `train_segmenter` records: best capped Dice, less the worst share when over the cap."""
    best, _ = choose_postprocessing(probs, val, p_normal)
    worst = worst_normal_fp(best)
    return best["val_dice"] - (worst if worst > MAX_NORMAL_FP_RATE else 0.0)


def test_halves_keep_groups_whole_and_every_source_and_class_on_both_sides():
    samples = [s for source in TRAINING_SOURCES for s in samples_by_side(source)["val"]]
    val = {"labels": np.array([s.label_index for s in samples]),
           "source": np.concatenate([np.full(len(samples_by_side(source)["val"]), i) for i, source in enumerate(TRAINING_SOURCES)])}
    groups = validation_groups()
    assert len(groups) == len(samples) and len(set(groups)) < len(groups)
    halves = random_halves(val, groups, 20)
    assert (halves[0::2] ^ halves[1::2]).all(), "the two halves of a split are complementary"
    for half in halves:
        assert not set(groups[half]) & set(groups[~half]), "no group or patient on both sides"
        for source in range(len(TRAINING_SOURCES)):
            for label in np.unique(val["labels"][val["source"] == source]):
                assert (half & (val["source"] == source) & (val["labels"] == label)).any()
    assert len({h.tobytes() for h in halves[0::2]}) > 15, "splits differ"


def test_vectorised_scores_are_the_trainers_on_any_subset_of_real_scans():
    loaded = load_model("models/segmenter")
    val = load_side("val", loaded.config["input_size"], 10, loaded.config["framing"])
    probs = lesion_probabilities(loaded, val["images"])
    p_normal = classifier_normal_probability(Path("models/classifier"), 10)
    rng = np.random.default_rng(0)
    subsets = np.vstack([np.ones(len(probs), bool), rng.random((3, len(probs))) < 0.6])
    strata = val["source"] * 2 + (val["labels"] > 0)
    subsets[:, np.unique(strata, return_index=True)[1]] = True  # lesion and normal scans of each source in each
    scores = capped_scores(SettingTable.of(probs, val, p_normal), val, subsets)
    assert scores.shape == (len(CAPS), len(subsets))
    for subset, score in zip(subsets, scores[CAPS.index(MAX_NORMAL_FP_RATE)]):
        part = {key: value[subset] for key, value in val.items()}
        assert np.isclose(score, trainer_score(probs[subset], part, p_normal[subset]))
    assert (np.diff(scores, axis=0) >= -1e-12).all(), "a looser cap never scores lower"
    ungated = capped_scores(SettingTable.of(probs, val, None), val, subsets[:1])  # a run without a classifier
    assert np.isclose(ungated[CAPS.index(MAX_NORMAL_FP_RATE), 0], trainer_score(probs, val, None))


def test_running_mean_averages_each_epoch_with_its_neighbours():
    assert np.allclose(running_mean(np.array([[3.0, 0.0, 3.0, 6.0]])), [[1.5, 2.0, 3.0, 4.5]])


def test_each_criterion_is_scored_on_the_half_it_did_not_choose_on():
    # one split (halves 0 and 1) and the whole side; 6 epochs. Half 0 sees a lone spike at epoch 2,
    # half 1 a plateau from epoch 4
    at_cap = np.array([[0.25, 0.875, 0.25, 0.625, 0.625, 0.625], [0.5, 0.5, 0.5, 0.75, 0.75, 0.75], [0.5] * 6])
    scores = np.repeat(at_cap[None], len(CAPS), axis=0)
    results = compare(scores)
    assert list(results["best_capped"]["epoch"]) == [2, 4]
    assert np.allclose(results["best_capped"]["held_out"], [0.5, 0.625])  # epoch 2 on half 1, epoch 4 on half 0
    assert list(results["running_mean"]["epoch"]) == [5, 5]  # half 0: the plateau's 0.625 beats the spike's 0.458
    assert np.allclose(results["running_mean"]["held_out"], [0.75, 0.625])
    assert list(results["last"]["epoch"]) == [6, 6]
