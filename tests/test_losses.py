"""Tests of d2im_tf.models.losses: Laplacians on analytic maps, and the sign and scale of the Laplacian loss
on a rendered relief of known shape."""

import numpy as np
import pytest
import tensorflow as tf

from d2im_tf.evaluation.laplacian_fit import explained_share
from d2im_tf.geometry import camera
from d2im_tf.geometry.frames import normalised_projection
from d2im_tf.models.d2im import norm_scale_from_projection
from d2im_tf.models.losses import (
    base_loss,
    coarse_divergence,
    gaussian_blur,
    laplacian_loss,
    laplacian_mask,
    laplacian_residual,
    map_laplacian,
    normal_divergence,
    sdf_loss,
)

from helpers import unproject

RNG = np.random.default_rng(1)
SIZE = 64
MARGIN = 12  # the mirror boundary's influence on the prefilter decays as 0.268^distance


def grid(size=SIZE):
    """Pixel-centre coordinates (x, y), each ``[size, size]``."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    return x, y


def interior_uv(count, size=SIZE, margin=MARGIN):
    return RNG.uniform(margin, size - margin, (1, count, 2)).astype(np.float32)


def relative_error(value, truth):
    return np.max(np.abs(value - truth)) / np.max(np.abs(truth))


@pytest.mark.parametrize(
    "function, laplacian",
    [
        (lambda x, y: 0.3 * x**2 - 0.7 * y**2 + 0.1 * x * y, lambda x, y: np.full_like(x, 2 * 0.3 - 2 * 0.7)),
        (lambda x, y: 0.02 * x**2 + 0.05 * y**2, lambda x, y: np.full_like(x, 0.14)),
        (lambda x, y: np.sin(0.3 * x) * np.cos(0.2 * y), lambda x, y: -0.13 * np.sin(0.3 * x) * np.cos(0.2 * y)),
        (
            lambda x, y: np.cos(0.5 * x + 0.2) * np.sin(0.45 * y),
            lambda x, y: -0.4525 * np.cos(0.5 * x + 0.2) * np.sin(0.45 * y),
        ),
    ],
)
def test_map_laplacian_on_analytic_maps(function, laplacian):
    x, y = grid()
    maps = function(x, y)[None, ..., None].astype(np.float32)
    uv = interior_uv(300)
    value = map_laplacian(maps, uv).numpy()[0]
    assert relative_error(value, laplacian(uv[0, :, 0], uv[0, :, 1])) < 0.02


def test_map_laplacian_is_differentiable_in_the_map():
    x, y = grid()
    maps = tf.Variable(np.sin(0.3 * x)[None, ..., None].astype(np.float32))
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(map_laplacian(maps, interior_uv(10)))
    gradient = tape.gradient(value, maps)
    assert gradient is not None and np.abs(gradient.numpy()).max() > 0


def height_field_normals(x, y):
    """Unit normals (−h_x, −h_y, −1)/‖·‖ of h = 2 sin(0.25x) cos(0.2y) (pixel units), ``[..., 3]``."""
    h_x = 0.5 * np.cos(0.25 * x) * np.cos(0.2 * y)
    h_y = -0.4 * np.sin(0.25 * x) * np.sin(0.2 * y)
    normals = np.stack([-h_x, -h_y, -np.ones_like(x)], -1)
    return normals / np.linalg.norm(normals, axis=-1, keepdims=True)


def test_normal_divergence_matches_the_analytic_divergence():
    x, y = grid()
    normal_map = height_field_normals(x, y)[None].astype(np.float32)
    uv = interior_uv(300).astype(np.float64)
    u, v = uv[0, :, 0], uv[0, :, 1]
    step = 1e-4  # central differences of the analytic field, float64
    truth = (height_field_normals(u + step, v)[:, 0] - height_field_normals(u - step, v)[:, 0]) / (2 * step) + (
        height_field_normals(u, v + step)[:, 1] - height_field_normals(u, v - step)[:, 1]
    ) / (2 * step)
    value = normal_divergence(normal_map, uv.astype(np.float32)).numpy()[0]
    assert relative_error(value, truth) < 0.02


# ------------------------------------------------------------------------------------------------
# Sign and scale: a relief z = z0 − h(x, y) in the camera frame (h towards the viewer, world units),
# facing a camera of camera.py, rendered by casting each pixel's ray.

IMAGE = 128
AZ, EL, DIST = 30.0, 20.0, 0.8
NORM_CENTER = np.array([0.05, -0.02, 0.03])
NORM_SCALE = 0.7
SDF_SCALE = 10.0
AMPLITUDE, WAVELENGTH = 0.006, 0.22  # world units: slopes ≤ 0.17, about 22 px per period


def relief(x, y):
    """h, h_x, h_y of the relief at camera-frame (x, y)."""
    k = 2 * np.pi / WAVELENGTH
    h = AMPLITUDE * np.sin(k * x + 0.3) * np.cos(0.8 * k * y)
    h_x = AMPLITUDE * k * np.cos(k * x + 0.3) * np.cos(0.8 * k * y)
    h_y = -AMPLITUDE * 0.8 * k * np.sin(k * x + 0.3) * np.sin(0.8 * k * y)
    return h, h_x, h_y


class ReliefScene:
    """Camera of camera.py looking at the relief; ray casting in the camera frame."""

    def __init__(self):
        self.rotation, self.translation = camera.world_to_camera(AZ, EL, DIST)
        self.projection = camera.projection_matrix(AZ, EL, DIST, IMAGE)
        self.base_depth = self.translation[2]  # the world origin lies on the optical axis

    def hit(self, uv):
        """Camera-frame ray hits ``[M, 3]`` for pixels ``uv`` ``[M, 2]``: rays from helpers.unproject."""
        uv = np.asarray(uv, np.float64)
        world = unproject(uv, np.ones(len(uv)), self.projection).numpy()  # depth-1 points
        rays = world @ self.rotation.T + self.translation  # (a, b, 1) in the camera frame
        depth = np.full(len(uv), self.base_depth)
        for _ in range(40):  # fixed point of z = z0 − h(a z, b z); contraction for small slopes
            depth = self.base_depth - relief(rays[:, 0] * depth, rays[:, 1] * depth)[0]
        return rays * depth[:, None]

    def normal_map(self):
        """Camera-frame outward unit normals ∝ (−h_x, −h_y, −1) at every pixel centre, ``[1, S, S, 3]``."""
        x, y = grid(IMAGE)
        points = self.hit(np.stack([x.ravel(), y.ravel()], -1))
        _, h_x, h_y = relief(points[:, 0], points[:, 1])
        normals = np.stack([-h_x, -h_y, -np.ones_like(h_x)], -1)
        normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
        return normals.reshape(1, IMAGE, IMAGE, 3).astype(np.float32)

    def displacement(self, uv):
        """The true front displacement in network units: (s/m)·(z_hit − z0) = −(s/m)·h, ``[M]``."""
        return SDF_SCALE / NORM_SCALE * (self.hit(uv)[:, 2] - self.base_depth)

    def displacement_laplacian(self, uv, step=0.5):
        """Δ_u of :meth:`displacement` by central differences of the ray casting (pixels), ``[M]``."""
        uv = np.asarray(uv, np.float64)
        centre = self.displacement(uv)
        total = np.zeros(len(uv))
        for axis in range(2):
            offset = np.zeros(2)
            offset[axis] = step
            total += self.displacement(uv + offset) - 2 * centre + self.displacement(uv - offset)
        return total / step**2

    def normalised_points(self, camera_points):
        """Camera-frame points to the normalised frame (world = xyz·m + c)."""
        world = (camera_points - self.translation) @ self.rotation  # Rᵀ(p' − t)
        return (world - NORM_CENTER) / NORM_SCALE


@pytest.fixture(scope="module")
def relief_case():
    scene = ReliefScene()
    norm_params = np.array([[*NORM_CENTER, NORM_SCALE]])
    projection = normalised_projection(scene.projection[None], norm_params).astype(np.float32)
    sample_uv = RNG.uniform(20, IMAGE - 20, (300, 2))
    points = scene.normalised_points(scene.hit(sample_uv))[None].astype(np.float32)
    uv, depth = camera.project(points, projection)  # the loss's own path from points to pixels
    np.testing.assert_allclose(uv.numpy()[0], sample_uv, atol=1e-2)
    return {
        "scene": scene,
        "normal_map": scene.normal_map(),
        "uv": uv,
        "depth": depth,
        "norm_scale": norm_scale_from_projection(projection),
        "truth": scene.displacement_laplacian(sample_uv),
        "focal": camera.focal_pixels(IMAGE),
    }


def test_laplacian_target_has_the_sign_and_scale_of_the_true_displacement(relief_case):
    case = relief_case
    np.testing.assert_allclose(case["norm_scale"].numpy(), [NORM_SCALE], rtol=1e-5)
    divergence = normal_divergence(case["normal_map"], case["uv"]).numpy()[0]
    # The target in network units per pixel² (losses module docstring): Δ_u d = s·z/(f·m) · div.
    target = divergence * SDF_SCALE * case["depth"].numpy()[0] / (case["focal"] * NORM_SCALE)
    truth = case["truth"]
    assert np.corrcoef(target, truth)[0, 1] > 0.9
    slope = np.sum(target * truth) / np.sum(truth * truth)
    assert abs(slope - 1.0) < 0.1


def test_laplacian_residual_vanishes_for_the_true_displacement_map(relief_case):
    case = relief_case
    x, y = grid(IMAGE)
    true_map = case["scene"].displacement(np.stack([x.ravel(), y.ravel()], -1)).reshape(1, IMAGE, IMAGE, 1)
    arguments = (case["normal_map"], case["uv"], case["depth"], case["norm_scale"], case["focal"], SDF_SCALE)
    residual = laplacian_residual(true_map.astype(np.float32), *arguments).numpy()
    target = normal_divergence(case["normal_map"], case["uv"]).numpy()
    assert np.sqrt(np.mean(residual**2)) < 0.1 * np.sqrt(np.mean(target**2))
    flipped = laplacian_residual(-true_map.astype(np.float32), *arguments).numpy()  # the reference's "+"
    assert np.sqrt(np.mean(flipped**2)) > 1.5 * np.sqrt(np.mean(target**2))


def test_explained_share_is_one_for_the_true_map_and_negative_for_the_flipped_one(relief_case):
    case = relief_case
    x, y = grid(IMAGE)
    true_map = case["scene"].displacement(np.stack([x.ravel(), y.ravel()], -1)).reshape(1, IMAGE, IMAGE, 1)
    mask = tf.ones_like(case["depth"])
    arguments = (case["normal_map"], case["uv"], case["depth"], case["norm_scale"], case["focal"], mask, SDF_SCALE)

    def loss(front_map):
        return float(laplacian_loss(front_map.astype(np.float32), *arguments))

    zero = loss(np.zeros_like(true_map))
    assert zero > 0
    assert explained_share(loss(true_map), zero) > 0.98  # the residual's RMS is under a tenth of the target's
    assert explained_share(zero, zero) == 0.0
    assert explained_share(loss(-true_map), zero) < -1.0  # the wrong sign doubles the residual
    assert explained_share(0.3, 0.0) == 0.0  # no target: nothing explained


def test_base_and_sdf_losses():
    prediction = np.array([[0.5, -0.2, 0.0]], np.float32)
    truth = np.array([[0.0, 0.2, 0.1]], np.float32)
    assert base_loss(prediction, truth).numpy() == pytest.approx((0.25 + 0.16 + 0.01) / 3)
    assert sdf_loss(prediction, truth).numpy() == pytest.approx((0.5 + 0.4 + 0.1) / 3)
    weights = np.array([[4.0, 1.0, 1.0]], np.float32)  # a weighted mean: Σ w·e / Σ w
    assert base_loss(prediction, truth, weights).numpy() == pytest.approx((4 * 0.25 + 0.16 + 0.01) / 6)
    assert sdf_loss(prediction, truth, weights).numpy() == pytest.approx((4 * 0.5 + 0.4 + 0.1) / 6)


def test_laplacian_mask_and_masked_mean():
    normal_map = np.zeros((1, 32, 32, 3), np.float32)
    normal_map[:, 4:28, 4:28, 2] = -1.0  # a foreground square, background elsewhere
    uv = np.array([[[16, 16], [16, 16], [16, 16], [5.5, 16], [16, 16]]], np.float32)
    sdf = np.array([[0.05, -0.09, 0.05, 0.05, 0.5]], np.float32)
    front = np.array([[True, True, False, True, True]])
    mask = laplacian_mask(sdf, front, normal_map, uv).numpy()
    # near & front | near & front | back | next to the background | far from the surface
    np.testing.assert_array_equal(mask, [[1, 1, 0, 0, 0]])
    x, y = grid(32)
    front_map = (0.01 * x**2)[None, ..., None].astype(np.float32)  # Δ = 0.02 everywhere
    depth = np.full((1, 5), 2.0, np.float32)
    loss = laplacian_loss(front_map, normal_map, uv, depth, np.float32([1.0]), 20.0, mask, SDF_SCALE).numpy()
    # Flat foreground: div n = 0 at the masked points, so r = f·m/(s·z)·Δ = 20/(10·2)·0.02.
    assert loss == pytest.approx((20.0 / 20.0 * 0.02) ** 2, rel=1e-3)


# ------------------------------------------------------------------------------------------------
# The flat-coarse-surface option: a crease turns the normal for good, detail turns it away and back.


def test_gaussian_blur_of_an_impulse_is_the_normalised_gaussian():
    impulse = np.zeros((1, 21, 21, 1), np.float32)
    impulse[0, 10, 10, 0] = 1.0
    blurred = gaussian_blur(tf.constant(impulse), 1.5).numpy()[0, :, :, 0]
    offsets = np.arange(-10, 11)
    profile = np.where(np.abs(offsets) <= 5, np.exp(-0.5 * (offsets / 1.5) ** 2), 0.0)  # radius ⌈3σ⌉ = 5
    profile /= profile.sum()
    np.testing.assert_allclose(blurred, np.outer(profile, profile), atol=1e-7)


def profile_normals(n_x):
    """A normal map ``[1, 48, 64, 3]``: unit normals facing the camera, x component ``n_x`` ``[64]`` on every row."""
    normals = np.stack([n_x, np.zeros_like(n_x), -np.sqrt(1.0 - n_x**2)], -1)
    return np.broadcast_to(normals, (1, 48, 64, 3)).astype(np.float32)


SLOPE = 0.5  # n_x of a face turned by 30°


def test_coarse_divergence_keeps_a_crease_and_averages_detail_away():
    columns = np.arange(64)
    crease = profile_normals(np.where(columns < 32, -SLOPE, SLOPE))  # a convex crease at x = 32 px
    groove = profile_normals(np.where(columns == 31, SLOPE, np.where(columns == 32, -SLOPE, 0.0)))  # a 2-px groove
    flat = profile_normals(np.zeros(64))
    crease_div, groove_div, flat_div = (coarse_divergence(n, 2.0).numpy()[0, 24, :, 0] for n in (crease, groove, flat))
    # Integrated across the row, the divergence is the change of n_x: 2·SLOPE for the crease, 0 for the
    # groove (the average window conserves the integral away from the border).
    assert crease_div[8:56].sum() == pytest.approx(2 * SLOPE, rel=0.02)
    assert abs(groove_div[8:56].sum()) < 0.01 * SLOPE
    # The crease's average peaks at it, about 2·SLOPE/(σ√(2π)) = 0.2; the groove's stays a quarter of that.
    assert np.argmax(crease_div) in (31, 32) and 0.15 < crease_div.max() < 0.2
    assert np.abs(groove_div).max() < 0.05
    np.testing.assert_allclose(flat_div, 0.0, atol=1e-6)
    np.testing.assert_allclose(crease_div[:16], 0.0, atol=1e-3)  # beyond the window and the spline's reach


def test_coarse_divergence_ignores_the_silhouette():
    """A flat, tilted square on the background: the jump to the background's zeros is no bend of the surface."""
    normal_map = np.zeros((1, 40, 40, 3), np.float32)
    normal_map[:, 5:35, 5:35] = [SLOPE, 0.0, -np.sqrt(1.0 - SLOPE**2)]
    y, x = np.mgrid[0:40, 0:40] + 0.5
    uv = np.stack([x, y], -1).reshape(1, -1, 2).astype(np.float32)
    divergence = normal_divergence(normal_map, uv).numpy().reshape(1, 40, 40, 1)
    assert np.abs(gaussian_blur(tf.constant(divergence), 2.0).numpy()[0, 20, 5:35]).max() > 0.05  # a plain average
    coarse = coarse_divergence(normal_map, 2.0).numpy()[0, :, :, 0]
    # What is left is the interpolating spline's reach past the 3-pixel margin (it decays as 0.268^distance).
    assert np.abs(coarse).max() < 0.01


def test_flat_laplacian_mask_leaves_out_the_crease_only():
    columns = np.arange(64)
    n_x = np.where(columns < 32, -SLOPE, SLOPE)
    n_x = np.where(columns == 47, SLOPE + 0.3, np.where(columns == 48, SLOPE - 0.3, n_x))  # a groove on the right face
    normal_map = profile_normals(n_x)
    uv = np.array([[[32.0, 24.0], [20.0, 24.0], [48.0, 24.0], [44.0, 24.0]]], np.float32)  # crease, face, groove, face
    sdf = np.zeros((1, 4), np.float32)
    front = np.ones((1, 4), bool)
    np.testing.assert_array_equal(laplacian_mask(sdf, front, normal_map, uv).numpy(), [[1, 1, 1, 1]])
    flat = laplacian_mask(sdf, front, normal_map, uv, flat_sigma=2.0, flat_tolerance=0.05).numpy()
    np.testing.assert_array_equal(flat, [[0, 1, 1, 1]])
