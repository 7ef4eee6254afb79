"""Evaluation tables: the metrics of a GT mesh against itself are perfect, and so are the camera
metrics of the GT pose; ``d2im evaluate`` writes per-category tables with the paper's columns (and
DISN's camera metrics for a model with a camera network); a missing GT mesh is a one-line error."""

import csv
import shutil

import numpy as np
import pytest
import trimesh

from d2im_tf.cli import main
from d2im_tf.data import disn_format as fmt
from d2im_tf.evaluation import evaluate as evaluation
from d2im_tf.evaluation.evaluate import COLUMNS, POSE_COLUMNS, EvaluationCase, evaluation_view, shape_metrics
from d2im_tf.geometry import camera
from d2im_tf.geometry.frames import normalised_pose, to_normalised, to_world

from conftest import TOY_CATEGORY


def test_evaluation_view_follows_the_reference():
    assert evaluation_view("03001627", 36) == 32
    assert evaluation_view("02958343", 36) == 6  # car
    assert evaluation_view("03001627", 4) == 3  # fewer views: the last one


def test_gt_against_itself_is_perfect(data_with_meshes):
    layout = fmt.DatasetLayout(data_with_meshes)
    params = fmt.read_norm_params(layout.samples_path(TOY_CATEGORY, "t"))
    world = trimesh.load(layout.mesh_path(TOY_CATEGORY, "t"), force="mesh")
    truth = to_normalised(world, params)
    np.testing.assert_allclose(np.linalg.norm(truth.vertices, axis=1), 0.3, atol=1e-6)  # the normalised sphere
    np.testing.assert_allclose(to_world(truth, params).vertices, world.vertices, atol=1e-12)
    row = fmt.read_metadata(layout.metadata_path(TOY_CATEGORY, "t"))[3]
    values = shape_metrics(truth, truth, row, params)
    assert values.pop("relief_angle") == pytest.approx(0.0, abs=1e-5)  # arccos of a rounded 1
    assert values == {
        "iou": 1.0,
        "chamfer_l1": 0.0,
        "ecd_3d": 0.0,
        "ecd_2d": 0.0,
        "fscore_1pct": 1.0,
        "precision_005": 1.0,
        "recall_005": 1.0,
    }
    shifted = shape_metrics(to_normalised(world, params * [1, 1, 1, 1.1]), truth, row, params)
    assert shifted["iou"] < 1.0 and shifted["chamfer_l1"] > 0.0  # and the metrics do see a difference


@pytest.mark.slow
def test_evaluate_writes_the_tables(model_dir, data_with_meshes, tmp_path):
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            "--model",
            str(model_dir),
            "--data",
            str(data_with_meshes),
            "--split",
            "test",
            "--resolution",
            "32",
            "-o",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    markdown = (out / "metrics.md").read_text()
    assert "Chamfer-L1" in markdown and "| category | shapes | " + " | ".join(COLUMNS.values()) in markdown
    with open(out / "metrics.csv") as handle:
        summary = list(csv.DictReader(handle))
    assert [(row["camera"], row["category"]) for row in summary] == [("gt", TOY_CATEGORY), ("gt", "mean")]
    with open(out / "per_shape.csv") as handle:
        shapes = list(csv.DictReader(handle))
    assert [(row["shape"], row["view"]) for row in shapes] == [("t", "3")]  # 4 views: view 3
    for row in summary + shapes:
        assert np.all(np.isfinite([float(row[key]) for key in COLUMNS]))
        assert 0.0 <= float(row["iou"]) <= 1.0 and 0.0 <= float(row["fscore_1pct"]) <= 1.0


def test_pose_metrics_in_either_frame(data_with_meshes):
    """The GT pose scores 0; a camera shifted sideways by δ in the world frame's camera space scores as the
    normalised frame's pose shifted by δ/m (d_3D in normalised units, the same pixels)."""
    case = EvaluationCase.load(fmt.DatasetLayout(data_with_meshes), TOY_CATEGORY, "t")
    rotation, translation = camera.world_to_camera(case.view_row[0], case.view_row[1], case.view_row[3])
    normalised = normalised_pose(rotation, translation, case.norm_params)
    exact = evaluation.pose_metrics(normalised, case, "normalised")
    assert exact == pytest.approx({key: 0.0 for key in POSE_COLUMNS}, abs=1e-9)
    shift, scale = np.array([0.05, 0.0, 0.0]), case.norm_params[3]
    world = evaluation.pose_metrics((rotation, translation + shift), case, "world")
    assert world["camera_d3d"] == pytest.approx(0.05 / scale)
    moved = (normalised[0], normalised[1] + shift / scale)
    assert world == pytest.approx(evaluation.pose_metrics(moved, case, "normalised"))
    assert world["camera_d2d"] > 0.5 and world["rotation_error"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_evaluate_with_a_camera_network_adds_the_pose_metrics(tiny_export, data_with_meshes, tmp_path):
    out = tmp_path / "eval"
    model = tiny_export("full", "none", with_camera=True).path
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(model),
                "--data",
                str(data_with_meshes),
                "--resolution",
                "32",
                "-o",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    with open(out / "per_shape.csv") as handle:
        rows = {row["camera"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"gt", "predicted"}
    assert all(rows["gt"][key] == "" for key in POSE_COLUMNS)  # the GT camera has no pose error
    errors = {key: float(rows["predicted"][key]) for key in POSE_COLUMNS}
    assert errors["camera_d3d"] > 0 and errors["camera_d2d"] > 0 and 0 < errors["rotation_error"] <= 180, errors
    predicted_table = (out / "metrics.md").read_text().split("## Predicted camera")[1]
    assert " | ".join([*COLUMNS.values(), *POSE_COLUMNS.values()]) in predicted_table


def test_missing_gt_mesh_is_a_data_error(model_dir, data_with_meshes, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(data_with_meshes, root)
    missing = fmt.DatasetLayout(root).mesh_path(TOY_CATEGORY, "t")
    missing.unlink()
    code = main(
        ["evaluate", "--model", str(model_dir), "--data", str(root), "-o", str(tmp_path / "eval"), "--no-progress"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and str(missing) in err and len(err.splitlines()) == 1


def test_evaluate_base_surface_scores_the_base_fields_mesh(model_dir, data_with_meshes, tmp_path, capsys):
    from d2im_tf.inference.reconstruct import Reconstructor

    out = tmp_path / "eval_base"
    arguments = ["evaluate", "--model", str(model_dir), "--data", str(data_with_meshes), "--resolution", "32"]
    assert main([*arguments, "--surface", "base", "-o", str(out), "--no-progress"]) == 0
    assert (out / "metrics.md").read_text().startswith("# Evaluation of the base field f_B alone")
    with open(out / "per_shape.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    # the same numbers from the base field's mesh reconstructed directly
    case = EvaluationCase.load(fmt.DatasetLayout(data_with_meshes), TOY_CATEGORY, "t")
    result = Reconstructor(model_dir, resolution=32).reconstruct(
        case.pixels, case.view_row, case.norm_params, surface="base"
    )
    mesh = to_normalised(result.mesh, case.norm_params) if result.frame == "world" else result.mesh
    expected = shape_metrics(mesh, case.truth, case.view_row, case.norm_params)
    for key in ("iou", "chamfer_l1", "ecd_2d", "relief_angle"):
        assert float(row[key]) == pytest.approx(expected[key], rel=0.05, abs=1e-3, nan_ok=True), key
    capsys.readouterr()
    refused = main(
        [
            "evaluate",
            "--model",
            str(model_dir),
            "--images",
            str(tmp_path),
            "--surface",
            "base",
            "-o",
            str(tmp_path / "x"),
        ]
    )
    assert refused == 2
    assert "--surface base needs --data" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_relief_pixels_come_from_the_shape_without_its_relief_when_it_is_known():
    """A slab with relief on its front face (+z): seen from the front, the slab without its relief
    misses every relief pixel by more than the threshold and the GT scores 0; seen from the back, the
    known coarse shape leaves no relief pixel, where the GT's smoothed normals flag its edges."""
    from d2im_tf.data.synth import shapes
    from d2im_tf.data.synth.relief import random_relief
    from d2im_tf.evaluation import metrics, relief

    parts = [shapes.box([0, 0, 0], [0.4, 0.3, 0.05], relief=random_relief(np.random.default_rng(3), 0.4, 0.3, 0.03))]
    truth = shapes.mesh_parts(parts, 128)
    coarse = shapes.coarse_mesh(parts, truth.metadata["family_frame"], 128)
    params = np.array([0.0, 0.0, 0.0, 1.0])  # normalised = world
    front, back = (np.array([az, 20, 0, 0.9, 35, 32, 1.75, 0, 0, 0], float) for az in (90, 270))
    assert relief.relief_pixels(metrics.normal_map(truth, front), metrics.normal_map(coarse, front)).sum() > 1000
    assert shape_metrics(coarse, truth, front, params, coarse)["relief_angle"] > relief.RELIEF_THRESHOLD
    assert shape_metrics(truth, truth, front, params, coarse)["relief_angle"] == pytest.approx(0.0, abs=1e-5)
    assert relief.relief_pixels(metrics.normal_map(truth, back), metrics.normal_map(coarse, back)).sum() == 0
    assert relief.relief_pixels(metrics.normal_map(truth, back)).sum() > 100  # the smoothed normals: its edges


def test_shapes_whose_view_shows_no_relief_are_left_out_of_the_relief_means():
    metrics = {key: 1.0 for key in COLUMNS}
    rows = [
        {"camera": "gt", "category": "a", **metrics, "relief_angle": 10.0},
        {"camera": "gt", "category": "a", **metrics, "relief_angle": float("nan")},
        {"camera": "gt", "category": "a", **metrics, "relief_angle": 20.0},
        {"camera": "gt", "category": "b", **metrics, "relief_angle": float("nan")},
        {"camera": "gt", "category": "c", **metrics, "relief_angle": 40.0},
    ]
    summary = {row["category"]: row for row in evaluation.summarise(rows)}
    assert summary["a"]["relief_angle"] == 15.0 and summary["a"]["shapes"] == 3
    assert np.isnan(summary["b"]["relief_angle"]) and summary["b"]["iou"] == 1.0
    assert summary["mean"]["relief_angle"] == 27.5  # categories a and c; b has no value
    assert "| b | 1 | " in evaluation.markdown_tables(evaluation.summarise(rows)) and "| – |" in (
        evaluation.markdown_tables(evaluation.summarise(rows))
    )
