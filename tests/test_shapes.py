"""Procedural shapes: watertight, oriented, framed, deterministic, varied; relief bounded."""

import numpy as np
import pytest

from d2im_tf.data.synth import relief, shapes

RESOLUTION = 96  # coarse grids keep the tests fast; the topology checks do not depend on it


@pytest.fixture(scope="module")
def meshes():
    return {
        (c, i): shapes.generate_mesh(c, np.random.default_rng([5, int(c), i]), RESOLUTION)
        for c in shapes.FAMILIES
        for i in range(3)
    }


def test_at_least_four_shapenet_categories():
    assert {"03001627", "04379243", "02933112", "04256520"} <= set(shapes.FAMILIES)


def test_meshes_are_watertight_and_outward(meshes):
    for key, mesh in meshes.items():
        assert mesh.is_watertight, key
        assert mesh.is_winding_consistent, key
        assert mesh.volume > 0, key
        assert len(mesh.split(only_watertight=False)) == 1, key


def test_meshes_are_centred_and_scaled_in_the_world_frame(meshes):
    for key, mesh in meshes.items():
        lower, upper = mesh.bounds
        np.testing.assert_allclose((lower + upper) / 2, 0.0, atol=1e-5, err_msg=str(key))
        assert np.linalg.norm(upper - lower) == pytest.approx(shapes.WORLD_DIAGONAL, abs=1e-4)
        assert np.all(np.abs(mesh.vertices) < 0.5)


def test_chairs_and_tables_stand_upright(meshes):
    """y is up: the seat/top is high, legs reach the floor, so area is spread along y."""
    for c in ("03001627", "04379243"):
        for i in range(3):
            mesh = meshes[(c, i)]
            top_faces = mesh.face_normals[:, 1] > 0.99
            heights = mesh.triangles_center[top_faces, 1]
            assert heights.max() > mesh.bounds[0, 1] + 0.5 * mesh.extents[1]


def test_shapes_have_holes_and_thin_parts(meshes):
    """Legs and stretchers or open backs give genus > 0 (Euler number < 2) for chairs and tables."""
    for c in ("03001627", "04379243"):
        assert any(meshes[(c, i)].euler_number < 2 for i in range(3)), c


def test_same_seed_same_mesh_and_different_seeds_differ():
    a = shapes.generate_mesh("03001627", np.random.default_rng(1), RESOLUTION)
    b = shapes.generate_mesh("03001627", np.random.default_rng(1), RESOLUTION)
    c = shapes.generate_mesh("03001627", np.random.default_rng(2), RESOLUTION)
    np.testing.assert_array_equal(a.vertices, b.vertices)
    np.testing.assert_array_equal(a.faces, b.faces)
    assert a.vertices.shape != c.vertices.shape or not np.allclose(a.vertices, c.vertices)


def test_unknown_category_is_rejected():
    with pytest.raises(ValueError, match="no procedural family"):
        shapes.generate_mesh("02691156", np.random.default_rng(0))


@pytest.mark.parametrize("kind", ["grooves", "frame", "dots", "rings", "glyphs"])
def test_relief_is_bounded_fades_at_edges_and_has_detail(kind):
    rng = np.random.default_rng(3)
    hx, hy, amplitude = 0.25, 0.2, 0.01
    surface = relief.random_relief(rng, hx, hy, amplitude, (kind,))
    x, y = np.meshgrid(np.linspace(-hx, hx, 201), np.linspace(-hy, hy, 161))
    height = surface.height(x, y)
    assert np.abs(height).max() <= surface.amplitude + 1e-12
    assert surface.amplitude <= amplitude + 1e-12
    assert np.abs(height).max() > 0.3 * amplitude  # the pattern is really there
    edge = (np.abs(x) >= hx - 1e-9) | (np.abs(y) >= hy - 1e-9)
    assert np.all(height[edge] == 0)


def test_relief_amplitude_is_a_small_fraction_of_the_object():
    low, high = shapes.RELIEF_RANGE
    assert 0.004 <= low < high <= 0.03
