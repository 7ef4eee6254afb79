"""Continuous, differentiable reading of image-aligned maps at pixel positions.

Two samplers share one coordinate convention, the one of :mod:`d2im_tf.geometry.camera`: ``uv`` is in pixels,
x to the right and y down, the origin at the top-left corner of pixel (0, 0), so pixel ``(i, j)``
(row ``j``, column ``i``) has its centre at ``(i + 0.5, j + 0.5)``.

* :func:`sample_bspline` — cubic B-spline, C² in ``uv``: what the Laplacian loss differentiates twice
  and what the fusion reads the displacement maps with. It is **interpolating**: the maps are
  prefiltered (:func:`bspline_coefficients`) so that the spline passes through every pixel value,
  and the second derivatives of a smooth map are those of the map, not of a blurred copy (an
  approximating B-spline, coefficients = pixel values, would attenuate a frequency ω by
  ``(2 + cos ω)/3``). The prefilter is the exact inverse of the B-spline's sampled kernel
  ``[1/6, 2/3, 1/6]`` under mirror boundaries (whole-sample symmetric, ``d c b | a b c d | c b a``),
  applied as one dense ``[H, H]`` and one ``[W, W]`` matrix computed once per map size with
  :func:`scipy.ndimage.spline_filter1d` (it equals ``scipy.ndimage.map_coordinates(order=3,
  mode="mirror")``). Border: the spline is continued by the same mirror symmetry, which makes it C²
  with zero normal derivative at the outermost pixel centres; queries beyond those centres are
  clamped to them, so a point projecting off the image reads the border value and gets zero
  derivatives.
* :func:`sample_bilinear` — bilinear, for DISN's local features (C⁰; its second derivative is zero
  inside every cell, so it must never feed a Laplacian). Queries are clamped to the outer pixel
  centres as well.
* :func:`sample_nearest` — the pixel containing the point (masks); off-image points read the nearest
  border pixel.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.ndimage
import tensorflow as tf


@functools.lru_cache(maxsize=None)
def _prefilter_matrix(size: int) -> np.ndarray:
    """``[size, size]`` matrix M with ``coefficients = M @ samples`` along one axis (mirror boundary)."""
    return scipy.ndimage.spline_filter1d(np.eye(size), order=3, axis=0, mode="mirror").astype(np.float32)


def bspline_coefficients(maps):
    """Cubic B-spline coefficients ``[B, H, W, C]`` whose spline interpolates ``maps`` ``[B, H, W, C]``."""
    maps = tf.convert_to_tensor(maps)
    height, width = maps.shape[1], maps.shape[2]
    rows = tf.constant(_prefilter_matrix(height), dtype=maps.dtype)  # [H, H]
    cols = tf.constant(_prefilter_matrix(width), dtype=maps.dtype)  # [W, W]
    return tf.einsum("hk,bkwc,vw->bhvc", rows, maps, cols)


def bspline_derivatives_at_centres(maps):
    """∂/∂u_x and ∂/∂u_y of :func:`sample_bspline`'s spline at every pixel centre, each ``[B, H, W, C]``.

    No sampling needed. At a knot the cubic B-spline kernel is (1/6, 4/6, 1/6) over the knots j − 1, j,
    j + 1 and its slope (−1/2, 0, 1/2); so along one axis the derivative is half the difference of the
    two neighbouring coefficients, weighted (1/6, 4/6, 1/6) across the other axis. The mirror border
    gives 0 at the outermost centres, as the sampler's clamping does.
    """
    padded = tf.pad(bspline_coefficients(maps), [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")  # [B, H+2, W+2, C]
    slope_x = 0.5 * (padded[:, :, 2:] - padded[:, :, :-2])  # [B, H+2, W, C]
    slope_y = 0.5 * (padded[:, 2:] - padded[:, :-2])  # [B, H, W+2, C]
    along_x = (slope_x[:, :-2] + 4.0 * slope_x[:, 1:-1] + slope_x[:, 2:]) / 6.0
    along_y = (slope_y[:, :, :-2] + 4.0 * slope_y[:, :, 1:-1] + slope_y[:, :, 2:]) / 6.0
    return along_x, along_y


def _cubic_bspline_weights(t):
    """Weights ``[..., 4]`` of the samples at offsets -1, 0, 1, 2 for a fractional position t ∈ [0, 1)."""
    t2 = t * t
    t3 = t2 * t
    return tf.stack(
        [
            (1.0 - t) ** 3 / 6.0,
            (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0,
            (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0,
            t3 / 6.0,
        ],
        axis=-1,
    )


def _sample_indices(uv, height: int, width: int):
    """Continuous sample indices ``[B, N]`` (x, y), clamped to the outer pixel centres."""
    x = tf.clip_by_value(uv[..., 0] - 0.5, 0.0, width - 1.0)
    y = tf.clip_by_value(uv[..., 1] - 0.5, 0.0, height - 1.0)
    return x, y


def _gather_patches(grid, row_index, col_index):
    """``grid[b, row_index[b,n,i], col_index[b,n,j]]`` → ``[B, N, I, J, C]``; grid ``[B, H, W, C]``."""
    batch, height, width, channels = (tf.shape(grid)[k] for k in range(4))
    flat = tf.reshape(grid, [-1, channels])  # [B*H*W, C]
    batch_offset = tf.range(batch)[:, None, None, None] * (height * width)  # [B, 1, 1, 1]
    index = batch_offset + row_index[..., :, None] * width + col_index[..., None, :]  # [B, N, I, J]
    return tf.gather(flat, index)


def evaluate_bspline(coefficients, uv):
    """Evaluate the spline with ``coefficients`` ``[B, H, W, C]`` at ``uv`` ``[B, N, 2]`` → ``[B, N, C]``."""
    coefficients = tf.convert_to_tensor(coefficients)
    uv = tf.cast(uv, coefficients.dtype)
    height, width = coefficients.shape[1], coefficients.shape[2]
    padded = tf.pad(coefficients, [[0, 0], [2, 2], [2, 2], [0, 0]], mode="REFLECT")  # [B, H+4, W+4, C]
    x, y = _sample_indices(uv, height, width)  # [B, N] each
    x0 = tf.floor(x)
    y0 = tf.floor(y)
    weights_x = _cubic_bspline_weights(x - x0)  # [B, N, 4]
    weights_y = _cubic_bspline_weights(y - y0)  # [B, N, 4]
    taps = tf.range(4)  # offsets -1..2, shifted by the padding of 2
    col_index = tf.cast(x0, tf.int32)[..., None] + 1 + taps  # [B, N, 4]
    row_index = tf.cast(y0, tf.int32)[..., None] + 1 + taps  # [B, N, 4]
    patches = _gather_patches(padded, row_index, col_index)  # [B, N, 4, 4, C]
    return tf.einsum("bnijc,bni,bnj->bnc", patches, weights_y, weights_x)


def sample_bspline(maps, uv):
    """Read ``maps`` ``[B, H, W, C]`` at pixel positions ``uv`` ``[B, N, 2]`` → ``[B, N, C]``.

    Interpolating cubic B-spline (C² in ``uv``, exact at pixel centres); see the module docstring for
    the prefilter and the border handling.
    """
    maps = tf.convert_to_tensor(maps)
    return evaluate_bspline(bspline_coefficients(maps), uv)


def sample_bilinear(maps, uv):
    """Bilinear reading of ``maps`` ``[B, H, W, C]`` (H, W ≥ 2) at pixel positions ``uv`` ``[B, N, 2]``
    → ``[B, N, C]``."""
    maps = tf.convert_to_tensor(maps)
    uv = tf.cast(uv, maps.dtype)
    height, width = maps.shape[1], maps.shape[2]
    x, y = _sample_indices(uv, height, width)  # [B, N]
    x0 = tf.minimum(tf.floor(x), width - 2.0)  # the right edge reads the last cell at fraction 1
    y0 = tf.minimum(tf.floor(y), height - 2.0)
    taps = tf.range(2)
    col_index = tf.cast(x0, tf.int32)[..., None] + taps  # [B, N, 2]
    row_index = tf.cast(y0, tf.int32)[..., None] + taps  # [B, N, 2]
    fx = x - x0
    fy = y - y0
    weights_x = tf.stack([1.0 - fx, fx], axis=-1)  # [B, N, 2]
    weights_y = tf.stack([1.0 - fy, fy], axis=-1)  # [B, N, 2]
    patches = _gather_patches(maps, row_index, col_index)  # [B, N, 2, 2, C]
    return tf.einsum("bnijc,bni,bnj->bnc", patches, weights_y, weights_x)


def sample_nearest(maps, uv):
    """The pixel of ``maps`` ``[B, H, W, C]`` containing each ``uv`` ``[B, N, 2]`` → ``[B, N, C]``
    (not differentiable in uv)."""
    maps = tf.convert_to_tensor(maps)
    height, width = maps.shape[1], maps.shape[2]
    col = tf.clip_by_value(tf.cast(tf.floor(uv[..., 0]), tf.int32), 0, width - 1)  # [B, N]
    row = tf.clip_by_value(tf.cast(tf.floor(uv[..., 1]), tf.int32), 0, height - 1)  # [B, N]
    return _gather_patches(maps, row[..., None], col[..., None])[:, :, 0, 0, :]
