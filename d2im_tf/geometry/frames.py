"""The two frames a shape is seen in, and the box reconstructions are made in (docs/conventions.md, "Frames").

* **world**: ShapeNet's frame. The meshes (``meshes/<cat>/<shape>/model.obj``) and the cameras of
  ``rendering_metadata.txt`` are given in it.
* **normalised**: DISN's frame of one shape, centred on its surface centroid c and divided by m, the
  largest distance of its surface samples from c. A normalised point x is the world point
  ``x·m + c``; the shape's ``norm_params`` are ``(cx, cy, cz, m)``. The SDF samples, the SDF network
  (its points and its projection) and the camera network's pose are in this frame.

Every surface point lies within 1 of the normalised origin, so :data:`NORMALISED_BOX` ([-1, 1]³) is the
box to reconstruct and measure in; the constants derived from a box (the extraction grid, the
F-score threshold, the distance an empty reconstruction scores) are derived from it here.
:data:`WORLD_BOX` is the reference's test box in the world frame, used only by imported models that
work in the world frame as the authors' code does.

Everything here is NumPy (float64 unless the input is narrower).
"""

from __future__ import annotations

import numpy as np
import trimesh

NORMALISED_BOX = (-1.0, 1.0)  # (low, high) of the cube, the same on every axis
WORLD_BOX = (-0.5, 0.5)  # the reference's test box (ShapeNet's objects fit it)
IDENTITY_NORM_PARAMS = np.array([0.0, 0.0, 0.0, 1.0])  # normalised frame = world frame


def box_side(box=NORMALISED_BOX) -> float:
    """The side length of the cube ``box³``."""
    return float(box[1] - box[0])


def box_diagonal(box=NORMALISED_BOX) -> float:
    """The largest distance between two points of the cube ``box³``: √3 · side."""
    return float(np.sqrt(3.0)) * box_side(box)


def denormalising_matrix(norm_params) -> np.ndarray:
    """The homogeneous map normalised → world, ``[[m·I, c], [0, 1]]``: ``[..., 4]`` → ``[..., 4, 4]``."""
    norm_params = np.asarray(norm_params, dtype=np.float64)
    matrix = np.zeros(norm_params.shape[:-1] + (4, 4))
    matrix[..., :3, :3] = norm_params[..., 3, None, None] * np.eye(3)
    matrix[..., :3, 3] = norm_params[..., :3]
    matrix[..., 3, 3] = 1.0
    return matrix


def normalised_projection(projection, norm_params) -> np.ndarray:
    """Fold a shape's normalisation into a world-frame P: ``P · [[m·I, c], [0, 1]]``.

    ``projection`` ``[..., 3, 4]`` maps homogeneous world points to pixels; ``norm_params``
    ``[..., 4]``. The result ``[..., 3, 4]`` maps normalised points to the same pixels: the
    ``projection`` of the SDF network's batch.
    """
    return np.asarray(projection, dtype=np.float64) @ denormalising_matrix(norm_params)


def normalised_pose(rotation, translation, norm_params) -> tuple[np.ndarray, np.ndarray]:
    """A world→camera pose ``(R [3, 3], t [3])`` → the pose of the normalised frame, up to the scale m.

    ``R·(m·x + c) + t = m·(R·x + (R·c + t)/m)``: the same rotation with ``t' = (R·c + t)/m`` gives the
    camera frame divided by m, which projects to the same pixels. As DISN's regression targets, the
    camera network predicts this pose, so ``K·[R | t']`` serves the SDF network directly and
    reconstruction needs no ground-truth normalisation.
    """
    return rotation, (rotation @ norm_params[:3] + translation) / norm_params[3]


def transformed(mesh: trimesh.Trimesh, scale: float, offset) -> trimesh.Trimesh:
    """A copy of ``mesh`` with vertices ``x·scale + offset``."""
    return trimesh.Trimesh(mesh.vertices * scale + np.asarray(offset, float), mesh.faces, process=False)


def to_world(mesh: trimesh.Trimesh, norm_params) -> trimesh.Trimesh:
    """A normalised-frame mesh in the world frame, ``x·m + c``."""
    return transformed(mesh, float(norm_params[3]), norm_params[:3])


def to_normalised(mesh: trimesh.Trimesh, norm_params) -> trimesh.Trimesh:
    """A world-frame mesh in the normalised frame, ``(x − c)/m``."""
    c, m = np.asarray(norm_params[:3], float), float(norm_params[3])
    return transformed(mesh, 1.0 / m, -c / m)
