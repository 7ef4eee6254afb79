"""Renderer: pixel convention, depth, normals and silhouettes against independent computations
(analytic views of a box; ``camera.project`` of mesh vertices; trimesh closest faces)."""

import numpy as np
import pytest
import trimesh

from d2im_tf.data import disn_format as fmt
from d2im_tf.data.render import Renderer, random_views
from d2im_tf.data.synth import shapes
from d2im_tf.geometry import camera

from helpers import read_depth

SIZE = 96


def test_front_view_of_a_cube_is_analytic():
    """Camera on +z (az 90°, el 0°) at 1.4: the face z = 0.25 is at depth 1.15 with normal (0, 0, -1)."""
    view = Renderer(trimesh.creation.box(extents=[0.5, 0.5, 0.5])).render([90, 0, 0, 0.8], 224)
    half_width = camera.focal_pixels(224) * 0.25 / 1.15
    centres = np.arange(224) + 0.5 - 112
    inside = np.abs(centres) < half_width
    np.testing.assert_array_equal(view.mask, inside[:, None] & inside[None, :])
    np.testing.assert_allclose(view.depth[view.mask], 1.15, atol=1e-9)
    np.testing.assert_allclose(view.normals[view.mask], [[0, 0, -1]] * view.mask.sum(), atol=1e-9)
    assert np.all(view.rgba[view.mask, 3] == 255) and np.all(view.rgba[~view.mask, 3] == 0)


def test_image_axes_x_right_y_down():
    """A box shifted to world +x and +y appears right of and above the image centre (az 90°)."""
    box = trimesh.creation.box(extents=[0.1, 0.1, 0.1])
    box.apply_translation([0.2, 0.15, 0.0])
    view = Renderer(box).render([90, 0, 0, 0.8], 224)
    rows, cols = np.nonzero(view.mask)
    assert cols.min() > 112 and rows.max() < 112


def test_views_follow_disn_ranges():
    rows = random_views(np.random.default_rng(0), 500)
    assert rows.shape == (500, 10)
    assert np.all((rows[:, 0] >= 0) & (rows[:, 0] < 360))
    assert np.all((rows[:, 1] >= 0) & (rows[:, 1] <= 45))
    assert np.all((rows[:, 3] >= 0.6) & (rows[:, 3] <= 1.0))
    np.testing.assert_array_equal(rows[:, [2, 4, 5, 6, 7, 8, 9]], [[0, 35, 32, 1.75, 0, 0, 0]] * 500)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A chair rendered from three views, written and read back through the dataset's PNG formats."""
    root = tmp_path_factory.mktemp("render")
    mesh = shapes.generate_mesh("03001627", np.random.default_rng(21), 96)
    rows = random_views(np.random.default_rng(22), 3)
    rows[0, 3] = 0.6  # the closest camera: the object must still be in frame
    renderer = Renderer(mesh)
    maps = []
    for index, row in enumerate(rows):
        view = renderer.render(row, SIZE)
        fmt.write_normal_map(root / f"{index}_n.png", view.normals, view.mask)
        fmt.write_depth(root / f"{index}_d.png", view.depth, view.mask)
        depth, mask = read_depth(root / f"{index}_d.png")
        maps.append((row, depth, mask, fmt.read_normal_map(root / f"{index}_n.png")))
    return mesh, maps


def _project(vertices, row):
    uv, depth = camera.project(vertices, camera.projection_from_metadata(row, SIZE))
    return uv.numpy(), depth.numpy()


def _inverse_depth_at(depth, mask, uv):
    """Bilinear interpolation of 1/depth between the four nearest pixel centres (exact on planes);
    NaN where one of them is background."""
    corner = np.floor(uv - 0.5).astype(int)  # [N, 2] pixel of the upper-left centre
    t = uv - 0.5 - corner
    total, valid = 0.0, True
    for du, dv, w in (
        (0, 0, (1 - t[:, 0]) * (1 - t[:, 1])),
        (1, 0, t[:, 0] * (1 - t[:, 1])),
        (0, 1, (1 - t[:, 0]) * t[:, 1]),
        (1, 1, t[:, 0] * t[:, 1]),
    ):
        u, v = corner[:, 0] + du, corner[:, 1] + dv
        valid = valid & mask[v, u]
        total = total + w / np.where(mask[v, u], depth[v, u], 1.0)
    return np.where(valid, total, np.nan)


def test_vertices_project_onto_the_mask_and_match_the_depth_map(rendered):
    mesh, maps = rendered
    for row, depth, mask, _ in maps:
        uv, z = _project(mesh.vertices, row)
        assert np.all((uv > 1) & (uv < SIZE - 1)), "object must be inside the frame"
        pixel = np.floor(uv).astype(int)
        u, v = pixel[:, 0], pixel[:, 1]
        near_mask = np.zeros_like(mask)
        for du in (-1, 0, 1):
            for dv in (-1, 0, 1):
                near_mask |= np.roll(np.roll(mask, dv, axis=0), du, axis=1)
        assert np.all(near_mask[v, u]), "every vertex lies on (or within a pixel of) the silhouette"
        # Visible vertices: the depth map, interpolated at the vertex's sub-pixel position, gives its depth.
        surface_depth = 1.0 / _inverse_depth_at(depth.astype(np.float64), mask, uv)
        visible = np.abs(surface_depth - z) < 1e-3
        assert visible.mean() > 0.2
        assert np.all(mask[v[visible], u[visible]] | (np.abs(uv[visible] - pixel[visible] - 0.5).max(axis=1) > 0.4))
        # Nothing is missing in front of a vertex: no vertex is nearer than the surface drawn around it.
        neighbourhood = np.min(
            [
                np.roll(np.roll(np.where(mask, depth, np.inf), dv, 0), du, 1)[v, u]
                for du in (-1, 0, 1)
                for dv in (-1, 0, 1)
            ],
            axis=0,
        )
        assert np.mean(z < neighbourhood - 1e-3) < 0.01  # only sub-pixel thin parts may slip between rays


def test_normal_map_matches_face_normals_at_the_hit_points(rendered):
    mesh, maps = rendered
    for row, depth, mask, normals in maps:
        rotation, translation = camera.world_to_camera(row[0], row[1], row[3])
        v, u = np.nonzero(mask)
        f, c = camera.focal_pixels(SIZE), SIZE / 2
        z = depth[v, u].astype(np.float64)
        points_camera = np.column_stack([(u + 0.5 - c) / f * z, (v + 0.5 - c) / f * z, z])
        points_world = (points_camera - translation) @ rotation  # Rᵀ (p - t), row-wise
        _, distance, faces = trimesh.proximity.closest_point(mesh, points_world)
        assert np.median(distance) < 1e-4
        expected = mesh.face_normals[faces] @ rotation.T
        cosine = np.clip(np.sum(expected * normals[v, u], axis=1), -1, 1)
        assert np.degrees(np.arccos(cosine)).mean() < 2.0
        assert np.mean(normals[v, u, 2] < 0) > 0.95  # surfaces facing the camera: n_z < 0
