"""The pose fit against the silhouette (d2im_tf.inference.pose_fit): from a perturbed pose it must find the
true pose of a known shape, whose foreground is drawn independently by ray casting."""

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from d2im_tf.evaluation.silhouette import render_with_projection
from d2im_tf.geometry import camera
from d2im_tf.inference.pose_fit import SilhouetteCost, fit_pose

from conftest import ROOT

SIZE = 96


def l_shape() -> trimesh.Trimesh:
    """An asymmetric solid: a slab with a post at one corner (no mirror or turn maps its outline onto itself)."""
    slab = trimesh.creation.box(extents=[0.9, 0.15, 0.5])
    post = trimesh.creation.box(
        extents=[0.15, 0.7, 0.15], transform=trimesh.transformations.translation_matrix([0.35, 0.4, 0.15])
    )
    shape = trimesh.util.concatenate([slab, post])  # overlapping parts: the outline is the union's
    shape.apply_scale(0.5)  # ShapeNet's scale (radius < 0.5), which DISN's views frame
    return shape


def true_pose():
    return camera.world_to_camera(40.0, 25.0, 0.8)  # (R [3, 3], t [3]): a DISN view of the frame


def foreground(mesh, rotation, translation):
    projection = camera.intrinsics(SIZE) @ np.hstack([rotation, translation[:, None]])
    return render_with_projection(mesh, projection, SIZE, SIZE)[0]


def rotation_error_degrees(a, b) -> float:
    return float(np.degrees(Rotation.from_matrix(a.T @ b).magnitude()))


@pytest.mark.parametrize(
    "turn, axis, shift",
    [(20.0, [0, 1, 0], [0.05, -0.04, 0.1]), (12.0, [1, 0, 0.3], [0.0, 0.06, -0.15]), (70.0, [0, 1, 0], [0, 0, 0])],
)
def test_fit_recovers_the_true_pose_from_a_perturbed_one(turn, axis, shift):
    mesh = l_shape()
    rotation, translation = true_pose()
    mask = foreground(mesh, rotation, translation)
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    start_rotation = rotation @ Rotation.from_rotvec(np.radians(turn) * axis).as_matrix()
    start_translation = translation + np.asarray(shift)
    assert rotation_error_degrees(start_rotation, rotation) == pytest.approx(turn, abs=1e-6)
    points = trimesh.sample.sample_surface(mesh, 6000, seed=1)[0]
    fit = fit_pose(points, mask, camera.intrinsics(SIZE), start_rotation, start_translation)
    assert fit.cost < fit.initial_cost
    assert rotation_error_degrees(fit.rotation, rotation) < 5.0  # an outline pins the pose to a few degrees
    assert np.linalg.norm(fit.translation - translation) < 0.08 * np.linalg.norm(translation)
    fitted_mask = foreground(mesh, fit.rotation, fit.translation)
    assert (fitted_mask & mask).sum() / (fitted_mask | mask).sum() > 0.85  # ~600 pixels: the edge counts


def test_cost_is_least_at_the_true_pose_and_grows_with_the_error():
    mesh = l_shape()
    rotation, translation = true_pose()
    mask = foreground(mesh, rotation, translation)
    cost = SilhouetteCost(trimesh.sample.sample_surface(mesh, 4000, seed=2)[0], mask, camera.intrinsics(SIZE))
    costs = [
        cost(rotation @ Rotation.from_rotvec([0, np.radians(angle), 0]).as_matrix(), translation)
        for angle in (0, 5, 15, 30)
    ]
    assert costs[0] < 0.6  # points on the true surface project inside the true outline, up to a pixel
    assert costs == sorted(costs)
    assert cost(rotation, translation + [0, 0, 5.0]) > costs[0]  # far away: small, the outline missed


def test_reconstruction_fits_the_pose_by_default_and_keeps_the_networks_with_it_off():
    """With the bundled model on the chair of examples/: off, the pose is the camera network's output; on,
    the mesh drawn with the written projection covers the chair's outline better (ray casting)."""
    import tensorflow as tf
    from PIL import Image

    from d2im_tf.bundled import BUNDLED_MODEL
    from d2im_tf.evaluation.silhouette import silhouette_scores
    from d2im_tf.inference.reconstruct import Reconstructor

    pixels = np.asarray(Image.open(ROOT / "examples" / "03001627_syn00005.png"))
    fitted = Reconstructor(BUNDLED_MODEL, resolution=64)
    assert fitted.fit_pose
    kept = fitted.with_resolution(64)
    kept.fit_pose = False
    results = {"on": fitted.reconstruct(pixels), "off": kept.reconstruct(pixels)}
    network = kept.model.signatures["camera"](image=tf.constant(results["off"].image[None]))
    np.testing.assert_allclose(results["off"].pose[0], network["rotation"][0].numpy(), atol=1e-6)
    np.testing.assert_allclose(results["off"].pose[1], network["translation"][0].numpy(), atol=1e-6)
    iou = {}
    for name, result in results.items():
        mask = render_with_projection(result.mesh, result.input_projection, *pixels.shape[:2])[0]
        iou[name] = silhouette_scores(mask, result.foreground)["iou"]
    assert rotation_error_degrees(results["on"].pose[0], results["off"].pose[0]) > 1.0
    assert iou["on"] > iou["off"] + 0.1, iou
