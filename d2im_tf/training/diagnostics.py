"""TensorBoard images of the SDF network during training: the input, both displacement maps, and the
Laplacians the loss compares (the GT normal map's divergence and the front map's Laplacian)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from d2im_tf.models.d2im import D2IMNet
from d2im_tf.models.losses import map_laplacian, normal_divergence


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
