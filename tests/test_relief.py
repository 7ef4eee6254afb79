"""The relief-recovery measure on analytic normal maps: a plane with a Gaussian bump, seen head-on."""

import numpy as np
import pytest

from d2im_tf.evaluation.relief import (
    RELIEF_THRESHOLD,
    angles,
    covered_angle,
    relief_error,
    relief_pixels,
    smoothed_normals,
)

SIZE = 128


def height_field_normals(amplitude: float, width: float = 6.0, radius: float = 40.0):
    """Camera-frame normals ``[S, S, 3]`` of z = h(x, y) (z away from the viewer; the surface faces the
    camera, n_z < 0) for a Gaussian bump h of ``amplitude`` pixels and ``width`` on a disk of
    ``radius`` pixels (background outside), and the slope angle ``[S, S]`` in degrees."""
    y, x = np.mgrid[:SIZE, :SIZE] + 0.5 - SIZE / 2
    bump = amplitude * np.exp(-(x**2 + y**2) / (2 * width**2))
    hx, hy = -x / width**2 * bump, -y / width**2 * bump  # ∂h/∂x, ∂h/∂y
    normals = np.stack([hx, hy, -np.ones_like(hx)], axis=-1)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    disk = x**2 + y**2 < radius**2
    return normals * disk[..., None], np.degrees(np.arctan(np.hypot(hx, hy))), disk


def test_a_plane_has_no_relief_and_a_bump_is_found():
    plane, _, disk = height_field_normals(0.0)
    assert not relief_pixels(plane).any()
    np.testing.assert_allclose(smoothed_normals(plane)[disk], plane[disk], atol=1e-9)
    bump, slope, _ = height_field_normals(4.0)
    found = relief_pixels(bump)
    assert found.sum() > 50
    assert slope[found].min() > 3.0  # only where the surface tilts
    assert not found[np.hypot(*np.mgrid[:SIZE, :SIZE] + 0.5 - SIZE / 2) > 25].any()  # nothing far away


def test_a_flat_reconstruction_scores_the_bumps_slope():
    """With the plane as the coarse surface the relief pixels are where the slope exceeds the threshold,
    and a flat reconstruction's error is the slope angle's mean there (an independent computation)."""
    bump, slope, disk = height_field_normals(5.0)
    plane, _, _ = height_field_normals(0.0)
    result = relief_error(plane, bump, coarse=plane)
    expected_pixels = disk & (slope > RELIEF_THRESHOLD)
    assert result["relief_pixels"] == expected_pixels.sum() > 100
    assert result["relief_angle"] == pytest.approx(slope[expected_pixels].mean(), abs=1e-9)
    assert result["relief_coverage"] == 1.0
    assert relief_error(bump, bump, coarse=plane)["relief_angle"] == pytest.approx(0.0, abs=1e-5)


def test_half_the_relief_scores_half_the_slope_difference():
    """Gradients parallel, so the angle between the normals is the difference of the slope angles."""
    bump, slope, disk = height_field_normals(5.0)
    half, half_slope, _ = height_field_normals(2.5)
    plane, _, _ = height_field_normals(0.0)
    expected_pixels = disk & (slope > RELIEF_THRESHOLD)
    result = relief_error(half, bump, coarse=plane)
    assert result["relief_angle"] == pytest.approx((slope - half_slope)[expected_pixels].mean(), abs=1e-6)
    assert 0 < result["relief_angle"] < relief_error(plane, bump, coarse=plane)["relief_angle"]


def test_uncovered_relief_is_not_scored_but_counted():
    bump, _, _ = height_field_normals(5.0)
    plane, _, _ = height_field_normals(0.0)
    missing = plane.copy()
    missing[:, : SIZE // 2] = 0.0  # the left half is background in the reconstruction
    result = relief_error(missing, bump, coarse=plane)
    assert 0.4 < result["relief_coverage"] < 0.6
    np.testing.assert_allclose(angles(np.array([0, 0, -1.0]), np.array([0, 1.0, 0])), 90.0)


def test_a_reconstruction_that_covers_no_relief_has_no_angle():
    """relief_error reads 0° over no covered pixel; covered_angle makes that NaN, and keeps a real angle
    (a flat plane under the bump scores above the threshold, as its relief pixels are defined)."""
    bump, _, _ = height_field_normals(5.0)
    plane, _, _ = height_field_normals(0.0)
    empty = np.zeros_like(plane)  # all background
    assert relief_error(empty, bump, coarse=plane)["relief_angle"] == 0.0
    assert np.isnan(covered_angle(relief_error(empty, bump, coarse=plane)))
    assert np.isnan(covered_angle(relief_error(plane, plane, coarse=plane)))  # no relief pixels at all
    flat = covered_angle(relief_error(plane, bump, coarse=plane))
    assert flat == relief_error(plane, bump, coarse=plane)["relief_angle"] > RELIEF_THRESHOLD


def test_the_coarse_shapes_creases_and_outline_are_not_relief():
    """A roof (two planes meeting at a vertical crease) as the coarse surface, and a GT tilted 15° from
    it everywhere: every pixel departs, but those beside the crease or the outline are not relief."""
    tilt = np.radians(20.0)
    roof = np.zeros((SIZE, SIZE, 3))
    roof[:, : SIZE // 2] = [np.sin(tilt), 0.0, -np.cos(tilt)]
    roof[:, SIZE // 2 :] = [-np.sin(tilt), 0.0, -np.cos(tilt)]
    roof[:4], roof[-4:], roof[:, :4], roof[:, -4:] = 0.0, 0.0, 0.0, 0.0  # background around it
    turn = np.radians(15.0)
    rotation = np.array([[1, 0, 0], [0, np.cos(turn), -np.sin(turn)], [0, np.sin(turn), np.cos(turn)]])
    truth = roof @ rotation.T
    found = relief_pixels(truth, roof)
    inside = np.zeros((SIZE, SIZE), bool)
    inside[5:-5, 5:-5] = True
    inside[:, SIZE // 2 - 1 : SIZE // 2 + 1] = False  # the two crease columns
    np.testing.assert_array_equal(found, inside)
