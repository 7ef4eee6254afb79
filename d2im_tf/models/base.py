"""The base of our Keras models: one training and test step for both networks, and two fixes that let
``fit`` run under ``MultiWorkerMirroredStrategy``.

Keras's pattern for a custom model: the base class owns ``train_step`` / ``test_step``, and each model
supplies its forward pass on a batch (:meth:`DistributableModel.forward`) and its loss terms
(:meth:`DistributableModel.compute_losses`, a dict whose ``"loss"`` is minimised). Every term is
tracked by a ``keras.metrics.Mean`` of the same name (:attr:`DistributableModel.LOSS_NAMES`), which is
what ``fit`` logs.

Keras 3's TF trainer (3.15) has two problems with multi-worker training (tensorflow#72388):

1. Before the first step it averages the first batch over replicas with ``strategy.reduce`` to trace a
   symbolic build; the multi-worker strategy cannot reduce a nested (dict) batch. Our models create
   their variables and optimiser slots before training (``d2im_tf.training``) and keep their metrics
   as ``keras.metrics.Mean`` trackers made in ``__init__``, so there is nothing to build:
   :meth:`_maybe_symbolic_build` skips the step once the model and optimiser are built.
2. It reduces the logs of ``train_step`` with ``strategy.reduce("MEAN", value, axis=0)``, which fails
   on scalars. :func:`reducible_logs` gives each log the shape ``[1]``; callbacks read them as floats.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def reducible_logs(logs: dict) -> dict:
    """Scalar logs → shape ``[1]``, so every ``tf.distribute`` strategy can average them over axis 0."""
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


class DistributableModel(keras.Model):
    """A ``keras.Model`` whose ``fit`` works under every ``tf.distribute`` strategy once it is built.

    Subclasses set :attr:`LOSS_NAMES` and implement :meth:`forward` and :meth:`compute_losses`.
    """

    LOSS_NAMES: tuple[str, ...] = ("loss",)  # the keys of compute_losses; "loss" is the total

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.trackers = [keras.metrics.Mean(name=name) for name in self.LOSS_NAMES]

    def forward(self, batch: dict, training: bool):
        """The outputs :meth:`compute_losses` reads, for a batch of the model's contract."""
        raise NotImplementedError

    def compute_losses(self, batch: dict, outputs) -> dict:
        """The loss terms ``{name: scalar}`` over :attr:`LOSS_NAMES`; ``"loss"`` is minimised."""
        raise NotImplementedError

    @property
    def metrics(self):
        return list(self.trackers)

    def _update_trackers(self, losses: dict) -> dict:
        for tracker in self.trackers:
            tracker.update_state(losses[tracker.name])
        return reducible_logs({tracker.name: tracker.result() for tracker in self.trackers})

    def train_step(self, data):
        batch, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            losses = self.compute_losses(batch, self.forward(batch, training=True))
            # Gradients are summed over replicas, so each replica contributes its share of the mean.
            scaled = losses["loss"] / tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(scaled)
        gradients = tape.gradient(scaled, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        return self._update_trackers(losses)

    def test_step(self, data):
        batch, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self._update_trackers(self.compute_losses(batch, self.forward(batch, training=False)))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self.built and (self.optimizer is None or self.optimizer.built):
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
