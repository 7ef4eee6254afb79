"""Keras callbacks of a training run: NaN guard + step checkpoints, a progress bar, TensorBoard logs.

All step numbers are the optimiser's ``iterations``, restored with the checkpoint, so a resumed run's
checkpoints, progress and TensorBoard curves continue where the killed one stopped.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from d2im_tf.errors import WriteError, writing


def current_step(model) -> int:
    """The optimiser's step counter as a Python int (also for a MirroredVariable under a strategy)."""
    return int(tf.convert_to_tensor(model.optimizer.iterations.value).numpy())


def _finite_logs(logs) -> tuple[dict, list]:
    values = {name: float(np.asarray(value).item()) for name, value in (logs or {}).items()}
    return values, [name for name, value in values.items() if not np.isfinite(value)]


class TrainingStopped(RuntimeError):
    """A run that cannot go on (exit code 1); the message names why and the checkpoint to resume from."""


class GuardedCheckpoint(keras.callbacks.Callback):
    """Save every ``every`` steps and at the end — unless a loss became NaN/Inf, which stops training.

    After a non-finite loss the weights are suspect, so nothing more is saved: the last checkpoint
    written is the last good one. ``diverged`` then holds ``(step, names of the bad losses)``.
    """

    def __init__(self, manager: tf.train.CheckpointManager, every: int):
        super().__init__()
        self.manager = manager
        self.every = max(1, every)
        self.diverged = None
        self.saved_step = None

    def on_train_batch_end(self, batch, logs=None):
        _, bad = _finite_logs(logs)
        step = current_step(self.model)
        if bad:
            self.diverged = (step, bad)
            self.model.stop_training = True
        elif step % self.every == 0:
            self._save(step)

    def on_train_end(self, logs=None):
        step = current_step(self.model)
        if self.diverged is None and self.saved_step != step:
            self._save(step)

    def _save(self, step: int) -> None:
        directory = Path(self.manager.directory)
        try:
            with writing(directory / f"ckpt-{step}", cleanup=lambda: remove_partial_checkpoints(directory)):
                self.manager.save(checkpoint_number=step)
        except WriteError as error:
            self.model.stop_training = True
            last = self.manager.latest_checkpoint or "the start"
            raise TrainingStopped(
                f"{error}; training stopped; resume from {last} with --resume once there is room"
            ) from None
        self.saved_step = step


def remove_partial_checkpoints(directory) -> None:
    """Delete the ``*_temp*`` folders a checkpoint save leaves in ``directory`` when it fails midway."""
    for partial in Path(directory).glob("*_temp*"):
        shutil.rmtree(partial, ignore_errors=True)


class ProgressBar(keras.callbacks.Callback):
    """One tqdm bar over the whole run (``total`` steps), starting at the resumed step."""

    def __init__(self, total: int, description: str = "training"):
        super().__init__()
        self.total = total
        self.description = description
        self.bar = None

    def on_train_begin(self, logs=None):
        if self.bar is None:
            self.bar = tqdm(total=self.total, initial=current_step(self.model), desc=self.description, unit="step")

    def on_train_batch_end(self, batch, logs=None):
        values, _ = _finite_logs(logs)
        self.bar.n = current_step(self.model)
        self.bar.set_postfix({name: f"{value:.4g}" for name, value in values.items()}, refresh=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class ScalarLogger(keras.callbacks.Callback):
    """Every ``every`` steps, each loss as a TensorBoard scalar at the global step."""

    def __init__(self, writer, every: int):
        super().__init__()
        self.writer = writer
        self.every = max(1, every)

    def on_train_batch_end(self, batch, logs=None):
        step = current_step(self.model)
        if step % self.every:
            return
        values, _ = _finite_logs(logs)
        with self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(f"train/{name}", value)
        self.writer.flush()


class ImageLogger(keras.callbacks.Callback):
    """Every ``every`` steps, the images of ``image_fn(model) -> {name: [K, H, W, C] in [0, 1]}``."""

    def __init__(self, writer, every: int, image_fn):
        super().__init__()
        self.writer = writer
        self.every = max(1, every)
        self.image_fn = image_fn

    def on_train_batch_end(self, batch, logs=None):
        step = current_step(self.model)
        if step % self.every:
            return
        with self.writer.as_default(step=step):
            for name, images in self.image_fn(self.model).items():
                tf.summary.image(name, images, max_outputs=4)
        self.writer.flush()
