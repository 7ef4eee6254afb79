"""An exponential moving average of a network's weights over the training steps (``train.ema_decay``).

After every step each weight ``w`` of ``model.weights`` (batch-norm statistics included) moves its
average ``a`` by ``a ← d·a + (1 − d)·w``. The average starts at the network's weights when the run
starts. A run from scratch (random weights, or an ImageNet encoder) warms the decay up,
``d = min(train.ema_decay, (1 + t)/(10 + t))`` at the optimiser's step ``t`` (as
``tf.train.ExponentialMovingAverage`` with ``num_updates``), so the average soon forgets the random
start; a run from trained weights (``train.init_from``) uses ``train.ema_decay`` from its first step.

The averages are saved with every checkpoint (entry ``average``, one per weight in the order of
``model.weights``), so a resumed run continues them. Whatever uses a finished run's weights — export,
``train.init_from`` from a run folder, evaluation — takes the averages (:func:`restore_average`): the
averaged network is the run's result. The checkpoint's ``weights`` stay the raw ones the optimiser
continues from.
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

CHECKPOINT_KEY = "average"
WARMUP_OFFSET = 10.0  # d ≤ (1 + t)/(10 + t)


def step_decay(decay: float, step, warm_up: bool = True) -> tf.Tensor:
    """The decay used after optimiser step ``step`` (≥ 1): ``min(decay, (1 + step)/(10 + step))``, or
    ``decay`` without the warm-up."""
    if not warm_up:
        return tf.constant(decay, tf.float32)
    step = tf.cast(step, tf.float32)
    return tf.minimum(tf.constant(decay, tf.float32), (1.0 + step) / (WARMUP_OFFSET + step))


class WeightAverage(keras.callbacks.Callback):
    """The running average of ``model.weights`` with decay ``decay`` in (0, 1), warmed up or not
    (module docstring).

    Build it after the model's weights are set and before a checkpoint is restored into
    :attr:`variables` (in the distribution strategy's scope, like the model).
    """

    def __init__(self, model: keras.Model, decay: float, warm_up: bool = True):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.warm_up = warm_up
        self._weights = list(model.weights)
        self.variables = [
            tf.Variable(weight.value, trainable=False, name=f"average_{i}") for i, weight in enumerate(self._weights)
        ]

    @tf.function
    def _update(self, step):
        decay = step_decay(self.decay, step, self.warm_up)
        for average, weight in zip(self.variables, self._weights):
            average.assign(decay * average + (1.0 - decay) * tf.cast(weight.value, average.dtype))

    def on_train_batch_end(self, batch, logs=None):
        self._update(self.model.optimizer.iterations.value)

    def apply_to_model(self) -> None:
        """Set the network's weights to the averages (at the end of a run, before export)."""
        for weight, average in zip(self._weights, self.variables):
            weight.assign(average)

    @contextlib.contextmanager
    def applied(self):
        """The network holds the averages inside the ``with`` block and its own weights again after it
        (to measure the averaged network in the middle of a run)."""
        raw = [weight.numpy() for weight in self._weights]
        self.apply_to_model()
        try:
            yield
        finally:
            for weight, value in zip(self._weights, raw):
                weight.assign(value)


def has_average(path: str) -> bool:
    """Whether the checkpoint at ``path`` holds weight averages."""
    return any(name.startswith(f"{CHECKPOINT_KEY}/") for name, _ in tf.train.list_variables(path))


def restore_average(model: keras.Model, path: str) -> bool:
    """Set ``model``'s weights to the averages saved in the checkpoint ``path``, if it holds them
    (a run with ``train.ema_decay`` > 0); returns whether it did."""
    if not has_average(path):
        return False
    tf.train.Checkpoint(**{CHECKPOINT_KEY: list(model.weights)}).restore(path).expect_partial()
    return True
