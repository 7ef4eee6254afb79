"""The fused batch normalisation against Keras' own layer: outputs, moving statistics, gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from d2im_tf.models.batch_norm import BatchNormalization


def _pair(input_shape=(None, 4, 4, 5), **kwargs):
    """Our layer and Keras' with the same (non-trivial) weights, built for 5 channels."""
    ours, theirs = BatchNormalization(**kwargs), keras.layers.BatchNormalization(**kwargs)
    rng = np.random.default_rng(1)
    for layer in (ours, theirs):
        layer.build(input_shape)
    weights = [rng.normal(size=5).astype(np.float32) for _ in ours.weights]
    weights[-1] = np.abs(weights[-1]) + 0.5  # moving variance > 0
    ours.set_weights(weights)
    theirs.set_weights(weights)
    return ours, theirs


@pytest.mark.parametrize("shape", [(3, 7, 6, 5), (1, 1, 1, 5)])
@pytest.mark.parametrize("training", [True, False])
def test_matches_keras(shape, training):
    ours, theirs = _pair(momentum=0.9, epsilon=1e-5)
    initial_mean, initial_variance = ours.get_weights()[2:]
    x = tf.constant(np.random.default_rng(2).normal(2.0, 3.0, size=shape).astype(np.float32))
    weights = tf.constant(np.sin(np.arange(np.prod(shape))).reshape(shape).astype(np.float32))
    results = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=training) * weights)
        gradients = tape.gradient(loss, [x] + layer.trainable_weights)
        results.append((layer(x, training=False).numpy(), [g.numpy() for g in gradients], layer.get_weights()[2:]))
    (y_ours, g_ours, m_ours), (y_theirs, g_theirs, m_theirs) = results
    np.testing.assert_allclose(y_ours, y_theirs, atol=2e-5)
    for a, b in zip(g_ours, g_theirs):
        np.testing.assert_allclose(a, b, atol=5e-5, rtol=1e-4)
    for a, b in zip(m_ours, m_theirs):  # moving mean and moving variance
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    values = x.numpy().reshape(-1, 5)
    if training:  # the update rule against NumPy (np.var is the biased variance, as Keras uses)
        np.testing.assert_allclose(m_ours[0], 0.9 * initial_mean + 0.1 * values.mean(axis=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m_ours[1], 0.9 * initial_variance + 0.1 * values.var(axis=0), rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(m_ours[1], initial_variance)


def test_frozen_layer_runs_in_inference_mode_and_config_round_trips():
    ours, theirs = _pair()
    ours.trainable = theirs.trainable = False
    x = tf.constant(np.random.default_rng(3).normal(size=(2, 3, 3, 5)).astype(np.float32))
    np.testing.assert_allclose(ours(x, training=True), theirs(x, training=True), atol=2e-5)
    clone = BatchNormalization.from_config(ours.get_config())
    assert clone.get_config() == ours.get_config()
    assert type(keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ours))) is BatchNormalization


def test_other_ranks_fall_back_to_keras():
    ours, theirs = _pair((None, 5))
    x = tf.constant(np.random.default_rng(4).normal(size=(6, 5)).astype(np.float32))
    np.testing.assert_allclose(ours(x, training=True), theirs(x, training=True), atol=1e-6)
