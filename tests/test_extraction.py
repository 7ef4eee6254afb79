"""Mesh extraction: the dense grid of the reference and coarse-to-fine refinement, on analytic SDFs.

The analytic shapes are small, so most tests extract in the cube :data:`BOX` (the reference's test box)
rather than the default, the normalised frame's [-1, 1]³."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from d2im_tf.evaluation.metrics import chamfer_l1
from d2im_tf.geometry import camera
from d2im_tf.geometry.frames import NORMALISED_BOX, normalised_projection
from d2im_tf.geometry.interpolation import bspline_coefficients, sample_bilinear, sample_bspline
from d2im_tf.inference import extraction


def sphere(points, radius=0.3):
    return np.linalg.norm(points, axis=1) - radius


def box(points, half_sides, centre=(0.0, 0.0, 0.0)):
    """Exact SDF of an axis-aligned box."""
    q = np.abs(points - np.asarray(centre)) - np.asarray(half_sides)
    return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)


def slotted_box(points):
    """A box cut through by a slot 0.02 wide, thinner than a cell of the 32³ starting grid."""
    return np.maximum(box(points, (0.3, 0.25, 0.2)), -box(points, (0.01, 0.4, 0.4)))


def torus(points, major=0.3, minor=0.06):
    ring = np.linalg.norm(points[:, :2], axis=1) - major
    return np.hypot(ring, points[:, 2]) - minor


def thin_union(points):
    """A plate 0.02 thick, a rod of radius 0.012 and a small ball: all thinner than a coarse cell."""
    plate = box(points, (0.35, 0.35, 0.01), centre=(0.0, 0.0, -0.2))
    rod = np.hypot(points[:, 0] - 0.1, points[:, 1] + 0.15) - 0.012
    rod = np.maximum(rod, np.abs(points[:, 2]) - 0.4)
    ball = np.linalg.norm(points - np.array([-0.2, 0.2, 0.25]), axis=1) - 0.03
    return np.minimum(np.minimum(plate, rod), ball)


BOX = (-0.5, 0.5)
SHAPES = {"sphere": sphere, "slotted_box": slotted_box, "torus": torus, "thin_union": thin_union}


def test_grid_points_are_cell_centres_with_x_slowest():
    points = extraction.sdf_grid_points(4, bounds=(-0.5, 0.5))
    assert points.shape == (64, 3) and points.dtype == np.float32
    np.testing.assert_allclose(np.unique(points[:, 0]), [-0.375, -0.125, 0.125, 0.375])
    grid = points.reshape(4, 4, 4, 3)
    np.testing.assert_allclose(grid[1, 2, 3], [-0.125, 0.125, 0.375])


def test_dense_sphere_has_the_right_radius_volume_and_outward_faces():
    mesh, stats = extraction.extract_mesh(sphere, resolution=64, bounds=BOX, mode="dense")
    assert stats.evaluations == 64**3 and stats.evaluation_ratio == 1.0
    radii = np.linalg.norm(mesh.vertices, axis=1)
    np.testing.assert_allclose(radii, 0.3, atol=0.1 / 64)
    assert mesh.volume == pytest.approx(4.0 / 3.0 * np.pi * 0.3**3, rel=0.01)  # positive: outwards


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_coarse_to_fine_reproduces_the_dense_mesh(name):
    sdf = SHAPES[name]
    dense_grid, dense_stats = extraction.evaluate_grid(sdf, resolution=64, bounds=BOX, mode="dense")
    grid, stats = extraction.evaluate_grid(sdf, resolution=64, bounds=BOX, mode="coarse_to_fine", initial_resolution=16)
    inside_dense, inside = dense_grid < 0, grid < 0
    assert np.count_nonzero(inside_dense & inside) / np.count_nonzero(inside_dense | inside) >= 0.995
    np.testing.assert_array_equal(inside, inside_dense)
    dense_mesh = extraction.mesh_from_grid(dense_grid, BOX)
    mesh = extraction.mesh_from_grid(grid, BOX)
    assert len(mesh.vertices) == len(dense_mesh.vertices) > 0
    assert chamfer_l1(mesh.vertices, dense_mesh.vertices) < 1e-4
    np.testing.assert_array_equal(np.sort(mesh.vertices, axis=0), np.sort(dense_mesh.vertices, axis=0))
    assert stats.evaluations < 0.6 * dense_stats.evaluations


def test_coarse_to_fine_at_128_is_exact_with_a_fraction_of_the_evaluations():
    dense_mesh, _ = extraction.extract_mesh(torus, resolution=128, bounds=BOX, mode="dense")
    mesh, stats = extraction.extract_mesh(torus, resolution=128, bounds=BOX, initial_resolution=32)
    assert stats.evaluation_ratio < 0.1
    # nodes inside a neighbour's zero-free ball are not evaluated; those marching cubes reads are refined
    assert stats.inferred > 0.2 * stats.evaluations and 0 < stats.refinements < stats.inferred
    assert set(stats.stage_seconds) == {"level_32", "level_64", "level_128", "fill", "refine", "marching_cubes"}
    np.testing.assert_array_equal(np.sort(mesh.vertices, axis=0), np.sort(dense_mesh.vertices, axis=0))


def test_scaled_sdf_needs_the_matching_lipschitz_bound():
    """The model predicts 10·sdf: lipschitz=10 gives the same cells, and the mesh of the unscaled SDF."""
    _, unit_stats = extraction.extract_mesh(thin_union, resolution=64, bounds=BOX, initial_resolution=16)
    mesh, stats = extraction.extract_mesh(
        lambda p: 10.0 * thin_union(p), resolution=64, bounds=BOX, initial_resolution=16, lipschitz=10.0
    )
    dense_mesh, _ = extraction.extract_mesh(thin_union, resolution=64, bounds=BOX, mode="dense")
    assert stats.evaluations == unit_stats.evaluations
    assert chamfer_l1(mesh.vertices, dense_mesh.vertices) < 1e-4


def test_tensorflow_function_is_evaluated_in_bounded_batches():
    batch_sizes = []

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def model(points):
        return tf.norm(points, axis=1) - 0.3

    def sdf_fn(points):
        batch_sizes.append(len(points))
        return model(points)

    mesh, stats = extraction.extract_mesh(sdf_fn, resolution=32, bounds=BOX, initial_resolution=8, batch_points=1000)
    reference, _ = extraction.extract_mesh(sphere, resolution=32, bounds=BOX, mode="dense")
    assert max(batch_sizes) <= 1000 and sum(batch_sizes) == stats.evaluations + stats.refinements
    assert chamfer_l1(mesh.vertices, reference.vertices) < 1e-4


@pytest.mark.parametrize("mode", extraction.MODES)
def test_no_surface_gives_an_empty_mesh(mode):
    def outside(points):
        return np.ones(len(points))

    mesh, stats = extraction.extract_mesh(outside, resolution=32, bounds=BOX, mode=mode, initial_resolution=8)
    assert len(mesh.vertices) == 0 and len(mesh.faces) == 0
    if mode == "coarse_to_fine":
        assert stats.evaluations == 9**3  # the first grid certifies every cell


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="power of two"):
        extraction.extract_mesh(sphere, resolution=96, bounds=BOX, initial_resolution=32)
    with pytest.raises(ValueError, match="mode"):
        extraction.extract_mesh(sphere, resolution=32, bounds=BOX, mode="sparse")
    with pytest.raises(ValueError, match="returned"):
        extraction.evaluate_sdf(lambda p: np.zeros(3), np.zeros((5, 3)))


def test_displaced_field_clearance_gives_the_dense_mesh_with_fewer_evaluations():
    """A fused field f = f_B + d whose d jumps (front/back split) and is large far away, as a trained
    D²IM-Net's: coarse-to-fine with the sign-aware clearance reproduces the dense mesh, and certifies
    far more cells than the global bound |f| / (L + 2·max|d| / (h√3))."""

    def parts(points):
        base = np.linalg.norm(points, axis=1) - 0.25  # a sphere filling a small part of the box, 1-Lipschitz
        d = np.where(points[:, 2] > 0, 0.03, -0.02)  # a jump across z = 0 inside the shape
        d = np.where(base > 0.1, 0.4, d)  # large positive displacement on the "background"
        return (base + d).astype(np.float32), base.astype(np.float32)

    span = (-0.02, 0.4)

    def with_clearance(points):
        fused, base = parts(points)
        return fused, extraction.displaced_field_clearance(fused, base, span, 1.0)

    resolution = 64
    dense, _ = extraction.extract_mesh(lambda p: parts(p)[0], resolution, bounds=BOX, mode="dense")
    mesh, stats = extraction.extract_mesh(with_clearance, resolution, bounds=BOX, initial_resolution=16)
    global_bound = 1.0 + 2 * 0.4 / (extraction.grid_spacing(resolution, BOX) * np.sqrt(3.0))
    _, global_stats = extraction.extract_mesh(
        lambda p: parts(p)[0], resolution, bounds=BOX, initial_resolution=16, lipschitz=global_bound
    )
    assert len(mesh.faces) == len(dense.faces) > 0
    np.testing.assert_allclose(np.sort(mesh.vertices, axis=0), np.sort(dense.vertices, axis=0), atol=1e-6)
    assert stats.evaluations < 0.5 * global_stats.evaluations


def test_fused_mesh_of_a_sphere_is_the_dense_mesh_in_the_normalised_box():
    """extract_fused_mesh with zero maps: the fused field is the base field, a sphere of radius 0.6 in
    [-1, 1]³; the mesh equals the dense extraction of the same field and lies on the sphere."""

    def decode(points):
        base = (np.linalg.norm(points, axis=1) - 0.6).astype(np.float32)
        return base, base

    mesh, stats = extraction.extract_fused_mesh(decode, np.zeros((8, 8, 2)), 64, 1.0, initial_resolution=16)
    dense, _ = extraction.extract_mesh(lambda p: decode(p)[0], 64, NORMALISED_BOX, mode="dense")
    assert len(mesh.faces) == len(dense.faces) > 0
    np.testing.assert_allclose(np.sort(mesh.vertices, axis=0), np.sort(dense.vertices, axis=0), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(mesh.vertices, axis=1), 0.6, atol=0.01)
    assert stats.evaluations < 0.5 * stats.dense_evaluations


def two_map_field(points):
    """An analytic D²IM-Net-like field in [-1, 1]³: base f_B (a sphere of radius 0.5, 1-Lipschitz), the two
    displacements (front: a ripple, back: a constant dent; 0.3 on the background) and the front/back split
    (x < 0 counts as front). Returns base [N], displacements [N, 2], front [N]."""
    base = (np.linalg.norm(points, axis=1) - 0.5).astype(np.float32)
    front_map = 0.04 * np.sin(12.0 * points[:, 1]) * np.cos(9.0 * points[:, 2])
    back_map = np.full(len(points), -0.03)
    displacements = np.stack([front_map, back_map], axis=-1)
    displacements = np.where((base > 0.2)[:, None], 0.3, displacements).astype(np.float32)
    return base, displacements, points[:, 0] < 0.0


def test_fused_mesh_from_bounds_is_the_exact_mesh_with_few_exact_decodes():
    """With ``decode_bounds`` (one pass, no split) the exact ``decode`` runs only where the bounds leave
    the sign open or marching cubes reads the value; the mesh equals the exact extraction's, in both
    modes, and the sign-only samples really are not all exact values."""
    exact_points = []

    def decode(points):  # the exact fused field and its base
        exact_points.append(len(points))
        base, displacements, front = two_map_field(points)
        return base + np.where(front, displacements[:, 0], displacements[:, 1]), base

    def decode_bounds(points):
        base, displacements, _ = two_map_field(points)
        return base, displacements

    maps = np.array([[[-0.04, 0.3]]], np.float32)  # the maps' extreme values give the displacement range
    reference, _ = extraction.extract_mesh(lambda p: decode(p)[0], 64, NORMALISED_BOX, mode="dense")
    for mode in ("coarse_to_fine", "dense"):
        exact_points.clear()
        mesh, stats = extraction.extract_fused_mesh(
            decode, maps, 64, 1.0, decode_bounds=decode_bounds, mode=mode, initial_resolution=16
        )
        assert len(mesh.faces) == len(reference.faces) > 0
        np.testing.assert_allclose(np.sort(mesh.vertices, axis=0), np.sort(reference.vertices, axis=0), atol=1e-6)
        assert sum(exact_points) == stats.refinements
        assert 0 < stats.refinements < 0.4 * stats.evaluations, (mode, stats.refinements, stats.evaluations)
        assert "refine" in stats.stage_seconds


def test_fuse_completes_the_stored_bounds_to_the_exact_mesh():
    """With ``fuse`` the exact values come from each node's stored bounds (base and both displacements,
    checked against the analytic field at the very points fuse is asked for) and the split alone;
    ``decode`` runs only for nodes the bounds never saw (coarse-to-fine's inferred signs). The mesh is
    the exact extraction's."""
    fused_points, decoded_points, bounded = [], [], set()

    def decode(points):
        assert not bounded & {tuple(point) for point in points.tolist()}, "decode at a node with stored bounds"
        decoded_points.append(len(points))
        base, displacements, front = two_map_field(points)
        return base + np.where(front, displacements[:, 0], displacements[:, 1]), base

    def decode_bounds(points):
        bounded.update(tuple(point) for point in points.tolist())
        base, displacements, _ = two_map_field(points)
        return base, displacements

    def fuse(points, base, displacements):
        fused_points.append(len(points))
        true_base, true_displacements, front = two_map_field(points)
        np.testing.assert_array_equal(base, true_base)  # the bounds stored for these very nodes
        np.testing.assert_array_equal(displacements, true_displacements)
        return base + np.where(front, displacements[:, 0], displacements[:, 1])

    maps = np.array([[[-0.04, 0.3]]], np.float32)
    reference, _ = extraction.extract_mesh(lambda p: decode(p)[0], 64, NORMALISED_BOX, mode="dense")
    for mode in ("coarse_to_fine", "dense"):
        fused_points.clear(), decoded_points.clear(), bounded.clear()
        mesh, stats = extraction.extract_fused_mesh(
            decode, maps, 64, 1.0, decode_bounds=decode_bounds, fuse=fuse, mode=mode, initial_resolution=16
        )
        assert len(mesh.faces) == len(reference.faces) > 0
        np.testing.assert_allclose(np.sort(mesh.vertices, axis=0), np.sort(reference.vertices, axis=0), atol=1e-6)
        assert sum(fused_points) + sum(decoded_points) == stats.refinements > 0
        assert sum(fused_points) > sum(decoded_points) and (sum(decoded_points) > 0) == (mode == "coarse_to_fine")


def camera_through_the_box(image_size: int) -> np.ndarray:
    """A real camera P ``[3, 4]`` of the normalised frame (world = normalised / 2) for ``image_size`` pixels."""
    view = np.array([103.0, 25.0, 0.0, 0.6, 35.0, 32.0, 1.75, 0.0, 0.0, 0.0])  # az, el, 0, distance ratio, ...
    world = camera.projection_from_metadata(view, image_size)
    return normalised_projection(world, np.array([0.0, 0.0, 0.0, 0.5]))


def spiky_maps(size: int, seed: int = 0) -> np.ndarray:
    """Displacement maps ``[S, S, 2]``: small values with a few large spikes, and a large back value on a
    border band (the background of a trained model's maps)."""
    rng = np.random.default_rng(seed)
    maps = rng.normal(0.0, 0.02, (size, size, 2))  # noise: the coefficients' extremes fall anywhere
    maps[rng.integers(0, size, 3), rng.integers(0, size, 3)] = rng.choice([-0.4, 0.5], (3, 2))
    maps[: size // 6, :, 1] = 0.6
    return maps.astype(np.float32)


def test_local_displacement_range_holds_every_reading_within_the_cube():
    """Every point of the cube around a node reads (B-spline and bilinear, TensorFlow's samplers) a
    displacement inside the node's local range; for small cubes it is much narrower than the image's."""
    size = 48
    maps = spiky_maps(size)
    projection = camera_through_the_box(size)
    local_range = extraction.LocalDisplacementRange(maps, projection)
    rng = np.random.default_rng(1)
    centres = rng.uniform(-1.0, 1.0, (300, 3))
    radii = rng.choice([0.02, 0.05, 0.1, 0.3], 300)
    low, high = local_range(centres, radii)
    offsets = np.concatenate(
        [np.array(list(itertools.product([-1, 1], repeat=3)), float), rng.uniform(-1.0, 1.0, (40, 3))]
    )  # [48, 3]: the corners and inside
    points = (centres[:, None, :] + radii[:, None, None] * offsets).astype(np.float32)  # [300, 48, 3]
    uv, _ = camera.project(points.reshape(1, -1, 3), projection[None].astype(np.float32))
    for sample in (sample_bspline, sample_bilinear):
        readings = sample(maps[None], uv).numpy().reshape(300, 48, 2)
        assert np.all(readings.min(axis=(1, 2)) >= low - 1e-6), sample.__name__
        assert np.all(readings.max(axis=(1, 2)) <= high + 1e-6), sample.__name__
    # A second method: the B-spline coefficients each sampled point combines (taps ⌊t⌋-1 … ⌊t⌋+2, mirrored
    # at the border), gathered one by one: the node's range must hold all of them.
    coefficients = bspline_coefficients(maps[None]).numpy()[0]  # [S, S, 2]
    first_tap = np.floor(np.clip(uv.numpy()[0] - 0.5, 0.0, size - 1.0)).astype(int) - 1  # [300·48, 2] (x, y)
    taps = first_tap[:, None, :] + np.arange(4)[None, :, None]  # [M, 4, 2]
    taps = np.abs(taps)  # mirror at 0: -1 → 1
    taps = np.where(taps > size - 1, 2 * (size - 1) - taps, taps)  # mirror at S - 1
    read = coefficients[taps[:, :, None, 1], taps[:, None, :, 0]].reshape(300, -1)  # [300, 48·16·2]
    assert np.all(read.min(axis=1) >= low) and np.all(read.max(axis=1) <= high)
    global_low, global_high = extraction.displacement_range(maps)
    small = radii <= 0.05
    assert np.median(high[small] - low[small]) < 0.3 * (global_high - global_low)
    assert global_low <= maps.min() and global_high >= maps.max()


def test_fused_mesh_with_local_displacement_ranges_is_the_dense_mesh_with_fewer_evaluations():
    """A field whose displacements are read from spiky maps through a real camera: with the camera
    given, coarse-to-fine certifies cells with each node's local range, evaluates less than with the
    image's range, and still gives the dense mesh."""
    size = 32
    maps = spiky_maps(size, seed=3) * 0.5
    projection = camera_through_the_box(size).astype(np.float32)

    def parts(points):  # base [N], both displacements [N, 2], front [N]
        base = (np.linalg.norm(points, axis=1) - 0.5).astype(np.float32)
        uv, _ = camera.project(points[None], projection[None])
        return base, sample_bspline(maps[None], uv).numpy()[0], points[:, 0] < 0.0

    def decode(points):
        base, displacements, front = parts(points)
        return base + np.where(front, displacements[:, 0], displacements[:, 1]), base

    reference, _ = extraction.extract_mesh(lambda p: decode(p)[0], 64, NORMALISED_BOX, mode="dense")
    _, global_stats = extraction.extract_fused_mesh(decode, maps, 64, 1.0, initial_resolution=16)
    mesh, stats = extraction.extract_fused_mesh(decode, maps, 64, 1.0, projection=projection, initial_resolution=16)
    assert len(mesh.faces) == len(reference.faces) > 0
    np.testing.assert_allclose(np.sort(mesh.vertices, axis=0), np.sort(reference.vertices, axis=0), atol=1e-6)
    assert stats.evaluations < 0.9 * global_stats.evaluations, (stats.evaluations, global_stats.evaluations)


def test_sign_only_samples_need_a_refine_function_and_right_signs():
    def sign_only(points):  # the sphere's sign, with values that are not distances
        values = np.where(sphere(points) > 0, 1.0, -1.0).astype(np.float32)
        return values, np.zeros(len(points), np.float32), np.zeros(len(points), bool)

    with pytest.raises(ValueError, match="refine"):
        extraction.evaluate_grid(sign_only, 16, bounds=BOX, mode="dense")
    with pytest.raises(ValueError, match="wrong sign"):
        extraction.evaluate_grid(sign_only, 16, bounds=BOX, mode="dense", refine=lambda p: -sphere(p))
    grid, stats = extraction.evaluate_grid(sign_only, 16, bounds=BOX, mode="dense", refine=sphere)
    exact = sphere(extraction.sdf_grid_points(16, BOX)).reshape(16, 16, 16)
    refined = grid != np.sign(grid)  # the nodes refine replaced; all others kept their ±1
    signs = np.sign(exact)
    crossing = np.zeros_like(refined)  # corners of the cells whose corners differ in sign
    for i, j, k in itertools.product(range(15), repeat=3):
        if len(np.unique(signs[i : i + 2, j : j + 2, k : k + 2])) > 1:
            crossing[i : i + 2, j : j + 2, k : k + 2] = True
    np.testing.assert_array_equal(refined, crossing)
    assert stats.refinements == crossing.sum()
    np.testing.assert_allclose(grid[crossing], exact[crossing], rtol=1e-6)


def test_a_wrong_inferred_sign_is_replaced_but_a_wrong_bound_is_an_error():
    """A sign inferred from a neighbour's ball rests on the Lipschitz bound; if marching cubes reads the
    node and its exact value has the other sign, that value replaces it. A field's own sign-only
    sample with the wrong sign means its bounds are broken: an error."""
    points = extraction.sdf_grid_points(8, BOX)
    exact = sphere(points).reshape(8, 8, 8).astype(np.float32)
    node = (4, 4, 6)  # just outside the sphere (radius 0.3): a corner of cells the surface crosses
    assert exact[node] > 0 and exact[4, 4, 5] < 0
    values = exact.copy()
    values[node] = -0.05  # a wrong sign, as a too small Lipschitz bound would infer
    inferred = np.zeros(values.shape, bool)
    inferred[node] = True
    count = extraction._refine_surface_cells(values, np.ones(values.shape, bool), inferred, sphere, BOX, 1000)
    assert count > 0 and values[node] == exact[node]
    values[node] = -0.05
    with pytest.raises(ValueError, match="wrong sign"):
        extraction._refine_surface_cells(values, ~inferred, np.zeros(values.shape, bool), sphere, BOX, 1000)


def test_sign_only_samples_are_refined_wherever_marching_cubes_reads_them():
    """Marching cubes (Lewiner) places a vertex inside an ambiguous cell from all eight corner values,
    not only from the ends of crossing edges. This 4³ grid has such a cell: node (1, 1, 1) ends no
    crossing edge, yet its value moves a vertex. With sign-only samples of the wrong magnitude at every
    node, the refined grid must still give exactly the mesh of the exact grid."""
    rng = np.random.default_rng(11)  # found by search: one of the configurations where this happens
    values = rng.uniform(0.05, 1.0, (4, 4, 4)).astype(np.float32)
    values[1:3, 1:3, 1:3] *= rng.choice([-1, 1], size=(2, 2, 2))
    exact_mesh = extraction.mesh_from_grid(values, BOX)
    moved = values.copy()
    moved[1, 1, 1] = 7.0 * np.sign(moved[1, 1, 1])
    assert not np.allclose(
        np.sort(extraction.mesh_from_grid(moved, BOX).vertices, axis=0), np.sort(exact_mesh.vertices, axis=0)
    )  # the premise: that value matters

    def lookup(points):  # the grid's value at its own cell centres
        index = np.rint((points - BOX[0]) / 0.25 - 0.5).astype(int)
        return values[index[:, 0], index[:, 1], index[:, 2]]

    def sign_only(points):
        return 7.0 * np.sign(lookup(points)), np.zeros(len(points), np.float32), np.zeros(len(points), bool)

    grid, stats = extraction.evaluate_grid(sign_only, 4, bounds=BOX, mode="dense", refine=lookup)
    assert stats.refinements < 64
    mesh = extraction.mesh_from_grid(grid, BOX)
    np.testing.assert_array_equal(mesh.faces, exact_mesh.faces)
    np.testing.assert_array_equal(mesh.vertices, exact_mesh.vertices)


def hollow_ball(points):
    """A ball of radius 0.4 with a closed spherical pocket of radius 0.25 inside (a shell 0.15 thick)."""
    radius = np.linalg.norm(points, axis=1)
    return np.maximum(radius - 0.4, 0.25 - radius)


def open_hollow_ball(points):
    """The hollow ball with a round hole (radius 0.1) bored along +z from the pocket to the outside."""
    bore = np.maximum(np.hypot(points[:, 0], points[:, 1]) - 0.1, -points[:, 2])
    return np.maximum(hollow_ball(points), -bore)


@pytest.mark.parametrize("mode", ["dense", "coarse_to_fine"])
def test_filling_cavities_removes_a_closed_pocket_and_nothing_else(mode):
    """A closed pocket's surface goes, and its nodes are counted (those within the pocket's radius); the
    outer sphere stays where it is. A pocket with an opening to the outside is no cavity: kept as it is."""
    resolution = 64
    options = dict(bounds=BOX, mode=mode, initial_resolution=16)
    kept, _ = extraction.extract_mesh(hollow_ball, resolution, **options)
    filled, stats = extraction.extract_mesh(hollow_ball, resolution, fill_cavities=True, **options)
    radii = np.linalg.norm(kept.vertices, axis=1)
    assert (radii < 0.3).any() and (radii > 0.35).any()  # both surfaces without the fill
    np.testing.assert_allclose(np.linalg.norm(filled.vertices, axis=1), 0.4, atol=0.01)
    assert filled.is_watertight and filled.volume == pytest.approx(4 / 3 * np.pi * 0.4**3, rel=0.02)
    pocket = np.linalg.norm(extraction.sdf_grid_points(resolution, BOX), axis=1) <= 0.25
    assert stats.cavity_nodes == pocket.sum()
    outer = len(filled.faces)
    assert len(kept.faces) > outer and np.sum(radii > 0.35) == np.sum(np.linalg.norm(filled.vertices, axis=1) > 0.35)

    opened, _ = extraction.extract_mesh(open_hollow_ball, resolution, **options)
    opened_filled, open_stats = extraction.extract_mesh(open_hollow_ball, resolution, fill_cavities=True, **options)
    assert open_stats.cavity_nodes == 0
    np.testing.assert_array_equal(opened_filled.faces, opened.faces)
    np.testing.assert_array_equal(opened_filled.vertices, opened.vertices)


def test_grid_memory_estimate_is_a_lower_bound_and_refuses_what_cannot_fit(monkeypatch):
    import tracemalloc

    from d2im_tf.errors import UserError
    from d2im_tf.inference import extraction, reconstruct

    tracemalloc.start()
    extraction.sdf_grid_points(64)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert extraction.grid_memory_bytes(64, "dense") <= peak <= 2 * extraction.grid_memory_bytes(64, "dense")
    monkeypatch.setattr(reconstruct, "machine_memory_bytes", lambda: 16 * 10**9)
    with pytest.raises(
        UserError,
        match=r"^--resolution 1024 --mode dense: the grid needs at least 51\.5 GB of "
        r"memory, more than the 16\.0 GB this machine has; lower --resolution or use "
        r"--mode coarse_to_fine$",
    ):
        reconstruct.check_resolution(1024, "dense")
    reconstruct.check_resolution(1024, "coarse_to_fine")  # 5.4 GB
