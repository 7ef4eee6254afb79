"""The camera network (DISN §3.1.1; docs/conventions.md, "Camera"): the pose of a shape's frame from one image.

Backbone (``camera.backbone``): ``"vgg16"`` as DISN (written here, random init: conv stages 64, 128,
256, 512, 512 × ``width``/64, then dense 4096, 4096, 1000) or ``"resnet18"`` (this project's encoder,
1000-d embedding). Two heads on the 1000-d vector, dense 512 → BN → ReLU → dense 256 → BN → ReLU →
dense: the rotation head gives 6 numbers mapped by :func:`d2im_tf.geometry.camera.rotation_from_6d`, the
translation head either 1 number d (``"distance"``, the reference) giving t = (0, 0, 1.75·d), or t ∈ R³
(``"full"``, DISN's paper; needed for shifted objects). The ReLUs are not in the authors' release:
without them each head would collapse to one affine map; DISN's fully-connected helper applies ReLU
after batch norm by default.

The output (R, t) is a transform p' = R·p + t to the camera frame, so ``P = K·[R | t]``
(:meth:`CameraNet.projection`) projects the points it was trained on. The training pipeline
(:class:`d2im_tf.data.pipeline.CameraDataset`) trains it on the pose of each shape's *normalised*
frame, t = (R·c + t_world)/m (DISN's targets likewise), so ``P`` serves the SDF network directly at
test time without ground-truth normalisation; :func:`d2im_tf.geometry.frames.normalised_projection`
folds a known normalisation into a world-frame P. The distance axis: ``camera.extrinsics`` gives
t = diag(1, −1, −1)·(−CAM_ROTᵀ·(1.75·d, 0, 0)) = (0, 0, 1.75·d).

Reference compatibility (``camera.compat: reference``, for the authors' ``CAMmodel.pt.tar`` imported
with ``d2im import-torch``): VGG16 and the distance head as above, but heads *without* the ReLUs and
with PyTorch's batch-norm ε (1e-5); the image is RGB and reversed to the authors' BGR first; the 6D
output gives M = :func:`~d2im_tf.geometry.camera.rotation_from_6d` (b), which the authors use on row vectors
(``[x y z 1] @ [[M], [t]]``), so the column-vector rotation is Mᵀ, and it is the pose of Blender's
object frame: the network's ``rotation`` is Mᵀ·A (A = ShapeNet → Blender axis change,
:data:`d2im_tf.geometry.camera.AXIS_CHANGE`), the pose of the **world** frame, and :meth:`CameraNet.projection`
is the world-frame P = K·[Mᵀ | t]·A the authors build from it.

Batch contract of ``fit`` (a dict, or a 1-tuple holding it): ``image`` [B, S, S, 3] float32 in [0, 1];
``points`` [B, N, 3] a point cloud of the shape; ``rotation`` [B, 3, 3] and ``translation`` [B, 3],
the GT pose of the frame the points are in. Loss (:meth:`CameraNet.compute_losses`, trained by the base
class's ``train_step``): :func:`d2im_tf.geometry.camera.camera_pointcloud_loss`.
Trained separately from the SDF network.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf
from keras import layers

from d2im_tf.config import CameraConfig
from d2im_tf.geometry import camera
from d2im_tf.models.base import DistributableModel
from d2im_tf.models.encoder import EMBEDDING_DIM, ResNet18


class VGG16(keras.Model):
    """VGG16 (configuration D) without dropout: ``call(images [B, S, S, 3])`` → ``{"embedding": [B, 1000]}``."""

    STAGES = ((2, 1), (2, 2), (3, 4), (3, 8), (3, 8))  # (convolutions, channel multiplier of width)

    def __init__(self, width: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.stages = []
        for index, (count, multiplier) in enumerate(self.STAGES):
            convs = [layers.Conv2D(width * multiplier, 3, padding="same", activation="relu") for _ in range(count)]
            self.stages.append(keras.Sequential(convs + [layers.MaxPooling2D(2)], name=f"block{index + 1}"))
        hidden = 4096 * width // 64
        self.classifier = keras.Sequential(
            [
                layers.Flatten(),
                layers.Dense(hidden, activation="relu"),
                layers.Dense(hidden, activation="relu"),
                layers.Dense(EMBEDDING_DIM),
            ],
            name="classifier",
        )

    def call(self, images, training=None):
        x = images
        for stage in self.stages:
            x = stage(x)  # halves the size each time: [B, S/32, S/32, 8·width] at the end
        return {"embedding": self.classifier(x)}

    def get_config(self):
        return {**super().get_config(), "width": self.width}


class PoseHead(layers.Layer):
    """Dense 512 → BN → ReLU → dense 256 → BN → ReLU → dense ``outputs``; ``[B, D]`` → ``[B, outputs]``.

    ``reference=True``: the authors' head, no ReLUs and batch-norm ε = 1e-5 (PyTorch's).
    """

    def __init__(self, outputs: int, reference: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.outputs = outputs
        self.reference = reference
        epsilon = 1e-5 if reference else 1e-3
        self.hidden = [layers.Dense(512), layers.Dense(256)]
        self.norms = [layers.BatchNormalization(epsilon=epsilon), layers.BatchNormalization(epsilon=epsilon)]
        self.output_layer = layers.Dense(outputs, dtype="float32")

    def call(self, inputs, training=None):
        x = inputs
        for dense, norm in zip(self.hidden, self.norms):
            x = norm(dense(x), training=training)
            x = x if self.reference else keras.ops.relu(x)
        return self.output_layer(x)

    def get_config(self):
        return {**super().get_config(), "outputs": self.outputs, "reference": self.reference}


def translation_from_distance(distance):
    """Distance head ``[B, 1]`` → t ``[B, 3]`` = (0, 0, 1.75·d), the reference's camera on the z axis."""
    zeros = tf.zeros_like(distance)
    return tf.concat([zeros, zeros, camera.MAX_DISTANCE * distance], axis=-1)


class CameraNet(DistributableModel):
    """Pose regression: ``call(images)`` → dict ``rotation`` [B, 3, 3], ``translation`` [B, 3],
    ``rotation_6d`` [B, 6]."""

    def __init__(self, config: CameraConfig | None = None, **kwargs):
        super().__init__(**kwargs)
        self.camera_config = config if config is not None else CameraConfig()
        cfg = self.camera_config
        if cfg.backbone == "vgg16":
            self.backbone = VGG16(cfg.width, name="backbone")
        elif cfg.backbone == "resnet18":
            self.backbone = ResNet18(cfg.width, global_dim=None, name="backbone")
        else:
            raise ValueError(f"camera.backbone: {cfg.backbone!r} is not 'vgg16' or 'resnet18'")
        if cfg.translation not in ("distance", "full"):
            raise ValueError(f"camera.translation: {cfg.translation!r} is not 'distance' or 'full'")
        self.reference = cfg.compat == "reference"
        if self.reference and (cfg.backbone, cfg.translation) != ("vgg16", "distance"):
            raise ValueError(
                "camera.compat 'reference' needs camera.backbone 'vgg16' and camera.translation 'distance'"
            )
        self.rotation_head = PoseHead(6, self.reference, name="rotation_head")
        self.translation_head = PoseHead(
            1 if cfg.translation == "distance" else 3, self.reference, name="translation_head"
        )

    def call(self, images, training=None):
        if self.reference:
            images = tf.reverse(images, axis=[-1])  # RGB → the authors' BGR
        embedding = self.backbone(images, training=training)["embedding"]  # [B, 1000]
        rotation_6d = self.rotation_head(embedding, training=training)  # [B, 6]
        translation = self.translation_head(embedding, training=training)  # [B, 1] or [B, 3]
        if self.camera_config.translation == "distance":
            translation = translation_from_distance(translation)
        rotation = camera.rotation_from_6d(rotation_6d)  # [B, 3, 3]
        if self.reference:  # row-vector M of Blender's object frame → column-vector pose of the world frame
            axis_change = tf.constant(camera.AXIS_CHANGE[:3, :3], rotation.dtype)
            rotation = tf.matmul(rotation, axis_change[None], transpose_a=True)
        return {"rotation": rotation, "translation": translation, "rotation_6d": rotation_6d}

    def projection(self, outputs):
        """P = K·[R | t] ``[B, 3, 4]`` for world points, from the outputs of :meth:`call`."""
        return camera.projection_from_pose(outputs["rotation"], outputs["translation"], self.camera_config.image_size)

    def forward(self, batch, training):
        """``call`` on the batch's images."""
        return self(batch["image"], training=training)

    def compute_losses(self, batch, outputs):
        """DISN's point-cloud loss between the predicted and the GT pose: ``{"loss": scalar}``."""
        return {
            "loss": camera.camera_pointcloud_loss(
                tf.cast(batch["points"], tf.float32),
                outputs["rotation"],
                outputs["translation"],
                tf.cast(batch["rotation"], tf.float32),
                tf.cast(batch["translation"], tf.float32),
            )
        }

    def get_config(self):
        return {**super().get_config(), "config": dataclasses.asdict(self.camera_config)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(CameraConfig(**config.pop("config")), **config)
