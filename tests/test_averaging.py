"""The running weight average of ``train.ema_decay``: its arithmetic, its checkpoints, resume, use."""

import keras
import numpy as np
import tensorflow as tf

from d2im_tf.training.averaging import WeightAverage, has_average, restore_average
from d2im_tf.training.loop import RunSchedule, run_training

DECAY = 0.8
STEPS = 12
INPUTS = np.random.default_rng(0).normal(size=(STEPS * 2, 3)).astype(np.float32)
TARGETS = (INPUTS @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3).astype(np.float32)


def _dataset(start):  # batches of 2, from element `start`, as run_training asks for them
    return tf.data.Dataset.from_tensor_slices((INPUTS, TARGETS)).skip(start).batch(2)


def _model():
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="tanh"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


class _Recorder(keras.callbacks.Callback):
    """The raw weights after every step (an independent record for the recursion)."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append([w.numpy().copy() for w in self.model.weights])


def _expected_average(initial, steps, decay=DECAY, warm_up=True):
    average = [w.copy() for w in initial]
    for t, weights in enumerate(steps, start=1):
        d = min(decay, (1.0 + t) / (10.0 + t)) if warm_up else decay
        average = [d * a + (1 - d) * w for a, w in zip(average, weights)]
    return average


def test_average_follows_the_recursion_with_its_warm_up():
    model = _model()
    initial = [w.numpy().copy() for w in model.weights]
    average, recorder = WeightAverage(model, DECAY), _Recorder()
    model.fit(_dataset(0), epochs=1, callbacks=[recorder, average], verbose=0, shuffle=False)
    assert len(recorder.steps) == STEPS
    expected = _expected_average(initial, recorder.steps)
    for got, want in zip(average.variables, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(expected[0], recorder.steps[-1][0], atol=1e-4)  # the average is not the last step


def test_average_without_warm_up_uses_the_decay_from_the_first_step():
    model = _model()
    initial = [w.numpy().copy() for w in model.weights]
    average, recorder = WeightAverage(model, DECAY, warm_up=False), _Recorder()
    model.fit(_dataset(0), epochs=1, callbacks=[recorder, average], verbose=0, shuffle=False)
    expected = _expected_average(initial, recorder.steps, warm_up=False)
    for got, want in zip(average.variables, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    warmed = _expected_average(initial, recorder.steps)  # the warm-up would give another average
    assert not np.allclose(warmed[0], expected[0], atol=1e-4)


def test_run_saves_the_average_ends_with_it_and_resumes_it(tmp_path):
    """A run of 12 steps, and one stopped after 6 and resumed, end with the same average (saved in
    every checkpoint); the model ends with the averaged weights, and restoring the run gives them."""
    schedule = RunSchedule(global_batch=2, steps_per_epoch=6, epochs=2, checkpoint_every=3)
    whole = _model()
    initial = [w.numpy().copy() for w in whole.weights]
    recorder = _Recorder()
    average = WeightAverage(whole, DECAY)
    run_training(
        whole,
        _dataset,
        schedule,
        tmp_path / "whole",
        progress=False,
        average=average,
        extra_callbacks=lambda writer: [recorder],
    )
    expected = _expected_average(initial, recorder.steps)
    for weight, want in zip(whole.weights, expected):  # the run's result is the average
        np.testing.assert_allclose(weight.numpy(), want, rtol=1e-5, atol=1e-6)

    halves = _model()
    first = RunSchedule(global_batch=2, steps_per_epoch=6, epochs=1, checkpoint_every=3)
    run_training(halves, _dataset, first, tmp_path / "halves", progress=False, average=WeightAverage(halves, DECAY))
    resumed = _model()  # a new process: fresh weights, restored from the checkpoint of step 6
    run_training(
        resumed,
        _dataset,
        schedule,
        tmp_path / "halves",
        resume=True,
        progress=False,
        average=WeightAverage(resumed, DECAY),
    )
    for got, want in zip(resumed.weights, whole.weights):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)

    latest = tf.train.latest_checkpoint(str(tmp_path / "whole" / "checkpoints"))
    assert has_average(latest)
    fresh = _model()
    assert restore_average(fresh, latest)
    for got, want in zip(fresh.weights, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_a_run_without_average_saves_none(tmp_path):
    model = _model()
    run_training(model, _dataset, RunSchedule(2, 6, 1, 3), tmp_path, progress=False)
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert not has_average(latest)
    before = [w.numpy().copy() for w in model.weights]
    assert not restore_average(model, latest)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))


def test_applied_holds_the_averages_inside_and_the_raw_weights_after():
    """``applied()`` swaps the averages in for the ``with`` block and the trained weights back after it,
    also when the block raises; training goes on from the raw weights."""
    model = _model()
    average = WeightAverage(model, DECAY)
    model.fit(_dataset(0), epochs=1, steps_per_epoch=STEPS // 2, verbose=0, callbacks=[average])
    raw = [w.numpy().copy() for w in model.weights]
    averages = [a.numpy().copy() for a in average.variables]
    assert any(not np.allclose(r, a) for r, a in zip(raw, averages))  # the swap is visible
    with average.applied():
        for weight, expected in zip(model.weights, averages):
            np.testing.assert_array_equal(weight.numpy(), expected)
        prediction = model(INPUTS[:4], training=False).numpy()
    for weight, expected in zip(model.weights, raw):
        np.testing.assert_array_equal(weight.numpy(), expected)
    try:
        with average.applied():
            raise RuntimeError("inside")
    except RuntimeError:
        pass
    for weight, expected in zip(model.weights, raw):
        np.testing.assert_array_equal(weight.numpy(), expected)
    # Inside the block the network computes with the averages: a copy set to them agrees.
    copy = _model()
    for weight, value in zip(copy.weights, averages):
        weight.assign(value)
    np.testing.assert_allclose(copy(INPUTS[:4], training=False).numpy(), prediction, rtol=1e-6)
