"""Relief recovery: does a reconstruction carry the input's surface detail, not only its outline?

The measure compares camera-frame normal maps ``[S, S, 3]`` (the ``_mnormal`` convention of
:mod:`d2im_tf.data.render`, zero on the background) of a reconstruction and of the ground truth,
both rendered from the input's view:

* the **relief pixels** are the GT's foreground pixels whose normal departs by more than
  :data:`RELIEF_THRESHOLD` degrees from the *coarse* surface's normal there, where the coarse
  surface is itself smooth (its normal within the threshold of its 8 neighbours': relief over a
  mostly flat surface, the paper's assumption; the coarse shape's own creases and outline are not
  relief);
* the **relief error** (``relief_angle``) is the mean angle, in degrees, between the reconstruction's
  normal and the GT's over the relief pixels the reconstruction also covers.

The coarse surface's normals are given when known (a synthetic shape rendered without its relief,
as the transfer benchmark does); otherwise they are the GT normal map smoothed over its foreground —
a normalised Gaussian convolution of width :data:`COARSE_SIGMA` (as a fraction of the image side),
renormalised — which keeps large smooth surfaces (a sphere, a plane, a gentle bend) and flags
what varies faster: relief, and also sharp creases of the coarse shape, which a reconstruction must
get right as well. A surface without relief has no relief pixels; the error is then reported as 0
over 0 pixels. A reconstruction that is a flat plane under a bump of slope angle θ(x) scores the
mean of θ over the bump's relief pixels (tests/test_relief.py).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

RELIEF_THRESHOLD = 8.0  # degrees between the GT normal and the coarse surface's
COARSE_SIGMA = 1.0 / 32  # the smoothing that defines the coarse surface, fraction of the image side


def foreground(normals: np.ndarray) -> np.ndarray:
    """Pixels ``[S, S]`` with a normal (the renderer writes zeros on the background)."""
    return np.linalg.norm(normals, axis=-1) > 0.5


def angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles in degrees ``[...]`` between unit vectors ``a`` and ``b`` ``[..., 3]``."""
    cosine = np.clip(np.sum(a * b, axis=-1), -1.0, 1.0)
    return np.degrees(np.arccos(cosine))


def smoothed_normals(normals: np.ndarray, sigma: float = COARSE_SIGMA) -> np.ndarray:
    """The normal map ``[S, S, 3]`` smoothed over its foreground (normalised convolution, unit length)."""
    mask = foreground(normals).astype(np.float64)
    width = sigma * normals.shape[0]
    weight = ndimage.gaussian_filter(mask, width, mode="constant")
    blurred = (
        np.stack([ndimage.gaussian_filter(normals[..., c] * mask, width, mode="constant") for c in range(3)], axis=-1)
        / np.maximum(weight, 1e-12)[..., None]
    )
    length = np.linalg.norm(blurred, axis=-1, keepdims=True)
    return np.where(length > 1e-12, blurred / np.maximum(length, 1e-12), 0.0) * mask[..., None]


def locally_flat(normals: np.ndarray, threshold: float = RELIEF_THRESHOLD) -> np.ndarray:
    """Foreground pixels ``[S, S]`` whose 8 neighbours are foreground with normals within ``threshold``
    degrees of theirs."""
    mask = foreground(normals)
    flat = mask.copy()
    padded = np.pad(normals, ((1, 1), (1, 1), (0, 0)))
    size = normals.shape[0]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dx or dy:
                neighbour = padded[1 + dy : 1 + dy + size, 1 + dx : 1 + dx + normals.shape[1]]
                flat &= foreground(neighbour) & (angles(normals, neighbour) <= threshold)
    return flat


def relief_pixels(
    truth: np.ndarray, coarse: np.ndarray | None = None, threshold: float = RELIEF_THRESHOLD
) -> np.ndarray:
    """The relief pixels ``[S, S]`` bool of the GT normal map (module docstring)."""
    coarse = smoothed_normals(truth) if coarse is None else coarse
    return foreground(truth) & locally_flat(coarse, threshold) & (angles(truth, coarse) > threshold)


def relief_error(
    predicted: np.ndarray,
    truth: np.ndarray,
    coarse: np.ndarray | None = None,
    threshold: float = RELIEF_THRESHOLD,
    relief: np.ndarray | None = None,
) -> dict:
    """``relief_angle`` (mean degrees over the relief pixels the prediction covers), ``relief_pixels``
    (how many the GT has) and ``relief_coverage`` (the share of them the prediction covers).
    ``relief`` overrides the pixels (e.g. the union over several ground truths)."""
    relief = relief_pixels(truth, coarse, threshold) if relief is None else relief
    covered = relief & foreground(predicted)
    count = int(relief.sum())
    angle = float(angles(predicted[covered], truth[covered]).mean()) if covered.any() else 0.0
    return {
        "relief_angle": angle,
        "relief_pixels": count,
        "relief_coverage": float(covered.sum() / count) if count else 1.0,
    }


def covered_angle(error: dict) -> float:
    """The ``relief_angle`` of a :func:`relief_error` result, NaN when the prediction covers none of the
    relief pixels (or there are none): there it has no angle, and 0° would count as a perfect score."""
    return error["relief_angle"] if error["relief_pixels"] and error["relief_coverage"] > 0 else float("nan")
