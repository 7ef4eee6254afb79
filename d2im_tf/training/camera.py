"""Training the camera network, separately from the SDF network as in both papers."""
from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from d2im_tf.config import Config, ConfigError
from d2im_tf.data.pipeline import CameraDataset
from d2im_tf.inference.import_torch import load_backbone_weights, require_weights_file
from d2im_tf.models.camera_net import CameraNet
from d2im_tf.training.loop import load_run_config, prepare_run, restore_weights, run_training, schedule_for


def build_camera_model(config: Config) -> CameraNet:
    """The compiled camera network with its variables and optimiser slots created."""
    model = CameraNet(config.camera)
    model.compile(optimizer=keras.optimizers.Adam(config.camera.learning_rate), jit_compile=config.train.jit_compile)
    size = config.camera.image_size
    model(tf.zeros([1, size, size, 3]), training=False)
    model.optimizer.build(model.trainable_variables)
    return model


def load_camera_model(run_dir) -> CameraNet:
    """The camera network of a training run folder (its ``config.yaml`` and latest checkpoint)."""
    model = build_camera_model(load_run_config(run_dir))
    restore_weights(model, run_dir)
    return model


def train_camera(config: Config, strategy: tf.distribute.Strategy | None = None, resume: bool = False,
               progress: bool = True) -> CameraNet:
    """Train the camera network of ``config`` under the current ``tf.distribute`` strategy.

    ``camera.backbone_weights`` (torchvision's ImageNet VGG16 or ResNet18 file) initialises the backbone.
    """
    if config.camera.compat != "none":
        raise ConfigError("camera.compat: 'reference' is for weights imported with `d2im import-torch`; "
                          "training uses this project's conventions (set camera.compat=none)")
    if config.camera.backbone_weights:  # before the data and the model are prepared
        require_weights_file("camera.backbone_weights", config.camera.backbone_weights)
    prepare_run(config, "camera", resume, progress=progress)
    keras.utils.set_random_seed(config.data.seed)  # reproducible initial weights
    data = CameraDataset(config, "train")
    batch = config.camera.batch_size
    schedule = schedule_for(config, len(data), batch, config.camera.epochs)
    with (strategy or tf.distribute.get_strategy()).scope():
        model = build_camera_model(config)
        if config.camera.backbone_weights:
            load_backbone_weights(model, config.camera.backbone_weights)
    run_training(model, lambda start: data.dataset(batch, start=start), schedule, Path(config.camera.out_dir),
                 resume=resume, description="training camera", progress=progress, config=config)
    return model
