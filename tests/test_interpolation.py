"""Tests of d2im_tf.geometry.interpolation against SciPy's spline interpolation and analytic maps."""

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from d2im_tf.geometry.interpolation import (
    bspline_derivatives_at_centres,
    sample_bilinear,
    sample_bspline,
    sample_nearest,
)

RNG = np.random.default_rng(0)
HEIGHT, WIDTH = 20, 24


def pixel_centres(height, width, batch=1):
    """All pixel centres, row-major, ``[batch, H*W, 2]`` (x, y) = (col + 0.5, row + 0.5)."""
    x, y = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    return np.repeat(np.stack([x, y], -1).reshape(1, -1, 2), batch, axis=0).astype(np.float32)


def random_uv(batch, count, low, high_x, high_y):
    return np.stack([RNG.uniform(low, high_x, (batch, count)), RNG.uniform(low, high_y, (batch, count))], -1).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def maps():
    return RNG.normal(size=(2, HEIGHT, WIDTH, 3)).astype(np.float32)


def test_bspline_interpolates_pixel_values(maps):
    values = sample_bspline(maps, pixel_centres(HEIGHT, WIDTH, 2)).numpy()
    np.testing.assert_allclose(values.reshape(maps.shape), maps, atol=2e-5)


def test_bspline_matches_scipy_cubic_spline_with_mirror_boundary(maps):
    uv = random_uv(2, 200, 0.5, WIDTH - 0.5, HEIGHT - 0.5)
    values = sample_bspline(maps, uv).numpy()
    expected = np.stack(
        [
            np.stack(
                [
                    scipy.ndimage.map_coordinates(
                        maps[b, ..., c], [uv[b, :, 1] - 0.5, uv[b, :, 0] - 0.5], order=3, mode="mirror"
                    )
                    for c in range(maps.shape[-1])
                ],
                -1,
            )
            for b in range(2)
        ]
    )
    np.testing.assert_allclose(values, expected, atol=1e-5)


def test_bspline_gradient_matches_finite_differences(maps):
    uv = tf.constant(random_uv(2, 50, 2.0, WIDTH - 2.0, HEIGHT - 2.0))
    with tf.GradientTape() as tape:
        tape.watch(uv)
        value = tf.reduce_sum(sample_bspline(maps, uv)[..., 1])
    gradient = tape.gradient(value, uv).numpy()
    step = 1e-2
    for axis in range(2):
        offset = np.zeros(2, np.float32)
        offset[axis] = step
        numeric = (sample_bspline(maps, uv + offset)[..., 1] - sample_bspline(maps, uv - offset)[..., 1]) / (2 * step)
        np.testing.assert_allclose(gradient[..., axis], numeric.numpy(), atol=2e-3)


def test_derivatives_at_centres_are_the_samplers_derivatives_there(maps):
    """The closed form at the knots against automatic differentiation of the sampled spline, border included."""
    uv = tf.constant(pixel_centres(HEIGHT, WIDTH, 2))
    with tf.GradientTape() as tape:
        tape.watch(uv)
        value = tf.reduce_sum(sample_bspline(maps, uv)[..., 2])
    gradient = tape.gradient(value, uv).numpy().reshape(2, HEIGHT, WIDTH, 2)
    along_x, along_y = bspline_derivatives_at_centres(maps)
    np.testing.assert_allclose(along_x.numpy()[..., 2], gradient[..., 0], atol=1e-4)
    np.testing.assert_allclose(along_y.numpy()[..., 2], gradient[..., 1], atol=1e-4)


def test_bspline_clamps_off_image_queries_to_the_border_centres(maps):
    inside = np.array([[[0.5, 3.5], [WIDTH - 0.5, HEIGHT - 0.5], [7.25, 0.5]]], np.float32)
    outside = np.array([[[-4.0, 3.5], [WIDTH + 3.0, HEIGHT + 9.0], [7.25, -2.0]]], np.float32)
    np.testing.assert_allclose(sample_bspline(maps[:1], outside), sample_bspline(maps[:1], inside), atol=1e-6)


def test_bilinear_is_exact_on_an_affine_map():
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH] + 0.5
    plane = (0.3 * x - 0.7 * y + 2.0)[None, ..., None].astype(np.float32)
    uv = random_uv(1, 100, 0.5, WIDTH - 0.5, HEIGHT - 0.5)
    expected = 0.3 * uv[..., 0] - 0.7 * uv[..., 1] + 2.0
    np.testing.assert_allclose(sample_bilinear(plane, uv).numpy()[..., 0], expected, atol=1e-4)
    np.testing.assert_allclose(
        sample_bilinear(plane, pixel_centres(HEIGHT, WIDTH)).numpy().reshape(plane.shape), plane, atol=1e-5
    )


def test_nearest_reads_the_pixel_containing_the_point(maps):
    uv = np.array([[[0.01, 0.99], [5.99, 3.0], [WIDTH + 5.0, -1.0]]], np.float32)
    expected = maps[0, [0, 3, 0], [0, 5, WIDTH - 1]]
    np.testing.assert_array_equal(sample_nearest(maps[:1], uv).numpy()[0], expected)
