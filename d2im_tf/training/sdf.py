"""Training the D²IM-Net SDF network: model, optimiser, TensorBoard images, previews, export.

Adam with the paper's settings (lr 5e-5, β1 0.9, weight decay 1e-5). Keras applies the weight decay
decoupled from the gradient (AdamW-style), where the authors' PyTorch Adam adds it to the gradient;
at 1e-5 the difference is negligible, and the decoupled form is the better-behaved one.
"""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from d2im_tf.geometry import camera
from d2im_tf.config import Config, ConfigError
from d2im_tf.data.pipeline import ShapeDataset, has_split
from d2im_tf.inference.import_torch import load_encoder_weights, require_weights_file
from d2im_tf.models.losses import map_laplacian, normal_divergence
from d2im_tf.models.d2im import D2IMNet
from d2im_tf.training.callbacks import ImageLogger
from d2im_tf.training.previews import PreviewCallback
from d2im_tf.training.loop import load_run_config, prepare_run, restore_weights, run_training, schedule_for


def _dummy_batch(config: Config) -> dict:
    """A batch of the contract's shapes (values irrelevant) to create the network's variables."""
    size = config.model.image_size
    projection = camera.projection_matrix(0.0, 0.0, 1.0, size).astype(np.float32)[None]
    return {"image": tf.zeros([1, size, size, 3]), "points": tf.zeros([1, 8, 3]), "projection": projection}


FINAL_LR_FRACTION = 0.01  # cosine decay ends, and warm-up starts, at 1% of train.learning_rate


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
    return keras.optimizers.schedules.CosineDecay(start, decay_steps, alpha=alpha, warmup_target=train.learning_rate,
                                                  warmup_steps=train.warmup_steps)


def build_sdf_model(config: Config, total_steps: int = 1) -> D2IMNet:
    """The compiled SDF network with its variables and optimiser slots created (for restoring).

    ``total_steps``: the run's length, for a decaying learning-rate schedule."""
    model = D2IMNet(config.model, sdf_scale=config.data.sdf_scale)
    train = config.train
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate(config, total_steps), beta_1=train.beta_1,
                                        weight_decay=train.weight_decay),
        jit_compile=train.jit_compile,
    )
    model(_dummy_batch(config), training=False)
    model.optimizer.build(model.trainable_variables)
    return model


def load_sdf_model(run_dir) -> D2IMNet:
    """The SDF network of a training run folder (its ``config.yaml`` and latest checkpoint)."""
    config = load_run_config(run_dir)
    model = build_sdf_model(config)
    restore_weights(model, run_dir)
    return model


def pixel_centres(size: int, batch: int) -> tf.Tensor:
    """``[batch, size², 2]`` pixel-centre coordinates (x right, y down), row-major."""
    ys, xs = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    grid = np.stack([xs.ravel(), ys.ravel()], axis=-1).astype(np.float32)
    return tf.tile(grid[None], [batch, 1, 1])


def _to_unit_range(images):
    """Per-image min-max scaling of ``[K, H, W, C]`` to [0, 1] for display."""
    low = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
    high = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
    return tf.math.divide_no_nan(images - low, high - low)


def diagnostic_images(model: D2IMNet, batch: dict) -> dict:
    """Input, displacement maps and the GT/predicted Laplacians of a batch, each ``[K, H, W, C]``."""
    images = batch["image"]
    size = images.shape[1]
    out = {"input": images}
    encoding = model.encode(images, training=False)
    if "maps" in encoding:
        maps = encoding["maps"]  # [K, H, W, 2]
        out["front_map"] = _to_unit_range(maps[..., :1])
        out["back_map"] = _to_unit_range(maps[..., 1:])
        uv = pixel_centres(size, images.shape[0])
        shape = [images.shape[0], size, size, 1]
        out["laplacian_gt"] = _to_unit_range(tf.reshape(normal_divergence(batch["normal_map"], uv), shape))
        out["laplacian_pred"] = _to_unit_range(tf.reshape(map_laplacian(maps[..., :1], uv), shape))
    return out


def train_sdf(config: Config, strategy: tf.distribute.Strategy | None = None, resume: bool = False,
               progress: bool = True) -> D2IMNet:
    """Train the SDF network of ``config`` under the current ``tf.distribute`` strategy.

    ``model.encoder_weights`` (torchvision's ImageNet ResNet18 file) initialises the encoder, as the
    reference starts; a resumed run then restores its checkpoint over it.
    """
    if config.model.compat != "none":
        raise ConfigError("model.compat: 'reference' is for weights imported with `d2im import-torch`; "
                          "training uses this project's conventions (set model.compat=none)")
    if config.model.encoder_weights:  # before the data and the model are prepared
        require_weights_file("model.encoder_weights", config.model.encoder_weights)
    prepare_run(config, "sdf", resume, ("train", "test") if has_split(config, "test") else ("train",), progress)
    keras.utils.set_random_seed(config.data.seed)  # reproducible initial weights
    data = ShapeDataset(config, "train")
    batch = config.train.batch_size
    schedule = schedule_for(config, len(data), batch, config.train.epochs)
    example = next(iter(data.dataset(batch_size=min(batch, 4), repeat=True)))
    with (strategy or tf.distribute.get_strategy()).scope():
        model = build_sdf_model(config, schedule.total_steps)
        if config.model.encoder_weights:
            load_encoder_weights(model, config.model.encoder_weights)

    def extra_callbacks(writer):
        if writer is None:  # not the chief
            return []
        previews = ShapeDataset(config, "test") if has_split(config, "test") else data
        return [ImageLogger(writer, config.train.image_every, lambda m: diagnostic_images(m, example)),
                PreviewCallback(previews, config.train.out_dir, config.train.preview_every_epochs)]

    run_training(model, lambda start: data.dataset(batch, start=start), schedule, Path(config.train.out_dir),
                 resume=resume, extra_callbacks=extra_callbacks, description=f"training {config.model.variant}",
                 progress=progress, config=config)
    return model
