"""Mirroring: the image also read mirrored, and the mirrored reading kept when it fits far better.

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
network's input (``u → S − u``, :func:`d2im_tf.data.framing.flip_transform`) is the camera frame's reflection
``F = diag(−1, 1, 1)``. A surface reconstructed from the flipped image with pose ``(R', t')`` is,
reflected by the model frame's ``M = diag(−1, 1, 1)``, seen in the unflipped image with pose
``(F·R'·M, F·t')``, a rotation again since the two reflections cancel (:func:`unmirrored_pose`).
Not in the paper; on by default, ``--mirror off`` reads the input once, as given.
"""

from __future__ import annotations

import numpy as np
import trimesh

SWITCH_RATIO = 0.6  # the mirrored reading is kept when its silhouette cost is at most this share of the plain one's
REFLECTION = np.diag([-1.0, 1.0, 1.0])  # the model frame's left-right mirror, and the camera frame's


def kept(scores) -> int:
    """Which of the plain (0) and the mirrored (1) encoding is kept, by their ``scores``: the plain one
    unless the mirrored one's score is finite and at most ``SWITCH_RATIO`` of it."""
    plain, mirrored = (float(value) for value in scores)
    return 1 if np.isfinite(mirrored) and mirrored <= SWITCH_RATIO * plain else 0


def unmirrored_pose(rotation: np.ndarray, translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A pose ``(R', t')`` of the flipped image's reading → the pose of the reflected surface in the
    unflipped image: ``(F·R'·M, F·t')`` (module docstring)."""
    rotation = REFLECTION @ np.asarray(rotation) @ REFLECTION
    return rotation.astype(np.float32), (REFLECTION @ np.asarray(translation)).astype(np.float32)


def unmirrored_projection(projection: np.ndarray) -> np.ndarray:
    """``[3, 4]``: a projection of the flipped reading's frame → the same pixels from the reflected
    surface's frame (the model frame's ``M`` applied first)."""
    homogeneous = np.eye(4)
    homogeneous[:3, :3] = REFLECTION
    return np.asarray(projection) @ homogeneous


def reflected(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """``mesh`` mirrored by ``M`` (x → −x), its faces' winding reversed so the normals still point out."""
    vertices = np.asarray(mesh.vertices) @ REFLECTION
    return trimesh.Trimesh(vertices, np.asarray(mesh.faces)[:, ::-1], process=False)
