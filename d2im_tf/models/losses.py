r"""The loss terms of D²IM-Net (paper §3.3, supplementary §1): L_B, L_sdf and the Laplacian loss.

SDF values are in the network's units: ``sdf_scale`` (10) × the distance in the normalised frame,
positive outside.

Laplacian loss — sign and scale
-------------------------------
Camera frame p' = (x, y, z) (x right, y down, z away from the viewer), pixels u = f·x/z + c_x,
v = f·y/z + c_y (f in pixels). Take a front surface as a height field over a flat base facing the
camera, depth z = z_0 − h(x, y) (h > 0 towards the viewer), in world units. Near it the world SDF
(positive outside, i.e. towards the camera) is F_w ≈ z_0 − h(x, y) − z, and its gradient is the
outward unit normal N = (n_x, n_y, n_z) ∝ (−h_x, −h_y, −1), n_z < 0 on a front surface. The base
field of the flat panel is z_0 − z, so the front displacement in network units is

    d(u) = (s / m) · (F_w − f_B,w) = −(s / m) · h(x(u), y(u)),     s = sdf_scale, m = norm scale,

with x = (u − c_x)·z/f. Differentiating along the image at fixed depth (the paper's eq. 6,
∂F_w/∂u_x = N·∂p'/∂u_x = n_x·z/f) and once more (eq. 7):

    Δ_u d = (s / m) · (z / f) · div_u(n_x, n_y),

where div_u(n_x, n_y) = ∂n_x/∂u_x + ∂n_y/∂u_y is read off the GT normal map in per-pixel units.
Check on a bump: at its top h_xx < 0, so d has a minimum (Δ_u d > 0) and n_x = −h_x increases
(div > 0): both sides positive. Following the supplementary, both sides are brought to the normal
map's units by the factor ∂u/∂p' (f/z) and m/s:

    r = f·m / (s·z) · Δ_u f_DF(u(p)) − div_u(n_x, n_y)(u(p)),      L_lap = mean over P_F of r².

So the sign is a **minus** in this project's conventions (camera-frame normals, SDF positive
outside); the reference's ``(Δ_pred + Δ_gt)²`` comes from its own map conventions. The scale factor
f·m/(s·z) is the reference's (49·m/(2·z) at 224 px); the reference halves both of its finite
differences, which changes nothing here because both sides are true derivatives.
``tests/test_losses.py`` pins sign and scale on a rendered relief.

P_F (the paper's eq. 2, |dist(p, S)| < δ): points classified front with |F| < ``near_surface``
(0.1 in network units = 0.01 in the normalised frame). The reference's release uses F < 0.1, which
also admits every interior point; the paper's two-sided band keeps z the depth of the surface.
Points whose pixel lies within ``margin`` (3) pixels of the normal map's background (all-zero
pixels) are left out as well: there the divergence differentiates across the silhouette into the
background's zeros (the B-spline's reach), a jump that is no surface detail. The reference's
finite differences do read across it.

Flat coarse surface (an option, ``flat_sigma`` > 0; off in the paper): the derivation above assumes
the coarse surface under the detail is flat. Where it is not — a crease between two faces, a curved
coarse surface — div_u(n) also holds the coarse shape's own bend, which the base field already
carries; a front map made to follow it bends with the crease and adds that bend a second time. The
two are told apart by scale: detail (a groove, a bump) turns the normal away and back within its own
width, so its divergence averages to zero over a few pixels, while a crease turns it for good. So
:func:`coarse_divergence` averages div_u(n) over a Gaussian window of ``flat_sigma`` pixels, and
points where its magnitude reaches ``flat_tolerance`` (per pixel) leave P_F.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from d2im_tf.geometry.interpolation import (
    bspline_coefficients,
    bspline_derivatives_at_centres,
    evaluate_bspline,
    sample_bspline,
    sample_nearest,
)


def _weighted_mean(errors, weights):
    if weights is None:
        return tf.reduce_mean(errors)
    return tf.reduce_sum(weights * errors) / tf.reduce_sum(weights)


def base_loss(base, sdf, weights=None):
    """L_B: mean squared error of the base field ``[B, N]`` against the GT SDF ``[B, N]`` (weighted
    mean with per-sample ``weights`` ``[B, N]``)."""
    return _weighted_mean(tf.square(base - sdf), weights)


def sdf_loss(prediction, sdf, weights=None):
    """L_sdf: mean absolute error of the fused field ``[B, N]`` against the GT SDF ``[B, N]`` (weighted
    mean with per-sample ``weights`` ``[B, N]``)."""
    return _weighted_mean(tf.abs(prediction - sdf), weights)


def map_laplacian(maps, uv):
    """Laplacian ∂²/∂u_x² + ∂²/∂u_y² of a single-channel map ``[B, H, W, 1]`` at ``uv`` ``[B, N, 2]``.

    In pixel units, through two nested ``tf.GradientTape``s on the C² B-spline of
    :func:`d2im_tf.geometry.interpolation.sample_bspline`. Differentiable w.r.t. ``maps``. Returns ``[B, N]``.
    """
    maps = tf.convert_to_tensor(maps)
    coefficients = bspline_coefficients(maps)  # [B, H, W, 1]
    u_x, u_y = tf.unstack(tf.cast(uv, maps.dtype), axis=-1)  # [B, N] each
    with tf.GradientTape(persistent=True) as outer:
        outer.watch([u_x, u_y])
        with tf.GradientTape() as inner:
            inner.watch([u_x, u_y])
            values = evaluate_bspline(coefficients, tf.stack([u_x, u_y], axis=-1))[..., 0]  # [B, N]
        # Each value depends on its own point only, so the gradient of the sum is per point.
        grad_x, grad_y = inner.gradient(values, [u_x, u_y], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    second_xx = outer.gradient(grad_x, u_x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    second_yy = outer.gradient(grad_y, u_y, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    del outer
    return second_xx + second_yy


def normal_divergence(normal_map, uv):
    """The GT Laplacian target: div_u(n_x, n_y) = ∂n_x/∂u_x + ∂n_y/∂u_y at ``uv`` ``[B, N, 2]``.

    ``normal_map`` ``[B, H, W, 3]`` holds camera-frame unit normals (x right, y down, z away). Read
    with the same B-spline as the prediction, differentiated with one ``tf.GradientTape``.
    Per-pixel units; returns ``[B, N]``.
    """
    normal_map = tf.convert_to_tensor(normal_map)
    u_x, u_y = tf.unstack(tf.cast(uv, normal_map.dtype), axis=-1)  # [B, N] each
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([u_x, u_y])
        normals = sample_bspline(normal_map[..., :2], tf.stack([u_x, u_y], axis=-1))  # [B, N, 2]
        n_x, n_y = normals[..., 0], normals[..., 1]
    d_nx_dx = tape.gradient(n_x, u_x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    d_ny_dy = tape.gradient(n_y, u_y, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    del tape
    return d_nx_dx + d_ny_dy


def _away_from_background(normal_map, margin: int):
    """1.0 at the pixels of ``normal_map`` ``[B, H, W, 3]`` with no background (all-zero) pixel within
    ``margin`` pixels, else 0.0: ``[B, H, W, 1]``."""
    background = tf.cast(tf.reduce_all(normal_map == 0.0, axis=-1, keepdims=True), normal_map.dtype)
    return 1.0 - tf.nn.max_pool2d(background, 2 * margin + 1, 1, "SAME")


def gaussian_blur(images, sigma: float):
    """``images`` ``[B, H, W, C]`` convolved with a normalised Gaussian of ``sigma`` pixels (separable,
    truncated at 3σ, zeros beyond the border)."""
    radius = int(math.ceil(3.0 * sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = tf.constant(kernel / kernel.sum(), images.dtype)
    channels = images.shape[-1]
    along_x = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
    along_y = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    blurred = tf.nn.depthwise_conv2d(images, along_x, [1, 1, 1, 1], "SAME")
    return tf.nn.depthwise_conv2d(blurred, along_y, [1, 1, 1, 1], "SAME")


def coarse_divergence(normal_map, sigma: float, margin: int = 3):
    """The coarse surface's divergence ``[B, H, W, 1]`` (module docstring, "Flat coarse surface").

    :func:`normal_divergence` of ``normal_map`` ``[B, H, W, 3]`` at every pixel centre, averaged with
    Gaussian weights of ``sigma`` pixels over the pixels at least ``margin`` from the background (a
    normalised convolution: the silhouette's jump into the background's zeros is no bend of the surface).
    Per-pixel units; 0 where the window holds no such pixel.
    """
    normal_map = tf.convert_to_tensor(normal_map)
    return _average_away_from_background(normal_map, sigma, _away_from_background(normal_map, margin))


def _average_away_from_background(normal_map, sigma: float, weight):
    """:func:`coarse_divergence` with its pixel weights ``[B, H, W, 1]`` given."""
    d_dx, d_dy = bspline_derivatives_at_centres(normal_map[..., :2])  # [B, H, W, 2] each
    divergence = d_dx[..., :1] + d_dy[..., 1:]  # ∂n_x/∂u_x + ∂n_y/∂u_y, [B, H, W, 1]
    return tf.math.divide_no_nan(gaussian_blur(divergence * weight, sigma), gaussian_blur(weight, sigma))


def laplacian_mask(
    sdf,
    front,
    normal_map,
    uv,
    near_surface: float = 0.1,
    margin: int = 3,
    flat_sigma: float = 0.0,
    flat_tolerance: float = 0.05,
):
    """P_F as float ``[B, N]`` (module docstring): front, |F| < ``near_surface`` (network units), and
    no background pixel of ``normal_map`` ``[B, H, W, 3]`` within ``margin`` pixels of ``uv`` ``[B, N, 2]``.
    With ``flat_sigma`` > 0, also |:func:`coarse_divergence`| < ``flat_tolerance`` at ``uv``."""
    away = _away_from_background(normal_map, margin)  # [B, H, W, 1]
    interior = sample_nearest(away, uv)[..., 0] > 0.5  # [B, N]
    selected = tf.logical_and(tf.logical_and(front, tf.abs(sdf) < near_surface), interior)
    if flat_sigma > 0.0:
        coarse = sample_nearest(_average_away_from_background(normal_map, flat_sigma, away), uv)[..., 0]  # [B, N]
        selected = tf.logical_and(selected, tf.abs(coarse) < flat_tolerance)
    return tf.cast(selected, sdf.dtype)


def laplacian_residual(front_map, normal_map, uv, depth, norm_scale, focal, sdf_scale: float = 10.0):
    """r = f·m/(s·z)·Δ_u f_DF − div_u(n_x, n_y) per point ``[B, N]`` (module docstring).

    ``front_map`` ``[B, H, W, 1]`` (network units); ``normal_map`` ``[B, H, W, 3]``; ``uv``
    ``[B, N, 2]``; ``depth`` z ``[B, N]`` (world units); ``norm_scale`` m ``[B]``; ``focal`` f (pixels).
    """
    predicted = map_laplacian(front_map, uv)  # [B, N], network units per pixel²
    target = tf.stop_gradient(normal_divergence(normal_map, uv))  # [B, N], per pixel
    scale = focal * norm_scale[:, None] / (sdf_scale * depth)  # [B, N]
    return scale * predicted - target


def laplacian_loss(front_map, normal_map, uv, depth, norm_scale, focal, mask, sdf_scale: float = 10.0):
    """L_lap: mean of the squared :func:`laplacian_residual` over the points where ``mask`` ``[B, N]`` is 1."""
    residual = laplacian_residual(front_map, normal_map, uv, depth, norm_scale, focal, sdf_scale)
    return tf.reduce_sum(mask * tf.square(residual)) / tf.maximum(tf.reduce_sum(mask), 1.0)
