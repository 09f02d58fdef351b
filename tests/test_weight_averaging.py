"""Stochastic weight averaging in the epoch selector (training.finetune.SelectOnValidation)."""

import keras
import numpy as np

from training.finetune import SelectOnValidation


class OwnWeights(keras.callbacks.Callback):
    """Records the weights training itself reached at the end of each epoch."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(self.model.get_weights())


def _fit(average_from: int, scores):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32)
    scored = []  # the weights each evaluation saw

    def evaluate():
        scored.append(model.get_weights())
        return scores[len(scored) - 1], {}

    own, selector = OwnWeights(), SelectOnValidation(evaluate, average_from)
    model.fit(x, y, epochs=len(scores), batch_size=8, callbacks=[own, selector], verbose=0)
    return model, own.seen, scored, selector


def test_from_the_chosen_epoch_on_the_mean_of_the_epochs_weights_is_scored_and_kept():
    model, own, scored, selector = _fit(average_from=3, scores=[0.1, 0.2, 0.3, 0.4, 0.5])
    for epoch in range(5):
        first = 2 if epoch >= 2 else epoch  # epochs 1-2: their own weights; 3 on: the mean since epoch 3
        expected = [np.mean([own[e][k] for e in range(first, epoch + 1)], axis=0) for k in range(len(own[0]))]
        for got, want in zip(scored[epoch], expected):
            np.testing.assert_allclose(got, want, rtol=1e-6)
    assert [h["epochs_averaged"] for h in selector.history] == [1, 1, 1, 2, 3]
    assert selector.best_epoch == 5
    for got, want in zip(selector.best_weights, scored[4]):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    # training went on from each epoch's own weights, not from the mean
    for got, want in zip(model.get_weights(), own[-1]):
        np.testing.assert_array_equal(got, want)
    assert not np.allclose(own[-1][0], scored[4][0])


def test_without_averaging_the_best_epochs_own_weights_are_kept():
    _, own, scored, selector = _fit(average_from=0, scores=[0.1, 0.9, 0.3])
    assert selector.best_epoch == 2 and all(h["epochs_averaged"] == 1 for h in selector.history)
    for got, want in zip(selector.best_weights, own[1]):
        np.testing.assert_array_equal(got, want)

