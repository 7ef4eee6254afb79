"""Input variants: the image also read mirrored, and the mirrored reading kept when it fits far better.

A model trained on a few thousand synthetic shapes reads some images of other projects ambiguously: a
dark wooden cabinet by another renderer comes out as slabs and blobs, its global code between a
cabinet's and an office chair's, while the same image mirrored left-right reads as a solid cabinet
(docs/real_images.md). The camera is predicted, so only the image can say which reading is right: both
are encoded, each coarse surface f_B is posed against the input's foreground
(:mod:`d2im_tf.inference.pose_fit`), and the mirrored reading replaces the plain one when its silhouette
cost is at most ``SWITCH_RATIO`` of the plain one's (:func:`kept`). On the project's own renders an
outline that fits a little better is often a worse shape in 3D (the study set's test views: the plain
reading, which the networks were trained on, is the better one in most cases where the two costs are
close), so only a failure of the plain reading that shows in its outline hands over.

Mirroring rests on the symmetry of the categories' objects about their own left-right plane, the model
frame's x = 0 (chairs, tables, sofas, cabinets nearly all are): the mirrored image shows the same
object, seen from the mirrored view. With the principal point at the image centre, flipping the
network's input (``u → S − u``, :func:`flip_matrix`) is the camera frame's reflection
``F = diag(−1, 1, 1)``. A surface reconstructed from the flipped image with pose ``(R', t')`` is,
reflected by the model frame's ``M = diag(−1, 1, 1)``, seen in the unflipped image with pose
``(F·R'·M, F·t')``, a rotation again since the two reflections cancel (:func:`unmirrored_pose`).
Not in the paper; on by default, ``--variants off`` reads the input once, as given.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import trimesh

SWITCH_RATIO = 0.6  # the mirrored reading is kept when its silhouette cost is at most this share of the plain one's
REFLECTION = np.diag([-1.0, 1.0, 1.0])  # the model frame's left-right mirror, and the camera frame's


class Variant(NamedTuple):
    """One reading of an input: ``mirrored`` left-right, re-framed to ``object_size`` (None: as given)."""

    mirrored: bool
    object_size: float | None


def variants(object_size: float | None) -> list[Variant]:
    """The readings of an input re-framed to ``object_size`` (None: as framed): plain, then mirrored."""
    return [Variant(False, object_size), Variant(True, object_size)]


def score(cost: float | None) -> float:
    """A reading's silhouette ``cost`` (pixels of the pose fit's grid; None: unmeasured, inf)."""
    return np.inf if cost is None else float(cost)


def kept(scores) -> int:
    """The index of the reading kept among :func:`variants`' ``scores``: the plain one (0) unless another's
    score is at most ``SWITCH_RATIO`` of its score, then the lowest."""
    scores = np.asarray(scores, float)
    best = int(np.argmin(scores))
    return best if scores[best] <= SWITCH_RATIO * scores[0] else 0


def flip_matrix(width: float) -> np.ndarray:
    """``[3, 3]``: the affine of pixel coordinates ``u → width − u`` (a left-right flip of an image
    ``width`` pixels wide, pixel corners at integers), its own inverse."""
    return np.array([[-1.0, 0.0, width], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def unmirrored_pose(rotation: np.ndarray, translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A pose ``(R', t')`` of the flipped image's reading → the pose of the reflected surface in the
    unflipped image: ``(F·R'·M, F·t')`` (module docstring)."""
    rotation = REFLECTION @ np.asarray(rotation) @ REFLECTION
    return rotation.astype(np.float32), (REFLECTION @ np.asarray(translation)).astype(np.float32)


def unmirrored_projection(projection: np.ndarray) -> np.ndarray:
    """``[3, 4]``: a projection of the flipped reading's frame → the same pixels from the reflected
    surface's frame (the model frame's ``M`` applied first)."""
    return np.asarray(projection) @ np.diag([-1.0, 1.0, 1.0, 1.0])


def reflected(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """``mesh`` mirrored by ``M`` (x → −x), its faces' winding reversed so the normals still point out."""
    vertices = np.asarray(mesh.vertices) @ REFLECTION
    return trimesh.Trimesh(vertices, np.asarray(mesh.faces)[:, ::-1], process=False)
