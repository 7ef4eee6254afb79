"""PNG previews during training: every K epochs, a few test shapes reconstructed by the current model.

``OUT/previews/epoch_NNNN.png`` stacks one strip per shape (input | mesh from the input view | from
azimuth +90° | front map | back map, :func:`d2im_tf.inference.preview.preview_image`), using GT cameras and a
coarse-to-fine extraction at a low resolution so a preview costs seconds, not minutes.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from d2im_tf.data import disn_format as fmt
from d2im_tf.data.pipeline import ShapeDataset, decode_image
from d2im_tf.evaluation.evaluate import evaluation_view
from d2im_tf.geometry.frames import to_world
from d2im_tf.inference.extraction import extract_fused_mesh
from d2im_tf.inference.preview import preview_image


class PreviewCallback(keras.callbacks.Callback):
    """Writes a preview PNG every ``every_epochs`` epochs (epochs counted from 1)."""

    def __init__(self, data: ShapeDataset, out_dir, every_epochs: int, count: int = 3, resolution: int = 64):
        super().__init__()
        self.every = max(1, every_epochs)
        self.out_dir = Path(out_dir) / "previews"
        self.resolution = resolution
        size = data.config.model.image_size
        views = [evaluation_view(r.category, data.num_views) for r in data.records[:count]]
        self.samples = [
            (
                decode_image(str(r.layout.image_path(r.category, r.shape, view)), size).numpy(),
                r.projections[view].astype(np.float32),
                r.metadata[view],
                r.norm_params,
            )
            for r, view in zip(data.records, views)
        ]

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        strips = [self._strip(*sample) for sample in self.samples]
        fmt.write_png(self.out_dir / f"epoch_{epoch + 1:04d}.png", np.concatenate(strips, axis=0))

    def _strip(self, image, projection, view, norm_params) -> np.ndarray:
        model = self.model
        encoding = model.encode(tf.constant(image[None]), training=False)
        maps = encoding["maps"][0].numpy() if "maps" in encoding else np.zeros(image.shape[:2] + (2,))

        def decode(points):  # [N, 3] normalised frame → fused [N], base [N]
            out = model.predict_sdf(image[None], points[None], projection[None])
            return out["sdf"][0], out["base"][0]

        mesh, _ = extract_fused_mesh(decode, maps, self.resolution, 2.0 * model.sdf_scale, initial_resolution=16)
        return preview_image(image, to_world(mesh, norm_params), view, maps)  # the view row is world-frame
