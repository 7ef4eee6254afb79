"""Camera geometry against the reference's check value (docs/conventions.md, "Camera") and analytic identities."""

import numpy as np
import pytest
import tensorflow as tf

from d2im_tf.geometry import camera

from helpers import unproject


def test_check_value_of_the_reference():
    P = camera.projection_matrix(30.0, 20.0, 0.8, image_size=224)
    uv, depth = camera.project(tf.constant([[[0.1, -0.2, 0.3]]], tf.float64), P[None])
    np.testing.assert_allclose(uv.numpy()[0, 0], [70.7480, 164.8630], atol=1e-3)
    np.testing.assert_allclose(depth.numpy()[0, 0], 1.246070, atol=1e-5)
    np.testing.assert_allclose(camera.project_numpy([[0.1, -0.2, 0.3]], P), [[70.7480, 164.8630]], atol=1e-3)
    np.testing.assert_allclose(camera.homogeneous_pixels([[0.1, -0.2, 0.3]], P)[0, 2], 1.246070, atol=1e-5)


def test_intrinsics_and_decomposition():
    K = camera.intrinsics(224)
    assert K[0, 0] == pytest.approx(245.0) and K[0, 2] == pytest.approx(112.0)
    R, t = camera.world_to_camera(75.0, 33.0, 0.7)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    # The camera sits 1.75·d from the origin and looks at it: the origin is straight ahead.
    center = camera.camera_centre(R, t)
    assert np.linalg.norm(center) == pytest.approx(1.75 * 0.7)
    from_projection = camera.projection_centre(camera.projection_matrix(75.0, 33.0, 0.7)[None])
    np.testing.assert_allclose(from_projection.numpy()[0], center, atol=1e-12)
    np.testing.assert_allclose(
        camera.projection_centre_numpy(camera.projection_matrix(75.0, 33.0, 0.7)), center, atol=1e-12
    )
    np.testing.assert_allclose(t, [0.0, 0.0, 1.75 * 0.7], atol=1e-12)
    uv, depth = camera.project(tf.zeros([1, 3], tf.float64), camera.projection_matrix(75.0, 33.0, 0.7))
    np.testing.assert_allclose(uv.numpy()[0], [112.0, 112.0], atol=1e-9)


def test_pixel_rays_pass_through_the_pixel_centres_in_front_of_the_camera():
    P = camera.projection_matrix(30.0, 20.0, 0.8, image_size=224)
    rows, columns = np.array([0, 17, 111, 223]), np.array([5, 200, 112, 0])
    directions = camera.pixel_ray_directions(P, rows, columns)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0, atol=1e-12)
    centre = camera.projection_centre_numpy(P)
    for depth in (0.5, 2.0):  # any point of the ray projects back to its pixel's centre, in front (w > 0)
        points = centre + depth * directions
        np.testing.assert_allclose(camera.project_numpy(points, P), np.stack([columns, rows], 1) + 0.5, atol=1e-9)
        assert np.all(camera.homogeneous_pixels(points, P)[:, 2] > 0)


def test_elevation_looks_down_and_image_y_is_down():
    # From a raised camera, a point higher up (ShapeNet y is up) appears higher in the image (smaller v).
    P = camera.projection_matrix(0.0, 30.0, 1.0)
    uv, _ = camera.project(tf.constant([[0.0, 0.0, 0.0], [0.0, 0.2, 0.0]], tf.float64), P)
    assert uv.numpy()[1, 1] < uv.numpy()[0, 1]


def test_project_unproject_round_trip_batched():
    rng = np.random.default_rng(0)
    P = np.stack(
        [
            camera.projection_matrix(az, el, d, 137)
            for az, el, d in zip(rng.uniform(0, 360, 4), rng.uniform(0, 45, 4), rng.uniform(0.6, 1.0, 4))
        ]
    )
    points = rng.uniform(-0.5, 0.5, (4, 100, 3))
    uv, depth = camera.project(points, P)
    back = unproject(uv, depth, P)
    np.testing.assert_allclose(back.numpy(), points, atol=1e-9)


def test_projection_is_differentiable():
    P = camera.projection_matrix(10.0, 10.0, 0.9)
    points = tf.Variable([[0.1, 0.2, -0.1]], dtype=tf.float64)
    with tf.GradientTape() as tape:
        uv, _ = camera.project(points, P)
    grad = tape.jacobian(uv, points).numpy().reshape(2, 3)
    # Finite differences as the independent truth.
    eps = 1e-6
    numeric = np.zeros((2, 3))
    for k in range(3):
        step = np.zeros((1, 3))
        step[0, k] = eps
        plus, _ = camera.project(points.numpy() + step, P)
        minus, _ = camera.project(points.numpy() - step, P)
        numeric[:, k] = (plus.numpy() - minus.numpy())[0] / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6)


def _random_rotations(n, seed=1):
    q = np.random.default_rng(seed).normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def test_6d_round_trip_on_random_rotations():
    rotations = _random_rotations(256)
    six = camera.rotation_to_6d(rotations)
    back = camera.rotation_from_6d(six).numpy()
    np.testing.assert_allclose(back, rotations, atol=1e-12)
    again = camera.rotation_from_6d(camera.rotation_to_6d(back)).numpy()
    np.testing.assert_allclose(again, rotations, atol=1e-12)


def test_6d_of_arbitrary_vectors_is_a_proper_rotation():
    b = np.random.default_rng(2).normal(size=(512, 6))
    R = camera.rotation_from_6d(b).numpy()
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    # The first column is the normalised first half of b (Zhou et al.'s Gram-Schmidt).
    np.testing.assert_allclose(R[:, :, 0], b[:, :3] / np.linalg.norm(b[:, :3], axis=1, keepdims=True), atol=1e-12)


def test_camera_pointcloud_loss():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(2, 50, 3))
    R = _random_rotations(2, seed=4)
    t = rng.normal(size=(2, 3))
    assert float(camera.camera_pointcloud_loss(points, R, t, R, t)) == pytest.approx(0.0, abs=1e-20)
    # A pure translation error of δ moves every point by δ: loss = |δ|².
    delta = np.array([0.1, -0.2, 0.05])
    loss = camera.camera_pointcloud_loss(points, R, t + delta, R, t)
    assert float(loss) == pytest.approx(np.sum(delta**2))


def test_reframed_pose_moves_the_centre_exactly_and_scales_the_object():
    """A re-framing (scale 1.3, a shift) of a view of an object off the optical axis: K·[R' | t'] puts the
    object's centre exactly where A·K·[R | t] does, and every point of a sphere of radius 0.3 at a
    distance ~2.8 within 4% of the sphere's projected radius (the perspective of the shorter distance)."""
    size = 96
    k = camera.intrinsics(size)
    rotation = camera.extrinsics(40.0, 25.0, 0.8)[0]
    translation = np.array([0.25, -0.2, 2.8])
    transform = np.array([[1.3, 0.0, -25.0], [0.0, 1.3, -5.0], [0.0, 0.0, 1.0]])
    turned, moved = (v.numpy() for v in camera.reframed_pose(rotation, translation, transform, size))
    np.testing.assert_allclose(turned @ turned.T, np.eye(3), atol=1e-9)
    assert np.linalg.norm(moved) == pytest.approx(np.linalg.norm(translation) / 1.3)
    rng = np.random.default_rng(0)
    points = rng.normal(size=(500, 3))
    points = np.vstack([np.zeros(3), 0.3 * points / np.linalg.norm(points, axis=1, keepdims=True)])
    expected = camera.project(points[None], (transform @ k @ np.column_stack([rotation, translation]))[None])[0]
    got = camera.project(points[None], (k @ np.column_stack([turned, moved]))[None])[0]
    expected, got = expected.numpy()[0], got.numpy()[0]
    np.testing.assert_allclose(got[0], expected[0], atol=1e-6)
    radius = np.linalg.norm(expected[1:] - expected[0], axis=1).max()
    assert np.abs(got[1:] - expected[1:]).max() < 0.04 * radius


def test_the_pose_of_a_reframed_input_is_taken_back_to_the_input_as_given():
    """What the camera network is trained to predict for a re-framed render (``reframed_pose`` of the
    render's pose) comes back as the render's own pose, which DISN's camera metrics compare with; the
    pose as predicted, the re-framed view's, is 1/1.3 of its distance away and far from it."""
    from d2im_tf.evaluation import metrics

    size = 96
    rotation = camera.extrinsics(40.0, 25.0, 0.8)[0]
    translation = np.array([0.25, -0.2, 2.8])
    reframing = np.array([[1.3, 0.0, -25.0], [0.0, 1.3, -5.0], [0.0, 0.0, 1.0]])
    predicted = tuple(v.numpy() for v in camera.reframed_pose(rotation, translation, reframing, size))
    back = camera.unreframed_pose(*predicted, reframing, size)
    np.testing.assert_allclose(back[0], rotation, atol=1e-5)
    np.testing.assert_allclose(back[1], translation, atol=1e-5)
    points = np.random.default_rng(1).normal(size=(200, 3)) * 0.3
    assert metrics.pose_errors(points, back, (rotation, translation))["camera_d2d"] < 1e-3
    assert metrics.pose_errors(points, predicted, (rotation, translation))["camera_d3d"] > 0.5
    same = camera.unreframed_pose(rotation, translation, np.eye(3), size)  # no re-framing: the pose as it is
    np.testing.assert_allclose(same[1], translation, atol=1e-6)
