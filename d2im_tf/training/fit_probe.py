"""How well a network fits the shapes it trains on: sign accuracy at their samples and voxel IoU.

For each shape of a split, seen from one view (the evaluation view of
:func:`d2im_tf.evaluation.evaluate.evaluation_view`, with its GT camera):

* ``sign_accuracy`` — share of the shape's own SDF samples (``pc_sdf_sample``, plus the far-field
  samples when the file has them) with |sdf| > ``sign_margin`` whose predicted fused SDF has the GT
  sign. Chance is 0.5; a network that memorises the set approaches 1.
* ``iou`` — occupancy of the ``resolution``³ voxel centres of the [-1, 1]³ box: predicted where the
  fused field is negative, GT from the ground-truth mesh by ray parity (:func:`d2im_tf.evaluation.metrics.occupancy`).
  Independent of marching cubes, so it measures the field and nothing else.

Used by ``tools/benchmark.py fit`` (the memorisation benchmark) and by the memorisation test.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from d2im_tf.config import Config
from d2im_tf.data import disn_format as fmt
from d2im_tf.data.pipeline import decode_image, load_records
from d2im_tf.evaluation import metrics
from d2im_tf.evaluation.evaluate import evaluation_view
from d2im_tf.geometry.frames import NORMALISED_BOX, to_normalised


@dataclass
class ProbeShape:
    """One shape's evaluation view and ground truth, prepared once."""

    name: str  # "<category>/<shape>"
    image: np.ndarray  # [S, S, 3] float32, as the pipeline decodes it
    projection: np.ndarray  # [3, 4] normalised frame → pixels
    points: np.ndarray  # [M, 3] samples with |sdf| > margin
    inside: np.ndarray  # [M] bool, GT sdf < 0
    occupied: np.ndarray  # [R³] bool, GT occupancy of the voxel centres


def probe_shapes(config: Config, split: str = "train", resolution: int = 32, sign_margin: float = 0.005,
                 max_shapes: int | None = None) -> list[ProbeShape]:
    """The shapes of ``split`` with what :func:`fit_report` compares against."""
    layout = fmt.DatasetLayout.from_config(config)
    low, high = NORMALISED_BOX
    shapes = []
    for record in load_records(config, split)[:max_shapes]:
        view = evaluation_view(record.category, len(record.projections))
        samples = fmt.read_samples(layout.samples_path(record.category, record.shape))
        points, sdf = samples.points, samples.sdf
        if samples.far_samples is not None:
            points = np.concatenate([points, samples.far_samples[:, :3]])
            sdf = np.concatenate([sdf, samples.far_samples[:, 3]])
        keep = np.abs(sdf) > sign_margin
        truth = to_normalised(fmt.read_mesh(layout.mesh_path(record.category, record.shape), "ground-truth mesh"),
                              record.norm_params)
        occupied = metrics.occupancy(truth, resolution, [low] * 3, high - low).reshape(-1)
        image = decode_image(str(layout.image_path(record.category, record.shape, view)), config.model.image_size)
        shapes.append(ProbeShape(f"{record.category}/{record.shape}", image.numpy(),
                                 record.projections[view].astype(np.float32), points[keep].astype(np.float32),
                                 sdf[keep] < 0, occupied))
    return shapes


def fit_report(model, shapes: list[ProbeShape], resolution: int = 32) -> list[dict]:
    """Per shape: ``name``, ``sign_accuracy`` and ``iou`` of ``model`` (a :class:`~d2im_tf.models.d2im.D2IMNet`)."""
    low, high = NORMALISED_BOX
    grid = metrics.voxel_centres(resolution, [low] * 3, high - low).reshape(-1, 3).astype(np.float32)
    rows = []
    for shape in shapes:
        points = np.concatenate([shape.points, grid])[None]  # [1, M + R³, 3]
        sdf = model.predict_sdf(shape.image[None], points, shape.projection[None])["sdf"][0]
        at_samples, at_grid = sdf[: len(shape.points)], sdf[len(shape.points):]
        predicted = at_grid < 0
        union = np.count_nonzero(predicted | shape.occupied)
        rows.append({
            "name": shape.name,
            "sign_accuracy": float(np.mean((at_samples < 0) == shape.inside)),
            "iou": float(np.count_nonzero(predicted & shape.occupied) / union) if union else 1.0,
        })
    return rows
