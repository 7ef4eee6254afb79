"""Evaluation on a dataset's test split: per-shape metrics and per-category tables (paper's Table 2).

For each test shape, the image of the evaluation view is reconstructed and compared with the
ground-truth mesh ``meshes/<cat>/<shape>/model.obj`` (world frame) with the metrics of
:mod:`d2im_tf.evaluation.metrics`: IoU (32³ voxels), CD = Chamfer-L1 on 20K surface samples, ECD-3D, ECD-2D
(pixels, 224² normal maps), the relief error (degrees between the two 224² normal maps on the GT's
relief pixels, :mod:`d2im_tf.evaluation.relief`: where its normals depart from those of
``meshes/<cat>/<shape>/coarse.obj``, the shape without its relief, when the dataset has it, else from
its own smoothed normals) and the F-score at 1% of the side of the reconstruction box
(:data:`d2im_tf.geometry.frames.NORMALISED_BOX`), and precision/recall at 0.05 (normalised
units): the share of the reconstruction's surface samples within 0.05 of the GT surface, by exact
distance (phantom sheets and floaters lower it), and the converse (missing parts lower it).

Frames: both meshes are compared in the shape's normalised frame — the GT is mapped by
``(x − c)/m`` with the shape's ``norm_params`` — except for ECD-2D, whose normal maps are rendered
from the evaluation view's camera (a world-frame metadata row), so both meshes are mapped back to the
world frame (``x·m + c``) for it. With the GT camera the network sees the normalised frame through
:func:`~d2im_tf.geometry.frames.normalised_projection`; with a predicted camera (a model with a
camera network) the mesh comes out in the normalised frame, up to the camera's errors, except from a
model working in the world frame (imported from the authors' release), whose meshes are mapped to the
normalised frame like the GT.

With a predicted camera the rows also carry DISN's camera metrics (:func:`~d2im_tf.evaluation.metrics.pose_errors`:
d_3D in normalised units, d_2D in pixels at 224², the rotation error in degrees) of the camera
network's pose against the evaluation view's, on 2,048 GT surface points.

Evaluation view: the reference uses view 32 of 36 (view 6 for car, rifle and watercraft); a dataset
with fewer views ``V`` uses ``min(view, V − 1)``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from tqdm import tqdm

from d2im_tf.data import disn_format as fmt
from d2im_tf.data.categories import SIDE_VIEW_CATEGORIES
from d2im_tf.data.disn_format import DatasetLayout
from d2im_tf.evaluation import metrics, relief
from d2im_tf.evaluation.summary import column_means, group_by_category, mean_over_categories
from d2im_tf.geometry import camera
from d2im_tf.geometry.frames import box_side, normalised_pose, to_normalised, to_world
from d2im_tf.io import atomic_path

TEST_VIEW = 32
SIDE_TEST_VIEW = 6
SURFACE_SAMPLES = 20000
FSCORE_THRESHOLD = 0.01 * box_side()  # 1% of the side of the normalised frame's box
# metric key → column title; CD is Chamfer-L1 (not DISN's squared-L2 ×1000).
PHANTOM_THRESHOLD = 0.05  # normalised units: precision/recall distance for sheets, floaters and gaps
COLUMNS = {
    "iou": "IoU",
    "chamfer_l1": "CD (Chamfer-L1)",
    "ecd_3d": "ECD-3D",
    "ecd_2d": "ECD-2D (px)",
    "fscore_1pct": "F-score@1%",
    "precision_005": "Precision@0.05",
    "recall_005": "Recall@0.05",
    "relief_angle": "relief error (°)",
}
POSE_COLUMNS = {"camera_d3d": "d_3D", "camera_d2d": "d_2D (px)", "rotation_error": "rotation error (°)"}
POSE_POINTS = 2048
CAMERAS = ("gt", "predicted")


def evaluation_view(category: str, views: int) -> int:
    """The reference's test view (32; 6 for car/rifle/watercraft), clipped to ``views − 1``."""
    view = SIDE_TEST_VIEW if category in SIDE_VIEW_CATEGORIES else TEST_VIEW
    return min(view, views - 1)


def shape_metrics(
    predicted: trimesh.Trimesh, truth: trimesh.Trimesh, view_row, norm_params, coarse: trimesh.Trimesh | None = None
) -> dict:
    """The metrics of ``predicted`` against ``truth``, both in the normalised frame.

    ``view_row`` is the evaluation view's metadata row (world frame) and ``norm_params`` the shape's
    ``(cx, cy, cz, m)``, used for ECD-2D and the relief error. ``coarse``, the shape without its relief
    (normalised frame) when known, defines the relief pixels; else the GT's smoothed normals do
    (:mod:`d2im_tf.evaluation.relief`).
    """
    points_pred, _ = metrics.sample_surface(predicted, SURFACE_SAMPLES)
    points_true, _ = metrics.sample_surface(truth, SURFACE_SAMPLES)
    precision, recall = metrics.surface_precision_recall(points_pred, predicted, points_true, truth, PHANTOM_THRESHOLD)
    return {
        "iou": metrics.iou(predicted, truth),
        "chamfer_l1": metrics.chamfer_l1(points_pred, points_true),
        "ecd_3d": metrics.ecd_3d(predicted, truth, SURFACE_SAMPLES),
        "ecd_2d": metrics.ecd_2d(to_world(predicted, norm_params), to_world(truth, norm_params), view_row),
        "fscore_1pct": metrics.fscore(points_pred, points_true, FSCORE_THRESHOLD),
        "precision_005": precision,
        "recall_005": recall,
        "relief_angle": _relief_angle(predicted, truth, view_row, norm_params, coarse),
    }


def _relief_angle(predicted, truth, view_row, norm_params, coarse) -> float:
    """The relief error of the view; NaN when the view shows no relief the prediction covers."""
    error = relief.relief_error(
        *(metrics.normal_map(to_world(mesh, norm_params), view_row) for mesh in (predicted, truth)),
        coarse=None if coarse is None else metrics.normal_map(to_world(coarse, norm_params), view_row),
    )
    return relief.covered_angle(error)


def pose_metrics(pose, case: "EvaluationCase", frame: str) -> dict:
    """DISN's camera metrics of ``pose`` (the camera network's ``(R, t)`` of the ``frame`` the model works
    in) against the evaluation view's, on GT surface points, both as poses of the normalised frame (a
    world-frame pose through :func:`normalised_pose`, so d_3D is in normalised units either way)."""
    if frame == "world":
        pose = normalised_pose(*pose, case.norm_params)
    truth = camera.world_to_camera(case.view_row[0], case.view_row[1], case.view_row[3])
    points, _ = metrics.sample_surface(case.truth, POSE_POINTS)  # normalised frame
    return metrics.pose_errors(points, pose, normalised_pose(*truth, case.norm_params))


@dataclass
class EvaluationCase:
    """What the evaluation needs of one shape: its evaluation view, image and GT (normalised frame)."""

    category: str
    shape: str
    view: int
    view_row: np.ndarray  # [10]
    norm_params: np.ndarray  # [4] cx, cy, cz, m
    pixels: np.ndarray  # uint8 [H, W, 3|4]
    truth: trimesh.Trimesh
    coarse: trimesh.Trimesh | None = None  # the shape without its relief (make-data --coarse-sdf)

    @classmethod
    def load(cls, layout: DatasetLayout, category: str, shape: str) -> "EvaluationCase":
        rows = fmt.read_metadata(layout.metadata_path(category, shape))  # [V, 10]
        view = evaluation_view(category, len(rows))
        norm_params = fmt.read_norm_params(layout.samples_path(category, shape))
        truth = to_normalised(fmt.read_mesh(layout.mesh_path(category, shape), "ground-truth mesh"), norm_params)
        coarse_path = layout.coarse_mesh_path(category, shape)
        coarse = (
            to_normalised(fmt.read_mesh(coarse_path, "coarse mesh"), norm_params) if coarse_path.is_file() else None
        )
        return cls(
            category,
            shape,
            view,
            rows[view],
            norm_params,
            fmt.read_image(layout.image_path(category, shape, view)),
            truth,
            coarse,
        )


def split_pairs(layout: DatasetLayout, split: str, categories=None, max_shapes: int | None = None):
    """``(category, shape)`` pairs of ``split``, at most ``max_shapes`` per category."""
    pairs = []
    for category in categories or layout.categories():
        shapes = fmt.read_split(layout.split_path(category, split))
        pairs += [(category, shape) for shape in shapes[:max_shapes]]
    return pairs


def evaluate(
    reconstructor,
    layout: DatasetLayout,
    split: str = "test",
    categories=None,
    max_shapes: int | None = None,
    progress: bool = True,
    surface: str = "detailed",
) -> list[dict]:
    """Per-shape rows ``{category, shape, camera, view, <metrics>}``: GT camera, and the predicted one
    too when the model has a camera network. ``surface``: ``"detailed"`` the model's output, ``"base"``
    the base field f_B's zero set alone (what the displacement maps add is the difference)."""
    cameras = CAMERAS if reconstructor.has_camera else CAMERAS[:1]
    rows = []
    for category, shape in tqdm(
        split_pairs(layout, split, categories, max_shapes), desc="evaluate", unit="shape", disable=not progress
    ):
        case = EvaluationCase.load(layout, category, shape)
        for camera_kind in cameras:
            if camera_kind == "gt":  # world-frame output, brought back to the normalised frame
                result = reconstructor.reconstruct(case.pixels, case.view_row, case.norm_params, surface=surface)
            else:  # normalised frame, or world frame for a model that works in it (imported ones)
                result = reconstructor.reconstruct(case.pixels, surface=surface)
            predicted = to_normalised(result.mesh, case.norm_params) if result.frame == "world" else result.mesh
            row = {
                "category": category,
                "shape": shape,
                "camera": camera_kind,
                "view": case.view,
                **shape_metrics(predicted, case.truth, case.view_row, case.norm_params, case.coarse),
            }
            if result.input_pose is not None:  # the render's pose, not the re-framed input's
                row.update(pose_metrics(result.input_pose, case, result.frame))
            rows.append(row)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per (camera, category) means and shape counts, then a ``mean`` row per camera (the mean of the
    category means, as the paper's tables)."""
    summary = []
    for camera_kind in CAMERAS:
        selected = [row for row in rows if row["camera"] == camera_kind]
        columns = table_columns(selected)
        grouped = group_by_category(selected, columns)
        means = {category: column_means(grouped[category]) for category in sorted(grouped)}
        summary += [
            {"camera": camera_kind, "category": category, "shapes": len(grouped[category]), **dict(zip(columns, mean))}
            for category, mean in means.items()
        ]
        if means:
            summary.append(
                {
                    "camera": camera_kind,
                    "category": "mean",
                    "shapes": sum(len(values) for values in grouped.values()),
                    **dict(zip(columns, mean_over_categories(means.values()))),
                }
            )
    return summary


def table_columns(rows: list[dict]) -> dict:
    """The metric columns of one camera's rows: the shape metrics, and the camera metrics if they have them."""
    return {**COLUMNS, **POSE_COLUMNS} if rows and all("camera_d3d" in row for row in rows) else COLUMNS


def _write_csv(path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(key for row in rows for key in row))  # the GT rows lack the camera metrics
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def markdown_tables(summary: list[dict], surface: str = "detailed") -> str:
    """One Markdown table per camera kind: rows = categories (+ mean), columns = the five metrics."""
    lines = [
        "# Evaluation" + (" of the base field f_B alone" if surface == "base" else ""),
        "",
        "CD is Chamfer-L1 (mean of the two directed mean nearest-neighbour distances, 20K samples, "
        "normalised frame); ECD-2D in pixels at 224²; F-score at 1% of the box side; precision/recall "
        "at 0.05: share of predicted surface samples within 0.05 of the GT surface (exact distance), and the "
        "converse. Relief error: mean angle (°) between the normal maps (224²) on the GT's relief pixels "
        "(against the shape without its relief where the dataset has coarse.obj, else the GT's smoothed normals), "
        "over the shapes whose view shows relief that the reconstruction covers (– if none does). "
        "IoU, F-score, precision, recall: higher is better; CD, ECD-3D, ECD-2D, relief error: lower is better. "
        "Predicted camera, DISN's pose metrics (lower is better): d_3D, the mean distance between GT "
        "surface points taken to the camera frame by the predicted and the GT pose (normalised units); "
        "d_2D, the mean distance between their projections (pixels at 224²); the rotation error "
        "(degrees).",
        "",
    ]
    for camera_kind in CAMERAS:
        entries = [entry for entry in summary if entry["camera"] == camera_kind]
        if not entries:
            continue
        columns = table_columns(entries)
        lines += [
            f"## {'Ground-truth' if camera_kind == 'gt' else 'Predicted'} camera",
            "",
            "| category | shapes | " + " | ".join(columns.values()) + " |",
            "|---|---:|" + "---:|" * len(columns),
        ]
        lines += [
            f"| {entry['category']} | {entry['shapes']} | "
            + " | ".join("–" if math.isnan(entry[key]) else f"{entry[key]:.4f}" for key in columns)
            + " |"
            for entry in entries
        ]
        lines.append("")
    return "\n".join(lines)


def write_reports(rows: list[dict], out, surface: str = "detailed") -> dict:
    """``OUT/per_shape.csv``, ``OUT/metrics.csv`` and ``OUT/metrics.md``; returns their paths."""
    out = Path(out)
    summary = summarise(rows)
    paths = {"per_shape": out / "per_shape.csv", "csv": out / "metrics.csv", "markdown": out / "metrics.md"}
    _write_csv(paths["per_shape"], rows)
    _write_csv(paths["csv"], summary)
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(markdown_tables(summary, surface))
    return paths
