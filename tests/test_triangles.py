"""Exact point–triangle geometry: analytic distances, and trimesh's closest points as a second method."""

import numpy as np
import pytest
import trimesh

from d2im_tf.geometry import triangles

SQUARE = np.array(
    [[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]], [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]]
)  # the unit square in z = 0


def test_closest_points_on_a_triangle_land_on_the_face_an_edge_or_a_vertex():
    a, b, c = (np.array([v], dtype=float) for v in ([0, 0, 0], [1, 0, 0], [0, 1, 0]))
    cases = {  # point: (closest point, feature code)
        (0.2, 0.2, 0.7): ((0.2, 0.2, 0.0), 0),
        (-1.0, -2.0, 0.3): ((0.0, 0.0, 0.0), 1),
        (3.0, -0.5, 0.0): ((1.0, 0.0, 0.0), 2),
        (0.5, -1.0, 0.0): ((0.5, 0.0, 0.0), 4),
        (1.0, 1.0, 0.0): ((0.5, 0.5, 0.0), 5),
        (-1.0, 0.5, 2.0): ((0.0, 0.5, 0.0), 6),
    }
    for point, (expected, feature) in cases.items():
        closest, hit = triangles.closest_points_on_triangles(np.array([point], float), a, b, c)
        np.testing.assert_allclose(closest[0], expected, atol=1e-12)
        assert hit[0] == feature


def test_within_distance_of_a_square_above_beside_and_beyond_a_corner():
    points = np.array(
        [
            [0.5, 0.5, 0.049],  # above the face: 0.049
            [0.5, 0.5, -0.051],  # below it: 0.051
            [1.03, 0.5, 0.039],  # beside an edge: √(0.03² + 0.039²) = 0.0492
            [1.03, 0.5, 0.041],  # √(0.03² + 0.041²) = 0.0508
            [1.03, 1.03, 0.02],  # beyond a corner: √(0.03² + 0.03² + 0.02²) = 0.0469
            [1.04, 1.04, 0.0],  # 0.0566
        ]
    )
    np.testing.assert_array_equal(
        triangles.within_distance(points, SQUARE, 0.05), [True, False, True, False, True, False]
    )
    assert triangles.within_distance(np.zeros((0, 3)), SQUARE, 0.05).shape == (0,)
    assert not triangles.within_distance(points, np.zeros((0, 3, 3)), 0.05).any()


@pytest.mark.parametrize(
    "mesh",
    [
        trimesh.creation.box((1.0, 0.6, 1.4)),  # 12 large faces
        trimesh.creation.icosphere(subdivisions=4, radius=0.8),  # many small ones
        trimesh.creation.annulus(0.2, 0.5, 0.3),
    ],  # long thin ones
    ids=["box", "icosphere", "annulus"],
)
def test_within_distance_agrees_with_trimesh_closest_points(mesh):
    rng = np.random.default_rng(0)
    points = np.concatenate(
        [mesh.sample(1500, seed=1) + rng.normal(0.0, 0.06, (1500, 3)), rng.uniform(-1.0, 1.0, (500, 3))]
    )
    _, distance, _ = trimesh.proximity.closest_point(mesh, points)
    clear = np.abs(distance - 0.05) > 1e-9  # away from the threshold itself
    near = triangles.within_distance(points, mesh.triangles, 0.05)
    assert 0.2 < near.mean() < 0.8  # both answers are well represented
    np.testing.assert_array_equal(near[clear], distance[clear] <= 0.05)


def test_split_to_reach_keeps_the_surface_and_bounds_the_reach():
    box = trimesh.creation.box((2.0, 1.0, 0.5))
    split = triangles.split_to_reach(box.triangles, 0.1)
    centroids = split.mean(axis=1)
    assert np.linalg.norm(split - centroids[:, None, :], axis=2).max() <= 0.1
    areas = 0.5 * np.linalg.norm(np.cross(split[:, 1] - split[:, 0], split[:, 2] - split[:, 0]), axis=1)
    np.testing.assert_allclose(areas.sum(), box.area, rtol=1e-12)
    # Every piece lies in the plane of one of the box's faces, inside the box.
    assert np.all(np.abs(split) <= np.array([1.0, 0.5, 0.25]) + 1e-12)
    on_a_face = np.isclose(np.abs(split), [1.0, 0.5, 0.25]).all(axis=1)  # [F', 3 axes]: all corners on one
    assert on_a_face.any(axis=1).all()
