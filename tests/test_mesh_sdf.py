"""Mesh → samples: signs, distances, bands, normalisation, gradients, density and bad input,
each against an independent computation (trimesh's inside test and closest points, brute force)."""

import numpy as np
import pytest
import trimesh

from d2im_tf.data.disn_format import DataError, SdfSamples
from d2im_tf.data.synth import mesh_sdf, shapes

COUNT = 4096


@pytest.fixture(scope="module")
def chair():
    return shapes.generate_mesh("03001627", np.random.default_rng(11), 128)


@pytest.fixture(scope="module")
def chair_samples(chair):
    return mesh_sdf.sample_sdf(chair, np.random.default_rng(12), COUNT)


def _world(samples: SdfSamples) -> np.ndarray:
    return samples.points.astype(np.float64) * samples.norm_params[3] + samples.norm_params[:3]


def test_fields_and_shapes(chair_samples):
    s = chair_samples
    assert s.samples.shape == (COUNT, 4) and s.samples.dtype == np.float32
    assert s.gradients.shape == (COUNT, 3) and s.density.shape == (COUNT,)
    assert s.norm_params.shape == (4,) and s.sdf_params.shape == (6,)
    assert s.surface_points.shape == (mesh_sdf.NORMALIZATION_SAMPLES, 3)
    assert np.all(np.isfinite(s.samples)) and np.all(np.isfinite(s.gradients))


def test_signs_agree_with_an_independent_inside_test(chair, chair_samples):
    inside = chair.contains(_world(chair_samples))
    assert np.mean(inside == (chair_samples.sdf < 0)) >= 0.995


def test_distances_match_trimesh_closest_points(chair, chair_samples):
    subset = np.random.default_rng(0).choice(COUNT, 300, replace=False)
    _, distance, _ = trimesh.proximity.closest_point(chair, _world(chair_samples)[subset])
    ours = np.abs(chair_samples.sdf[subset]) * chair_samples.norm_params[3]
    error = np.abs(distance - ours)
    assert np.median(error) < 1e-6
    assert np.quantile(error, 0.99) < 1e-4


def test_far_field_samples_are_uniform_in_the_box_with_exact_sdf(chair, chair_samples):
    far, gradients = chair_samples.far_samples, chair_samples.far_gradients
    assert far.shape == (mesh_sdf.FAR_SAMPLE_COUNT, 4) and gradients.shape == (mesh_sdf.FAR_SAMPLE_COUNT, 3)
    points, sdf = far[:, :3].astype(np.float64), far[:, 3].astype(np.float64)
    assert np.abs(points).max() <= 1.0
    # Uniform: each octant holds an eighth (binomial standard deviation ≈ 0.5%).
    octants = np.bincount((points > 0) @ [1, 2, 4], minlength=8) / len(points)
    np.testing.assert_allclose(octants, 1 / 8, atol=0.025)
    world = points * chair_samples.norm_params[3] + chair_samples.norm_params[:3]
    assert np.mean(chair.contains(world) == (sdf < 0)) >= 0.995
    subset = np.random.default_rng(1).choice(len(points), 300, replace=False)
    _, distance, _ = trimesh.proximity.closest_point(chair, world[subset])
    np.testing.assert_allclose(np.abs(sdf[subset]) * chair_samples.norm_params[3], distance, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(gradients, axis=1), 1.0, atol=1e-5)


def test_band_counts(chair_samples):
    shifted = chair_samples.sdf - mesh_sdf.ISO_OFFSET
    counts = [np.count_nonzero((shifted >= lo) & (shifted < hi)) for lo, hi in mesh_sdf.BANDS]
    assert sum(counts) == COUNT
    quota = COUNT // 4
    assert counts[2] == quota and counts[3] == quota  # outside bands always fill
    assert counts[0] + counts[1] == 2 * quota  # a short deep-inside band passes its quota on
    assert counts[0] <= quota


def test_select_bands_passes_quota_to_the_next_band():
    sdf = np.concatenate([np.full(3, -0.05), np.full(50, -0.01), np.full(50, 0.01), np.full(50, 0.05)]) + 0.003
    picked = mesh_sdf.select_bands(sdf, 40, np.random.default_rng(0))
    values = sdf[picked] - 0.003
    assert len(picked) == 40 and len(np.unique(picked)) == 40
    assert [np.sum(np.isclose(values, v)) for v in (-0.05, -0.01, 0.01, 0.05)] == [3, 17, 10, 10]


def test_normalisation_is_centroid_and_max_radius(chair, chair_samples):
    surface = chair_samples.surface_points.astype(np.float64)
    np.testing.assert_allclose(surface.mean(axis=0), 0.0, atol=1e-5)
    assert np.linalg.norm(surface, axis=1).max() == pytest.approx(1.0, abs=1e-5)
    world = surface * chair_samples.norm_params[3] + chair_samples.norm_params[:3]
    _, distance, _ = trimesh.proximity.closest_point(chair, world[:200])
    assert distance.max() < 1e-5  # the normalisation samples lie on the mesh


def test_analytic_gradients_match_finite_differences(chair, chair_samples):
    subset = np.random.default_rng(1).choice(COUNT, 60, replace=False)
    points, h = _world(chair_samples)[subset], 1e-4
    steps = np.concatenate([points + h * e for e in np.eye(3)] + [points - h * e for e in np.eye(3)])
    values = -trimesh.proximity.signed_distance(chair, steps).reshape(6, -1)  # trimesh: + inside
    numeric = (values[:3] - values[3:]).T / (2 * h)
    numeric /= np.linalg.norm(numeric, axis=1, keepdims=True)
    cosine = np.sum(numeric * chair_samples.gradients[subset], axis=1)
    assert np.median(cosine) > 0.9998
    assert np.mean(cosine > 0.99) > 0.9  # a few may sit near the medial axis


def test_plane_fit_gradients_match_brute_force_least_squares():
    rng = np.random.default_rng(2)
    points = rng.uniform(-1, 1, (300, 3))
    sdf = np.linalg.norm(points, axis=1) - 0.5 + 0.02 * np.sin(5 * points[:, 0])
    ours = mesh_sdf.plane_fit_gradients(points, sdf)
    for i in range(0, 300, 7):
        nearest = np.argsort(np.linalg.norm(points - points[i], axis=1))[:10]
        design = np.column_stack([np.ones(10), points[nearest] - points[i]])
        coefficients = np.linalg.lstsq(design, sdf[nearest], rcond=None)[0]
        expected = coefficients[1:] / np.linalg.norm(coefficients[1:])
        np.testing.assert_allclose(ours[i], expected, atol=1e-6)


def test_density_matches_brute_force_in_world_units():
    rng = np.random.default_rng(3)
    normalised = rng.uniform(-0.2, 0.2, (400, 3))
    sdf = rng.normal(size=400)
    norm_params = np.array([0.1, -0.2, 0.3, 0.4], dtype=np.float32)
    samples = SdfSamples(np.column_stack([normalised, sdf]).astype(np.float32), norm_params)
    mesh_sdf.add_gradients_and_density(samples)
    world = samples.points.astype(np.float64) * norm_params[3] + norm_params[:3]
    distance = np.linalg.norm(world[:, None] - world[None], axis=-1)
    same_sign = (samples.sdf[:, None] < 0) == (samples.sdf[None] < 0)
    expected = 1.0 / np.sum((distance <= 0.025) & same_sign, axis=1)
    np.testing.assert_allclose(samples.density, expected, rtol=1e-6)
    assert samples.gradients.shape == (400, 3)


# ------------------------------------------------------------------------------------------
# Bad input


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found") as error:
        mesh_sdf.load_mesh(tmp_path / "nope.obj")
    assert "nope.obj" in str(error.value)


def test_empty_mesh_file(tmp_path):
    path = tmp_path / "empty.obj"
    path.write_text("# nothing\n")
    with pytest.raises(DataError, match="no triangles") as error:
        mesh_sdf.load_mesh(path)
    assert "empty.obj" in str(error.value)


def test_unreadable_mesh_file(tmp_path):
    path = tmp_path / "garbage.ply"
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 99\n\x00\x01garbage")
    with pytest.raises(DataError) as error:
        mesh_sdf.load_mesh(path)
    assert "garbage.ply" in str(error.value)


def test_degenerate_mesh_file(tmp_path):
    path = tmp_path / "flat.obj"
    path.write_text("v 0 0 0\nv 1 1 1\nv 2 2 2\nv 3 3 3\nf 1 2 3\nf 2 3 4\n")  # collinear
    with pytest.raises(DataError, match="degenerate") as error:
        mesh_sdf.load_mesh(path)
    assert "flat.obj" in str(error.value)


def test_nan_vertices_are_rejected():
    mesh = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, np.nan, 0]], [[0, 1, 2]], process=False)
    with pytest.raises(DataError, match="NaN"):
        mesh_sdf.check_mesh(mesh, "bad.obj")


def test_triangle_soup_is_merged_into_a_closed_mesh():
    box = trimesh.creation.box(extents=[0.4, 0.3, 0.2])
    soup = trimesh.Trimesh(box.triangles.reshape(-1, 3), np.arange(36).reshape(-1, 3), process=False)
    closed, repaired = mesh_sdf.make_watertight(soup, "soup.obj")
    assert repaired and closed.is_watertight and closed.volume == pytest.approx(0.024)


def test_open_mesh_is_remeshed_watertight_with_consistent_signs():
    box = trimesh.creation.box(extents=[0.5, 0.4, 0.3])
    open_box = trimesh.Trimesh(box.vertices, box.faces[:-2], process=False)  # one side missing
    closed, repaired = mesh_sdf.make_watertight(open_box, "open.obj", resolution=48)
    assert repaired and closed.is_watertight and closed.is_winding_consistent and closed.volume > 0
    samples = mesh_sdf.sample_sdf(closed, np.random.default_rng(0), 1024)
    inside = closed.contains(_world(samples))
    assert np.mean(inside == (samples.sdf < 0)) >= 0.995


def test_watertight_mesh_is_kept_and_inverted_one_is_flipped():
    box = trimesh.creation.box(extents=[0.5, 0.4, 0.3])
    same, repaired = mesh_sdf.make_watertight(box, "box.obj")
    assert same is box and not repaired
    flipped = box.copy()
    flipped.invert()
    fixed, _ = mesh_sdf.make_watertight(flipped, "flipped.obj")
    assert fixed.volume == pytest.approx(0.06)


def test_coarse_sdf_is_the_analytic_sdf_of_the_shape_without_its_relief():
    """with_coarse_sdf on shapes.coarse_mesh against the parts' own SDF with the relief taken off:
    within a grid step everywhere, also where the relief moves the surface by more than a step."""
    resolution = 128
    parts = shapes.family_parts("03001627", np.random.default_rng(11))  # a chair with relief, no cut-outs
    assert any(p.relief is not None for p in parts) and not any(p.subtract for p in parts)
    mesh = shapes.mesh_parts(parts, resolution)
    frame = mesh.metadata["family_frame"]
    samples = mesh_sdf.sample_sdf(mesh, np.random.default_rng(12), COUNT)
    samples = mesh_sdf.with_coarse_sdf(samples, shapes.coarse_mesh(parts, frame, resolution))
    assert samples.coarse_sdf.shape == (COUNT,) and samples.far_coarse_sdf.shape == (len(samples.far_samples),)
    m = samples.norm_params[3]
    family = _world(samples) / frame[1] + frame[0]  # the parts' units
    analytic = np.min([p.sdf(family) for p in shapes.without_relief(parts)], axis=0) * frame[1] / m  # normalised
    step = shapes.grid_spacing(parts, resolution) * frame[1] / m
    relief = np.abs(samples.sdf - analytic) > step  # where the relief moves the surface by over a step
    assert relief.sum() >= 10
    error = np.abs(samples.coarse_sdf - analytic)
    outside = analytic > 0  # a union of exact SDFs is exact outside; inside, where parts overlap, it is not
    assert error[relief].max() < 0.7 * step and error[outside].max() < 0.7 * step
    far_family = (samples.far_samples[:, :3] * m + samples.norm_params[:3]) / frame[1] + frame[0]
    far_analytic = np.min([p.sdf(far_family) for p in shapes.without_relief(parts)], axis=0) * frame[1] / m
    far_outside = far_analytic > 0
    np.testing.assert_allclose(samples.far_coarse_sdf[far_outside], far_analytic[far_outside], atol=step)
