"""How well a network fits the shapes it trains on: sign accuracy at their samples and voxel IoU.

For each shape of a split, seen from one view (the evaluation view of
:func:`d2im_tf.evaluation.evaluate.evaluation_view`, with its GT camera):

* ``sign_accuracy`` — share of the shape's own SDF samples (``pc_sdf_sample``, plus the far-field
  samples when the file has them) with |sdf| > ``sign_margin`` whose predicted fused SDF has the GT
  sign. Chance is 0.5; a network that memorises the set approaches 1.
* ``iou`` — occupancy of the ``resolution``³ voxel centres of the [-1, 1]³ box: predicted where the
  fused field is negative, GT from the ground-truth mesh by ray parity (:func:`d2im_tf.evaluation.metrics.occupancy`).
  Independent of marching cubes, so it measures the field and nothing else.
* ``iou_base`` — the IoU of the base field f_B alone (the fused field without the displacement maps),
  when the model reports it: how much the maps add to the fit, or take from it.
* ``iou_decided`` — the same IoU over the voxel centres farther than ``sign_margin`` from the GT
  surface. Shapes built from axis-aligned parts can have faces on the grid's planes; the occupancy of
  a centre on the surface is then decided by errors below the margin, which ``sign_accuracy`` leaves
  out (docs/training.md, "What the table's IoU measures").

Used by ``tools/benchmark.py fit`` (:mod:`benchmarks.fit`, the memorisation benchmark) and by the memorisation test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

from d2im_tf.config import Config
from d2im_tf.data import disn_format as fmt
from d2im_tf.data.pipeline import decode_image, load_records
from d2im_tf.evaluation import metrics
from d2im_tf.evaluation.evaluate import evaluation_view
from d2im_tf.geometry.frames import NORMALISED_BOX, to_normalised

_BOX = ([NORMALISED_BOX[0]] * 3, NORMALISED_BOX[1] - NORMALISED_BOX[0])  # low corner, side: the probe's cube


@dataclass
class ProbeShape:
    """One shape's evaluation view and ground truth, prepared once."""

    name: str  # "<category>/<shape>"
    image: np.ndarray  # [S, S, 3] float32, as the pipeline decodes it
    projection: np.ndarray  # [3, 4] normalised frame → pixels
    points: np.ndarray  # [M, 3] samples with |sdf| > margin
    inside: np.ndarray  # [M] bool, GT sdf < 0
    occupied: np.ndarray  # [R³] bool, GT occupancy of the voxel centres
    decided: np.ndarray  # [R³] bool, voxel centres farther than the sign margin from the GT surface


def probe_shapes(
    config: Config,
    split: str = "train",
    resolution: int = 32,
    sign_margin: float = 0.005,
    max_shapes: int | None = None,
) -> list[ProbeShape]:
    """The shapes of ``split`` with what :func:`fit_report` compares against."""
    layout = fmt.DatasetLayout.from_config(config)
    shapes = []
    for record in load_records(config, split)[:max_shapes]:
        view = evaluation_view(record.category, len(record.projections))
        samples = fmt.read_samples(layout.samples_path(record.category, record.shape))
        points, sdf = samples.points, samples.sdf
        if samples.far_samples is not None:
            points = np.concatenate([points, samples.far_samples[:, :3]])
            sdf = np.concatenate([sdf, samples.far_samples[:, 3]])
        keep = np.abs(sdf) > sign_margin
        truth = to_normalised(
            fmt.read_mesh(layout.mesh_path(record.category, record.shape), "ground-truth mesh"), record.norm_params
        )
        occupied, decided = grid_truth(truth, resolution, sign_margin)
        image = decode_image(str(layout.image_path(record.category, record.shape, view)), config.model.image_size)
        shapes.append(
            ProbeShape(
                f"{record.category}/{record.shape}",
                image.numpy(),
                record.projections[view].astype(np.float32),
                points[keep].astype(np.float32),
                sdf[keep] < 0,
                occupied,
                decided,
            )
        )
    return shapes


def fit_report(model, shapes: list[ProbeShape], resolution: int = 32) -> list[dict]:
    """Per shape: ``name``, ``sign_accuracy``, ``iou``, ``iou_decided`` and, when ``predict_sdf`` also
    returns ``base``, ``iou_base`` of ``model`` (a :class:`~d2im_tf.models.d2im.D2IMNet`, or anything with
    its ``predict_sdf``)."""
    grid = probe_grid(resolution).astype(np.float32)
    rows = []
    for shape in shapes:
        points = np.concatenate([shape.points, grid])[None]  # [1, M + R³, 3]
        fields = model.predict_sdf(shape.image[None], points, shape.projection[None])
        sdf = fields["sdf"][0]
        at_samples, at_grid = sdf[: len(shape.points)], sdf[len(shape.points) :]
        predicted = at_grid < 0
        row = {
            "name": shape.name,
            "sign_accuracy": float(np.mean((at_samples < 0) == shape.inside)),
            "iou": _iou(predicted, shape.occupied),
            "iou_decided": _iou(predicted[shape.decided], shape.occupied[shape.decided]),
        }
        if "base" in fields:
            row["iou_base"] = _iou(fields["base"][0][len(shape.points) :] < 0, shape.occupied)
        rows.append(row)
    return rows


def grid_truth(truth: trimesh.Trimesh, resolution: int, sign_margin: float) -> tuple[np.ndarray, np.ndarray]:
    """GT occupancy of the :func:`probe_grid` centres by ray parity, and which of them lie farther
    than ``sign_margin`` from the surface of ``truth`` (normalised frame): two ``[R³]`` bool arrays."""
    occupied = metrics.occupancy(truth, resolution, *_BOX).reshape(-1)
    return occupied, ~metrics.near_surface(truth, resolution, *_BOX, sign_margin).reshape(-1)


def probe_grid(resolution: int) -> np.ndarray:
    """The ``resolution``³ voxel centres of the normalised box, ``[R³, 3]`` float64."""
    return metrics.voxel_centres(resolution, *_BOX).reshape(-1, 3)


def _iou(predicted: np.ndarray, occupied: np.ndarray) -> float:
    union = np.count_nonzero(predicted | occupied)
    return float(np.count_nonzero(predicted & occupied) / union) if union else 1.0
