"""The resumable training loop shared by the SDF and the camera network.

A run lives in one output folder::

    OUT/checkpoints/   tf.train checkpoints (model, optimiser and its step, the weight averages of
                       ``train.ema_decay``), every N steps
    OUT/logs/          TensorBoard event files
    OUT/previews/      PNG previews (SDF network)

Training is a sequence of one-epoch ``fit`` calls, each fed from the data stream's element
``step · global_batch``, so after a restore the step counter, the optimiser state and the data
position all continue where the last checkpoint left them. Checkpoints are written by
``tf.train.CheckpointManager``, which records a checkpoint in its index only once it is complete, so
a process killed mid-save leaves the previous checkpoint usable.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import tensorflow as tf
import yaml

from d2im_tf.config import Config, load_config
from d2im_tf.errors import UserError, WriteError
from d2im_tf.io import atomic_path, check_output_dir, check_unlocked, folder_lock
from d2im_tf.training.averaging import CHECKPOINT_KEY as AVERAGE_KEY
from d2im_tf.training.averaging import WeightAverage, restore_average
from d2im_tf.training.callbacks import GuardedCheckpoint, ProgressBar, ScalarLogger, TrainingStopped, current_step
from d2im_tf.training.distribute import is_chief, worker_id


class TrainingDiverged(TrainingStopped):
    """A loss became NaN or Inf; the message names the step and the last good checkpoint."""


@dataclass
class RunSchedule:
    """How long a run is and how often it saves and logs."""

    global_batch: int
    steps_per_epoch: int
    epochs: int
    checkpoint_every: int
    log_every: int = 10

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


def schedule_for(config: Config, num_shapes: int, batch: int, epochs: int) -> RunSchedule:
    """The schedule of a run over ``num_shapes`` training shapes: ``train.steps_per_epoch`` steps an
    epoch, or one pass over the shapes when that is 0."""
    return RunSchedule(
        global_batch=batch,
        steps_per_epoch=config.train.steps_per_epoch or max(1, num_shapes // batch),
        epochs=epochs,
        checkpoint_every=config.train.checkpoint_every,
        log_every=config.train.log_every,
    )


def checkpoint_dir(out_dir: Path) -> Path:
    """Where this process writes checkpoints: the real folder on the chief, a scratch one elsewhere.

    Under MultiWorkerMirroredStrategy every worker must take part in saving; only the chief's copy
    is kept.
    """
    out_dir = Path(out_dir)
    return out_dir / "checkpoints" if is_chief() else out_dir / "scratch" / worker_id()


def save_run_config(config: Config, out_dir) -> None:
    """Record the resolved config as ``OUT/config.yaml`` (chief only), for export and evaluation."""
    if is_chief():
        with atomic_path(Path(out_dir) / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def load_run_config(run_dir, overrides=()) -> Config:
    """The config a run was trained with, then ``overrides`` (``section.key=value``, e.g. to read its
    data from elsewhere)."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise UserError(f"{path}: not found; is {run_dir} a training run folder?")
    return load_config(path, overrides, skip_removed=True)  # a run recorded before a key was removed still loads


# The config keys that shape each network's weights (and, for mixed precision, its optimiser's
# variables; for the weight average, its checkpoint's): a resumed run must keep them.
NETWORK_KEYS = {
    "sdf": (
        "model.variant",
        "model.image_size",
        "model.encoder_width",
        "model.global_dim",
        "model.decoder_widths",
        "model.detail_channels",
        "train.precision",
        "train.ema_decay",
    ),
    "camera": ("camera.backbone", "camera.translation", "camera.image_size", "camera.width", "train.precision"),
}


def _earlier_run(checkpoints: Path) -> UserError:
    return UserError(
        f"{checkpoints}: holds checkpoints of an earlier run; pass --resume to continue it "
        "or choose another output folder"
    )


def has_checkpoint(out_dir) -> bool:
    """Whether the run folder ``out_dir`` holds a checkpoint (an earlier run, to resume)."""
    return tf.train.latest_checkpoint(str(Path(out_dir) / "checkpoints")) is not None


def check_run_folder(config: Config, out_dir, network: str, resume: bool) -> None:
    """Refuse, before anything is written, a run that would damage an earlier one.

    ``out_dir`` must be a usable folder; if it holds checkpoints, ``resume`` is required, and then the
    config's ``network`` (``"sdf"`` or ``"camera"``) must be the one the run was trained with.
    """
    out_dir = check_output_dir(out_dir, "run folder")
    check_unlocked(out_dir, "run folder")  # early; run_training takes the lock
    if not has_checkpoint(out_dir):
        return
    if not resume:
        raise _earlier_run(out_dir / "checkpoints")
    earlier = load_run_config(out_dir)
    for key in NETWORK_KEYS[network]:
        if earlier.get(key) != config.get(key):
            raise UserError(
                f"{out_dir / 'config.yaml'}: the run was trained with {key}={earlier.get(key)}, the "
                f"config now says {config.get(key)}; --resume needs the same value"
            )


def prepare_run(config: Config, network: str, resume: bool, splits=("train",), progress: bool = False) -> None:
    """Everything a run checks before its first write: the run folder (:func:`check_run_folder`) and
    the shapes of ``splits`` it will read (:func:`d2im_tf.data.check.validate_for_training`)."""
    from d2im_tf.data.check import validate_for_training

    out_dir = config.train.out_dir if network == "sdf" else config.camera.out_dir
    check_run_folder(config, out_dir, network, resume)
    validate_for_training(config, network, splits, progress)


def _restore(model: keras.Model, checkpoint: tf.train.Checkpoint, path: str, partial: bool) -> None:
    """Restore ``path`` into ``checkpoint`` (of ``model``); a :class:`UserError` naming it if it is
    damaged or holds another network (compared weight by weight first, so nothing is half-restored)."""
    try:
        saved = {name: shape for name, shape in tf.train.list_variables(path) if name.startswith("weights/")}
        expected = {f"weights/{i}/.ATTRIBUTES/VARIABLE_VALUE": list(w.shape) for i, w in enumerate(model.weights)}
        if saved != expected:
            raise UserError(
                f"{path}: its {len(saved)} weights do not match the {len(expected)} of the network in "
                f"{Path(path).parents[1] / 'config.yaml'} (a checkpoint of the other network, SDF or "
                "camera, or of another config?)"
            )
        status = checkpoint.restore(path)
        if partial:
            status.expect_partial()  # the optimiser's slots are not needed
        status.assert_existing_objects_matched()
    except (tf.errors.OpError, IndexError, OSError, ValueError, AssertionError) as error:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise UserError(f"{path}: damaged or incomplete checkpoint ({reason})") from None


def training_checkpoint(
    model: keras.Model, with_optimizer: bool = True, average: WeightAverage | None = None
) -> tf.train.Checkpoint:
    """The checkpoint of a model: every weight of ``model.weights``, the optimiser's variables, and the
    weights' running averages if the run keeps them (:mod:`d2im_tf.training.averaging`).

    The weights are listed explicitly, by position, rather than through the model's object graph:
    TF's checkpoint graph does not see layers a Keras model keeps in Python lists (our ResNet stages
    and decoder MLPs), so their BatchNorm statistics would be lost and a weights-only restore would
    miss them. ``model.weights`` has a fixed order for a given architecture.
    """
    entries = {"weights": list(model.weights)}
    if with_optimizer:
        entries["optimizer"] = list(model.optimizer.variables)
    if average is not None:
        entries[AVERAGE_KEY] = average.variables
    return tf.train.Checkpoint(**entries)


def require_checkpoint(run_dir) -> str:
    """The latest checkpoint of a finished or interrupted run (its config must load too)."""
    load_run_config(run_dir)
    latest = tf.train.latest_checkpoint(str(Path(run_dir) / "checkpoints"))
    if latest is None:
        raise UserError(f"{Path(run_dir) / 'checkpoints'}: no checkpoint found")
    return latest


def restore_weights(model: keras.Model, run_dir) -> str:
    """Load the model's weights (not the optimiser) from a run's latest checkpoint — the averaged ones if
    the run kept an average (``train.ema_decay``); returns its path."""
    latest = require_checkpoint(run_dir)
    _restore(model, training_checkpoint(model, with_optimizer=False), latest, partial=True)
    restore_average(model, latest)
    return latest


def restore_latest(
    model: keras.Model, out_dir: Path, resume: bool, average: WeightAverage | None = None
) -> tf.train.CheckpointManager:
    """Make the checkpoint manager of a run and, with ``resume``, restore its latest checkpoint (with
    the weights' running ``average`` if the run keeps one).

    The model and its optimiser must already be built. A folder that already holds checkpoints is an
    error without ``resume``, so an earlier run is never silently overwritten.
    """
    checkpoint = training_checkpoint(model, average=average)
    kept = Path(out_dir) / "checkpoints"  # every worker restores the chief's checkpoint
    latest = tf.train.latest_checkpoint(str(kept))
    if latest:
        if not resume:
            raise _earlier_run(kept)
        _restore(model, checkpoint, latest, partial=False)
    return tf.train.CheckpointManager(checkpoint, str(checkpoint_dir(out_dir)), max_to_keep=3)


def run_training(
    model: keras.Model,
    make_dataset: Callable[[int], tf.data.Dataset],
    schedule: RunSchedule,
    out_dir: Path,
    resume: bool = False,
    extra_callbacks: Callable[[tf.summary.SummaryWriter | None], list] = lambda writer: [],
    description: str = "training",
    progress: bool = True,
    config: Config | None = None,
    average: WeightAverage | None = None,
) -> int:
    """Train ``model`` (built and compiled) to ``schedule.total_steps``; returns the final step.

    ``make_dataset(start)`` gives the batched stream from element ``start``. ``config`` is recorded as
    ``OUT/config.yaml`` once the checkpoint (if resuming) has been restored, so a refused run leaves
    the earlier one as it was. Raises :class:`TrainingDiverged` on a NaN/Inf loss, after which the
    newest checkpoint is the last good one. With a weight ``average`` (:mod:`d2im_tf.training.averaging`),
    it is updated after every step and saved with the checkpoints, and the model ends with the averaged
    weights. The chief holds the run folder's lock (:func:`~d2im_tf.data.disn_format.folder_lock`) meanwhile:
    a second process training into it is refused, naming the first one's PID.
    """
    out_dir = Path(out_dir)
    with folder_lock(out_dir, "run folder") if is_chief() else contextlib.nullcontext():
        return _train_in(
            model, make_dataset, schedule, out_dir, resume, extra_callbacks, description, progress, config, average
        )


def _train_in(
    model,
    make_dataset,
    schedule: RunSchedule,
    out_dir: Path,
    resume: bool,
    extra_callbacks,
    description: str,
    progress: bool,
    config: Config | None,
    average: WeightAverage | None,
) -> int:
    """:func:`run_training`'s loop, in a run folder it holds."""
    manager = restore_latest(model, out_dir, resume, average)
    if config is not None:
        save_run_config(config, out_dir)
    guard = GuardedCheckpoint(manager, schedule.checkpoint_every)
    callbacks: list = [guard] if average is None else [average, guard]  # the average first: it is saved
    writer = None
    bar = None
    if is_chief():
        writer = tf.summary.create_file_writer(str(out_dir / "logs"))
        callbacks.append(ScalarLogger(writer, schedule.log_every))
        if progress:
            bar = ProgressBar(schedule.total_steps, description)
            callbacks.append(bar)
    callbacks.extend(extra_callbacks(writer))
    step = current_step(model)
    try:
        while step < schedule.total_steps:
            epoch = step // schedule.steps_per_epoch
            model.fit(
                make_dataset(step * schedule.global_batch),
                initial_epoch=epoch,
                epochs=epoch + 1,
                steps_per_epoch=schedule.steps_per_epoch - step % schedule.steps_per_epoch,
                callbacks=callbacks,
                shuffle=False,  # the stream is already shuffled, deterministically
                verbose=0,
            )
            if guard.diverged is not None:
                bad_step, names = guard.diverged
                raise TrainingDiverged(
                    f"{', '.join(names)} became NaN/Inf at step {bad_step}; training stopped; "
                    f"last good checkpoint: {manager.latest_checkpoint or 'none'}"
                )
            step = current_step(model)
        if average is not None:
            average.apply_to_model()
    except WriteError as error:  # a preview, a log: the disk is full; the last checkpoint is intact
        raise TrainingStopped(
            f"{error}; training stopped; resume from {manager.latest_checkpoint or 'the start'} "
            "with --resume once there is room"
        ) from None
    finally:
        if bar is not None:
            bar.close()
        if not is_chief():
            shutil.rmtree(checkpoint_dir(out_dir), ignore_errors=True)
    return step
