"""Test-time refinement of a predicted pose against the input's silhouette.

The camera network's pose is the weakest link of image → mesh (MODEL_CARD.md): tens of degrees off on
its own renders, more on other projects'. The base field f_B does not depend on the pose, so its
surface can be placed by any pose; this module searches the pose ``[R | t]`` near the prediction
under which f_B's surface projects onto the input's foreground, and the detailed surface is then
decoded with that pose (each point reads the displacement maps where its refined projection falls).

The objective is a symmetric chamfer distance between silhouettes, in pixels of a ``FIT_SIZE``² grid
over the network's input:

- *outside*: the mean distance from each projected surface point to the foreground (0 inside it), read
  bilinearly from the foreground's distance transform;
- *missed*: the mean over foreground pixels of the distance to the nearest projected point (``MAX_POINTS``
  samples of the surface are dense enough on the coarse grid), truncated at ``MISSED_CAP`` pixels, so a
  part the coarse shape lacks (a leg f_B misses) does not drag the pose towards it.

The pose is ``R = R₀·exp([ω]ₓ)`` (ω rotates the object about its own centre) and ``t = t₀ + δ``: six
numbers, searched with Nelder–Mead from the prediction and from the prediction turned about the
object's vertical axis (``TURNS``), since a coarse silhouette often fits a mirrored or quarter-turned
view nearly as well as the right one. The start with the lowest final cost wins; a small prior
``PRIOR`` on the turn keeps the prediction when the silhouette cannot tell.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage, optimize
from scipy.spatial.transform import Rotation

TURNS = (0.0, 0.5, -0.5, 1.0, -1.0, np.pi / 2, -np.pi / 2, np.pi)  # radians about the object's y axis
MIN_FOREGROUND, MAX_FOREGROUND = 0.002, 0.9  # shares of the image outside which a foreground is not fitted
MISSED_CAP = 3.0  # pixels of the FIT_SIZE grid
PRIOR = 0.25  # pixels (of the FIT_SIZE grid) of cost per radian of rotation away from the prediction
MAX_POINTS = 2000
FIT_SIZE = 64  # the foreground is compared at this many pixels per side (under half of 96²'s cost)
SCREEN_EVALUATIONS, FINAL_EVALUATIONS = 150, 300  # cost evaluations per turn's search, and of the last search


class PoseFit(NamedTuple):
    """A refined pose ``(rotation [3, 3], translation [3])`` with its silhouette ``cost`` (pixels) and
    the prediction's ``initial_cost``."""

    rotation: np.ndarray
    translation: np.ndarray
    cost: float
    initial_cost: float


class SilhouetteCost:
    """The chamfer cost (module docstring) of surface ``points [N, 3]`` under a pose ``(R, t)`` and the
    intrinsics ``k [3, 3]``, against ``foreground`` bool ``[S, S]`` of the image the pose projects to."""

    def __init__(self, points: np.ndarray, foreground: np.ndarray, k: np.ndarray):
        self.points = np.asarray(points, np.float64)
        self.foreground = np.asarray(foreground, bool)
        self.k = np.asarray(k, np.float64)
        self.to_foreground = ndimage.distance_transform_edt(~self.foreground)  # [S, S] pixels
        self.pixels = np.argwhere(self.foreground)  # [F, 2] (row, col)

    def project(self, rotation: np.ndarray, translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(uv [N, 2] pixels, depth [N])``."""
        camera = self.points @ rotation.T + translation  # [N, 3]
        depth = camera[:, 2]
        homogeneous = camera @ self.k.T
        return homogeneous[:, :2] / np.maximum(depth, 1e-6)[:, None], depth

    def __call__(self, rotation: np.ndarray, translation: np.ndarray) -> float:
        uv, depth = self.project(rotation, translation)
        if len(uv) == 0 or not self.pixels.size or (depth <= 1e-3).any():
            return 1e6
        size = self.foreground.shape[0]
        # pixel (i, j) covers [j, j+1) × [i, i+1): its centre is at (j + 0.5, i + 0.5)
        rows, cols = uv[:, 1] - 0.5, uv[:, 0] - 0.5
        outside = ndimage.map_coordinates(self.to_foreground, [rows, cols], order=1, mode="nearest")
        off_image = np.maximum(0.0, np.maximum(-rows, rows - (size - 1))) + np.maximum(
            0.0, np.maximum(-cols, cols - (size - 1))
        )
        splat = np.zeros((size, size), bool)
        inside = (rows > -0.5) & (rows < size - 0.5) & (cols > -0.5) & (cols < size - 0.5)
        splat[np.round(rows[inside]).astype(int), np.round(cols[inside]).astype(int)] = True
        if not splat.any():
            return 1e6
        to_points = ndimage.distance_transform_edt(~splat)
        missed = np.minimum(np.maximum(to_points[self.pixels[:, 0], self.pixels[:, 1]], 0.0), MISSED_CAP)
        return float(np.mean(outside + off_image) + np.mean(missed))


def _pose(rotation0, translation0, params):
    rotation = rotation0 @ Rotation.from_rotvec(params[:3]).as_matrix()
    return rotation, translation0 + params[3:]


def _fit_inputs(points, foreground, k, seed: int = 0) -> SilhouetteCost:
    """The :class:`SilhouetteCost` a fit uses: at most ``MAX_POINTS`` of ``points``, the foreground on
    the ``FIT_SIZE`` grid (its share of each coarse pixel) and the intrinsics of that grid."""
    points = np.asarray(points, np.float64)
    if len(points) > MAX_POINTS:
        points = points[np.random.default_rng(seed).choice(len(points), MAX_POINTS, replace=False)]
    foreground = np.asarray(foreground, bool)
    scale = FIT_SIZE / foreground.shape[0]
    if scale < 1.0:
        small = Image.fromarray(foreground.astype(np.float32), mode="F").resize((FIT_SIZE, FIT_SIZE), Image.BOX)
        foreground, k = np.asarray(small) > 0.5, np.diag([scale, scale, 1.0]) @ np.asarray(k, np.float64)
    return SilhouetteCost(points, foreground, k)


def silhouette_cost(points, foreground, k, rotation, translation, seed: int = 0) -> float:
    """The cost :func:`fit_pose` starts from: that of the pose ``(rotation, translation)`` as given."""
    return _fit_inputs(points, foreground, k, seed)(
        np.asarray(rotation, np.float64), np.asarray(translation, np.float64)
    )


def fit_pose(
    points: np.ndarray,
    foreground: np.ndarray,
    k: np.ndarray,
    rotation: np.ndarray,
    translation: np.ndarray,
    turns=TURNS,
    seed: int = 0,
) -> PoseFit:
    """The pose near ``(rotation, translation)`` (object frame → camera, ``p' = R·p + t``) under which
    ``points`` (samples of the coarse surface, object frame) best cover ``foreground`` (module docstring).
    ``k``: the intrinsics of the image ``foreground`` belongs to."""
    cost = _fit_inputs(points, foreground, k, seed)
    rotation0, translation0 = np.asarray(rotation, np.float64), np.asarray(translation, np.float64)
    initial = cost(rotation0, translation0)
    distance = float(np.linalg.norm(translation0)) or 1.0
    steps = np.array([0.15, 0.15, 0.15, 0.03 * distance, 0.03 * distance, 0.08 * distance])

    def objective(params):
        return cost(*_pose(rotation0, translation0, params)) + PRIOR * np.linalg.norm(params[:3])

    def search(start, scale, evaluations):
        simplex = np.vstack([start, start + np.diag(steps * scale)])
        options = {"initial_simplex": simplex, "xatol": 1e-3, "fatol": 1e-3, "maxfev": evaluations}
        result = optimize.minimize(objective, start, method="Nelder-Mead", options=options)
        return float(result.fun), result.x

    # a short search from every turn, then a longer one from the best of them
    starts = [search(np.array([0.0, turn, 0.0, 0.0, 0.0, 0.0]), 1.0, SCREEN_EVALUATIONS) for turn in turns]
    best = min([(initial, np.zeros(6)), *starts], key=lambda pair: pair[0])
    best = min(best, search(best[1], 0.5, FINAL_EVALUATIONS), key=lambda pair: pair[0])
    fitted_rotation, fitted_translation = _pose(rotation0, translation0, best[1])
    return PoseFit(fitted_rotation, fitted_translation, cost(fitted_rotation, fitted_translation), initial)
