"""One training run of either network: the SDF network (D²IM-Net) or the camera network.

:func:`train` is the whole run — checks, data, model, the resumable loop of :mod:`d2im_tf.training.loop`
— for ``network`` ``"sdf"`` or ``"camera"``; :func:`build_model` and :func:`load_model` give a network
with its variables created (to train, or to restore a run's weights for export). What differs between
the two networks is which config keys they read, gathered in :class:`RunSettings`:

========================= ============================== ===================================
                          ``"sdf"``                      ``"camera"``
========================= ============================== ===================================
run folder                ``train.out_dir``              ``camera.out_dir``
batch, epochs             ``train.batch_size``, ``…``    ``camera.batch_size``, ``…epochs``
optimiser                 Adam, ``train.learning_rate``  Adam, ``camera.learning_rate``
                          (schedule, ``beta_1``,         (constant)
                          ``weight_decay``)
ImageNet start            ``model.encoder_weights``      ``camera.backbone_weights``
trained start             ``train.init_from``            ``camera.init_from``
========================= ============================== ===================================

Both read the run mechanics of ``train``: ``steps_per_epoch``, ``checkpoint_every``, ``log_every``,
``jit_compile`` and ``precision``; only the SDF network writes TensorBoard images and previews, and
keeps a running average of its weights (``train.ema_decay``, :mod:`d2im_tf.training.averaging`).

Adam with the paper's settings for the SDF network (lr 5e-5, β1 0.9, weight decay 1e-5). Keras applies
the weight decay decoupled from the gradient (AdamW-style), where the authors' PyTorch Adam adds it to
the gradient; at 1e-5 the difference is negligible, and the decoupled form is the better-behaved one.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from d2im_tf.config import Config, ConfigError
from d2im_tf.data.pipeline import CameraDataset, ShapeDataset, has_split
from d2im_tf.errors import UserError
from d2im_tf.geometry import camera
from d2im_tf.inference.reconstruct import resolve_model_dir
from d2im_tf.interop.import_torch import load_backbone_weights, load_encoder_weights, require_weights_file
from d2im_tf.models.base import DistributableModel
from d2im_tf.models.camera_net import CameraNet
from d2im_tf.models.d2im import D2IMNet
from d2im_tf.training.averaging import WeightAverage
from d2im_tf.training.callbacks import ImageLogger
from d2im_tf.training.diagnostics import diagnostic_images
from d2im_tf.training.loop import (
    has_checkpoint,
    load_run_config,
    prepare_run,
    restore_weights,
    run_training,
    schedule_for,
)
from d2im_tf.training.memory import check_run_memory
from d2im_tf.training.previews import PreviewCallback

NETWORKS = ("sdf", "camera")
FINAL_LR_FRACTION = 0.01  # cosine decay ends, and warm-up starts, at 1% of train.learning_rate


@dataclass(frozen=True)
class RunSettings:
    """The config keys a run of one network reads (module docstring)."""

    network: str  # "sdf" or "camera"
    section: str  # the network's config section: "model" or "camera"
    out_dir: str
    batch_size: int
    epochs: int
    weights_key: str  # the ImageNet file to start from
    weights: str
    init_key: str  # the trained network to start from (run folder or SavedModel)
    init_from: str

    @classmethod
    def of(cls, config: Config, network: str) -> "RunSettings":
        if network == "sdf":
            return cls(
                "sdf",
                "model",
                config.train.out_dir,
                config.train.batch_size,
                config.train.epochs,
                "model.encoder_weights",
                config.model.encoder_weights,
                "train.init_from",
                config.train.init_from,
            )
        if network == "camera":
            return cls(
                "camera",
                "camera",
                config.camera.out_dir,
                config.camera.batch_size,
                config.camera.epochs,
                "camera.backbone_weights",
                config.camera.backbone_weights,
                "camera.init_from",
                config.camera.init_from,
            )
        raise ValueError(f"network: {network!r} is not one of {', '.join(NETWORKS)}")


def learning_rate(config: Config, total_steps: int):
    """``train.learning_rate``, or a Keras schedule of the optimiser's step: linear warm-up over
    ``train.warmup_steps`` from 1%, then (``lr_schedule: cosine``) cosine decay to 1% at ``total_steps``."""
    train = config.train
    if train.lr_schedule == "constant" and not train.warmup_steps:
        return train.learning_rate
    start = train.learning_rate * FINAL_LR_FRACTION
    if train.lr_schedule == "constant":
        decay_steps, alpha = 1, 1.0  # stays at the peak after the warm-up
    else:
        decay_steps, alpha = max(1, total_steps - train.warmup_steps), FINAL_LR_FRACTION
    return keras.optimizers.schedules.CosineDecay(
        start, decay_steps, alpha=alpha, warmup_target=train.learning_rate, warmup_steps=train.warmup_steps
    )


@contextlib.contextmanager
def precision_policy(precision: str):
    """Keras's global dtype policy ``precision`` (``train.precision``) while models are built; the
    previous policy afterwards. Layers keep the policy they were built under."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def slow_precision(precision: str, cpu_flags: set[str] | None = None, gpu: bool | None = None) -> str | None:
    """Why ``precision`` (a Keras policy) will be slow on this machine, or None.

    Without a GPU, float16 runs emulated (about 5× slower than float32 here), and bfloat16 is fast only
    where the CPU computes in it (AMX or AVX512-BF16). ``cpu_flags`` and ``gpu`` default to this
    machine's (``/proc/cpuinfo``'s flags on Linux; TensorFlow's visible GPUs).
    """
    if gpu is None:
        gpu = bool(tf.config.list_physical_devices("GPU"))
    if precision == "float32" or gpu:
        return None
    if precision == "mixed_float16":
        return "mixed_float16 has no fast CPU kernels; use mixed_bfloat16 or float32 without a GPU"
    if cpu_flags is None:
        cpuinfo = Path("/proc/cpuinfo")
        if not cpuinfo.exists():
            return None  # cannot tell
        cpu_flags = set(cpuinfo.read_text().split())
    if not cpu_flags & {"amx_bf16", "avx512_bf16"}:
        return "this CPU has neither AMX nor AVX512-BF16, so mixed_bfloat16 is emulated and slow; use float32"
    return None


def _sample_inputs(config: Config, network: str):
    """Inputs of the contract's shapes (values irrelevant) that create the network's variables."""
    if network == "camera":
        size = config.camera.image_size
        return tf.zeros([1, size, size, 3])
    size = config.model.image_size
    projection = camera.projection_matrix(0.0, 0.0, 1.0, size).astype(np.float32)[None]
    return {"image": tf.zeros([1, size, size, 3]), "points": tf.zeros([1, 8, 3]), "projection": projection}


def build_model(config: Config, network: str, total_steps: int = 1, precision: str | None = None) -> DistributableModel:
    """The compiled network (:class:`D2IMNet` or :class:`CameraNet`) with its variables and optimiser
    slots created, ready to train or to restore.

    ``total_steps``: the run's length, for a decaying learning-rate schedule. ``precision``: the Keras
    dtype policy to build under (default ``train.precision``); the weights are float32 under every
    policy, so a mixed-precision run's checkpoint restores into a float32 model.
    """
    RunSettings.of(config, network)  # an unknown network fails here
    with precision_policy(config.train.precision if precision is None else precision):
        if network == "sdf":
            model = D2IMNet(config.model, sdf_scale=config.data.sdf_scale)
            optimizer = keras.optimizers.Adam(
                learning_rate(config, total_steps), beta_1=config.train.beta_1, weight_decay=config.train.weight_decay
            )
        else:
            model = CameraNet(config.camera)
            optimizer = keras.optimizers.Adam(config.camera.learning_rate)
        model.compile(optimizer=optimizer, jit_compile=config.train.jit_compile)
        model(_sample_inputs(config, network), training=False)
        model.optimizer.build(model.trainable_variables)
    return model


def load_model(run_dir, network: str, config: Config | None = None) -> DistributableModel:
    """The network of a training run folder (its ``config.yaml``, or ``config`` if given, and its latest
    checkpoint), in float32."""
    model = build_model(config or load_run_config(run_dir), network, precision="float32")
    restore_weights(model, run_dir)
    return model


def load_initial_weights(model: DistributableModel, path, network: str, key: str = "init_from") -> None:
    """Copy trained weights of ``network`` into ``model`` (built): from a run folder (its ``config.yaml``
    and latest checkpoint) or an exported SavedModel (``d2im export``: the SDF network's variables come
    first, a bundled camera network's last, each in the order of ``model.weights``). A
    :class:`UserError` naming ``key`` if there are none, or if they are another network's."""
    path = Path(path)
    if (path / "config.yaml").exists():
        restore_weights(model, path)
        return
    try:
        model_dir = resolve_model_dir(path)
    except UserError as error:
        raise UserError(f"{key}: {error}; give a training run folder or an exported SavedModel") from None
    loaded = tf.saved_model.load(str(model_dir))
    count = len(model.weights)
    if network == "camera" and "camera" not in loaded.signatures:
        raise UserError(f"{key}: {model_dir} bundles no camera network")
    variables = list(loaded.variables)
    variables = variables[:count] if network == "sdf" else variables[-count:]
    if [tuple(v.shape) for v in variables] != [tuple(w.shape) for w in model.weights]:
        raise UserError(
            f"{key}: the {network} network in {model_dir} is not the one this config builds (another variant or size?)"
        )
    for weight, value in zip(model.weights, variables):
        weight.assign(value)


def train(
    config: Config,
    network: str,
    strategy: tf.distribute.Strategy | None = None,
    resume: bool = False,
    progress: bool = True,
) -> DistributableModel:
    """Train ``network`` (``"sdf"`` or ``"camera"``) of ``config`` under ``strategy`` (default: the current
    ``tf.distribute`` strategy); returns the trained model
    (its weights averaged over the steps with ``train.ema_decay``).

    The ImageNet file of :attr:`RunSettings.weights_key`, if set, initialises the encoder (SDF) or the
    backbone (camera), as the reference starts; a trained network (:attr:`RunSettings.init_key`,
    :func:`load_initial_weights`) all of it; a resumed run then restores its checkpoint over them.
    Raises :class:`~d2im_tf.training.loop.TrainingDiverged` on a NaN/Inf loss.
    """
    settings = RunSettings.of(config, network)
    check_run_memory(config, network)  # before any folder is written or any tensor built
    compat = config.get(f"{settings.section}.compat")
    if compat != "none":
        raise ConfigError(
            f"{settings.section}.compat: 'reference' is for weights imported with `d2im import-torch`; "
            f"training uses this project's conventions (set {settings.section}.compat=none)"
        )
    if settings.weights:  # before the data and the model are prepared
        require_weights_file(settings.weights_key, settings.weights)
    # a resumed run restores its own checkpoint: the network it started from is not needed again
    init_from = "" if resume and has_checkpoint(settings.out_dir) else settings.init_from
    if init_from and not Path(init_from).exists():
        raise UserError(f"{settings.init_key}: {init_from}: not found")
    reason = slow_precision(config.train.precision)
    if reason:
        print(f"warning: train.precision={config.train.precision}: {reason}", file=sys.stderr)
    with_test = network == "sdf" and has_split(config, "test")  # the SDF network's previews show test shapes
    prepare_run(config, network, resume, ("train", "test") if with_test else ("train",), progress)
    keras.utils.set_random_seed(config.data.seed)  # reproducible initial weights
    data = (ShapeDataset if network == "sdf" else CameraDataset)(config, "train")
    batch = settings.batch_size
    schedule = schedule_for(config, len(data), batch, settings.epochs)
    example = next(iter(data.dataset(batch_size=min(batch, 4), repeat=True))) if network == "sdf" else None
    with (strategy or tf.distribute.get_strategy()).scope():
        model = build_model(config, network, schedule.total_steps)
        if settings.weights:
            (load_encoder_weights if network == "sdf" else load_backbone_weights)(model, settings.weights)
        if init_from:
            load_initial_weights(model, init_from, network, settings.init_key)
        ema = config.train.ema_decay if network == "sdf" else 0.0
        # starts at the weights set above; trained ones need no warm-up
        average = WeightAverage(model, ema, warm_up=not settings.init_from) if ema else None

    def extra_callbacks(writer):
        if writer is None or network != "sdf":  # not the chief, or the camera network
            return []
        previews = ShapeDataset(config, "test") if with_test else data
        return [
            ImageLogger(writer, config.train.image_every, lambda m: diagnostic_images(m, example)),
            PreviewCallback(previews, config.train.out_dir, config.train.preview_every_epochs),
        ]

    description = f"training {config.model.variant}" if network == "sdf" else "training camera"
    run_training(
        model,
        lambda start: data.dataset(batch, start=start),
        schedule,
        Path(settings.out_dir),
        resume=resume,
        extra_callbacks=extra_callbacks,
        description=description,
        progress=progress,
        config=config,
        average=average,
    )
    return model
