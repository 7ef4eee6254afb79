"""Test-time completion of the base field against the input's silhouette: thin parts f_B only hints at.

A model trained at 96² on a few thousand shapes predicts thin parts (table and chair legs, tubular
frames) as shallow valleys of the base field f_B that do not reach zero: the legs show in the input's
foreground and in the displacement maps, but not in the mesh (docs/real_images.md). Yet every
foreground pixel's ray must enter the object. This module lowers f_B along each foreground ray that
never does, at the depth of its first deep valley (where it comes close to the surface), just enough
for it to enter: the missing part appears where the model put its hint, and nothing changes elsewhere.

For a foreground pixel ``x`` (of the network's input, ``S × S``) whose ray through the box never
enters the surface (f_B > 0 at all its ``SAMPLES`` samples):

- its *depth* ``t*(x)``, the distance from the camera centre ``c`` of its valley: the nearest of the
  local minima of f_B along the ray within ``VALLEY_TOLERANCE`` of its least value. A thin leg's valley
  is often a little shallower than one far behind it (a part the field half-imagines there), but what a
  pixel shows is the first thing its ray meets. The depth is then replaced by the median over the
  missed pixels within ``DEPTH_WINDOW`` (a fraction of the image's side) around it, since a part's
  valley wanders along it less than one ray's does;
- its *half-thickness* ``h(x)``: half of ``DEPTH_PER_WIDTH`` times the local width at ``x`` of the
  region of completed pixels (pixels, from its distance transform; the missing part, not the whole
  foreground, whose wide parts the surface already holds) times the pixel's footprint at ``t*``, at
  most ``reach``: a thin part is given a depth like its width, not a sheet one sample thick (half the
  width, not all of it: deeper costs the study set's chairs 3D precision);
- its *lowering* is ``δ(x) = m(x) + margin``, ``m(x)`` the largest f_B among its samples within ``h(x)``
  of that depth (at least the nearest sample): after it the ray is ``margin`` below zero over the
  whole depth ``t* ± h`` (``MARGIN``, a fraction of the box's side);
- a point ``p`` is lowered by ``λ(p) = δ(π(p)) · clip(1 − (|‖p − c‖ − t*(π(p))| − h(π(p))) / reach, 0, 1)``:
  δ read bilinearly at its projection (0 at the pixels not missed), t* and h at the nearest missed
  pixel, ``reach`` (``REACH``, a fraction of the box's side) the depth over which the lowering fades.

A ray that enters the surface only far behind its missed neighbours' depth (more than ``FAR_ENTRY``
of the box's side: a thin front leg whose valley never reaches zero, in front of a part that does) is
completed like a missed one, at the neighbours' median depth, when f_B dips there at least as low as
it does along those neighbours' rays; any other ray that enters the surface is left alone.

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
VALLEY_TOLERANCE = 0.025  # valleys this much (box's side × sdf_scale) above a ray's least value are candidates
DEPTH_PER_WIDTH = 0.5  # a completed part is this many times as deep as the image shows it wide
FAR_ENTRY = 0.125  # an entry this far (box's side) behind the missed neighbours' depth counts as missed
BATCH = 65536  # points per call of the base field


class Completion:
    """The lowering ``λ`` of the completed field (module docstring) for one image.

    ``lowering`` ``[S, S]`` (model units), ``depth`` ``[S, S]`` (distance from ``centre``) and ``half_thickness``
    ``[S, S]`` per pixel of the image ``projection`` ``[3, 4]`` maps to; ``reach`` and
    ``half_thickness`` in the frame's units. ``λ(points [N, 3]) → [N]``; :meth:`bound` and :attr:`largest`
    bound it for the mesh extraction."""

    def __init__(self, lowering: np.ndarray, depth: np.ndarray, projection: np.ndarray, reach: float, half_thickness):
        from d2im_tf.inference.extraction import LocalDisplacementRange

        self.lowering = np.asarray(lowering, np.float64)
        self.depth = np.asarray(depth, np.float64)
        self.half_thickness = np.asarray(half_thickness, np.float64)
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
        half = ndimage.map_coordinates(self.half_thickness, [rows, columns], order=0, mode="nearest")
        distance = np.linalg.norm(points - self.centre, axis=1)
        fade = np.clip(1.0 - (np.abs(distance - depth) - half) / self.reach, 0.0, 1.0)
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
    entered = (values <= 0.0).any(axis=1)  # [F]
    if entered.all():
        return None
    size = foreground.shape
    rows, columns = pixels[:, 0], pixels[:, 1]
    lowered, valley = np.zeros(size, bool), np.zeros(size)
    lowered[rows[~entered], columns[~entered]] = True
    valley[rows, columns], dips = _valleys(values, depths, VALLEY_TOLERANCE * side * sdf_scale)
    valley = smoothed_depths(valley, lowered, DEPTH_WINDOW)
    dip = np.full(size, -np.inf)
    dip[rows[~entered], columns[~entered]] = dips[~entered]
    far_behind, reference = _entered_far_behind(values, depths, entered, pixels, valley, dip, FAR_ENTRY * side)
    valley[rows[far_behind], columns[far_behind]] = reference[far_behind]
    missed = ~entered | far_behind
    pixels, depths, values = pixels[missed], depths[missed], values[missed]
    rows, columns = pixels[:, 0], pixels[:, 1]
    lowered[rows, columns] = True
    # each ray is lowered by what it takes to be inside the surface over its part's depth t* ± h
    half = np.zeros(size)
    width = _local_width(lowered)[rows, columns] * _footprints(projection, pixels, valley[rows, columns])
    half[rows, columns] = np.minimum(reach, DEPTH_PER_WIDTH / 2 * width)
    offsets = np.abs(depths - valley[rows, columns, None])  # [M, samples]
    near = (offsets <= half[rows, columns, None]) | (offsets == offsets.min(axis=1, keepdims=True))
    amounts = np.zeros(size)
    amounts[rows, columns] = np.where(near, values, -np.inf).max(axis=1) + margin
    # every other pixel takes its nearest lowered pixel's depth, so the bilinear δ between them fades in depth alike
    nearest = ndimage.distance_transform_edt(~lowered, return_distances=False, return_indices=True)
    return Completion(amounts, valley[nearest[0], nearest[1]], projection, reach, half[nearest[0], nearest[1]])


def _valleys(values, depths, tolerance: float):
    """``(depth [F], value [F])`` of each ray's valley: the nearest of the local minima of its ``values``
    within ``tolerance`` of the least one (module docstring)."""
    padded = np.pad(values, ((0, 0), (1, 1)), constant_values=np.inf)
    minima = (values <= padded[:, :-2]) & (values <= padded[:, 2:])  # [F, samples]
    nearest = (minima & (values <= values.min(axis=1, keepdims=True) + tolerance)).argmax(axis=1)
    rays = np.arange(len(values))
    return depths[rays, nearest], values[rays, nearest]


def _entered_far_behind(values, depths, entered, pixels, valley, dip, far: float):
    """``(bool [F], reference [F])``: the rays that enter the surface only more than ``far`` behind the
    median depth ``reference`` of the missed pixels around them (``valley``, in :func:`smoothed_depths`'
    window; the missed pixels are those with a finite ``dip``, the value at their valley), and whose f_B
    near that depth dips at least as low as the valley of one of those neighbours."""
    result, references = np.zeros(len(pixels), bool), np.zeros(len(pixels))
    lowered = np.isfinite(dip)
    if not lowered.any():
        return result, references
    half = max(1, round(DEPTH_WINDOW * lowered.shape[0]))
    first = (values <= 0.0).argmax(axis=1)  # the first sample inside, for rays that enter
    near_missed = ndimage.maximum_filter(lowered, size=2 * half + 1, mode="constant")[pixels[:, 0], pixels[:, 1]]
    for index in np.nonzero(entered & near_missed)[0]:  # only rays with missed ones in their window
        row, column = pixels[index]
        window = (slice(max(0, row - half), row + half + 1), slice(max(0, column - half), column + half + 1))
        neighbours = lowered[window]
        references[index] = np.median(valley[window][neighbours])
        if depths[index, first[index]] - references[index] <= far:
            continue
        near = np.argmin(np.abs(depths[index] - references[index]))
        result[index] = values[index, near] <= dip[window][neighbours].max()
    return result, references


def _local_width(region: np.ndarray) -> np.ndarray:
    """float ``[S, S]``: the width (pixels) of the bool ``region`` at each pixel, twice the largest
    distance to its outside within a pixel of it, less one (a part k pixels wide: k)."""
    inside = ndimage.distance_transform_edt(region)
    return np.maximum(2.0 * ndimage.maximum_filter(inside, size=3) - 1.0, 1.0)


def _footprints(projection, pixels, depths) -> np.ndarray:
    """``[M]``: the side of one pixel, in the frame's units, at ``depths`` along the rays of ``pixels``."""
    here = camera.pixel_ray_directions(projection, pixels[:, 0], pixels[:, 1])
    beside = camera.pixel_ray_directions(projection, pixels[:, 0], pixels[:, 1] + 1)
    return np.linalg.norm(here - beside, axis=1) * depths


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
