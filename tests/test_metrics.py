"""Metrics on analytic cases, and against second implementations where one exists."""

import numpy as np
import pytest
import trimesh
from scipy import ndimage
from scipy.spatial.transform import Rotation

from d2im_tf.evaluation import metrics
from d2im_tf.geometry import camera
from d2im_tf.geometry.triangles import within_distance

EMPTY = trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64))
VIEW = np.array([30.0, 20.0, 0.0, 0.8, 35.0, 32.0, 1.75, 0.0, 0.0, 0.0])  # a metadata row


def cube(side=0.5, offset=(0.0, 0.0, 0.0)):
    mesh = trimesh.creation.box((side, side, side))
    mesh.apply_translation(offset)
    return mesh


def ball(radius):
    return trimesh.creation.icosphere(subdivisions=5, radius=radius)


def lattice_points(spacing=0.1, count=6):
    axis = spacing * np.arange(count)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)


# ---------------------------------------------------------------------------------------------
# Chamfer and F-score


def test_chamfer_matches_brute_force_pairwise_distances():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(70, 3))
    pairwise = np.linalg.norm(a[:, None] - b[None], axis=-1)  # [50, 70]
    expected = 0.5 * (pairwise.min(axis=1).mean() + pairwise.min(axis=0).mean())
    assert metrics.chamfer_l1(a, b) == pytest.approx(expected, rel=1e-12)


def test_chamfer_of_concentric_spheres_is_the_gap():
    points_a, _ = metrics.sample_surface(ball(0.3), 20000, seed=0)
    points_b, _ = metrics.sample_surface(ball(0.35), 20000, seed=1)
    assert metrics.chamfer_l1(points_a, points_b) == pytest.approx(0.05, abs=0.002)


def test_surface_samples_are_seeded_and_carry_unit_face_normals():
    points, normals = metrics.sample_surface(cube(), 1000, seed=3)
    again, _ = metrics.sample_surface(cube(), 1000, seed=3)
    np.testing.assert_array_equal(points, again)
    np.testing.assert_allclose(np.abs(points).max(axis=1), 0.25, atol=1e-9)  # on the faces
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0)
    # Outward: the normal points along the coordinate that sits on the face.
    np.testing.assert_allclose(np.sum(normals * points, axis=1), 0.25, atol=1e-9)


def test_fscore_of_a_set_with_itself_and_with_shifted_copies():
    points = lattice_points()
    assert metrics.fscore(points, points, 0.01) == 1.0
    shifted = points + np.array([0.03, 0.0, 0.0])  # every nearest neighbour is 0.03 away
    np.testing.assert_allclose(metrics.fscore(points, shifted, [0.02, 0.04]), [0.0, 1.0])
    half = points.copy()
    half[::2] += np.array([0.05, 0.0, 0.0])  # half the points move half a lattice step
    # precision = recall = 1/2 below 0.05, so F = 1/2; above, every point has a partner.
    np.testing.assert_allclose(metrics.fscore(points, half, [0.01, 0.06]), [0.5, 1.0])


def test_precision_and_recall_see_a_phantom_sheet_and_a_missing_part():
    truth = lattice_points()
    # A phantom sheet: the truth plus as many points again, 0.5 away from every true point.
    sheet = np.concatenate([truth, truth + np.array([0.5, 0.0, 0.0]) + 10.0])
    precision, recall = metrics.precision_recall(sheet, truth, 0.05)
    assert (precision, recall) == (0.5, 1.0)  # half the prediction is far from the truth; nothing missing
    # A missing part: only a quarter of the truth is reconstructed.
    part = truth[: len(truth) // 4]
    precision, recall = metrics.precision_recall(part, truth, [0.01, 0.05])
    np.testing.assert_allclose(precision, [1.0, 1.0])
    np.testing.assert_allclose(recall, [len(part) / len(truth)] * 2)
    assert metrics.precision_recall(np.zeros((0, 3)), truth, 0.05) == (0.0, 0.0)
    assert metrics.precision_recall(np.zeros((0, 3)), np.zeros((0, 3)), 0.05) == (1.0, 1.0)


def square(side=2.0, height=0.0):
    """A side × side square (two triangles) in the plane z = height, centred on the z axis."""
    half = side / 2.0
    vertices = [[-half, -half, height], [half, -half, height], [half, half, height], [-half, half, height]]
    return trimesh.Trimesh(vertices, [[0, 1, 2], [0, 2, 3]], process=False)


def test_surface_precision_recall_measure_distances_to_the_surfaces_exactly():
    truth = square()
    points_true, _ = metrics.sample_surface(truth, 5000)
    for height, expected in ((0.049, 1.0), (0.051, 0.0)):  # every point of one square is `height` from the other
        predicted = square(height=height)
        points_pred, _ = metrics.sample_surface(predicted, 5000, seed=1)
        assert metrics.surface_precision_recall(points_pred, predicted, points_true, truth, 0.05) == (expected,) * 2
    # The sample sets alone overstate each distance by the gap to the nearest sample: at 0.049 a large
    # share of the points has no sample of the other square within 0.05.
    points_near, _ = metrics.sample_surface(square(height=0.049), 5000, seed=1)
    precision, recall = metrics.precision_recall(points_near, points_true, 0.05)
    assert precision < 0.9 and recall < 0.9
    # A phantom sheet of the same area far away: half the prediction's samples are far, nothing is missing.
    sheet = trimesh.util.concatenate([square(height=0.01), square(height=0.5)])
    points_sheet, _ = metrics.sample_surface(sheet, 5000, seed=2)
    precision, recall = metrics.surface_precision_recall(points_sheet, sheet, points_true, truth, 0.05)
    assert abs(precision - 0.5) < 0.02 and recall == 1.0
    assert metrics.surface_precision_recall(np.zeros((0, 3)), EMPTY, points_true, truth, 0.05) == (0.0, 0.0)
    assert metrics.surface_precision_recall(np.zeros((0, 3)), EMPTY, np.zeros((0, 3)), EMPTY, 0.05) == (1.0, 1.0)


def test_empty_point_sets_give_defined_values():
    points = lattice_points()
    nothing = np.zeros((0, 3))
    diagonal = 2.0 * np.sqrt(3.0)  # of the normalised frame's box [-1, 1]³
    assert metrics.chamfer_l1(points, nothing) == metrics.chamfer_l1(nothing, points) == diagonal
    assert metrics.chamfer_l1(nothing, nothing) == 0.0
    assert metrics.fscore(points, nothing, 0.01) == 0.0
    assert metrics.fscore(nothing, nothing, 0.01) == 1.0
    np.testing.assert_array_equal(metrics.fscore(nothing, points, [0.01, 0.1]), [0.0, 0.0])
    assert metrics.sample_surface(EMPTY, 100)[0].shape == (0, 3)


# ---------------------------------------------------------------------------------------------
# IoU


def test_occupancy_agrees_with_trimesh_contains():
    low, side = np.full(3, -0.5), 1.0
    centres = metrics.voxel_centres(32, low, side).reshape(-1, 3)
    for mesh in (ball(0.3), cube(0.5, offset=(0.1, -0.05, 0.0))):
        inside = metrics.occupancy(mesh, 32, low, side).reshape(-1)
        np.testing.assert_array_equal(inside, mesh.contains(centres))


def test_iou_of_offset_cubes_is_exact_on_aligned_voxels():
    # Faces at multiples of the 1/32 voxel side: voxelisation is exact, IoU = 0.375 / 0.625.
    shifted = cube(0.5, offset=(0.125, 0.0, 0.0))
    assert metrics.iou(cube(), shifted, bounds=(-0.5, 0.5)) == pytest.approx(0.6, abs=1e-12)
    assert metrics.iou(cube(), shifted) == pytest.approx(0.6, abs=0.03)  # union-bbox cube
    assert metrics.iou(cube(), cube()) == 1.0


def test_iou_of_concentric_spheres_is_the_volume_ratio():
    expected = (0.3 / 0.4) ** 3
    assert metrics.iou(ball(0.3), ball(0.4), bounds=(-0.5, 0.5)) == pytest.approx(expected, abs=0.03)
    assert metrics.iou(ball(0.3), ball(0.4)) == pytest.approx(expected, abs=0.03)


def test_iou_survives_a_hole_in_the_surface():
    closed = ball(0.3)
    keep = closed.triangles_center[:, 2] < 0.27  # cut a cap off the top
    holed = trimesh.Trimesh(closed.vertices, closed.faces[keep])
    assert not holed.is_watertight
    # Only the cap above the hole is ambiguous (0.7% of the ball); one-ray parity loses far more.
    assert metrics.iou(holed, closed, bounds=(-0.5, 0.5)) > 0.99


def test_iou_with_empty_meshes():
    assert metrics.iou(cube(), EMPTY) == 0.0
    assert metrics.iou(EMPTY, EMPTY) == 1.0


# ---------------------------------------------------------------------------------------------
# ECD-3D


def test_edge_points_of_a_cube_lie_on_its_edges_and_a_sphere_has_none():
    points, normals = metrics.sample_surface(cube(), 20000, seed=0)
    edges = metrics.edge_points(points, normals)
    # Distance to the nearest of the 12 edges: the two smallest of 0.25 - |x_i|.
    gaps = np.sort(0.25 - np.abs(edges), axis=1)  # [E, 3], gaps[:, 0] = 0 on a face
    assert 0.02 * len(points) < len(edges) < 0.2 * len(points)
    assert np.hypot(gaps[:, 0], gaps[:, 1]).max() < 0.03
    sphere_points, sphere_normals = metrics.sample_surface(ball(0.3), 20000, seed=0)
    assert len(metrics.edge_points(sphere_points, sphere_normals)) == 0


def test_ecd_3d_of_cubes_and_spheres():
    assert metrics.ecd_3d(cube(), cube()) == 0.0  # same seed, same samples
    independent = [metrics.edge_points(*metrics.sample_surface(cube(), 20000, seed=s)) for s in (1, 2)]
    assert metrics.chamfer_l1(*independent) < 0.005
    # Edges of cubes of sides 0.5 and 0.56 are 0.03 apart along two axes: 0.03·√2 = 0.042.
    assert metrics.ecd_3d(cube(0.5), cube(0.56)) == pytest.approx(0.03 * np.sqrt(2.0), abs=0.006)
    assert metrics.ecd_3d(ball(0.3), ball(0.35)) == 0.0  # no edges on either side
    assert metrics.ecd_3d(cube(), ball(0.3)) == metrics.EMPTY_DISTANCE
    assert metrics.ecd_3d(EMPTY, cube()) == metrics.EMPTY_DISTANCE


# ---------------------------------------------------------------------------------------------
# ECD-2D


def test_normal_map_edges_of_a_cube_are_its_outline_and_creases():
    normal_map = metrics.normal_map(cube(), VIEW)
    edges = metrics.normal_map_edges(normal_map).astype(int)  # [E, 2] (row, col)
    assert 300 < len(edges) < 1500  # nine visible edges of ~100 px, a line or two wide
    # Every edge pixel is within a pixel of a jump of the normal map.
    jumps = np.zeros(normal_map.shape[:2], dtype=bool)
    jumps[1:] |= np.linalg.norm(np.diff(normal_map, axis=0), axis=-1) > 0.3
    jumps[:, 1:] |= np.linalg.norm(np.diff(normal_map, axis=1), axis=-1) > 0.3
    near = ndimage.binary_dilation(jumps, iterations=2)
    assert near[edges[:, 0], edges[:, 1]].all()
    # A sphere's smooth shading has no edges: all of them hug its outline.
    smooth = metrics.normal_map(ball(0.3), VIEW)
    outline = metrics.normal_map_edges(smooth).astype(int)
    covered = np.linalg.norm(smooth, axis=-1) > 0
    near = ndimage.binary_dilation(covered & ~ndimage.binary_erosion(covered), iterations=3)
    assert len(outline) > 300 and near[outline[:, 0], outline[:, 1]].all()


def test_ecd_2d_of_cubes():
    assert metrics.ecd_2d(cube(), cube(), VIEW) == 0.0
    rotated = cube()
    rotated.apply_transform(trimesh.transformations.rotation_matrix(np.radians(5.0), [0, 1, 0]))
    assert 0.5 < metrics.ecd_2d(cube(), rotated, VIEW) < 10.0
    assert metrics.ecd_2d(cube(), EMPTY, VIEW) == pytest.approx(224 * np.sqrt(2.0))
    assert metrics.ecd_2d(EMPTY, EMPTY, VIEW) == 0.0


# --------------------------------------------------------------------------------------------
# Camera pose


def _rotation_z(degrees):
    angle = np.radians(degrees)
    return np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])


def test_pose_errors_of_analytic_offsets():
    """Points on a circle of radius r = 0.3 around the optical axis at depth 2: a sideways shift of 0.1
    moves each by 0.1 (f·0.1/2 pixels); a roll by θ = 30° moves each by 2r·sin(θ/2) (f/2 times that)."""
    f = camera.focal_pixels(224)
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    points = np.column_stack([0.3 * np.cos(angles), 0.3 * np.sin(angles), np.zeros(12)])
    truth = (np.eye(3), np.array([0.0, 0.0, 2.0]))
    assert metrics.pose_errors(points, truth, truth) == {"camera_d3d": 0.0, "camera_d2d": 0.0, "rotation_error": 0.0}
    shifted = metrics.pose_errors(points, (np.eye(3), np.array([0.1, 0.0, 2.0])), truth)
    assert shifted["camera_d3d"] == pytest.approx(0.1) and shifted["camera_d2d"] == pytest.approx(f * 0.1 / 2)
    assert shifted["rotation_error"] == 0.0
    rolled = metrics.pose_errors(points, (_rotation_z(30.0), truth[1]), truth)
    chord = 2 * 0.3 * np.sin(np.radians(15.0))
    assert rolled["camera_d3d"] == pytest.approx(chord) and rolled["camera_d2d"] == pytest.approx(f * chord / 2)
    assert rolled["rotation_error"] == pytest.approx(30.0)
    assert metrics.pose_errors(np.zeros((0, 3)), (np.eye(3), np.ones(3)), truth) == pytest.approx(
        {"camera_d3d": 0.0, "camera_d2d": 0.0, "rotation_error": 0.0}
    )
    behind = metrics.pose_errors(points, (np.eye(3), np.array([0.0, 0.0, -2.0])), truth)
    assert behind["camera_d3d"] == pytest.approx(4.0) and behind["camera_d2d"] == pytest.approx(224 * np.sqrt(2))


def test_pose_reprojection_error_matches_projection_matrices():
    """d_2D against a second method: the points projected with the two DISN cameras' P = K·[R|t] matrices
    (camera.projection_matrix) by camera.project; the rotation error against scipy's rotation angle."""
    points = np.random.default_rng(5).uniform(-0.4, 0.4, (300, 3))
    views = [(30.0, 20.0, 0.8), (41.0, 12.0, 0.75)]
    poses = [camera.world_to_camera(*view) for view in views]
    pixels = [camera.project(points, camera.projection_matrix(*view, 224))[0].numpy() for view in views]
    errors = metrics.pose_errors(points, poses[1], poses[0])
    assert errors["camera_d2d"] == pytest.approx(np.linalg.norm(pixels[1] - pixels[0], axis=1).mean(), rel=1e-5)
    angle = Rotation.from_matrix(poses[0][0] @ poses[1][0].T).magnitude()  # scipy's axis-angle
    assert errors["rotation_error"] == pytest.approx(np.degrees(angle), abs=1e-6)


@pytest.mark.parametrize("resolution, distance", [(12, 0.09), (20, 0.04)])
def test_near_surface_agrees_with_the_point_triangle_test(resolution, distance):
    """The grid-range search against within_distance (a KD-tree over split triangles) on a rotated box
    and a sphere: the same centres, and some of each kind."""
    box = trimesh.creation.box(extents=[0.9, 0.5, 0.7])
    box.apply_transform(trimesh.transformations.rotation_matrix(0.6, [1.0, 2.0, 0.5]))
    for mesh in (box, trimesh.creation.icosphere(subdivisions=2, radius=0.6)):
        near = metrics.near_surface(mesh, resolution, [-1.0] * 3, 2.0, distance).reshape(-1)
        centres = metrics.voxel_centres(resolution, [-1.0] * 3, 2.0).reshape(-1, 3)
        expected = within_distance(centres, mesh.triangles, distance)
        np.testing.assert_array_equal(near, expected)
        assert 0 < near.sum() < len(near) // 2
    assert not metrics.near_surface(EMPTY, resolution, [-1.0] * 3, 2.0, distance).any()
