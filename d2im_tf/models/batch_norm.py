"""Batch normalisation on TensorFlow's fused kernel: Keras' layer, with the same numbers, about twice as fast.

Keras 3's ``BatchNormalization`` normalises with separate TensorFlow ops (moments, subtract, scale,
shift), so a training step makes several passes over every feature map, forward and backward. At
224² the encoder's maps are large (f0 holds B·224²·64 values) and these passes are memory-bound.
TensorFlow's fused kernel (``FusedBatchNormV3`` and its gradient) makes one. What it saves in a whole
training step is small on this CPU (≈ 10% at the authors' setting, within the run-to-run spread);
``tools/benchmark.py train`` times the step with Keras' layer as its same-run baseline.

:class:`BatchNormalization` keeps Keras' layer in every other respect — its weights (γ, β, moving
mean, moving variance, in that order, so checkpoints and SavedModels are unchanged), its
configuration, and its update rule: moving = momentum·moving + (1 − momentum)·batch, with the
*biased* batch variance (the fused kernel reports the unbiased one, which is converted back).
Inputs that are not 4-D channels-last tensors, masks, renormalisation and ``synchronized`` fall
back to Keras' implementation. ``tests/test_batch_norm.py`` checks outputs, moving statistics and
gradients against Keras' layer.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="d2im")
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed with the fused kernel for ``[B, H, W, C]`` inputs."""

    def _fused(self, inputs, mask) -> bool:
        return (
            mask is None
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and not self.renorm
            and not getattr(self, "synchronized", False)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        if inputs.dtype not in (tf.float16, tf.bfloat16, tf.float32):
            inputs = tf.cast(inputs, tf.float32)
        ones = tf.ones_like(self.moving_mean)
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else ones  # [C]
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros_like(ones)  # [C]
        if training and self.trainable:
            outputs, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True
            )[:3]
            count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), tf.float32)  # values per channel
            variance = tf.where(count > 1.0, unbiased_variance * (count - 1.0) / count, 0.0)  # biased, as Keras
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            outputs = tf.compat.v1.nn.fused_batch_norm(
                inputs,
                gamma,
                beta,
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon,
                data_format="NHWC",
                is_training=False,
            )[0]
        return tf.cast(outputs, self.compute_dtype)
