"""The base of our Keras models: two fixes that let ``fit`` run under ``MultiWorkerMirroredStrategy``.

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
    """A ``keras.Model`` whose ``fit`` works under every ``tf.distribute`` strategy once it is built."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self.built and (self.optimizer is None or self.optimizer.built):
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
