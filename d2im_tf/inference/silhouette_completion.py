"""Test-time completion of the base field against the input's silhouette: thin parts f_B only hints at.

A model trained at 96² on a few thousand shapes predicts thin parts (table and chair legs, tubular
frames) as shallow valleys of the base field f_B that do not reach zero: the legs show in the input's
foreground and in the displacement maps, but not in the mesh (docs/real_images.md). Yet every
foreground pixel's ray must enter the object. This module lowers f_B along each foreground ray that
never does, at the depth where the ray comes closest to the surface (the valley), just enough for it to
enter: the missing part appears where the model put its hint, and nothing changes elsewhere.

For a foreground pixel ``x`` (of the network's input, ``S × S``) whose ray through the box never
enters the surface (f_B > 0 at all its ``SAMPLES`` samples; a ray that enters it, however shallowly,
is left alone):

- its *depth* ``t*(x)``, the distance from the camera centre ``c`` where f_B is least along the ray, is
  replaced by the median over the missed pixels within ``DEPTH_WINDOW`` (a fraction of the image's
  side) around it, since a part's valley wanders along it less than the minimum of one ray does;
- its *lowering* is ``δ(x) = m(x) + margin``, ``m(x)`` the least f_B among its samples within
  ``reach / 4`` of that depth: after it the ray goes ``margin`` below zero there, a part about
  ``2·margin / sdf_scale`` thick (``MARGIN``, a fraction of the box's side);
- a point ``p`` is lowered by ``λ(p) = δ(π(p)) · max(0, 1 − |‖p − c‖ − t*(π(p))| / reach)``: δ read
  bilinearly at its projection (0 at the pixels not missed), t* at the nearest missed pixel, ``reach``
  (``REACH``, a fraction of the box's side) the depth over which the lowering fades.

The completed field is ``f − λ`` (the fused field's front/back split is f_B's own). λ is a bounded,
non-negative image-space term like the displacement maps: mesh extraction certifies cells with its
largest value near each node (:func:`d2im_tf.inference.extraction.extract_fused_mesh`'s ``lowering``), so
coarse-to-fine still gives the dense grid's mesh. Not in the paper; opt-in (``--completion on``): it
improves outlines and recall for a little 3D precision (docs/real_images.md).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

from d2im_tf.geometry import camera, frames

SAMPLES = 96  # samples along each foreground ray through the box
MARGIN = 0.005  # how far below zero a completed ray goes, in the box's side × sdf_scale (0.01 normalised)
REACH = 0.03125  # the depth over which the lowering fades, in the box's side (0.0625 normalised)
DEPTH_WINDOW = 1.0 / 24.0  # half-width of the depth median, in the image's side (4 pixels at 96²)
BATCH = 65536  # points per call of the base field


class Completion:
    """The lowering ``λ`` of the completed field (module docstring) for one image.

    ``lowering`` ``[S, S]`` (model units) and ``depth`` ``[S, S]`` (distance from ``centre``) per pixel of
    the image ``projection`` ``[3, 4]`` maps to; ``reach`` in the frame's units. ``λ(points [N, 3]) → [N]``;
    :meth:`bound` and :attr:`largest` bound it for the mesh extraction."""

    def __init__(self, lowering: np.ndarray, depth: np.ndarray, projection: np.ndarray, reach: float):
        from d2im_tf.inference.extraction import LocalDisplacementRange

        self.lowering = np.asarray(lowering, np.float64)
        self.depth = np.asarray(depth, np.float64)
        self.projection = np.asarray(projection, np.float64).reshape(3, 4)
        self.centre = camera.projection_centre_numpy(self.projection)
        self.reach = float(reach)
        self.largest = float(self.lowering.max())
        self._range = LocalDisplacementRange(self.lowering[..., None], self.projection, prefilter=False)

    @property
    def pixels(self) -> int:
        """How many pixels' rays are lowered."""
        return int((self.lowering > 0).sum())

    def __call__(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, np.float64).reshape(-1, 3)
        homogeneous = camera.homogeneous_pixels(points, self.projection)  # [N, 3]
        in_front = homogeneous[:, 2] > 1e-9
        uv = homogeneous[:, :2] / np.where(in_front, homogeneous[:, 2], 1.0)[:, None]  # [N, 2] pixels
        # pixel (i, j)'s centre is at (j + 0.5, i + 0.5)
        rows, columns = uv[:, 1] - 0.5, uv[:, 0] - 0.5
        amount = ndimage.map_coordinates(self.lowering, [rows, columns], order=1, mode="constant", cval=0.0)
        depth = ndimage.map_coordinates(self.depth, [rows, columns], order=0, mode="nearest")
        distance = np.linalg.norm(points - self.centre, axis=1)
        fade = np.clip(1.0 - np.abs(distance - depth) / self.reach, 0.0, 1.0)
        return np.where(in_front, np.maximum(amount, 0.0) * fade, 0.0).astype(np.float32)

    def bound(self, points: np.ndarray, radius) -> np.ndarray:
        """``[N]``: no point of the cube ``points + [-radius, radius]³`` is lowered by more."""
        return np.maximum(self._range(points, radius)[1], 0.0)


def foreground_rays(projection: np.ndarray, foreground: np.ndarray, bounds, samples: int = SAMPLES):
    """``(pixels [F, 2] (row, column), depths [F, samples], points [F, samples, 3])``: the foreground
    pixels whose ray through their centre crosses the cube ``bounds``, and evenly spaced samples of that
    crossing (distances from the camera centre and points)."""
    rows, columns = np.nonzero(foreground)
    directions = camera.pixel_ray_directions(projection, rows, columns)  # [F, 3]
    centre = camera.projection_centre_numpy(projection)
    low, high = bounds
    with np.errstate(divide="ignore", invalid="ignore"):  # slab intersection; rays parallel to a face give ±inf
        near_face, far_face = (low - centre) / directions, (high - centre) / directions
    enter = np.nanmax(np.minimum(near_face, far_face), axis=1)
    leave = np.nanmin(np.maximum(near_face, far_face), axis=1)
    crossing = leave > np.maximum(enter, 0.0)
    enter, leave, directions = np.maximum(enter, 0.0)[crossing], leave[crossing], directions[crossing]
    fractions = (np.arange(samples) + 0.5) / samples
    depths = enter[:, None] + (leave - enter)[:, None] * fractions  # [F, samples]
    points = centre + directions[:, None, :] * depths[..., None]  # [F, samples, 3]
    return np.stack([rows, columns], axis=1)[crossing], depths, points


def complete_silhouette(
    base_values: Callable[[np.ndarray], np.ndarray],
    projection: np.ndarray,
    foreground: np.ndarray,
    sdf_scale: float,
    bounds=frames.NORMALISED_BOX,
    samples: int = SAMPLES,
) -> Completion | None:
    """The :class:`Completion` of the base field ``base_values(points [N, 3]) → [N]`` (model units: the
    distance × ``sdf_scale``) seen through ``projection`` ``[3, 4]`` against ``foreground`` bool ``[S, S]``
    (the image ``projection`` maps to), in the cube ``bounds``; None when every foreground ray already
    enters the surface."""
    side = frames.box_side(bounds)
    margin, reach = MARGIN * side * sdf_scale, REACH * side
    pixels, depths, points = foreground_rays(projection, foreground, bounds, samples)
    if not len(pixels):
        return None
    flat = points.reshape(-1, 3).astype(np.float32)
    values = np.concatenate([np.asarray(base_values(flat[k : k + BATCH])).ravel() for k in range(0, len(flat), BATCH)])
    values = values.reshape(len(pixels), samples)  # [F, samples]
    deepest = values.argmin(axis=1)
    missed = values[np.arange(len(pixels)), deepest] > 0.0  # [F]: rays that enter the surface are left alone
    if not missed.any():
        return None
    pixels, depths, values = pixels[missed], depths[missed], values[missed]
    size = foreground.shape
    lowered, valley = np.zeros(size, bool), np.zeros(size)
    lowered[pixels[:, 0], pixels[:, 1]] = True
    valley[pixels[:, 0], pixels[:, 1]] = depths[np.arange(len(pixels)), deepest[missed]]
    valley = smoothed_depths(valley, lowered, DEPTH_WINDOW)
    # each ray is lowered by what it takes to enter the surface near its smoothed depth
    offsets = np.abs(depths - valley[pixels[:, 0], pixels[:, 1], None])  # [M, samples]
    near = (offsets <= reach / 4) | (offsets == offsets.min(axis=1, keepdims=True))  # at least the nearest sample
    amounts = np.zeros(size)
    amounts[pixels[:, 0], pixels[:, 1]] = np.where(near, values, np.inf).min(axis=1) + margin
    # every other pixel takes its nearest lowered pixel's depth, so the bilinear δ between them fades in depth alike
    nearest = ndimage.distance_transform_edt(~lowered, return_distances=False, return_indices=True)
    return Completion(amounts, valley[nearest[0], nearest[1]], projection, reach)


def smoothed_depths(depth: np.ndarray, lowered: np.ndarray, window: float) -> np.ndarray:
    """``depth`` ``[S, S]`` with each ``lowered`` pixel's replaced by the median over the lowered pixels
    within ``window`` × S of it (a square)."""
    half = max(1, round(window * depth.shape[0]))
    smoothed = depth.copy()
    for row, column in zip(*np.nonzero(lowered)):
        rows = slice(max(0, row - half), row + half + 1)
        columns = slice(max(0, column - half), column + half + 1)
        smoothed[row, column] = np.median(depth[rows, columns][lowered[rows, columns]])
    return smoothed
